//! CIFAR-10 and CIFAR-100, official binary layout.
//!
//! - CIFAR-10 (`cifar-10-batches-bin/`): `data_batch_1.bin` … `data_batch_5.bin` (train) and
//!   `test_batch.bin`, 10,000 records each; record = 1 label byte (0–9) + 3072 pixel bytes;
//!   class names in `batches.meta.txt`.
//! - CIFAR-100 (`cifar-100-binary/`): `train.bin` (50,000 records) and `test.bin` (10,000);
//!   record = 1 coarse label byte (0–19) + 1 fine label byte (0–99) + 3072 pixel bytes; class
//!   names in `fine_label_names.txt` / `coarse_label_names.txt` when present.
//!
//! Pixels are stored as three 32×32 row-major planes (1024 R, 1024 G, 1024 B); they are
//! converted to HWC.

use std::path::Path;

use super::{
    dataset_dir, for_each_record, names_or, record_count, Counts, DataError, ImageDataset, Split,
};

/// Pixel bytes of one 32×32 RGB image.
pub const IMAGE_BYTES: usize = 32 * 32 * 3;
/// Official class names, used when `batches.meta.txt` is absent.
pub const CIFAR10_CLASSES: [&str; 10] = [
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
];

/// Which CIFAR-100 label byte becomes the label.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cifar100Labels {
    /// The 100 fine classes (second label byte).
    Fine,
    /// The 20 superclasses (first label byte).
    Coarse,
}

/// Convert one record's three row-major planes (R, G, B) into HWC and append to `out`.
fn planes_to_hwc(planes: &[u8], out: &mut Vec<u8>) {
    let (r, rest) = planes.split_at(1024);
    let (g, b) = rest.split_at(1024);
    for p in 0..1024 {
        out.extend_from_slice(&[r[p], g[p], b[p]]);
    }
}

/// Read records of `label_bytes + 3072` bytes from `files`; the label is the byte at
/// `label_index` and must be `< num_classes`.
fn read_batches(
    files: &[std::path::PathBuf],
    label_bytes: usize,
    label_index: usize,
    label_limits: &[u8],
    per_file: Option<usize>,
) -> Result<(Vec<u8>, Vec<u16>), DataError> {
    let record_len = label_bytes + IMAGE_BYTES;
    // Check every file's size before reading any, so a missing or short last batch is
    // reported at once.
    let mut total = 0;
    for f in files {
        total += record_count(f, record_len, per_file)?;
    }
    let mut pixels = Vec::with_capacity(total * IMAGE_BYTES);
    let mut labels = Vec::with_capacity(total);
    for f in files {
        for_each_record(f, record_len, |i, offset, rec| {
            for (k, &limit) in label_limits.iter().enumerate() {
                if rec[k] >= limit {
                    return Err(DataError::Malformed {
                        path: f.clone(),
                        offset: offset + k as u64,
                        detail: format!("record {i}: label byte {} is not below {limit}", rec[k]),
                    });
                }
            }
            labels.push(rec[label_index] as u16);
            planes_to_hwc(&rec[label_bytes..], &mut pixels);
            Ok(())
        })?;
    }
    Ok((pixels, labels))
}

/// The CIFAR-10 folder under `root` (`root/cifar-10-batches-bin`, or `root` itself).
pub fn cifar10_dir(root: &Path) -> Result<std::path::PathBuf, DataError> {
    dataset_dir(
        root,
        "cifar-10-batches-bin",
        "test_batch.bin",
        "CIFAR-10",
        "cifar10.sh",
    )
}

/// Read a CIFAR-10 split (`Train`: the five data batches in order; `Test`: `test_batch.bin`).
pub fn load_cifar10(root: &Path, split: Split, counts: Counts) -> Result<ImageDataset, DataError> {
    let dir = cifar10_dir(root)?;
    let files: Vec<_> = match split {
        Split::Train => (1..=5)
            .map(|i| dir.join(format!("data_batch_{i}.bin")))
            .collect(),
        Split::Test => vec![dir.join("test_batch.bin")],
        Split::Unlabeled => return Err(no_split(&dir, "cifar10", split)),
    };
    let class_names = names_or(&dir.join("batches.meta.txt"), 10, || {
        CIFAR10_CLASSES.iter().map(|s| s.to_string()).collect()
    })?;
    let per_file = (counts == Counts::Official).then_some(10_000);
    let (pixels, labels) = read_batches(&files, 1, 0, &[10], per_file)?;
    Ok(ImageDataset {
        name: "cifar10".into(),
        split: split.name().into(),
        height: 32,
        width: 32,
        pixels,
        labels: Some(labels),
        class_names,
    })
}

/// Read a CIFAR-100 split with fine (100) or coarse (20) labels. Both label bytes are range
/// checked whichever is used.
pub fn load_cifar100(
    root: &Path,
    split: Split,
    which: Cifar100Labels,
    counts: Counts,
) -> Result<ImageDataset, DataError> {
    let dir = dataset_dir(
        root,
        "cifar-100-binary",
        "test.bin",
        "CIFAR-100",
        "cifar100.sh",
    )?;
    let name = match which {
        Cifar100Labels::Fine => "cifar100",
        Cifar100Labels::Coarse => "cifar100-coarse",
    };
    let (file, official) = match split {
        Split::Train => (dir.join("train.bin"), 50_000),
        Split::Test => (dir.join("test.bin"), 10_000),
        Split::Unlabeled => return Err(no_split(&dir, name, split)),
    };
    let (names_file, n, label_index) = match which {
        Cifar100Labels::Fine => ("fine_label_names.txt", 100, 1),
        Cifar100Labels::Coarse => ("coarse_label_names.txt", 20, 0),
    };
    let class_names = names_or(&dir.join(names_file), n, || {
        (0..n).map(|i| format!("class{i}")).collect()
    })?;
    let per_file = (counts == Counts::Official).then_some(official);
    let (pixels, labels) = read_batches(&[file], 2, label_index, &[20, 100], per_file)?;
    Ok(ImageDataset {
        name: name.into(),
        split: split.name().into(),
        height: 32,
        width: 32,
        pixels,
        labels: Some(labels),
        class_names,
    })
}

fn no_split(dir: &Path, name: &str, split: Split) -> DataError {
    DataError::Invalid {
        path: dir.to_path_buf(),
        detail: format!("{name} has no {split} split"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn planes_become_hwc() {
        let mut planes = vec![0u8; 3072];
        for p in 0..1024 {
            planes[p] = (p % 251) as u8;
            planes[1024 + p] = 1;
            planes[2048 + p] = 2;
        }
        let mut out = Vec::new();
        planes_to_hwc(&planes, &mut out);
        // pixel (row 1, col 3) = plane index 35
        assert_eq!(&out[35 * 3..35 * 3 + 3], &[35, 1, 2]);
        assert_eq!(out.len(), 3072);
    }
}
