//! Tables, charts and `report.md` for a study: several arms (`random`, `rr`, `sr`, `supervised`,
//! or ablation arms such as `sr patches=3`) pretrained over seeds and evaluated by several probes.
//!
//! Inputs are plain serde rows, so a report can be rebuilt from files alone:
//! - [`MetricRow`]: one line of a run's `metrics.jsonl` (read with [`read_metrics_jsonl`]);
//! - [`ResultRow`] (the evaluation module's row, re-exported): one evaluated number, stored in a
//!   results CSV ([`crate::eval::append_csv`], [`write_results_csv`], [`read_results_csv`]).
//!
//! Ablation arms are named `FAMILY key=value` (e.g. `sr patches=3`): the report reads the varied
//! hyper-parameter from the arm's name ([`split_arm`]) and charts accuracy against it.
//!
//! [`summarize`] reduces result rows to mean ± sample standard deviation over seeds;
//! [`write_report`] writes `DIR/report.md` with its charts under `DIR/plots/` (each chart as PNG and
//! SVG); [`regenerate_from_csv`] rebuilds the tables and accuracy charts from a results CSV alone.
//!
//! Charts are drawn with plotters; its text goes through `ab_glyph` with the crate's bundled font
//! (registered by [`crate::font::register_font`]), so nothing depends on the fonts of the machine.

mod csv;
// First: its `render_both!` serves the chart modules after it.
#[macro_use]
mod plots;
mod diagnostics;
mod markdown;
mod patches;
mod summary;

use std::path::PathBuf;

pub use self::csv::{read_metrics_jsonl, read_results_csv, write_results_csv};
pub use self::diagnostics::{diagnostics_table, plot_diagnostics, plot_offset_scatter};
pub use self::markdown::{
    accuracy_table, regenerate_from_csv, write_report, ReportFiles, ReportInput,
};
pub use self::patches::{plot_patches, PatchPanel};
pub use self::plots::{plot_ablation, plot_accuracy, plot_loss_curves, PlotFiles};
pub use self::summary::{format_pct, mean_std, probe_label, split_arm, summarize, SummaryRow};
pub use crate::eval::{Protocol, ResultRow};
/// One line of a run's `metrics.jsonl`: the trainer's own row type, whose reader maps `null` and
/// missing floats to `NaN` (charts skip non-finite values).
pub use crate::train::metrics::{MetricRow, RowKind};

/// Everything that can go wrong building a report. Each variant names the file involved.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}:{line}: {detail}")]
    Parse {
        path: PathBuf,
        line: usize,
        detail: String,
    },
    #[error("{path}: drawing failed: {detail}")]
    Plot { path: PathBuf, detail: String },
    #[error("{0}")]
    Input(String),
}

impl ReportError {
    fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        ReportError::Io {
            path: path.into(),
            source,
        }
    }
}
