//! `run --slurm` (submit), `run --out DIR --cell N` (one array task), `run --out DIR --merge`
//! (the report job) and `run --out DIR --status`. The library does the work
//! (`spatial_reasoning::slurm`); this module parses flags and prints.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context;
use spatial_reasoning::config::ValidConfig;
use spatial_reasoning::experiment::{ArmKind, JobOutcome, JobProgress};
use spatial_reasoning::report;
use spatial_reasoning::slurm::{
    self, cell_states, read_submissions, record_submission, run_planned_cell, sbatch, script,
    CellState, Plan, SlurmConfig, SlurmError, Submission, TaskInfo,
};

use crate::common::{fmt_secs, init_threads, stop_flag};
use crate::run::{progress_printer, write_job_report};

/// Flags of `run --slurm`; each overrides the same key of the config's `[slurm]` section.
#[derive(clap::Args)]
#[command(next_help_heading = "Slurm (with --slurm; or the config's [slurm] section)")]
pub struct ClusterArgs {
    /// Partition (slurm.partition).
    #[arg(long, requires = "slurm")]
    partition: Option<String>,
    /// Account (slurm.account).
    #[arg(long, requires = "slurm")]
    account: Option<String>,
    /// Time limit of each cell, e.g. 2:00:00 or 1-12:00:00 (slurm.time).
    #[arg(long, requires = "slurm")]
    time: Option<String>,
    /// CPUs per cell (slurm.cpus_per_task).
    #[arg(long, requires = "slurm")]
    cpus_per_task: Option<usize>,
    /// Memory per cell, e.g. 16G (slurm.mem).
    #[arg(long, requires = "slurm")]
    mem: Option<String>,
    /// GPUs per cell, 0 or 1, for a `cuda` build (slurm.gpus).
    #[arg(long, requires = "slurm")]
    gpus: Option<usize>,
    /// At most this many cells at once (slurm.max_parallel).
    #[arg(long, requires = "slurm")]
    max_parallel: Option<usize>,
    /// One more sbatch option, e.g. --sbatch-arg=--qos=short (repeatable; added to
    /// slurm.sbatch_args).
    #[arg(
        long,
        requires = "slurm",
        value_name = "OPTION",
        allow_hyphen_values = true
    )]
    sbatch_arg: Vec<String>,
    /// Partition of the report job (slurm.report_partition; default: --partition).
    #[arg(long, requires = "slurm")]
    report_partition: Option<String>,
    /// The command that runs spatial-reasoning on the nodes (slurm.command; default: this
    /// binary's absolute path).
    #[arg(long, requires = "slurm", value_name = "COMMAND")]
    node_command: Option<String>,
}

impl ClusterArgs {
    /// Write the given flags into the config's `[slurm]` section (validated with the config).
    pub fn apply(&self, s: &mut SlurmConfig) {
        let set = |v: &Option<String>, field: &mut Option<String>| {
            if let Some(v) = v {
                *field = Some(v.clone());
            }
        };
        set(&self.partition, &mut s.partition);
        set(&self.account, &mut s.account);
        set(&self.time, &mut s.time);
        set(&self.mem, &mut s.mem);
        set(&self.node_command, &mut s.command);
        set(&self.report_partition, &mut s.report_partition);
        if let Some(n) = self.cpus_per_task {
            s.cpus_per_task = n;
        }
        if let Some(n) = self.gpus {
            s.gpus = n;
        }
        if let Some(n) = self.max_parallel {
            s.max_parallel = n;
        }
        s.sbatch_args.extend(self.sbatch_arg.iter().cloned());
    }
}

/// `run --slurm [--dry-run]`: plan (or re-open) `out/plan.json`, write the scripts for the cells
/// not finished yet, and submit them with the report job.
pub fn submit(
    cfg: &ValidConfig,
    name: &str,
    seeds: &[u64],
    out: &Path,
    dry_run: bool,
) -> anyhow::Result<()> {
    let plan = Plan::open_or_create(out, Plan::new(name, cfg, seeds)?)?;
    let states = cell_states(&plan, out)?;
    let todo: Vec<usize> = states
        .iter()
        .filter(|(_, s)| !matches!(s, CellState::Finished(_)))
        .map(|(c, _)| c.index)
        .collect();
    eprintln!(
        "job `{}`: {} cells ({} arms × seeds {:?}) in {}; {} finished, {} to run",
        plan.name,
        plan.cells.len(),
        plan.cells.len() / plan.seeds.len().max(1),
        plan.seeds,
        out.join(slurm::PLAN_FILE).display(),
        plan.cells.len() - todo.len(),
        todo.len()
    );
    if todo.is_empty() {
        if dry_run {
            eprintln!("every cell is finished: nothing to submit");
            return Ok(());
        }
        eprintln!("every cell is finished: merging them now");
        return merge(out);
    }
    let out_abs = std::path::absolute(out).with_context(|| out.display().to_string())?;
    let workdir = std::env::current_dir().context("the current directory")?;
    let command = match &cfg.slurm.command {
        Some(c) => c.clone(),
        None => {
            let exe = std::env::current_exe().context("the path of this binary")?;
            script::shell_quote(&exe.to_string_lossy())
        }
    };
    let inputs = script::ScriptInputs {
        name: &plan.name,
        out: &out_abs,
        workdir: &workdir,
        command: &command,
        slurm: &cfg.slurm,
        cells: &todo,
    };
    let cells_text = script::cells_script(&inputs)?;
    let report_text = script::report_script(&inputs)?;
    let (cells_path, report_path) = script::script_paths(&out_abs);
    let logs = script::slurm_dir(&out_abs).join("logs");
    std::fs::create_dir_all(&logs).with_context(|| logs.display().to_string())?;
    for (path, text) in [(&cells_path, &cells_text), (&report_path, &report_text)] {
        std::fs::write(path, text).with_context(|| path.display().to_string())?;
    }
    if dry_run {
        for (path, text) in [(&cells_path, &cells_text), (&report_path, &report_text)] {
            println!("# ---- {} ----\n{text}", path.display());
        }
        eprintln!(
            "dry run: nothing submitted. To submit: spatial-reasoning run … --slurm (the same arguments without --dry-run), or by hand:\n  \
             sbatch --parsable {}\n  sbatch --dependency=afterany:<that job id> {}",
            cells_path.display(),
            report_path.display()
        );
        return Ok(());
    }
    if cfg.slurm.gpus > 0 && cfg!(not(feature = "cuda")) && cfg.slurm.command.is_none() {
        eprintln!(
            "warning: slurm.gpus = {} but this binary was built without --features cuda: the cells will train on the CPU",
            cfg.slurm.gpus
        );
    }
    let earlier: Vec<String> = read_submissions(out)?
        .into_iter()
        .flat_map(|s| [s.cells_job, s.report_job])
        .filter(|id| !id.is_empty())
        .collect();
    let queued = sbatch::still_queued(&earlier)?;
    if !queued.is_empty() {
        return Err(SlurmError::StillQueued { jobs: queued }.into());
    }
    let cells_job = sbatch::sbatch(&cells_path, None)?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let mut record = Submission {
        time: spatial_reasoning::eval::results::rfc3339_utc(now),
        unix_time: now,
        cells_job: cells_job.clone(),
        report_job: String::new(),
        cells: todo.clone(),
    };
    let report_job = match sbatch::sbatch(&report_path, Some(&cells_job)) {
        Ok(id) => id,
        Err(e) => {
            record_submission(out, &record)?;
            anyhow::bail!(
                "the cells were submitted as job {cells_job}, but the report job was not: {e}\n\
                 submit it by hand: sbatch --dependency=afterany:{cells_job} {}",
                report_path.display()
            );
        }
    };
    record.report_job = report_job.clone();
    record_submission(out, &record)?;
    let spec = script::array_spec(&todo, cfg.slurm.max_parallel);
    eprintln!(
        "submitted cells {spec} ({} tasks) as job array {cells_job}, and the report as job {report_job} (it starts when every task has ended)\n\
         follow it with:\n  \
         squeue -j {cells_job},{report_job}\n  \
         spatial-reasoning run --out {out} --status\n  \
         tail -f {log}\n\
         cancel with `scancel {cells_job} {report_job}` (running cells stop with a checkpoint)\n\
         when job {report_job} has run: {out}/report.md, {out}/results.csv, {out}/plots/\n\
         submit again with the same config to run only the cells not finished",
        todo.len(),
        out = out.display(),
        log = script::cell_log(out, todo[0]).display(),
    );
    println!("cells job {cells_job}");
    println!("report job {report_job}");
    Ok(())
}

/// Threads of a cell: `train.threads`, else the task's `SLURM_CPUS_PER_TASK`, else every core.
fn cell_threads(cfg: &ValidConfig) -> usize {
    if cfg.train.threads > 0 {
        return cfg.train.threads;
    }
    std::env::var("SLURM_CPUS_PER_TASK")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// `run --out DIR --cell N`: one array task.
pub fn cell(out: &Path, index: usize) -> anyhow::Result<()> {
    let started = Instant::now();
    let plan = Plan::load(out)?;
    let cell = plan.cell(index, &out.join(slurm::PLAN_FILE))?.clone();
    let cfg = plan.config()?;
    init_threads(cell_threads(&cfg));
    let task = TaskInfo::from_env();
    eprintln!(
        "== cell {index} of {}: {} seed {} in {} (job {}, SLURM_RESTART_COUNT={}, host {}, {} threads)",
        plan.cells.len(),
        cell.arm.name,
        cell.seed,
        cell.run_dir(out).display(),
        task.job.as_deref().unwrap_or("none"),
        task.restart_count,
        task.host.as_deref().unwrap_or("?"),
        rayon::current_num_threads()
    );
    let stop = stop_flag()?;
    let mut progress = progress_printer(started);
    progress(JobProgress::Run {
        arm: cell.arm.name.clone(),
        seed: cell.seed,
        index: index + 1,
        total: plan.cells.len(),
    });
    run_planned_cell(out, index, &task, Some(stop), &mut progress)?;
    eprintln!(
        "== cell {index} finished in {}",
        fmt_secs(started.elapsed().as_secs_f64())
    );
    Ok(())
}

/// `run --out DIR --merge`: the report from every finished cell's own files.
pub fn merge(out: &Path) -> anyhow::Result<()> {
    let plan = Plan::load(out)?;
    let cfg = plan.config()?;
    let states = cell_states(&plan, out)?;
    let mut rows = Vec::new();
    let mut runs: Vec<(String, u64, PathBuf)> = Vec::new();
    let mut random_init: Vec<(String, u64, PathBuf)> = Vec::new();
    let mut missing = Vec::new();
    for (cell, state) in &states {
        match state {
            CellState::Finished(r) => {
                rows.extend(r.iter().cloned());
                let entry = (cell.arm.name.clone(), cell.seed, cell.run_dir(out));
                match cell.arm.kind {
                    ArmKind::Pretrain => runs.push(entry),
                    ArmKind::RandomInit => random_init.push(entry),
                    ArmKind::Supervised => {}
                }
            }
            other => missing.push((cell, other.describe())),
        }
    }
    // The merged CSV is rebuilt from the cells' files every time (cells never append to it).
    let csv = out.join("results.csv");
    report::write_results_csv(&csv, &rows)?;
    let submissions = read_submissions(out)?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let (wall, since) = match submissions.first() {
        Some(s) => (now.saturating_sub(s.unix_time) as f64, s.time.clone()),
        None => (0.0, "no submission recorded".into()),
    };
    let jobs: Vec<String> = submissions
        .iter()
        .map(|s| format!("{} (report {})", s.cells_job, s.report_job))
        .collect();
    let mut notes = format!(
        "Merged by `spatial-reasoning run --out {} --merge` from the result files of {} of the {} cells of `plan.json`; wall time counted from the first submission ({since}). Slurm jobs: {}. Crate {} (git {}). Accuracies are top-1 on the test split; mean ± sample std over seeds.",
        out.display(),
        plan.cells.len() - missing.len(),
        plan.cells.len(),
        if jobs.is_empty() { "none".into() } else { jobs.join(", ") },
        env!("CARGO_PKG_VERSION"),
        spatial_reasoning::train::git_revision().unwrap_or_else(|| "unknown".into())
    );
    if !missing.is_empty() {
        notes.push_str(&format!(
            "\n\n**{} cell(s) without results** (not in the tables or plots; submit again with the same config to run them):\n\n| cell | arm | seed | state | log |\n|---:|---|---:|---|---|\n",
            missing.len()
        ));
        for (cell, what) in &missing {
            notes.push_str(&format!(
                "| {} | {} | {} | {} | `slurm/logs/cell-{}.out` |\n",
                cell.index,
                cell.arm.name,
                cell.seed,
                what.replace('|', "\\|").replace('\n', " "),
                cell.index
            ));
        }
    }
    let outcome = JobOutcome {
        rows,
        runs,
        random_init,
        wall_time_s: wall,
    };
    let files = write_job_report(&cfg, &plan.name, &plan.seeds, out, &outcome, wall, notes)?;
    let rows = outcome.rows;
    for (cell, what) in &missing {
        eprintln!(
            "cell {} ({} seed {}) has no results: {what}",
            cell.index, cell.arm.name, cell.seed
        );
    }
    eprintln!(
        "merged {} of {} cells: {} ({} rows in {})",
        plan.cells.len() - missing.len(),
        plan.cells.len(),
        files.markdown.display(),
        rows.len(),
        csv.display()
    );
    println!("{}", report::accuracy_table(&report::summarize(&rows)));
    Ok(())
}

/// `run --out DIR --status`: every cell's state, with the Slurm queue state of the latest
/// submission's tasks when `squeue` answers.
pub fn status(out: &Path) -> anyhow::Result<()> {
    let plan = Plan::load(out)?;
    let states = cell_states(&plan, out)?;
    let latest = read_submissions(out)?.pop();
    let mut queue = Vec::new();
    let mut report_queued = None;
    if let Some(s) = &latest {
        match sbatch::task_states(&s.cells_job) {
            Ok(q) => queue = q,
            Err(e) => eprintln!("(no queue state: {e})"),
        }
        report_queued = sbatch::still_queued(std::slice::from_ref(&s.report_job))
            .ok()
            .map(|q| !q.is_empty());
    }
    println!("cell\tarm\tseed\tstate");
    let mut finished = 0;
    for (cell, state) in &states {
        finished += matches!(state, CellState::Finished(_)) as usize;
        let queued = queue
            .iter()
            .find(|(i, _)| *i == cell.index)
            .map(|(_, t)| format!(" [Slurm: {t}]"))
            .unwrap_or_default();
        println!(
            "{}\t{}\t{}\t{}{queued}",
            cell.index,
            cell.arm.name,
            cell.seed,
            state.describe()
        );
    }
    println!("{finished} of {} cells finished", states.len());
    if let Some(s) = latest {
        let report = match report_queued {
            Some(true) => "still queued",
            Some(false) => "ended",
            None => "state unknown",
        };
        println!(
            "latest submission {}: cells job {}, report job {} ({report})",
            s.time, s.cells_job, s.report_job
        );
    }
    Ok(())
}
