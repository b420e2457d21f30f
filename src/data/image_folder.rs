//! `data.dataset = "image-folder"`: your own images, of any size, decoded once into a cache.
//!
//! Layout under `data.path`:
//! - `train/<class>/…` and `test/<class>/…` (`val/` is accepted instead of `test/`): one folder
//!   per class, sorted names give labels 0, 1, …; images may sit at any depth inside a class
//!   folder. Train and test must hold the same classes.
//! - `unlabeled/…` (optional, any depth, no classes): read when `data.pretrain_split =
//!   "unlabeled"`.
//!
//! Files: `.png`, `.jpg`/`.jpeg` and `.webp` (any case), decoded by content (a PNG named `.jpg`
//! decodes). Pixels become RGB: grey is replicated to three channels, **alpha is discarded** (the
//! stored colour is kept, as PIL's `Image.convert("RGB")` and hence torchvision's `ImageFolder`
//! do), 16-bit channels are scaled to 8 bits, palettes are expanded, and the EXIF orientation of a
//! JPEG/WebP is applied (so a portrait phone photo stays upright). Names starting with `.` are
//! hidden and skipped (counted in [`SplitFiles::hidden`]); every other file that is not an image
//! is an error, so nothing is skipped silently.
//!
//! Size: `data.image_size` = S and `data.resize` ([`ResizeRule`]): `none` requires every image
//! to be S×S; `center-crop` takes the centred square of side min(W, H) and resizes it to S×S
//! with a bilinear filter that widens with the scale when shrinking (antialiased, like PIL's
//! `BILINEAR`; the `image` crate's `Triangle` filter).
//!
//! Cache: decoding and resizing happen once per split, into
//! `<cache_dir>/<split>-<S>-<rule>.bin` (default `cache_dir`: `<path>/.spatial-reasoning-cache/`).
//! The file starts with a key: an FNV-1a 64 hash of the cache format version, the split, S, the
//! rule, the class names and, for every image, its path relative to the split folder, its
//! label, its size in bytes and its modification time (ns). Any change of these (a file added,
//! removed, renamed, rewritten) rebuilds the cache; file *contents* are not hashed (a rewrite
//! that keeps both the size and the modification time is not noticed). Later loads read the
//! cache instead of decoding. Progress is reported through a callback ([`CacheEvent`]).
//!
//! Errors: every problem of a split is collected — undecodable or truncated files, files of the
//! wrong size under `resize = "none"`, non-image files, files outside a class folder, empty class
//! folders, classes present in only one of train/test, a test split with fewer than two classes
//! (a probe needs two) — and returned at once ([`DataError::Several`] when there is more than
//! one), each naming its file or folder.

use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Instant, UNIX_EPOCH};

use rayon::prelude::*;

use super::{DataError, ImageDataset, Split};
use crate::config::{DataConfig, ResizeRule};

/// Name of the default cache folder inside `data.path` (hidden, so it is never read as a class).
pub const CACHE_FOLDER: &str = ".spatial-reasoning-cache";

/// Bump when decoding or the cache layout changes: old caches are then rebuilt.
const CACHE_VERSION: u32 = 1;
const MAGIC: &[u8; 8] = b"SRIMGC01";
/// Images decoded between two progress events.
const CHUNK: usize = 256;
/// Folder nesting accepted inside a split (guards against symlink loops).
const MAX_DEPTH: usize = 32;

/// What an image folder dataset is read with: resolved from a [`DataConfig`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FolderSpec {
    /// The folder holding `train/`, `test/` or `val/`, and optionally `unlabeled/`.
    pub path: PathBuf,
    /// Side S of the square images produced.
    pub image_size: usize,
    pub resize: ResizeRule,
    /// Where cache files go.
    pub cache_dir: PathBuf,
}

impl FolderSpec {
    /// From `data.path`, `data.image_size`, `data.resize` and `data.cache_dir`.
    pub fn from_config(cfg: &DataConfig) -> Result<FolderSpec, DataError> {
        let path = cfg.path.clone().ok_or_else(|| DataError::Invalid {
            path: PathBuf::from("data.path"),
            detail: "not set: data.dataset = \"image-folder\" reads the folder it names".into(),
        })?;
        let cache_dir = cfg
            .cache_dir
            .clone()
            .unwrap_or_else(|| path.join(CACHE_FOLDER));
        Ok(FolderSpec {
            path,
            image_size: cfg.image_size,
            resize: cfg.resize,
            cache_dir,
        })
    }

    /// The cache file of `split`.
    pub fn cache_path(&self, split: Split) -> PathBuf {
        self.cache_dir.join(format!(
            "{}-{}-{}.bin",
            split.name(),
            self.image_size,
            self.resize.name()
        ))
    }
}

/// Whether an existing cache may be used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CachePolicy {
    /// Use the cache when its key matches the files (the normal case).
    Reuse,
    /// Decode every file again and rewrite the cache (`data verify`).
    Rebuild,
}

/// Progress of reading a split (the library never prints; the CLI renders these).
#[derive(Clone, Debug, PartialEq)]
pub enum CacheEvent {
    /// The split's folder was listed.
    Scanned {
        split: Split,
        images: usize,
        classes: usize,
        hidden: usize,
    },
    /// The cache matches the files and is used.
    Reused { split: Split, path: PathBuf },
    /// Decoding starts; `reason` says why there is no usable cache.
    Building {
        split: Split,
        images: usize,
        reason: String,
    },
    /// `done` of `total` images decoded.
    Decoded {
        split: Split,
        done: usize,
        total: usize,
    },
    /// The cache file was written.
    Written {
        split: Split,
        path: PathBuf,
        bytes: u64,
        seconds: f64,
    },
}

/// One image file found in a split.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileEntry {
    pub path: PathBuf,
    /// Size in bytes.
    pub len: u64,
    /// Modification time in nanoseconds since the Unix epoch (0 where the platform has none).
    pub mtime_ns: i128,
}

/// The files of one split, in label-then-path order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SplitFiles {
    pub split: Split,
    /// The split's folder (`train/`, `test/`, `val/` or `unlabeled/`).
    pub dir: PathBuf,
    pub files: Vec<FileEntry>,
    /// One label per file; `None` for `unlabeled`.
    pub labels: Option<Vec<u16>>,
    /// Class names (the train folder's class folders, sorted); empty for `unlabeled`.
    pub class_names: Vec<String>,
    /// Hidden entries (names starting with `.`) that were skipped.
    pub hidden: usize,
}

/// True for the extensions an image folder reads: `.png`, `.jpg`, `.jpeg`, `.webp` (any case).
pub fn is_image_name(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .map(|e| {
            matches!(
                e.to_ascii_lowercase().as_str(),
                "png" | "jpg" | "jpeg" | "webp"
            )
        })
        .unwrap_or(false)
}

fn invalid(path: &Path, detail: impl Into<String>) -> DataError {
    DataError::Invalid {
        path: path.to_path_buf(),
        detail: detail.into(),
    }
}

fn io_err(path: &Path, error: std::io::Error) -> DataError {
    DataError::Io {
        path: path.to_path_buf(),
        error,
    }
}

/// Several problems as one error (one problem is returned as itself).
fn collect(path: &Path, mut problems: Vec<DataError>) -> Result<(), DataError> {
    match problems.len() {
        0 => Ok(()),
        1 => Err(problems.remove(0)),
        _ => Err(DataError::Several {
            path: path.to_path_buf(),
            problems,
        }),
    }
}

fn is_hidden(path: &Path) -> bool {
    path.file_name()
        .map(|n| n.to_string_lossy().starts_with('.'))
        .unwrap_or(false)
}

/// Entries of `dir`, sorted by name; hidden ones counted in `hidden` and left out.
fn visible_entries(dir: &Path, hidden: &mut usize) -> Result<Vec<PathBuf>, DataError> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).map_err(|e| io_err(dir, e))? {
        let p = e.map_err(|e| io_err(dir, e))?.path();
        if is_hidden(&p) {
            *hidden += 1;
        } else {
            out.push(p);
        }
    }
    out.sort();
    Ok(out)
}

fn entry(path: PathBuf) -> Result<FileEntry, DataError> {
    let meta = std::fs::metadata(&path).map_err(|e| io_err(&path, e))?;
    let mtime_ns = match meta.modified().map(|t| t.duration_since(UNIX_EPOCH)) {
        Ok(Ok(d)) => d.as_nanos() as i128,
        Ok(Err(before)) => -(before.duration().as_nanos() as i128),
        Err(_) => 0,
    };
    Ok(FileEntry {
        path,
        len: meta.len(),
        mtime_ns,
    })
}

/// Every image below `dir` (any depth, sorted), pushing a problem for each non-image file.
fn walk(
    dir: &Path,
    depth: usize,
    files: &mut Vec<FileEntry>,
    hidden: &mut usize,
    problems: &mut Vec<DataError>,
) {
    if depth > MAX_DEPTH {
        problems.push(invalid(
            dir,
            format!("folders nested more than {MAX_DEPTH} deep (a symbolic-link loop?)"),
        ));
        return;
    }
    let entries = match visible_entries(dir, hidden) {
        Ok(e) => e,
        Err(e) => return problems.push(e),
    };
    for p in entries {
        if p.is_dir() {
            walk(&p, depth + 1, files, hidden, problems);
        } else if is_image_name(&p) {
            match entry(p) {
                Ok(f) => files.push(f),
                Err(e) => problems.push(e),
            }
        } else {
            problems.push(invalid(
                &p,
                "not an image file (expected .png, .jpg, .jpeg or .webp); move it out of the dataset folder",
            ));
        }
    }
}

/// The class folders of a labelled split folder (sorted), with a problem for every file that
/// sits directly in it.
fn class_dirs(
    dir: &Path,
    hidden: &mut usize,
    problems: &mut Vec<DataError>,
) -> Result<Vec<PathBuf>, DataError> {
    let mut classes = Vec::new();
    for p in visible_entries(dir, hidden)? {
        if p.is_dir() {
            classes.push(p);
        } else {
            problems.push(invalid(
                &p,
                "file outside a class folder (labelled splits hold one folder per class)",
            ));
        }
    }
    Ok(classes)
}

fn name_of(p: &Path) -> String {
    p.file_name()
        .unwrap_or_default()
        .to_string_lossy()
        .into_owned()
}

fn missing_folder(path: &Path, what: &str) -> DataError {
    io_err(
        path,
        std::io::Error::new(std::io::ErrorKind::NotFound, format!("{what} not found")),
    )
}

/// The labelled evaluation folder: `test/`, else `val/`; both is ambiguous.
fn test_dir(root: &Path) -> Result<PathBuf, DataError> {
    let (test, val) = (root.join("test"), root.join("val"));
    match (test.is_dir(), val.is_dir()) {
        (true, false) => Ok(test),
        (false, true) => Ok(val),
        (true, true) => Err(invalid(
            root,
            "holds both test/ and val/: keep one of them as the evaluation split",
        )),
        (false, false) => Err(missing_folder(
            &test,
            "the test split (test/<class>/… or val/<class>/…)",
        )),
    }
}

/// List the files of `split` and check the layout. A problem that leaves nothing to list (no
/// `train/`, say) is the error; the others (a non-image file, an empty class folder, …) are
/// returned beside the files found, so that decoding can still name every bad image in the same
/// pass.
pub fn scan(spec: &FolderSpec, split: Split) -> Result<(SplitFiles, Vec<DataError>), DataError> {
    let root = &spec.path;
    if !root.is_dir() {
        return Err(missing_folder(
            root,
            "data.path (the image folder holding train/ and test/)",
        ));
    }
    let mut problems = Vec::new();
    let mut hidden = 0;
    let mut files = Vec::new();
    if split == Split::Unlabeled {
        let dir = root.join("unlabeled");
        if !dir.is_dir() {
            return Err(missing_folder(
                &dir,
                "the unlabeled split (data.pretrain_split = \"unlabeled\" reads it)",
            ));
        }
        walk(&dir, 0, &mut files, &mut hidden, &mut problems);
        if files.is_empty() && problems.is_empty() {
            problems.push(invalid(&dir, "holds no .png/.jpg/.jpeg/.webp images"));
        }
        let files = SplitFiles {
            split,
            dir,
            files,
            labels: None,
            class_names: vec![],
            hidden,
        };
        return Ok((files, problems));
    }
    let train = root.join("train");
    if !train.is_dir() {
        return Err(missing_folder(&train, "the train split (train/<class>/…)"));
    }
    // Problems of train/ itself are reported when train is read, not again with test.
    let (mut train_hidden, mut train_problems) = (0, Vec::new());
    let train_classes = class_dirs(&train, &mut train_hidden, &mut train_problems)?;
    if split == Split::Train {
        hidden += train_hidden;
        problems.extend(train_problems);
    }
    if train_classes.is_empty() {
        return Err(invalid(
            &train,
            "no class folders (expected train/<class>/…)",
        ));
    }
    let class_names: Vec<String> = train_classes.iter().map(|p| name_of(p)).collect();
    if class_names.len() > u16::MAX as usize + 1 {
        return Err(invalid(
            &train,
            format!(
                "{} class folders, at most {} are supported",
                class_names.len(),
                u16::MAX as usize + 1
            ),
        ));
    }
    let dir = match split {
        Split::Train => train.clone(),
        _ => test_dir(root)?,
    };
    let classes = if split == Split::Train {
        train_classes
    } else {
        let classes = class_dirs(&dir, &mut hidden, &mut problems)?;
        let names: Vec<String> = classes.iter().map(|p| name_of(p)).collect();
        for c in class_names.iter().filter(|c| !names.contains(c)) {
            problems.push(invalid(
                &dir.join(c),
                format!("class `{c}` is in {} but not here", train.display()),
            ));
        }
        for c in names.iter().filter(|c| !class_names.contains(c)) {
            problems.push(invalid(
                &dir.join(c),
                format!("class `{c}` is not in {}", train.display()),
            ));
        }
        if class_names.len() < 2 {
            problems.push(invalid(
                &dir,
                format!(
                    "{} class (`{}`): probing (linear, kNN) needs at least two classes",
                    class_names.len(),
                    class_names.join("`, `")
                ),
            ));
        }
        classes
            .into_iter()
            .filter(|p| class_names.contains(&name_of(p)))
            .collect()
    };
    let mut labels = Vec::new();
    for class_dir in &classes {
        let name = name_of(class_dir);
        let label = class_names
            .iter()
            .position(|c| *c == name)
            .expect("filtered to the train classes");
        let before = files.len();
        let before_problems = problems.len();
        walk(class_dir, 0, &mut files, &mut hidden, &mut problems);
        let n = files.len() - before;
        if n == 0 && problems.len() == before_problems {
            problems.push(invalid(
                class_dir,
                "empty class folder: holds no .png/.jpg/.jpeg/.webp images",
            ));
        }
        labels.extend(std::iter::repeat_n(label as u16, n));
    }
    let files = SplitFiles {
        split,
        dir,
        files,
        labels: Some(labels),
        class_names,
        hidden,
    };
    Ok((files, problems))
}

/// FNV-1a 64, fed field by field.
struct Fnv(u64);

impl Fnv {
    fn new() -> Self {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
    fn bytes(&mut self, b: &[u8]) {
        // Length first, so ("ab", "c") and ("a", "bc") differ.
        for &x in (b.len() as u64).to_le_bytes().iter().chain(b) {
            self.0 ^= x as u64;
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
    }
}

/// The cache key of a split: see the module docs for what it covers.
pub fn cache_key(spec: &FolderSpec, files: &SplitFiles) -> String {
    let mut h = Fnv::new();
    h.bytes(&CACHE_VERSION.to_le_bytes());
    h.bytes(files.split.name().as_bytes());
    h.bytes(&(spec.image_size as u64).to_le_bytes());
    h.bytes(spec.resize.name().as_bytes());
    for c in &files.class_names {
        h.bytes(c.as_bytes());
    }
    for (i, f) in files.files.iter().enumerate() {
        let rel = f.path.strip_prefix(&files.dir).unwrap_or(&f.path);
        h.bytes(rel.to_string_lossy().as_bytes());
        h.bytes(&f.len.to_le_bytes());
        h.bytes(&f.mtime_ns.to_le_bytes());
        if let Some(l) = &files.labels {
            h.bytes(&l[i].to_le_bytes());
        }
    }
    format!("{:016x}", h.0)
}

/// Decode one image file to RGB8 (see the module docs for grey, alpha and orientation).
pub fn decode_rgb(path: &Path) -> Result<image::RgbImage, DataError> {
    use image::ImageDecoder;
    let cannot = |e: image::ImageError| invalid(path, format!("cannot decode image: {e}"));
    let reader = image::ImageReader::open(path)
        .map_err(|e| io_err(path, e))?
        .with_guessed_format()
        .map_err(|e| io_err(path, e))?;
    let mut decoder = reader.into_decoder().map_err(cannot)?;
    // `into_decoder` applies the dimension limits but, unlike `ImageReader::decode`, not the
    // allocation limit: a header claiming 16M × 524k pixels would abort the process allocating
    // its buffer (found by the `image_folder` fuzz target). Reserve it against the default 512 MiB.
    image::Limits::default()
        .reserve(decoder.total_bytes())
        .map_err(cannot)?;
    let orientation = decoder.orientation().map_err(cannot)?;
    let mut img = image::DynamicImage::from_decoder(decoder).map_err(cannot)?;
    img.apply_orientation(orientation);
    if img.width() == 0 || img.height() == 0 {
        return Err(invalid(path, "image has no pixels"));
    }
    Ok(img.to_rgb8())
}

/// Bring a decoded image to `side × side` by `rule`; returns HWC RGB bytes. `path` names the
/// file in errors.
///
/// # Shapes
/// `img: (H, W, 3)` → `(side, side, 3)` bytes
pub fn fit_to_square(
    img: &image::RgbImage,
    side: usize,
    rule: ResizeRule,
    path: &Path,
) -> Result<Vec<u8>, DataError> {
    let (w, h) = (img.width() as usize, img.height() as usize);
    if side == 0 || w == 0 || h == 0 {
        return Err(invalid(
            path,
            format!("cannot fit a {w}×{h} image to {side}×{side}"),
        ));
    }
    match rule {
        ResizeRule::None => {
            if (w, h) != (side, side) {
                return Err(invalid(
                    path,
                    format!(
                        "image is {w}×{h}, data.image_size is {side} (so {side}×{side} expected) and data.resize = \"none\"; set data.resize = \"center-crop\" to crop and resize"
                    ),
                ));
            }
            Ok(img.as_raw().clone())
        }
        ResizeRule::CenterCrop => {
            let c = w.min(h);
            let (x0, y0) = ((w - c) / 2, (h - c) / 2);
            let crop = image::imageops::crop_imm(img, x0 as u32, y0 as u32, c as u32, c as u32);
            if c == side {
                return Ok(crop.to_image().into_raw());
            }
            let out = image::imageops::resize(
                &*crop,
                side as u32,
                side as u32,
                image::imageops::FilterType::Triangle,
            );
            Ok(out.into_raw())
        }
    }
}

/// Decode and fit every file of `files` (in parallel; the result does not depend on the thread
/// count), reporting progress every [`CHUNK`] images. Every failing file is reported, after the
/// layout `problems` already found.
fn decode_split(
    spec: &FolderSpec,
    files: &SplitFiles,
    mut problems: Vec<DataError>,
    progress: &mut dyn FnMut(CacheEvent),
) -> Result<Vec<u8>, DataError> {
    let per = spec.image_size * spec.image_size * 3;
    let total = files.files.len();
    let mut pixels = vec![0u8; total * per];
    for (k, (dst, chunk)) in pixels
        .chunks_mut(CHUNK * per)
        .zip(files.files.chunks(CHUNK))
        .enumerate()
    {
        let errs: Vec<DataError> = dst
            .par_chunks_mut(per)
            .zip(chunk.par_iter())
            .filter_map(|(out, f)| {
                let fitted = decode_rgb(&f.path)
                    .and_then(|img| fit_to_square(&img, spec.image_size, spec.resize, &f.path));
                match fitted {
                    Ok(bytes) => {
                        out.copy_from_slice(&bytes);
                        None
                    }
                    Err(e) => Some(e),
                }
            })
            .collect();
        problems.extend(errs);
        progress(CacheEvent::Decoded {
            split: files.split,
            done: (k * CHUNK + chunk.len()).min(total),
            total,
        });
    }
    collect(&files.dir, problems)?;
    Ok(pixels)
}

/// The cache header (JSON, after the magic bytes and its length).
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
struct Header {
    key: String,
    split: String,
    image_size: usize,
    resize: ResizeRule,
    images: usize,
    labeled: bool,
    class_names: Vec<String>,
}

impl Header {
    /// Bytes after the header: labels (u16 LE) then pixels.
    fn payload_len(&self) -> u64 {
        let per = (self.image_size * self.image_size * 3) as u64;
        let labels = if self.labeled { 2 } else { 0 };
        self.images as u64 * (labels + per)
    }
}

/// Read a cache file's header; `Err(reason)` when the file is absent or unusable.
fn read_header(path: &Path) -> Result<(Header, BufReader<std::fs::File>, u64), String> {
    let file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err("no cache yet".into()),
        Err(e) => return Err(format!("cache {} unreadable: {e}", path.display())),
    };
    let file_len = file.metadata().map(|m| m.len()).unwrap_or(0);
    let mut r = BufReader::with_capacity(1 << 20, file);
    let mut magic = [0u8; 8];
    let mut len = [0u8; 8];
    let bad = |what: &str| format!("cache {} is {what}", path.display());
    r.read_exact(&mut magic)
        .and_then(|_| r.read_exact(&mut len))
        .map_err(|_| bad("truncated"))?;
    if &magic != MAGIC {
        return Err(bad("of another format"));
    }
    let len = u64::from_le_bytes(len);
    if len > 1 << 30 || 16 + len > file_len {
        return Err(bad("truncated"));
    }
    let mut json = vec![0u8; len as usize];
    r.read_exact(&mut json).map_err(|_| bad("truncated"))?;
    let header: Header = serde_json::from_slice(&json).map_err(|_| bad("damaged"))?;
    if 16 + len + header.payload_len() != file_len {
        return Err(bad("truncated or damaged"));
    }
    Ok((header, r, 16 + len))
}

/// Why the cache at `path` cannot serve `expected`, or `None` when it can.
fn stale_reason(path: &Path, expected: &Header) -> Option<String> {
    match read_header(path) {
        Err(reason) => Some(reason),
        Ok((h, _, _)) if h != *expected => Some(format!(
            "the files changed since the cache was written ({} images then, {} now)",
            h.images, expected.images
        )),
        Ok(_) => None,
    }
}

/// Read a cache file whose header equals `expected`.
fn read_cache(path: &Path, expected: &Header, name: &str) -> Result<ImageDataset, String> {
    let (h, mut r, _) = read_header(path)?;
    if h != *expected {
        return Err("the files changed since the cache was written".into());
    }
    let bad = |e: std::io::Error| format!("cache {} unreadable: {e}", path.display());
    let labels = if h.labeled {
        let mut raw = vec![0u8; 2 * h.images];
        r.read_exact(&mut raw).map_err(bad)?;
        let labels: Vec<u16> = raw
            .chunks_exact(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
            .collect();
        if labels.iter().any(|&l| l as usize >= h.class_names.len()) {
            return Err(format!(
                "cache {} holds a label out of range",
                path.display()
            ));
        }
        Some(labels)
    } else {
        None
    };
    let mut pixels = vec![0u8; h.images * h.image_size * h.image_size * 3];
    r.read_exact(&mut pixels).map_err(bad)?;
    Ok(ImageDataset {
        name: name.into(),
        split: h.split,
        height: h.image_size,
        width: h.image_size,
        pixels,
        labels,
        class_names: h.class_names,
    })
}

/// Write the cache atomically (temporary file in the same folder, fsync, rename).
fn write_cache(path: &Path, header: &Header, ds: &ImageDataset) -> Result<u64, DataError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|e| {
        invalid(
            dir,
            format!("cannot create the image cache folder: {e}; set data.cache_dir to a writable folder"),
        )
    })?;
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let tmp = dir.join(format!(
        ".{}.tmp-{}-{}",
        name_of(path),
        std::process::id(),
        COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    ));
    let result = (|| -> std::io::Result<u64> {
        let file = std::fs::File::create(&tmp)?;
        let mut w = BufWriter::with_capacity(1 << 20, file);
        let json = serde_json::to_vec(header).expect("a header always serialises");
        w.write_all(MAGIC)?;
        w.write_all(&(json.len() as u64).to_le_bytes())?;
        w.write_all(&json)?;
        if let Some(labels) = &ds.labels {
            let raw: Vec<u8> = labels.iter().flat_map(|l| l.to_le_bytes()).collect();
            w.write_all(&raw)?;
        }
        w.write_all(&ds.pixels)?;
        let file = w.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)?;
        Ok(16 + json.len() as u64 + header.payload_len())
    })();
    result.map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        invalid(
            path,
            format!("cannot write the image cache: {e}; set data.cache_dir to a writable folder"),
        )
    })
}

fn header_for(spec: &FolderSpec, files: &SplitFiles) -> Header {
    Header {
        key: cache_key(spec, files),
        split: files.split.name().into(),
        image_size: spec.image_size,
        resize: spec.resize,
        images: files.files.len(),
        labeled: files.labels.is_some(),
        class_names: files.class_names.clone(),
    }
}

fn check_spec(spec: &FolderSpec) -> Result<(), DataError> {
    if spec.image_size == 0 {
        return Err(invalid(&spec.path, "data.image_size is 0"));
    }
    Ok(())
}

/// Scan, decode and write the cache; returns the dataset.
fn build(
    spec: &FolderSpec,
    files: &SplitFiles,
    problems: Vec<DataError>,
    reason: String,
    progress: &mut dyn FnMut(CacheEvent),
) -> Result<ImageDataset, DataError> {
    let started = Instant::now();
    progress(CacheEvent::Building {
        split: files.split,
        images: files.files.len(),
        reason,
    });
    let pixels = decode_split(spec, files, problems, progress)?;
    let ds = ImageDataset {
        name: "image-folder".into(),
        split: files.split.name().into(),
        height: spec.image_size,
        width: spec.image_size,
        pixels,
        labels: files.labels.clone(),
        class_names: files.class_names.clone(),
    };
    let path = spec.cache_path(files.split);
    let bytes = write_cache(&path, &header_for(spec, files), &ds)?;
    progress(CacheEvent::Written {
        split: files.split,
        path,
        bytes,
        seconds: started.elapsed().as_secs_f64(),
    });
    Ok(ds)
}

/// Read one split: from the cache when it matches the files (`CachePolicy::Reuse`), else by
/// decoding every file and writing the cache.
pub fn load(
    spec: &FolderSpec,
    split: Split,
    policy: CachePolicy,
    progress: &mut dyn FnMut(CacheEvent),
) -> Result<ImageDataset, DataError> {
    let (files, problems) = scan_reported(spec, split, progress)?;
    let header = header_for(spec, &files);
    let path = spec.cache_path(split);
    let reason = match policy {
        _ if !problems.is_empty() => {
            "the layout has problems; decoding to find every bad file".into()
        }
        CachePolicy::Rebuild => "rebuild requested".to_string(),
        CachePolicy::Reuse => match read_cache(&path, &header, "image-folder") {
            Ok(ds) => {
                progress(CacheEvent::Reused { split, path });
                return Ok(ds);
            }
            Err(reason) => reason,
        },
    };
    build(spec, &files, problems, reason, progress)
}

fn scan_reported(
    spec: &FolderSpec,
    split: Split,
    progress: &mut dyn FnMut(CacheEvent),
) -> Result<(SplitFiles, Vec<DataError>), DataError> {
    check_spec(spec)?;
    let (files, problems) = scan(spec, split)?;
    progress(CacheEvent::Scanned {
        split,
        images: files.files.len(),
        classes: files.class_names.len(),
        hidden: files.hidden,
    });
    Ok((files, problems))
}

/// Make sure the cache of `split` is current, building it if not, without reading the pixels
/// of a current cache (the CLI calls this first so the build's progress can be shown).
pub fn prepare(
    spec: &FolderSpec,
    split: Split,
    progress: &mut dyn FnMut(CacheEvent),
) -> Result<(), DataError> {
    let (files, problems) = scan_reported(spec, split, progress)?;
    let header = header_for(spec, &files);
    let path = spec.cache_path(split);
    match stale_reason(&path, &header) {
        None if problems.is_empty() => {
            progress(CacheEvent::Reused { split, path });
            Ok(())
        }
        None => collect(&files.dir, problems),
        Some(reason) => build(spec, &files, problems, reason, progress).map(|_| ()),
    }
}

/// Whether the folder has an `unlabeled/` split.
pub fn has_unlabeled(spec: &FolderSpec) -> bool {
    spec.path.join("unlabeled").is_dir()
}
