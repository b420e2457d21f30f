//! Serialisable evaluation results and the append-only results CSV.

use std::io::Write;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::knn::KnnResult;
use super::linear::LinearProbeResult;
use super::{EvalError, Result};

/// Which evaluation protocol produced a number.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// Linear probe on frozen features (with n patch features for the patch-concatenated probe).
    Linear,
    /// Weighted kNN on frozen features.
    Knn,
}

impl Protocol {
    /// Serialised name: `linear` or `knn`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Linear => "linear",
            Self::Knn => "knn",
        }
    }
    /// The metric this protocol reports: `linear_eval_acc` or `knn_acc`.
    pub fn metric(self) -> &'static str {
        match self {
            Self::Linear => "linear_eval_acc",
            Self::Knn => "knn_acc",
        }
    }
}

/// One evaluation number with its settings, as written to `RUN/eval/*.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EvalResult {
    pub protocol: Protocol,
    /// `linear_eval_acc` or `knn_acc`.
    pub metric: String,
    /// Top-1 accuracy as a fraction in `[0, 1]`.
    pub value: f64,
    /// Patches n of the patch-concatenated probe (0 = plain feature; always 0 for kNN).
    pub probe_patches: usize,
    /// Probe training epochs (0 for kNN).
    pub epochs: usize,
    pub n_train: usize,
    pub n_test: usize,
    /// Width of the probe's input.
    pub feature_dim: usize,
    /// Linear probe only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub final_train_loss: Option<f32>,
    /// Linear probe only: accuracy of the final classifier on the training features.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub train_acc: Option<f32>,
    /// kNN only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub k: Option<usize>,
    /// kNN only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f32>,
    /// Wall-clock seconds of the probe (not counting feature extraction).
    pub seconds: f64,
}

impl EvalResult {
    /// A linear-probe result; `n_train`/`n_test` are the feature-set sizes.
    pub fn from_linear(
        r: &LinearProbeResult,
        probe_patches: usize,
        n_train: usize,
        n_test: usize,
        seconds: f64,
    ) -> Self {
        Self {
            protocol: Protocol::Linear,
            metric: Protocol::Linear.metric().into(),
            value: r.acc as f64,
            probe_patches,
            epochs: r.epochs,
            n_train,
            n_test,
            feature_dim: r.dim,
            final_train_loss: Some(r.final_train_loss),
            train_acc: Some(r.train_acc),
            k: None,
            temperature: None,
            seconds,
        }
    }

    /// A kNN result on features of width `feature_dim`.
    pub fn from_knn(r: &KnnResult, feature_dim: usize, seconds: f64) -> Self {
        Self {
            protocol: Protocol::Knn,
            metric: Protocol::Knn.metric().into(),
            value: r.acc as f64,
            probe_patches: 0,
            epochs: 0,
            n_train: r.n_train,
            n_test: r.n_test,
            feature_dim,
            final_train_loss: None,
            train_acc: None,
            k: Some(r.k),
            temperature: Some(r.temperature),
            seconds,
        }
    }
}

/// One row of the results CSV: one evaluated number of one run. Columns: [`CSV_COLUMNS`].
/// The report module reads these rows back (`crate::report::read_results_csv`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ResultRow {
    /// Run directory name or id.
    pub run: String,
    /// `rr`, `sr`, `supervised`, `random`, or an ablation arm such as `sr patches=3`.
    pub arm: String,
    pub seed: u64,
    pub dataset: String,
    pub backbone: String,
    /// [`Protocol::name`]: `linear` or `knn`.
    pub protocol: String,
    /// [`Protocol::metric`]: `linear_eval_acc` or `knn_acc`.
    pub metric: String,
    pub probe_patches: usize,
    /// Fraction in `[0, 1]`.
    pub value: f64,
    pub epochs: usize,
    /// The hyper-parameter an ablation arm varies (e.g. `patches`), if any.
    #[serde(default)]
    pub varied_key: Option<String>,
    /// Its value in this arm (e.g. `3`).
    #[serde(default)]
    pub varied_value: Option<String>,
    /// RFC 3339 UTC, e.g. from [`ResultRow::timestamp_now`].
    #[serde(default)]
    pub timestamp: Option<String>,
}

/// Column names of the results CSV, in the order a new file gets them.
pub const CSV_COLUMNS: [&str; 13] = [
    "run",
    "arm",
    "seed",
    "dataset",
    "backbone",
    "protocol",
    "metric",
    "probe_patches",
    "value",
    "epochs",
    "varied_key",
    "varied_value",
    "timestamp",
];

impl ResultRow {
    /// A row for `result` with the run's identity, stamped with the current time.
    pub fn new(
        run: &str,
        arm: &str,
        seed: u64,
        dataset: &str,
        backbone: &str,
        result: &EvalResult,
    ) -> Self {
        Self {
            run: run.into(),
            arm: arm.into(),
            seed,
            dataset: dataset.into(),
            backbone: backbone.into(),
            protocol: result.protocol.name().into(),
            metric: result.metric.clone(),
            probe_patches: result.probe_patches,
            value: result.value,
            epochs: result.epochs,
            varied_key: None,
            varied_value: None,
            timestamp: Some(Self::timestamp_now()),
        }
    }

    /// The current time as RFC 3339 UTC with seconds, e.g. `2026-11-27T06:18:15Z`.
    pub fn timestamp_now() -> String {
        let secs = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        rfc3339_utc(secs)
    }

    /// The unquoted text of column `name` (one of [`CSV_COLUMNS`]); `None` for an unknown name.
    pub fn field(&self, name: &str) -> Option<String> {
        let opt = |o: &Option<String>| o.clone().unwrap_or_default();
        Some(match name {
            "run" => self.run.clone(),
            "arm" => self.arm.clone(),
            "seed" => self.seed.to_string(),
            "dataset" => self.dataset.clone(),
            "backbone" => self.backbone.clone(),
            "protocol" => self.protocol.clone(),
            "metric" => self.metric.clone(),
            "probe_patches" => self.probe_patches.to_string(),
            "value" => format!("{}", self.value),
            "epochs" => self.epochs.to_string(),
            "varied_key" => opt(&self.varied_key),
            "varied_value" => opt(&self.varied_value),
            "timestamp" => opt(&self.timestamp),
            _ => return None,
        })
    }

    /// The row as one CSV line (with `\n`) in the order of `columns`, fields quoted where
    /// needed (RFC 4180). Errors on a column name not in [`CSV_COLUMNS`].
    pub fn to_csv_line(&self, columns: &[&str]) -> Result<String> {
        let mut fields = Vec::with_capacity(columns.len());
        for c in columns {
            let v = self.field(c).ok_or_else(|| {
                EvalError::invalid("results CSV", format!("unknown column {c:?}"))
            })?;
            fields.push(crate::files::csv_field(&v));
        }
        let mut line = fields.join(",");
        line.push('\n');
        Ok(line)
    }
}

/// RFC 3339 UTC of a Unix time (days-to-civil conversion, proleptic Gregorian).
pub fn rfc3339_utc(unix_secs: u64) -> String {
    let days = (unix_secs / 86_400) as i64;
    let rem = unix_secs % 86_400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + (m <= 2) as i64;
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

/// Append `row` to the CSV at `path`. A new or empty file first gets the header
/// [`CSV_COLUMNS`]. An existing file keeps its own header: the row is written in that column
/// order (so a file written by `crate::report::write_results_csv`, or with fewer columns, stays
/// consistent); a header naming a column this module does not know is an error naming the file.
/// Each call issues a single `write` of the whole text on a file opened in append mode, so
/// concurrent appenders do not interleave within a row.
pub fn append_csv(path: &Path, row: &ResultRow) -> Result<()> {
    let existing = match std::fs::metadata(path) {
        Ok(m) => m.len(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
        Err(e) => return Err(EvalError::io(path, e)),
    };
    let mut text = String::new();
    if existing == 0 {
        text.push_str(&CSV_COLUMNS.join(","));
        text.push('\n');
        text.push_str(&row.to_csv_line(&CSV_COLUMNS)?);
    } else {
        let content = std::fs::read_to_string(path).map_err(|e| EvalError::io(path, e))?;
        let first = content.lines().next().unwrap_or("");
        let columns: Vec<&str> = first.split(',').map(|c| c.trim()).collect();
        if let Some(bad) = columns.iter().find(|c| !CSV_COLUMNS.contains(c)) {
            return Err(EvalError::BadFile {
                path: path.to_path_buf(),
                detail: format!(
                    "header {first:?} names column {bad:?}; known columns: {}",
                    CSV_COLUMNS.join(",")
                ),
            });
        }
        if !content.ends_with('\n') {
            text.push('\n');
        }
        text.push_str(&row.to_csv_line(&columns)?);
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| EvalError::io(dir, e))?;
    }
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| EvalError::io(path, e))?;
    f.write_all(text.as_bytes())
        .map_err(|e| EvalError::io(path, e))
}
