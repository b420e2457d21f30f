//! The whole evaluation of one backbone (SPEC §4) in one call: features once (optionally
//! cached on disk), the linear probe for every requested patch count n (n = 0 first), and kNN
//! on the plain features.

use std::time::Instant;

use dfdx::prelude::Device;

use super::features::{
    extract_features, extract_windows, grid_positions, probe_features, FeatureCache, FeatureSet,
    GridFeatures,
};
use super::knn::{knn_classify, KnnConfig};
use super::linear::{linear_probe, LinearProbeConfig};
use super::results::EvalResult;
use super::{ProgressEvent, Result};
use crate::augment::Normalize;
use crate::config::{PatchGeometry, ValidConfig};
use crate::data::ImageDataset;
use crate::files::slug;
use crate::models::Backbone;

/// What [`evaluate_backbone`] runs: the one evaluation plan of the crate (the CLI's `eval`,
/// a job's cells and the notebooks build it with [`EvalPlan::from_config`] and adjust it).
#[derive(Clone, Debug, PartialEq)]
pub struct EvalPlan {
    /// Image side S (the backbone input) and window side p of the patch grid: the run's
    /// resolved geometry.
    pub geometry: PatchGeometry,
    /// Images per forward pass during feature extraction.
    pub extract_batch: usize,
    /// The linear probe (epochs, batch, lr, Adam, seed); `None`: no linear probe.
    pub linear: Option<LinearProbeConfig>,
    /// Patch counts n of the linear probe (0 = the plain feature; SPEC §4).
    pub probe_patches: Vec<usize>,
    /// kNN (k, temperature); `None`: no kNN.
    pub knn: Option<KnnConfig>,
}

impl EvalPlan {
    /// What a run's config asks for: the linear probe (`eval.linear_*`, seeded with
    /// `train.seed`) for every n of `eval.probe_patches`, kNN (`eval.knn_*`), on the run's
    /// geometry, 256 images per forward pass.
    pub fn from_config(cfg: &ValidConfig) -> Self {
        Self {
            geometry: cfg.geometry,
            extract_batch: 256,
            linear: Some(LinearProbeConfig::from_eval(&cfg.eval, cfg.train.seed)),
            probe_patches: cfg.eval.probe_patches.clone(),
            knn: Some(KnnConfig::from_eval(&cfg.eval)),
        }
    }

    /// The same plan with the linear probe on the plain feature only (n = 0): the probes of
    /// the arms that are not SR (n > 0 probes are SR's evaluation).
    pub fn plain_only(mut self) -> Self {
        self.probe_patches.retain(|&n| n == 0);
        self
    }

    /// The linear probe's patch counts that run: sorted, without repeats; none without a linear
    /// probe.
    pub fn linear_patches(&self) -> Vec<usize> {
        if self.linear.is_none() {
            return vec![];
        }
        let mut ns = self.probe_patches.clone();
        ns.sort_unstable();
        ns.dedup();
        ns
    }
}

/// Where and under which tag features are cached; the tag must identify the backbone weights
/// (e.g. the checkpoint file and its step), since a stale tag forces recomputation.
#[derive(Clone, Copy, Debug)]
pub struct CacheSpec<'a> {
    pub cache: &'a FeatureCache,
    pub tag: &'a str,
}

fn full_features<D: Device<f32>, B: Backbone<D>>(
    backbone: &B,
    dev: &D,
    ds: &ImageDataset,
    norm: &Normalize,
    plan: &EvalPlan,
    cache: Option<CacheSpec>,
    progress: &mut dyn FnMut(ProgressEvent),
) -> Result<FeatureSet> {
    let compute = |progress: &mut dyn FnMut(ProgressEvent)| {
        extract_features(
            backbone,
            dev,
            ds,
            norm,
            plan.geometry.image(),
            plan.extract_batch,
            progress,
        )
    };
    match cache {
        None => compute(progress),
        Some(c) => {
            let key = format!(
                "{}-{}-s{}-full",
                slug(&ds.name),
                slug(&ds.split),
                plan.geometry.image()
            );
            c.cache.get_or_compute(&key, c.tag, || compute(progress))
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn grid_features<D: Device<f32>, B: Backbone<D>>(
    backbone: &B,
    dev: &D,
    ds: &ImageDataset,
    norm: &Normalize,
    plan: &EvalPlan,
    ns: &[usize],
    cache: Option<CacheSpec>,
    progress: &mut dyn FnMut(ProgressEvent),
) -> Result<GridFeatures> {
    let mut grid = GridFeatures {
        geometry: plan.geometry,
        windows: Default::default(),
    };
    let mut positions = vec![];
    for &n in ns {
        for pos in grid_positions(&plan.geometry, n)? {
            if !positions.contains(&pos) {
                positions.push(pos);
            }
        }
    }
    let mut missing = vec![];
    for pos in positions {
        let key = window_key(ds, plan, pos);
        match cache {
            Some(spec) => match spec.cache.load(&key, spec.tag)? {
                Some(set) => {
                    grid.windows.insert(pos, set);
                }
                None => missing.push(pos),
            },
            None => missing.push(pos),
        }
    }
    if !missing.is_empty() {
        let fresh = extract_windows(
            backbone,
            dev,
            ds,
            norm,
            &plan.geometry,
            &missing,
            plan.extract_batch,
            progress,
        )?;
        for (pos, set) in fresh.windows {
            if let Some(spec) = cache {
                spec.cache
                    .store(&window_key(ds, plan, pos), spec.tag, &set)?;
            }
            grid.windows.insert(pos, set);
        }
    }
    Ok(grid)
}

fn window_key(ds: &ImageDataset, plan: &EvalPlan, (r, c): (usize, usize)) -> String {
    format!(
        "{}-{}-s{}-p{}-r{r}-c{c}",
        slug(&ds.name),
        slug(&ds.split),
        plan.geometry.image(),
        plan.geometry.patch()
    )
}

/// Evaluate a frozen backbone: extract (or load from `cache`) the plain features of `train`
/// and `test`, and the grid-window features when some n > 0 is asked; run the linear probe for
/// every n of `plan.probe_patches` (n = 0 first, then ascending), then kNN on the plain
/// features when `plan.knn` is set. The backbone is not modified.
///
/// # Shapes
/// per forward pass `(extract_batch, 3, input_size, input_size)` → `(extract_batch, F)`;
/// probe inputs `N × (n + 1)·F`.
#[allow(clippy::too_many_arguments)]
pub fn evaluate_backbone<D: Device<f32>, B: Backbone<D>>(
    backbone: &B,
    dev: &D,
    train: &ImageDataset,
    test: &ImageDataset,
    norm: &Normalize,
    plan: &EvalPlan,
    cache: Option<CacheSpec>,
    progress: &mut dyn FnMut(ProgressEvent),
) -> Result<Vec<EvalResult>> {
    let ns = plan.linear_patches();
    let ftr = full_features(backbone, dev, train, norm, plan, cache, progress)?;
    let fte = full_features(backbone, dev, test, norm, plan, cache, progress)?;
    let patch_ns: Vec<usize> = ns.iter().copied().filter(|&n| n > 0).collect();
    let grids = if patch_ns.is_empty() {
        None
    } else {
        Some((
            grid_features(backbone, dev, train, norm, plan, &patch_ns, cache, progress)?,
            grid_features(backbone, dev, test, norm, plan, &patch_ns, cache, progress)?,
        ))
    };
    let mut results = vec![];
    for &n in &ns {
        let probe_cfg = plan
            .linear
            .as_ref()
            .expect("no patch counts without a linear probe");
        let (a, b) = match (&grids, n) {
            (_, 0) => (ftr.clone(), fte.clone()),
            (Some((gtr, gte)), n) => (probe_features(&ftr, gtr, n)?, probe_features(&fte, gte, n)?),
            (None, _) => unreachable!("grids exist whenever some n > 0"),
        };
        let t = Instant::now();
        let r = linear_probe(&a, &b, probe_cfg, progress)?;
        results.push(EvalResult::from_linear(
            &r,
            n,
            a.n,
            b.n,
            t.elapsed().as_secs_f64(),
        ));
    }
    if let Some(knn) = &plan.knn {
        let t = Instant::now();
        let r = knn_classify(&ftr, &fte, knn, progress)?;
        results.push(EvalResult::from_knn(&r, ftr.dim, t.elapsed().as_secs_f64()));
    }
    Ok(results)
}
