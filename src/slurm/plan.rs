//! `DIR/plan.json`, running one planned cell, and the state of every cell.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

use serde::{Deserialize, Serialize};

use super::{file_err, SlurmError};
use crate::config::{Config, ValidConfig};
use crate::eval::ResultRow;
use crate::experiment::{self, Cell, CellOutcome, JobError, JobProgress};
use crate::train::{self, checkpoint};

/// File name of the plan in the job's output directory.
pub const PLAN_FILE: &str = "plan.json";
/// File name of a cell's latest attempt in its run directory.
pub const ATTEMPT_FILE: &str = "attempt.json";
const PLAN_VERSION: u32 = 1;

/// The cells of a job in a stable order, with what they were planned from (`DIR/plan.json`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    /// Format version of `plan.json`.
    pub version: u32,
    /// The job's name (the config file's stem), used in report titles and Slurm job names.
    pub name: String,
    /// The job's configuration as TOML, without its `[slurm]` section.
    pub config: String,
    pub seeds: Vec<u64>,
    /// Cell `i` is array task `i`.
    pub cells: Vec<Cell>,
}

impl Plan {
    /// Plan the cells of `cfg` over `seeds` ([`experiment::plan_cells`]).
    pub fn new(name: &str, cfg: &ValidConfig, seeds: &[u64]) -> Result<Plan, SlurmError> {
        let mut raw = cfg.raw().clone();
        raw.slurm = Default::default();
        Ok(Plan {
            version: PLAN_VERSION,
            name: name.to_string(),
            config: raw.to_toml_string(),
            seeds: seeds.to_vec(),
            cells: experiment::plan_cells(cfg, seeds)?,
        })
    }

    /// Read `out/plan.json`.
    pub fn load(out: &Path) -> Result<Plan, SlurmError> {
        let path = out.join(PLAN_FILE);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(SlurmError::NoPlan {
                    path,
                    out: out.to_path_buf(),
                })
            }
            Err(e) => return Err(file_err(&path, e)),
        };
        let plan: Plan = serde_json::from_str(&text).map_err(|e| file_err(&path, e))?;
        if plan.version != PLAN_VERSION {
            return Err(file_err(
                &path,
                format!(
                    "plan version {} (this binary reads version {PLAN_VERSION})",
                    plan.version
                ),
            ));
        }
        Ok(plan)
    }

    /// Write `out/plan.json` (atomically).
    pub fn save(&self, out: &Path) -> Result<(), SlurmError> {
        let path = out.join(PLAN_FILE);
        std::fs::create_dir_all(out).map_err(|e| file_err(out, e))?;
        let text = serde_json::to_vec_pretty(self).expect("a plan serialises");
        crate::files::write_atomic(&path, &text).map_err(|e| file_err(&path, e))
    }

    /// The job's configuration, validated.
    pub fn config(&self) -> Result<ValidConfig, SlurmError> {
        Ok(Config::from_toml_str(&self.config)?.check()?)
    }

    /// Cell `index`, or [`SlurmError::NoSuchCell`] naming the plan file `path`.
    pub fn cell(&self, index: usize, path: &Path) -> Result<&Cell, SlurmError> {
        self.cells.get(index).ok_or_else(|| SlurmError::NoSuchCell {
            index,
            path: path.to_path_buf(),
            last: self.cells.len().saturating_sub(1),
        })
    }

    /// What differs between this plan and `other`, one entry per config key (with both
    /// values), plus the seeds and cells; empty when they plan the same job. The name may
    /// differ (the same config under another file name is the same job).
    pub fn differences(&self, other: &Plan) -> Vec<String> {
        let parse = |t: &str| {
            toml::from_str::<toml::Value>(t).unwrap_or(toml::Value::Table(Default::default()))
        };
        let mut out = Vec::new();
        diff_values("", &parse(&self.config), &parse(&other.config), &mut out);
        if self.seeds != other.seeds {
            out.push(format!(
                "seeds: {:?} in the plan, {:?} now",
                self.seeds, other.seeds
            ));
        }
        if out.is_empty() && self.cells != other.cells {
            out.push(
                "the cells (a different spatial-reasoning version expands the arms differently)"
                    .into(),
            );
        }
        out
    }

    /// Adopt `new` for `out`: write it when `out` has no plan, keep the existing plan when it
    /// plans the same job, and refuse a different job ([`SlurmError::PlanMismatch`]) once any
    /// cell has started or anything was submitted. A different plan under which nothing ran
    /// (e.g. after `--dry-run`) is replaced.
    pub fn open_or_create(out: &Path, new: Plan) -> Result<Plan, SlurmError> {
        let path = out.join(PLAN_FILE);
        if !path.exists() {
            new.save(out)?;
            return Ok(new);
        }
        let old = Plan::load(out)?;
        let differences = old.differences(&new);
        if differences.is_empty() {
            return Ok(old);
        }
        let started = old.cells.iter().any(|c| c.run_dir(out).exists())
            || !super::read_submissions(out)?.is_empty();
        if started {
            return Err(SlurmError::PlanMismatch { path, differences });
        }
        new.save(out)?;
        Ok(new)
    }
}

/// Collect `key: a in the plan, b now` for every leaf where two TOML values differ.
fn diff_values(key: &str, old: &toml::Value, new: &toml::Value, out: &mut Vec<String>) {
    match (old, new) {
        (toml::Value::Table(a), toml::Value::Table(b)) => {
            let mut keys: Vec<&String> = a.keys().chain(b.keys()).collect();
            keys.sort();
            keys.dedup();
            for k in keys {
                let sub = if key.is_empty() {
                    k.clone()
                } else {
                    format!("{key}.{k}")
                };
                match (a.get(k), b.get(k)) {
                    (Some(x), Some(y)) => diff_values(&sub, x, y, out),
                    (Some(x), None) => out.push(format!("{sub}: {x} in the plan, unset now")),
                    (None, Some(y)) => out.push(format!("{sub}: unset in the plan, {y} now")),
                    (None, None) => {}
                }
            }
        }
        (a, b) if a != b => out.push(format!("{key}: {a} in the plan, {b} now")),
        _ => {}
    }
}

/// Where an attempt of a cell stands (`RUN/attempt.json`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AttemptState {
    /// Started and not ended (or killed without a chance to say so: SIGKILL, node failure).
    Running,
    /// Every probe's result is written.
    Finished,
    /// Stopped by a signal (time limit, preemption, scancel) with a checkpoint.
    Interrupted,
    /// Ended with an error (`message`).
    Failed,
}

/// The latest attempt at running a cell, written by [`run_planned_cell`] into the cell's run
/// directory when it starts and when it ends.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Attempt {
    pub state: AttemptState,
    /// The error of a failed attempt, or where an interrupted one stopped.
    pub message: Option<String>,
    /// Slurm job and array task, e.g. `1234_5`; `None` outside Slurm.
    pub job: Option<String>,
    /// `SLURM_RESTART_COUNT`: how often Slurm requeued the task before this attempt.
    pub restart_count: u32,
    pub host: Option<String>,
    /// The process id of the attempt on `host`.
    pub pid: u32,
    /// RFC 3339 UTC.
    pub started: String,
    pub ended: Option<String>,
    /// Pretraining steps done when it ended, and in total (pretraining arms only).
    pub step: Option<u64>,
    pub total_steps: Option<u64>,
}

/// The Slurm task a cell runs in, from its environment.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TaskInfo {
    /// `SLURM_ARRAY_JOB_ID_SLURM_ARRAY_TASK_ID` (or `SLURM_JOB_ID`).
    pub job: Option<String>,
    /// `SLURM_RESTART_COUNT` (0 when unset): > 0 in a requeued task.
    pub restart_count: u32,
    /// `SLURMD_NODENAME`, else the host name.
    pub host: Option<String>,
}

impl TaskInfo {
    /// Read the task's identity from the `SLURM_*` variables Slurm sets.
    pub fn from_env() -> TaskInfo {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        let job = match (var("SLURM_ARRAY_JOB_ID"), var("SLURM_ARRAY_TASK_ID")) {
            (Some(j), Some(t)) => Some(format!("{j}_{t}")),
            _ => var("SLURM_JOB_ID"),
        };
        TaskInfo {
            job,
            restart_count: var("SLURM_RESTART_COUNT")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0),
            host: var("SLURMD_NODENAME").or_else(|| {
                std::fs::read_to_string("/proc/sys/kernel/hostname")
                    .ok()
                    .map(|h| h.trim().to_string())
            }),
        }
    }
}

fn now() -> String {
    ResultRow::timestamp_now()
}

fn write_attempt(dir: &Path, attempt: &Attempt) -> Result<(), SlurmError> {
    let path = dir.join(ATTEMPT_FILE);
    crate::files::write_atomic(
        &path,
        &serde_json::to_vec_pretty(attempt).expect("an attempt serialises"),
    )
    .map_err(|e| file_err(&path, e))
}

fn read_attempt(dir: &Path) -> Option<Attempt> {
    let text = std::fs::read_to_string(dir.join(ATTEMPT_FILE)).ok()?;
    serde_json::from_str(&text).ok()
}

/// Run cell `index` of `out/plan.json` (what array task `index` does): take the cell's lock
/// (waiting while an earlier attempt of the same cell is still being killed), record the
/// attempt in `RUN/attempt.json`, pretrain or resume, evaluate, and write `RUN/eval/*.json`.
/// Writes nothing outside the cell's run directory. A finished cell is not run again.
pub fn run_planned_cell(
    out: &Path,
    index: usize,
    task: &TaskInfo,
    stop: Option<&AtomicBool>,
    progress: &mut dyn FnMut(JobProgress),
) -> Result<CellOutcome, SlurmError> {
    let plan = Plan::load(out)?;
    let cell = plan.cell(index, &out.join(PLAN_FILE))?;
    let cfg = plan.config()?;
    let dir = cell.run_dir(out);
    let _lock = match experiment::lock_cell(&dir, false) {
        Err(JobError::Busy { .. }) => {
            progress(JobProgress::Eval(format!(
                "{}: another process holds the cell's lock (an earlier attempt still ending?); waiting for it",
                dir.display()
            )));
            experiment::lock_cell(&dir, true)?
        }
        other => other?,
    };
    let mut attempt = Attempt {
        state: AttemptState::Running,
        message: None,
        job: task.job.clone(),
        restart_count: task.restart_count,
        host: task.host.clone(),
        pid: std::process::id(),
        started: now(),
        ended: None,
        step: None,
        total_steps: None,
    };
    if let Some(rows) = experiment::finished_rows(&cfg, cell, out)? {
        progress(JobProgress::Eval(format!(
            "{}: already evaluated, nothing to do",
            dir.display()
        )));
        return Ok(CellOutcome {
            rows,
            pretrain_dir: (cell.arm.kind == experiment::ArmKind::Pretrain).then_some(dir),
            reused: true,
        });
    }
    write_attempt(&dir, &attempt)?;
    let mut total = None;
    let mut step = None;
    let result = (|| {
        let base = train::prepare_data(&cfg)?;
        let eval_data = experiment::prepare_eval_data(&cfg, &base)?;
        let mut watch = |p: JobProgress| {
            if let JobProgress::Train(t) = &p {
                match t {
                    train::Progress::Started { total_steps, .. } => total = Some(*total_steps),
                    train::Progress::Row(r) => step = Some(r.step),
                    _ => {}
                }
            }
            progress(p)
        };
        experiment::run_cell(&cfg, cell, out, (&base, &eval_data), None, stop, &mut watch)
    })();
    attempt.ended = Some(now());
    attempt.total_steps = total;
    attempt.step = step;
    match &result {
        Ok(_) => attempt.state = AttemptState::Finished,
        Err(JobError::Interrupted { step, total: t, .. }) => {
            attempt.state = AttemptState::Interrupted;
            attempt.step = Some(*step);
            attempt.total_steps = Some(*t);
            attempt.message = Some(format!(
                "stopped by a signal at step {step} of {t}, with a checkpoint"
            ));
        }
        Err(e) => {
            attempt.state = AttemptState::Failed;
            attempt.message = Some(e.to_string());
        }
    }
    write_attempt(&dir, &attempt)?;
    Ok(result?)
}

/// What a cell has produced so far.
#[derive(Clone, Debug, PartialEq)]
pub enum CellState {
    /// Every probe's result is there: the cell's rows.
    Finished(Vec<ResultRow>),
    /// Not finished; its run directory exists. `attempt` is its latest recorded attempt (none
    /// if it was killed before writing one), `step` the newest checkpoint's step.
    Unfinished {
        attempt: Option<Attempt>,
        step: Option<u64>,
    },
    /// Its run directory does not exist yet.
    NotStarted,
}

impl CellState {
    /// One line for people: `finished`, `failed: …`, `interrupted at step 12 of 40`, ….
    pub fn describe(&self) -> String {
        match self {
            CellState::Finished(_) => "finished".into(),
            CellState::NotStarted => "not started".into(),
            CellState::Unfinished { attempt, step } => {
                let ckpt = step
                    .map(|s| format!(", newest checkpoint at step {s}"))
                    .unwrap_or_default();
                let Some(a) = attempt else {
                    return format!("started, no attempt recorded{ckpt}");
                };
                let job = a
                    .job
                    .as_ref()
                    .map(|j| format!(" (job {j})"))
                    .unwrap_or_default();
                match a.state {
                    AttemptState::Failed => format!(
                        "failed{job}: {}",
                        a.message.as_deref().unwrap_or("no message")
                    ),
                    AttemptState::Interrupted => format!(
                        "interrupted{job}: {}",
                        a.message.as_deref().unwrap_or("no message")
                    ),
                    AttemptState::Running => format!(
                        "running or killed{job} since {} on {} (pid {}){ckpt}",
                        a.started,
                        a.host.as_deref().unwrap_or("?"),
                        a.pid
                    ),
                    AttemptState::Finished => {
                        format!("results incomplete after a finished attempt{job}{ckpt}")
                    }
                }
            }
        }
    }
}

/// The state of every cell of `plan` below `out`, in the plan's order. Reads files only.
pub fn cell_states(plan: &Plan, out: &Path) -> Result<Vec<(Cell, CellState)>, SlurmError> {
    let cfg = plan.config()?;
    let mut states = Vec::with_capacity(plan.cells.len());
    for cell in &plan.cells {
        let dir: PathBuf = cell.run_dir(out);
        let state = if let Some(rows) = experiment::finished_rows(&cfg, cell, out)? {
            CellState::Finished(rows)
        } else if dir.exists() {
            CellState::Unfinished {
                attempt: read_attempt(&dir),
                step: checkpoint::find_latest(&dir)
                    .ok()
                    .map(|(found, _)| found.state.step),
            }
        } else {
            CellState::NotStarted
        };
        states.push((cell.clone(), state));
    }
    Ok(states)
}
