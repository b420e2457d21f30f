//! CIFAR-10 / CIFAR-100 binary readers (`data::cifar::load_cifar10` / `load_cifar100`), through
//! the real file path: the input becomes the batch file (and optionally the class-names file) in
//! a scratch folder. Property: never panic; a dataset that loads is consistent (whole 32×32
//! images, one in-range label per image, the right number of class names).
//!
//! Input layout: byte 0 = mode (bits 0-1: CIFAR-10 / CIFAR-100 fine / coarse; bit 2: a
//! class-names file; bit 3: structured; bit 4: official record counts), then, with bit 2, a
//! length byte and that many bytes of names. The rest is the batch file: as is, or (structured)
//! `1 + rest[0] % 4` records whose label bytes and pixels are drawn from the input, plus
//! `rest[1] % 7` stray bytes, so whole records with valid labels are reached often.
#![no_main]

mod scratch;

use libfuzzer_sys::fuzz_target;
use spatial_reasoning::data::cifar::{self, Cifar100Labels};
use spatial_reasoning::data::{Counts, Split};

fn structured(rest: &[u8], record_len: usize, label_bytes: usize) -> Vec<u8> {
    if rest.len() < 2 {
        return rest.to_vec();
    }
    let n = 1 + rest[0] as usize % 4;
    let stray = rest[1] as usize % 7;
    let src = if rest.len() > 2 {
        &rest[2..]
    } else {
        &[0u8][..]
    };
    let mut out = Vec::with_capacity(n * record_len + stray);
    for i in 0..n * record_len + stray {
        let b = src[i % src.len()];
        // Label bytes: mostly in range.
        let in_record = i % record_len;
        out.push(
            if in_record < label_bytes && i < n * record_len && b & 0x80 == 0 {
                b % if in_record == 0 && label_bytes == 2 {
                    20
                } else {
                    10
                }
            } else {
                b
            },
        );
    }
    out
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, mut rest)) = data.split_first() else {
        return;
    };
    let dir = scratch::scratch("cifar", false);
    let which = mode & 3;
    let (batch_name, names_name, label_bytes) = match which {
        0 => ("test_batch.bin", "batches.meta.txt", 1),
        1 => ("test.bin", "fine_label_names.txt", 2),
        _ => ("test.bin", "coarse_label_names.txt", 2),
    };
    for f in [
        "test_batch.bin",
        "test.bin",
        "batches.meta.txt",
        "fine_label_names.txt",
        "coarse_label_names.txt",
    ] {
        let _ = std::fs::remove_file(dir.join(f));
    }
    if mode & 4 != 0 {
        let Some((&len, r)) = rest.split_first() else {
            return;
        };
        let len = (len as usize).min(r.len());
        std::fs::write(dir.join(names_name), &r[..len]).unwrap();
        rest = &r[len..];
    }
    let record_len = label_bytes + cifar::IMAGE_BYTES;
    let batch = if mode & 8 != 0 {
        structured(rest, record_len, label_bytes)
    } else {
        rest.to_vec()
    };
    std::fs::write(dir.join(batch_name), &batch).unwrap();
    let counts = if mode & 16 != 0 {
        Counts::Official
    } else {
        Counts::Any
    };
    let (result, classes) = match which {
        0 => (cifar::load_cifar10(&dir, Split::Test, counts), 10),
        1 => (
            cifar::load_cifar100(&dir, Split::Test, Cifar100Labels::Fine, counts),
            100,
        ),
        _ => (
            cifar::load_cifar100(&dir, Split::Test, Cifar100Labels::Coarse, counts),
            20,
        ),
    };
    // Unlabelled split does not exist for CIFAR: always an error, never a panic.
    assert!(cifar::load_cifar10(&dir, Split::Unlabeled, counts).is_err());
    if let Ok(ds) = result {
        assert_eq!((ds.height, ds.width), (32, 32));
        assert_eq!(ds.len() * cifar::IMAGE_BYTES, ds.pixels.len());
        assert_eq!(ds.len() * record_len, batch.len());
        assert_eq!(ds.num_classes(), classes);
        let labels = ds.labels.as_ref().expect("CIFAR is labelled");
        assert_eq!(labels.len(), ds.len());
        assert!(labels.iter().all(|&l| (l as usize) < classes));
    }
});
