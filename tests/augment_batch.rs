//! The batch builder: slot-major layout, per-image RNG keys, determinism across thread counts,
//! size errors; and the sampling distributions of the view pipeline against torchvision's.

use rand::Rng as _;
use spatial_reasoning::augment::*;
use spatial_reasoning::config::{OverlapRule, PatchMode};
use spatial_reasoning::rng::{rng_for, Stream};

const NORM: Normalize = Normalize {
    mean: [0.49, 0.48, 0.45],
    std: [0.25, 0.24, 0.26],
};

fn images(n: usize, s: usize) -> Vec<Vec<u8>> {
    let mut rng = rng_for(99, Stream::Other, 0, 0);
    (0..n)
        .map(|_| (0..s * s * 3).map(|_| rng.gen()).collect())
        .collect()
}

fn pool(threads: usize) -> rayon::ThreadPool {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap()
}

/// The batch builder (u8 source, AVX2 build where available) and the per-image `apply`
/// (f32 source, baseline build) must agree bit for bit.
#[test]
fn views_are_slot_major_and_keyed_by_dataset_index() {
    let (s, b, k) = (32, 5, 3);
    let bytes = images(b, s);
    let refs: Vec<&[u8]> = bytes.iter().map(|v| v.as_slice()).collect();
    let indices: Vec<u64> = vec![40, 7, 123, 9, 1000];
    let src = SourceBatch {
        images: &refs,
        height: s,
        width: s,
        indices: &indices,
    };
    let aug = ViewAugment::new(s, NORM);
    let key = BatchKey { seed: 11, epoch: 3 };
    let mut out = vec![0.0; k * b * 3 * s * s];
    fill_views(&src, &aug, k, key, &mut out).unwrap();
    for (bi, &index) in indices.iter().enumerate() {
        let img = Image::from_hwc_u8(&bytes[bi], s, s);
        let mut rng = rng_for(11, Stream::Views, 3, index);
        for slot in 0..k {
            let p = aug.sample_params(&mut rng, s, s);
            let want = aug.apply(&img, &p);
            let at = (slot * b + bi) * 3 * s * s;
            let got = &out[at..at + 3 * s * s];
            let diff = got
                .iter()
                .zip(&want.data)
                .map(|(g, w)| (g - w).abs())
                .fold(0.0f32, f32::max);
            assert!(diff == 0.0, "image {bi} view {slot}: max diff {diff}");
        }
    }
}

#[test]
fn patches_are_slot_major_with_positions_in_the_same_order() {
    let (s, p, b, n) = (32, 12, 4, 3);
    let bytes = images(b, s);
    let refs: Vec<&[u8]> = bytes.iter().map(|v| v.as_slice()).collect();
    let indices: Vec<u64> = vec![3, 1, 4, 15];
    let src = SourceBatch {
        images: &refs,
        height: s,
        width: s,
        indices: &indices,
    };
    let sampler = PatchSampler::square(s, p, n, OverlapRule::Forbidden).unwrap();
    for mode in [PatchMode::Zoom, PatchMode::Additive] {
        let aug = PatchAugment::new(mode, s, p, NORM).unwrap();
        let key = BatchKey { seed: 5, epoch: 0 };
        let mut out = vec![0.0; n * b * 3 * s * s];
        let pos = fill_patches(&src, &sampler, &aug, key, &mut out).unwrap();
        assert_eq!(pos.len(), n * b);
        for (bi, &index) in indices.iter().enumerate() {
            let img = Image::from_hwc_u8(&bytes[bi], s, s);
            let mut rng = rng_for(5, Stream::Patches, 0, index);
            let positions = sampler.sample(&mut rng);
            for (slot, &q) in positions.iter().enumerate() {
                assert_eq!(pos[slot * b + bi], q);
                let params = aug.sample_params(&mut rng, q, p);
                let want = aug.apply(&img, p, &params);
                let at = (slot * b + bi) * 3 * s * s;
                let got = &out[at..at + 3 * s * s];
                let diff = got
                    .iter()
                    .zip(&want.data)
                    .map(|(g, w)| (g - w).abs())
                    .fold(0.0f32, f32::max);
                assert!(
                    diff == 0.0,
                    "{mode:?} image {bi} patch {slot}: max diff {diff}"
                );
                if mode == PatchMode::Additive {
                    // Outside the pasted p×p square the canvas is exactly zero.
                    let zeros = got.iter().filter(|v| **v == 0.0).count();
                    assert!(zeros >= 3 * (s * s - p * p), "zeros {zeros}");
                }
            }
        }
    }
}

#[test]
fn same_output_on_one_and_two_threads() {
    let (s, b, k, n) = (32, 16, 4, 2);
    let bytes = images(b, s);
    let refs: Vec<&[u8]> = bytes.iter().map(|v| v.as_slice()).collect();
    let indices: Vec<u64> = (100..100 + b as u64).collect();
    let src = SourceBatch {
        images: &refs,
        height: s,
        width: s,
        indices: &indices,
    };
    let aug = ViewAugment::new(s, NORM);
    let sampler = PatchSampler::square(s, 12, n, OverlapRule::Forbidden).unwrap();
    let patch_aug = PatchAugment::new(PatchMode::Zoom, s, 12, NORM).unwrap();
    let run = |threads| {
        pool(threads).install(|| {
            let key = BatchKey { seed: 1, epoch: 2 };
            let mut views = vec![0.0; k * b * 3 * s * s];
            let mut patches = vec![0.0; n * b * 3 * s * s];
            fill_views(&src, &aug, k, key, &mut views).unwrap();
            let pos = fill_patches(&src, &sampler, &patch_aug, key, &mut patches).unwrap();
            (views, patches, pos)
        })
    };
    let one = run(1);
    let two = run(2);
    assert!(one.0 == two.0, "views differ between 1 and 2 threads");
    assert!(one.1 == two.1, "patches differ between 1 and 2 threads");
    assert_eq!(one.2, two.2);
    // And a different epoch gives different views.
    let key = BatchKey { seed: 1, epoch: 3 };
    let mut other = vec![0.0; k * b * 3 * s * s];
    fill_views(&src, &aug, k, key, &mut other).unwrap();
    assert!(other != one.0);
}

#[test]
fn size_mismatches_are_named_errors() {
    let s = 32;
    let bytes = images(2, s);
    let refs: Vec<&[u8]> = vec![&bytes[0], &bytes[1][..100]];
    let indices = [0u64, 1];
    let src = SourceBatch {
        images: &refs,
        height: s,
        width: s,
        indices: &indices,
    };
    let aug = ViewAugment::new(s, NORM);
    let key = BatchKey { seed: 0, epoch: 0 };
    let mut out = vec![0.0; 2 * 2 * 3 * s * s];
    let e = fill_views(&src, &aug, 2, key, &mut out).unwrap_err();
    assert!(
        matches!(
            e,
            BatchError::ImageBytes {
                index: 1,
                got: 100,
                ..
            }
        ),
        "{e}"
    );
    let refs: Vec<&[u8]> = vec![&bytes[0], &bytes[1]];
    let src = SourceBatch {
        images: &refs,
        ..src
    };
    let mut short = vec![0.0; 10];
    let e = fill_views(&src, &aug, 2, key, &mut short).unwrap_err();
    assert!(matches!(e, BatchError::Buffer { got: 10, .. }), "{e}");
    let e = fill_views(
        &SourceBatch {
            indices: &[0],
            ..src
        },
        &aug,
        2,
        key,
        &mut out,
    )
    .unwrap_err();
    assert!(matches!(e, BatchError::Indices { .. }), "{e}");
    let sampler = PatchSampler::square(64, 24, 2, OverlapRule::Forbidden).unwrap();
    let patch_aug = PatchAugment::new(PatchMode::Zoom, s, 24, NORM).unwrap();
    let e = fill_patches(&src, &sampler, &patch_aug, key, &mut out).unwrap_err();
    assert!(matches!(e, BatchError::SamplerSize { .. }), "{e}");
}

// torchvision's RandomResizedCrop.get_params on a 32×32 image, 200,000 draws:
//   import torch, math, torchvision.transforms as T
//   torch.manual_seed(0); img = torch.zeros(3, 32, 32); n = 200000; area = logr = full = 0.0
//   for _ in range(n):
//       i, j, h, w = T.RandomResizedCrop.get_params(img, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3))
//       area += h * w / 1024; logr += math.log(w / h); full += (h == 32 and w == 32)
//   print(f"{area / n:.4f} {logr / n:.4f} {full / n:.4f}")
// printed: 0.4904 -0.0002 0.0021
#[test]
fn crop_parameters_follow_torchvision_distribution() {
    let rrc = RandomResizedCrop::new(32);
    let mut rng = rng_for(21, Stream::Views, 0, 0);
    let n = 100_000;
    let (mut area, mut logr, mut full) = (0.0, 0.0, 0.0);
    for _ in 0..n {
        let w = rrc.sample_params(&mut rng, 32, 32);
        assert!(w.top + w.height <= 32 && w.left + w.width <= 32);
        area += (w.height * w.width) as f64 / 1024.0;
        logr += (w.width as f64 / w.height as f64).ln();
        full += (w.height == 32 && w.width == 32) as u8 as f64;
    }
    let n = n as f64;
    assert!((area / n - 0.4904).abs() < 0.005, "mean area {}", area / n);
    assert!(
        (logr / n - -0.0002).abs() < 0.005,
        "mean log ratio {}",
        logr / n
    );
    assert!(
        (full / n - 0.0021).abs() < 0.001,
        "whole image {}",
        full / n
    );
}

#[test]
fn fallback_is_torchvision_central_crop() {
    // Wide image: ratio 3 > 4/3 → height kept, width = round(10 · 4/3) = 13, centred.
    let w = RandomResizedCrop::fallback((0.75, 4.0 / 3.0), 10, 30);
    assert_eq!((w.top, w.left, w.height, w.width), (0, 8, 10, 13));
    // Tall image: width kept, height = round(10 / 0.75) = 13.
    let w = RandomResizedCrop::fallback((0.75, 4.0 / 3.0), 30, 10);
    assert_eq!((w.top, w.left, w.height, w.width), (8, 0, 13, 10));
    let w = RandomResizedCrop::fallback((0.75, 4.0 / 3.0), 32, 32);
    assert_eq!((w.top, w.left, w.height, w.width), (0, 0, 32, 32));
}

#[test]
fn flip_jitter_and_gray_probabilities_match_spec() {
    let aug = ViewAugment::new(32, NORM);
    let mut rng = rng_for(3, Stream::Views, 0, 0);
    let n = 100_000;
    let (mut flip, mut jit, mut gray) = (0, 0, 0);
    let mut hue_sum = 0.0;
    let mut first = [0usize; 4];
    for _ in 0..n {
        let p = aug.sample_params(&mut rng, 32, 32);
        flip += p.flip as usize;
        gray += p.color.gray as usize;
        if let Some(j) = p.color.jitter {
            jit += 1;
            let b = j.brightness.unwrap();
            let h = j.hue.unwrap();
            assert!((0.2..=1.8).contains(&b) && (-0.2..=0.2).contains(&h));
            hue_sum += h as f64;
            first[j.order[0] as usize] += 1;
        }
    }
    let f = |c: usize| c as f64 / n as f64;
    assert!((f(flip) - 0.5).abs() < 0.01, "flip {}", f(flip));
    assert!((f(jit) - 0.8).abs() < 0.01, "jitter {}", f(jit));
    assert!((f(gray) - 0.2).abs() < 0.01, "gray {}", f(gray));
    assert!((hue_sum / jit as f64).abs() < 0.005);
    for c in first {
        assert!(
            (c as f64 / jit as f64 - 0.25).abs() < 0.01,
            "order {first:?}"
        );
    }
}
