//! Running a job's cells on a Slurm cluster: `spatial-reasoning run --slurm`.
//!
//! A job (arms × seeds, sweeps expanded) is a list of independent cells
//! ([`crate::experiment::plan_cells`]). On a cluster each cell is one task of a Slurm job array,
//! and a report job that depends on the array merges the cells' own result files:
//!
//! 1. [`Plan`]: the cells in their stable order, with the configuration they were planned from,
//!    written to `DIR/plan.json`. The same `DIR` with a different configuration is refused
//!    ([`SlurmError::PlanMismatch`]); the `[slurm]` section ([`SlurmConfig`]) is not part of the
//!    plan, so time limits or partitions may change between submissions.
//! 2. [`script`]: `DIR/slurm/cells.sbatch` (`#SBATCH --array=…`, task `i` runs
//!    `spatial-reasoning run --out DIR --cell i`) and `DIR/slurm/report.sbatch`
//!    (`run --out DIR --merge`), submitted by [`sbatch`] with `--dependency=afterany:<array>`.
//! 3. [`run_planned_cell`]: one cell, which writes only inside its run directory (checkpoints,
//!    `metrics.jsonl`, `eval/*.json`, and `attempt.json`, the state of its latest attempt),
//!    holding the cell's lock ([`crate::experiment::lock_cell`]). A stop request (SIGTERM from
//!    a time limit or preemption) ends training with a checkpoint; the requeued task, or a later
//!    submission, resumes from it.
//! 4. [`cell_states`]: what every cell has produced, for the merged report (finished cells'
//!    rows, the failed or unfinished cells named) and `run --out DIR --status`.
//!
//! Submitting again submits only unfinished cells (a cell is finished when every probe's
//! `eval/*.json` is there), and is refused while an earlier submission is still queued.

mod config;
mod plan;
pub mod sbatch;
pub mod script;

use std::path::PathBuf;

pub use config::{parse_time_minutes, SlurmConfig};
pub use plan::{
    cell_states, run_planned_cell, Attempt, AttemptState, CellState, Plan, TaskInfo, ATTEMPT_FILE,
    PLAN_FILE,
};
pub use sbatch::{read_submissions, record_submission, Submission};

/// Everything that can go wrong planning, submitting, running or merging cells. Each variant
/// names the file, job or command involved.
#[derive(Debug, thiserror::Error)]
pub enum SlurmError {
    #[error(transparent)]
    Job(#[from] crate::experiment::JobError),
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error("{path}: {detail}")]
    File { path: PathBuf, detail: String },
    #[error(
        "{path}: this directory holds a job planned from a different configuration ({}); give the same config, seeds and --set as before, or choose another --out",
        differences.join("; ")
    )]
    PlanMismatch {
        path: PathBuf,
        differences: Vec<String>,
    },
    #[error(
        "{path} not found: plan and submit the job first with `spatial-reasoning run --config FILE --out {} --slurm`",
        out.display()
    )]
    NoPlan { path: PathBuf, out: PathBuf },
    #[error("cell {index}: {path} has cells 0 to {last}")]
    NoSuchCell {
        index: usize,
        path: PathBuf,
        last: usize,
    },
    #[error(
        "{program} not found: run this where Slurm's commands are installed (a login node), or use --dry-run to write the scripts without submitting"
    )]
    NoSlurm { program: String },
    #[error("`{command}` failed ({status}): {stderr}")]
    Command {
        command: String,
        status: String,
        stderr: String,
    },
    #[error(
        "earlier submission still in the queue (job {}); wait for it to end (`squeue -j {}`) or cancel it (`scancel {}`), then submit again",
        jobs.join(", "),
        jobs.join(","),
        jobs.join(" ")
    )]
    StillQueued { jobs: Vec<String> },
    #[error("{path}: {detail}")]
    UnusablePath { path: PathBuf, detail: String },
}

fn file_err(path: &std::path::Path, detail: impl ToString) -> SlurmError {
    SlurmError::File {
        path: path.to_path_buf(),
        detail: detail.to_string(),
    }
}
