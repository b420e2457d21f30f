//! `train.precision = "bf16"` end to end: a short SR pretraining run on the synthetic dataset
//! with bf16 convolutions trains (finite losses, every step taken), differs from the f32 run of
//! the same seed (so bf16 was in force) and stays close to it. Precision belongs to the run (the
//! backbone carries it), not to the process: the two runs on two threads at the same time give
//! exactly what each gives alone, and evaluation of a bf16 backbone is f32.

use std::path::{Path, PathBuf};

use dfdx::prelude::*;
use spatial_reasoning::config::Config;
use spatial_reasoning::models::{Backbone, ResNet8};
use spatial_reasoning::train::{self, metrics, PretrainOptions};
use spatial_reasoning::Precision;

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
    metrics::read_rows(&dir.join("metrics.jsonl"))
        .unwrap()
        .into_iter()
        .filter(|r| matches!(r.kind, metrics::RowKind::Step))
        .map(|r| r.loss)
        .collect()
}

#[test]
fn bf16_pretraining_trains_close_to_f32_and_runs_do_not_interfere() {
    let (a, b) = (tmp("f32"), tmp("bf16"));
    let f32_losses = losses("f32", &a);
    let bf16_losses = losses("bf16", &b);
    // The same two runs at once, on two threads (sharing rayon's pool): each computes exactly
    // what it computed alone. A process-wide precision switch would put the f32 run's
    // convolutions in bf16 while the other runs (or the reverse), and the losses would differ.
    let (c, d) = (tmp("f32-concurrent"), tmp("bf16-concurrent"));
    let (f32_again, bf16_again) = std::thread::scope(|s| {
        let f = s.spawn(|| losses("f32", &c));
        let g = s.spawn(|| losses("bf16", &d));
        (f.join().unwrap(), g.join().unwrap())
    });
    assert_eq!(f32_again, f32_losses, "the f32 run beside a bf16 run");
    assert_eq!(bf16_again, bf16_losses, "the bf16 run beside an f32 run");
    let _ = std::fs::remove_dir_all(&c);
    let _ = std::fs::remove_dir_all(&d);
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

#[test]
fn evaluation_of_a_bf16_backbone_is_f32() {
    let dev = Cpu::default();
    let x: Tensor<(usize, Const<3>, usize, usize), f32, Cpu> =
        dev.sample_normal_like(&(4, Const, 32, 32));
    let f32_net = ResNet8::<Cpu>::new(&dev, 5).unwrap();
    let mut bf16_net = f32_net.clone();
    bf16_net.set_precision(Precision::Bf16);
    assert_eq!(bf16_net.precision(), Precision::Bf16);
    assert_eq!(
        bf16_net.forward_eval(x.clone()).unwrap().as_vec(),
        f32_net.forward_eval(x.clone()).unwrap().as_vec(),
        "forward_eval ignores the training precision"
    );
    // ... while its training pass does use it.
    let train = |mut net: ResNet8<Cpu>| {
        net.forward_train(x.clone().leaky_traced())
            .unwrap()
            .as_vec()
    };
    assert_ne!(train(bf16_net), train(f32_net));
}
