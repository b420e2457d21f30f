//! `metrics.jsonl`: one JSON object per logged step and per epoch.
//!
//! On resume the file is reopened: a torn last line (a kill mid-write) is cut off, every complete
//! row is kept, and rows the resumed run recomputes for steps already logged are not written
//! again, so the file never holds duplicates.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Row kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RowKind {
    Step,
    Epoch,
}

/// One row of `metrics.jsonl`, written by [`MetricsWriter`] and read back by [`read_rows`], the
/// resume in [`MetricsWriter::open`] and the report ([`crate::report::read_metrics_jsonl`]). Step
/// rows average the steps since the previous step row; epoch rows average the whole epoch.
///
/// Reading is tolerant, writing is not affected: JSON has no NaN, so a non-finite float is written
/// as `null`, and a `null` or missing float reads as `NaN`; a missing `kind` reads as `step`, a
/// missing `skipped` as 0; extra fields are ignored. Only `step` is required.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MetricRow {
    #[serde(default = "step_kind")]
    pub kind: RowKind,
    /// Completed optimiser steps when the row was written.
    pub step: u64,
    /// Fractional epoch (`step / steps_per_epoch`); for epoch rows, the epoch number completed.
    #[serde(default = "nan", deserialize_with = "f64_or_nan")]
    pub epoch: f64,
    /// Total loss: `loss_relation + α · loss_distance`.
    #[serde(default = "nan", deserialize_with = "f64_or_nan")]
    pub loss: f64,
    /// Binary cross-entropy of the relation logit.
    #[serde(default = "nan", deserialize_with = "f64_or_nan")]
    pub loss_relation: f64,
    /// Mean squared error of the predicted patch offset (0 for RR).
    #[serde(default = "nan", deserialize_with = "f64_or_nan")]
    pub loss_distance: f64,
    /// Accuracy of the relation head on the window's pairs, in [0, 1].
    #[serde(default = "nan", deserialize_with = "f64_or_nan")]
    pub relation_acc: f64,
    /// Source images per second over the row's window.
    #[serde(default = "nan", deserialize_with = "f64_or_nan")]
    pub img_per_s: f64,
    /// Fraction of the window's wall time the model waited for data.
    #[serde(default = "nan", deserialize_with = "f64_or_nan")]
    pub data_wait: f64,
    /// Steps skipped so far for non-finite values.
    #[serde(default)]
    pub skipped: u64,
    /// Epoch rows of runs with `[diagnostics]` on: what [`crate::eval::diagnostics`] measured at
    /// the epoch's end (absent from step rows and older files).
    #[serde(flatten)]
    pub diagnostics: DiagColumns,
}

impl super::checkpoint::WindowSums {
    /// Adds one step's statistics: `images` source images in `seconds`, `wait` of them waiting
    /// for data.
    pub fn add(&mut self, s: &crate::method::StepStats, images: usize, seconds: f64, wait: f64) {
        self.steps += 1;
        self.loss += s.loss as f64;
        self.loss_relation += s.loss_relation as f64;
        self.loss_distance += s.loss_distance as f64;
        self.relation_acc += s.relation_acc as f64;
        self.images += images as f64;
        self.seconds += seconds;
        self.wait_seconds += wait;
    }

    /// The window's averages as a metrics row (no diagnostics).
    pub fn row(&self, kind: RowKind, step: u64, epoch: f64, skipped: u64) -> MetricRow {
        let n = self.steps.max(1) as f64;
        let per_second = |x: f64| {
            if self.seconds > 0.0 {
                x / self.seconds
            } else {
                0.0
            }
        };
        MetricRow {
            kind,
            step,
            epoch,
            loss: self.loss / n,
            loss_relation: self.loss_relation / n,
            loss_distance: self.loss_distance / n,
            relation_acc: self.relation_acc / n,
            img_per_s: per_second(self.images),
            data_wait: per_second(self.wait_seconds),
            skipped,
            diagnostics: Default::default(),
        }
    }
}

/// The diagnostics columns of an epoch row, flat in the JSON object; each is absent (`None`)
/// where not measured, and a non-finite value (a constant prediction's r) reads back as `None`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct DiagColumns {
    /// Relation head's offsets vs the true ones on the fixed test pairs: Pearson r per axis (SR).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offset_r_row: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offset_r_col: Option<f64>,
    /// … and R² per axis.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offset_r2_row: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offset_r2_col: Option<f64>,
    /// Linear (ridge) regressor from frozen pair features to the offset, R² on the test pairs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub position_r2_row: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub position_r2_col: Option<f64>,
    /// Online kNN accuracy in [0, 1] on the fixed subsets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub online_knn_acc: Option<f64>,
    /// Seconds the measurement took.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub diagnostics_s: Option<f64>,
}

impl DiagColumns {
    /// The columns of one measurement.
    pub fn from_diagnostics(d: &crate::eval::Diagnostics) -> Self {
        let finite = |v: f64| v.is_finite().then_some(v);
        Self {
            offset_r_row: d.offset.and_then(|o| finite(o.r[0])),
            offset_r_col: d.offset.and_then(|o| finite(o.r[1])),
            offset_r2_row: d.offset.and_then(|o| finite(o.r2[0])),
            offset_r2_col: d.offset.and_then(|o| finite(o.r2[1])),
            position_r2_row: finite(d.position.r2[0]),
            position_r2_col: finite(d.position.r2[1]),
            online_knn_acc: d.knn_acc,
            diagnostics_s: Some(d.seconds),
        }
    }
}

fn step_kind() -> RowKind {
    RowKind::Step
}

fn nan() -> f64 {
    f64::NAN
}

fn f64_or_nan<'de, D: serde::Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::NAN))
}

#[derive(Debug, thiserror::Error)]
#[error("{path}: {source}")]
pub struct MetricsError {
    pub path: PathBuf,
    #[source]
    pub source: std::io::Error,
}

/// Appends rows, one `write` per row.
pub struct MetricsWriter {
    path: PathBuf,
    file: File,
    last_step: Option<u64>,
    last_epoch_row: Option<u64>,
}

impl MetricsWriter {
    /// Open for a run. With `resume`, keep complete rows and remember the last logged steps;
    /// without, start a new file.
    pub fn open(path: &Path, resume: bool) -> Result<Self, MetricsError> {
        let err = |source| MetricsError {
            path: path.to_path_buf(),
            source,
        };
        let mut last_step = None;
        let mut last_epoch_row = None;
        if resume && path.exists() {
            let text = std::fs::read(path).map_err(err)?;
            // Keep only complete, parseable lines.
            let mut keep = 0usize;
            let mut start = 0usize;
            while let Some(nl) = text[start..].iter().position(|&b| b == b'\n') {
                let line = &text[start..start + nl];
                match serde_json::from_slice::<MetricRow>(line) {
                    Ok(row) => {
                        match row.kind {
                            RowKind::Step => last_step = Some(row.step),
                            RowKind::Epoch => last_epoch_row = Some(row.step),
                        }
                        keep = start + nl + 1;
                    }
                    Err(_) => break,
                }
                start += nl + 1;
            }
            if keep != text.len() {
                let f = OpenOptions::new().write(true).open(path).map_err(err)?;
                f.set_len(keep as u64).map_err(err)?;
                f.sync_all().map_err(err)?;
            }
        }
        let file = if resume {
            OpenOptions::new().create(true).append(true).open(path)
        } else {
            File::create(path)
        }
        .map_err(err)?;
        Ok(Self {
            path: path.to_path_buf(),
            file,
            last_step,
            last_epoch_row,
        })
    }

    /// Append a row unless a row of the same kind for this or a later step is already there.
    /// Returns whether it was written.
    pub fn write(&mut self, row: &MetricRow) -> Result<bool, MetricsError> {
        let last = match row.kind {
            RowKind::Step => &mut self.last_step,
            RowKind::Epoch => &mut self.last_epoch_row,
        };
        if matches!(*last, Some(s) if s >= row.step) {
            return Ok(false);
        }
        let mut line = serde_json::to_vec(row).expect("a row serialises");
        line.push(b'\n');
        self.file.write_all(&line).map_err(|source| MetricsError {
            path: self.path.clone(),
            source,
        })?;
        *last = Some(row.step);
        Ok(true)
    }

    /// Flush to disk (called at checkpoints).
    pub fn sync(&mut self) -> Result<(), MetricsError> {
        self.file.sync_data().map_err(|source| MetricsError {
            path: self.path.clone(),
            source,
        })
    }
}

/// Read every complete row of a metrics file.
pub fn read_rows(path: &Path) -> Result<Vec<MetricRow>, MetricsError> {
    let text = std::fs::read_to_string(path).map_err(|source| MetricsError {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(text
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(kind: RowKind, step: u64) -> MetricRow {
        MetricRow {
            kind,
            step,
            epoch: 0.0,
            loss: step as f64,
            loss_relation: 0.0,
            loss_distance: 0.0,
            relation_acc: 0.5,
            img_per_s: 1.0,
            data_wait: 0.0,
            skipped: 0,
            diagnostics: Default::default(),
        }
    }

    #[test]
    fn resume_cuts_a_torn_line_and_skips_duplicates() {
        let dir = std::env::temp_dir().join(format!("sr-metrics-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("metrics.jsonl");
        let mut w = MetricsWriter::open(&path, false).unwrap();
        for s in [10, 20, 30] {
            assert!(w.write(&row(RowKind::Step, s)).unwrap());
        }
        drop(w);
        // A kill mid-write leaves half a line.
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(b"{\"kind\":\"step\",\"st").unwrap();
        drop(f);
        let mut w = MetricsWriter::open(&path, true).unwrap();
        // Resumed from a checkpoint at step 15: steps 20 and 30 are recomputed, not rewritten.
        assert!(!w.write(&row(RowKind::Step, 20)).unwrap());
        assert!(!w.write(&row(RowKind::Step, 30)).unwrap());
        assert!(w.write(&row(RowKind::Epoch, 30)).unwrap());
        assert!(w.write(&row(RowKind::Step, 40)).unwrap());
        let rows = read_rows(&path).unwrap();
        let steps: Vec<u64> = rows.iter().map(|r| r.step).collect();
        assert_eq!(steps, vec![10, 20, 30, 30, 40]);
        assert!(std::fs::read_to_string(&path).unwrap().ends_with("}\n"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// serde_json writes a non-finite float as `null`. Such a row must read back (as NaN) and
    /// must survive a resume, rather than end the kept prefix and truncate the file there.
    #[test]
    fn a_null_float_reads_as_nan_and_survives_resume() {
        let dir = std::env::temp_dir().join(format!("sr-metrics-nan-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("metrics.jsonl");
        let mut w = MetricsWriter::open(&path, false).unwrap();
        let mut bad = row(RowKind::Step, 20);
        bad.loss = f64::NAN;
        for r in [row(RowKind::Step, 10), bad, row(RowKind::Step, 30)] {
            assert!(w.write(&r).unwrap());
        }
        drop(w);
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            text.lines().nth(1).unwrap().contains(r#""loss":null"#),
            "{text}"
        );
        drop(MetricsWriter::open(&path, true).unwrap());
        assert_eq!(std::fs::read_to_string(&path).unwrap(), text);
        let rows = read_rows(&path).unwrap();
        let steps: Vec<u64> = rows.iter().map(|r| r.step).collect();
        assert_eq!(steps, vec![10, 20, 30]);
        assert!(rows[1].loss.is_nan() && rows[1].relation_acc == 0.5);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
