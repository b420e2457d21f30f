//! The report module end to end: a report written from synthetic rows to a temporary directory
//! holds the expected table lines, its charts decode to the expected sizes and are not blank, and
//! the results CSV alone regenerates the same table.

use std::path::{Path, PathBuf};

use spatial_reasoning::eval::{AxisFit, Diagnostics};
use spatial_reasoning::report::{
    read_metrics_jsonl, read_results_csv, regenerate_from_csv, write_report, write_results_csv,
    MetricRow, PatchPanel, Protocol, ReportError, ReportInput, ResultRow, RowKind,
};
use spatial_reasoning::train::metrics::DiagColumns;

fn temp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("sr-report-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn row(arm: &str, seed: u64, protocol: Protocol, n: usize, value: f64) -> ResultRow {
    ResultRow {
        run: format!("{}-seed{seed}", arm.replace(' ', "-")),
        arm: arm.into(),
        seed,
        dataset: "cifar10".into(),
        backbone: "conv4".into(),
        protocol: protocol.name().into(),
        metric: protocol.metric().into(),
        probe_patches: n,
        value,
        epochs: if protocol == Protocol::Knn { 0 } else { 100 },
        varied_key: None,
        varied_value: None,
        timestamp: Some("2026-11-27T06:18:15Z".into()),
    }
}

/// Per arm and probe, three seeds' values whose mean and sample std are round numbers:
/// `(m − d, m, m + d)` has mean m and std d exactly (Σ(x − m)² = 2d², / (3 − 1) = d²).
fn synthetic_rows() -> Vec<ResultRow> {
    let arms: [(&str, [(f64, f64); 3]); 6] = [
        ("random", [(0.34, 0.01), (0.41, 0.01), (0.31, 0.01)]),
        ("rr", [(0.61, 0.03), (0.62, 0.02), (0.47, 0.02)]),
        ("sr", [(0.64, 0.02), (0.69, 0.03), (0.50, 0.02)]),
        ("supervised", [(0.80, 0.01), (0.81, 0.005), (0.78, 0.01)]),
        ("sr patches=2", [(0.62, 0.02), (0.66, 0.02), (0.48, 0.01)]),
        ("sr patches=4", [(0.65, 0.01), (0.70, 0.02), (0.51, 0.03)]),
    ];
    let probes = [
        (Protocol::Linear, 0),
        (Protocol::Linear, 9),
        (Protocol::Knn, 0),
    ];
    let mut rows = Vec::new();
    for (arm, stats) in arms {
        for (seed, k) in [(1u64, -1.0), (2, 0.0), (3, 1.0)] {
            for ((protocol, n), (m, d)) in probes.iter().zip(stats) {
                rows.push(row(arm, seed, *protocol, *n, m + k * d));
            }
        }
    }
    rows
}

fn curve(arm_offset: f64, seed: u64) -> Vec<MetricRow> {
    (0..=40)
        .map(|i| {
            let step = i * 25;
            let loss = arm_offset + 0.7 * (-(step as f64) / 300.0).exp() + 0.01 * seed as f64;
            MetricRow {
                kind: RowKind::Step,
                step,
                epoch: step as f64 / 100.0,
                loss,
                loss_relation: loss * 0.8,
                loss_distance: loss * 0.2,
                relation_acc: 1.0 - loss / 2.0,
                img_per_s: 1000.0,
                data_wait: 0.0,
                skipped: 0,
                diagnostics: Default::default(),
            }
        })
        .collect()
}

/// Epoch rows 1–3 with diagnostics: kNN 0.40 + 0.01·(epoch + seed), position R² 0.1·epoch +
/// 0.02·seed (row) and 0.1 less (col); SR rows also carry the head's offset r and R².
fn epoch_rows(seed: u64, sr: bool) -> Vec<MetricRow> {
    (1..=3u64)
        .map(|e| {
            let mut r = curve(0.3, seed)[e as usize].clone();
            r.kind = RowKind::Epoch;
            r.step = 100 * e;
            r.epoch = e as f64;
            let pos = 0.1 * e as f64 + 0.02 * seed as f64;
            r.diagnostics = DiagColumns {
                online_knn_acc: Some(0.40 + 0.01 * (e + seed) as f64),
                position_r2_row: Some(pos),
                position_r2_col: Some(pos - 0.1),
                offset_r_row: sr.then_some(0.2 * e as f64),
                offset_r_col: sr.then_some(0.2 * e as f64 - 0.1),
                offset_r2_row: sr.then_some(0.1 * e as f64),
                offset_r2_col: sr.then_some(0.1 * e as f64 - 0.1),
                diagnostics_s: Some(1.0),
            };
            r
        })
        .collect()
}

fn reference() -> Diagnostics {
    Diagnostics {
        offset: None,
        position: AxisFit {
            r: [0.3, 0.2],
            r2: [0.1, 0.05],
        },
        knn_acc: Some(0.3),
        seconds: 1.0,
        predictions: vec![],
    }
}

/// 200 test pairs whose predictions follow the truth with some spread.
fn offsets() -> Vec<([f32; 2], [f32; 2])> {
    (0..200)
        .map(|i| {
            let t = [(i % 21) as f32 / 10.0 - 1.0, (i % 17) as f32 / 8.0 - 1.0];
            (t, [0.8 * t[0] + 0.05, 0.5 * t[1] - 0.1])
        })
        .collect()
}

/// Four 32×32 images with smooth colour gradients, and three 12-px patches in each.
fn panels() -> Vec<PatchPanel> {
    (0..4)
        .map(|k| {
            let mut pixels = Vec::with_capacity(32 * 32 * 3);
            for y in 0..32usize {
                for x in 0..32usize {
                    pixels.extend([(8 * x) as u8, (8 * y) as u8, (60 * k) as u8]);
                }
            }
            PatchPanel {
                pixels,
                height: 32,
                width: 32,
                boxes: vec![(0, 0, 12), (20, 20, 12), (k, 16, 12)],
            }
        })
        .collect()
}

/// Decodes a PNG, checks its size and that it is not a single colour (at least `min_colours`
/// distinct pixel values).
fn check_png(path: &Path, size: (u32, u32), min_colours: usize) {
    let img = image::open(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .to_rgb8();
    assert_eq!(img.dimensions(), size, "{}", path.display());
    let mut colours: Vec<[u8; 3]> = img.pixels().map(|p| p.0).collect();
    colours.sort_unstable();
    colours.dedup();
    assert!(
        colours.len() >= min_colours,
        "{}: only {} colours",
        path.display(),
        colours.len()
    );
}

fn check_svg(path: &Path, must_contain: &[&str]) {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert!(text.trim_start().starts_with("<svg"), "{}", path.display());
    assert!(text.trim_end().ends_with("</svg>"), "{}", path.display());
    for s in must_contain {
        assert!(text.contains(s), "{}: no {s:?}", path.display());
    }
}

#[test]
fn report_has_the_table_plots_and_settings() {
    let dir = temp_dir("full");
    let input = ReportInput {
        title: "SR vs RR (synthetic)".into(),
        settings: "[train]\nepochs = 10\n".into(),
        wall_time_s: 3725.4,
        rows: synthetic_rows(),
        curves: vec![
            ("rr".into(), 1, curve(0.30, 1)),
            ("rr".into(), 2, curve(0.30, 2)),
            ("sr".into(), 1, curve(0.50, 1)),
            ("sr".into(), 2, curve(0.50, 2)),
            ("sr".into(), 3, curve(0.50, 3)),
        ],
        epochs: vec![
            ("rr".into(), 1, epoch_rows(1, false)),
            ("rr".into(), 2, epoch_rows(2, false)),
            ("sr".into(), 1, epoch_rows(1, true)),
            ("sr".into(), 2, epoch_rows(2, true)),
        ],
        references: vec![
            ("random".into(), 1, reference()),
            ("random".into(), 2, reference()),
        ],
        offsets: vec![("sr".into(), offsets())],
        patch_picture: Some(("4 patches of side 12".into(), panels())),
        notes: "Synthetic numbers.".into(),
    };
    let files = write_report(&dir, &input).unwrap();
    let md = std::fs::read_to_string(&files.markdown).unwrap();
    for line in [
        "# SR vs RR (synthetic)",
        "| arm | seeds | linear n=0 | linear n=9 | knn |",
        "| random | 3 | 34.0 ± 1.0 | 41.0 ± 1.0 | 31.0 ± 1.0 |",
        "| rr | 3 | 61.0 ± 3.0 | 62.0 ± 2.0 | 47.0 ± 2.0 |",
        "| sr | 3 | 64.0 ± 2.0 | 69.0 ± 3.0 | 50.0 ± 2.0 |",
        "| supervised | 3 | 80.0 ± 1.0 | 81.0 ± 0.5 | 78.0 ± 1.0 |",
        "| sr patches=4 | 3 | 65.0 ± 1.0 | 70.0 ± 2.0 | 51.0 ± 3.0 |",
        "Wall time: 1 h 02 min 05 s (3725 s).",
        "![cifar10 · conv4: top-1 accuracy per probe](plots/accuracy.png)",
        "[SVG](plots/accuracy.svg)",
        "](plots/ablation_patches.png)",
        "](plots/loss.png)",
        "](plots/patches.png)",
        "## Diagnostics",
        // random-init: one measurement per seed, epoch 0; no head.
        "| random | 0 | 2 | 30.0 ± 0.0 | 0.10 ± 0.00 | 0.05 ± 0.00 | – | – | – | – |",
        // last epoch (3) of two seeds: kNN 40 + 3 + seed %, R² rows 0.1·3 + 0.02·seed.
        "| rr | 3 | 2 | 44.5 ± 0.7 | 0.33 ± 0.01 | 0.23 ± 0.01 | – | – | – | – |",
        "| sr | 3 | 2 | 44.5 ± 0.7 | 0.33 ± 0.01 | 0.23 ± 0.01 | 0.60 ± 0.00 | 0.50 ± 0.00 | 0.30 ± 0.00 | 0.20 ± 0.00 |",
        "](plots/diagnostics.png)",
        "## Predicted vs true offsets",
        "](plots/offsets.png)",
        "Synthetic numbers.",
        "```toml\n[train]\nepochs = 10\n```",
    ] {
        assert!(md.contains(line), "report.md lacks {line:?}:\n{md}");
    }
    // 6 arms × 3 probes = 18 bars: width 420 + 48·18.
    check_png(&dir.join("plots/accuracy.png"), (1284, 600), 8);
    check_png(&dir.join("plots/ablation_patches.png"), (1200, 600), 8);
    check_png(&dir.join("plots/loss.png"), (1500, 600), 8);
    check_png(&dir.join("plots/diagnostics.png"), (1800, 560), 8);
    check_png(&dir.join("plots/offsets.png"), (560, 460), 4);
    check_svg(
        &dir.join("plots/diagnostics.svg"),
        &["online kNN accuracy", "position in the features", "epoch"],
    );
    // 4 panels of 32 px at scale 5 in one row: 12 + 4·(160 + 12) wide, 48 + 160 + 12 high.
    check_png(&dir.join("plots/patches.png"), (700, 220), 100);
    check_svg(
        &dir.join("plots/accuracy.svg"),
        &["linear n=9", "supervised"],
    );
    check_svg(&dir.join("plots/ablation_patches.svg"), &["patches"]);
    check_svg(&dir.join("plots/loss.svg"), &["step", "sr (3 seeds)"]);
    check_svg(
        &dir.join("plots/patches.svg"),
        &["data:image/png;base64,", "<rect"],
    );
    assert_eq!(files.plots.len(), 6);

    // The committed CSV alone gives the same results table (the diagnostics come from the run
    // directories, not the CSV). Into a directory that does not exist yet.
    let again = temp_dir("again").join("new");
    let regen = regenerate_from_csv(&files.results_csv, &again).unwrap();
    let md2 = std::fs::read_to_string(&regen.markdown).unwrap();
    let table = |m: &str| -> Vec<String> {
        m.split("## Diagnostics")
            .next()
            .unwrap()
            .lines()
            .filter(|l| l.starts_with('|'))
            .map(String::from)
            .collect()
    };
    assert_eq!(table(&md), table(&md2));
    assert_eq!(table(&md).len(), 2 + 6);
    check_png(&again.join("plots/accuracy.png"), (1284, 600), 8);
    assert!(again.join("plots/ablation_patches.svg").exists());
    // SR_KEEP_REPORT=1 keeps the files to look at (printed with --nocapture).
    if std::env::var_os("SR_KEEP_REPORT").is_some() {
        println!("report kept in {} and {}", dir.display(), again.display());
    } else {
        let _ = std::fs::remove_dir_all(&dir);
        let _ = std::fs::remove_dir_all(again.parent().unwrap());
    }
}

#[test]
fn results_csv_round_trips_and_names_bad_fields() {
    let dir = temp_dir("csv");
    let mut rows = synthetic_rows();
    rows[0].arm = "odd, \"quoted\" arm".into();
    rows[1].value = 0.1 + 0.2; // not representable in short decimal: must still round-trip
    let path = dir.join("results.csv");
    write_results_csv(&path, &rows).unwrap();
    assert_eq!(read_results_csv(&path).unwrap(), rows);

    // The evaluation module's own appender writes the same format.
    let appended = dir.join("appended.csv");
    for r in &rows {
        spatial_reasoning::eval::append_csv(&appended, r).unwrap();
    }
    assert_eq!(read_results_csv(&appended).unwrap(), rows);

    std::fs::write(&path, "run,arm,seed\nx,y,1\n").unwrap();
    let e = read_results_csv(&path).unwrap_err().to_string();
    assert!(
        e.contains("results.csv:1") && e.contains("`dataset`"),
        "{e}"
    );

    let header = "run,arm,seed,dataset,backbone,protocol,metric,probe_patches,value,epochs";
    std::fs::write(
        &path,
        format!("{header}\nr,a,1,c,b,linear,top1,0,0.5,10\nr,a,2,c,b,linear,top1,0,zero,10\n"),
    )
    .unwrap();
    let e = read_results_csv(&path).unwrap_err();
    assert!(matches!(e, ReportError::Parse { line: 3, .. }), "{e}");
    assert!(e.to_string().contains("`value` = \"zero\""), "{e}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn metrics_jsonl_ignores_extra_fields_and_reads_null_as_nan() {
    let dir = temp_dir("jsonl");
    let path = dir.join("metrics.jsonl");
    std::fs::write(
        &path,
        concat!(
            r#"{"kind":"step","step":1,"epoch":0.01,"loss":1.5,"loss_relation":1.0,"loss_distance":0.5,"relation_acc":0.5,"img_per_s":900.0,"data_wait":0.1,"skipped":0,"lr":0.001}"#,
            "\n\n",
            r#"{"kind":"epoch","step":100,"epoch":1.0,"loss":1.2,"loss_relation":0.9,"loss_distance":0.3,"relation_acc":0.6,"img_per_s":950.0}"#,
            "\n",
            r#"{"kind":"step","step":101,"epoch":1.01,"loss":null,"loss_relation":1.0,"loss_distance":0.5,"relation_acc":0.5}"#,
            "\n",
        ),
    )
    .unwrap();
    let steps = read_metrics_jsonl(&path, Some("step")).unwrap();
    assert_eq!(steps.len(), 2);
    assert_eq!(steps[0].step, 1);
    assert_eq!(steps[0].loss, 1.5);
    assert!(steps[1].loss.is_nan() && steps[1].img_per_s.is_nan());
    assert_eq!(read_metrics_jsonl(&path, None).unwrap().len(), 3);
    assert_eq!(
        read_metrics_jsonl(&path, Some("epoch")).unwrap()[0].step,
        100
    );

    std::fs::write(&path, "{\"step\":1}\n{\"loss\":2.0}\n").unwrap();
    let e = read_metrics_jsonl(&path, None).unwrap_err().to_string();
    assert!(e.contains("metrics.jsonl:2") && e.contains("step"), "{e}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bad_patch_boxes_are_errors_not_panics() {
    let dir = temp_dir("badpatch");
    let mut p = panels();
    p[1].boxes.push((25, 25, 12));
    let e = spatial_reasoning::report::plot_patches(&p, "x", &dir.join("p"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("panel 1") && e.contains("row 25"), "{e}");
    p[1].boxes.pop();
    p[2].pixels.pop();
    assert!(spatial_reasoning::report::plot_patches(&p, "x", &dir.join("p")).is_err());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn single_seeds_categorical_ablations_and_two_datasets() {
    let dir = temp_dir("edge");
    let mut rows = Vec::new();
    for (dataset, base) in [("cifar10", 0.6), ("stl10", 0.5)] {
        for (arm, d) in [
            ("rr", 0.0),
            ("sr target=reference", 0.03),
            ("sr target=positive-patches-only", 0.01),
        ] {
            let mut r = row(arm, 1, Protocol::Linear, 0, base + d);
            r.dataset = dataset.into();
            rows.push(r);
        }
    }
    let input = ReportInput {
        title: "edge cases".into(),
        rows,
        ..Default::default()
    };
    let files = write_report(&dir, &input).unwrap();
    let md = std::fs::read_to_string(&files.markdown).unwrap();
    for line in [
        "### cifar10 · conv4",
        "### stl10 · conv4",
        // one seed: the mean alone, no ± std
        "| arm | seeds | linear |",
        "| sr target=reference | 1 | 63.0 |",
        "| sr target=positive-patches-only | 1 | 51.0 |",
        "](plots/accuracy_stl10_conv4.png)",
        "](plots/ablation_target_cifar10_conv4.png)",
        "Wall time: 0.0 s.",
    ] {
        assert!(md.contains(line), "report.md lacks {line:?}:\n{md}");
    }
    // No curves and no patch picture: no such sections.
    assert!(!md.contains("## Pretraining curves") && !md.contains("## Sampled patches"));
    assert!(!md.contains("## Notes"));
    // 3 arms × 1 probe: the minimum width.
    check_png(
        &dir.join("plots/accuracy_cifar10_conv4.png"),
        (1000, 600),
        8,
    );
    check_png(
        &dir.join("plots/ablation_target_stl10_conv4.png"),
        (1200, 600),
        8,
    );
    check_svg(
        &dir.join("plots/ablation_target_stl10_conv4.svg"),
        &["positive-patches-only", "reference"],
    );
    assert_eq!(files.plots.len(), 4);
    if std::env::var_os("SR_KEEP_REPORT").is_some() {
        println!("report kept in {}", dir.display());
    } else {
        let _ = std::fs::remove_dir_all(&dir);
    }
}

#[test]
fn an_existing_results_csv_is_never_overwritten() {
    let rows = synthetic_rows();
    let input = ReportInput {
        title: "t".into(),
        rows: rows.clone(),
        ..Default::default()
    };
    // The evaluation appended exactly the report's rows: the file is used as it is.
    let dir = temp_dir("keep-same");
    let csv = dir.join("results.csv");
    for r in &rows {
        spatial_reasoning::eval::append_csv(&csv, r).unwrap();
    }
    let before = std::fs::read(&csv).unwrap();
    let files = write_report(&dir, &input).unwrap();
    assert_eq!(files.results_csv, csv);
    assert_eq!(std::fs::read(&csv).unwrap(), before);
    let md = std::fs::read_to_string(&files.markdown).unwrap();
    assert!(md.contains("Per-run numbers: `results.csv`."), "{md}");
    assert!(!dir.join("report-results.csv").exists());

    // The log holds more (an older study's row): it stays, the report's rows go next to it.
    let dir = temp_dir("keep-other");
    let csv = dir.join("results.csv");
    let mut older = rows[0].clone();
    older.arm = "older".into();
    spatial_reasoning::eval::append_csv(&csv, &older).unwrap();
    let before = std::fs::read(&csv).unwrap();
    let files = write_report(&dir, &input).unwrap();
    assert_eq!(std::fs::read(&csv).unwrap(), before);
    assert_eq!(files.results_csv, dir.join("report-results.csv"));
    assert_eq!(read_results_csv(&files.results_csv).unwrap(), rows);
    let md = std::fs::read_to_string(&files.markdown).unwrap();
    assert!(
        md.contains("Per-run numbers: `report-results.csv`."),
        "{md}"
    );
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_dir_all(
        dir.with_file_name(
            dir.file_name()
                .unwrap()
                .to_string_lossy()
                .replace("keep-other", "keep-same"),
        ),
    );
}
