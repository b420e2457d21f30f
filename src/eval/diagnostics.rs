//! Does the spatial task learn? Cheap diagnostics measured on every pretraining run at each
//! epoch end (and once for a random-init backbone), logged in `metrics.jsonl`'s epoch rows.
//!
//! - **Offset quality** (SR runs only): on a fixed set of patch pairs drawn once from the *test*
//!   split, the relation head's predicted offsets `(d̂row, d̂col)` against the true ones
//!   ([`crate::augment::offset_target`]): Pearson r and R² per axis.
//! - **Position in the features** (every arm): a ridge regressor from the frozen pair features
//!   `[f(a), f(b)]` (2F values) to the offset, fit on the same number of pairs drawn from the
//!   *training* split and scored (R², r) on the test pairs. It asks whether the backbone's features
//!   carry where a patch was cut, independently of the head, so RR and random-init backbones can be
//!   compared with SR's.
//! - **Online kNN**: weighted kNN accuracy ([`super::knn_classify`], `eval.knn_k`,
//!   `eval.knn_temperature`) of a fixed subset of the test split against a fixed subset of the
//!   training split.
//!
//! The pairs and subsets depend only on `diagnostics.seed`, never on the training seed, so every
//! arm and seed of a study is measured on the same images and the same patch positions. Pairs use
//! the run's geometry: patch side `p`, overlap rule and patch mode (zoom or additive); colour
//! augmentation is off, as at evaluation. A pair is the first two patches the run's sampler draws
//! for an image; with `P > 2` the others are not used.
//!
//! Everything runs in evaluation mode (running batch-norm statistics, no tape): the model is not
//! changed, and the training run's random streams are not touched, so a run with diagnostics on
//! trains bit-identically to one with them off.

use std::time::Instant;

use dfdx::prelude::*;
use rand::seq::index::sample;
use serde::{Deserialize, Serialize};

use super::features::{extract_features, run_backbone};
use super::knn::{knn_classify, KnnConfig};
use super::{EvalError, Result};
use crate::augment::{
    offset_target, ColorParams, Normalize, PatchAugment, PatchParams, PatchPos, PatchSampler,
};
use crate::config::ValidConfig;
use crate::data::ImageDataset;
use crate::method::RelationHead;
use crate::models::{Backbone, FEATURES};

/// Width of a pair's features `[f(a), f(b)]`, the ridge probe's input.
const PAIR_FEATURES: usize = 2 * FEATURES;
use crate::rng::{rng_for, Stream};

/// Pearson correlation and coefficient of determination of predictions against targets, per
/// axis (`[row, col]`).
///
/// `r2 = 1 − Σ(ŷ − y)² / Σ(y − ȳ)²` (negative when the predictions are worse than the targets'
/// mean); `r` is NaN when either side is constant.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct AxisFit {
    pub r: [f64; 2],
    pub r2: [f64; 2],
}

/// `(true, predicted)` offsets `(Δrow, Δcol)` of the relation head, one entry per test pair.
pub type OffsetPairs = Vec<([f32; 2], [f32; 2])>;

/// One measurement of a backbone (and head).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Diagnostics {
    /// The relation head's offsets on the test pairs (SR runs; `None` for RR and random-init).
    pub offset: Option<AxisFit>,
    /// The ridge regressor from pair features to offsets, scored on the test pairs.
    pub position: AxisFit,
    /// Online kNN accuracy in [0, 1] (`None` when the pretraining split has no labels).
    pub knn_acc: Option<f64>,
    /// Wall time of the measurement.
    pub seconds: f64,
    /// `(true, predicted)` offsets of the head on the test pairs, for a scatter plot (SR runs).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub predictions: OffsetPairs,
}

/// Patch pairs of one split: how to render them, and their targets.
#[derive(Clone, Debug)]
struct PairSet {
    /// `(image index, first patch, second patch)`.
    pairs: Vec<(usize, PatchParams, PatchParams)>,
    /// `(Δrow, Δcol)` targets, one per pair.
    targets: Vec<[f32; 2]>,
}

/// The fixed inputs of the diagnostics of one run, drawn once ([`Probe::prepare`]).
#[derive(Clone, Debug)]
pub struct Probe {
    input_size: usize,
    patch: usize,
    aug: PatchAugment,
    norm: Normalize,
    train_pairs: PairSet,
    test_pairs: PairSet,
    /// kNN subsets (`None` without labels).
    knn: Option<(ImageDataset, ImageDataset)>,
    knn_cfg: KnnConfig,
    /// Test images for the pairs (the images themselves, so the probe owns its data).
    test_images: ImageDataset,
    train_images: ImageDataset,
}

/// Draw `n` distinct indices below `len` (all of them, in order, when `n ≥ len`).
fn pick(len: usize, n: usize, seed: u64, what: u64) -> Vec<usize> {
    if n >= len {
        return (0..len).collect();
    }
    let mut v = sample(&mut rng_for(seed, Stream::Other, what, 0), len, n).into_vec();
    v.sort_unstable();
    v
}

impl Probe {
    /// Draw the pairs and subsets for a run of `cfg` on `train` (the pretraining split) and
    /// `test` (the test split), normalised with `norm`. `None` when `diagnostics.enabled` is off.
    ///
    /// Errors: a split without images, images of a size the run's patch geometry does not fit.
    pub fn prepare(
        cfg: &ValidConfig,
        train: &ImageDataset,
        test: &ImageDataset,
        norm: &Normalize,
    ) -> Result<Option<Probe>> {
        let d = &cfg.diagnostics;
        if !d.enabled {
            return Ok(None);
        }
        for ds in [train, test] {
            if ds.is_empty() {
                return Err(EvalError::invalid(
                    format!("diagnostics: {}/{}", ds.name, ds.split),
                    "no images",
                ));
            }
        }
        // The run's geometry with two patches (one pair per image). RR runs keep the config's
        // patch side, mode and overlap rule, so their features are probed on the same pairs as
        // SR's.
        let geometry = cfg
            .geometry
            .pair()
            .map_err(|m| EvalError::invalid("diagnostics: two patches per image", m.to_string()))?;
        let (side, p) = (geometry.image(), geometry.patch());
        for ds in [train, test] {
            if (ds.height, ds.width) != (side, side) {
                return Err(EvalError::invalid(
                    format!("diagnostics: {}/{}", ds.name, ds.split),
                    format!(
                        "{}×{} images, the run's geometry is for {side}×{side}",
                        ds.height, ds.width
                    ),
                ));
            }
        }
        let sampler = PatchSampler::for_geometry(&geometry);
        let aug = PatchAugment::new(cfg.method.patch_mode, side, p, *norm)
            .map_err(|e| EvalError::invalid("diagnostics: patch geometry", e.to_string()))?;
        let draw = |ds: &ImageDataset, what: u64| -> (ImageDataset, PairSet) {
            let idx = pick(ds.len(), d.pairs, d.seed, what);
            let images = ds.subset(&idx);
            let mut pairs = Vec::with_capacity(idx.len());
            let mut targets = Vec::with_capacity(idx.len());
            for (k, &i) in idx.iter().enumerate() {
                let mut rng = rng_for(d.seed, Stream::Patches, what, i as u64);
                let pos = sampler.sample(&mut rng);
                let params = |at: PatchPos, rng: &mut crate::rng::Rng| PatchParams {
                    color: ColorParams {
                        jitter: None,
                        gray: false,
                    },
                    ..aug.sample_params(rng, at, p)
                };
                let (a, b) = (params(pos[0], &mut rng), params(pos[1], &mut rng));
                let t = offset_target(pos[0], pos[1], side, p);
                pairs.push((k, a, b));
                targets.push([t.0, t.1]);
            }
            (images, PairSet { pairs, targets })
        };
        let (train_images, train_pairs) = draw(train, 1);
        let (test_images, test_pairs) = draw(test, 2);
        let knn = match (&train.labels, &test.labels) {
            (Some(_), Some(_)) => Some((
                train.subset(&pick(train.len(), d.knn_train, d.seed, 3)),
                test.subset(&pick(test.len(), d.knn_test, d.seed, 4)),
            )),
            _ => None,
        };
        Ok(Some(Probe {
            input_size: side,
            patch: p,
            aug,
            norm: *norm,
            train_pairs,
            test_pairs,
            knn,
            knn_cfg: KnnConfig::from_eval(&cfg.eval),
            test_images,
            train_images,
        }))
    }

    /// Number of test pairs.
    pub fn pairs(&self) -> usize {
        self.test_pairs.targets.len()
    }

    /// Pair features `[f(a), f(b)]` of a pair set: `n × 2F`, row-major.
    fn pair_features<D: Device<f32>, B: Backbone<D>>(
        &self,
        backbone: &B,
        dev: &D,
        images: &ImageDataset,
        set: &PairSet,
    ) -> Result<Vec<f32>> {
        let (h, w) = (images.height, images.width);
        let s = self.input_size;
        let feats = run_backbone(
            backbone,
            dev,
            2 * set.pairs.len(),
            s,
            256,
            "diagnostics patches",
            |i, out| {
                let (img, a, b) = &set.pairs[i / 2];
                let p = if i % 2 == 0 { a } else { b };
                let src = crate::augment::Source::U8Hwc {
                    data: images.image(*img),
                    height: h,
                    width: w,
                };
                let mut scratch = crate::augment::patches::PatchScratch::default();
                self.aug.apply_into(&src, self.patch, p, out, &mut scratch);
            },
            &mut |_| {},
        )?;
        // Items 2k and 2k + 1 are pair k's patches: the rows are already [f(a), f(b)].
        debug_assert_eq!(feats.len(), set.pairs.len() * PAIR_FEATURES);
        Ok(feats)
    }

    /// Measure `backbone` (and, for an SR model, its 3-output `head`) on the probe. A head with
    /// one output (RR) gives no offsets; pass `None` for a backbone alone.
    ///
    /// # Shapes
    /// patches `(2·pairs, 3, S, S)` → features `(2·pairs, F)` → pair features `(pairs, 2F)`
    /// (the ridge probe's input); the head reads the pairs aggregated its own way →
    /// `(pairs, 3)`.
    pub fn measure<D: Device<f32>, B: Backbone<D>>(
        &self,
        backbone: &B,
        head: Option<&RelationHead<f32, D>>,
        dev: &D,
    ) -> Result<Diagnostics> {
        let started = Instant::now();
        let train_x = self.pair_features(backbone, dev, &self.train_images, &self.train_pairs)?;
        let test_x = self.pair_features(backbone, dev, &self.test_images, &self.test_pairs)?;
        let pred = ridge_fit_predict(&train_x, &self.train_pairs.targets, &test_x, PAIR_FEATURES);
        let position = axis_fit(&pred, &self.test_pairs.targets);

        let mut offset = None;
        let mut predictions = Vec::new();
        if let Some(head) = head.filter(|h| h.outputs() == 3) {
            let n = self.test_pairs.targets.len();
            // Rows are [f(a), f(b)]: the left and right features of each pair.
            let (mut a, mut b) = (
                Vec::with_capacity(n * FEATURES),
                Vec::with_capacity(n * FEATURES),
            );
            for row in test_x.chunks_exact(PAIR_FEATURES) {
                a.extend_from_slice(&row[..FEATURES]);
                b.extend_from_slice(&row[FEATURES..]);
            }
            let tensor = |v: Vec<f32>| {
                dev.try_tensor_from_vec(v, (n, Const::<FEATURES>))
                    .map_err(|e| EvalError::device("diagnostics: pair features", e))
            };
            let out = head
                .forward_pairs_eval(tensor(a)?, tensor(b)?)
                .map_err(|e| EvalError::device("diagnostics: relation head", e))?
                .as_vec();
            let pred: Vec<[f32; 2]> = out.chunks_exact(3).map(|o| [o[0], o[1]]).collect();
            offset = Some(axis_fit(&pred, &self.test_pairs.targets));
            predictions = self.test_pairs.targets.iter().copied().zip(pred).collect();
        }

        let knn_acc = match &self.knn {
            Some((train, test)) => {
                let batch = 256;
                let f_train = extract_features(
                    backbone,
                    dev,
                    train,
                    &self.norm,
                    self.input_size,
                    batch,
                    &mut |_| {},
                )?;
                let f_test = extract_features(
                    backbone,
                    dev,
                    test,
                    &self.norm,
                    self.input_size,
                    batch,
                    &mut |_| {},
                )?;
                Some(knn_classify(&f_train, &f_test, &self.knn_cfg, &mut |_| {})?.acc as f64)
            }
            None => None,
        };
        Ok(Diagnostics {
            offset,
            position,
            knn_acc,
            seconds: started.elapsed().as_secs_f64(),
            predictions,
        })
    }
}

/// Pearson r and R² per axis of `pred` against `target`.
pub fn axis_fit(pred: &[[f32; 2]], target: &[[f32; 2]]) -> AxisFit {
    let mut r = [f64::NAN; 2];
    let mut r2 = [f64::NAN; 2];
    let n = pred.len().min(target.len()) as f64;
    for a in 0..2 {
        let p: Vec<f64> = pred.iter().map(|v| v[a] as f64).collect();
        let t: Vec<f64> = target.iter().map(|v| v[a] as f64).collect();
        let (mp, mt) = (p.iter().sum::<f64>() / n, t.iter().sum::<f64>() / n);
        let (mut spp, mut stt, mut spt, mut sres) = (0.0, 0.0, 0.0, 0.0);
        for (x, y) in p.iter().zip(&t) {
            spp += (x - mp) * (x - mp);
            stt += (y - mt) * (y - mt);
            spt += (x - mp) * (y - mt);
            sres += (x - y) * (x - y);
        }
        r[a] = spt / (spp * stt).sqrt();
        r2[a] = 1.0 - sres / stt;
    }
    AxisFit { r, r2 }
}

/// Ridge regression of `y` (2 outputs) on `x` (`dim` features) with an intercept, fit on the
/// training rows and evaluated on `x_test`. Features are standardised with the training rows'
/// mean and std (a constant feature is dropped); the penalty is `λ = 1e-3 · n` on the
/// standardised weights (not on the intercept), solved in f64 by Cholesky.
///
/// # Shapes
/// `x`: `n × dim`, `y`: `n × 2`, `x_test`: `m × dim` → `m × 2`.
pub fn ridge_fit_predict(x: &[f32], y: &[[f32; 2]], x_test: &[f32], dim: usize) -> Vec<[f32; 2]> {
    let n = y.len();
    let m = x_test.len() / dim;
    assert_eq!(x.len(), n * dim, "ridge: x is not n × dim");
    let nf = n as f64;
    let mean: Vec<f64> = (0..dim)
        .map(|j| (0..n).map(|i| x[i * dim + j] as f64).sum::<f64>() / nf)
        .collect();
    let std: Vec<f64> = (0..dim)
        .map(|j| {
            let v = (0..n)
                .map(|i| (x[i * dim + j] as f64 - mean[j]).powi(2))
                .sum::<f64>()
                / nf;
            v.sqrt()
        })
        .collect();
    let keep: Vec<usize> = (0..dim).filter(|&j| std[j] > 1e-12).collect();
    let k = keep.len();
    let z = |row: &[f32]| -> Vec<f64> {
        keep.iter()
            .map(|&j| (row[j] as f64 - mean[j]) / std[j])
            .collect()
    };
    let ymean = [0, 1].map(|a| y.iter().map(|v| v[a] as f64).sum::<f64>() / nf);
    // Normal equations on centred data: (ZᵀZ + λI) w = Zᵀ(y − ȳ).
    let mut g = vec![0f64; k * k];
    let mut b = vec![[0f64; 2]; k];
    for i in 0..n {
        let zi = z(&x[i * dim..(i + 1) * dim]);
        for p in 0..k {
            for q in 0..=p {
                g[p * k + q] += zi[p] * zi[q];
            }
            for a in 0..2 {
                b[p][a] += zi[p] * (y[i][a] as f64 - ymean[a]);
            }
        }
    }
    let lambda = 1e-3 * nf;
    for p in 0..k {
        g[p * k + p] += lambda;
        for q in 0..p {
            g[q * k + p] = g[p * k + q];
        }
    }
    let w = cholesky_solve(&mut g, k, &b);
    (0..m)
        .map(|i| {
            let zi = z(&x_test[i * dim..(i + 1) * dim]);
            [0, 1].map(|a| {
                (ymean[a] + zi.iter().zip(&w).map(|(v, wj)| v * wj[a]).sum::<f64>()) as f32
            })
        })
        .collect()
}

/// Solve `G w = b` for a symmetric positive definite `k × k` matrix `G` (overwritten by its
/// Cholesky factor `L`, lower triangle), two right-hand sides.
fn cholesky_solve(g: &mut [f64], k: usize, b: &[[f64; 2]]) -> Vec<[f64; 2]> {
    for j in 0..k {
        let d = (g[j * k + j] - (0..j).map(|p| g[j * k + p].powi(2)).sum::<f64>())
            .max(1e-300)
            .sqrt();
        g[j * k + j] = d;
        for i in j + 1..k {
            let s = g[i * k + j] - (0..j).map(|p| g[i * k + p] * g[j * k + p]).sum::<f64>();
            g[i * k + j] = s / d;
        }
    }
    let solve = |rhs: Vec<f64>| -> Vec<f64> {
        // L y = b (forward), then Lᵀ w = y (backward).
        let mut v = rhs;
        for i in 0..k {
            let s: f64 = (0..i).map(|p| g[i * k + p] * v[p]).sum();
            v[i] = (v[i] - s) / g[i * k + i];
        }
        for i in (0..k).rev() {
            let s: f64 = (i + 1..k).map(|p| g[p * k + i] * v[p]).sum();
            v[i] = (v[i] - s) / g[i * k + i];
        }
        v
    };
    let w0 = solve(b.iter().map(|r| r[0]).collect());
    let w1 = solve(b.iter().map(|r| r[1]).collect());
    w0.into_iter().zip(w1).map(|(a, b)| [a, b]).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn axis_fit_is_exact_on_known_values() {
        let t = [[0.0, 1.0], [1.0, 0.0], [2.0, 1.0], [3.0, 0.0]];
        // Perfect predictions: r = 1, R² = 1.
        let f = axis_fit(&t, &t);
        assert!((f.r[0] - 1.0).abs() < 1e-12 && (f.r2[0] - 1.0).abs() < 1e-12);
        // Predicting the mean: R² = 0, r undefined (constant prediction).
        let mean = [[1.5, 0.5]; 4];
        let f = axis_fit(&mean, &t);
        assert!(f.r2[0].abs() < 1e-12 && f.r[0].is_nan());
        // Mirrored, ŷ = 3 − y: r = −1, R² = 1 − Σ(3 − 2y)²/Σ(y − 1.5)² = 1 − 20/5 = −3.
        let neg: Vec<[f32; 2]> = t.iter().map(|v| [3.0 - v[0], v[1]]).collect();
        let f = axis_fit(&neg, &t);
        assert!((f.r[0] + 1.0).abs() < 1e-12, "{f:?}");
        assert!((f.r2[0] + 3.0).abs() < 1e-12, "{f:?}");
    }

    #[test]
    fn ridge_recovers_a_linear_map_and_ignores_noise_features() {
        use rand::Rng as _;
        let mut rng = rng_for(1, Stream::Other, 0, 0);
        let (n, dim) = (500, 6);
        let gen = |rng: &mut crate::rng::Rng, n: usize| {
            let x: Vec<f32> = (0..n * dim).map(|_| rng.gen_range(-1.0..1.0)).collect();
            let y: Vec<[f32; 2]> = (0..n)
                .map(|i| {
                    let r = &x[i * dim..(i + 1) * dim];
                    [0.5 * r[0] - 0.25 * r[1] + 0.1, 0.8 * r[2] - 0.3]
                })
                .collect();
            (x, y)
        };
        let (x, y) = gen(&mut rng, n);
        let (xt, yt) = gen(&mut rng, 200);
        let pred = ridge_fit_predict(&x, &y, &xt, dim);
        let f = axis_fit(&pred, &yt);
        // λ = 0.5 against ZᵀZ ≈ 500·I shrinks the weights by 0.1 %: R² ≥ 0.999.
        assert!(f.r2[0] > 0.999 && f.r2[1] > 0.999, "{f:?}");
        // Targets unrelated to the features: no skill on fresh rows.
        let noise: Vec<[f32; 2]> = (0..n)
            .map(|_| [rng.gen_range(-1.0..1.0), rng.gen_range(-1.0..1.0)])
            .collect();
        let noise_t: Vec<[f32; 2]> = (0..200)
            .map(|_| [rng.gen_range(-1.0..1.0), rng.gen_range(-1.0..1.0)])
            .collect();
        let f = axis_fit(&ridge_fit_predict(&x, &noise, &xt, dim), &noise_t);
        assert!(f.r2[0] < 0.05 && f.r2[1] < 0.05, "{f:?}");
    }
}
