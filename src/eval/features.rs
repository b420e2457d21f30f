//! Frozen features: extraction through a backbone in eval mode, patch-grid features for SR's
//! patch-concatenated probe, and an on-disk cache.
//!
//! # Feature file format (`*.feat`)
//!
//! Little-endian throughout:
//!
//! | offset | size | content |
//! |---|---|---|
//! | 0 | 8 | magic `SRFEAT01` |
//! | 8 | 8 | `n` (u64), number of rows |
//! | 16 | 8 | `dim` (u64), features per row |
//! | 24 | 8 | `classes` (u64) |
//! | 32 | 4 | `tag_len` (u32) |
//! | 36 | `tag_len` | tag, UTF-8 (what produced the features, e.g. the checkpoint) |
//! | 36 + `tag_len` | 4·n·dim | features, f32, row-major |
//! | … | 2·n | labels, u16 |
//!
//! The file size must match the header exactly; anything else is an error naming the file.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use dfdx::prelude::*;
use rayon::prelude::*;

use super::{EvalError, ProgressEvent, Result};
use crate::augment::color::normalize_planes;
use crate::augment::{eval_grid, resized_crop, Image, Normalize, Window};
use crate::config::PatchGeometry;
use crate::data::ImageDataset;
use crate::models::{Backbone, FEATURES};

/// A matrix of features with one label per row.
#[derive(Clone, Debug, PartialEq)]
pub struct FeatureSet {
    /// Number of rows.
    pub n: usize,
    /// Features per row.
    pub dim: usize,
    /// `n · dim` values, row-major.
    pub data: Vec<f32>,
    /// One label per row, each `< classes`.
    pub labels: Vec<u16>,
    /// Number of classes of the dataset the rows came from.
    pub classes: usize,
}

impl FeatureSet {
    /// Checked constructor (see [`FeatureSet::check`]).
    pub fn new(dim: usize, data: Vec<f32>, labels: Vec<u16>, classes: usize) -> Result<Self> {
        let set = Self {
            n: labels.len(),
            dim,
            data,
            labels,
            classes,
        };
        set.check()?;
        Ok(set)
    }

    /// Row `i`, `dim` values.
    pub fn row(&self, i: usize) -> &[f32] {
        &self.data[i * self.dim..(i + 1) * self.dim]
    }

    /// Error unless `data.len() = n·dim`, `labels.len() = n`, `dim ≥ 1`, `classes ≥ 1`, every
    /// label `< classes` and every feature finite.
    pub fn check(&self) -> Result<()> {
        if self.dim == 0 {
            return Err(EvalError::invalid("feature set", "dim = 0"));
        }
        if self.classes == 0 || self.classes > u16::MAX as usize + 1 {
            return Err(EvalError::invalid(
                "feature set",
                format!("classes = {} must lie in 1..=65536", self.classes),
            ));
        }
        if self.data.len() != self.n * self.dim {
            return Err(EvalError::invalid(
                "feature set",
                format!(
                    "{} values for n = {} rows of dim = {} (expected {})",
                    self.data.len(),
                    self.n,
                    self.dim,
                    self.n * self.dim
                ),
            ));
        }
        if self.labels.len() != self.n {
            return Err(EvalError::invalid(
                "feature set",
                format!("{} labels for n = {} rows", self.labels.len(), self.n),
            ));
        }
        if let Some((i, &l)) = self
            .labels
            .iter()
            .enumerate()
            .find(|(_, &l)| l as usize >= self.classes)
        {
            return Err(EvalError::invalid(
                "feature set",
                format!("label {l} of row {i} is not < classes = {}", self.classes),
            ));
        }
        if let Some(pos) = self.data.iter().position(|v| !v.is_finite()) {
            return Err(EvalError::invalid(
                "feature set",
                format!(
                    "feature {} of row {} is {} (not finite)",
                    pos % self.dim,
                    pos / self.dim,
                    self.data[pos]
                ),
            ));
        }
        Ok(())
    }

    /// Rows side by side: row `i` of the result is `[self.row(i), other.row(i)]`.
    /// Labels and `classes` must agree.
    pub fn hcat(&self, other: &FeatureSet) -> Result<FeatureSet> {
        if self.n != other.n || self.labels != other.labels || self.classes != other.classes {
            return Err(EvalError::invalid(
                "feature concatenation",
                format!(
                    "sets disagree: n {} vs {}, classes {} vs {}, labels equal: {}",
                    self.n,
                    other.n,
                    self.classes,
                    other.classes,
                    self.labels == other.labels
                ),
            ));
        }
        let dim = self.dim + other.dim;
        let mut data = Vec::with_capacity(self.n * dim);
        for i in 0..self.n {
            data.extend_from_slice(self.row(i));
            data.extend_from_slice(other.row(i));
        }
        Ok(FeatureSet {
            n: self.n,
            dim,
            data,
            labels: self.labels.clone(),
            classes: self.classes,
        })
    }

    /// Write to `path` in the `.feat` format (module docs) with a free-form `tag`. Writes a
    /// temporary file next to `path` and renames it, so a reader never sees half a file.
    pub fn save(&self, path: &Path, tag: &str) -> Result<()> {
        self.check()?;
        let mut bytes = Vec::with_capacity(36 + tag.len() + 4 * self.data.len() + 2 * self.n);
        bytes.extend_from_slice(MAGIC);
        bytes.extend_from_slice(&(self.n as u64).to_le_bytes());
        bytes.extend_from_slice(&(self.dim as u64).to_le_bytes());
        bytes.extend_from_slice(&(self.classes as u64).to_le_bytes());
        bytes.extend_from_slice(&(tag.len() as u32).to_le_bytes());
        bytes.extend_from_slice(tag.as_bytes());
        for v in &self.data {
            bytes.extend_from_slice(&v.to_le_bytes());
        }
        for l in &self.labels {
            bytes.extend_from_slice(&l.to_le_bytes());
        }
        let tmp = path.with_extension("feat.tmp");
        let mut f = std::fs::File::create(&tmp).map_err(|e| EvalError::io(&tmp, e))?;
        f.write_all(&bytes).map_err(|e| EvalError::io(&tmp, e))?;
        f.sync_all().map_err(|e| EvalError::io(&tmp, e))?;
        drop(f);
        std::fs::rename(&tmp, path).map_err(|e| EvalError::io(path, e))
    }

    /// Read a `.feat` file; returns the set and its tag.
    pub fn load(path: &Path) -> Result<(FeatureSet, String)> {
        let bytes = std::fs::read(path).map_err(|e| EvalError::io(path, e))?;
        let bad = |detail: String| EvalError::BadFile {
            path: path.to_path_buf(),
            detail,
        };
        if bytes.len() < 36 {
            return Err(bad(format!(
                "{} bytes, shorter than the 36-byte header",
                bytes.len()
            )));
        }
        if &bytes[..8] != MAGIC {
            return Err(bad(format!(
                "bad magic {:?} at byte offset 0 (expected SRFEAT01)",
                String::from_utf8_lossy(&bytes[..8])
            )));
        }
        let u64_at = |o: usize| u64::from_le_bytes(bytes[o..o + 8].try_into().unwrap());
        let (n, dim, classes) = (u64_at(8), u64_at(16), u64_at(24));
        let tag_len = u32::from_le_bytes(bytes[32..36].try_into().unwrap()) as u64;
        let expected = 36u128 + tag_len as u128 + 4 * n as u128 * dim as u128 + 2 * n as u128;
        if bytes.len() as u128 != expected {
            return Err(bad(format!(
                "{} bytes, but the header (n = {n}, dim = {dim}, tag_len = {tag_len}) implies {expected}",
                bytes.len()
            )));
        }
        let (n, dim, tag_len) = (n as usize, dim as usize, tag_len as usize);
        let tag = std::str::from_utf8(&bytes[36..36 + tag_len])
            .map_err(|e| bad(format!("tag at byte offset 36 is not UTF-8: {e}")))?
            .to_string();
        let off = 36 + tag_len;
        let data: Vec<f32> = bytes[off..off + 4 * n * dim]
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect();
        let off = off + 4 * n * dim;
        let labels: Vec<u16> = bytes[off..]
            .chunks_exact(2)
            .map(|c| u16::from_le_bytes(c.try_into().unwrap()))
            .collect();
        let set = FeatureSet {
            n,
            dim,
            data,
            labels,
            classes: classes as usize,
        };
        set.check().map_err(|e| bad(e.to_string()))?;
        Ok((set, tag))
    }
}

const MAGIC: &[u8; 8] = b"SRFEAT01";

/// Feature files in one directory (e.g. `RUN/eval/features`), one file `KEY.feat` per key.
///
/// Each file carries a tag naming what produced it (e.g. `"checkpoint epoch-200"`); a file whose
/// tag differs from the requested one is treated as stale and recomputed.
#[derive(Clone, Debug)]
pub struct FeatureCache {
    dir: PathBuf,
}

impl FeatureCache {
    /// A cache in `dir` (created on the first store).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    /// The file of `key`. Keys may contain only ASCII letters, digits, `.`, `_` and `-`.
    pub fn path(&self, key: &str) -> Result<PathBuf> {
        if key.is_empty()
            || key.starts_with('.')
            || !key
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        {
            return Err(EvalError::invalid(
                "feature cache key",
                format!("{key:?}: use only ASCII letters, digits, '.', '_', '-' (not leading '.')"),
            ));
        }
        Ok(self.dir.join(format!("{key}.feat")))
    }

    /// The cached set of `key` if its file exists and carries `tag`; `None` otherwise.
    /// A file that exists but is malformed is an error.
    pub fn load(&self, key: &str, tag: &str) -> Result<Option<FeatureSet>> {
        let path = self.path(key)?;
        if !path.exists() {
            return Ok(None);
        }
        let (set, file_tag) = FeatureSet::load(&path)?;
        Ok((file_tag == tag).then_some(set))
    }

    /// Store `set` under `key` with `tag`.
    pub fn store(&self, key: &str, tag: &str, set: &FeatureSet) -> Result<()> {
        let path = self.path(key)?;
        std::fs::create_dir_all(&self.dir).map_err(|e| EvalError::io(&self.dir, e))?;
        set.save(&path, tag)
    }

    /// The cached set of `key` with `tag`, else `compute()` and store its result.
    pub fn get_or_compute(
        &self,
        key: &str,
        tag: &str,
        compute: impl FnOnce() -> Result<FeatureSet>,
    ) -> Result<FeatureSet> {
        if let Some(set) = self.load(key, tag)? {
            return Ok(set);
        }
        let set = compute()?;
        self.store(key, tag, &set)?;
        Ok(set)
    }
}

/// Labels and class count of a dataset, or an error for an unlabelled split.
fn labels_of(ds: &ImageDataset) -> Result<(Vec<u16>, usize)> {
    let labels = ds.labels.clone().ok_or_else(|| EvalError::Unlabelled {
        dataset: ds.name.clone(),
        split: ds.split.clone(),
    })?;
    if labels.len() != ds.len() {
        return Err(EvalError::invalid(
            format!("{}/{}", ds.name, ds.split),
            format!("{} labels for {} images", labels.len(), ds.len()),
        ));
    }
    let max = labels.iter().map(|&l| l as usize + 1).max().unwrap_or(1);
    Ok((labels, ds.num_classes().max(max)))
}

fn check_sizes(ds: &ImageDataset, input_size: usize, batch: usize) -> Result<()> {
    if input_size == 0 {
        return Err(EvalError::invalid("input_size", "must be at least 1"));
    }
    if batch == 0 {
        return Err(EvalError::invalid("batch", "must be at least 1"));
    }
    if ds.height == 0 || ds.width == 0 {
        return Err(EvalError::invalid(
            format!("{}/{}", ds.name, ds.split),
            format!("image size {}×{}", ds.height, ds.width),
        ));
    }
    Ok(())
}

/// Error unless every mean is finite and every std is finite and > 0.
pub fn check_normalization(norm: &Normalize) -> Result<()> {
    for c in 0..3 {
        if !norm.mean[c].is_finite() {
            return Err(EvalError::invalid(
                format!("normalization mean[{c}]"),
                format!("{} is not finite", norm.mean[c]),
            ));
        }
        if !(norm.std[c].is_finite() && norm.std[c] > 0.0) {
            return Err(EvalError::invalid(
                format!("normalization std[{c}]"),
                format!("{} must be finite and > 0", norm.std[c]),
            ));
        }
    }
    Ok(())
}

/// Write `window` of an HWC u8 image (`h × w`), resized to `s × s` with the augment module's
/// bilinear resize ([`crate::augment::resized_crop`]) and normalised, into `out` as CHW
/// (`3·s·s` values). A window that is the whole image and already `s × s` is only converted.
#[allow(clippy::too_many_arguments)]
pub(crate) fn window_to_chw(
    img: &[u8],
    h: usize,
    w: usize,
    window: Window,
    s: usize,
    norm: &Normalize,
    out: &mut [f32],
) {
    let full = Image::from_hwc_u8(img, h, w);
    let whole = window.top == 0 && window.left == 0 && window.height == h && window.width == w;
    if whole && h == s && w == s {
        out.copy_from_slice(&full.data);
    } else {
        out.copy_from_slice(&resized_crop(&full, window, s, s).data);
    }
    normalize_planes(out, s * s, &norm.mean, &norm.std);
}

/// Run `n` images through `backbone.forward_eval` in batches; `fill(i, out)` writes image `i`
/// as normalised CHW `3·s·s` floats. Returns `n · FEATURES` values.
#[allow(clippy::too_many_arguments)]
pub(crate) fn run_backbone<D, B, F>(
    backbone: &B,
    dev: &D,
    n: usize,
    s: usize,
    batch: usize,
    what: &str,
    fill: F,
    progress: &mut dyn FnMut(ProgressEvent),
) -> Result<Vec<f32>>
where
    D: Device<f32>,
    B: Backbone<D>,
    F: Fn(usize, &mut [f32]) + Sync,
{
    let per = 3 * s * s;
    let mut data = Vec::with_capacity(n * FEATURES);
    let mut start = 0;
    while start < n {
        let b = batch.min(n - start);
        let mut buf = vec![0f32; b * per];
        buf.par_chunks_mut(per)
            .enumerate()
            .for_each(|(j, out)| fill(start + j, out));
        let x = dev.tensor_from_vec(buf, (b, Const::<3>, s, s));
        let f = backbone
            .forward_eval(x)
            .map_err(|e| EvalError::device(format!("feature extraction of {what}"), e))?;
        let v = f.as_vec();
        if v.len() != b * FEATURES {
            return Err(EvalError::invalid(
                "backbone output",
                format!(
                    "{} values for a batch of {b} (expected {})",
                    v.len(),
                    b * FEATURES
                ),
            ));
        }
        data.extend_from_slice(&v);
        start += b;
        progress(ProgressEvent::Features {
            what: what.to_string(),
            done: start,
            total: n,
        });
    }
    Ok(data)
}

/// Features of every image of `ds` through the frozen backbone: `forward_eval` (eval-mode
/// batch-norm with running statistics, no gradient tape), so the backbone is not modified.
/// Images whose side differs from `input_size` are resized (bilinear) to `input_size × input_size`
/// before normalisation.
///
/// # Shapes
/// images `(batch, 3, input_size, input_size)` per forward pass → result `n × FEATURES`.
///
/// Errors: an unlabelled split, `input_size` or `batch` of 0, a device error.
pub fn extract_features<D: Device<f32>, B: Backbone<D>>(
    backbone: &B,
    dev: &D,
    ds: &ImageDataset,
    norm: &Normalize,
    input_size: usize,
    batch: usize,
    progress: &mut dyn FnMut(ProgressEvent),
) -> Result<FeatureSet> {
    check_normalization(norm)?;
    check_sizes(ds, input_size, batch)?;
    let (labels, classes) = labels_of(ds)?;
    let (h, w) = (ds.height, ds.width);
    let what = format!("{}/{}", ds.name, ds.split);
    let data = run_backbone(
        backbone,
        dev,
        ds.len(),
        input_size,
        batch,
        &what,
        |i, out| {
            let whole = Window {
                top: 0,
                left: 0,
                height: h,
                width: w,
            };
            window_to_chw(ds.image(i), h, w, whole, input_size, norm, out)
        },
        progress,
    )?;
    FeatureSet::new(FEATURES, data, labels, classes)
}

/// Window positions `(row, col)` (top-left corners, image pixels) of the patch-probe grid of
/// `geometry` (side S, window side p) for `n ∈ {0, 1, 3, 5, 7, 9}`:
/// [`crate::augment::eval_grid`], in its nested order.
pub fn grid_positions(geometry: &PatchGeometry, n: usize) -> Result<Vec<(usize, usize)>> {
    eval_grid(geometry.image(), geometry.patch(), n)
        .map(|g| g.into_iter().map(|p| (p.row, p.col)).collect())
        .map_err(|e| EvalError::invalid(format!("patch grid (n = {n})"), e.to_string()))
}

/// Zoomed patch features of a set of grid windows, for [`probe_features`].
#[derive(Clone, Debug, PartialEq)]
pub struct GridFeatures {
    /// The image side and window side the windows were cut with.
    pub geometry: PatchGeometry,
    /// Features of the window at `(row, col)`, one row per image.
    pub windows: BTreeMap<(usize, usize), FeatureSet>,
}

/// Features of zoomed grid windows: for every window of the grids of every `n` in `ns`, each
/// image's `p × p` region at that window is resized (bilinear) to `S × S` (the geometry's
/// sides), normalised, and run through `forward_eval`.
///
/// # Shapes
/// per window: images `(batch, 3, S, S)` → `n_images × FEATURES`.
///
/// Errors: images that are not `S × S`, an invalid `n`, an unlabelled split, a device error.
#[allow(clippy::too_many_arguments)]
pub fn extract_grid_features<D: Device<f32>, B: Backbone<D>>(
    backbone: &B,
    dev: &D,
    ds: &ImageDataset,
    norm: &Normalize,
    geometry: &PatchGeometry,
    ns: &[usize],
    batch: usize,
    progress: &mut dyn FnMut(ProgressEvent),
) -> Result<GridFeatures> {
    let mut positions = vec![];
    for &n in ns {
        for pos in grid_positions(geometry, n)? {
            if !positions.contains(&pos) {
                positions.push(pos);
            }
        }
    }
    extract_windows(
        backbone, dev, ds, norm, geometry, &positions, batch, progress,
    )
}

/// Like [`extract_grid_features`] for explicit window positions `(row, col)` (top-left corners
/// in image pixels); each window must lie inside the image.
///
/// # Shapes
/// per window: images `(batch, 3, S, S)` → `n_images × FEATURES`.
#[allow(clippy::too_many_arguments)]
pub fn extract_windows<D: Device<f32>, B: Backbone<D>>(
    backbone: &B,
    dev: &D,
    ds: &ImageDataset,
    norm: &Normalize,
    geometry: &PatchGeometry,
    positions: &[(usize, usize)],
    batch: usize,
    progress: &mut dyn FnMut(ProgressEvent),
) -> Result<GridFeatures> {
    let (side, patch_size) = (geometry.image(), geometry.patch());
    check_normalization(norm)?;
    check_sizes(ds, side, batch)?;
    if (ds.height, ds.width) != (side, side) {
        return Err(EvalError::invalid(
            format!("{}/{}", ds.name, ds.split),
            format!(
                "the patch grid is for {side}×{side} images (the run's data.image_size), got {}×{}",
                ds.height, ds.width
            ),
        ));
    }
    if let Some(pos) = positions
        .iter()
        .find(|(r, c)| r + patch_size > side || c + patch_size > side)
    {
        return Err(EvalError::invalid(
            "patch window",
            format!("{pos:?} with side {patch_size} leaves the {side}×{side} image"),
        ));
    }
    let (labels, classes) = labels_of(ds)?;
    let mut windows = BTreeMap::new();
    for &(r, c) in positions {
        if windows.contains_key(&(r, c)) {
            continue;
        }
        let what = format!("{}/{} patch ({r},{c})", ds.name, ds.split);
        let data = run_backbone(
            backbone,
            dev,
            ds.len(),
            side,
            batch,
            &what,
            |i, out| {
                let window = Window {
                    top: r,
                    left: c,
                    height: patch_size,
                    width: patch_size,
                };
                window_to_chw(ds.image(i), side, side, window, side, norm, out)
            },
            progress,
        )?;
        windows.insert(
            (r, c),
            FeatureSet::new(FEATURES, data, labels.clone(), classes)?,
        );
    }
    Ok(GridFeatures {
        geometry: *geometry,
        windows,
    })
}

/// The input of the patch-concatenated probe with `n` patches: row `i` is the full-image
/// feature followed by the features of the `n` grid windows, in grid order. `n = 0` returns
/// `full` unchanged.
///
/// # Shapes
/// `full`: `N × F`, each window `N × F` → `N × (n + 1)·F`.
pub fn probe_features(full: &FeatureSet, grid: &GridFeatures, n: usize) -> Result<FeatureSet> {
    let mut out = full.clone();
    for pos in grid_positions(&grid.geometry, n)? {
        let w = grid.windows.get(&pos).ok_or_else(|| {
            EvalError::invalid(
                "probe_features",
                format!(
                    "window {pos:?} of n = {n} was not extracted (pass n to extract_grid_features)"
                ),
            )
        })?;
        out = out.hcat(w)?;
    }
    Ok(out)
}
