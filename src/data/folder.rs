//! Fixed-size image folders (`root/<class>/*.{png,jpg,jpeg,webp}`) and tiny-ImageNet's official
//! layout. Folders of any size, with resizing and a cache, are [`super::image_folder`].
//!
//! Images are decoded with the `image` crate, in parallel (the result does not depend on the
//! thread count), and converted to RGB (grey is replicated, alpha discarded). Every image of a
//! dataset must have the same size; an image of another size is an error naming the file and
//! both sizes (we do not resize: a wrong-size file in an official dataset means a wrong file).
//! An image that cannot be decoded is an error naming the file.

use std::path::{Path, PathBuf};

use rayon::prelude::*;

use super::{dataset_dir, read_names, Counts, DataError, ImageDataset, Split};

/// True for the file names an image folder reads (`.png`, `.jpg`, `.jpeg`, `.webp`, any case).
pub fn is_image_file(path: &Path) -> bool {
    super::image_folder::is_image_name(path)
}

fn io_err(path: &Path, error: std::io::Error) -> DataError {
    DataError::Io {
        path: path.to_path_buf(),
        error,
    }
}

/// Entries of a directory, sorted by name (byte order).
fn sorted_entries(dir: &Path) -> Result<Vec<PathBuf>, DataError> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).map_err(|e| io_err(dir, e))? {
        out.push(e.map_err(|e| io_err(dir, e))?.path());
    }
    out.sort();
    Ok(out)
}

/// The image files in `dir`, sorted by name.
fn image_files(dir: &Path) -> Result<Vec<PathBuf>, DataError> {
    Ok(sorted_entries(dir)?
        .into_iter()
        .filter(|p| p.is_file() && is_image_file(p))
        .collect())
}

/// Decode one image file to RGB8: grey replicated, alpha discarded, EXIF orientation applied
/// (see [`super::image_folder::decode_rgb`]).
pub fn decode_rgb(path: &Path) -> Result<image::RgbImage, DataError> {
    super::image_folder::decode_rgb(path)
}

/// Decode `files` (all of size `height × width`, else an error naming the file) into one HWC
/// buffer, in parallel. The first failing file in list order is reported.
pub fn decode_all(files: &[PathBuf], height: usize, width: usize) -> Result<Vec<u8>, DataError> {
    let per = height * width * 3;
    if per == 0 {
        return Err(DataError::Invalid {
            path: files.first().cloned().unwrap_or_default(),
            detail: format!("image size {width}×{height} is empty"),
        });
    }
    let mut pixels = vec![0u8; files.len() * per];
    let results: Vec<Result<(), DataError>> = pixels
        .par_chunks_mut(per)
        .zip(files.par_iter())
        .map(|(dst, path)| {
            let img = decode_rgb(path)?;
            let (w, h) = (img.width() as usize, img.height() as usize);
            if (h, w) != (height, width) {
                return Err(DataError::Invalid {
                    path: path.clone(),
                    detail: format!(
                        "image is {w}×{h}, expected {width}×{height} like the rest of the dataset"
                    ),
                });
            }
            dst.copy_from_slice(img.as_raw());
            Ok(())
        })
        .collect();
    results.into_iter().collect::<Result<(), _>>()?;
    Ok(pixels)
}

/// Read an image folder: every sub-directory of `root` is a class (sorted by name → labels
/// 0, 1, …), holding `*.png` / `*.jpg` / `*.jpeg` / `*.webp` files (other files are ignored). Images must
/// all be `size = (height, width)`, or, when `None`, the size of the first image.
/// A class folder without images is an error.
pub fn load_image_folder(
    root: &Path,
    name: &str,
    split: &str,
    size: Option<(usize, usize)>,
) -> Result<ImageDataset, DataError> {
    let classes: Vec<PathBuf> = sorted_entries(root)?
        .into_iter()
        .filter(|p| p.is_dir())
        .collect();
    if classes.is_empty() {
        return Err(DataError::Invalid {
            path: root.to_path_buf(),
            detail: "no class folders".into(),
        });
    }
    let mut files = Vec::new();
    let mut labels = Vec::new();
    let mut class_names = Vec::new();
    for (label, dir) in classes.iter().enumerate() {
        let imgs = image_files(dir)?;
        if imgs.is_empty() {
            return Err(DataError::Invalid {
                path: dir.clone(),
                detail: "class folder holds no .png/.jpg/.jpeg/.webp images".into(),
            });
        }
        labels.extend(std::iter::repeat_n(label as u16, imgs.len()));
        files.extend(imgs);
        class_names.push(
            dir.file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned(),
        );
    }
    let (height, width) = match size {
        Some(s) => s,
        None => {
            let first = decode_rgb(&files[0])?;
            (first.height() as usize, first.width() as usize)
        }
    };
    let pixels = decode_all(&files, height, width)?;
    Ok(ImageDataset {
        name: name.into(),
        split: split.into(),
        height,
        width,
        pixels,
        labels: Some(labels),
        class_names,
    })
}

/// Read tiny-ImageNet (`tiny-imagenet-200/`, official layout, not reorganised):
/// `wnids.txt` (the 200 class ids; labels follow their **sorted** order, as an image-folder
/// reader of `train/` would give), `words.txt` (optional: the first name listed for each id
/// becomes the class name, else the id), `train/<wnid>/images/*.JPEG` (500 per class), and
/// `val/images/*.JPEG` labelled by `val/val_annotations.txt` (10,000; this is the `Test` split,
/// in annotation-file order). All images are 64×64.
///
/// With `Counts::Official`, 200 classes, 500 training images per class and 10,000 validation
/// images are required.
pub fn load_tiny_imagenet(
    root: &Path,
    split: Split,
    counts: Counts,
) -> Result<ImageDataset, DataError> {
    let dir = dataset_dir(
        root,
        "tiny-imagenet-200",
        "wnids.txt",
        "tiny-ImageNet",
        "tiny-imagenet.sh",
    )?;
    let wnids_path = dir.join("wnids.txt");
    let mut wnids = read_names(&wnids_path)?.unwrap_or_default();
    wnids.sort();
    if let Some(w) = wnids.windows(2).find(|w| w[0] == w[1]) {
        return Err(DataError::Invalid {
            path: wnids_path,
            detail: format!("class id {} listed twice", w[0]),
        });
    }
    let official = counts == Counts::Official;
    if wnids.is_empty() || (official && wnids.len() != 200) {
        return Err(DataError::Invalid {
            path: wnids_path,
            detail: format!("{} class ids, expected 200", wnids.len()),
        });
    }
    let class_names = tiny_class_names(&dir.join("words.txt"), &wnids)?;
    let (files, labels) = match split {
        Split::Train => {
            let mut files = Vec::new();
            let mut labels = Vec::new();
            for (label, wnid) in wnids.iter().enumerate() {
                let class_dir = dir.join("train").join(wnid).join("images");
                let imgs = image_files(&class_dir)?;
                if imgs.is_empty() || (official && imgs.len() != 500) {
                    return Err(DataError::Invalid {
                        path: class_dir,
                        detail: format!("{} images, expected 500", imgs.len()),
                    });
                }
                labels.extend(std::iter::repeat_n(label as u16, imgs.len()));
                files.extend(imgs);
            }
            (files, labels)
        }
        Split::Test => tiny_val(&dir, &wnids, official)?,
        Split::Unlabeled => {
            return Err(DataError::Invalid {
                path: dir,
                detail: "tiny-imagenet has no unlabeled split".into(),
            })
        }
    };
    let pixels = decode_all(&files, 64, 64)?;
    Ok(ImageDataset {
        name: "tiny-imagenet".into(),
        split: split.name().into(),
        height: 64,
        width: 64,
        pixels,
        labels: Some(labels),
        class_names,
    })
}

/// Class names from `words.txt` (`wnid<TAB>name, synonym, …`): the first name, else the id.
fn tiny_class_names(words: &Path, wnids: &[String]) -> Result<Vec<String>, DataError> {
    let mut names: Vec<String> = wnids.to_vec();
    if let Some(lines) = read_names(words)? {
        for line in lines {
            if let Some((id, rest)) = line.split_once('\t') {
                if let Ok(k) = wnids.binary_search_by(|w| w.as_str().cmp(id.trim())) {
                    let first = rest.split(',').next().unwrap_or("").trim();
                    if !first.is_empty() {
                        names[k] = first.to_string();
                    }
                }
            }
        }
    }
    Ok(names)
}

/// The validation split: `val/val_annotations.txt` lines `file<TAB>wnid<TAB>x0<TAB>y0<TAB>x1<TAB>y1`.
fn tiny_val(
    dir: &Path,
    wnids: &[String],
    official: bool,
) -> Result<(Vec<PathBuf>, Vec<u16>), DataError> {
    let ann = dir.join("val").join("val_annotations.txt");
    let text = std::fs::read(&ann).map_err(|e| io_err(&ann, e))?;
    let images = dir.join("val").join("images");
    let mut files = Vec::new();
    let mut labels = Vec::new();
    let mut offset = 0u64;
    for line in text.split(|&b| b == b'\n') {
        let line_offset = offset;
        offset += line.len() as u64 + 1;
        let line = String::from_utf8_lossy(line);
        let line = line.trim_end_matches('\r');
        if line.trim().is_empty() {
            continue;
        }
        let mut fields = line.split('\t');
        let (Some(file), Some(wnid)) = (fields.next(), fields.next()) else {
            return Err(DataError::Malformed {
                path: ann,
                offset: line_offset,
                detail: format!("expected `file<TAB>wnid<TAB>…`, found `{line}`"),
            });
        };
        let Ok(label) = wnids.binary_search_by(|w| w.as_str().cmp(wnid)) else {
            return Err(DataError::Malformed {
                path: ann,
                offset: line_offset,
                detail: format!("class id `{wnid}` of {file} is not in wnids.txt"),
            });
        };
        let path = images.join(file);
        if !path.is_file() {
            return Err(io_err(
                &path,
                std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    format!("listed in {} but missing", ann.display()),
                ),
            ));
        }
        files.push(path);
        labels.push(label as u16);
    }
    // Annotations and image files must match one to one.
    let mut listed = files.clone();
    listed.sort();
    if let Some(w) = listed.windows(2).find(|w| w[0] == w[1]) {
        return Err(DataError::Invalid {
            path: w[0].clone(),
            detail: format!("listed twice in {}", ann.display()),
        });
    }
    if let Some(extra) = image_files(&images)?
        .into_iter()
        .find(|p| listed.binary_search(p).is_err())
    {
        return Err(DataError::Invalid {
            path: extra,
            detail: format!("image not listed in {}", ann.display()),
        });
    }
    if files.is_empty() || (official && files.len() != 10_000) {
        return Err(DataError::Invalid {
            path: ann,
            detail: format!("{} validation images, expected 10000", files.len()),
        });
    }
    Ok((files, labels))
}
