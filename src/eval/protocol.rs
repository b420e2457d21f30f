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
use crate::config::EvalConfig;
use crate::data::ImageDataset;
use crate::models::Backbone;

/// What [`evaluate_backbone`] runs.
#[derive(Clone, Debug, PartialEq)]
pub struct EvalPlan {
    /// Side of the backbone input.
    pub input_size: usize,
    /// Window side p of the patch grid, in original-image pixels (SPEC default
    /// `config::default_patch_size(S)`); unused when `cfg.probe_patches` is only `[0]`.
    pub patch_size: usize,
    /// Images per forward pass during feature extraction.
    pub extract_batch: usize,
    /// Seed of the linear probe (init and shuffles).
    pub seed: u64,
    /// Probe epochs, batch, lr, kNN k and T, and the patch counts n.
    pub cfg: EvalConfig,
    /// Also run kNN on the plain features.
    pub knn: bool,
}

/// Where and under which tag features are cached; the tag must identify the backbone weights
/// (e.g. the checkpoint file and its step), since a stale tag forces recomputation.
#[derive(Clone, Copy, Debug)]
pub struct CacheSpec<'a> {
    pub cache: &'a FeatureCache,
    pub tag: &'a str,
}

fn key_part(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect()
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
            plan.input_size,
            plan.extract_batch,
            progress,
        )
    };
    match cache {
        None => compute(progress),
        Some(c) => {
            let key = format!(
                "{}-{}-s{}-full",
                key_part(&ds.name),
                key_part(&ds.split),
                plan.input_size
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
        image_size: ds.height,
        patch_size: plan.patch_size,
        windows: Default::default(),
    };
    let mut positions = vec![];
    for &n in ns {
        for pos in grid_positions(ds.height, plan.patch_size, n)? {
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
            plan.input_size,
            plan.patch_size,
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
        key_part(&ds.name),
        key_part(&ds.split),
        plan.input_size,
        plan.patch_size
    )
}

/// Evaluate a frozen backbone: extract (or load from `cache`) the plain features of `train`
/// and `test`, and the grid-window features when some n > 0 is asked; run the linear probe for
/// every n of `plan.cfg.probe_patches` (n = 0 first, then ascending), then kNN on the plain
/// features when `plan.knn`. The backbone is not modified.
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
    let mut ns = plan.cfg.probe_patches.clone();
    ns.sort_unstable();
    ns.dedup();
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
    let probe_cfg = LinearProbeConfig::from_eval(&plan.cfg, plan.seed);
    let mut results = vec![];
    for &n in &ns {
        let (a, b) = match (&grids, n) {
            (_, 0) => (ftr.clone(), fte.clone()),
            (Some((gtr, gte)), n) => (probe_features(&ftr, gtr, n)?, probe_features(&fte, gte, n)?),
            (None, _) => unreachable!("grids exist whenever some n > 0"),
        };
        let t = Instant::now();
        let r = linear_probe(&a, &b, &probe_cfg, progress)?;
        results.push(EvalResult::from_linear(
            &r,
            n,
            a.n,
            b.n,
            t.elapsed().as_secs_f64(),
        ));
    }
    if plan.knn {
        let t = Instant::now();
        let r = knn_classify(&ftr, &fte, &KnnConfig::from_eval(&plan.cfg), progress)?;
        results.push(EvalResult::from_knn(&r, ftr.dim, t.elapsed().as_secs_f64()));
    }
    Ok(results)
}
