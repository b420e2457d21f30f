//! Charts drawn with plotters, each written twice: `STEM.png` (bitmap) and `STEM.svg`.

use std::collections::BTreeMap;
use std::error::Error;
use std::path::{Path, PathBuf};

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::summary::{distinct, probe_columns};
use super::{MetricRow, ReportError, SummaryRow};
use crate::font::register_font;

/// The two files of one chart.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlotFiles {
    pub png: PathBuf,
    pub svg: PathBuf,
}

pub(crate) type DrawResult = Result<(), Box<dyn Error + Send + Sync>>;

/// The font family every chart uses (registered by [`register_font`]).
pub(crate) const FAMILY: &str = "sans-serif";

/// Tableau 10: distinct on screen and in print.
const PALETTE: [RGBColor; 10] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
];

/// Tableau 20's light companions of [`PALETTE`], for the 11th to 20th series.
const PALETTE_LIGHT: [RGBColor; 10] = [
    RGBColor(174, 199, 232),
    RGBColor(255, 187, 120),
    RGBColor(152, 223, 138),
    RGBColor(255, 152, 150),
    RGBColor(197, 176, 213),
    RGBColor(196, 156, 148),
    RGBColor(247, 182, 210),
    RGBColor(199, 199, 199),
    RGBColor(219, 219, 141),
    RGBColor(158, 218, 229),
];

/// Colour of series `i`: Tableau 10, then its light companions (an ablation study charts 13
/// arms), then around again.
pub(crate) fn colour(i: usize) -> RGBColor {
    let i = i % (PALETTE.len() + PALETTE_LIGHT.len());
    if i < PALETTE.len() {
        PALETTE[i]
    } else {
        PALETTE_LIGHT[i - PALETTE.len()]
    }
}

/// Colour of `arm`: its index in `arm_order`, or after it in order of first appearance in `extra`.
pub(super) fn arm_colour(arm_order: &[String], extra: &[String], arm: &str) -> RGBColor {
    let mut all: Vec<&str> = arm_order.iter().map(|s| s.as_str()).collect();
    for e in extra {
        if !all.contains(&e.as_str()) {
            all.push(e);
        }
    }
    colour(all.iter().position(|a| *a == arm).unwrap_or(0))
}

/// Paths `STEM.png` and `STEM.svg`, with the parent directory created.
pub(crate) fn plot_paths(stem: &Path) -> Result<PlotFiles, ReportError> {
    let name = stem
        .file_name()
        .ok_or_else(|| {
            ReportError::Input(format!("{}: chart path has no file name", stem.display()))
        })?
        .to_string_lossy()
        .into_owned();
    if let Some(parent) = stem.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(|e| ReportError::io(parent, e))?;
    }
    Ok(PlotFiles {
        png: stem.with_file_name(format!("{name}.png")),
        svg: stem.with_file_name(format!("{name}.svg")),
    })
}

/// Draws `$draw(root, args...)` once on a PNG and once on an SVG backend of size `$size`.
macro_rules! render_both {
    ($stem:expr, $size:expr, $draw:ident ( $($arg:expr),* )) => {{
        register_font();
        let files = plot_paths($stem)?;
        {
            let root = BitMapBackend::new(&files.png, $size).into_drawing_area();
            $draw(&root, $($arg),*).map_err(|e| ReportError::Plot {
                path: files.png.clone(),
                detail: e.to_string(),
            })?;
        }
        {
            let root = SVGBackend::new(&files.svg, $size).into_drawing_area();
            $draw(&root, $($arg),*).map_err(|e| ReportError::Plot {
                path: files.svg.clone(),
                detail: e.to_string(),
            })?;
        }
        Ok(files)
    }};
}

pub(super) fn finite_range(values: impl Iterator<Item = f64>) -> Option<(f64, f64)> {
    let mut lo = f64::INFINITY;
    let mut hi = f64::NEG_INFINITY;
    for v in values.filter(|v| v.is_finite()) {
        lo = lo.min(v);
        hi = hi.max(v);
    }
    (lo <= hi).then_some((lo, hi))
}

/// Pads `(lo, hi)` by `frac` of its span on both sides (a flat range gets ±5 % of its size, or ±1).
pub(super) fn padded((lo, hi): (f64, f64), frac: f64) -> (f64, f64) {
    let span = hi - lo;
    if span > 0.0 {
        (lo - frac * span, hi + frac * span)
    } else {
        let d = if lo != 0.0 { 0.05 * lo.abs() } else { 1.0 };
        (lo - d, hi + d)
    }
}

/// An f64 axis whose ticks sit at given positions and read as given labels: categories (bar
/// groups, ablation values that are not numbers) or numeric values shown as written.
struct LabelledAxis {
    lo: f64,
    hi: f64,
    keys: Vec<f64>,
    labels: Vec<String>,
}

impl Ranged for LabelledAxis {
    type FormatOption = plotters::coord::ranged1d::NoDefaultFormatting;
    type ValueType = f64;

    fn map(&self, value: &f64, limit: (i32, i32)) -> i32 {
        let t = (value - self.lo) / (self.hi - self.lo);
        limit.0 + (t * (limit.1 - limit.0) as f64).round() as i32
    }

    fn key_points<Hint: plotters::coord::ranged1d::KeyPointHint>(&self, hint: Hint) -> Vec<f64> {
        if hint.weight().allow_light_points() {
            Vec::new()
        } else {
            self.keys.clone()
        }
    }

    fn range(&self) -> std::ops::Range<f64> {
        self.lo..self.hi
    }
}

impl plotters::coord::ranged1d::ValueFormatter<f64> for LabelledAxis {
    fn format_ext(&self, value: &f64) -> String {
        self.keys
            .iter()
            .position(|k| (k - value).abs() <= 1e-9 * (1.0 + k.abs()))
            .map(|i| self.labels[i].clone())
            .unwrap_or_default()
    }
}

/// Loss curves per arm: a thick line for the mean over seeds, a thin line per seed; x = step,
/// y = total loss. When the rows carry a relation accuracy, a second panel shows it (in %).
///
/// `curves` holds one `(arm, seed, rows)` per run; `arm_order` fixes each arm's colour (so that all
/// charts of a report agree; arms missing from it are appended). Writes `STEM.png` and `STEM.svg`.
/// The mean at a step is taken over the seeds that logged that step; when every arm's seeds share
/// some steps, only those are used, so that a seed ending early does not make the mean jump.
pub fn plot_loss_curves(
    curves: &[(String, u64, Vec<MetricRow>)],
    arm_order: &[String],
    stem: &Path,
) -> Result<PlotFiles, ReportError> {
    if curves
        .iter()
        .all(|c| c.2.iter().all(|r| !r.loss.is_finite()))
    {
        return Err(ReportError::Input(format!(
            "{}: no finite loss in the {} curves given",
            stem.display(),
            curves.len()
        )));
    }
    let with_acc = curves
        .iter()
        .any(|c| c.2.iter().any(|r| r.relation_acc.is_finite()));
    let size = if with_acc { (1500, 600) } else { (1000, 600) };
    render_both!(stem, size, draw_loss_curves(curves, arm_order, with_acc))
}

/// A line chart on `panel` with the report's look: caption, axis descriptions, six x labels (few
/// enough that four-digit steps do not run into each other), decimals fitted to each axis' span,
/// faint major grid lines.
pub(super) fn line_chart<'a, DB: DrawingBackend + 'a>(
    panel: &'a DrawingArea<DB, Shift>,
    title: &str,
    (x_desc, y_desc): (&str, &str),
    xr: (f64, f64),
    yr: (f64, f64),
) -> Result<
    ChartContext<
        'a,
        DB,
        Cartesian2d<plotters::coord::types::RangedCoordf64, plotters::coord::types::RangedCoordf64>,
    >,
    Box<dyn Error + Send + Sync>,
>
where
    DB::ErrorType: 'static,
{
    let (xd, yd) = (decimals(xr.1 - xr.0), decimals(yr.1 - yr.0));
    let mut chart = ChartBuilder::on(panel)
        .caption(title, (FAMILY, 20))
        .margin(15)
        .margin_right(30)
        .x_label_area_size(50)
        .y_label_area_size(75)
        .build_cartesian_2d(xr.0..xr.1, yr.0..yr.1)?;
    chart
        .configure_mesh()
        .x_desc(x_desc)
        .y_desc(y_desc)
        .x_labels(6)
        .x_label_formatter(&|x| format!("{x:.xd$}"))
        .y_label_formatter(&|y| format!("{y:.yd$}"))
        .label_style((FAMILY, 16))
        .axis_desc_style((FAMILY, 18))
        .light_line_style(WHITE.mix(0.0))
        .bold_line_style(BLACK.mix(0.08))
        .draw()?;
    Ok(chart)
}

/// Mean over seeds per step of `f(row)`, for the runs of one arm.
fn mean_curve(runs: &[&Vec<MetricRow>], f: impl Fn(&MetricRow) -> f64) -> Vec<(f64, f64)> {
    let mut by_step: BTreeMap<u64, Vec<f64>> = BTreeMap::new();
    for rows in runs {
        for r in rows.iter() {
            let v = f(r);
            if v.is_finite() {
                by_step.entry(r.step).or_default().push(v);
            }
        }
    }
    let full = by_step.values().any(|v| v.len() == runs.len());
    by_step
        .into_iter()
        .filter(|(_, v)| !full || v.len() == runs.len())
        .map(|(s, v)| (s as f64, v.iter().sum::<f64>() / v.len() as f64))
        .collect()
}

fn draw_loss_curves<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    curves: &[(String, u64, Vec<MetricRow>)],
    arm_order: &[String],
    with_acc: bool,
) -> DrawResult
where
    DB::ErrorType: 'static,
{
    root.fill(&WHITE)?;
    let mut arms: Vec<String> = Vec::new();
    for c in curves {
        if !arms.contains(&c.0) {
            arms.push(c.0.clone());
        }
    }
    let entries: Vec<(String, RGBColor, Swatch)> = arms
        .iter()
        .map(|arm| {
            let n = curves.iter().filter(|c| &c.0 == arm).count();
            let label = format!("{arm} ({n} seed{})", if n == 1 { "" } else { "s" });
            (label, arm_colour(arm_order, &arms, arm), Swatch::Line)
        })
        .collect();
    let note = "thick: mean over seeds\nthin: each seed";
    let (plot_area, legend_area) = split_legend(root, Some(note), &entries)?;
    let panels: Vec<DrawingArea<DB, Shift>> = if with_acc {
        plot_area.split_evenly((1, 2))
    } else {
        vec![plot_area]
    };
    type Getter = fn(&MetricRow) -> f64;
    let specs: [(&str, &str, Getter); 2] = [
        ("pretraining loss", "loss", |r| r.loss),
        (
            "relation accuracy on training pairs",
            "relation accuracy (%)",
            |r| 100.0 * r.relation_acc,
        ),
    ];
    for (panel, (title, ylabel, get)) in panels.iter().zip(specs) {
        let xr = finite_range(
            curves
                .iter()
                .flat_map(|c| c.2.iter().map(|r| r.step as f64)),
        )
        .unwrap_or((0.0, 1.0));
        let xr = if xr.1 > xr.0 { xr } else { (xr.0, xr.0 + 1.0) };
        let yr =
            finite_range(curves.iter().flat_map(|c| c.2.iter().map(get))).unwrap_or((0.0, 1.0));
        let yr = padded(yr, 0.05);
        let mut chart = line_chart(panel, title, ("step", ylabel), xr, yr)?;
        for arm in &arms {
            let c = arm_colour(arm_order, &arms, arm);
            let runs: Vec<&Vec<MetricRow>> = curves
                .iter()
                .filter(|x| &x.0 == arm)
                .map(|x| &x.2)
                .collect();
            for rows in &runs {
                let pts: Vec<(f64, f64)> = rows
                    .iter()
                    .map(|r| (r.step as f64, get(r)))
                    .filter(|p| p.1.is_finite())
                    .collect();
                chart.draw_series(LineSeries::new(pts, c.mix(0.35).stroke_width(1)))?;
            }
            chart.draw_series(LineSeries::new(mean_curve(&runs, get), c.stroke_width(3)))?;
        }
    }
    draw_legend(&legend_area, Some(note), &entries)?;
    root.present()?;
    Ok(())
}

/// How a legend entry shows its colour.
#[derive(Clone, Copy)]
pub(super) enum Swatch {
    Bar,
    Line,
}

const LEGEND_FONT: u32 = 16;
const LEGEND_ROW: i32 = 26;
const NOTE_FONT: u32 = 14;

/// Splits a legend strip off the right of `root`, as wide as its longest label needs.
#[allow(clippy::type_complexity)]
pub(super) fn split_legend<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    note: Option<&str>,
    entries: &[(String, RGBColor, Swatch)],
) -> Result<(DrawingArea<DB, Shift>, DrawingArea<DB, Shift>), Box<dyn Error + Send + Sync>>
where
    DB::ErrorType: 'static,
{
    let font: TextStyle = (FAMILY, LEGEND_FONT).into();
    let small: TextStyle = (FAMILY, NOTE_FONT).into();
    let mut widest = 0;
    for (label, _, _) in entries {
        widest = widest.max(root.estimate_text_size(label, &font)?.0 + 40);
    }
    for line in note.unwrap_or("").lines() {
        widest = widest.max(root.estimate_text_size(line, &small)?.0);
    }
    let (w, _) = root.dim_in_pixel();
    let legend_w = (widest + 30).clamp(150, w / 2);
    Ok(root.split_horizontally(w - legend_w))
}

/// Draws `entries` top-down in `area` (a swatch, then the label), after an optional note whose
/// lines are separated by `\n`.
pub(super) fn draw_legend<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    note: Option<&str>,
    entries: &[(String, RGBColor, Swatch)],
) -> DrawResult
where
    DB::ErrorType: 'static,
{
    let font = (FAMILY, LEGEND_FONT)
        .into_font()
        .color(&BLACK)
        .pos(Pos::new(HPos::Left, VPos::Center));
    let mut y = 70;
    for (label, c, swatch) in entries {
        match swatch {
            Swatch::Bar => area.draw(&Rectangle::new([(8, y - 8), (26, y + 8)], c.filled()))?,
            Swatch::Line => {
                area.draw(&PathElement::new(vec![(4, y), (30, y)], c.stroke_width(3)))?
            }
        }
        area.draw(&Text::new(label.clone(), (38, y), font.clone()))?;
        y += LEGEND_ROW;
    }
    if let Some(note) = note {
        let small = (FAMILY, NOTE_FONT)
            .into_font()
            .color(&BLACK.mix(0.7))
            .pos(Pos::new(HPos::Left, VPos::Center));
        y += LEGEND_ROW / 2;
        for line in note.lines() {
            area.draw(&Text::new(line.to_string(), (4, y), small.clone()))?;
            y += 20;
        }
    }
    Ok(())
}

/// What the error bars of a chart of `rows` show.
fn error_bar_note(rows: &[SummaryRow]) -> &'static str {
    if rows.iter().any(|r| r.std.is_finite()) {
        "error bars: ± 1 std over seeds"
    } else {
        "one seed per point: no error bars"
    }
}

/// Decimals a tick label needs on an axis spanning `span` (about five ticks): 1000 → 0, 0.9 → 1.
pub(super) fn decimals(span: f64) -> usize {
    if !(span.is_finite() && span > 0.0) {
        return 1;
    }
    // plotters draws about ten labels: enough decimals for a step of span / 10
    (-(span / 10.0).log10().floor()).clamp(0.0, 6.0) as usize
}

/// Error bars: a vertical line from `lo` to `hi` at `x`, with caps `2 · half` pixels wide.
fn draw_error_bars<DB: DrawingBackend, X: Ranged<ValueType = f64>>(
    chart: &mut ChartContext<'_, DB, Cartesian2d<X, plotters::coord::types::RangedCoordf64>>,
    bars: &[(f64, f64, f64)],
    style: ShapeStyle,
    half: i32,
) -> DrawResult
where
    DB::ErrorType: 'static,
{
    chart.draw_series(
        bars.iter()
            .map(|&(x, lo, hi)| PathElement::new(vec![(x, lo), (x, hi)], style)),
    )?;
    chart.draw_series(bars.iter().flat_map(|&(x, lo, hi)| {
        [lo, hi].map(|y| {
            EmptyElement::at((x, y)) + PathElement::new(vec![(-half, 0), (half, 0)], style)
        })
    }))?;
    Ok(())
}

/// Accuracy per arm with error bars (mean ± sample std over seeds, in %), grouped by probe (for
/// example `knn`, `linear n=0`, `linear n=9`); the mean is written above each bar.
///
/// `summary` should hold one dataset and backbone (split them beforehand); `arm_order` fixes the
/// colours as in [`plot_loss_curves`]. Writes `STEM.png` and `STEM.svg`.
pub fn plot_accuracy(
    summary: &[SummaryRow],
    title: &str,
    arm_order: &[String],
    stem: &Path,
) -> Result<PlotFiles, ReportError> {
    if summary.is_empty() {
        return Err(ReportError::Input(format!(
            "{}: no results to plot",
            stem.display()
        )));
    }
    let arms = distinct(summary, |r| r.arm.clone());
    let cols = probe_columns(summary);
    let bars = arms.len() * cols.len();
    let width = (420 + 48 * bars as u32).clamp(1000, 2600);
    render_both!(
        stem,
        (width, 600),
        draw_accuracy(summary, title, arm_order, &arms)
    )
}

fn draw_accuracy<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    summary: &[SummaryRow],
    title: &str,
    arm_order: &[String],
    arms: &[String],
) -> DrawResult
where
    DB::ErrorType: 'static,
{
    root.fill(&WHITE)?;
    let entries: Vec<(String, RGBColor, Swatch)> = arms
        .iter()
        .map(|a| (a.clone(), arm_colour(arm_order, arms, a), Swatch::Bar))
        .collect();
    let note = error_bar_note(summary);
    let (plot_area, legend_area) = split_legend(root, Some(note), &entries)?;
    let cols = probe_columns(summary);
    let labels: Vec<String> = cols.iter().map(|c| c.1.clone()).collect();
    let find = |arm: &str, c: &(String, usize, String)| {
        summary.iter().find(|r| {
            r.arm == arm && r.protocol == c.0 && r.probe_patches == c.1 && r.metric == c.2
        })
    };
    let top = summary
        .iter()
        .map(|r| 100.0 * (r.mean + if r.std.is_finite() { r.std } else { 0.0 }))
        .filter(|v| v.is_finite())
        .fold(0.0f64, f64::max);
    // Room above the tallest error bar for its value label; at most a little over 100 %.
    let ymax = (((top + 9.0) / 10.0).ceil() * 10.0).clamp(10.0, 105.0);
    let g = cols.len() as f64;
    let keys: Vec<f64> = (0..cols.len()).map(|i| i as f64).collect();
    let mut chart = ChartBuilder::on(&plot_area)
        .caption(title, (FAMILY, 22))
        .margin(15)
        .x_label_area_size(50)
        .y_label_area_size(75)
        .build_cartesian_2d(
            LabelledAxis {
                lo: -0.5,
                hi: g - 0.5,
                keys,
                labels,
            },
            0.0..ymax,
        )?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_desc("probe")
        .y_desc("top-1 accuracy (%), mean ± std over seeds")
        .y_label_formatter(&|y| format!("{y:.0}"))
        .label_style((FAMILY, 16))
        .axis_desc_style((FAMILY, 18))
        .light_line_style(WHITE.mix(0.0))
        .bold_line_style(BLACK.mix(0.08))
        .draw()?;
    // Per probe, the arms that have a number there: their bars are centred on the probe's tick.
    let present: Vec<Vec<&String>> = cols
        .iter()
        .map(|col| {
            arms.iter()
                .filter(|a| find(a, &col.0).is_some_and(|r| r.mean.is_finite()))
                .collect()
        })
        .collect();
    let widest = present.iter().map(|p| p.len()).max().unwrap_or(1).max(1);
    let w = 0.8 / widest as f64;
    let show_values = arms.len() * cols.len() <= 40;
    for arm in arms {
        let c = arm_colour(arm_order, arms, arm);
        let mut rects = Vec::new();
        let mut bars = Vec::new();
        let mut texts = Vec::new();
        for (ci, col) in cols.iter().enumerate() {
            let Some(r) = find(arm, &col.0) else { continue };
            let Some(j) = present[ci].iter().position(|a| *a == arm) else {
                continue;
            };
            let x0 = ci as f64 - present[ci].len() as f64 * w / 2.0 + j as f64 * w;
            let xc = x0 + w / 2.0;
            let m = 100.0 * r.mean;
            rects.push(Rectangle::new(
                [(x0 + 0.08 * w, 0.0), (x0 + 0.92 * w, m)],
                c.filled(),
            ));
            let mut hi = m;
            if r.std.is_finite() {
                let s = 100.0 * r.std;
                hi = m + s;
                bars.push((xc, m - s, m + s));
            }
            if show_values {
                texts.push(Text::new(
                    format!("{m:.1}"),
                    (xc, hi + 0.01 * ymax),
                    (FAMILY, 14)
                        .into_font()
                        .color(&BLACK)
                        .pos(Pos::new(HPos::Center, VPos::Bottom)),
                ));
            }
        }
        chart.draw_series(rects)?;
        draw_error_bars(&mut chart, &bars, BLACK.stroke_width(2), 6)?;
        chart.draw_series(texts)?;
    }
    draw_legend(&legend_area, Some(note), &entries)?;
    root.present()?;
    Ok(())
}

/// Accuracy against a varied hyper-parameter, for the ablation arms whose `varied_key` is `key`:
/// x = the varied value (a numeric axis when every value parses as a number, else categories in
/// order of first appearance), y = accuracy in % with error bars (mean ± std over seeds), one line
/// per (arm family, probe). Family and varied value come from the arm's name (see
/// [`super::split_arm`]: `sr patches=3` is family `sr` at `patches = 3`).
///
/// Writes `STEM.png` and `STEM.svg`; an error when no row varies `key`.
pub fn plot_ablation(
    summary: &[SummaryRow],
    key: &str,
    title: &str,
    stem: &Path,
) -> Result<PlotFiles, ReportError> {
    let rows: Vec<SummaryRow> = summary
        .iter()
        .filter(|r| {
            r.varied_key.as_deref() == Some(key) && r.varied_value.is_some() && r.mean.is_finite()
        })
        .cloned()
        .collect();
    if rows.is_empty() {
        return Err(ReportError::Input(format!(
            "{}: no result varies `{key}`",
            stem.display()
        )));
    }
    render_both!(stem, (1200, 600), draw_ablation(&rows, key, title))
}

fn draw_ablation<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    rows: &[SummaryRow],
    key: &str,
    title: &str,
) -> DrawResult
where
    DB::ErrorType: 'static,
{
    root.fill(&WHITE)?;
    let values = distinct(rows, |r| r.varied_value.clone().unwrap_or_default());
    let numeric: Option<Vec<f64>> = values
        .iter()
        .map(|v| v.trim().parse::<f64>().ok())
        .collect();
    let numeric = numeric.filter(|v| v.iter().all(|x| x.is_finite()));
    let pos_of = |v: &str| -> f64 {
        let i = values.iter().position(|x| x == v).unwrap_or(0);
        match &numeric {
            Some(nums) => nums[i],
            None => i as f64,
        }
    };
    let family = |r: &SummaryRow| r.family.clone();
    let cols = probe_columns(rows);
    let families = distinct(rows, family);
    // One series per (family, probe), each with its points sorted by x.
    // (x, mean %, std %) per point.
    type Points = Vec<(f64, f64, f64)>;
    let mut series: Vec<(String, Points)> = Vec::new();
    for fam in &families {
        for (col, label) in &cols {
            let mut pts: Vec<(f64, f64, f64)> = rows
                .iter()
                .filter(|r| {
                    family(r) == *fam
                        && r.protocol == col.0
                        && r.probe_patches == col.1
                        && r.metric == col.2
                })
                .map(|r| {
                    let v = r.varied_value.as_deref().unwrap_or("");
                    (pos_of(v), 100.0 * r.mean, 100.0 * r.std)
                })
                .collect();
            if pts.is_empty() {
                continue;
            }
            pts.sort_by(|a, b| a.0.total_cmp(&b.0));
            let name = if families.len() > 1 {
                format!("{fam} · {label}")
            } else {
                label.clone()
            };
            series.push((name, pts));
        }
    }
    let entries: Vec<(String, RGBColor, Swatch)> = series
        .iter()
        .enumerate()
        .map(|(i, (name, _))| (name.clone(), colour(i), Swatch::Line))
        .collect();
    let note = error_bar_note(rows);
    let (plot_area, legend_area) = split_legend(root, Some(note), &entries)?;

    let keys: Vec<f64> = values.iter().map(|v| pos_of(v)).collect();
    let xr = match &numeric {
        Some(n) => padded(finite_range(n.iter().copied()).unwrap_or((0.0, 1.0)), 0.08),
        None => (-0.5, values.len() as f64 - 0.5),
    };
    let yr = finite_range(rows.iter().flat_map(|r| {
        let s = if r.std.is_finite() { r.std } else { 0.0 };
        [100.0 * (r.mean - s), 100.0 * (r.mean + s)]
    }))
    .unwrap_or((0.0, 100.0));
    let yr = padded(yr, 0.12);
    let yd = decimals(yr.1 - yr.0);
    let mut chart = ChartBuilder::on(&plot_area)
        .caption(title, (FAMILY, 22))
        .margin(15)
        .margin_right(30)
        .x_label_area_size(50)
        .y_label_area_size(75)
        .build_cartesian_2d(
            LabelledAxis {
                lo: xr.0,
                hi: xr.1,
                keys,
                labels: values.clone(),
            },
            yr.0..yr.1,
        )?;
    chart
        .configure_mesh()
        .x_desc(key)
        .y_desc("top-1 accuracy (%), mean ± std over seeds")
        .y_label_formatter(&|y| format!("{y:.yd$}"))
        .label_style((FAMILY, 16))
        .axis_desc_style((FAMILY, 18))
        .light_line_style(WHITE.mix(0.0))
        .bold_line_style(BLACK.mix(0.08))
        .draw()?;
    // Series side by side around each x, so that their error bars do not hide one another.
    let dodge = 0.012 * (xr.1 - xr.0);
    for (i, (_, pts)) in series.iter().enumerate() {
        let c = colour(i);
        let dx = (i as f64 - (series.len() as f64 - 1.0) / 2.0) * dodge;
        let pts: Vec<(f64, f64, f64)> = pts.iter().map(|p| (p.0 + dx, p.1, p.2)).collect();
        let bars: Vec<(f64, f64, f64)> = pts
            .iter()
            .filter(|p| p.2.is_finite())
            .map(|p| (p.0, p.1 - p.2, p.1 + p.2))
            .collect();
        draw_error_bars(&mut chart, &bars, c.stroke_width(2), 7)?;
        chart.draw_series(LineSeries::new(
            pts.iter().map(|p| (p.0, p.1)),
            c.stroke_width(2),
        ))?;
        chart.draw_series(pts.iter().map(|p| Circle::new((p.0, p.1), 5, c.filled())))?;
    }
    draw_legend(&legend_area, Some(note), &entries)?;
    root.present()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mean_curve_uses_steps_all_seeds_share() {
        let row = |step, loss| MetricRow {
            kind: crate::report::RowKind::Step,
            step,
            epoch: 0.0,
            loss,
            loss_relation: loss,
            loss_distance: 0.0,
            relation_acc: 0.5,
            img_per_s: 1.0,
            data_wait: 0.0,
            skipped: 0,
            diagnostics: Default::default(),
        };
        let a = vec![row(0, 1.0), row(10, 0.5), row(20, 0.25)];
        let b = vec![row(0, 3.0), row(10, 1.5)];
        let m = mean_curve(&[&a, &b], |r| r.loss);
        assert_eq!(m, vec![(0.0, 2.0), (10.0, 1.0)]);
        let m = mean_curve(&[&a], |r| r.loss);
        assert_eq!(m.len(), 3);
    }
}
