//! `train.precision = "bf16"` end to end: a short SR pretraining run on the synthetic dataset
//! with bf16 convolutions trains (finite losses, every step taken), differs from the f32 run of
//! the same seed (so bf16 was in force), stays close to it, and leaves the process in f32
//! afterwards (evaluation runs in f32). Its own process: precision is a global switch.

use std::path::{Path, PathBuf};

use spatial_reasoning::config::Config;
use spatial_reasoning::train::{self, metrics, PretrainOptions};
use spatial_reasoning::{precision, Precision};

fn tmp(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("sr-precision-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn losses(arith: &str, dir: &Path) -> Vec<f64> {
    let cfg = Config::default()
        .apply_overrides(&[
            "data.dataset=synthetic",
            "data.train_size=96",
            "data.test_size=16",
            "backbone.name=resnet8",
            "train.batch_size=16",
            "train.epochs=1",
            "train.log_every=1",
            "train.seed=3",
            &format!("train.precision={arith}"),
        ])
        .unwrap()
        .check()
        .unwrap();
    let data = train::prepare_data(&cfg).unwrap();
    let out = train::pretrain(&cfg, &data, dir, PretrainOptions::default()).unwrap();
    assert_eq!(out.steps, 6);
    assert_eq!(out.skipped_nonfinite, 0);
    assert_eq!(
        precision(),
        Precision::F32,
        "the run restores f32 when it ends"
    );
    metrics::read_rows(&dir.join("metrics.jsonl"))
        .unwrap()
        .into_iter()
        .filter(|r| matches!(r.kind, metrics::RowKind::Step))
        .map(|r| r.loss)
        .collect()
}

#[test]
fn bf16_pretraining_trains_close_to_f32() {
    let (a, b) = (tmp("f32"), tmp("bf16"));
    let f32_losses = losses("f32", &a);
    let bf16_losses = losses("bf16", &b);
    assert_eq!(f32_losses.len(), 6, "{f32_losses:?}");
    assert_eq!(f32_losses.len(), bf16_losses.len());
    assert!(bf16_losses.iter().all(|l| l.is_finite()), "{bf16_losses:?}");
    assert_ne!(f32_losses, bf16_losses, "bf16 was not in force");
    // The first step sees identical weights and data: only rounding separates the two.
    let first = (f32_losses[0] - bf16_losses[0]).abs() / f32_losses[0];
    assert!(
        first < 1e-2,
        "step 1: f32 {} bf16 {}",
        f32_losses[0],
        bf16_losses[0]
    );
    for (x, y) in f32_losses.iter().zip(&bf16_losses) {
        assert!(
            (x - y).abs() / x < 0.1,
            "f32 {f32_losses:?}\nbf16 {bf16_losses:?}"
        );
    }
    let _ = std::fs::remove_dir_all(&a);
    let _ = std::fs::remove_dir_all(&b);
}
