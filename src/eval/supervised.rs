//! The supervised reference arm (SPEC §4, upper bound): train backbone + `Linear(F → C)` with
//! cross-entropy and Adam on labelled images with light augmentation; afterwards the backbone is
//! evaluated like every other arm (frozen features, the same linear probe).
//!
//! The random-init arm (lower bound) needs nothing from here: build a fresh backbone and run
//! [`super::extract_features`] + [`super::linear_probe`] on it.

use dfdx::nn::tensor_collection::{ModuleVisitor, TensorCollection};
use dfdx::optim::Adam;
use dfdx::prelude::*;
use rand::seq::SliceRandom;
use rand::Rng as _;
use rayon::prelude::*;

use super::features::check_normalization;
use super::{EvalError, ProgressEvent, Result};
use crate::augment::color::{hflip_planes, normalize_planes};
use crate::augment::{resized_crop, Image, Normalize, RandomResizedCrop, Window};
use crate::data::ImageDataset;
use crate::models::{Backbone, FEATURES};
use crate::rng::{rng_for, Stream};

/// Augmentation of the supervised arm.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SupervisedAugment {
    /// Whole image, resized to the input size if needed.
    None,
    /// `RandomResizedCrop(scale = (min_scale, 1), ratio = (3/4, 4/3))` then a horizontal flip
    /// with p = 0.5 (the augment module's torchvision-exact crop).
    CropFlip { min_scale: f64 },
}

/// Settings of [`train_supervised`]. `Default`: 100 epochs, batch 128, Adam lr 1e-3 (betas
/// 0.9/0.999, eps 1e-8, no weight decay), input 32, crop scale (0.5, 1) + flip, seed 1.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SupervisedConfig {
    pub epochs: usize,
    pub batch: usize,
    pub lr: f64,
    pub seed: u64,
    /// Side of the backbone input.
    pub input_size: usize,
    pub augment: SupervisedAugment,
    /// Stop after this many optimiser steps in total (0 = no limit); for smoke runs and tests.
    pub max_steps: usize,
}

impl Default for SupervisedConfig {
    fn default() -> Self {
        Self {
            epochs: 100,
            batch: 128,
            lr: 1e-3,
            seed: 1,
            input_size: 32,
            augment: SupervisedAugment::CropFlip { min_scale: 0.5 },
            max_steps: 0,
        }
    }
}

impl SupervisedConfig {
    fn check(&self) -> Result<()> {
        let bad = |what: &str, detail: String| {
            Err(EvalError::invalid(format!("supervised {what}"), detail))
        };
        if self.epochs == 0 {
            return bad("epochs", "0: must be at least 1".into());
        }
        if self.batch < 2 {
            return bad(
                "batch",
                format!("{}: must be at least 2 (batch-norm statistics)", self.batch),
            );
        }
        if !(self.lr.is_finite() && self.lr > 0.0) {
            return bad("lr", format!("{}: must be finite and > 0", self.lr));
        }
        if self.input_size == 0 {
            return bad("input_size", "0: must be at least 1".into());
        }
        if let SupervisedAugment::CropFlip { min_scale } = self.augment {
            if !(min_scale > 0.0 && min_scale <= 1.0) {
                return bad(
                    "augment min_scale",
                    format!("{min_scale}: must lie in (0, 1]"),
                );
            }
        }
        Ok(())
    }
}

/// Width of the supervised arm's classification head: datasets with up to this many classes
/// are supported (tiny-ImageNet has 200).
pub const MAX_CLASSES: usize = 256;

/// The supervised arm's head: `Linear(F → MAX_CLASSES)`, of which the first `C` outputs are the
/// classes; the others are masked with a constant −1e9 logit, so their softmax probability is
/// exactly 0, their weights receive exactly zero gradient and never move (Adam's update of a
/// zero gradient is zero), and the loss equals that of a `Linear(F → C)`.
pub type ClassHead<D> = dfdx::nn::modules::Linear<FEATURES, MAX_CLASSES, f32, D>;

/// A [`ClassHead`] with PyTorch's `nn.Linear` initialisation (uniform in `±1/√F`) for every
/// output, drawn from `rng`.
pub fn class_head<D: Device<f32>>(dev: &D, rng: &mut crate::rng::Rng) -> ClassHead<D> {
    let bound = 1.0 / (FEATURES as f32).sqrt();
    let w: Vec<f32> = (0..FEATURES * MAX_CLASSES)
        .map(|_| rng.gen_range(-bound..bound))
        .collect();
    let b: Vec<f32> = (0..MAX_CLASSES)
        .map(|_| rng.gen_range(-bound..bound))
        .collect();
    ClassHead {
        weight: dev.tensor_from_vec(w, (Const::<MAX_CLASSES>, Const::<FEATURES>)),
        bias: dev.tensor_from_vec(b, (Const::<MAX_CLASSES>,)),
    }
}

/// The logit mask of a `classes`-way problem: 0 for the first `classes` outputs, −1e9 after.
///
/// # Shapes
/// `(MAX_CLASSES,)`
pub fn class_mask<D: Device<f32>>(
    dev: &D,
    classes: usize,
) -> Tensor<(Const<MAX_CLASSES>,), f32, D> {
    let mut mask = vec![-1e9f32; MAX_CLASSES];
    mask[..classes.min(MAX_CLASSES)].fill(0.0);
    dev.tensor_from_vec(mask, (Const::<MAX_CLASSES>,))
}

/// Logits of the supervised head, `(B, MAX_CLASSES)`.
pub type Logits<D, T> = Tensor<(usize, Const<MAX_CLASSES>), f32, D, T>;

/// `head(features) + mask`, the logits whose softmax cross-entropy equals that of a
/// `Linear(F → C)` (see [`ClassHead`]).
///
/// # Shapes
/// `(B, F)` → `(B, MAX_CLASSES)`
pub fn masked_logits<D: Device<f32>, T: Tape<f32, D> + Merge<NoneTape>>(
    head: &ClassHead<D>,
    features: Tensor<(usize, Const<FEATURES>), f32, D, T>,
    mask: &Tensor<(Const<MAX_CLASSES>,), f32, D>,
) -> std::result::Result<Logits<D, T>, D::Err> {
    let b = features.shape().0;
    let logits = head.try_forward(features)?;
    let mask_b = mask
        .clone()
        .try_broadcast_like::<_, Axis<0>>(&(b, Const::<MAX_CLASSES>))?;
    logits.try_add(mask_b)
}

/// Backbone and head in one [`TensorCollection`], so one gradient buffer and one optimiser
/// cover both (DFDX-NOTES).
#[derive(Clone, Debug)]
pub struct SupervisedNet<B, H> {
    pub bb: B,
    pub head: H,
}

impl<B: TensorCollection<f32, D>, H: TensorCollection<f32, D>, D: Device<f32>>
    TensorCollection<f32, D> for SupervisedNet<B, H>
{
    type To<E2: Dtype, D2: Device<E2>> = SupervisedNet<B::To<E2, D2>, H::To<E2, D2>>;
    fn iter_tensors<V: ModuleVisitor<Self, f32, D>>(
        visitor: &mut V,
    ) -> std::result::Result<Option<Self::To<V::E2, V::D2>>, V::Err> {
        visitor.visit_fields(
            (
                Self::module("bb", |s| &s.bb, |s| &mut s.bb),
                Self::module("head", |s| &s.head, |s| &mut s.head),
            ),
            |(bb, head)| SupervisedNet { bb, head },
        )
    }
}

/// What [`train_supervised`] did.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SupervisedReport {
    /// Epochs run, a partial last one included (fewer than asked when `max_steps` stopped
    /// training).
    pub epochs: usize,
    pub steps: usize,
    /// Mean cross-entropy of every epoch (augmented minibatches, train-mode batch-norm).
    pub loss_history: Vec<f32>,
    /// Training accuracy (fraction) of every epoch on the same minibatches.
    pub acc_history: Vec<f32>,
}

/// Train `backbone` and a fresh `Linear(F → C)` head jointly with softmax cross-entropy and Adam
/// (dfdx's, PyTorch's update rule) on `train`, with [`SupervisedAugment`] per image. Writes the
/// trained backbone back into `backbone` (the head is discarded: evaluation trains its own probe
/// on the frozen features).
///
/// Randomness: head init `rng_for(seed, Stream::Eval, u64::MAX, 2)`; epoch order
/// `rng_for(seed, Stream::Shuffle, epoch, 0)`; image `i`'s augmentation in epoch `e`
/// `rng_for(seed, Stream::Views, e, i)`. Batches are full (the last partial batch of an epoch is
/// dropped, so batch-norm never sees a batch of 1).
///
/// # Shapes
/// images `(batch, 3, input_size, input_size)` → features `(batch, F)` → logits
/// `(batch, MAX_CLASSES)`, of which the first `C` are unmasked.
pub fn train_supervised<D: Device<f32>, B: Backbone<D>>(
    backbone: &mut B,
    dev: &D,
    train: &ImageDataset,
    norm: &Normalize,
    cfg: &SupervisedConfig,
    progress: &mut dyn FnMut(ProgressEvent),
) -> Result<SupervisedReport> {
    cfg.check()?;
    check_normalization(norm)?;
    let labels = train.labels.as_ref().ok_or_else(|| EvalError::Unlabelled {
        dataset: train.name.clone(),
        split: train.split.clone(),
    })?;
    let n = train.len();
    if labels.len() != n {
        return Err(EvalError::invalid(
            format!("{}/{}", train.name, train.split),
            format!("{} labels for {n} images", labels.len()),
        ));
    }
    if n < cfg.batch {
        return Err(EvalError::invalid(
            "supervised batch",
            format!(
                "{} is larger than the {n} training images of {}/{}",
                cfg.batch, train.name, train.split
            ),
        ));
    }
    let classes = train
        .num_classes()
        .max(labels.iter().map(|&l| l as usize + 1).max().unwrap_or(0));
    if !(2..=MAX_CLASSES).contains(&classes) {
        return Err(EvalError::invalid(
            format!("supervised on {}/{}", train.name, train.split),
            format!("{classes} classes: supported are 2..={MAX_CLASSES}"),
        ));
    }
    let (h, w, s) = (train.height, train.width, cfg.input_size);
    let per = 3 * s * s;
    let rrc = match cfg.augment {
        SupervisedAugment::CropFlip { min_scale } => Some(RandomResizedCrop {
            size: (s, s),
            scale: (min_scale, 1.0),
            ratio: (3.0 / 4.0, 4.0 / 3.0),
        }),
        SupervisedAugment::None => None,
    };
    let fill = |epoch: usize, i: usize, out: &mut [f32]| {
        let img = Image::from_hwc_u8(train.image(i), h, w);
        let mut rng = rng_for(cfg.seed, Stream::Views, epoch as u64, i as u64);
        let (window, flip) = match &rrc {
            Some(rrc) => {
                let window = rrc.sample_params(&mut rng, h, w);
                (window, rng.gen::<f64>() < 0.5)
            }
            None => (
                Window {
                    top: 0,
                    left: 0,
                    height: h,
                    width: w,
                },
                false,
            ),
        };
        if window.height == s && window.width == s && window.top == 0 && window.left == 0 {
            out.copy_from_slice(&img.data);
        } else {
            out.copy_from_slice(&resized_crop(&img, window, s, s).data);
        }
        if flip {
            hflip_planes(out, s, s);
        }
        normalize_planes(out, s * s, &norm.mean, &norm.std);
    };

    let mut head_rng = rng_for(cfg.seed, Stream::Eval, u64::MAX, 2);
    let mut net = SupervisedNet {
        bb: backbone.clone(),
        head: class_head(dev, &mut head_rng),
    };
    let mut opt = Adam::new(
        &net,
        AdamConfig {
            lr: cfg.lr,
            betas: [0.9, 0.999],
            eps: 1e-8,
            weight_decay: None,
        },
    );
    let mask = class_mask(dev, classes);
    let mut grads = Some(net.alloc_grads());
    let steps_per_epoch = n / cfg.batch;
    let mut order: Vec<usize> = (0..n).collect();
    let mut report = SupervisedReport {
        epochs: 0,
        steps: 0,
        loss_history: vec![],
        acc_history: vec![],
    };
    let dev_err = |during: &str, e: &dyn std::fmt::Debug| EvalError::device(during, e);

    for epoch in 0..cfg.epochs {
        let mut stop = false;
        order.shuffle(&mut rng_for(cfg.seed, Stream::Shuffle, epoch as u64, 0));
        let (mut loss_sum, mut correct, mut seen) = (0f64, 0usize, 0usize);
        for (step, idx) in order.chunks_exact(cfg.batch).enumerate() {
            if cfg.max_steps != 0 && report.steps >= cfg.max_steps {
                stop = true;
                break;
            }
            let b = idx.len();
            let mut buf = vec![0f32; b * per];
            buf.par_chunks_mut(per)
                .zip(idx.par_iter())
                .for_each(|(out, &i)| fill(epoch, i, out));
            let mut onehot = vec![0f32; b * MAX_CLASSES];
            for (j, &i) in idx.iter().enumerate() {
                onehot[j * MAX_CLASSES + labels[i] as usize] = 1.0;
            }
            let x = dev.tensor_from_vec(buf, (b, Const::<3>, s, s));
            let y = dev.tensor_from_vec(onehot, (b, Const::<MAX_CLASSES>));
            let g = grads.take().expect("gradients are returned every step");
            let feats = net
                .bb
                .forward_train(x.traced(g))
                .map_err(|e| dev_err("supervised forward", &e))?;
            let logits = masked_logits(&net.head, feats, &mask)
                .map_err(|e| dev_err("supervised head", &e))?;
            let z = logits.retaped::<NoneTape>().as_vec();
            let loss = cross_entropy_with_logits_loss(logits, y);
            let loss_value = loss.retaped::<NoneTape>().as_vec()[0];
            if !loss_value.is_finite() {
                return Err(EvalError::invalid(
                    "supervised training",
                    format!(
                        "loss became {loss_value} at epoch {} step {}",
                        epoch + 1,
                        step + 1
                    ),
                ));
            }
            let mut g = loss.backward();
            opt.update(&mut net, &g)
                .map_err(|e| dev_err("supervised optimiser step", &e))?;
            net.zero_grads(&mut g);
            grads = Some(g);

            for (row, &i) in z.chunks_exact(MAX_CLASSES).zip(idx) {
                let mut best = 0;
                for (c, &v) in row.iter().enumerate() {
                    if v > row[best] {
                        best = c;
                    }
                }
                correct += (best == labels[i] as usize) as usize;
            }
            seen += b;
            loss_sum += loss_value as f64 * b as f64;
            report.steps += 1;
            progress(ProgressEvent::SupervisedStep {
                epoch: epoch + 1,
                step: step + 1,
                steps: steps_per_epoch,
                loss: loss_value,
            });
        }
        if seen == 0 {
            break;
        }
        let loss = (loss_sum / seen as f64) as f32;
        let acc = correct as f32 / seen as f32;
        report.epochs = epoch + 1;
        report.loss_history.push(loss);
        report.acc_history.push(acc);
        progress(ProgressEvent::SupervisedEpoch {
            epoch: epoch + 1,
            epochs: cfg.epochs,
            loss,
            train_acc: acc,
        });
        if stop {
            break;
        }
    }
    *backbone = net.bb;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The masked `MAX_CLASSES`-wide head is a `C`-way softmax regression: same loss as the
    /// host-computed C-class cross-entropy, and exactly zero gradient on the masked outputs.
    #[test]
    fn masked_head_equals_a_c_way_head() {
        let dev = Cpu::seed_from_u64(0);
        let c = 3;
        let head = class_head(&dev, &mut rng_for(7, Stream::Eval, 0, 0));
        let x: Tensor<(usize, Const<FEATURES>), f32, Cpu> =
            dev.sample_normal_like(&(5, Const::<FEATURES>));
        let labels = [0usize, 2, 1, 1, 0];
        let mut onehot = vec![0f32; 5 * MAX_CLASSES];
        for (i, &l) in labels.iter().enumerate() {
            onehot[i * MAX_CLASSES + l] = 1.0;
        }
        let y = dev.tensor_from_vec(onehot, (5, Const::<MAX_CLASSES>));
        let grads = head.alloc_grads();
        let logits = masked_logits(&head, x.clone().traced(grads), &class_mask(&dev, c)).unwrap();
        let loss = cross_entropy_with_logits_loss(logits, y);
        let value = loss.retaped::<NoneTape>().as_vec()[0];
        let g = loss.backward();

        let (w, bias, xv) = (head.weight.as_vec(), head.bias.as_vec(), x.as_vec());
        let mut expect = 0f64;
        for (i, &l) in labels.iter().enumerate() {
            let z: Vec<f64> = (0..c)
                .map(|k| {
                    bias[k] as f64
                        + (0..FEATURES)
                            .map(|f| w[k * FEATURES + f] as f64 * xv[i * FEATURES + f] as f64)
                            .sum::<f64>()
                })
                .collect();
            let lse = z.iter().map(|v| v.exp()).sum::<f64>().ln();
            expect += lse - z[l];
        }
        expect /= labels.len() as f64;
        assert!((value as f64 - expect).abs() < 1e-5, "{value} vs {expect}");

        let gw = g.get(&head.weight).as_vec();
        let gb = g.get(&head.bias).as_vec();
        assert!(gw[..c * FEATURES].iter().any(|v| *v != 0.0));
        assert!(gw[c * FEATURES..].iter().all(|v| *v == 0.0));
        assert!(gb[c..].iter().all(|v| *v == 0.0));
    }
}
