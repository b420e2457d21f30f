//! The linear probe (SPEC §4): softmax regression `Linear(F → C)` on frozen features, trained
//! with Adam and cross-entropy, on the host.
//!
//! Training is single-threaded on purpose: the result is bit-reproducible for a given seed,
//! whatever the number of threads (100 epochs over 50,000 × 64 CIFAR features take a few
//! seconds). Evaluation passes are parallel (rows are independent).

use rand::seq::SliceRandom;
use rayon::prelude::*;

use crate::ops::matmul::{matmul, MatMut, MatRef, Threads};
use crate::optim::{adam_update, AdamParams};

use super::features::FeatureSet;
use super::{EvalError, ProgressEvent, Result};
use crate::config::EvalConfig;
use crate::rng::{rng_for, Stream};

/// Hyper-parameters of the linear probe. `Default` = SPEC §4 (Adam lr 1e-3, betas
/// (0.9, 0.999), eps 1e-8, 100 epochs, batch 128), seed 1.
#[derive(Clone, Debug, PartialEq)]
pub struct LinearProbeConfig {
    pub epochs: usize,
    pub batch: usize,
    pub lr: f32,
    pub beta1: f32,
    pub beta2: f32,
    pub eps: f32,
    /// Seeds the initialisation and the per-epoch shuffles.
    pub seed: u64,
}

impl Default for LinearProbeConfig {
    fn default() -> Self {
        Self {
            epochs: 100,
            batch: 128,
            lr: 1e-3,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            seed: 1,
        }
    }
}

impl LinearProbeConfig {
    /// Epochs, batch and lr from the experiment's [`EvalConfig`]; Adam's betas and eps at
    /// PyTorch's defaults.
    pub fn from_eval(cfg: &EvalConfig, seed: u64) -> Self {
        Self {
            epochs: cfg.linear_epochs,
            batch: cfg.linear_batch,
            lr: cfg.linear_lr as f32,
            seed,
            ..Self::default()
        }
    }

    fn check(&self) -> Result<()> {
        let bad =
            |what: &str, v: String| Err(EvalError::invalid(format!("linear probe {what}"), v));
        if self.epochs == 0 {
            return bad("epochs", "0: must be at least 1".into());
        }
        if self.batch == 0 {
            return bad("batch", "0: must be at least 1".into());
        }
        if !(self.lr.is_finite() && self.lr > 0.0) {
            return bad("lr", format!("{}: must be finite and > 0", self.lr));
        }
        for (k, b) in [("beta1", self.beta1), ("beta2", self.beta2)] {
            if !(0.0..1.0).contains(&b) {
                return bad(k, format!("{b}: must lie in [0, 1)"));
            }
        }
        if !(self.eps.is_finite() && self.eps > 0.0) {
            return bad("eps", format!("{}: must be finite and > 0", self.eps));
        }
        Ok(())
    }
}

/// A trained linear classifier `z = W x + b`.
#[derive(Clone, Debug, PartialEq)]
pub struct LinearClassifier {
    /// Input width F.
    pub dim: usize,
    /// Number of classes C.
    pub classes: usize,
    /// `C × F`, row-major (PyTorch `nn.Linear.weight` layout).
    pub weight: Vec<f32>,
    /// `C` values.
    pub bias: Vec<f32>,
}

impl LinearClassifier {
    /// PyTorch's `nn.Linear` initialisation: weight and bias uniform in `±1/√F`.
    pub fn init(dim: usize, classes: usize, rng: &mut impl rand::Rng) -> Self {
        let bound = 1.0 / (dim as f32).sqrt();
        let mut u = || rng.gen_range(-bound..bound);
        let weight = (0..classes * dim).map(|_| u()).collect();
        let bias = (0..classes).map(|_| u()).collect();
        Self {
            dim,
            classes,
            weight,
            bias,
        }
    }

    /// Logits of `m` rows.
    ///
    /// # Shapes
    /// `x`: `m × F` row-major → `m × C` row-major.
    pub fn logits(&self, x: &[f32], m: usize) -> Vec<f32> {
        let mut z = vec![0f32; m * self.classes];
        self.logits_into(x, m, &mut z);
        z
    }

    fn logits_into(&self, x: &[f32], m: usize, z: &mut [f32]) {
        let (f, c) = (self.dim, self.classes);
        for row in z.chunks_exact_mut(c) {
            row.copy_from_slice(&self.bias);
        }
        // z (m×C) += x (m×F) · Wᵀ (F×C); Wᵀ[f][c] = W[c·F + f].
        matmul(
            (m, c, f),
            MatMut::new(z, c, 1),
            true,
            MatRef::new(x, f, 1),
            MatRef::new(&self.weight, 1, f),
            Threads::One,
        );
    }

    /// Top-1 accuracy (fraction) and mean cross-entropy on a feature set.
    /// A tie between logits goes to the lowest class index.
    pub fn evaluate(&self, set: &FeatureSet) -> Result<(f32, f32)> {
        if set.dim != self.dim {
            return Err(EvalError::invalid(
                "linear probe evaluation",
                format!(
                    "features have dim {}, the classifier reads {}",
                    set.dim, self.dim
                ),
            ));
        }
        if let Some(&l) = set.labels.iter().find(|&&l| l as usize >= self.classes) {
            return Err(EvalError::invalid(
                "linear probe evaluation",
                format!(
                    "label {l} is not < the classifier's {} classes",
                    self.classes
                ),
            ));
        }
        if set.n == 0 {
            return Err(EvalError::invalid(
                "linear probe evaluation",
                "empty feature set",
            ));
        }
        const CHUNK: usize = 1024;
        let (correct, loss) = set
            .data
            .par_chunks(CHUNK * set.dim)
            .zip(set.labels.par_chunks(CHUNK))
            .map(|(x, y)| {
                let m = y.len();
                let z = self.logits(x, m);
                let mut correct = 0usize;
                let mut loss = 0f64;
                for (row, &label) in z.chunks_exact(self.classes).zip(y) {
                    let (l, argmax) = softmax_ce_row(row, label as usize);
                    loss += l as f64;
                    correct += (argmax == label as usize) as usize;
                }
                (correct, loss)
            })
            .reduce(|| (0, 0.0), |a, b| (a.0 + b.0, a.1 + b.1));
        Ok((correct as f32 / set.n as f32, (loss / set.n as f64) as f32))
    }
}

/// Cross-entropy `log Σ exp z − z_y` of one logit row and its arg-max (lowest index on ties).
fn softmax_ce_row(z: &[f32], y: usize) -> (f32, usize) {
    let mut argmax = 0;
    for (j, &v) in z.iter().enumerate() {
        if v > z[argmax] {
            argmax = j;
        }
    }
    let max = z[argmax];
    let sum: f32 = z.iter().map(|&v| (v - max).exp()).sum();
    (sum.ln() - (z[y] - max), argmax)
}

/// Per-epoch statistics of [`train_linear`].
#[derive(Clone, Debug, PartialEq)]
pub struct EpochStats {
    /// Mean cross-entropy over the epoch's minibatches (weighted by batch size).
    pub loss: f32,
    /// Fraction of the epoch's training rows classified correctly before their update step.
    pub acc: f32,
}

fn check_inputs(train: &FeatureSet, classes: usize) -> Result<()> {
    train.check()?;
    if train.n == 0 {
        return Err(EvalError::invalid("linear probe", "no training rows"));
    }
    if classes < 2 {
        return Err(EvalError::invalid(
            "linear probe",
            format!("classes = {classes}: need at least 2"),
        ));
    }
    if let Some(&l) = train.labels.iter().find(|&&l| l as usize >= classes) {
        return Err(EvalError::invalid(
            "linear probe",
            format!("training label {l} is not < classes = {classes}"),
        ));
    }
    Ok(())
}

/// Train `Linear(F → classes)` on `train` with softmax cross-entropy and Adam (PyTorch's update
/// rule, bias-corrected), minibatches of `cfg.batch` rows in an order reshuffled every epoch with
/// `rng_for(seed, Stream::Eval, epoch, 0)` (epoch 0-based; the last batch may be smaller).
/// Initialisation: [`LinearClassifier::init`] with `rng_for(seed, Stream::Eval, u64::MAX, 1)`.
///
/// Loss per batch: `L = (1/B) Σ_i [log Σ_c exp z_ic − z_{i,y_i}]`, `z = W x + b`.
///
/// # Shapes
/// `train`: `N × F` → classifier weight `C × F`, bias `C`.
pub fn train_linear(
    train: &FeatureSet,
    classes: usize,
    cfg: &LinearProbeConfig,
    progress: &mut dyn FnMut(ProgressEvent),
) -> Result<(LinearClassifier, Vec<EpochStats>)> {
    let mut init_rng = rng_for(cfg.seed, Stream::Eval, u64::MAX, 1);
    let init = LinearClassifier::init(train.dim, classes, &mut init_rng);
    train_linear_from(train, init, cfg, progress)
}

/// [`train_linear`] from a given initial classifier (whose `classes` is used); the seed still
/// drives the per-epoch shuffles.
pub fn train_linear_from(
    train: &FeatureSet,
    init: LinearClassifier,
    cfg: &LinearProbeConfig,
    progress: &mut dyn FnMut(ProgressEvent),
) -> Result<(LinearClassifier, Vec<EpochStats>)> {
    cfg.check()?;
    check_inputs(train, init.classes)?;
    if init.dim != train.dim
        || init.weight.len() != init.dim * init.classes
        || init.bias.len() != init.classes
    {
        return Err(EvalError::invalid(
            "linear probe initial classifier",
            format!(
                "dim {} / weight {} / bias {} values do not fit features of dim {} and {} classes",
                init.dim,
                init.weight.len(),
                init.bias.len(),
                train.dim,
                init.classes
            ),
        ));
    }
    let (n, f, c) = (train.n, train.dim, init.classes);
    let mut clf = init;

    let nw = c * f;
    let mut m = vec![0f32; nw + c];
    let mut v = vec![0f32; nw + c];
    let mut grad = vec![0f32; nw + c];
    let bmax = cfg.batch.min(n);
    let mut xb = vec![0f32; bmax * f];
    let mut z = vec![0f32; bmax * c];
    let mut order: Vec<u32> = (0..n as u32).collect();
    let mut stats = Vec::with_capacity(cfg.epochs);
    let mut t = 0i32;

    for epoch in 0..cfg.epochs {
        let mut rng = rng_for(cfg.seed, Stream::Eval, epoch as u64, 0);
        order.shuffle(&mut rng);
        let mut loss_sum = 0f64;
        let mut correct = 0usize;
        for idx in order.chunks(cfg.batch) {
            let b = idx.len();
            for (dst, &i) in xb.chunks_exact_mut(f).zip(idx) {
                dst.copy_from_slice(train.row(i as usize));
            }
            let xb = &xb[..b * f];
            let z = &mut z[..b * c];
            clf.logits_into(xb, b, z);
            // Softmax, loss, and dL/dz = (softmax − onehot)/B in place.
            let inv_b = 1.0 / b as f32;
            let (gw, gb) = grad.split_at_mut(nw);
            gb.fill(0.0);
            for (row, &i) in z.chunks_exact_mut(c).zip(idx) {
                let y = train.labels[i as usize] as usize;
                let (l, argmax) = softmax_ce_row(row, y);
                loss_sum += l as f64;
                correct += (argmax == y) as usize;
                let max = row[argmax];
                let mut sum = 0f32;
                for v in row.iter_mut() {
                    *v = (*v - max).exp();
                    sum += *v;
                }
                let k = inv_b / sum;
                for (j, v) in row.iter_mut().enumerate() {
                    *v *= k;
                    if j == y {
                        *v -= inv_b;
                    }
                    gb[j] += *v;
                }
            }
            // dW (C×F) = Gᵀ (C×B) · X (B×F); Gᵀ[c][i] = G[i·C + c].
            matmul(
                (c, f, b),
                MatMut::new(gw, f, 1),
                false,
                MatRef::new(z, 1, c),
                MatRef::new(xb, f, 1),
                Threads::One,
            );
            t += 1;
            adam_step(&mut clf, &grad, &mut m, &mut v, cfg, t);
        }
        let loss = (loss_sum / n as f64) as f32;
        if !loss.is_finite() {
            return Err(EvalError::invalid(
                "linear probe",
                format!("training loss became {loss} in epoch {}", epoch + 1),
            ));
        }
        stats.push(EpochStats {
            loss,
            acc: correct as f32 / n as f32,
        });
        progress(ProgressEvent::LinearEpoch {
            epoch: epoch + 1,
            epochs: cfg.epochs,
            loss,
        });
    }
    Ok((clf, stats))
}

/// One Adam step ([`crate::optim::adam_update`], no weight decay) of `[weight, bias]`, whose
/// gradients and moments are flattened in that order.
fn adam_step(
    clf: &mut LinearClassifier,
    grad: &[f32],
    m: &mut [f32],
    v: &mut [f32],
    cfg: &LinearProbeConfig,
    t: i32,
) {
    let h = AdamParams {
        lr: cfg.lr,
        beta1: cfg.beta1,
        beta2: cfg.beta2,
        eps: cfg.eps,
        weight_decay: 0.0,
    };
    let nw = clf.weight.len();
    let (gw, gb) = grad.split_at(nw);
    let (mw, mb) = m.split_at_mut(nw);
    let (vw, vb) = v.split_at_mut(nw);
    adam_update(&mut clf.weight, gw, mw, vw, &h, t);
    adam_update(&mut clf.bias, gb, mb, vb, &h, t);
}

/// Outcome of [`linear_probe`]. Accuracies are fractions in `[0, 1]`.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct LinearProbeResult {
    /// Top-1 accuracy on the test features.
    pub acc: f32,
    /// Mean cross-entropy on the test features.
    pub test_loss: f32,
    /// Mean minibatch cross-entropy over the last training epoch.
    pub final_train_loss: f32,
    /// Top-1 accuracy of the final classifier on all training features.
    pub train_acc: f32,
    pub epochs: usize,
    /// Input width of the probe (`(n + 1)·F` for the patch-concatenated probe).
    pub dim: usize,
    pub classes: usize,
    /// Mean training loss of every epoch.
    pub loss_history: Vec<f32>,
}

/// Linear evaluation: train [`train_linear`] on `train`, report top-1 on `test`.
/// The number of classes is the larger of the two sets' `classes`.
///
/// # Shapes
/// `train`: `N × F`, `test`: `M × F`.
pub fn linear_probe(
    train: &FeatureSet,
    test: &FeatureSet,
    cfg: &LinearProbeConfig,
    progress: &mut dyn FnMut(ProgressEvent),
) -> Result<LinearProbeResult> {
    test.check()?;
    if test.dim != train.dim {
        return Err(EvalError::invalid(
            "linear probe",
            format!(
                "train features have dim {}, test features {}",
                train.dim, test.dim
            ),
        ));
    }
    let classes = train.classes.max(test.classes);
    let (clf, stats) = train_linear(train, classes, cfg, progress)?;
    let (acc, test_loss) = clf.evaluate(test)?;
    let (train_acc, _) = clf.evaluate(train)?;
    Ok(LinearProbeResult {
        acc,
        test_loss,
        final_train_loss: stats.last().map(|s| s.loss).unwrap_or(f32::NAN),
        train_acc,
        epochs: cfg.epochs,
        dim: train.dim,
        classes,
        loss_history: stats.iter().map(|s| s.loss).collect(),
    })
}
