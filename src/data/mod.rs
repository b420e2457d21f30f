//! Datasets: random access, `u8` HWC RGB pixels plus a label, held in memory.
//!
//! Every reader produces an [`ImageDataset`]. Readers never panic on bad input: they return a
//! [`DataError`] naming the file, the byte offset where known, and what is wrong.

use std::path::PathBuf;

/// An in-memory image dataset: `n` images of `height × width × 3` bytes (HWC, RGB), row-major,
/// stored back to back.
#[derive(Clone, Debug)]
pub struct ImageDataset {
    /// Dataset name, e.g. `cifar10`.
    pub name: String,
    /// Split name, e.g. `train`, `test`, `unlabeled`.
    pub split: String,
    pub height: usize,
    pub width: usize,
    /// `n * height * width * 3` bytes.
    pub pixels: Vec<u8>,
    /// One label per image; `None` for an unlabelled split (STL-10 `unlabeled`).
    pub labels: Option<Vec<u16>>,
    /// Class names in label order.
    pub class_names: Vec<String>,
}

impl ImageDataset {
    /// Number of images.
    pub fn len(&self) -> usize {
        let per = self.height * self.width * 3;
        if per == 0 {
            0
        } else {
            self.pixels.len() / per
        }
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    pub fn num_classes(&self) -> usize {
        self.class_names.len()
    }
    /// Bytes of image `i`, HWC RGB.
    pub fn image(&self, i: usize) -> &[u8] {
        let per = self.height * self.width * 3;
        &self.pixels[i * per..(i + 1) * per]
    }
    /// Label of image `i`, `None` when the split is unlabelled.
    pub fn label(&self, i: usize) -> Option<u16> {
        self.labels.as_ref().map(|l| l[i])
    }
}

/// Everything that can go wrong reading a dataset. Each variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: truncated at byte offset {offset}: {detail}")]
    Truncated {
        path: PathBuf,
        offset: u64,
        detail: String,
    },
    #[error("{path}: malformed at byte offset {offset}: {detail}")]
    Malformed {
        path: PathBuf,
        offset: u64,
        detail: String,
    },
    #[error("{path}: {detail}")]
    Invalid { path: PathBuf, detail: String },
}
