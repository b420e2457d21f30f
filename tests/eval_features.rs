//! Feature extraction (frozen backbone), patch-grid features, the `.feat` file and the cache.

mod eval_common;

use dfdx::prelude::*;
use eval_common::{colour_dataset, snapshot, temp_dir, toy};
use spatial_reasoning::augment::{resized_crop, Image, Normalize, Window};
use spatial_reasoning::config::{OverlapRule, PatchGeometry};
use spatial_reasoning::eval::{
    extract_features, extract_grid_features, grid_positions, probe_features, EvalError,
    FeatureCache, FeatureSet,
};
use spatial_reasoning::models::Backbone;

/// A square image side `s` with windows of side `p`.
fn geo(s: usize, p: usize) -> PatchGeometry {
    PatchGeometry::resolve(s, p, 0, OverlapRule::Forbidden).unwrap()
}

fn quiet() -> impl FnMut(spatial_reasoning::eval::ProgressEvent) {
    |_| {}
}

const NORM: Normalize = Normalize {
    mean: [0.5, 0.4, 0.3],
    std: [0.25, 0.2, 0.3],
};

/// Make the toy backbone's running statistics non-trivial with a few train-mode passes.
fn trained_toy(dev: &Cpu) -> eval_common::Toy<f32, Cpu> {
    let mut bb = toy(dev);
    for _ in 0..3 {
        let x: Tensor<(usize, Const<3>, usize, usize), f32, Cpu> =
            dev.sample_normal_like(&(8, Const, 8, 8));
        let grads = bb.alloc_grads();
        let _ = bb.forward_train(x.traced(grads)).unwrap();
    }
    bb
}

/// Normalised CHW of image `i` cut at `window` and resized to `s`, built by hand from the
/// augment module's public functions.
fn manual_input(
    ds: &spatial_reasoning::data::ImageDataset,
    i: usize,
    w: Window,
    s: usize,
) -> Vec<f32> {
    let img = Image::from_hwc_u8(ds.image(i), ds.height, ds.width);
    let mut out = if w.height == s && w.width == s && w.top == 0 && w.left == 0 {
        img.data
    } else {
        resized_crop(&img, w, s, s).data
    };
    for c in 0..3 {
        for v in &mut out[c * s * s..(c + 1) * s * s] {
            *v = (*v - NORM.mean[c]) / NORM.std[c];
        }
    }
    out
}

fn direct_features(
    bb: &eval_common::Toy<f32, Cpu>,
    dev: &Cpu,
    ds: &spatial_reasoning::data::ImageDataset,
    w: Window,
    s: usize,
) -> Vec<f32> {
    let mut buf = vec![];
    for i in 0..ds.len() {
        buf.extend(manual_input(ds, i, w, s));
    }
    let x = dev.tensor_from_vec(buf, (ds.len(), Const::<3>, s, s));
    bb.forward_eval(x).unwrap().as_vec()
}

fn assert_close(a: &[f32], b: &[f32], tol: f32) {
    assert_eq!(a.len(), b.len());
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        assert!(
            (x - y).abs() <= tol * y.abs().max(1.0),
            "value {i}: {x} vs {y}"
        );
    }
}

#[test]
fn evaluation_leaves_weights_and_running_stats_bit_identical() {
    let dev = Cpu::seed_from_u64(0);
    let bb = trained_toy(&dev);
    let ds = colour_dataset(40, 8, 4, 1);
    let before = snapshot(&bb, "frozen-before");
    extract_features(&bb, &dev, &ds, &NORM, 8, 16, &mut quiet()).unwrap();
    extract_grid_features(&bb, &dev, &ds, &NORM, &geo(8, 3), &[9], 16, &mut quiet()).unwrap();
    let after = snapshot(&bb, "frozen-after");
    assert_eq!(before, after, "evaluation changed the backbone");
    // The check is sensitive: one train-mode pass changes the running statistics.
    let mut moved = bb.clone();
    let x: Tensor<(usize, Const<3>, usize, usize), f32, Cpu> =
        dev.sample_normal_like(&(4, Const, 8, 8));
    let grads = moved.alloc_grads();
    let _ = moved.forward_train(x.traced(grads)).unwrap();
    assert_ne!(before, snapshot(&moved, "frozen-moved"));
}

#[test]
fn features_equal_a_direct_eval_forward_at_any_batch_size() {
    let dev = Cpu::seed_from_u64(1);
    let bb = trained_toy(&dev);
    let ds = colour_dataset(23, 8, 5, 2);
    let whole = Window {
        top: 0,
        left: 0,
        height: 8,
        width: 8,
    };
    let expect = direct_features(&bb, &dev, &ds, whole, 8);
    let mut events = 0;
    let f = extract_features(&bb, &dev, &ds, &NORM, 8, 7, &mut |_| events += 1).unwrap();
    assert_eq!(
        events, 4,
        "one progress event per batch of 7 over 23 images"
    );
    assert_eq!((f.n, f.dim, f.classes), (23, 64, 5));
    assert_eq!(f.labels, ds.labels.clone().unwrap());
    assert_close(&f.data, &expect, 1e-5);
    let g = extract_features(&bb, &dev, &ds, &NORM, 8, 100, &mut quiet()).unwrap();
    assert_close(&g.data, &f.data, 1e-5);
}

#[test]
fn images_are_resized_when_the_input_size_differs() {
    let dev = Cpu::seed_from_u64(2);
    let bb = trained_toy(&dev);
    let ds = colour_dataset(6, 8, 2, 3);
    let whole = Window {
        top: 0,
        left: 0,
        height: 8,
        width: 8,
    };
    let expect = direct_features(&bb, &dev, &ds, whole, 12);
    let f = extract_features(&bb, &dev, &ds, &NORM, 12, 4, &mut quiet()).unwrap();
    assert_close(&f.data, &expect, 1e-5);
}

#[test]
fn grid_windows_are_zoomed_crops_and_probe_features_concatenate_in_grid_order() {
    let dev = Cpu::seed_from_u64(3);
    let bb = trained_toy(&dev);
    let ds = colour_dataset(10, 16, 2, 4);
    // S = 16, p = 6: offsets 0, 5, 10; n = 3 is the middle row: centre, left, right.
    assert_eq!(
        grid_positions(&geo(16, 6), 3).unwrap(),
        vec![(5, 5), (5, 0), (5, 10)]
    );
    let full = extract_features(&bb, &dev, &ds, &NORM, 16, 4, &mut quiet()).unwrap();
    let grid = extract_grid_features(&bb, &dev, &ds, &NORM, &geo(16, 6), &[1, 3], 4, &mut quiet())
        .unwrap();
    assert_eq!(
        grid.windows.len(),
        3,
        "windows of n = 1 and n = 3 are shared"
    );
    for (&(r, c), set) in &grid.windows {
        let w = Window {
            top: r,
            left: c,
            height: 6,
            width: 6,
        };
        assert_close(&set.data, &direct_features(&bb, &dev, &ds, w, 16), 1e-5);
    }
    let p0 = probe_features(&full, &grid, 0).unwrap();
    assert_eq!(p0, full);
    let p3 = probe_features(&full, &grid, 3).unwrap();
    assert_eq!((p3.n, p3.dim), (10, 256));
    for i in 0..10 {
        let row = p3.row(i);
        assert_eq!(&row[..64], full.row(i));
        assert_eq!(&row[64..128], grid.windows[&(5, 5)].row(i));
        assert_eq!(&row[128..192], grid.windows[&(5, 0)].row(i));
        assert_eq!(&row[192..], grid.windows[&(5, 10)].row(i));
    }
    let e = probe_features(&full, &grid, 5).unwrap_err();
    assert!(e.to_string().contains("not extracted"), "{e}");
    let e = probe_features(&full, &grid, 4).unwrap_err();
    assert!(e.to_string().contains('4'), "{e}");
}

#[test]
fn bad_inputs_are_named_errors() {
    let dev = Cpu::seed_from_u64(4);
    let bb = toy(&dev);
    let mut ds = colour_dataset(4, 8, 2, 5);
    let e = extract_features(&bb, &dev, &ds, &NORM, 8, 0, &mut quiet()).unwrap_err();
    assert!(e.to_string().contains("batch"), "{e}");
    let bad = Normalize {
        mean: [0.0; 3],
        std: [1.0, 0.0, 1.0],
    };
    let e = extract_features(&bb, &dev, &ds, &bad, 8, 2, &mut quiet()).unwrap_err();
    assert!(e.to_string().contains("std[1]"), "{e}");
    ds.labels = None;
    let e = extract_features(&bb, &dev, &ds, &NORM, 8, 2, &mut quiet()).unwrap_err();
    assert!(matches!(e, EvalError::Unlabelled { .. }), "{e}");
}

#[test]
fn feature_files_round_trip_and_corruption_is_reported() {
    let dir = temp_dir("featfile");
    let set = FeatureSet::new(3, vec![1.0, -2.5, 3.25, 0.0, 1e-7, -1e7], vec![1, 0], 2).unwrap();
    let p = dir.join("x.feat");
    set.save(&p, "checkpoint epoch-3").unwrap();
    let (back, tag) = FeatureSet::load(&p).unwrap();
    assert_eq!(back, set);
    assert_eq!(tag, "checkpoint epoch-3");
    let bytes = std::fs::read(&p).unwrap();
    assert_eq!(bytes.len(), 36 + 18 + 4 * 6 + 2 * 2);
    std::fs::write(&p, &bytes[..bytes.len() - 1]).unwrap();
    let e = FeatureSet::load(&p).unwrap_err();
    assert!(
        e.to_string().contains("x.feat") && e.to_string().contains("implies"),
        "{e}"
    );
    let mut wrong = bytes.clone();
    wrong[0] = b'X';
    std::fs::write(&p, &wrong).unwrap();
    let e = FeatureSet::load(&p).unwrap_err();
    assert!(e.to_string().contains("magic"), "{e}");
    let mut bad_label = bytes.clone();
    let n = bad_label.len();
    bad_label[n - 2] = 9;
    std::fs::write(&p, &bad_label).unwrap();
    let e = FeatureSet::load(&p).unwrap_err();
    assert!(e.to_string().contains("label 9"), "{e}");
}

#[test]
fn the_cache_computes_once_per_tag() {
    let cache = FeatureCache::new(temp_dir("cache").join("features"));
    let set = FeatureSet::new(2, vec![1.0, 2.0, 3.0, 4.0], vec![0, 1], 2).unwrap();
    let mut calls = 0;
    for _ in 0..2 {
        let got = cache
            .get_or_compute("cifar10-test-n0", "ckpt-a", || {
                calls += 1;
                Ok(set.clone())
            })
            .unwrap();
        assert_eq!(got, set);
    }
    assert_eq!(calls, 1, "the second call reads the file");
    cache
        .get_or_compute("cifar10-test-n0", "ckpt-b", || {
            calls += 1;
            Ok(set.clone())
        })
        .unwrap();
    assert_eq!(calls, 2, "another tag is stale and recomputed");
    assert!(cache.load("cifar10-test-n0", "ckpt-a").unwrap().is_none());
    let e = cache.path("../escape").unwrap_err();
    assert!(e.to_string().contains("escape"), "{e}");
}
