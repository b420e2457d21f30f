//! The job: cells (one arm × one seed, each in its own run directory, independent of the others,
//! so they can run in any order or at once: the Slurm array's tasks), one cell run
//! ([`run_cell`]), and every cell in order ([`run_job`]).

use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::{Deserialize, Serialize};

use super::arms::{arm_dir, expand_arms, Arm, ArmKind};
use super::evaluate::{
    evaluate_source, prepare_eval_data, random_init_diagnostics, BackboneSource, EvalData,
    RANDOM_INIT_DIAGNOSTICS,
};
use super::results::{finished_rows, save_results};
use super::{file_err, JobError, JobProgress};
use crate::config::ValidConfig;
use crate::eval::{EvalPlan, ResultRow};
use crate::train::{self, checkpoint, PretrainOptions, TrainData, TrainError};

/// One cell of a job: one arm with one seed, run in its own directory below the job's output
/// directory. Cells are independent: each reads only the job's configuration and writes only
/// inside its directory, so they can run in any order or at the same time (a Slurm job array).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Cell {
    /// Position in the job's order (seeds outermost, then arms in [`expand_arms`] order); the
    /// Slurm array index of the cell.
    pub index: usize,
    pub arm: Arm,
    pub seed: u64,
    /// The run directory relative to the job's output directory, e.g. `rr/seed-1`.
    pub dir: PathBuf,
}

impl Cell {
    /// The cell's run directory below the job's output directory `out`.
    pub fn run_dir(&self, out: &Path) -> PathBuf {
        out.join(&self.dir)
    }

    /// The cell's configuration: the job's, without its `[slurm]` section (where a cell runs
    /// does not change what it computes), plus the arm's overrides and the seed.
    pub fn config(&self, job: &ValidConfig) -> Result<ValidConfig, JobError> {
        let mut raw = job.raw().clone();
        raw.slurm = Default::default();
        let mut sets = self.arm.overrides.clone();
        sets.push(format!("train.seed={}", self.seed));
        Ok(raw.apply_overrides(&sets)?.check()?)
    }

    /// The probes of the cell: SR arms every n of `eval.probe_patches`; the other arms (RR,
    /// random-init, supervised) only n = 0, since n > 0 probes are SR's evaluation.
    pub fn eval_plan(&self, cell_cfg: &ValidConfig) -> EvalPlan {
        let plan = EvalPlan::from_config(cell_cfg);
        match self.arm.kind {
            ArmKind::Pretrain if !cell_cfg.method.is_rr() => plan,
            _ => plan.plain_only(),
        }
    }
}

/// The cells of a job in their stable order: for each seed, every arm of [`expand_arms`].
/// Every cell's configuration is validated before any work starts.
pub fn plan_cells(cfg: &ValidConfig, seeds: &[u64]) -> Result<Vec<Cell>, JobError> {
    let arms = expand_arms(cfg)?;
    let mut cells = Vec::with_capacity(arms.len() * seeds.len());
    for &seed in seeds {
        for arm in &arms {
            let cell = Cell {
                index: cells.len(),
                arm: arm.clone(),
                seed,
                dir: arm_dir(Path::new(""), &arm.name, seed),
            };
            cell.config(cfg)?;
            cells.push(cell);
        }
    }
    Ok(cells)
}

/// What a finished job produced.
#[derive(Clone, Debug)]
pub struct JobOutcome {
    pub rows: Vec<ResultRow>,
    /// `(arm, seed, run dir)` of every pretraining run (for loss curves).
    pub runs: Vec<(String, u64, PathBuf)>,
    /// `(arm, seed, run dir)` of every random-init arm (for the diagnostics' reference lines).
    pub random_init: Vec<(String, u64, PathBuf)>,
    pub wall_time_s: f64,
}

/// What one cell produced.
#[derive(Clone, Debug)]
pub struct CellOutcome {
    /// One row per probe.
    pub rows: Vec<ResultRow>,
    /// The pretraining run directory (for loss curves); `None` for random-init and supervised.
    pub pretrain_dir: Option<PathBuf>,
    /// True when every result was already on disk and nothing ran.
    pub reused: bool,
}

/// Take the cell's lock, `RUN/.lock` (an advisory `flock`, released when the holder exits,
/// however it exits), so two processes never run one cell at once. With `wait`, block until the
/// holder is gone (a requeued Slurm task whose first run is still being killed); without, a held
/// lock is [`JobError::Busy`]. Keep the returned file open while the cell runs.
pub fn lock_cell(run_dir: &Path, wait: bool) -> Result<std::fs::File, JobError> {
    std::fs::create_dir_all(run_dir).map_err(|e| file_err(run_dir, e))?;
    let path = run_dir.join(".lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| file_err(&path, e))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) if wait => {
            file.lock().map_err(|e| file_err(&path, e))?;
            Ok(file)
        }
        Err(std::fs::TryLockError::WouldBlock) => Err(JobError::Busy {
            dir: run_dir.to_path_buf(),
        }),
        Err(std::fs::TryLockError::Error(e)) => Err(file_err(&path, e)),
    }
}

/// Run one cell: pretrain (resuming from the newest checkpoint when the directory already holds
/// the run) or build the reference backbone, evaluate, and write `RUN/eval/*.json`; with `csv`,
/// append the rows to it too (the local job's log). A cell whose results are all on disk is not
/// run again. `data` is the job's training split and the probe's data ([`prepare_eval_data`]).
/// A stop request during pretraining ends with a checkpoint and [`JobError::Interrupted`].
pub fn run_cell(
    job: &ValidConfig,
    cell: &Cell,
    out: &Path,
    data: (&TrainData, &EvalData),
    csv: Option<&Path>,
    stop: Option<&std::sync::atomic::AtomicBool>,
    progress: &mut dyn FnMut(JobProgress),
) -> Result<CellOutcome, JobError> {
    let (base, eval_data) = data;
    let arm_cfg = cell.config(job)?;
    let dir = cell.run_dir(out);
    let plan = cell.eval_plan(&arm_cfg);
    let pretrain_dir = (cell.arm.kind == ArmKind::Pretrain).then(|| dir.clone());
    // A random-init arm measures its diagnostics once (cheap: no training), also when its
    // evaluation was done before diagnostics existed.
    if cell.arm.kind == ArmKind::RandomInit
        && arm_cfg.diagnostics.enabled
        && !dir.join(RANDOM_INIT_DIAGNOSTICS).exists()
    {
        progress(JobProgress::Eval(
            "diagnostics of the initial backbone".into(),
        ));
        random_init_diagnostics(&arm_cfg, &base.train, eval_data, &dir)?;
    }
    if let Some(rows) = finished_rows(job, cell, out)? {
        progress(JobProgress::Eval(format!(
            "{}: already evaluated, reusing",
            dir.display()
        )));
        return Ok(CellOutcome {
            rows,
            pretrain_dir,
            reused: true,
        });
    }
    let results = match cell.arm.kind {
        ArmKind::Pretrain => {
            let resume = dir.join("config.toml").exists();
            let mut cb = |p: &train::Progress| progress(JobProgress::Train(p.clone()));
            let outcome = train::pretrain(
                &arm_cfg,
                base,
                &dir,
                PretrainOptions {
                    resume,
                    stop,
                    progress: Some(&mut cb),
                    stop_at_step: None,
                    test: Some(&eval_data.test),
                },
            )?;
            if outcome.interrupted {
                return Err(JobError::Interrupted {
                    dir,
                    step: outcome.steps,
                    total: outcome.total_steps,
                });
            }
            let (found, _) = checkpoint::find_latest(&dir).map_err(TrainError::from)?;
            evaluate_source(
                &arm_cfg,
                BackboneSource::Checkpoint(&found.model_path()),
                eval_data,
                &plan,
                progress,
            )?
        }
        ArmKind::RandomInit | ArmKind::Supervised => {
            std::fs::create_dir_all(&dir).map_err(|e| file_err(&dir, e))?;
            crate::files::write_atomic(
                &dir.join("config.toml"),
                arm_cfg.raw().to_toml_string().as_bytes(),
            )?;
            let source = if cell.arm.kind == ArmKind::Supervised {
                BackboneSource::Supervised
            } else {
                BackboneSource::RandomInit
            };
            evaluate_source(&arm_cfg, source, eval_data, &plan, progress)?
        }
    };
    let rows = save_results(&dir, csv, &cell.arm.name, &arm_cfg, &results)?;
    for r in &rows {
        progress(JobProgress::Result(r.clone()));
    }
    Ok(CellOutcome {
        rows,
        pretrain_dir,
        reused: false,
    })
}

/// The main job: every cell of [`plan_cells`] in order, pretrained (or not) and evaluated; rows
/// appended to `out/results.csv`. The report is written by the caller from the outcome.
pub fn run_job(
    cfg: &ValidConfig,
    seeds: &[u64],
    out: &Path,
    stop: Option<&std::sync::atomic::AtomicBool>,
    progress: &mut dyn FnMut(JobProgress),
) -> Result<JobOutcome, JobError> {
    let started = Instant::now();
    let cells = plan_cells(cfg, seeds)?;
    std::fs::create_dir_all(out).map_err(|e| file_err(out, e))?;
    let csv = out.join("results.csv");
    let base = train::prepare_data(cfg)?;
    let eval_data = prepare_eval_data(cfg, &base)?;
    let mut rows = Vec::new();
    let mut runs = Vec::new();
    let mut random_init = Vec::new();
    for cell in &cells {
        progress(JobProgress::Run {
            arm: cell.arm.name.clone(),
            seed: cell.seed,
            index: cell.index + 1,
            total: cells.len(),
        });
        let _lock = lock_cell(&cell.run_dir(out), false)?;
        let done = run_cell(
            cfg,
            cell,
            out,
            (&base, &eval_data),
            Some(&csv),
            stop,
            progress,
        )?;
        if cell.arm.kind == ArmKind::RandomInit {
            random_init.push((cell.arm.name.clone(), cell.seed, cell.run_dir(out)));
        }
        if let Some(dir) = done.pretrain_dir {
            runs.push((cell.arm.name.clone(), cell.seed, dir));
        }
        rows.extend(done.rows);
    }
    Ok(JobOutcome {
        rows,
        runs,
        random_init,
        wall_time_s: started.elapsed().as_secs_f64(),
    })
}
