//! Datasets: random access, `u8` HWC RGB pixels plus a label, held in memory.
//!
//! Every reader produces an [`ImageDataset`]. Readers never panic on bad input: they return a
//! [`DataError`] naming the file, the byte offset where known, and what is wrong. A reader never
//! returns a silently shorter dataset: a partial record, a record count other than the official
//! one, or a label out of range is an error.
//!
//! Entry point: [`load`] (by [`DatasetKind`]); per-format readers live in [`cifar`], [`stl10`],
//! [`folder`] (fixed-size image folders and tiny-ImageNet), [`image_folder`] (your own images of
//! any size, cached once decoded) and [`synthetic`] (the generated "parts" dataset).
//! [`channel_stats`] gives the per-channel mean and std used for normalisation; [`preview`] draws
//! labelled sample grids.

use std::io::Read;
use std::path::{Path, PathBuf};

use crate::config::{DataConfig, DatasetKind};

pub mod cifar;
pub mod folder;
pub mod image_folder;
pub mod preview;
pub mod stl10;
pub mod synthetic;

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
        self.pixels.len().checked_div(per).unwrap_or(0)
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
    // The I/O error is part of the message, not a separate cause, so error chains print it once.
    #[error("{path}: {error}")]
    Io {
        path: PathBuf,
        error: std::io::Error,
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
    /// Every problem found in one pass (an image folder reports all its bad files at once).
    #[error("{}: {} problems:{}", .path.display(), .problems.len(), list_problems(.problems))]
    Several {
        path: PathBuf,
        problems: Vec<DataError>,
    },
}

fn list_problems(problems: &[DataError]) -> String {
    problems.iter().map(|p| format!("\n  {p}")).collect()
}

impl ImageDataset {
    /// Bytes per image (`height * width * 3`).
    pub fn image_bytes(&self) -> usize {
        self.height * self.width * 3
    }

    /// Images per class (`None` for an unlabelled split). Labels are checked against
    /// `num_classes()` when a dataset is read, so every label indexes the result.
    pub fn class_counts(&self) -> Option<Vec<usize>> {
        let labels = self.labels.as_ref()?;
        let mut counts = vec![0usize; self.num_classes()];
        for &l in labels {
            if let Some(c) = counts.get_mut(l as usize) {
                *c += 1;
            }
        }
        Some(counts)
    }

    /// A new dataset holding the images at `indices`, in that order.
    ///
    /// # Panics
    /// When an index is out of range (a caller bug, not bad input).
    pub fn subset(&self, indices: &[usize]) -> ImageDataset {
        let mut pixels = Vec::with_capacity(indices.len() * self.image_bytes());
        for &i in indices {
            pixels.extend_from_slice(self.image(i));
        }
        ImageDataset {
            name: self.name.clone(),
            split: self.split.clone(),
            height: self.height,
            width: self.width,
            pixels,
            labels: self
                .labels
                .as_ref()
                .map(|l| indices.iter().map(|&i| l[i]).collect()),
            class_names: self.class_names.clone(),
        }
    }
}

/// Which split of a dataset to read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Split {
    Train,
    /// The evaluation split (tiny-ImageNet: its labelled `val/` folder).
    Test,
    /// STL-10's 100,000 unlabelled images, or an image folder's `unlabeled/`.
    Unlabeled,
}

impl Split {
    pub const ALL: [Split; 3] = [Split::Train, Split::Test, Split::Unlabeled];
    pub fn name(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Test => "test",
            Split::Unlabeled => "unlabeled",
        }
    }
    /// The splits `kind` has, in the order `data verify` reads them.
    pub fn of(kind: DatasetKind) -> &'static [Split] {
        match kind {
            // An image folder's unlabeled/ is optional (see `image_folder::has_unlabeled`).
            DatasetKind::Stl10 | DatasetKind::ImageFolder => {
                &[Split::Train, Split::Test, Split::Unlabeled]
            }
            _ => &[Split::Train, Split::Test],
        }
    }
}

impl std::fmt::Display for Split {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Split {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|k| k.name() == s)
            .ok_or_else(|| format!("unknown split `{s}` (expected train, test or unlabeled)"))
    }
}

/// How strictly a reader checks record counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Counts {
    /// The official number of records per file (CIFAR batches 10,000 each, …); any other count,
    /// larger or smaller, is an error. [`load`] always uses this.
    Official,
    /// Any non-zero number of whole records (small fixtures, subsets).
    Any,
}

/// Read one split of a dataset.
///
/// `root` is the data root (see [`crate::config::resolve_data_root`]); each reader accepts either
/// the root holding the dataset's official folder (`cifar-10-batches-bin/`, `cifar-100-binary/`,
/// `stl10_binary/`, `tiny-imagenet-200/`) or that folder itself. `Synthetic` ignores `root` and
/// generates `cfg.train_size` / `cfg.test_size` images from `cfg.synthetic_seed` at 32×32.
/// `ImageFolder` ignores `root` too: it reads `cfg.path` at `cfg.image_size` by `cfg.resize`,
/// through its cache ([`image_folder::load`]; call [`image_folder::prepare`] first to see the
/// cache being built).
///
/// The whole split is returned; `cfg.train_limit` is the caller's business
/// (`ds.subset(&(0..n).collect::<Vec<_>>())`).
pub fn load(
    kind: DatasetKind,
    root: &Path,
    split: Split,
    cfg: &DataConfig,
) -> Result<ImageDataset, DataError> {
    if !Split::of(kind).contains(&split) {
        return Err(DataError::Invalid {
            path: root.to_path_buf(),
            detail: format!("{} has no {} split", kind.name(), split.name()),
        });
    }
    match kind {
        DatasetKind::Synthetic => synthetic::generate(
            split,
            match split {
                Split::Train => cfg.train_size,
                _ => cfg.test_size,
            },
            cfg.synthetic_seed,
        ),
        DatasetKind::Cifar10 => cifar::load_cifar10(root, split, Counts::Official),
        DatasetKind::Cifar100 => {
            cifar::load_cifar100(root, split, cifar::Cifar100Labels::Fine, Counts::Official)
        }
        DatasetKind::Cifar100Coarse => {
            cifar::load_cifar100(root, split, cifar::Cifar100Labels::Coarse, Counts::Official)
        }
        DatasetKind::Stl10 => stl10::load_stl10(root, split, Counts::Official),
        DatasetKind::TinyImagenet => folder::load_tiny_imagenet(root, split, Counts::Official),
        DatasetKind::ImageFolder => image_folder::load(
            &image_folder::FolderSpec::from_config(cfg)?,
            split,
            image_folder::CachePolicy::Reuse,
            &mut |_| {},
        ),
    }
}

/// Per-channel (R, G, B) mean and standard deviation of a dataset's pixels, in `[0, 1]` units,
/// over every pixel of every image: `mean = Σx / N`, `std = sqrt(Σx² / N − mean²)` (population
/// std, as `numpy.std`). Sums are exact integers, so the result does not depend on the thread
/// count. An empty dataset gives zeros.
pub fn channel_stats(ds: &ImageDataset) -> ([f32; 3], [f32; 3]) {
    use rayon::prelude::*;
    const CHUNK: usize = 1 << 20; // bytes; a multiple of 3 keeps channels aligned
    let chunk = CHUNK - CHUNK % 3;
    let (sum, sq) = ds
        .pixels
        .par_chunks(chunk)
        .map(|c| {
            let mut s = [0u64; 3];
            let mut q = [0u64; 3];
            for px in c.chunks_exact(3) {
                for ch in 0..3 {
                    let v = px[ch] as u64;
                    s[ch] += v;
                    q[ch] += v * v;
                }
            }
            (s, q)
        })
        .reduce(
            || ([0u64; 3], [0u64; 3]),
            |(a, b), (c, d)| {
                (
                    [a[0] + c[0], a[1] + c[1], a[2] + c[2]],
                    [b[0] + d[0], b[1] + d[1], b[2] + d[2]],
                )
            },
        );
    let n = (ds.pixels.len() / 3) as f64;
    let mut mean = [0f32; 3];
    let mut std = [0f32; 3];
    if n > 0.0 {
        for ch in 0..3 {
            let m = sum[ch] as f64 / n;
            let var = (sq[ch] as f64 / n - m * m).max(0.0);
            mean[ch] = (m / 255.0) as f32;
            std[ch] = (var.sqrt() / 255.0) as f32;
        }
    }
    (mean, std)
}

// ---------------------------------------------------------------------------------------------
// Helpers shared by the readers.

fn io_err(path: &Path, error: std::io::Error) -> DataError {
    DataError::Io {
        path: path.to_path_buf(),
        error,
    }
}

/// Read a text file of names, one per line; blank lines are dropped. `Ok(None)` when the file
/// does not exist.
pub(crate) fn read_names(path: &Path) -> Result<Option<Vec<String>>, DataError> {
    match std::fs::read(path) {
        Ok(bytes) => {
            let text = String::from_utf8(bytes).map_err(|e| DataError::Malformed {
                path: path.to_path_buf(),
                offset: e.utf8_error().valid_up_to() as u64,
                detail: "not UTF-8 text".into(),
            })?;
            Ok(Some(
                text.lines()
                    .map(|l| l.trim().to_string())
                    .filter(|l| !l.is_empty())
                    .collect(),
            ))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_err(path, e)),
    }
}

/// Class names from `path` if it exists (it must then hold exactly `n` names), else `fallback`.
pub(crate) fn names_or(
    path: &Path,
    n: usize,
    fallback: impl FnOnce() -> Vec<String>,
) -> Result<Vec<String>, DataError> {
    match read_names(path)? {
        Some(names) if names.len() == n => Ok(names),
        Some(names) => Err(DataError::Invalid {
            path: path.to_path_buf(),
            detail: format!("expected {n} class names, found {}", names.len()),
        }),
        None => Ok(fallback()),
    }
}

/// Check that `path` holds whole records of `record_len` bytes, and exactly `expected` of them
/// when given; returns the record count. Errors: missing file (`Io`), a partial last record
/// (`Truncated` at the byte offset where it starts), an empty file or a wrong count (`Invalid`).
pub(crate) fn record_count(
    path: &Path,
    record_len: usize,
    expected: Option<usize>,
) -> Result<usize, DataError> {
    let len = std::fs::metadata(path).map_err(|e| io_err(path, e))?.len();
    let rec = record_len as u64;
    if len % rec != 0 {
        let start = len - len % rec;
        return Err(DataError::Truncated {
            path: path.to_path_buf(),
            offset: start,
            detail: format!(
                "file is {len} bytes, not a multiple of the {record_len}-byte record; the partial record {} starts here",
                len / rec
            ),
        });
    }
    let n = (len / rec) as usize;
    match expected {
        Some(e) if e != n => Err(DataError::Invalid {
            path: path.to_path_buf(),
            detail: format!(
                "{n} records of {record_len} bytes ({len} bytes), expected exactly {e}{}",
                if n < e {
                    " (incomplete file)"
                } else {
                    " (oversized file)"
                }
            ),
        }),
        _ if n == 0 => Err(DataError::Invalid {
            path: path.to_path_buf(),
            detail: "empty file: no records".into(),
        }),
        _ => Ok(n),
    }
}

/// Stream the records of a file already checked by [`record_count`], calling
/// `f(index, byte_offset, record)` for each in order.
pub(crate) fn for_each_record(
    path: &Path,
    record_len: usize,
    mut f: impl FnMut(usize, u64, &[u8]) -> Result<(), DataError>,
) -> Result<(), DataError> {
    let file = std::fs::File::open(path).map_err(|e| io_err(path, e))?;
    let mut reader = std::io::BufReader::with_capacity(1 << 20, file);
    let mut buf = vec![0u8; record_len];
    let mut i = 0usize;
    loop {
        // Fill one record; a clean EOF at a record boundary ends the loop.
        let mut filled = 0;
        while filled < record_len {
            match reader.read(&mut buf[filled..]) {
                Ok(0) => break,
                Ok(k) => filled += k,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(io_err(path, e)),
            }
        }
        let offset = (i * record_len) as u64;
        if filled == 0 {
            return Ok(());
        }
        if filled < record_len {
            return Err(DataError::Truncated {
                path: path.to_path_buf(),
                offset,
                detail: format!(
                    "record {i} has only {filled} of {record_len} bytes (the file changed while reading?)"
                ),
            });
        }
        f(i, offset, &buf)?;
        i += 1;
    }
}

/// The dataset folder: `root/<official>` if it holds `probe`, else `root` itself if it does.
/// Errors name both places looked at.
pub(crate) fn dataset_dir(
    root: &Path,
    official: &str,
    probe: &str,
    what: &str,
    script: &str,
) -> Result<PathBuf, DataError> {
    let nested = root.join(official);
    if nested.join(probe).exists() {
        return Ok(nested);
    }
    if root.join(probe).exists() {
        return Ok(root.to_path_buf());
    }
    Err(DataError::Io {
        path: nested.join(probe),
        error: std::io::Error::new(
            std::io::ErrorKind::NotFound,
            format!(
                "{what} not found (looked for {} and {}); download it with data-scripts/{script}",
                nested.join(probe).display(),
                root.join(probe).display()
            ),
        ),
    })
}
