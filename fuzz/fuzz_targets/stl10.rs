//! STL-10 binary reader (`data::stl10::load_stl10`) through the real file path: the input
//! becomes `*_X.bin`, `*_y.bin` and optionally `class_names.txt` in a scratch folder.
//! Property: never panic; a dataset that loads is consistent (whole 96×96 images, labels 0–9
//! for a labelled split, none for `unlabeled`).
//!
//! Input layout: byte 0 = mode (bits 0-1: train / test / unlabeled; bit 2: a class-names
//! file; bit 3: structured; bit 4: official counts), byte 1 = parameter, then the payload.
//! Raw: the payload is split at `byte1 · len / 256` into X and y. Structured: X holds
//! `byte1 % 3` images (pixels drawn from the payload) plus `payload[0] % 5` stray bytes when
//! odd, y holds `images + payload[1] % 3 − 1` labels, mostly in 1..=10.
#![no_main]

mod scratch;

use libfuzzer_sys::fuzz_target;
use spatial_reasoning::data::stl10::{self, IMAGE_BYTES};
use spatial_reasoning::data::{Counts, Split};

fuzz_target!(|data: &[u8]| {
    if data.len() < 2 {
        return;
    }
    let (mode, param, mut payload) = (data[0], data[1], &data[2..]);
    let dir = scratch::scratch("stl10", false);
    for f in [
        "train_X.bin",
        "train_y.bin",
        "test_X.bin",
        "test_y.bin",
        "unlabeled_X.bin",
        "class_names.txt",
    ] {
        let _ = std::fs::remove_file(dir.join(f));
    }
    let split = match mode & 3 {
        0 => Split::Train,
        1 => Split::Test,
        _ => Split::Unlabeled,
    };
    if mode & 4 != 0 && !payload.is_empty() {
        let len = (payload[0] as usize).min(payload.len() - 1);
        std::fs::write(dir.join("class_names.txt"), &payload[1..1 + len]).unwrap();
        payload = &payload[1 + len..];
    }
    let (x, y) = if mode & 8 != 0 {
        let src = if payload.is_empty() {
            &[7u8][..]
        } else {
            payload
        };
        let n = param as usize % 3;
        let stray = if src[0] & 1 == 1 {
            src[0] as usize % 5
        } else {
            0
        };
        let x: Vec<u8> = (0..n * IMAGE_BYTES + stray)
            .map(|i| src[i % src.len()])
            .collect();
        let ny = (n + src.get(1).map_or(1, |b| *b as usize % 3)).saturating_sub(1);
        let y: Vec<u8> = (0..ny)
            .map(|i| {
                let b = src[(i + 2) % src.len()];
                if b & 0x80 == 0 {
                    b % 10 + 1
                } else {
                    b
                }
            })
            .collect();
        (x, y)
    } else {
        let k = param as usize * payload.len() / 256;
        (payload[..k].to_vec(), payload[k..].to_vec())
    };
    let (x_name, y_name) = match split {
        Split::Train => ("train_X.bin", Some("train_y.bin")),
        Split::Test => ("test_X.bin", Some("test_y.bin")),
        Split::Unlabeled => ("unlabeled_X.bin", None),
    };
    // The folder is recognised by test_X.bin.
    if split != Split::Test {
        std::fs::write(dir.join("test_X.bin"), b"").unwrap();
    }
    std::fs::write(dir.join(x_name), &x).unwrap();
    if let Some(y_name) = y_name {
        std::fs::write(dir.join(y_name), &y).unwrap();
    }
    let counts = if mode & 16 != 0 {
        Counts::Official
    } else {
        Counts::Any
    };
    if let Ok(ds) = stl10::load_stl10(&dir, split, counts) {
        assert_eq!((ds.height, ds.width), (96, 96));
        assert_eq!(ds.len() * IMAGE_BYTES, ds.pixels.len());
        assert_eq!(ds.len() * IMAGE_BYTES, x.len());
        assert_eq!(ds.num_classes(), 10);
        match (&ds.labels, split) {
            (None, Split::Unlabeled) => {}
            (Some(l), Split::Train | Split::Test) => {
                assert_eq!(l.len(), ds.len());
                assert!(l.iter().all(|&v| v < 10));
            }
            (l, s) => panic!("labels {:?} for split {s}", l.as_ref().map(Vec::len)),
        }
    }
});
