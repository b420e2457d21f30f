//! The synthetic "parts" dataset: determinism, mirror invariance of the class layouts, and that
//! the class is carried by the arrangement of the parts, not by which parts occur.

use spatial_reasoning::config::{DataConfig, DatasetKind};
use spatial_reasoning::data::synthetic::{
    self, layout_class, mirror, normalise, render, scene_at, PartKind, CLASS_LAYOUTS, NUM_CLASSES,
    SIZE,
};
use spatial_reasoning::data::{self, ImageDataset, Split};

fn pool(threads: usize) -> rayon::ThreadPool {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap()
}

#[test]
fn generation_does_not_depend_on_threads() {
    let one = pool(1).install(|| synthetic::generate(Split::Train, 600, 7).unwrap());
    let two = pool(2).install(|| synthetic::generate(Split::Train, 600, 7).unwrap());
    assert_eq!(one.pixels, two.pixels);
    assert_eq!(one.labels, two.labels);
    // Image i depends only on (seed, split, i): a longer run starts with the same images.
    let longer = pool(2).install(|| synthetic::generate(Split::Train, 700, 7).unwrap());
    assert_eq!(&longer.pixels[..one.pixels.len()], &one.pixels[..]);
    // Seeds and splits give different images.
    let other_seed = synthetic::generate(Split::Train, 600, 8).unwrap();
    let test = synthetic::generate(Split::Test, 600, 7).unwrap();
    assert_ne!(other_seed.pixels, one.pixels);
    assert_ne!(test.pixels, one.pixels);
}

#[test]
fn load_uses_config_sizes_and_balances_classes() {
    let cfg = DataConfig {
        dataset: DatasetKind::Synthetic,
        train_size: 1000,
        test_size: 250,
        synthetic_seed: 3,
        image_size: 64, // the augmentation's business: the dataset stays 32×32
        ..DataConfig::default()
    };
    let nowhere = std::path::Path::new("/nonexistent");
    let train = data::load(DatasetKind::Synthetic, nowhere, Split::Train, &cfg).unwrap();
    let test = data::load(DatasetKind::Synthetic, nowhere, Split::Test, &cfg).unwrap();
    assert_eq!((train.len(), test.len()), (1000, 250));
    assert_eq!((train.height, train.width), (32, 32));
    assert_eq!(train.class_counts().unwrap(), vec![100; 10]);
    assert_eq!(train.class_names[9], "chevron");
    assert_eq!(
        train.pixels,
        synthetic::generate(Split::Train, 1000, 3).unwrap().pixels
    );
    assert!(data::load(DatasetKind::Synthetic, nowhere, Split::Unlabeled, &cfg).is_err());
}

#[test]
fn classes_are_distinct_up_to_mirror() {
    for (c, layout) in CLASS_LAYOUTS.iter().enumerate() {
        assert_eq!(layout_class(layout), Some(c));
        assert_eq!(
            layout_class(&mirror(layout)),
            Some(c),
            "mirror of class {c}"
        );
        for (d, other) in CLASS_LAYOUTS.iter().enumerate().filter(|(d, _)| *d != c) {
            assert_ne!(normalise(layout), normalise(other), "{c} = {d}");
            assert_ne!(normalise(layout), mirror(other), "{c} is the mirror of {d}");
        }
    }
    // Something that is no class's layout (an L with a longer leg).
    assert_eq!(layout_class(&[(0, 0), (2, 0), (2, 1)]), None);
}

fn hflip(img: &[u8]) -> Vec<u8> {
    let mut out = vec![0u8; img.len()];
    for row in 0..SIZE {
        for col in 0..SIZE {
            let (d, s) = ((row * SIZE + col) * 3, (row * SIZE + SIZE - 1 - col) * 3);
            out[d..d + 3].copy_from_slice(&img[s..s + 3]);
        }
    }
    out
}

#[test]
fn mirrored_scenes_keep_their_class() {
    let mut seen_mirrored = [false; NUM_CLASSES];
    for i in 0..500 {
        let scene = scene_at(11, 0, i);
        let class = i % NUM_CLASSES;
        assert_eq!(scene.class, class);
        // The generator's layout is a layout of its class, and so is its mirror image …
        assert_eq!(layout_class(&scene.cells), Some(class));
        let m = scene.mirrored();
        assert_eq!(layout_class(&m.cells), Some(class));
        // … also as recovered from the jittered part positions.
        assert_eq!(layout_class(&scene.cells_from_positions()), Some(class));
        assert_eq!(layout_class(&m.cells_from_positions()), Some(class));
        // Rendering the mirrored scene is exactly the horizontal flip of the image.
        let (mut a, mut b) = (vec![0u8; SIZE * SIZE * 3], vec![0u8; SIZE * SIZE * 3]);
        render(&scene, &mut a);
        render(&m, &mut b);
        assert_eq!(hflip(&a), b, "image {i}");
        // Both orientations are generated.
        if normalise(&scene.cells) != normalise(&CLASS_LAYOUTS[class]) {
            seen_mirrored[class] = true;
        }
        // Every part lies inside the image.
        for p in &scene.parts {
            assert!(
                p.cx - 1.15 * p.r >= 0.0 && p.cx + 1.15 * p.r <= SIZE as f64,
                "{p:?}"
            );
            assert!(
                p.cy - 1.15 * p.r >= 0.0 && p.cy + 1.15 * p.r <= SIZE as f64,
                "{p:?}"
            );
        }
    }
    // Classes whose layout differs from its mirror show both versions.
    for (c, seen) in seen_mirrored.iter().enumerate() {
        let symmetric = normalise(&CLASS_LAYOUTS[c]) == mirror(&CLASS_LAYOUTS[c]);
        assert_eq!(*seen, !symmetric, "class {c}");
    }
}

#[test]
fn part_types_do_not_depend_on_the_class() {
    // 300 images per class, 900 parts: each of the 8 kinds expected 112.5 times (sd ≈ 10).
    let kinds = PartKind::ALL;
    for class in 0..NUM_CLASSES {
        let mut counts = [0usize; 8];
        for j in 0..300 {
            for p in scene_at(5, 0, j * NUM_CLASSES + class).parts {
                counts[kinds.iter().position(|&k| k == p.kind).unwrap()] += 1;
            }
        }
        assert!(
            counts.iter().all(|&n| (70..=155).contains(&n)),
            "class {class}: {counts:?}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// The class is in the arrangement: a nearest-centroid classifier on a translation-invariant
// *layout* feature (the mirror-symmetrised autocorrelation of the foreground mask) does well,
// one on *appearance* features (colour statistics, foreground area) is near chance (10 %).

fn foreground(img: &[u8]) -> Vec<f32> {
    let v: Vec<i32> = img
        .chunks(3)
        .map(|p| *p.iter().max().unwrap() as i32)
        .collect();
    let mut border: Vec<i32> = (0..SIZE)
        .flat_map(|k| {
            [
                v[k],
                v[(SIZE - 1) * SIZE + k],
                v[k * SIZE],
                v[k * SIZE + SIZE - 1],
            ]
        })
        .collect();
    border.sort_unstable();
    let bg = border[border.len() / 2];
    v.iter()
        .map(|&x| ((x - bg).abs() > 40) as i32 as f32)
        .collect()
}

fn layout_feature(img: &[u8]) -> Vec<f32> {
    let m = foreground(img);
    let s = SIZE as i32;
    let r = 24;
    let mut f = Vec::new();
    for dy in 0..=r {
        for dx in 0..=r {
            let mut acc = 0.0;
            for y in 0..s - dy {
                for x in 0..s {
                    let at = |xx: i32| {
                        if (0..s).contains(&xx) {
                            m[((y + dy) * s + xx) as usize]
                        } else {
                            0.0
                        }
                    };
                    let v = m[(y * s + x) as usize];
                    if v > 0.0 {
                        acc += v * (at(x + dx) + if dx > 0 { at(x - dx) } else { 0.0 });
                    }
                }
            }
            f.push(acc);
        }
    }
    let norm = f.iter().map(|v| v * v).sum::<f32>().sqrt().max(1e-6);
    f.iter().map(|v| v / norm).collect()
}

fn appearance_feature(img: &[u8]) -> Vec<f32> {
    let m = foreground(img);
    let mut f = Vec::new();
    for ch in 0..3 {
        let vals: Vec<f32> = img.iter().skip(ch).step_by(3).map(|&v| v as f32).collect();
        let mean = vals.iter().sum::<f32>() / vals.len() as f32;
        let var = vals.iter().map(|v| (v - mean).powi(2)).sum::<f32>() / vals.len() as f32;
        f.extend([mean, var.sqrt()]);
    }
    f.push(m.iter().sum::<f32>());
    f
}

/// Accuracy on `test` of the nearest class centroid of standardised features of `train`.
fn nearest_centroid(train: &ImageDataset, test: &ImageDataset, feat: fn(&[u8]) -> Vec<f32>) -> f64 {
    let ftr: Vec<Vec<f32>> = (0..train.len()).map(|i| feat(train.image(i))).collect();
    let fte: Vec<Vec<f32>> = (0..test.len()).map(|i| feat(test.image(i))).collect();
    let d = ftr[0].len();
    let n = ftr.len() as f32;
    let mean: Vec<f32> = (0..d)
        .map(|j| ftr.iter().map(|f| f[j]).sum::<f32>() / n)
        .collect();
    let sd: Vec<f32> = (0..d)
        .map(|j| {
            (ftr.iter().map(|f| (f[j] - mean[j]).powi(2)).sum::<f32>() / n)
                .sqrt()
                .max(1e-6)
        })
        .collect();
    let z = |f: &Vec<f32>| -> Vec<f32> { (0..d).map(|j| (f[j] - mean[j]) / sd[j]).collect() };
    let mut cent = vec![vec![0f32; d]; NUM_CLASSES];
    let mut cnt = vec![0f32; NUM_CLASSES];
    for (i, f) in ftr.iter().enumerate() {
        let c = train.label(i).unwrap() as usize;
        for (a, b) in cent[c].iter_mut().zip(z(f)) {
            *a += b;
        }
        cnt[c] += 1.0;
    }
    for (c, n) in cent.iter_mut().zip(&cnt) {
        c.iter_mut().for_each(|v| *v /= n);
    }
    let mut correct = 0;
    for (i, f) in fte.iter().enumerate() {
        let zf = z(f);
        let best = (0..NUM_CLASSES)
            .min_by(|&a, &b| {
                let da: f32 = cent[a].iter().zip(&zf).map(|(x, y)| (x - y).powi(2)).sum();
                let db: f32 = cent[b].iter().zip(&zf).map(|(x, y)| (x - y).powi(2)).sum();
                da.total_cmp(&db)
            })
            .unwrap();
        correct += (best == test.label(i).unwrap() as usize) as usize;
    }
    correct as f64 / test.len() as f64
}

#[test]
fn class_is_in_the_layout_not_the_appearance() {
    let train = synthetic::generate(Split::Train, 2000, 0).unwrap();
    let test = synthetic::generate(Split::Test, 1000, 0).unwrap();
    let layout = nearest_centroid(&train, &test, layout_feature);
    let appearance = nearest_centroid(&train, &test, appearance_feature);
    let pixels = nearest_centroid(&train, &test, |img| img.iter().map(|&v| v as f32).collect());
    eprintln!(
        "nearest centroid accuracy: layout {layout:.3}, appearance {appearance:.3}, raw pixels {pixels:.3}"
    );
    assert!(layout > 0.5, "layout {layout}");
    assert!(appearance < 0.2, "appearance {appearance}");
}

#[test]
fn cli_preview_writes_a_labelled_png() {
    let out = std::env::temp_dir().join(format!("sr-preview-{}.png", std::process::id()));
    let status = std::process::Command::new(env!("CARGO_BIN_EXE_spatial-reasoning"))
        .args([
            "data",
            "preview",
            "--dataset",
            "synthetic",
            "--per-class",
            "3",
            "--out",
        ])
        .arg(&out)
        .output()
        .unwrap();
    assert!(status.status.success(), "{status:?}");
    let img = image::open(&out).unwrap().to_rgb8();
    let _ = std::fs::remove_file(&out);
    // 3 columns of 96 + 6 px, 10 rows of 96 + 16 + 6 px, title 24, padding 6.
    assert_eq!(img.dimensions(), (3 * 102 + 6, 24 + 10 * 118 + 6));
    // Top-left image = synthetic train image 0 scaled ×3.
    let ds = synthetic::generate(Split::Train, 1, 0).unwrap();
    assert_eq!(img.get_pixel(6 + 2, 24 + 2).0, ds.image(0)[..3]);
}

/// Writes the default synthetic splits (seed 0) as raw files for `data-scripts/synthetic_probe.py`:
/// `cargo test --release --test data_synthetic dump -- --ignored` with `SYNTHETIC_DUMP_DIR` set.
#[test]
#[ignore = "writes files for an external measurement"]
fn dump_for_external_probe() {
    let dir =
        std::path::PathBuf::from(std::env::var("SYNTHETIC_DUMP_DIR").unwrap_or("/tmp".into()));
    for (split, n) in [(Split::Train, 10_000), (Split::Test, 2_000)] {
        let ds = synthetic::generate(split, n, 0).unwrap();
        std::fs::write(dir.join(format!("syn_{}_x.bin", ds.split)), &ds.pixels).unwrap();
        let labels: Vec<u8> = ds.labels.unwrap().iter().map(|&v| v as u8).collect();
        std::fs::write(dir.join(format!("syn_{}_y.bin", ds.split)), labels).unwrap();
    }
}
