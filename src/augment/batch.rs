//! The data pipeline's CPU work: write K augmented views and P patches per source image
//! straight into caller-provided `f32` NCHW buffers, in parallel with rayon.
//!
//! # Layout (slot-major)
//! Output item `slot · B + b` is slot `slot` (view or patch number) of image `b` of the batch:
//! all images' view 0, then all images' view 1, and so on. So `out[(slot·B + b)·3·S·S ..]` is
//! one CHW image; the slice of one slot is a contiguous `[B, 3, S, S]` block, which is how the
//! pairing code (SPEC §2) slices views. Patch positions are returned in the same order.
//!
//! # Determinism
//! Image `b`'s parameters come from its own RNG, `rng_for(seed, Stream::Views | Stream::Patches,
//! epoch, indices[b])`, drawn in slot order before any pixel work; so the output depends on
//! `(seed, epoch, dataset index)` only, never on the thread count or the batch composition.

use std::time::Instant;

use rand::Rng as _;
use rayon::prelude::*;

use super::image::{ResizeScratch, Source};
use super::patches::PatchScratch;
use super::{PatchAugment, PatchPos, PatchSampler, ViewAugment};
use crate::rng::{rng_for, Stream};

/// Source images of one batch: `u8` HWC RGB, all `height × width`, and their dataset indices
/// (which seed their RNGs).
#[derive(Clone, Copy, Debug)]
pub struct SourceBatch<'a> {
    pub images: &'a [&'a [u8]],
    pub height: usize,
    pub width: usize,
    /// Dataset index of each image (`indices.len() == images.len()`).
    pub indices: &'a [u64],
}

/// Which epoch of which run: the other two parts of the per-image RNG key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchKey {
    pub seed: u64,
    pub epoch: u64,
}

/// A batch whose sizes do not agree, named with the values.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BatchError {
    #[error("{indices} dataset indices for {images} images")]
    Indices { images: usize, indices: usize },
    #[error("image {index}: {got} bytes, expected {expected} ({height}×{width}×3)")]
    ImageBytes {
        index: usize,
        got: usize,
        expected: usize,
        height: usize,
        width: usize,
    },
    #[error("output buffer holds {got} floats, expected {expected} ({items} items × 3×{h}×{w})")]
    Buffer {
        got: usize,
        expected: usize,
        items: usize,
        h: usize,
        w: usize,
    },
    #[error("sampler built for {sampler_h}×{sampler_w} images, batch images are {height}×{width}")]
    SamplerSize {
        sampler_h: usize,
        sampler_w: usize,
        height: usize,
        width: usize,
    },
    #[error("an empty batch")]
    Empty,
}

impl SourceBatch<'_> {
    fn check(&self) -> Result<(), BatchError> {
        if self.images.is_empty() {
            return Err(BatchError::Empty);
        }
        if self.indices.len() != self.images.len() {
            return Err(BatchError::Indices {
                images: self.images.len(),
                indices: self.indices.len(),
            });
        }
        let expected = self.height * self.width * 3;
        if let Some((index, img)) = self
            .images
            .iter()
            .enumerate()
            .find(|(_, i)| i.len() != expected)
        {
            return Err(BatchError::ImageBytes {
                index,
                got: img.len(),
                expected,
                height: self.height,
                width: self.width,
            });
        }
        Ok(())
    }

    fn source(&self, b: usize) -> Source<'_> {
        Source::U8Hwc {
            data: self.images[b],
            height: self.height,
            width: self.width,
        }
    }
}

fn check_buffer(out: &[f32], items: usize, h: usize, w: usize) -> Result<(), BatchError> {
    let expected = items * 3 * h * w;
    if out.len() != expected {
        return Err(BatchError::Buffer {
            got: out.len(),
            expected,
            items,
            h,
            w,
        });
    }
    Ok(())
}

/// Run the per-item pixel work compiled for AVX2 when the CPU has it (the crate targets baseline
/// x86-64). The transforms are marked `#[inline]` so they are compiled into this context; the
/// IEEE operations and their order are unchanged (no FMA contraction), so the values are the
/// same as on the baseline path.
#[inline(always)]
fn fast<F: FnOnce()>(f: F) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU supports AVX2, checked just above.
        unsafe { avx2(f) };
        return;
    }
    f()
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn avx2<F: FnOnce()>(f: F) {
    f()
}

/// Write `views` augmented views of each image into `out` (slot-major, see the module docs).
///
/// # Shapes
/// `out.len() == views · B · 3 · S · S` with `B = src.images.len()` and `S × S` =
/// `aug.out_size()`; item `k · B + b` is view `k` of image `b`.
pub fn fill_views(
    src: &SourceBatch,
    aug: &ViewAugment,
    views: usize,
    key: BatchKey,
    out: &mut [f32],
) -> Result<(), BatchError> {
    src.check()?;
    let (oh, ow) = aug.out_size();
    let batch = src.images.len();
    check_buffer(out, views * batch, oh, ow)?;
    let params: Vec<Vec<_>> = src
        .indices
        .par_iter()
        .map(|&index| {
            let mut rng = rng_for(key.seed, Stream::Views, key.epoch, index);
            (0..views)
                .map(|_| aug.sample_params(&mut rng, src.height, src.width))
                .collect()
        })
        .collect();
    out.par_chunks_mut(3 * oh * ow).enumerate().for_each_init(
        ResizeScratch::default,
        |scratch, (item, chunk)| {
            let (k, b) = (item / batch, item % batch);
            fast(|| aug.apply_into(&src.source(b), &params[b][k], chunk, scratch));
        },
    );
    Ok(())
}

/// Write `sampler.count()` patches of each image into `out` (slot-major) and return their
/// positions (top-left corners in source pixels) in the same order: entry `j · B + b` is
/// patch `j` of image `b`.
///
/// # Shapes
/// `out.len() == P · B · 3 · S · S` with `P = sampler.count()`, `S = aug.out_size`.
pub fn fill_patches(
    src: &SourceBatch,
    sampler: &PatchSampler,
    aug: &PatchAugment,
    key: BatchKey,
    out: &mut [f32],
) -> Result<Vec<PatchPos>, BatchError> {
    src.check()?;
    let (sh, sw) = sampler.image_size();
    if (sh, sw) != (src.height, src.width) {
        return Err(BatchError::SamplerSize {
            sampler_h: sh,
            sampler_w: sw,
            height: src.height,
            width: src.width,
        });
    }
    let s = aug.out_size;
    let batch = src.images.len();
    let count = sampler.count();
    let p = sampler.patch();
    check_buffer(out, count * batch, s, s)?;
    let params: Vec<Vec<_>> = src
        .indices
        .par_iter()
        .map(|&index| {
            let mut rng = rng_for(key.seed, Stream::Patches, key.epoch, index);
            let positions = sampler.sample(&mut rng);
            positions
                .into_iter()
                .map(|pos| aug.sample_params(&mut rng, pos, p))
                .collect()
        })
        .collect();
    out.par_chunks_mut(3 * s * s).enumerate().for_each_init(
        PatchScratch::default,
        |scratch, (item, chunk)| {
            let (j, b) = (item / batch, item % batch);
            fast(|| aug.apply_into(&src.source(b), p, &params[b][j], chunk, scratch));
        },
    );
    let mut positions = Vec::with_capacity(count * batch);
    for j in 0..count {
        positions.extend(params.iter().map(|per_image| per_image[j].pos));
    }
    Ok(positions)
}

/// Throughput of the pipeline's CPU work in items (views + patches) per second, on the current
/// rayon pool: batches of `batch` random `size × size` images, `views` SPEC §2 views and
/// `patches` SPEC §3 zoom patches (side `round(0.375·size)`, non-overlapping) each, repeated for
/// about `secs` seconds after one warm-up batch.
///
/// # Panics
/// If the patch geometry is impossible (`patches > ⌊size/p⌋²`) or `batch == 0`.
pub fn bench_pipeline(size: usize, batch: usize, views: usize, patches: usize, secs: f64) -> f64 {
    let mut rng = rng_for(0, Stream::Other, 0, 0);
    let pixels: Vec<Vec<u8>> = (0..batch)
        .map(|_| (0..size * size * 3).map(|_| rng.gen()).collect())
        .collect();
    let images: Vec<&[u8]> = pixels.iter().map(|v| v.as_slice()).collect();
    let indices: Vec<u64> = (0..batch as u64).collect();
    let src = SourceBatch {
        images: &images,
        height: size,
        width: size,
        indices: &indices,
    };
    let norm = super::Normalize {
        mean: [0.49, 0.48, 0.45],
        std: [0.25, 0.24, 0.26],
    };
    let view_aug = ViewAugment::new(size, norm);
    // The geometry a run of this size resolves to (p = round(0.375·S), non-overlapping).
    let geometry = crate::config::PatchGeometry::resolve(
        size,
        0,
        patches,
        crate::config::OverlapRule::Forbidden,
    )
    .expect("bench_pipeline: patch geometry");
    let patch_aug = PatchAugment::new(crate::config::PatchMode::Zoom, size, geometry.patch(), norm)
        .expect("zoom mode with a positive size is valid");
    let sampler = (patches > 0).then(|| PatchSampler::for_geometry(&geometry));
    let mut view_buf = vec![0.0f32; views * batch * 3 * size * size];
    let mut patch_buf = vec![0.0f32; patches * batch * 3 * size * size];
    let mut run = |epoch: u64| {
        let key = BatchKey { seed: 1, epoch };
        if views > 0 {
            fill_views(&src, &view_aug, views, key, &mut view_buf).expect("sizes agree");
        }
        if let Some(sampler) = &sampler {
            fill_patches(&src, sampler, &patch_aug, key, &mut patch_buf).expect("sizes agree");
        }
    };
    run(0);
    let start = Instant::now();
    let mut epoch = 1;
    loop {
        run(epoch);
        epoch += 1;
        let elapsed = start.elapsed().as_secs_f64();
        if elapsed >= secs {
            return ((epoch - 1) as usize * batch * (views + patches)) as f64 / elapsed;
        }
    }
}
