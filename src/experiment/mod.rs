//! Jobs that tie the pieces together: evaluate a run directory, and the main job
//! ([`run_job`]) that pretrains every arm over seeds, evaluates each, and writes the report.
//!
//! - [`arms`]: the arm registry (`run.arms`: random-init, rr, sr, supervised) and the run
//!   directory of an arm × seed; [`sweep`] expands the `sr` arm by `[run.sweep]`.
//! - [`evaluate`]: where an evaluated backbone comes from ([`BackboneSource`]: a checkpoint, the
//!   seed's initialisation, supervised training) and its evaluation ([`evaluate_source`],
//!   [`evaluate_run`]); [`supervised`] is the supervised arm's training.
//! - [`results`]: a cell's results on disk (`RUN/eval/*.json`), read back so a restarted job
//!   skips what is done.
//! - [`job`]: cells (one arm × one seed, independent, also the Slurm array's tasks), running one
//!   ([`run_cell`]) and all of them in order ([`run_job`]).
//! - [`study`]: a finished study read back, its diagnostics, and recompute budgets.
//!
//! Every arm × seed has its own run directory `OUT/<arm>/seed-<s>/`; a job that is started again
//! skips finished runs and resumes interrupted ones from their checkpoints.

pub mod arms;
pub mod evaluate;
pub mod job;
pub mod results;
pub mod study;
pub mod supervised;
pub mod sweep;

use std::path::{Path, PathBuf};

use crate::eval::{self, ResultRow};
use crate::train::{self, TrainError};

pub use arms::{arm_dir, expand_arms, Arm, ArmKind};
pub use evaluate::{
    evaluate_run, evaluate_source, prepare_eval_data, random_init_diagnostics, run_normalization,
    BackboneSource, EvalData, RANDOM_INIT_DIAGNOSTICS,
};
pub use job::{lock_cell, plan_cells, run_cell, run_job, Cell, CellOutcome, JobOutcome};
pub use results::{finished_rows, result_file_name, save_results};
pub use study::{load_study, read_diagnostics, DiagnosticsFiles, StudyBudget};

/// Everything that can stop a job.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    #[error(transparent)]
    Train(#[from] TrainError),
    #[error(transparent)]
    Eval(#[from] eval::EvalError),
    #[error(transparent)]
    Data(#[from] crate::data::DataError),
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error(transparent)]
    Report(#[from] crate::report::ReportError),
    #[error("{path}: {detail}")]
    File { path: PathBuf, detail: String },
    #[error(transparent)]
    Io(#[from] crate::files::FileError),
    #[error("device: {0}")]
    Device(String),
    #[error(
        "interrupted in {}: stopped at step {step} of {total} with a checkpoint; run the same command again to resume",
        dir.display()
    )]
    Interrupted { dir: PathBuf, step: u64, total: u64 },
    #[error(
        "{}: another process is running this cell (it holds {}/.lock); wait for it to end",
        dir.display(),
        dir.display()
    )]
    Busy { dir: PathBuf },
}

fn file_err(path: &Path, detail: impl ToString) -> JobError {
    JobError::File {
        path: path.to_path_buf(),
        detail: detail.to_string(),
    }
}

/// Progress of a job (the library never prints).
#[derive(Clone, Debug)]
pub enum JobProgress {
    /// Starting `arm` with `seed` (`index` of `total` runs).
    Run {
        arm: String,
        seed: u64,
        index: usize,
        total: usize,
    },
    Train(train::Progress),
    Eval(String),
    Result(ResultRow),
}
