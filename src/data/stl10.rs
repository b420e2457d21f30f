//! STL-10, official binary layout (`stl10_binary/`): `train_X.bin` + `train_y.bin` (5,000
//! images), `test_X.bin` + `test_y.bin` (8,000), `unlabeled_X.bin` (100,000), 96×96 RGB.
//!
//! Each image is stored as three 96×96 planes (R, G, B), each plane **column-major**: byte
//! `ch·9216 + col·96 + row` is the pixel at (row, col) of channel ch. Labels are bytes 1–10 in
//! the file and become 0–9; class names come from `class_names.txt` when present.

use std::path::Path;

use super::{
    dataset_dir, for_each_record, names_or, record_count, Counts, DataError, ImageDataset, Split,
};

/// Image side.
pub const SIDE: usize = 96;
/// Bytes of one stored image.
pub const IMAGE_BYTES: usize = SIDE * SIDE * 3;
/// Official class names (label order), used when `class_names.txt` is absent.
pub const STL10_CLASSES: [&str; 10] = [
    "airplane", "bird", "car", "cat", "deer", "dog", "horse", "monkey", "ship", "truck",
];

/// Convert one stored image (three column-major planes) to HWC and append to `out`.
pub fn column_major_to_hwc(rec: &[u8], out: &mut Vec<u8>) {
    let plane = SIDE * SIDE;
    let start = out.len();
    out.resize(start + IMAGE_BYTES, 0);
    let dst = &mut out[start..];
    for ch in 0..3 {
        let src = &rec[ch * plane..(ch + 1) * plane];
        for col in 0..SIDE {
            let column = &src[col * SIDE..(col + 1) * SIDE];
            for (row, &v) in column.iter().enumerate() {
                dst[(row * SIDE + col) * 3 + ch] = v;
            }
        }
    }
}

/// Read an STL-10 split. `Unlabeled` has no labels (`labels = None`).
pub fn load_stl10(root: &Path, split: Split, counts: Counts) -> Result<ImageDataset, DataError> {
    let dir = dataset_dir(root, "stl10_binary", "test_X.bin", "STL-10", "stl10.sh")?;
    let (x_name, y_name, official) = match split {
        Split::Train => ("train_X.bin", Some("train_y.bin"), 5_000),
        Split::Test => ("test_X.bin", Some("test_y.bin"), 8_000),
        Split::Unlabeled => ("unlabeled_X.bin", None, 100_000),
    };
    let expected = (counts == Counts::Official).then_some(official);
    let x_path = dir.join(x_name);
    let n = record_count(&x_path, IMAGE_BYTES, expected)?;
    let labels = match y_name {
        Some(y_name) => {
            let y_path = dir.join(y_name);
            let bytes = std::fs::read(&y_path).map_err(|e| DataError::Io {
                path: y_path.clone(),
                error: e,
            })?;
            if bytes.len() != n {
                let detail = format!(
                    "{} labels for the {n} images of {}",
                    bytes.len(),
                    x_path.display()
                );
                return Err(if bytes.len() < n {
                    DataError::Truncated {
                        path: y_path,
                        offset: bytes.len() as u64,
                        detail,
                    }
                } else {
                    DataError::Invalid {
                        path: y_path,
                        detail,
                    }
                });
            }
            let mut labels = Vec::with_capacity(n);
            for (i, &b) in bytes.iter().enumerate() {
                if !(1..=10).contains(&b) {
                    return Err(DataError::Malformed {
                        path: y_path,
                        offset: i as u64,
                        detail: format!("label {b} of image {i} is not in 1..=10"),
                    });
                }
                labels.push(b as u16 - 1);
            }
            Some(labels)
        }
        None => None,
    };
    let class_names = names_or(&dir.join("class_names.txt"), 10, || {
        STL10_CLASSES.iter().map(|s| s.to_string()).collect()
    })?;
    let mut pixels = Vec::with_capacity(n * IMAGE_BYTES);
    for_each_record(&x_path, IMAGE_BYTES, |_, _, rec| {
        column_major_to_hwc(rec, &mut pixels);
        Ok(())
    })?;
    Ok(ImageDataset {
        name: "stl10".into(),
        split: split.name().into(),
        height: SIDE,
        width: SIDE,
        pixels,
        labels,
        class_names,
    })
}
