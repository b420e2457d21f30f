//! The SR patch sampler (SPEC §3), the two patch modes, the evaluation grid (SPEC §4) and the
//! distance targets.
//!
//! Positions are top-left corners `(row, col)` in original-image pixels, each in
//! `[0, H − p] × [0, W − p]`.
//!
//! # Non-overlap (`OverlapRule::Forbidden`)
//! Every pair of one image's patches satisfies `|Δrow| ≥ p` or `|Δcol| ≥ p`. Sampling is
//! sequential rejection (each patch uniform over the valid corners, up to
//! [`TRIES_PER_PATCH`] draws, the whole image restarted up to [`RESTARTS`] times), then a
//! constructive fallback that always succeeds: `P` distinct cells of the `⌊H/p⌋ × ⌊W/p⌋` grid,
//! each grid strip shifted by a random jitter; the jitters along an axis are sorted, so strips
//! stay at least `p` apart. So sampling always terminates, in bounded time.
//!
//! # The authors' rule (`OverlapRule::Allowed`)
//! Exactly the sampler of the authors' released code (mad-lab-fau/Spatial-Reasoning,
//! `datamanager.py`, `patch_transform`), in original-image pixels: draw all `2·P` coordinates
//! *distinct* from one range `0..S − p` (Python's `random.sample(range(0, S - p), 2 * P)`, so
//! `S − p` itself is never drawn), read them as `(row₀, col₀, row₁, col₁, …)`, and draw again
//! while `|row₀ − col₀| < p` **and** `|row₁ − col₁| < p`. It compares each patch's row with its
//! *own* column, looks only at patches 0 and 1, and accepts when either passes, so it does not
//! keep patches apart: pairs overlap (55 % at S = 32, p = 12, P = 2, and 54 % at S = 64, p = 24,
//! as SPEC §3 says; exact figures in `tests/patches_sampler.rs`), and the offsets are smaller than under [`OverlapRule::Forbidden`]
//! (mean |Δrow| = mean |Δcol| = 7.76 px at S = 32, p = 12; our earlier emulation, which redrew each
//! patch until its own `|row − col| ≥ p`, gave 8.6 px). `Forbidden` is our correction of it (SPEC §3).
//! Two departures, both where their code fails: where no draw can pass (`p ≥ S − p`) their loop
//! never ends, ours keeps the last of [`AUTHORS_TRIES`] draws; and with a single patch (their
//! code indexes `positions[3]` and raises) only patch 0's condition is tested. `2·P > S − p` (their
//! `random.sample` raises "sample larger than population") is a [`PatchError::AuthorsRange`].
//! Their zoom mode draws the same rule on the image resized to `S·S/p` pixels with windows of
//! `S`, the same geometry up to rounding. Rectangular images (theirs are square) draw from
//! `0..min(H, W) − p`.

use rand::Rng as _;

use super::color::normalize_planes;
use super::image::{resize_window_into, ResizeScratch, Source};
use super::{ColorAugment, ColorParams, Image, Normalize, Window};
use crate::config::{patch_fit, OverlapRule, PatchGeometry, PatchMisfit, PatchMode};
use crate::rng::Rng;

/// Draws per patch before the sampler gives up on that attempt.
pub const TRIES_PER_PATCH: usize = 64;
/// Draws of the whole image under the authors' rule before keeping the last one (their rule
/// accepts 32 % of draws at S = 64, p = 24, P = 2, and 35 % at S = 32, p = 12, so 1024 draws all
/// fail with probability below 1e-170 where any draw can pass).
pub const AUTHORS_TRIES: usize = 1024;
/// Whole-image restarts before the constructive fallback.
pub const RESTARTS: usize = 4;

/// Top-left corner of a patch in original-image pixels.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, Default, serde::Serialize, serde::Deserialize,
)]
pub struct PatchPos {
    pub row: usize,
    pub col: usize,
}

/// An impossible patch geometry or pipeline, named with its values.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PatchError {
    #[error("patch size p = {patch} must be at least 1")]
    ZeroPatch { patch: usize },
    #[error("patch size p = {patch} must be smaller than the image ({height}×{width})")]
    PatchTooLarge {
        patch: usize,
        height: usize,
        width: usize,
    },
    #[error(
        "{count} patches of side {patch} cannot be placed without overlap in a {height}×{width} image (at most {max} fit)"
    )]
    DoNotFit {
        count: usize,
        patch: usize,
        height: usize,
        width: usize,
        max: usize,
    },
    #[error("patch count must be at least 1")]
    NoPatches,
    #[error(
        "overlap = \"allowed\" (the authors' sampler) draws 2·{count} = {need} distinct coordinates from 0..{range} (image side {side} − patch {patch}): too few values; use fewer or smaller patches, or overlap = \"forbidden\""
    )]
    AuthorsRange {
        count: usize,
        need: usize,
        range: usize,
        side: usize,
        patch: usize,
    },
    #[error("additive mode: patch side {patch} does not fit on the {out}×{out} canvas")]
    CanvasTooSmall { patch: usize, out: usize },
    #[error("output size must be at least 1")]
    ZeroOutput,
    #[error("evaluation grid: n = {n} patches (expected one of 0, 1, 3, 5, 7, 9)")]
    GridCount { n: usize },
}

/// Samples `count` patch positions of side `patch` in a `height × width` image.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PatchSampler {
    height: usize,
    width: usize,
    patch: usize,
    count: usize,
    overlap: OverlapRule,
}

impl PatchSampler {
    /// Check the geometry before any work ([`patch_fit`]: `1 ≤ p < min(H, W)`, `count ≥ 1`,
    /// and what the overlap rule needs).
    pub fn new(
        height: usize,
        width: usize,
        patch: usize,
        count: usize,
        overlap: OverlapRule,
    ) -> Result<PatchSampler, PatchError> {
        patch_fit(height, width, patch, count, overlap).map_err(|m| match m {
            PatchMisfit::ZeroPatch => PatchError::ZeroPatch { patch },
            PatchMisfit::TooLarge => PatchError::PatchTooLarge {
                patch,
                height,
                width,
            },
            PatchMisfit::NoPatches => PatchError::NoPatches,
            PatchMisfit::AuthorsRange { need, range } => PatchError::AuthorsRange {
                count,
                need,
                range,
                side: height.min(width),
                patch,
            },
            PatchMisfit::DoNotFit { max } => PatchError::DoNotFit {
                count,
                patch,
                height,
                width,
                max,
            },
        })?;
        Ok(PatchSampler {
            height,
            width,
            patch,
            count,
            overlap,
        })
    }

    /// The sampler of a run's geometry (checked when the config was: [`PatchGeometry`]).
    ///
    /// # Panics
    /// If the geometry has no patches (`count() == 0`, an RR run): there is nothing to sample.
    pub fn for_geometry(geometry: &PatchGeometry) -> PatchSampler {
        assert!(
            geometry.count() > 0,
            "PatchSampler::for_geometry: the geometry has no patches (an RR run)"
        );
        PatchSampler {
            height: geometry.image(),
            width: geometry.image(),
            patch: geometry.patch(),
            count: geometry.count(),
            overlap: geometry.overlap(),
        }
    }

    /// A square `size × size` image.
    pub fn square(
        size: usize,
        patch: usize,
        count: usize,
        overlap: OverlapRule,
    ) -> Result<PatchSampler, PatchError> {
        Self::new(size, size, patch, count, overlap)
    }

    pub fn patch(&self) -> usize {
        self.patch
    }
    pub fn count(&self) -> usize {
        self.count
    }
    pub fn image_size(&self) -> (usize, usize) {
        (self.height, self.width)
    }
    pub fn overlap(&self) -> OverlapRule {
        self.overlap
    }

    /// Draw `count` positions.
    pub fn sample(&self, rng: &mut Rng) -> Vec<PatchPos> {
        let mut out = Vec::with_capacity(self.count);
        self.sample_into(rng, &mut out);
        out
    }

    /// Draw `count` positions into `out` (cleared first).
    pub fn sample_into(&self, rng: &mut Rng, out: &mut Vec<PatchPos>) {
        match self.overlap {
            OverlapRule::Allowed => self.sample_authors(rng, out),
            OverlapRule::Forbidden => self.sample_forbidden(rng, out),
        }
    }

    fn draw(&self, rng: &mut Rng) -> PatchPos {
        PatchPos {
            row: rng.gen_range(0..=self.height - self.patch),
            col: rng.gen_range(0..=self.width - self.patch),
        }
    }

    fn sample_authors(&self, rng: &mut Rng, out: &mut Vec<PatchPos>) {
        let p = self.patch;
        let range = self.height.min(self.width) - p;
        let passes = |v: &[usize], k: usize| v[2 * k].abs_diff(v[2 * k + 1]) >= p;
        let mut v = Vec::new();
        for _ in 0..AUTHORS_TRIES {
            // `random.sample(range(0, S - p), 2 * P)`: distinct values in random order.
            v = rand::seq::index::sample(rng, range, 2 * self.count).into_vec();
            if passes(&v, 0) || (self.count > 1 && passes(&v, 1)) {
                break;
            }
        }
        out.clear();
        out.extend(v.chunks_exact(2).map(|rc| PatchPos {
            row: rc[0],
            col: rc[1],
        }));
    }

    fn sample_forbidden(&self, rng: &mut Rng, out: &mut Vec<PatchPos>) {
        let p = self.patch;
        for _ in 0..RESTARTS {
            out.clear();
            'patch: for _ in 0..self.count {
                for _ in 0..TRIES_PER_PATCH {
                    let c = self.draw(rng);
                    if out.iter().all(|q| separated(*q, c, p)) {
                        out.push(c);
                        continue 'patch;
                    }
                }
                break;
            }
            if out.len() == self.count {
                return;
            }
        }
        self.sample_constructive(rng, out);
    }

    /// Distinct grid cells with sorted per-strip jitter: always valid.
    fn sample_constructive(&self, rng: &mut Rng, out: &mut Vec<PatchPos>) {
        let p = self.patch;
        let (gr, gc) = (self.height / p, self.width / p);
        let strips = |n: usize, side: usize, rng: &mut Rng| -> Vec<usize> {
            let slack = side - n * p;
            let mut j: Vec<usize> = (0..n).map(|_| rng.gen_range(0..=slack)).collect();
            j.sort_unstable();
            j.iter().enumerate().map(|(k, d)| k * p + d).collect()
        };
        let rows = strips(gr, self.height, rng);
        let cols = strips(gc, self.width, rng);
        out.clear();
        for cell in rand::seq::index::sample(rng, gr * gc, self.count) {
            out.push(PatchPos {
                row: rows[cell / gc],
                col: cols[cell % gc],
            });
        }
    }
}

/// True when two `p × p` patches do not overlap: `|Δrow| ≥ p` or `|Δcol| ≥ p`.
pub fn separated(a: PatchPos, b: PatchPos, p: usize) -> bool {
    a.row.abs_diff(b.row) >= p || a.col.abs_diff(b.col) >= p
}

/// The SR distance target of a patch pair (SPEC §3):
/// `((row_a − row_b)/(S − p), (col_a − col_b)/(S − p))`, each in [−1, 1].
pub fn offset_target(a: PatchPos, b: PatchPos, image_size: usize, p: usize) -> (f32, f32) {
    let d = (image_size - p) as f32;
    (
        (a.row as f32 - b.row as f32) / d,
        (a.col as f32 - b.col as f32) / d,
    )
}

/// The evaluation grid of the patch-concatenated probe (SPEC §4): windows of side `p` (the
/// patch size) whose top-left corners take the values `{0, ⌊(S − p)/2⌋, S − p}` on each axis,
/// so the nine windows cover the image and overlap when `p > (S − p)/2`.
///
/// Returned in a nested order, so `n` windows are the first `n` of the nine: centre; middle
/// row left, right (n = 3); top-centre, bottom-centre (n = 5, the plus); top-left, bottom-right
/// (n = 7, fixed corners, our decision); top-right, bottom-left (n = 9). `n = 0` is empty.
pub fn eval_grid(
    image_size: usize,
    patch_size: usize,
    n: usize,
) -> Result<Vec<PatchPos>, PatchError> {
    if patch_size == 0 {
        return Err(PatchError::ZeroPatch { patch: patch_size });
    }
    if patch_size > image_size {
        return Err(PatchError::PatchTooLarge {
            patch: patch_size,
            height: image_size,
            width: image_size,
        });
    }
    if ![0, 1, 3, 5, 7, 9].contains(&n) {
        return Err(PatchError::GridCount { n });
    }
    let last = image_size - patch_size;
    let at = [0, last / 2, last];
    // (grid row, grid col) in nested order.
    const ORDER: [(usize, usize); 9] = [
        (1, 1),
        (1, 0),
        (1, 2),
        (0, 1),
        (2, 1),
        (0, 0),
        (2, 2),
        (0, 2),
        (2, 0),
    ];
    Ok(ORDER[..n]
        .iter()
        .map(|&(r, c)| PatchPos {
            row: at[r],
            col: at[c],
        })
        .collect())
}

/// The SR patch pipeline (SPEC §3): from the un-augmented image, cut a `p × p` patch, turn it
/// into a backbone input by `mode`, apply the colour stage (ColorJitter p = 0.8, RandomGrayscale
/// p = 0.2) and normalise.
///
/// - `Zoom`: the patch is resized (bilinear, see [`super::resize_bilinear`]) to
///   `out_size × out_size`, then coloured and normalised.
/// - `Additive`: the patch is coloured and normalised at its own size (the contrast factor's
///   grayscale mean is thus the patch's mean, not diluted by the canvas), then pasted at a
///   uniformly random place on an all-zero `out_size × out_size` canvas: zero *after*
///   normalisation, i.e. the dataset mean colour.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PatchAugment {
    pub mode: PatchMode,
    pub out_size: usize,
    pub color: ColorAugment,
    pub normalize: Normalize,
}

/// One patch's draw: where it was cut, where it was pasted (additive mode only) and its colour.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PatchParams {
    pub pos: PatchPos,
    pub paste: Option<PatchPos>,
    pub color: ColorParams,
}

impl PatchAugment {
    /// The SPEC §3 pipeline for patches of side `patch`; errors if the output is empty or (in
    /// additive mode) the patch does not fit on the canvas.
    pub fn new(
        mode: PatchMode,
        out_size: usize,
        patch: usize,
        normalize: Normalize,
    ) -> Result<PatchAugment, PatchError> {
        if out_size == 0 {
            return Err(PatchError::ZeroOutput);
        }
        if mode == PatchMode::Additive && patch > out_size {
            return Err(PatchError::CanvasTooSmall {
                patch,
                out: out_size,
            });
        }
        Ok(PatchAugment {
            mode,
            out_size,
            color: ColorAugment::spec(),
            normalize,
        })
    }

    /// Draw everything but the position: paste place (additive), then colour.
    pub fn sample_params(&self, rng: &mut Rng, pos: PatchPos, patch: usize) -> PatchParams {
        let paste = (self.mode == PatchMode::Additive).then(|| PatchPos {
            row: rng.gen_range(0..=self.out_size - patch),
            col: rng.gen_range(0..=self.out_size - patch),
        });
        let color = self.color.sample_params(rng);
        PatchParams { pos, paste, color }
    }

    /// Apply to an image: an `out_size × out_size` backbone input.
    pub fn apply(&self, img: &Image, patch: usize, p: &PatchParams) -> Image {
        let mut out = Image::zeros(self.out_size, self.out_size);
        let src = Source::F32Chw {
            data: &img.data,
            height: img.height,
            width: img.width,
        };
        self.apply_into(&src, patch, p, &mut out.data, &mut PatchScratch::default());
        out
    }

    #[inline]
    pub(crate) fn apply_into(
        &self,
        src: &Source,
        patch: usize,
        p: &PatchParams,
        out: &mut [f32],
        scratch: &mut PatchScratch,
    ) {
        let s = self.out_size;
        let window = Window {
            top: p.pos.row,
            left: p.pos.col,
            height: patch,
            width: patch,
        };
        match (self.mode, p.paste) {
            (PatchMode::Additive, Some(at)) => {
                let n = 3 * patch * patch;
                scratch.region.clear();
                scratch.region.resize(n, 0.0);
                // Resizing p → p is the identity (weights are exactly 1 and 0); it also does
                // the u8 → f32 conversion.
                resize_window_into(
                    src,
                    window,
                    patch,
                    patch,
                    &mut scratch.region,
                    &mut scratch.resize,
                );
                ColorAugment::apply_planes(&mut scratch.region, patch * patch, &p.color);
                normalize_planes(
                    &mut scratch.region,
                    patch * patch,
                    &self.normalize.mean,
                    &self.normalize.std,
                );
                out.fill(0.0);
                for c in 0..3 {
                    for y in 0..patch {
                        let d = (c * s + at.row + y) * s + at.col;
                        let r = (c * patch + y) * patch;
                        out[d..d + patch].copy_from_slice(&scratch.region[r..r + patch]);
                    }
                }
            }
            _ => {
                resize_window_into(src, window, s, s, out, &mut scratch.resize);
                ColorAugment::apply_planes(out, s * s, &p.color);
                normalize_planes(out, s * s, &self.normalize.mean, &self.normalize.std);
            }
        }
    }
}

/// Reusable buffers for the patch pipeline.
#[derive(Default)]
pub(crate) struct PatchScratch {
    pub(crate) resize: ResizeScratch,
    region: Vec<f32>,
}
