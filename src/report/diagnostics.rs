//! The diagnostics part of a report: per-epoch curves of the online kNN accuracy, of the position
//! information in the features and of the head's offset quality (see
//! [`crate::eval::diagnostics`]), random-init backbones as reference lines, a table of the final
//! epoch's values, and a predicted-vs-true offset scatter per SR arm.

use std::fmt::Write as _;
use std::path::Path;

use plotters::coord::Shift;
use plotters::prelude::*;

use super::plots::{
    arm_colour, draw_legend, finite_range, line_chart, padded, plot_paths, split_legend,
    DrawResult, Swatch, FAMILY,
};
use super::summary::mean_std;
use super::{MetricRow, PlotFiles, ReportError, RowKind};
use crate::eval::Diagnostics;
use crate::font::register_font;
use crate::train::metrics::DiagColumns;

/// One charted quantity: title, axis label, and how to read it from an epoch row and from a
/// random-init measurement.
struct Quantity {
    title: &'static str,
    axis: &'static str,
    row: fn(&DiagColumns) -> Option<f64>,
    reference: fn(&Diagnostics) -> Option<f64>,
}

fn mean2(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    Some((a? + b?) / 2.0)
}

const QUANTITIES: [Quantity; 3] = [
    Quantity {
        title: "online kNN accuracy",
        axis: "kNN top-1 (%)",
        row: |d| d.online_knn_acc.map(|v| 100.0 * v),
        reference: |d| d.knn_acc.map(|v| 100.0 * v),
    },
    Quantity {
        title: "position in the features (linear R²)",
        axis: "R², mean of Δrow and Δcol",
        row: |d| mean2(d.position_r2_row, d.position_r2_col),
        reference: |d| Some((d.position.r2[0] + d.position.r2[1]) / 2.0).filter(|v| v.is_finite()),
    },
    Quantity {
        title: "head's offsets vs true (Pearson r)",
        axis: "r, mean of Δrow and Δcol",
        row: |d| mean2(d.offset_r_row, d.offset_r_col),
        reference: |d| {
            d.offset
                .map(|o| (o.r[0] + o.r[1]) / 2.0)
                .filter(|v| v.is_finite())
        },
    },
];

/// Epoch rows with any diagnostics column.
fn with_diagnostics(rows: &[MetricRow]) -> impl Iterator<Item = &MetricRow> {
    rows.iter()
        .filter(|r| r.kind == RowKind::Epoch && r.diagnostics != DiagColumns::default())
}

/// True when some run has diagnostics in its epoch rows or some reference was measured.
pub(super) fn any(
    epochs: &[(String, u64, Vec<MetricRow>)],
    references: &[(String, u64, Diagnostics)],
) -> bool {
    !references.is_empty()
        || epochs
            .iter()
            .any(|c| with_diagnostics(&c.2).next().is_some())
}

/// The Markdown table of the last epoch's diagnostics per arm: mean ± std over seeds of the online
/// kNN accuracy (%), the position R² per axis and the head's offset r and R² per axis; random-init
/// references from their single measurement.
pub fn diagnostics_table(
    epochs: &[(String, u64, Vec<MetricRow>)],
    references: &[(String, u64, Diagnostics)],
    arm_order: &[String],
) -> String {
    let cell = |v: &[f64], pct: bool| -> String {
        if v.is_empty() {
            return "–".into();
        }
        let (m, s) = mean_std(v);
        let k = if pct { 100.0 } else { 1.0 };
        let d = if pct { 1 } else { 2 };
        if v.len() >= 2 {
            format!("{:.d$} ± {:.d$}", k * m, k * s)
        } else {
            format!("{:.d$}", k * m)
        }
    };
    let mut t = String::from(
        "| arm | epoch | seeds | online kNN (%) | position R² Δrow | position R² Δcol | offset r Δrow | offset r Δcol | offset R² Δrow | offset R² Δcol |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    let mut arms: Vec<&String> = Vec::new();
    for a in arm_order {
        if !arms.contains(&a) {
            arms.push(a);
        }
    }
    for arm in arms {
        let refs: Vec<&Diagnostics> = references
            .iter()
            .filter(|r| &r.0 == arm)
            .map(|r| &r.2)
            .collect();
        if !refs.is_empty() {
            let col = |f: &dyn Fn(&Diagnostics) -> Option<f64>| -> Vec<f64> {
                refs.iter()
                    .filter_map(|d| f(d))
                    .filter(|v| v.is_finite())
                    .collect()
            };
            let _ = writeln!(
                t,
                "| {arm} | 0 | {} | {} | {} | {} | – | – | – | – |",
                refs.len(),
                cell(&col(&|d| d.knn_acc), true),
                cell(&col(&|d| Some(d.position.r2[0])), false),
                cell(&col(&|d| Some(d.position.r2[1])), false),
            );
        }
        let last: Vec<&MetricRow> = epochs
            .iter()
            .filter(|c| &c.0 == arm)
            .filter_map(|c| with_diagnostics(&c.2).last())
            .collect();
        if last.is_empty() {
            continue;
        }
        let col = |f: fn(&DiagColumns) -> Option<f64>| -> Vec<f64> {
            last.iter().filter_map(|r| f(&r.diagnostics)).collect()
        };
        let epoch = last.iter().map(|r| r.epoch).fold(f64::NAN, f64::max);
        let _ = writeln!(
            t,
            "| {arm} | {epoch:.0} | {} | {} | {} | {} | {} | {} | {} | {} |",
            last.len(),
            cell(&col(|d| d.online_knn_acc), true),
            cell(&col(|d| d.position_r2_row), false),
            cell(&col(|d| d.position_r2_col), false),
            cell(&col(|d| d.offset_r_row), false),
            cell(&col(|d| d.offset_r_col), false),
            cell(&col(|d| d.offset_r2_row), false),
            cell(&col(|d| d.offset_r2_col), false),
        );
    }
    t
}

/// Per-epoch curves of the three diagnostics (one panel each): thin lines per seed, thick the mean
/// over seeds, dashed horizontal lines for random-init references. Writes `STEM.png`/`STEM.svg`.
pub fn plot_diagnostics(
    epochs: &[(String, u64, Vec<MetricRow>)],
    references: &[(String, u64, Diagnostics)],
    arm_order: &[String],
    stem: &Path,
) -> Result<PlotFiles, ReportError> {
    if !any(epochs, references) {
        return Err(ReportError::Input(format!(
            "{}: no diagnostics in the {} runs given",
            stem.display(),
            epochs.len()
        )));
    }
    render_both!(
        stem,
        (1800, 560),
        draw_diagnostics(epochs, references, arm_order)
    )
}

fn draw_diagnostics<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    epochs: &[(String, u64, Vec<MetricRow>)],
    references: &[(String, u64, Diagnostics)],
    arm_order: &[String],
) -> DrawResult
where
    DB::ErrorType: 'static,
{
    root.fill(&WHITE)?;
    let mut arms: Vec<String> = Vec::new();
    for a in epochs
        .iter()
        .map(|c| &c.0)
        .chain(references.iter().map(|r| &r.0))
    {
        if !arms.contains(a) {
            arms.push(a.clone());
        }
    }
    let entries: Vec<(String, RGBColor, Swatch)> = arms
        .iter()
        .map(|a| (a.clone(), arm_colour(arm_order, &arms, a), Swatch::Line))
        .collect();
    // The dashed reference lines are drawn only where the study has random-init runs.
    let note = if references.is_empty() {
        "thick: mean over seeds\nthin: each seed"
    } else {
        "thick: mean over seeds\nthin: each seed\ndashed: random-init\n(epoch 0, no training)"
    };
    let (plot_area, legend_area) = split_legend(root, Some(note), &entries)?;
    let panels = plot_area.split_evenly((1, 3));
    let max_epoch = epochs
        .iter()
        .flat_map(|c| with_diagnostics(&c.2).map(|r| r.epoch))
        .fold(1.0f64, f64::max);
    for (panel, q) in panels.iter().zip(&QUANTITIES) {
        let values = epochs
            .iter()
            .flat_map(|c| with_diagnostics(&c.2).map(|r| (q.row)(&r.diagnostics)))
            .chain(references.iter().map(|r| (q.reference)(&r.2)))
            .flatten();
        let Some(yr) = finite_range(values) else {
            panel.titled(q.title, (FAMILY, 20))?;
            continue;
        };
        let yr = padded(
            if yr.1 > yr.0 {
                yr
            } else {
                (yr.0 - 0.5, yr.1 + 0.5)
            },
            0.08,
        );
        let mut chart = line_chart(panel, q.title, ("epoch", q.axis), (0.0, max_epoch), yr)?;
        for arm in &arms {
            let c = arm_colour(arm_order, &arms, arm);
            let refs: Vec<f64> = references
                .iter()
                .filter(|r| &r.0 == arm)
                .filter_map(|r| (q.reference)(&r.2))
                .collect();
            if !refs.is_empty() {
                let m = refs.iter().sum::<f64>() / refs.len() as f64;
                chart.draw_series(DashedLineSeries::new(
                    vec![(0.0, m), (max_epoch, m)],
                    8,
                    6,
                    c.stroke_width(2),
                ))?;
            }
            let runs: Vec<Vec<(f64, f64)>> = epochs
                .iter()
                .filter(|x| &x.0 == arm)
                .map(|x| {
                    with_diagnostics(&x.2)
                        .filter_map(|r| (q.row)(&r.diagnostics).map(|v| (r.epoch, v)))
                        .filter(|p| p.1.is_finite())
                        .collect()
                })
                .filter(|v: &Vec<(f64, f64)>| !v.is_empty())
                .collect();
            for pts in &runs {
                chart.draw_series(LineSeries::new(pts.clone(), c.mix(0.35).stroke_width(1)))?;
            }
            // Mean over the seeds that reached each epoch (all of them, where all did).
            let mut by_epoch: std::collections::BTreeMap<i64, Vec<f64>> = Default::default();
            for pts in &runs {
                for &(e, v) in pts {
                    by_epoch.entry(e.round() as i64).or_default().push(v);
                }
            }
            let mean: Vec<(f64, f64)> = by_epoch
                .into_iter()
                .map(|(e, v)| (e as f64, v.iter().sum::<f64>() / v.len() as f64))
                .collect();
            chart.draw_series(LineSeries::new(mean.clone(), c.stroke_width(3)))?;
            chart.draw_series(mean.iter().map(|&p| Circle::new(p, 4, c.filled())))?;
        }
    }
    draw_legend(&legend_area, Some(note), &entries)?;
    root.present()?;
    Ok(())
}

/// The relation head's predicted offsets against the true ones on the diagnostics' test pairs,
/// one panel per SR arm `(arm, (true, predicted) pairs)`: Δrow in blue, Δcol in orange, the
/// diagonal `predicted = true` in grey. Writes `STEM.png`/`STEM.svg`.
pub fn plot_offset_scatter(
    offsets: &[(String, crate::eval::OffsetPairs)],
    stem: &Path,
) -> Result<PlotFiles, ReportError> {
    if offsets.is_empty() {
        return Err(ReportError::Input(format!(
            "{}: no SR arm with offsets",
            stem.display()
        )));
    }
    let cols = offsets.len().min(4);
    let rows = offsets.len().div_ceil(cols);
    let size = ((420 * cols as u32).max(560), 420 * rows as u32 + 40);
    render_both!(stem, size, draw_scatter(offsets, rows, cols))
}

fn draw_scatter<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    offsets: &[(String, crate::eval::OffsetPairs)],
    rows: usize,
    cols: usize,
) -> DrawResult
where
    DB::ErrorType: 'static,
{
    root.fill(&WHITE)?;
    let (top, body) = root.split_vertically(40);
    top.draw(&Text::new(
        "head's offset vs true, test pairs: Δrow blue, Δcol orange",
        (10, 12),
        (FAMILY, 16),
    ))?;
    let axes = [super::plots::colour(0), super::plots::colour(1)];
    for (panel, (arm, pairs)) in body.split_evenly((rows, cols)).iter().zip(offsets) {
        let lim = pairs
            .iter()
            .flat_map(|(t, p)| [t[0], t[1], p[0], p[1]])
            .filter(|v| v.is_finite())
            .fold(1.0f32, |m, v| m.max(v.abs())) as f64;
        let lim = lim * 1.05;
        let mut chart = ChartBuilder::on(panel)
            .caption(arm.as_str(), (FAMILY, 17))
            .margin(10)
            .x_label_area_size(40)
            .y_label_area_size(50)
            .build_cartesian_2d(-lim..lim, -lim..lim)?;
        chart
            .configure_mesh()
            .x_desc("true")
            .y_desc("predicted")
            .x_labels(5)
            .y_labels(5)
            .label_style((FAMILY, 14))
            .axis_desc_style((FAMILY, 15))
            .light_line_style(WHITE.mix(0.0))
            .bold_line_style(BLACK.mix(0.08))
            .draw()?;
        chart.draw_series(LineSeries::new(
            vec![(-lim, -lim), (lim, lim)],
            BLACK.mix(0.4).stroke_width(1),
        ))?;
        for (a, c) in axes.iter().enumerate() {
            chart.draw_series(
                pairs
                    .iter()
                    .filter(|(t, p)| t[a].is_finite() && p[a].is_finite())
                    .map(|(t, p)| Circle::new((t[a] as f64, p[a] as f64), 2, c.mix(0.35).filled())),
            )?;
        }
    }
    root.present()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eval::AxisFit;

    #[test]
    fn each_arm_appears_once_whatever_the_order_lists() {
        let d = Diagnostics {
            offset: None,
            position: AxisFit {
                r: [0.5, 0.5],
                r2: [0.25, 0.2],
            },
            knn_acc: Some(0.3),
            seconds: 1.0,
            predictions: vec![],
        };
        let refs = vec![
            ("random-init".to_string(), 1, d.clone()),
            ("random-init".to_string(), 2, d),
        ];
        // One entry per reference, as a caller collecting arm names from the references gets.
        let order = vec!["random-init".to_string(), "random-init".to_string()];
        let t = diagnostics_table(&[], &refs, &order);
        assert_eq!(t.matches("| random-init |").count(), 1, "{t}");
        assert!(t.contains("| random-init | 0 | 2 | 30.0 ± 0.0 | 0.25 ± 0.00 | 0.20 ± 0.00 |"));
    }
}
