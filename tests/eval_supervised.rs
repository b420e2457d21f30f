//! The supervised reference arm: training lowers the loss, changes the backbone, and the
//! frozen features it leaves behind probe well.

mod eval_common;

use dfdx::prelude::*;
use eval_common::{colour_dataset, snapshot, toy};
use spatial_reasoning::augment::Normalize;
use spatial_reasoning::eval::{
    extract_features, linear_probe, train_supervised, LinearProbeConfig, ProgressEvent,
    SupervisedAugment, SupervisedConfig,
};

const NORM: Normalize = Normalize {
    mean: [0.5, 0.5, 0.5],
    std: [0.25, 0.25, 0.25],
};

fn cfg(epochs: usize) -> SupervisedConfig {
    SupervisedConfig {
        epochs,
        batch: 32,
        lr: 1e-2,
        seed: 3,
        input_size: 8,
        augment: SupervisedAugment::CropFlip { min_scale: 0.5 },
        max_steps: 0,
    }
}

#[test]
fn training_lowers_the_loss_and_changes_weights_and_running_stats() {
    let dev = Cpu::seed_from_u64(0);
    let mut bb = toy(&dev);
    let before = snapshot(&bb, "sup-before");
    let train = colour_dataset(256, 8, 4, 1);
    let mut steps = 0;
    let report = train_supervised(&mut bb, &dev, &train, &NORM, &cfg(6), &mut |e| {
        if let ProgressEvent::SupervisedStep { steps: n, .. } = e {
            assert_eq!(n, 8);
            steps += 1;
        }
    })
    .unwrap();
    assert_eq!((report.epochs, report.steps, steps), (6, 48, 48));
    let (first, last) = (report.loss_history[0], *report.loss_history.last().unwrap());
    assert!(last < 0.7 * first, "loss {:?}", report.loss_history);
    assert!(
        *report.acc_history.last().unwrap() > 0.9,
        "{:?}",
        report.acc_history
    );
    assert_ne!(before, snapshot(&bb, "sup-after"));

    // The arm's evaluation: frozen features + linear probe separate the classes.
    let test = colour_dataset(128, 8, 4, 2);
    let ftr = extract_features(&bb, &dev, &train, &NORM, 8, 64, &mut |_| {}).unwrap();
    let fte = extract_features(&bb, &dev, &test, &NORM, 8, 64, &mut |_| {}).unwrap();
    let probe = LinearProbeConfig {
        epochs: 30,
        lr: 1e-2,
        ..Default::default()
    };
    let r = linear_probe(&ftr, &fte, &probe, &mut |_| {}).unwrap();
    assert!(r.acc > 0.95, "probe acc {}", r.acc);
}

#[test]
fn same_seed_gives_the_same_backbone_and_max_steps_stops() {
    let dev = Cpu::seed_from_u64(0);
    let start = toy(&dev);
    let train = colour_dataset(96, 8, 3, 4);
    let mut c = cfg(3);
    c.max_steps = 4;
    let mut a = start.clone();
    let ra = train_supervised(&mut a, &dev, &train, &NORM, &c, &mut |_| {}).unwrap();
    let mut b = start.clone();
    let rb = train_supervised(&mut b, &dev, &train, &NORM, &c, &mut |_| {}).unwrap();
    assert_eq!(
        (ra.steps, ra.epochs),
        (4, 2),
        "3 steps in epoch 1, 1 in epoch 2"
    );
    assert_eq!(ra, rb);
    assert_eq!(snapshot(&a, "sup-a"), snapshot(&b, "sup-b"));
}

#[test]
fn bad_inputs_are_named_errors() {
    let dev = Cpu::seed_from_u64(0);
    let mut bb = toy(&dev);
    let mut train = colour_dataset(16, 8, 2, 5);
    let e = train_supervised(&mut bb, &dev, &train, &NORM, &cfg(1), &mut |_| {}).unwrap_err();
    assert!(e.to_string().contains("larger than the 16"), "{e}");
    let mut c = cfg(1);
    c.augment = SupervisedAugment::CropFlip { min_scale: 0.0 };
    c.batch = 8;
    let e = train_supervised(&mut bb, &dev, &train, &NORM, &c, &mut |_| {}).unwrap_err();
    assert!(e.to_string().contains("min_scale"), "{e}");
    train.labels = None;
    let e = train_supervised(&mut bb, &dev, &train, &NORM, &cfg(1), &mut |_| {}).unwrap_err();
    assert!(e.to_string().contains("unlabelled"), "{e}");
}
