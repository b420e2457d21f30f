//! Pretraining end to end on the synthetic dataset: the loop runs, writes its run directory, and
//! a run stopped at a checkpoint and resumed finishes with exactly the metrics and weights of an
//! uninterrupted run with the same seed.

use std::path::{Path, PathBuf};

use spatial_reasoning::config::Config;
use spatial_reasoning::train::{self, metrics, PretrainOptions};

fn tmp(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("sr-pretrain-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn tiny(method: &[&str]) -> spatial_reasoning::config::ValidConfig {
    let mut sets = vec![
        "data.dataset=synthetic",
        "data.train_size=96",
        "data.test_size=16",
        "backbone.name=conv4",
        "train.batch_size=16",
        "train.epochs=2",
        "train.log_every=2",
        "train.seed=7",
    ];
    sets.extend_from_slice(method);
    Config::default()
        .apply_overrides(&sets)
        .unwrap()
        .check()
        .unwrap()
}

/// Rows without the timing columns, which legitimately differ between runs.
fn rows(dir: &Path) -> Vec<(u64, String, [f64; 4])> {
    metrics::read_rows(&dir.join("metrics.jsonl"))
        .unwrap()
        .into_iter()
        .map(|r| {
            (
                r.step,
                format!("{:?}", r.kind),
                [r.loss, r.loss_relation, r.loss_distance, r.relation_acc],
            )
        })
        .collect()
}

fn final_weights(dir: &Path) -> Vec<u8> {
    let (found, _) = train::checkpoint::find_latest(dir).unwrap();
    std::fs::read(found.model_path()).unwrap()
}

#[test]
fn sr_resume_equals_uninterrupted() {
    let cfg = tiny(&[]);
    let data = train::prepare_data(&cfg).unwrap();

    let a = tmp("a");
    let out = train::pretrain(&cfg, &data, &a, PretrainOptions::default()).unwrap();
    assert_eq!(out.steps, 12, "96 / 16 = 6 steps per epoch, 2 epochs");
    assert!(!out.interrupted);
    for f in ["config.toml", "meta.json", "metrics.jsonl"] {
        assert!(a.join(f).exists(), "{f}");
    }
    let rows_a = rows(&a);
    assert!(rows_a.iter().all(|r| r.2.iter().all(|v| v.is_finite())));
    assert!(
        rows_a.iter().any(|r| r.2[2] > 0.0),
        "SR logs a distance loss"
    );

    let b = tmp("b");
    let stopped = train::pretrain(
        &cfg,
        &data,
        &b,
        PretrainOptions {
            stop_at_step: Some(5),
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(stopped.steps, 5);
    assert!(stopped.interrupted);
    let resumed = train::pretrain(
        &cfg,
        &data,
        &b,
        PretrainOptions {
            resume: true,
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(resumed.steps, 12);
    assert_eq!(
        rows(&b),
        rows_a,
        "metrics after resume equal the uninterrupted run"
    );
    assert_eq!(
        final_weights(&b),
        final_weights(&a),
        "weights bit-identical"
    );

    // A new run refuses to overwrite an existing run directory.
    let err = train::pretrain(&cfg, &data, &a, PretrainOptions::default()).unwrap_err();
    assert!(err.to_string().contains("--resume"), "{err}");
    for d in [a, b] {
        std::fs::remove_dir_all(d).unwrap();
    }
}

#[test]
fn rr_is_the_same_loop_without_patches() {
    let cfg = tiny(&["method.patches=0", "method.alpha=0"]);
    let data = train::prepare_data(&cfg).unwrap();
    let dir = tmp("rr");
    let out = train::pretrain(&cfg, &data, &dir, PretrainOptions::default()).unwrap();
    assert_eq!(out.steps, 12);
    let r = rows(&dir);
    assert!(
        r.iter().all(|row| row.2[2] == 0.0),
        "no distance term in RR"
    );
    std::fs::remove_dir_all(dir).unwrap();
}
