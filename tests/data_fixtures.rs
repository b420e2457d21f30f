//! Readers on small hand-made fixtures in the official layouts: CIFAR-100, STL-10 (column-major
//! transpose), image folders, tiny-ImageNet, and their failure modes.

use std::path::{Path, PathBuf};

use spatial_reasoning::config::{DataConfig, DatasetKind};
use spatial_reasoning::data::{self, cifar, folder, stl10, Counts, DataError, ImageDataset, Split};

/// A temporary directory removed on drop.
struct TempDir(PathBuf);
impl TempDir {
    fn new(tag: &str) -> TempDir {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let p = std::env::temp_dir().join(format!("sr-{tag}-{}-{nanos}", std::process::id()));
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

fn write(path: &Path, bytes: &[u8]) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, bytes).unwrap();
}

// ---------------------------------------------------------------------------------------------
// CIFAR-100

/// Record k: coarse, fine, then planes R = k + p%7, G = 100 + p%5, B = 200 + row (p = row·32+col).
fn cifar100_record(coarse: u8, fine: u8, k: u8) -> Vec<u8> {
    let mut r = vec![coarse, fine];
    r.extend((0..1024).map(|p| k + (p % 7) as u8));
    r.extend((0..1024).map(|p| 100 + (p % 5) as u8));
    r.extend((0..1024).map(|p| 200 + (p / 32) as u8));
    r
}

fn cifar100_fixture(records: &[(u8, u8)]) -> TempDir {
    let tmp = TempDir::new("c100");
    let dir = tmp.path().join("cifar-100-binary");
    let bytes: Vec<u8> = records
        .iter()
        .enumerate()
        .flat_map(|(k, &(c, f))| cifar100_record(c, f, k as u8))
        .collect();
    write(&dir.join("train.bin"), &bytes);
    write(&dir.join("test.bin"), &bytes[..3074]);
    let fine: String = (0..100).map(|i| format!("fine_{i}\n")).collect();
    write(&dir.join("fine_label_names.txt"), fine.as_bytes());
    tmp
}

#[test]
fn cifar100_fine_and_coarse_labels_and_hwc_pixels() {
    let tmp = cifar100_fixture(&[(1, 42), (19, 99), (0, 0)]);
    let fine = cifar::load_cifar100(
        tmp.path(),
        Split::Train,
        cifar::Cifar100Labels::Fine,
        Counts::Any,
    )
    .unwrap();
    assert_eq!(fine.labels, Some(vec![42, 99, 0]));
    assert_eq!(fine.class_names.len(), 100);
    assert_eq!(fine.class_names[42], "fine_42");
    let coarse = cifar::load_cifar100(
        tmp.path(),
        Split::Train,
        cifar::Cifar100Labels::Coarse,
        Counts::Any,
    )
    .unwrap();
    assert_eq!(coarse.labels, Some(vec![1, 19, 0]));
    // No coarse_label_names.txt: numbered names.
    assert_eq!(coarse.class_names.len(), 20);
    assert_eq!(coarse.name, "cifar100-coarse");
    // Image 2, pixel (row 3, col 4): p = 100 → R = 2 + 100%7 = 4, G = 100 + 0, B = 203.
    let img = fine.image(2);
    let o = (3 * 32 + 4) * 3;
    assert_eq!(&img[o..o + 3], &[4, 100, 203]);
    assert_eq!(fine.pixels, coarse.pixels);
}

#[test]
fn cifar100_bad_label_bytes_name_offset() {
    let tmp = cifar100_fixture(&[(1, 42), (20, 5)]);
    let err = cifar::load_cifar100(
        tmp.path(),
        Split::Train,
        cifar::Cifar100Labels::Fine,
        Counts::Any,
    )
    .unwrap_err();
    assert!(
        matches!(&err, DataError::Malformed { path, offset: 3074, .. } if path.ends_with("train.bin")),
        "{err}"
    );
    let tmp = cifar100_fixture(&[(1, 42), (2, 5), (3, 100)]);
    let err = cifar::load_cifar100(
        tmp.path(),
        Split::Train,
        cifar::Cifar100Labels::Coarse,
        Counts::Any,
    )
    .unwrap_err();
    assert!(
        matches!(&err, DataError::Malformed { offset: 6149, .. }),
        "{err}"
    );
}

#[test]
fn cifar100_official_counts_are_enforced_by_load() {
    let tmp = cifar100_fixture(&[(1, 42), (2, 5)]);
    let err = data::load(
        DatasetKind::Cifar100,
        tmp.path(),
        Split::Train,
        &DataConfig::default(),
    )
    .unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("train.bin") && msg.contains("expected exactly 50000"),
        "{msg}"
    );
    // Truncated mid-record.
    let dir = tmp.path().join("cifar-100-binary");
    let mut bytes = std::fs::read(dir.join("train.bin")).unwrap();
    bytes.truncate(3074 + 10);
    write(&dir.join("train.bin"), &bytes);
    let err = cifar::load_cifar100(
        tmp.path(),
        Split::Train,
        cifar::Cifar100Labels::Fine,
        Counts::Any,
    )
    .unwrap_err();
    assert!(
        matches!(err, DataError::Truncated { offset: 3074, .. }),
        "{err}"
    );
}

#[test]
fn missing_dataset_names_where_it_looked() {
    let tmp = TempDir::new("empty");
    for kind in [
        DatasetKind::Cifar10,
        DatasetKind::Cifar100,
        DatasetKind::Stl10,
        DatasetKind::TinyImagenet,
    ] {
        let err = data::load(kind, tmp.path(), Split::Test, &DataConfig::default()).unwrap_err();
        assert!(matches!(err, DataError::Io { .. }), "{kind:?}: {err}");
        assert!(err.to_string().contains("data-scripts/"), "{err}");
    }
    let err = data::load(
        DatasetKind::Cifar10,
        tmp.path(),
        Split::Unlabeled,
        &DataConfig::default(),
    )
    .unwrap_err();
    assert!(err.to_string().contains("no unlabeled split"), "{err}");
}

// ---------------------------------------------------------------------------------------------
// STL-10

/// The value of channel `ch` at (row, col) in the fixture: asymmetric in row/col so that a
/// missing or double transpose shows.
fn stl_value(k: usize, ch: usize, row: usize, col: usize) -> u8 {
    match ch {
        0 => row as u8,
        1 => (col as u8).wrapping_add(100),
        _ => ((row * 7 + col * 3 + k) % 256) as u8,
    }
}

/// Stored layout: per image, per channel, **column-major**: byte ch·9216 + col·96 + row.
fn stl_images(n: usize) -> Vec<u8> {
    let mut out = vec![0u8; n * stl10::IMAGE_BYTES];
    for k in 0..n {
        for ch in 0..3 {
            for col in 0..96 {
                for row in 0..96 {
                    out[k * stl10::IMAGE_BYTES + ch * 9216 + col * 96 + row] =
                        stl_value(k, ch, row, col);
                }
            }
        }
    }
    out
}

fn stl_fixture(labels: &[u8]) -> TempDir {
    let tmp = TempDir::new("stl");
    let dir = tmp.path().join("stl10_binary");
    write(&dir.join("train_X.bin"), &stl_images(labels.len()));
    write(&dir.join("train_y.bin"), labels);
    write(&dir.join("test_X.bin"), &stl_images(1));
    write(&dir.join("test_y.bin"), &[3]);
    write(&dir.join("unlabeled_X.bin"), &stl_images(2));
    tmp
}

// The transpose matches torchvision's STL10 reader: np.transpose(x.reshape(-1, 3, 96, 96),
// (0, 1, 3, 2)) gives CHW with out[c, row, col] = stored[c, col, row].
#[test]
fn stl10_column_major_planes_become_hwc() {
    let tmp = stl_fixture(&[1, 10, 5]);
    let ds = stl10::load_stl10(tmp.path(), Split::Train, Counts::Any).unwrap();
    assert_eq!((ds.len(), ds.height, ds.width), (3, 96, 96));
    assert_eq!(ds.labels, Some(vec![0, 9, 4]));
    assert_eq!(ds.class_names[0], "airplane");
    for k in 0..3 {
        let img = ds.image(k);
        for (row, col) in [(0, 0), (0, 1), (1, 0), (5, 90), (90, 5), (95, 95)] {
            let o = (row * 96 + col) * 3;
            let want: Vec<u8> = (0..3).map(|ch| stl_value(k, ch, row, col)).collect();
            assert_eq!(&img[o..o + 3], &want[..], "image {k} ({row},{col})");
        }
    }
    let un = stl10::load_stl10(tmp.path(), Split::Unlabeled, Counts::Any).unwrap();
    assert_eq!((un.len(), un.labels.is_none()), (2, true));
    // The root may be the stl10_binary folder itself.
    let direct =
        stl10::load_stl10(&tmp.path().join("stl10_binary"), Split::Test, Counts::Any).unwrap();
    assert_eq!(direct.labels, Some(vec![2]));
}

#[test]
fn stl10_label_errors() {
    for (labels, offset) in [(vec![1u8, 0, 3], 1u64), (vec![1, 2, 11], 2)] {
        let tmp = stl_fixture(&labels);
        let err = stl10::load_stl10(tmp.path(), Split::Train, Counts::Any).unwrap_err();
        assert!(
            matches!(&err, DataError::Malformed { path, offset: o, .. } if *o == offset && path.ends_with("train_y.bin")),
            "{err}"
        );
    }
    // Fewer labels than images.
    let tmp = stl_fixture(&[1, 2, 3]);
    write(&tmp.path().join("stl10_binary/train_y.bin"), &[1, 2]);
    let err = stl10::load_stl10(tmp.path(), Split::Train, Counts::Any).unwrap_err();
    assert!(
        matches!(&err, DataError::Truncated { path, offset: 2, .. } if path.ends_with("train_y.bin")),
        "{err}"
    );
    // A partial image.
    let tmp = stl_fixture(&[1, 2]);
    let x = tmp.path().join("stl10_binary/train_X.bin");
    let mut bytes = std::fs::read(&x).unwrap();
    bytes.truncate(bytes.len() - 1);
    write(&x, &bytes);
    let err = stl10::load_stl10(tmp.path(), Split::Train, Counts::Any).unwrap_err();
    assert!(
        matches!(&err, DataError::Truncated { offset: 27648, .. }),
        "{err}"
    );
    // Official counts via load().
    let tmp = stl_fixture(&[1, 2]);
    let err = data::load(
        DatasetKind::Stl10,
        tmp.path(),
        Split::Train,
        &DataConfig::default(),
    )
    .unwrap_err();
    assert!(err.to_string().contains("expected exactly 5000"), "{err}");
}

// ---------------------------------------------------------------------------------------------
// Image folders and tiny-ImageNet

fn png(path: &Path, w: u32, h: u32, f: impl Fn(u32, u32) -> [u8; 3]) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    image::RgbImage::from_fn(w, h, |x, y| image::Rgb(f(x, y)))
        .save_with_format(path, image::ImageFormat::Png)
        .unwrap();
}

fn jpeg(path: &Path, w: u32, h: u32, color: [u8; 3]) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    image::RgbImage::from_pixel(w, h, image::Rgb(color))
        .save_with_format(path, image::ImageFormat::Jpeg)
        .unwrap();
}

fn close(a: &[u8], b: &[u8], tol: u8) -> bool {
    a.iter().zip(b).all(|(x, y)| x.abs_diff(*y) <= tol)
}

#[test]
fn image_folder_sorted_classes_and_exact_png_pixels() {
    let tmp = TempDir::new("folder");
    let root = tmp.path();
    png(&root.join("dog/b.png"), 8, 6, |x, y| [x as u8, y as u8, 7]);
    png(&root.join("dog/a.PNG"), 8, 6, |_, _| [1, 2, 3]);
    jpeg(&root.join("cat/z.jpg"), 8, 6, [200, 40, 40]);
    write(&root.join("cat/notes.txt"), b"ignored");
    write(&root.join("README"), b"ignored");
    let ds = folder::load_image_folder(root, "pets", "train", None).unwrap();
    assert_eq!(ds.class_names, vec!["cat", "dog"]);
    assert_eq!(ds.labels, Some(vec![0, 1, 1]));
    assert_eq!((ds.height, ds.width), (6, 8));
    // dog/a.PNG sorts before dog/b.png.
    assert_eq!(&ds.image(1)[..3], &[1, 2, 3]);
    let o = (4 * 8 + 5) * 3; // (row 4, col 5) of b.png
    assert_eq!(&ds.image(2)[o..o + 3], &[5, 4, 7]);
    assert!(
        close(&ds.image(0)[..3], &[200, 40, 40], 4),
        "{:?}",
        &ds.image(0)[..3]
    );
}

#[test]
fn image_folder_errors_name_the_file() {
    let tmp = TempDir::new("folder-bad");
    let root = tmp.path();
    png(&root.join("a/1.png"), 8, 8, |_, _| [0, 0, 0]);
    png(&root.join("b/2.png"), 8, 9, |_, _| [0, 0, 0]);
    let err = folder::load_image_folder(root, "x", "train", None).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("2.png") && msg.contains("8×9") && msg.contains("8×8"),
        "{msg}"
    );

    // A corrupt JPEG: garbage after a JPEG start-of-image marker.
    std::fs::remove_file(root.join("b/2.png")).unwrap();
    write(
        &root.join("b/3.jpg"),
        &[0xFF, 0xD8, 0xFF, 0xE0, 1, 2, 3, 4, 5, 6, 7],
    );
    let err = folder::load_image_folder(root, "x", "train", None).unwrap_err();
    assert!(
        matches!(&err, DataError::Invalid { path, .. } if path.ends_with("b/3.jpg")),
        "{err}"
    );

    // A JPEG cut in half.
    jpeg(&root.join("b/3.jpg"), 8, 8, [9, 9, 9]);
    let full = std::fs::read(root.join("b/3.jpg")).unwrap();
    write(&root.join("b/3.jpg"), &full[..full.len() / 2]);
    let err = folder::load_image_folder(root, "x", "train", None).unwrap_err();
    assert!(err.to_string().contains("3.jpg"), "{err}");

    // An empty class folder.
    std::fs::remove_file(root.join("b/3.jpg")).unwrap();
    let err = folder::load_image_folder(root, "x", "train", None).unwrap_err();
    assert!(err.to_string().contains("no .png/.jpg/.jpeg"), "{err}");
}

/// tiny-ImageNet layout with `wnids` (listed unsorted), two training JPEGs per class and the
/// given validation annotations.
fn tiny_fixture(val: &[(&str, &str)]) -> TempDir {
    let tmp = TempDir::new("tiny");
    let dir = tmp.path().join("tiny-imagenet-200");
    let wnids = ["n02", "n01", "n03"];
    write(&dir.join("wnids.txt"), wnids.join("\n").as_bytes());
    write(
        &dir.join("words.txt"),
        b"n01\tgoldfish, Carassius auratus\nn02\tEuropean fire salamander\nn99\tunused\n",
    );
    for (k, w) in wnids.iter().enumerate() {
        for j in 0..2 {
            let c = [40 * k as u8 + 20 * j as u8, 128, 30];
            jpeg(
                &dir.join(format!("train/{w}/images/{w}_{j}.JPEG")),
                64,
                64,
                c,
            );
        }
        write(&dir.join(format!("train/{w}/{w}_boxes.txt")), b"");
    }
    let mut ann = String::new();
    for (file, wnid) in val {
        jpeg(&dir.join("val/images").join(file), 64, 64, [10, 200, 10]);
        ann.push_str(&format!("{file}\t{wnid}\t0\t0\t63\t63\n"));
    }
    write(&dir.join("val/val_annotations.txt"), ann.as_bytes());
    tmp
}

#[test]
fn tiny_imagenet_official_layout() {
    let tmp = tiny_fixture(&[
        ("val_0.JPEG", "n03"),
        ("val_1.JPEG", "n01"),
        ("val_10.JPEG", "n02"),
    ]);
    let train = folder::load_tiny_imagenet(tmp.path(), Split::Train, Counts::Any).unwrap();
    // Labels follow the sorted wnids: n01, n02, n03.
    assert_eq!(
        train.class_names,
        vec!["goldfish", "European fire salamander", "n03"]
    );
    assert_eq!(train.labels, Some(vec![0, 0, 1, 1, 2, 2]));
    assert_eq!((train.height, train.width, train.len()), (64, 64, 6));
    // n01 is wnids.txt entry k = 1: colour [40, 128, 30] for its image 0.
    assert!(
        close(&train.image(0)[..3], &[40, 128, 30], 4),
        "{:?}",
        &train.image(0)[..3]
    );
    let test = folder::load_tiny_imagenet(tmp.path(), Split::Test, Counts::Any).unwrap();
    // Annotation-file order.
    assert_eq!(test.labels, Some(vec![2, 0, 1]));
    assert_eq!(test.split, "test");
    // Official counts via load().
    let err = data::load(
        DatasetKind::TinyImagenet,
        tmp.path(),
        Split::Train,
        &DataConfig::default(),
    )
    .unwrap_err();
    assert!(err.to_string().contains("expected 200"), "{err}");
}

#[test]
fn tiny_imagenet_errors_name_the_file() {
    // Unknown class id in the annotations: the byte offset of its line.
    let tmp = tiny_fixture(&[("val_0.JPEG", "n03"), ("val_1.JPEG", "n77")]);
    let err = folder::load_tiny_imagenet(tmp.path(), Split::Test, Counts::Any).unwrap_err();
    let line0 = "val_0.JPEG\tn03\t0\t0\t63\t63\n".len() as u64;
    assert!(
        matches!(&err, DataError::Malformed { path, offset, .. } if *offset == line0 && path.ends_with("val_annotations.txt")),
        "{err}"
    );
    // An image not listed in the annotations.
    let tmp = tiny_fixture(&[("val_0.JPEG", "n03")]);
    jpeg(
        &tmp.path().join("tiny-imagenet-200/val/images/val_5.JPEG"),
        64,
        64,
        [0, 0, 0],
    );
    let err = folder::load_tiny_imagenet(tmp.path(), Split::Test, Counts::Any).unwrap_err();
    assert!(err.to_string().contains("val_5.JPEG"), "{err}");
    // An image listed twice.
    let tmp = tiny_fixture(&[("val_0.JPEG", "n03"), ("val_0.JPEG", "n01")]);
    let err = folder::load_tiny_imagenet(tmp.path(), Split::Test, Counts::Any).unwrap_err();
    assert!(
        err.to_string().contains("val_0.JPEG: listed twice"),
        "{err}"
    );
    // A listed image that is missing.
    let tmp = tiny_fixture(&[("val_0.JPEG", "n03")]);
    std::fs::remove_file(tmp.path().join("tiny-imagenet-200/val/images/val_0.JPEG")).unwrap();
    let err = folder::load_tiny_imagenet(tmp.path(), Split::Test, Counts::Any).unwrap_err();
    assert!(err.to_string().contains("val_0.JPEG"), "{err}");
    // A training image of the wrong size.
    let tmp = tiny_fixture(&[("val_0.JPEG", "n03")]);
    let bad = tmp
        .path()
        .join("tiny-imagenet-200/train/n02/images/n02_1.JPEG");
    jpeg(&bad, 64, 32, [0, 0, 0]);
    let err = folder::load_tiny_imagenet(tmp.path(), Split::Train, Counts::Any).unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("n02_1.JPEG") && msg.contains("64×32"), "{msg}");
    // A corrupt training JPEG.
    write(&bad, b"\xFF\xD8\xFF\xE0 definitely not a jpeg");
    let err = folder::load_tiny_imagenet(tmp.path(), Split::Train, Counts::Any).unwrap_err();
    assert!(
        matches!(&err, DataError::Invalid { path, .. } if *path == bad),
        "{err}"
    );
}

// ---------------------------------------------------------------------------------------------
// Statistics

#[test]
fn channel_stats_on_a_known_dataset() {
    // Two 1×1 images: (0, 255, 51) and (255, 255, 153).
    let ds = ImageDataset {
        name: "t".into(),
        split: "train".into(),
        height: 1,
        width: 1,
        pixels: vec![0, 255, 51, 255, 255, 153],
        labels: None,
        class_names: vec![],
    };
    let (m, s) = data::channel_stats(&ds);
    assert_eq!(m, [0.5, 1.0, 0.4]);
    assert_eq!(s, [0.5, 0.0, 0.2]);
}
