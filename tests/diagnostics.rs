//! The per-epoch diagnostics (issue 19) in real pretraining runs on the synthetic dataset: every
//! epoch row of an SR run carries offset quality, position R² and online kNN; an RR run carries
//! all but the head's offsets; measuring changes nothing about training (bit-identical weights
//! and losses with the diagnostics off); the pairs do not depend on the training seed; a
//! random-init arm of `run_job` writes its reference `diagnostics.json`, and the job's files are
//! read back for the report.

use std::path::{Path, PathBuf};

use spatial_reasoning::config::Config;
use spatial_reasoning::experiment;
use spatial_reasoning::train::metrics::{self, RowKind};
use spatial_reasoning::train::{self, PretrainOptions};

fn tmp(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("sr-diag-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn cfg(extra: &[&str]) -> spatial_reasoning::config::ValidConfig {
    let mut sets = vec![
        "data.dataset=synthetic",
        "data.train_size=128",
        "data.test_size=64",
        "backbone.name=conv4",
        "train.batch_size=32",
        "train.epochs=2",
        "train.log_every=2",
        "diagnostics.pairs=48",
        "diagnostics.knn_train=100",
        "diagnostics.knn_test=40",
        "eval.knn_k=20",
    ];
    sets.extend_from_slice(extra);
    Config::default()
        .apply_overrides(&sets)
        .unwrap()
        .check()
        .unwrap()
}

fn pretrain(cfg: &spatial_reasoning::config::ValidConfig, dir: &Path) {
    let data = train::prepare_data(cfg).unwrap();
    train::pretrain(cfg, &data, dir, PretrainOptions::default()).unwrap();
}

fn epoch_rows(dir: &Path) -> Vec<metrics::MetricRow> {
    metrics::read_rows(&dir.join("metrics.jsonl"))
        .unwrap()
        .into_iter()
        .filter(|r| r.kind == RowKind::Epoch)
        .collect()
}

fn offsets(dir: &Path) -> Vec<([f32; 2], [f32; 2])> {
    let text = std::fs::read_to_string(dir.join("diagnostics/offsets.json")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    serde_json::from_value(v["pairs"].clone()).unwrap()
}

fn weights(dir: &Path) -> Vec<u8> {
    let (found, _) = train::checkpoint::find_latest(dir).unwrap();
    std::fs::read(found.model_path()).unwrap()
}

#[test]
fn sr_epoch_rows_carry_every_diagnostic_and_change_nothing() {
    let on = tmp("sr-on");
    pretrain(&cfg(&[]), &on);
    let rows = epoch_rows(&on);
    assert_eq!(rows.len(), 2);
    for r in &rows {
        let d = &r.diagnostics;
        for (name, v) in [
            ("offset_r_row", d.offset_r_row),
            ("offset_r_col", d.offset_r_col),
            ("offset_r2_row", d.offset_r2_row),
            ("offset_r2_col", d.offset_r2_col),
            ("position_r2_row", d.position_r2_row),
            ("position_r2_col", d.position_r2_col),
            ("online_knn_acc", d.online_knn_acc),
            ("diagnostics_s", d.diagnostics_s),
        ] {
            let v = v.unwrap_or_else(|| panic!("epoch {}: no {name}", r.epoch));
            assert!(v.is_finite(), "{name} = {v}");
        }
        let k = d.online_knn_acc.unwrap();
        // 40 test images: the accuracy is a multiple of 1/40.
        assert!((k * 40.0 - (k * 40.0).round()).abs() < 1e-4, "kNN {k}");
        assert!(d.offset_r_row.unwrap().abs() <= 1.0 && d.position_r2_row.unwrap() <= 1.0);
    }
    // Step rows carry none of it.
    let steps = metrics::read_rows(&on.join("metrics.jsonl")).unwrap();
    assert!(steps
        .iter()
        .filter(|r| r.kind == RowKind::Step)
        .all(|r| r.diagnostics == Default::default()));
    // The head's predictions on the 48 test pairs; targets are offsets in [-1, 1].
    let pairs = offsets(&on);
    assert_eq!(pairs.len(), 48);
    assert!(pairs
        .iter()
        .all(|(t, p)| t.iter().all(|v| v.abs() <= 1.0) && p.iter().all(|v| v.is_finite())));

    // Off: no columns, no offsets file, and training is bit-identical.
    let off = tmp("sr-off");
    pretrain(&cfg(&["diagnostics.enabled=false"]), &off);
    let rows_off = epoch_rows(&off);
    assert!(rows_off.iter().all(|r| r.diagnostics == Default::default()));
    assert!(!off.join("diagnostics").exists());
    assert_eq!(weights(&on), weights(&off));
    let losses = |rows: &[metrics::MetricRow]| -> Vec<u64> {
        rows.iter().map(|r| r.loss.to_bits()).collect()
    };
    assert_eq!(losses(&rows), losses(&rows_off));

    // Another training seed: other predictions, the same pairs (the probe has its own seed).
    let other = tmp("sr-seed2");
    pretrain(&cfg(&["train.seed=2"]), &other);
    let (a, b) = (offsets(&on), offsets(&other));
    assert!(a.iter().zip(&b).all(|(x, y)| x.0 == y.0));
    assert!(a.iter().zip(&b).any(|(x, y)| x.1 != y.1));
    for d in [on, off, other] {
        std::fs::remove_dir_all(d).unwrap();
    }
}

#[test]
fn rr_rows_have_no_offsets_and_random_init_writes_its_reference() {
    let rr = tmp("rr");
    pretrain(&cfg(&["method.patches=0", "method.alpha=0"]), &rr);
    for r in epoch_rows(&rr) {
        let d = &r.diagnostics;
        assert!(
            d.offset_r_row.is_none() && d.offset_r2_col.is_none(),
            "{d:?}"
        );
        assert!(
            d.position_r2_row.is_some() && d.online_knn_acc.is_some(),
            "{d:?}"
        );
    }
    assert!(!rr.join("diagnostics/offsets.json").exists());
    std::fs::remove_dir_all(&rr).unwrap();

    // The job: random-init measures once into diagnostics.json; the SR arm's epoch rows and
    // offsets are read back for the report.
    let out = tmp("job");
    let job = cfg(&[
        "run.arms=[\"random-init\", \"sr\"]",
        "eval.linear_epochs=2",
        "eval.probe_patches=[0]",
    ]);
    let outcome = experiment::run_job(&job, &[1], &out, None, &mut |_| {}).unwrap();
    let reference = out.join("random-init/seed-1/diagnostics.json");
    let d: spatial_reasoning::eval::Diagnostics =
        serde_json::from_str(&std::fs::read_to_string(&reference).unwrap()).unwrap();
    assert!(d.offset.is_none() && d.knn_acc.is_some() && d.position.r2[0].is_finite());
    let files = experiment::read_diagnostics(&outcome).unwrap();
    assert_eq!(files.references.len(), 1);
    assert_eq!(files.epochs.len(), 1);
    assert_eq!(files.epochs[0].2.len(), 2, "two epoch rows");
    assert_eq!(files.offsets.len(), 1);
    assert_eq!(files.offsets[0].1.len(), 48);
    // The same files read back from the folder alone (what the notebooks do with `results/`).
    let study = experiment::load_study(&out).unwrap();
    assert_eq!(study.rows.len(), outcome.rows.len());
    assert_eq!(study.runs.len(), 1);
    assert_eq!(study.random_init.len(), 1);
    let again = experiment::read_diagnostics(&study).unwrap();
    assert_eq!(again.epochs[0].2, files.epochs[0].2);
    // A second start reuses everything (nothing trains again) and keeps the reference.
    let before = std::fs::read(&reference).unwrap();
    experiment::run_job(&job, &[1], &out, None, &mut |_| {}).unwrap();
    assert_eq!(std::fs::read(&reference).unwrap(), before);
    std::fs::remove_dir_all(&out).unwrap();
}
