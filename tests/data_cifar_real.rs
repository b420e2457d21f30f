//! CIFAR-10 on the real, shared data (official binary layout).
//!
//! The data root comes from `$SPATIAL_REASONING_DATA`, else `../shared/data` beside the checkout.
//! When the data is missing the tests fail under `CI=true` and print a skip note otherwise.

use std::path::{Path, PathBuf};
use std::process::Command;

use spatial_reasoning::config::{DataConfig, DatasetKind};
use spatial_reasoning::data::{self, cifar, Counts, DataError, Split};

fn data_root() -> Option<PathBuf> {
    let root = std::env::var_os("SPATIAL_REASONING_DATA")
        .filter(|s| !s.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data"));
    if root.join("cifar-10-batches-bin/test_batch.bin").is_file() {
        return Some(root);
    }
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!(
            "CIFAR-10 not found under {} (CI=true: the real-data tests must run)",
            root.display()
        );
    }
    eprintln!(
        "skipping: CIFAR-10 not found under {} (set SPATIAL_REASONING_DATA)",
        root.display()
    );
    None
}

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
}
impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

const RECORD: u64 = 3073;

/// A copy of the real CIFAR-10 folder in a temp dir: every file symlinked except `edit`, which
/// is copied and passed to `f` to be damaged.
fn damaged_copy(src: &Path, edit: &str, f: impl FnOnce(&mut Vec<u8>)) -> TempDir {
    let mut f = Some(f);
    let tmp = TempDir::new("cifar10");
    let dir = tmp.0.join("cifar-10-batches-bin");
    std::fs::create_dir_all(&dir).unwrap();
    for name in [
        "data_batch_1.bin",
        "data_batch_2.bin",
        "data_batch_3.bin",
        "data_batch_4.bin",
        "data_batch_5.bin",
        "test_batch.bin",
        "batches.meta.txt",
    ] {
        if name == edit {
            let mut bytes = std::fs::read(src.join(name)).unwrap();
            (f.take().unwrap())(&mut bytes);
            std::fs::write(dir.join(name), bytes).unwrap();
        } else {
            std::os::unix::fs::symlink(src.join(name), dir.join(name)).unwrap();
        }
    }
    tmp
}

fn pixel(ds: &data::ImageDataset, i: usize, row: usize, col: usize) -> [u8; 3] {
    let img = ds.image(i);
    let o = (row * 32 + col) * 3;
    [img[o], img[o + 1], img[o + 2]]
}

// Golden pixels read off the files with:
//   python3 -c "r=open('data_batch_1.bin','rb').read(3073); \
//     px=lambda y,x:[r[1+c*1024+y*32+x] for c in range(3)]; print(r[0], px(0,0), px(0,1), px(10,20), px(31,31))"
//   → 6 [59, 62, 63] [43, 46, 45] [140, 92, 76] [123, 92, 72]
//   same for test_batch.bin → 3 [158, 112, 49] [159, 111, 47] [175, 165, 154] [21, 67, 110]
//   record 9999 of data_batch_5.bin (r = read()[9999*3073:]) → 1 (0,0) [229, 229, 239] (5,7) [105, 96, 97]
//   record 9999 of test_batch.bin → 7 (0,0) [75, 80, 74] (5,7) [50, 60, 61]
//   cross-checked with `od -A d -t u1 -j 1 -N 3 data_batch_1.bin` (59 43 50: R of pixels 0..2).
#[test]
fn counts_labels_and_pixels_match_the_files() {
    let Some(root) = data_root() else { return };
    let cfg = DataConfig::default();
    let train = data::load(DatasetKind::Cifar10, &root, Split::Train, &cfg).unwrap();
    let test = data::load(DatasetKind::Cifar10, &root, Split::Test, &cfg).unwrap();
    assert_eq!((train.len(), test.len()), (50_000, 10_000));
    assert_eq!(train.class_counts().unwrap(), vec![5_000; 10]);
    assert_eq!(test.class_counts().unwrap(), vec![1_000; 10]);
    assert_eq!(train.class_names, cifar::CIFAR10_CLASSES.map(String::from));
    assert_eq!((train.height, train.width), (32, 32));

    assert_eq!(train.label(0), Some(6));
    assert_eq!(pixel(&train, 0, 0, 0), [59, 62, 63]);
    assert_eq!(pixel(&train, 0, 0, 1), [43, 46, 45]);
    assert_eq!(pixel(&train, 0, 10, 20), [140, 92, 76]);
    assert_eq!(pixel(&train, 0, 31, 31), [123, 92, 72]);
    assert_eq!(train.label(49_999), Some(1));
    assert_eq!(pixel(&train, 49_999, 0, 0), [229, 229, 239]);
    assert_eq!(pixel(&train, 49_999, 5, 7), [105, 96, 97]);

    assert_eq!(test.label(0), Some(3));
    assert_eq!(pixel(&test, 0, 0, 0), [158, 112, 49]);
    assert_eq!(pixel(&test, 0, 0, 1), [159, 111, 47]);
    assert_eq!(pixel(&test, 0, 10, 20), [175, 165, 154]);
    assert_eq!(pixel(&test, 0, 31, 31), [21, 67, 110]);
    assert_eq!(test.label(9_999), Some(7));
    assert_eq!(pixel(&test, 9_999, 5, 7), [50, 60, 61]);

    // The root may also point at the batches folder itself.
    let direct = cifar::load_cifar10(
        &root.join("cifar-10-batches-bin"),
        Split::Test,
        Counts::Official,
    )
    .unwrap();
    assert_eq!(direct.pixels, test.pixels);
}

// Golden statistics (population std over all training pixels):
//   /work/venv/bin/python -c "import numpy as np; a=np.concatenate([np.fromfile(
//     f'data_batch_{i}.bin',dtype=np.uint8).reshape(-1,3073) for i in range(1,6)]);
//     x=a[:,1:].reshape(-1,3,1024).astype(np.float64)/255; print(x.mean(axis=(0,2)), x.std(axis=(0,2)))"
//   → [0.49139968 0.48215841 0.44653091] [0.24703223 0.24348513 0.26158784]
#[test]
fn channel_stats_match_numpy() {
    let Some(root) = data_root() else { return };
    let train = data::load(
        DatasetKind::Cifar10,
        &root,
        Split::Train,
        &DataConfig::default(),
    )
    .unwrap();
    let (mean, std) = data::channel_stats(&train);
    let want_mean: [f64; 3] = [0.491_399_68, 0.482_158_41, 0.446_530_91];
    let want_std: [f64; 3] = [0.247_032_23, 0.243_485_13, 0.261_587_84];
    for c in 0..3 {
        assert!((mean[c] as f64 - want_mean[c]).abs() < 1e-6, "{mean:?}");
        assert!((std[c] as f64 - want_std[c]).abs() < 1e-6, "{std:?}");
    }
    // Thread count does not matter.
    let one = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap()
        .install(|| data::channel_stats(&train));
    assert_eq!(one, (mean, std));
}

#[test]
fn truncated_batch_names_file_and_offset() {
    let Some(root) = data_root() else { return };
    let src = root.join("cifar-10-batches-bin");
    let tmp = damaged_copy(&src, "data_batch_3.bin", |b| b.truncate(b.len() - 100));
    let err = data::load(
        DatasetKind::Cifar10,
        &tmp.0,
        Split::Train,
        &DataConfig::default(),
    )
    .unwrap_err();
    match &err {
        DataError::Truncated { path, offset, .. } => {
            assert!(path.ends_with("data_batch_3.bin"), "{err}");
            assert_eq!(*offset, 9_999 * RECORD);
        }
        other => panic!("expected Truncated, got {other}"),
    }
    let msg = err.to_string();
    assert!(
        msg.contains("data_batch_3.bin") && msg.contains("30726927"),
        "{msg}"
    );
}

#[test]
fn bad_label_oversized_and_missing_files_are_errors() {
    let Some(root) = data_root() else { return };
    let src = root.join("cifar-10-batches-bin");
    let cfg = DataConfig::default();

    let tmp = damaged_copy(&src, "test_batch.bin", |b| b[5 * RECORD as usize] = 10);
    match data::load(DatasetKind::Cifar10, &tmp.0, Split::Test, &cfg).unwrap_err() {
        DataError::Malformed { path, offset, .. } => {
            assert!(path.ends_with("test_batch.bin"));
            assert_eq!(offset, 5 * RECORD);
        }
        other => panic!("expected Malformed, got {other}"),
    }

    // One extra whole record: not a silently longer dataset either.
    let tmp = damaged_copy(&src, "test_batch.bin", |b| {
        let first = b[..RECORD as usize].to_vec();
        b.extend_from_slice(&first);
    });
    let err = data::load(DatasetKind::Cifar10, &tmp.0, Split::Test, &cfg).unwrap_err();
    assert!(matches!(err, DataError::Invalid { .. }), "{err}");
    assert!(err.to_string().contains("test_batch.bin") && err.to_string().contains("10001"));

    let tmp = damaged_copy(&src, "data_batch_4.bin", |_| {});
    std::fs::remove_file(tmp.0.join("cifar-10-batches-bin/data_batch_4.bin")).unwrap();
    let err = data::load(DatasetKind::Cifar10, &tmp.0, Split::Train, &cfg).unwrap_err();
    assert!(matches!(err, DataError::Io { .. }), "{err}");
    assert!(err.to_string().contains("data_batch_4.bin"), "{err}");
}

fn cli(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_spatial-reasoning"))
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn cli_verify_prints_counts_and_fails_on_truncation() {
    let Some(root) = data_root() else { return };
    let out = cli(&[
        "data",
        "verify",
        "--dataset",
        "cifar10",
        "--root",
        root.to_str().unwrap(),
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let per = |n: usize| (0..10).map(|c| format!(" {c}:{n}")).collect::<String>();
    assert_eq!(
        stdout,
        format!(
            "cifar10 train 50000{}\ncifar10 test 10000{}\n",
            per(5000),
            per(1000)
        )
    );

    let tmp = damaged_copy(&root.join("cifar-10-batches-bin"), "test_batch.bin", |b| {
        b.truncate(1234)
    });
    // Root pointing at the batches folder itself.
    let dir = tmp.0.join("cifar-10-batches-bin");
    let out = cli(&[
        "data",
        "verify",
        "--dataset",
        "cifar10",
        "--root",
        dir.to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("test_batch.bin") && stderr.contains("offset 0"),
        "{stderr}"
    );
}
