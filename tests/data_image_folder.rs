//! `data.dataset = "image-folder"` on folders the tests write: mixed sizes and formats (PNG,
//! JPEG, WebP), grey and RGBA, the resize rules, the cache (reuse, rebuild on any change), every
//! bad file named at once, the layout rules, the config checks, and the CLI commands (`data
//! verify`, `data preview`, `pretrain`, `eval`, `run`) on a folder of mixed-size JPEGs.

use std::path::{Path, PathBuf};
use std::process::Command;

use image::{GrayImage, Rgb, RgbImage, Rgba, RgbaImage};
use spatial_reasoning::config::{Config, ConfigError, DataConfig, DatasetKind, ResizeRule};
use spatial_reasoning::data::image_folder::{self, CacheEvent, CachePolicy, FolderSpec};
use spatial_reasoning::data::{self, DataError, Split};

/// A temporary directory removed on drop.
struct TempDir(PathBuf);
impl TempDir {
    fn new(tag: &str) -> TempDir {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let p = std::env::temp_dir().join(format!("sr-if-{tag}-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
    fn path(&self) -> &Path {
        &self.0
    }
}
impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn mkdirs(path: &Path) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
}

/// Save an RGB image; the format follows the extension (`.webp` is lossless).
fn save(path: &Path, img: &RgbImage) {
    mkdirs(path);
    img.save(path).unwrap();
}

/// A `w × h` image: a colour that depends on `seed` plus a diagonal gradient (never constant).
fn varied(w: u32, h: u32, seed: u8) -> RgbImage {
    RgbImage::from_fn(w, h, |x, y| {
        Rgb([
            seed.wrapping_mul(37).wrapping_add((x * 3) as u8),
            seed.wrapping_mul(91).wrapping_add((y * 2) as u8),
            ((x + y) * 4) as u8,
        ])
    })
}

fn spec(root: &Path, size: usize, resize: ResizeRule) -> FolderSpec {
    FolderSpec::from_config(&DataConfig {
        dataset: DatasetKind::ImageFolder,
        path: Some(root.to_path_buf()),
        image_size: size,
        resize,
        ..DataConfig::default()
    })
    .unwrap()
}

fn load(spec: &FolderSpec, split: Split) -> Result<data::ImageDataset, DataError> {
    image_folder::load(spec, split, CachePolicy::Reuse, &mut |_| {})
}

/// Load, returning the events too.
fn load_events(
    spec: &FolderSpec,
    split: Split,
) -> (Result<data::ImageDataset, DataError>, Vec<CacheEvent>) {
    let mut events = Vec::new();
    let r = image_folder::load(spec, split, CachePolicy::Reuse, &mut |e| events.push(e));
    (r, events)
}

fn built(events: &[CacheEvent]) -> bool {
    events
        .iter()
        .any(|e| matches!(e, CacheEvent::Written { .. }))
}

fn reused(events: &[CacheEvent]) -> bool {
    events
        .iter()
        .any(|e| matches!(e, CacheEvent::Reused { .. }))
}

fn px(ds: &data::ImageDataset, i: usize, row: usize, col: usize) -> [u8; 3] {
    let img = ds.image(i);
    let o = (row * ds.width + col) * 3;
    [img[o], img[o + 1], img[o + 2]]
}

/// Two classes, mixed sizes and formats, exact pixels where the format is lossless:
/// - `cat/a_split.png` 40×20: left half red, right half blue;
/// - `cat/b_grey.png` 12×12 grey 77;
/// - `cat/c_rgba.png` 9×9 RGBA (10, 20, 30, alpha 0);
/// - `dog/e.webp` 8×8 lossless WebP (200, 100, 50), `dog/nested/d.jpg` 50×30 gradient JPEG.
fn mixed_fixture(root: &Path) {
    let split_img = RgbImage::from_fn(40, 20, |x, _| {
        if x < 20 {
            Rgb([255, 0, 0])
        } else {
            Rgb([0, 0, 255])
        }
    });
    for split in ["train", "test"] {
        let d = root.join(split);
        save(&d.join("cat/a_split.png"), &split_img);
        let grey = GrayImage::from_pixel(12, 12, image::Luma([77]));
        mkdirs(&d.join("cat/b_grey.png"));
        grey.save(d.join("cat/b_grey.png")).unwrap();
        let rgba = RgbaImage::from_pixel(9, 9, Rgba([10, 20, 30, 0]));
        rgba.save(d.join("cat/c_rgba.png")).unwrap();
        save(&d.join("dog/nested/d.jpg"), &varied(50, 30, 3));
        save(
            &d.join("dog/e.webp"),
            &RgbImage::from_pixel(8, 8, Rgb([200, 100, 50])),
        );
    }
}

#[test]
fn mixed_sizes_and_formats_center_crop() {
    let tmp = TempDir::new("mixed");
    mixed_fixture(tmp.path());
    let s = spec(tmp.path(), 8, ResizeRule::CenterCrop);
    let ds = load(&s, Split::Train).unwrap();
    assert_eq!((ds.len(), ds.height, ds.width), (5, 8, 8));
    assert_eq!(ds.class_names, vec!["cat", "dog"]);
    assert_eq!(ds.labels.as_deref(), Some(&[0u16, 0, 0, 1, 1][..]));
    // 40×20 → centre 20×20 (x 10..30: red 10..20, blue 20..30) → 8×8 with a bilinear filter of
    // support 2.5 source px: output columns 0-2 see only red, 5-7 only blue.
    for row in 0..8 {
        for col in 0..3 {
            assert_eq!(px(&ds, 0, row, col), [255, 0, 0], "row {row} col {col}");
            assert_eq!(px(&ds, 0, row, 7 - col), [0, 0, 255], "row {row} col {col}");
        }
    }
    // Grey is replicated; a constant image stays constant through the resize.
    assert!(ds.image(1).iter().all(|&v| v == 77));
    // Alpha is discarded: the stored colour is kept even where fully transparent.
    assert!(ds.image(2).chunks(3).all(|p| p == [10, 20, 30]));
    // WebP (lossless), 8×8 already: copied exactly. Within a class, entries are sorted by name
    // and folders are walked in place: `e.webp` comes before `nested/d.jpg`.
    assert!(ds.image(3).chunks(3).all(|p| p == [200, 100, 50]));
    assert!(ds.image(4).chunks(3).any(|p| p != [200, 100, 50]));
    // Test split: the same classes and files.
    let test = load(&s, Split::Test).unwrap();
    assert_eq!(test.pixels, ds.pixels);
    // The normalisation statistics come from this training split.
    let (mean, _) = data::channel_stats(&ds);
    let n = ds.pixels.len() / 3;
    let red: u64 = ds.pixels.chunks(3).map(|p| p[0] as u64).sum();
    assert!((mean[0] as f64 - red as f64 / n as f64 / 255.0).abs() < 1e-6);
}

#[test]
fn resize_none_requires_the_exact_size_and_names_both_sizes() {
    let tmp = TempDir::new("none");
    for split in ["train", "test"] {
        save(&tmp.path().join(split).join("a/ok.png"), &varied(8, 8, 1));
        save(&tmp.path().join(split).join("b/ok.png"), &varied(8, 8, 2));
    }
    let s = spec(tmp.path(), 8, ResizeRule::None);
    let ds = load(&s, Split::Train).unwrap();
    assert_eq!(
        ds.image(0),
        varied(8, 8, 1).as_raw().as_slice(),
        "exact copy"
    );
    save(&tmp.path().join("train/b/wide.png"), &varied(10, 12, 3));
    let e = load(&s, Split::Train).unwrap_err().to_string();
    assert!(
        e.contains("wide.png") && e.contains("10×12") && e.contains("8×8"),
        "{e}"
    );
}

#[test]
fn exif_orientation_is_applied() {
    use image::ImageEncoder;
    let tmp = TempDir::new("exif");
    // 32×16, left half red, right half blue, stored with EXIF orientation 6 ("rotate 90° clockwise
    // to display"): displayed 16×32 with red on top.
    let img = RgbImage::from_fn(32, 16, |x, _| {
        if x < 16 {
            Rgb([255, 0, 0])
        } else {
            Rgb([0, 0, 255])
        }
    });
    let exif: Vec<u8> = [
        &b"II*\0"[..],
        &8u32.to_le_bytes(),
        &1u16.to_le_bytes(),
        &0x0112u16.to_le_bytes(),
        &3u16.to_le_bytes(),
        &1u32.to_le_bytes(),
        &6u16.to_le_bytes(),
        &0u16.to_le_bytes(),
        &0u32.to_le_bytes(),
    ]
    .concat();
    let mut bytes = Vec::new();
    let mut enc = image::codecs::jpeg::JpegEncoder::new_with_quality(&mut bytes, 95);
    enc.set_exif_metadata(exif).unwrap();
    enc.write_image(img.as_raw(), 32, 16, image::ExtendedColorType::Rgb8)
        .unwrap();
    let path = tmp.path().join("rotated.jpg");
    std::fs::write(&path, &bytes).unwrap();
    let decoded = image_folder::decode_rgb(&path).unwrap();
    assert_eq!(decoded.dimensions(), (16, 32));
    let top = decoded.get_pixel(8, 4).0;
    let bottom = decoded.get_pixel(8, 27).0;
    assert!(top[0] > 200 && top[2] < 60, "{top:?}");
    assert!(bottom[2] > 200 && bottom[0] < 60, "{bottom:?}");
}

#[test]
fn every_bad_file_is_named_at_once() {
    let tmp = TempDir::new("bad");
    let r = tmp.path();
    for split in ["train", "test"] {
        save(&r.join(split).join("a/good.png"), &varied(8, 8, 1));
        save(&r.join(split).join("b/good.jpg"), &varied(9, 7, 2));
    }
    let t = r.join("train");
    std::fs::write(t.join("a/garbage.jpg"), b"this is not a jpeg").unwrap();
    let png = std::fs::read(t.join("a/good.png")).unwrap();
    std::fs::write(t.join("a/truncated.png"), &png[..png.len() / 2]).unwrap();
    std::fs::write(t.join("b/notes.txt"), b"labels are in my head").unwrap();
    std::fs::write(t.join("loose.png"), &png).unwrap();
    std::fs::create_dir_all(t.join("c")).unwrap();
    std::fs::create_dir_all(r.join("test/c")).unwrap();
    // Hidden entries are skipped (and counted), never errors.
    std::fs::write(t.join("a/.DS_Store"), b"\0\0").unwrap();
    let s = spec(r, 8, ResizeRule::CenterCrop);
    let e = load(&s, Split::Train).unwrap_err();
    let DataError::Several { problems, .. } = &e else {
        panic!("expected several problems: {e}");
    };
    let text = e.to_string();
    // Layout problems and undecodable files, all in one pass.
    for name in [
        "notes.txt",
        "loose.png",
        "train/c",
        "garbage.jpg",
        "truncated.png",
    ] {
        assert!(text.contains(name), "{name} missing from:\n{text}");
    }
    assert_eq!(problems.len(), 5, "{text}");
    assert!(!text.contains("good"), "{text}");
    // No cache was written for a failed split.
    assert!(!s.cache_path(Split::Train).exists());
    std::fs::remove_file(t.join("b/notes.txt")).unwrap();
    std::fs::remove_file(t.join("loose.png")).unwrap();
    std::fs::remove_dir(t.join("c")).unwrap();
    std::fs::remove_file(t.join("a/garbage.jpg")).unwrap();
    std::fs::remove_file(t.join("a/truncated.png")).unwrap();
    let (ds, events) = load_events(&s, Split::Train);
    assert_eq!(ds.unwrap().len(), 2);
    assert!(events.contains(&CacheEvent::Scanned {
        split: Split::Train,
        images: 2,
        classes: 2,
        hidden: 1
    }));
}

/// CRC-32 (PNG chunks), bitwise.
fn crc32(bytes: &[u8]) -> u32 {
    let mut c = !0u32;
    for &b in bytes {
        c ^= b as u32;
        for _ in 0..8 {
            c = if c & 1 != 0 {
                0xEDB8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
        }
    }
    !c
}

/// A PNG whose header claims 2^24 × 2^24 pixels (a valid header, CRC included) is refused with
/// an error naming the file, instead of aborting the process on a 768 TiB allocation (the
/// `image_folder` fuzz target found it: `into_decoder` skips the allocation limit).
#[test]
fn a_header_claiming_a_huge_image_is_an_error_not_an_abort() {
    let tmp = TempDir::new("huge");
    let path = tmp.path().join("huge.png");
    save(&path, &varied(2, 2, 3));
    let mut png = std::fs::read(&path).unwrap();
    // Signature (8), IHDR length (4), "IHDR" (4), width, height, 5 more bytes, then the CRC.
    assert_eq!(&png[12..16], b"IHDR");
    png[16..20].copy_from_slice(&(1u32 << 24).to_be_bytes());
    png[20..24].copy_from_slice(&(1u32 << 24).to_be_bytes());
    let crc = crc32(&png[12..29]);
    png[29..33].copy_from_slice(&crc.to_be_bytes());
    std::fs::write(&path, &png).unwrap();
    let e = image_folder::decode_rgb(&path).unwrap_err().to_string();
    assert!(e.contains("huge.png") && e.contains("cannot decode"), "{e}");
}

#[test]
fn layout_rules() {
    let tmp = TempDir::new("layout");
    let r = tmp.path();
    let s = spec(r, 8, ResizeRule::CenterCrop);
    // No train/ at all.
    let e = load(&s, Split::Train).unwrap_err().to_string();
    assert!(e.contains("train"), "{e}");
    for class in ["a", "b", "c"] {
        save(&r.join("train").join(class).join("x.png"), &varied(8, 8, 1));
    }
    // No test/ or val/.
    let e = load(&s, Split::Test).unwrap_err().to_string();
    assert!(e.contains("test") && e.contains("val"), "{e}");
    // val/ is accepted, and must hold the train classes.
    for class in ["a", "b", "d"] {
        save(&r.join("val").join(class).join("y.png"), &varied(8, 8, 2));
    }
    let e = load(&s, Split::Test).unwrap_err().to_string();
    assert!(
        e.contains("class `c` is in") && e.contains("class `d` is not in"),
        "{e}"
    );
    std::fs::rename(r.join("val/d"), r.join("val/c")).unwrap();
    let test = load(&s, Split::Test).unwrap();
    assert_eq!(test.class_names, vec!["a", "b", "c"]);
    assert_eq!(test.labels.as_deref(), Some(&[0u16, 1, 2][..]));
    // test/ and val/ together are ambiguous.
    save(&r.join("test/a/z.png"), &varied(8, 8, 3));
    let e = load(&s, Split::Test).unwrap_err().to_string();
    assert!(e.contains("both test/ and val/"), "{e}");
    std::fs::remove_dir_all(r.join("test")).unwrap();
    // unlabeled/: any depth, optional until asked for.
    assert!(!image_folder::has_unlabeled(&s));
    assert!(load(&s, Split::Unlabeled)
        .unwrap_err()
        .to_string()
        .contains("unlabeled"));
    save(&r.join("unlabeled/deep/er/u1.jpg"), &varied(20, 10, 4));
    save(&r.join("unlabeled/u2.png"), &varied(7, 30, 5));
    let u = load(&s, Split::Unlabeled).unwrap();
    assert_eq!((u.len(), u.labels.is_none()), (2, true));
}

#[test]
fn one_class_is_refused_for_probing_but_pretrains() {
    let tmp = TempDir::new("oneclass");
    for split in ["train", "test"] {
        save(&tmp.path().join(split).join("only/x.png"), &varied(8, 8, 1));
    }
    let s = spec(tmp.path(), 8, ResizeRule::None);
    assert_eq!(load(&s, Split::Train).unwrap().num_classes(), 1);
    let e = load(&s, Split::Test).unwrap_err().to_string();
    assert!(
        e.contains("at least two classes") && e.contains("only"),
        "{e}"
    );
}

#[test]
fn cache_is_reused_and_rebuilt_on_any_change() {
    let tmp = TempDir::new("cache");
    let r = tmp.path();
    for (i, class) in ["a", "b"].iter().enumerate() {
        for j in 0..3u8 {
            save(
                &r.join("train").join(class).join(format!("{j}.png")),
                &varied(12 + j as u32, 10, i as u8 * 10 + j),
            );
        }
    }
    let s = spec(r, 8, ResizeRule::CenterCrop);
    let (first, ev) = load_events(&s, Split::Train);
    let first = first.unwrap();
    assert!(built(&ev) && !reused(&ev), "{ev:?}");
    assert!(ev.iter().any(|e| matches!(
        e,
        CacheEvent::Decoded {
            done: 6,
            total: 6,
            ..
        }
    )));
    assert!(s
        .cache_path(Split::Train)
        .starts_with(r.join(image_folder::CACHE_FOLDER)));
    // Unchanged: reused, identical.
    let (again, ev) = load_events(&s, Split::Train);
    assert!(reused(&ev) && !built(&ev), "{ev:?}");
    assert_eq!(again.unwrap().pixels, first.pixels);
    // `prepare` checks without decoding.
    let mut ev = Vec::new();
    image_folder::prepare(&s, Split::Train, &mut |e| ev.push(e)).unwrap();
    assert!(reused(&ev) && !built(&ev), "{ev:?}");
    // Rewriting a file (new size and time) rebuilds, and the new pixels are read.
    let f = r.join("train/a/0.png");
    save(&f, &RgbImage::from_pixel(9, 9, Rgb([1, 2, 3])));
    let (changed, ev) = load_events(&s, Split::Train);
    assert!(built(&ev), "{ev:?}");
    assert!(changed.unwrap().image(0).chunks(3).all(|p| p == [1, 2, 3]));
    // Renaming, adding and removing files rebuild.
    std::fs::rename(&f, r.join("train/a/renamed.png")).unwrap();
    assert!(built(&load_events(&s, Split::Train).1));
    save(&r.join("train/b/new.png"), &varied(8, 8, 9));
    let (ds, ev) = load_events(&s, Split::Train);
    assert!(built(&ev) && ds.unwrap().len() == 7);
    std::fs::remove_file(r.join("train/b/new.png")).unwrap();
    assert!(built(&load_events(&s, Split::Train).1));
    // Same files, other size or rule: another cache file, both kept.
    let s12 = spec(r, 12, ResizeRule::CenterCrop);
    let (ds12, ev) = load_events(&s12, Split::Train);
    assert!(built(&ev) && ds12.unwrap().height == 12);
    assert_ne!(s12.cache_path(Split::Train), s.cache_path(Split::Train));
    assert!(reused(&load_events(&s, Split::Train).1));
    // A damaged cache is rebuilt, saying why.
    let cache = s.cache_path(Split::Train);
    let bytes = std::fs::read(&cache).unwrap();
    std::fs::write(&cache, &bytes[..bytes.len() - 5]).unwrap();
    let (ds, ev) = load_events(&s, Split::Train);
    assert!(ds.is_ok());
    assert!(
        ev.iter().any(
            |e| matches!(e, CacheEvent::Building { reason, .. } if reason.contains("truncated"))
        ),
        "{ev:?}"
    );
    // Rebuild on request (`data verify`).
    let mut ev = Vec::new();
    image_folder::load(&s, Split::Train, CachePolicy::Rebuild, &mut |e| ev.push(e)).unwrap();
    assert!(built(&ev));
    // data.cache_dir moves the cache.
    let elsewhere = TempDir::new("cache-dir");
    let moved = FolderSpec {
        cache_dir: elsewhere.path().join("c"),
        ..s.clone()
    };
    assert!(built(&load_events(&moved, Split::Train).1));
    assert!(elsewhere.path().join("c/train-8-center-crop.bin").is_file());
}

#[test]
fn config_keys_are_checked_before_any_work() {
    let check = |sets: &[&str]| Config::default().apply_overrides(sets).unwrap().check();
    assert!(matches!(
        check(&["data.dataset=image-folder"]).unwrap_err(),
        ConfigError::FolderPathMissing
    ));
    let ok = check(&[
        "data.dataset=image-folder",
        "data.path=\"photos\"",
        "data.image_size=64",
        "data.resize=center-crop",
        "data.pretrain_split=unlabeled",
    ])
    .unwrap();
    assert_eq!(ok.data.resize, ResizeRule::CenterCrop);
    assert_eq!(ok.geometry.patch(), 24);
    // A fixed-size dataset is read at its native side only.
    let e = check(&["data.dataset=stl10", "data.image_size=64"]).unwrap_err();
    assert!(
        matches!(
            e,
            ConfigError::ImageSizeNotNative {
                dataset: "stl10",
                size: 64,
                native: 96
            }
        ),
        "{e}"
    );
    assert!(e.to_string().contains("96"), "{e}");
    let e = check(&["data.resize=center-crop"]).unwrap_err();
    assert!(matches!(
        e,
        ConfigError::FolderKeyWithoutFolder { key: "resize", .. }
    ));
    let e = check(&["data.path=\"x\""]).unwrap_err();
    assert!(matches!(
        e,
        ConfigError::FolderKeyWithoutFolder { key: "path", .. }
    ));
    let e = Config::default()
        .apply_overrides(&["data.resize=squash"])
        .unwrap_err()
        .to_string();
    assert!(e.contains("squash"), "{e}");
}

// ---------------------------------------------------------------------------------------------
// The command line, on a folder of mixed-size JPEGs.

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_spatial-reasoning"))
}

fn run_ok(cmd: &mut Command) -> (String, String) {
    let out = cmd.output().unwrap();
    let (o, e) = (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    assert!(out.status.success(), "{cmd:?}\nstdout:\n{o}\nstderr:\n{e}");
    (o, e)
}

/// Three classes of JPEGs of mixed sizes (12 train, 4 test per class), each class a colour.
fn jpeg_fixture(root: &Path) {
    let sizes = [(40, 30), (30, 50), (64, 64), (24, 24)];
    for (c, class) in ["red", "green", "blue"].iter().enumerate() {
        for (split, n) in [("train", 12), ("test", 4)] {
            for i in 0..n {
                let (w, h) = sizes[i % sizes.len()];
                let img = RgbImage::from_fn(w, h, |x, y| {
                    let mut p = [40u8 + (x * 2) as u8, 40 + (y * 2) as u8, 60];
                    p[c] = 220;
                    Rgb(p)
                });
                save(&root.join(split).join(class).join(format!("{i}.jpg")), &img);
            }
        }
    }
}

fn folder_sets(root: &Path) -> Vec<String> {
    [
        "data.dataset=image-folder".to_string(),
        format!("data.path={:?}", root.display().to_string()),
        "data.image_size=24".into(),
        "data.resize=center-crop".into(),
        "backbone.name=conv4".into(),
        "method.views=2".into(),
        "train.batch_size=8".into(),
        "train.epochs=1".into(),
        "train.max_steps=2".into(),
        "train.log_every=1".into(),
        "eval.linear_epochs=2".into(),
        "eval.knn_k=5".into(),
        "eval.probe_patches=[0]".into(),
    ]
    .into_iter()
    .collect()
}

fn with_sets(cmd: &mut Command, sets: &[String]) {
    for s in sets {
        cmd.arg("--set").arg(s);
    }
}

#[test]
fn cli_verify_and_preview() {
    let tmp = TempDir::new("cli-verify");
    let root = tmp.path().join("photos");
    jpeg_fixture(&root);
    let (out, err) = run_ok(
        bin()
            .args(["data", "verify", "--dataset", "image-folder", "--path"])
            .arg(&root)
            .args(["--image-size", "24", "--resize", "center-crop", "--stats"]),
    );
    assert!(
        out.contains("image-folder train 36 0:12 1:12 2:12"),
        "{out}"
    );
    assert!(out.contains("image-folder test 12 0:4 1:4 2:4"), "{out}");
    assert!(out.contains("image-folder train mean"), "{out}");
    assert!(err.contains("decoded 36/36"), "{err}");
    let grid = tmp.path().join("grid.png");
    let (out, err) = run_ok(
        bin()
            .args(["data", "preview", "--dataset", "image-folder", "--path"])
            .arg(&root)
            .args([
                "--image-size",
                "24",
                "--resize",
                "center-crop",
                "--per-class",
                "2",
                "--out",
            ])
            .arg(&grid),
    );
    assert!(out.contains("6 images") && grid.is_file(), "{out}");
    assert!(
        err.contains("cache"),
        "verify wrote the cache, preview reads it: {err}"
    );
    // Bad files: every one is listed, across splits, and the exit status is non-zero.
    std::fs::write(root.join("train/red/broken.jpg"), b"\xff\xd8\xff garbage").unwrap();
    std::fs::write(root.join("test/blue/readme.md"), b"#").unwrap();
    let out = bin()
        .args(["data", "verify", "--dataset", "image-folder", "--path"])
        .arg(&root)
        .args(["--image-size", "24", "--resize", "none"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("broken.jpg") && err.contains("readme.md"),
        "{err}"
    );
    // resize = none: every mixed-size file is named with its size.
    assert!(err.contains("0.jpg") && err.contains("40×30"), "{err}");
    assert!(err.contains("2 of 2 splits failed"), "{err}");
}

#[test]
fn cli_pretrain_eval_and_run_on_a_folder() {
    let tmp = TempDir::new("cli-run");
    let root = tmp.path().join("photos");
    jpeg_fixture(&root);
    let sets = folder_sets(&root);
    let run_dir = tmp.path().join("pretrain");
    let mut cmd = bin();
    cmd.args(["pretrain", "--out"]).arg(&run_dir);
    with_sets(&mut cmd, &sets);
    let (_, err) = run_ok(&mut cmd);
    assert!(err.contains("[data] train: decoding 36 images"), "{err}");
    // The per-epoch diagnostics read the test split: decoded here too.
    assert!(err.contains("[data] test: decoding 12 images"), "{err}");
    let meta = std::fs::read_to_string(run_dir.join("meta.json")).unwrap();
    assert!(meta.contains("\"train_images\": 36"), "{meta}");
    let mut cmd = bin();
    cmd.args(["eval", "--run"]).arg(&run_dir);
    let (out, err) = run_ok(&mut cmd);
    assert!(
        err.contains("[data] train: cache"),
        "train cache reused: {err}"
    );
    assert!(
        err.contains("[data] test: cache"),
        "test cache reused: {err}"
    );
    assert!(
        out.contains("linear_eval_acc n=0") && out.contains("knn_acc"),
        "{out}"
    );
    // `run`: arms over seeds on the same folder, report written; every cache reused.
    let job = tmp.path().join("job");
    let mut cmd = bin();
    cmd.args(["run", "--seeds", "1", "--out"]).arg(&job);
    with_sets(&mut cmd, &sets);
    cmd.args(["--set", "run.arms=[\"random-init\", \"rr\"]"]);
    let (out, err) = run_ok(&mut cmd);
    assert!(!err.contains("decoding"), "{err}");
    assert!(job.join("report.md").is_file());
    assert!(out.contains("rr") && out.contains("random-init"), "{out}");
}

#[test]
fn cli_native_size_mismatch_fails_before_the_run_directory() {
    let tmp = TempDir::new("cli-native");
    let run_dir = tmp.path().join("never");
    let out = bin()
        .args([
            "pretrain",
            "--set",
            "data.dataset=synthetic",
            "--set",
            "data.image_size=64",
            "--out",
        ])
        .arg(&run_dir)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("data.image_size = 64") && err.contains("32×32"),
        "{err}"
    );
    assert!(!run_dir.exists());
}
