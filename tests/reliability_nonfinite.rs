//! Numerical faults: a non-finite loss injected at a known step through the data, under
//! `train.nonfinite = "stop"` and `"skip"`, and a zero-variance channel rejected before training.
//!
//! Injection: every training image is black except one "poison" image (all white). The
//! normalisation is set by hand to mean 0 and std = the smallest positive f32, so a black pixel
//! normalises to 0 and any lit pixel to +inf (colour jitter keeps black black and white lit).
//! A batch holding the poison image therefore has a non-finite loss, and every other batch a
//! finite one. The batch order is the documented one (`train::train_loop`: epoch `e` visits the
//! images in the permutation drawn from `rng_for(seed, Shuffle, e, 0)`), so the poisoned step of
//! each epoch is known in advance.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rand::seq::SliceRandom;
use spatial_reasoning::augment::Normalize;
use spatial_reasoning::config::{Config, ValidConfig};
use spatial_reasoning::data::ImageDataset;
use spatial_reasoning::rng::{rng_for, Stream};
use spatial_reasoning::train::{self, checkpoint, metrics, PretrainOptions, TrainData, TrainError};

const N: usize = 64;
const BATCH: usize = 16;
const STEPS_PER_EPOCH: u64 = (N / BATCH) as u64;
const EPOCHS: u64 = 3;
const SEED: u64 = 5;
/// The poison image sits in the third batch of epoch 0 (step 3); checkpoints every 2 steps.
const POISON_STEP_EPOCH0: u64 = 3;

fn tmp(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("sr-rel-nonfinite-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn cfg(policy: &str) -> ValidConfig {
    let nonfinite = format!("train.nonfinite={policy}");
    let seed = format!("train.seed={SEED}");
    let epochs = format!("train.epochs={EPOCHS}");
    let batch = format!("train.batch_size={BATCH}");
    let train_size = format!("data.train_size={N}");
    Config::default()
        .apply_overrides(&[
            "data.dataset=synthetic",
            &train_size,
            "data.test_size=16",
            "backbone.name=conv4",
            &batch,
            &epochs,
            "train.log_every=1",
            "train.checkpoint_every=2",
            "method.views=2",
            &seed,
            &nonfinite,
        ])
        .unwrap()
        .check()
        .unwrap()
}

/// The permutation of epoch `e` (as `train::train_loop` draws it).
fn epoch_order(e: u64) -> Vec<usize> {
    let mut order: Vec<usize> = (0..N).collect();
    order.shuffle(&mut rng_for(SEED, Stream::Shuffle, e, 0));
    order
}

/// The image index placed in step 3 of epoch 0, and the 1-based step of every epoch that
/// holds it.
fn poison() -> (usize, Vec<u64>) {
    let p = epoch_order(0)[(POISON_STEP_EPOCH0 as usize - 1) * BATCH + 5];
    let steps = (0..EPOCHS)
        .map(|e| {
            let pos = epoch_order(e).iter().position(|&i| i == p).unwrap();
            e * STEPS_PER_EPOCH + (pos / BATCH) as u64 + 1
        })
        .collect();
    (p, steps)
}

fn poisoned_data() -> TrainData {
    let (p, _) = poison();
    let per = 32 * 32 * 3;
    let mut pixels = vec![0u8; N * per];
    pixels[p * per..(p + 1) * per].fill(255);
    TrainData {
        train: Arc::new(ImageDataset {
            name: "poisoned".into(),
            split: "train".into(),
            height: 32,
            width: 32,
            pixels,
            labels: None,
            class_names: Vec::new(),
        }),
        normalize: Normalize {
            mean: [0.0; 3],
            std: [f32::from_bits(1); 3], // 1.4e-45: 1.0 / std = +inf
        },
    }
}

/// Every value of a safetensors file (header length, JSON header, little-endian data).
fn safetensors_values(path: &Path) -> Vec<f64> {
    let bytes = std::fs::read(path).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    let data = &bytes[8 + n..];
    let mut out = Vec::new();
    for (name, t) in header.as_object().unwrap() {
        if name == "__metadata__" {
            continue;
        }
        let a = t["data_offsets"][0].as_u64().unwrap() as usize;
        let b = t["data_offsets"][1].as_u64().unwrap() as usize;
        match t["dtype"].as_str().unwrap() {
            "F32" => out.extend(
                data[a..b]
                    .chunks_exact(4)
                    .map(|c| f32::from_le_bytes(c.try_into().unwrap()) as f64),
            ),
            // Batch-norm epsilon and momentum.
            "F64" => out.extend(
                data[a..b]
                    .chunks_exact(8)
                    .map(|c| f64::from_le_bytes(c.try_into().unwrap())),
            ),
            other => panic!("{name}: unexpected dtype {other}"),
        }
    }
    assert!(out.len() > 1000, "a real model: {} values", out.len());
    out
}

/// Every checkpoint directory's weights are finite.
fn assert_checkpoints_finite(dir: &Path) -> Vec<u64> {
    let mut steps = Vec::new();
    for e in std::fs::read_dir(checkpoint::checkpoints_dir(dir)).unwrap() {
        let e = e.unwrap();
        let name = e.file_name().to_string_lossy().into_owned();
        if !name.starts_with("step-") {
            continue;
        }
        let found = checkpoint::verify(&e.path()).unwrap();
        let values = safetensors_values(&found.model_path());
        assert!(
            values.iter().all(|v| v.is_finite()),
            "{name}: non-finite weights"
        );
        assert!(found
            .optim
            .m
            .iter()
            .chain(&found.optim.v)
            .flatten()
            .all(|v| v.is_finite()));
        steps.push(found.state.step);
    }
    steps.sort();
    steps
}

type Row = (String, u64, [u64; 4], u64);

fn rows(dir: &Path) -> Vec<Row> {
    let text = std::fs::read_to_string(dir.join("metrics.jsonl")).unwrap();
    let parsed = metrics::read_rows(&dir.join("metrics.jsonl")).unwrap();
    assert_eq!(
        parsed.len(),
        text.lines().count(),
        "every metrics line parses:\n{text}"
    );
    parsed
        .into_iter()
        .map(|r| {
            let v = [r.loss, r.loss_relation, r.loss_distance, r.relation_acc];
            assert!(v.iter().all(|x| x.is_finite()), "{r:?}");
            (
                format!("{:?}", r.kind),
                r.step,
                v.map(f64::to_bits),
                r.skipped,
            )
        })
        .collect()
}

#[test]
fn stop_names_the_step_keeps_the_last_good_checkpoint_and_resumes_with_skip() {
    let (_, poisoned) = poison();
    assert_eq!(poisoned[0], POISON_STEP_EPOCH0);
    let data = poisoned_data();

    // "stop": the run errors at the poisoned step, naming it.
    let dir = tmp("stop");
    let err = train::pretrain(&cfg("stop"), &data, &dir, PretrainOptions::default()).unwrap_err();
    assert!(
        matches!(
            err,
            TrainError::NonFinite {
                step: POISON_STEP_EPOCH0,
                ..
            }
        ),
        "{err}"
    );
    let msg = err.to_string();
    // (The poisoned batch's loss may still be finite, ReLU dropping the NaNs; its gradient is not.)
    assert!(
        msg.contains("non-finite ") && msg.contains("at step 3"),
        "{msg}"
    );
    assert!(
        msg.contains("train.nonfinite = \"skip\""),
        "the message says how to go on: {msg}"
    );
    // The last good checkpoint (step 2) is kept, verifies, and holds finite weights; nothing
    // was written for the poisoned step.
    assert_eq!(assert_checkpoints_finite(&dir), vec![2]);
    let (found, problems) = checkpoint::find_latest(&dir).unwrap();
    assert_eq!((found.state.step, problems.len()), (2, 0));
    let before: Vec<u64> = rows(&dir).iter().map(|r| r.1).collect();
    assert_eq!(before, vec![1, 2], "rows up to the last good step");

    // Following the message: resume the same run with "skip" (the only change allowed).
    let out = train::pretrain(
        &cfg("skip"),
        &data,
        &dir,
        PretrainOptions {
            resume: true,
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(out.steps, EPOCHS * STEPS_PER_EPOCH);
    assert_eq!(out.skipped_nonfinite, EPOCHS, "one poisoned step per epoch");
    let saved = Config::from_toml_file(&dir.join("config.toml")).unwrap();
    assert_eq!(
        saved,
        cfg("skip").raw().clone(),
        "config.toml records the policy now in force"
    );

    // A fresh "skip" run: same rows and bit-identical weights as stop-then-resume.
    let fresh = tmp("skip");
    let out2 = train::pretrain(&cfg("skip"), &data, &fresh, PretrainOptions::default()).unwrap();
    assert_eq!(out2.skipped_nonfinite, EPOCHS);
    let rows_fresh = rows(&fresh);
    assert_eq!(rows(&dir), rows_fresh);

    // The skipped steps are counted in the `skipped` column at the right steps, and stay out of
    // the averages (a step row holding only a skipped step has no loss to report: 0).
    for r in rows_fresh.iter().filter(|r| r.0 == "Step") {
        let expect = poisoned.iter().filter(|&&s| s <= r.1).count() as u64;
        assert_eq!(r.3, expect, "skipped column at step {}", r.1);
        if poisoned.contains(&r.1) {
            assert_eq!(r.2, [0u64; 4], "step {} was skipped", r.1);
        } else {
            assert!(f64::from_bits(r.2[0]) > 0.0, "step {} has a loss", r.1);
        }
    }
    assert_eq!(rows_fresh.iter().filter(|r| r.0 == "Step").count(), 12);
    assert_eq!(rows_fresh.iter().filter(|r| r.0 == "Epoch").count(), 3);
    // Weights finite everywhere, final ones identical.
    assert_checkpoints_finite(&dir);
    assert_checkpoints_finite(&fresh);
    let a = std::fs::read(checkpoint::find_latest(&dir).unwrap().0.model_path()).unwrap();
    let b = std::fs::read(checkpoint::find_latest(&fresh).unwrap().0.model_path()).unwrap();
    assert!(a == b, "stop-then-resume-with-skip equals a fresh skip run");

    // Any other config change is still refused on resume.
    let mut changed = cfg("skip").raw().clone();
    changed.train.epochs = 4;
    let err = train::pretrain(
        &changed.check().unwrap(),
        &data,
        &dir,
        PretrainOptions {
            resume: true,
            ..Default::default()
        },
    )
    .unwrap_err();
    assert!(
        err.to_string().contains("differs from the configuration"),
        "{err}"
    );
    for d in [dir, fresh] {
        std::fs::remove_dir_all(d).unwrap();
    }
}

fn dataset(pixels: Vec<u8>) -> ImageDataset {
    ImageDataset {
        name: "tiny".into(),
        split: "train".into(),
        height: 2,
        width: 2,
        pixels,
        labels: None,
        class_names: Vec::new(),
    }
}

#[test]
fn zero_variance_channel_is_rejected_before_training() {
    // Blue is 7 everywhere: its std is 0, normalising would divide by zero.
    let px: Vec<u8> = (0..2 * 4)
        .flat_map(|i| [i as u8 * 30, 255 - i as u8, 7])
        .collect();
    let err = TrainData::from_dataset(dataset(px)).unwrap_err();
    assert!(
        matches!(
            err,
            TrainError::ZeroVariance {
                channel: "B",
                images: 2,
                ..
            }
        ),
        "{err}"
    );
    let msg = err.to_string();
    assert!(
        msg.contains("tiny train") && msg.contains("channel B") && msg.contains("is 7"),
        "{msg}"
    );
    // Identical images: every channel is constant; the first is named.
    let err = TrainData::from_dataset(dataset([10u8, 20, 30].repeat(8))).unwrap_err();
    assert!(
        matches!(err, TrainError::ZeroVariance { channel: "R", .. }),
        "{err}"
    );
    // One differing pixel in each channel is enough.
    let mut px = [10u8, 20, 30].repeat(8);
    px[0] = 11;
    px[4] = 21;
    px[8] = 31;
    let ok = TrainData::from_dataset(dataset(px)).unwrap();
    assert!(ok.normalize.std.iter().all(|&s| s > 0.0));
}

/// A learning rate of 1e30 makes the loss itself NaN from step 2 on (measured: the first update
/// puts the weights near ±1e30, the next forward pass overflows).
fn blown_up(policy: &str) -> ValidConfig {
    let mut c = cfg(policy).raw().clone();
    c.optim.lr = 1e30;
    c.check().unwrap()
}

#[test]
fn nan_loss_stop_and_skip_keep_metrics_and_checkpoints_readable() {
    let data = {
        let c = blown_up("stop");
        train::prepare_data(&c).unwrap()
    };
    // "stop": the NaN loss of step 2 is named; the step-1 checkpoint does not exist (checkpoints
    // every 2 steps), so nothing was saved, in particular no NaN weights.
    let dir = tmp("nan-stop");
    let err =
        train::pretrain(&blown_up("stop"), &data, &dir, PretrainOptions::default()).unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("non-finite loss (NaN) at step 2"), "{msg}");
    assert!(checkpoint::find_latest(&dir).is_err());
    std::fs::remove_dir_all(&dir).unwrap();

    // "skip": every step from 2 on is skipped and counted; every metrics row and every
    // checkpoint's state.json stays readable (a NaN in the averaged window would be written as
    // `null`), so an interrupted run resumes exactly.
    let total = EPOCHS * STEPS_PER_EPOCH;
    let a = tmp("nan-skip-a");
    let out = train::pretrain(&blown_up("skip"), &data, &a, PretrainOptions::default()).unwrap();
    assert_eq!((out.steps, out.skipped_nonfinite), (total, total - 1));
    let rows_a = rows(&a);
    assert_eq!(rows_a.len() as u64, total + EPOCHS);
    let last = rows_a.iter().rfind(|r| r.0 == "Step").unwrap();
    assert_eq!(last.3, total - 1, "skipped column");
    let (found, problems) = checkpoint::find_latest(&a).unwrap();
    assert!(problems.is_empty(), "{problems:?}");
    assert_eq!(found.state.skipped_nonfinite, total - 1);
    assert_checkpoints_finite(&a);

    let b = tmp("nan-skip-b");
    let stopped = train::pretrain(
        &blown_up("skip"),
        &data,
        &b,
        PretrainOptions {
            stop_at_step: Some(7),
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(stopped.steps, 7);
    let resumed = train::pretrain(
        &blown_up("skip"),
        &data,
        &b,
        PretrainOptions {
            resume: true,
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(
        (resumed.steps, resumed.skipped_nonfinite),
        (total, total - 1)
    );
    assert_eq!(rows(&b), rows_a);
    let wa = std::fs::read(checkpoint::find_latest(&a).unwrap().0.model_path()).unwrap();
    let wb = std::fs::read(checkpoint::find_latest(&b).unwrap().0.model_path()).unwrap();
    assert!(wa == wb);
    for d in [a, b] {
        std::fs::remove_dir_all(d).unwrap();
    }
}
