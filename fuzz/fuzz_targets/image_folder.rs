//! Image-folder readers and their PNG/JPEG/WebP decode path through the real file path:
//! `data::folder::load_image_folder` (fixed size) and `data::image_folder::load` (the
//! `image-folder` dataset: any size, the resize rules, the cache). Property: never panic; a
//! dataset that loads is consistent (every image the same size, HWC RGB, one label per image);
//! `center-crop` fits every decodable image; a second load from the cache equals the first.
//!
//! Input layout: byte 0 = mode (bits 0-1: extension .png / .jpg / .webp / .PNG; bit 2: a second
//! image in a second class folder, the payload split at byte 1; bit 3: fixed-size reader with a
//! required size of `(byte 1 % 9, byte 1 / 9 % 9)`; bit 4: the `image-folder` dataset instead,
//! side `1 + byte 1 % 40`, bit 5 choosing `resize = "center-crop"` over `"none"`), then the file
//! bytes.
#![no_main]

mod scratch;

use libfuzzer_sys::fuzz_target;
use spatial_reasoning::config::ResizeRule;
use spatial_reasoning::data::image_folder::{self, CachePolicy, FolderSpec};
use spatial_reasoning::data::{folder, Split};

fuzz_target!(|data: &[u8]| {
    if data.len() < 2 {
        return;
    }
    let (mode, param, payload) = (data[0], data[1], &data[2..]);
    let root = scratch::scratch("image", true);
    let ext = ["png", "jpg", "webp", "PNG"][(mode & 3) as usize];
    let files: Vec<&[u8]> = if mode & 4 != 0 {
        let k = param as usize * payload.len() / 256;
        vec![&payload[..k], &payload[k..]]
    } else {
        vec![payload]
    };
    if mode & 16 != 0 {
        return dataset(&root, ext, &files, param, mode & 32 != 0);
    }
    for (i, bytes) in files.iter().enumerate() {
        let class = root.join(format!("class{i}"));
        std::fs::create_dir_all(&class).unwrap();
        std::fs::write(class.join(format!("img.{ext}")), bytes).unwrap();
    }
    let size = (mode & 8 != 0).then(|| (param as usize % 9, param as usize / 9 % 9));
    if let Ok(ds) = folder::load_image_folder(&root, "fuzz", "train", size) {
        assert_eq!(ds.len(), files.len());
        assert_eq!(ds.pixels.len(), ds.len() * ds.height * ds.width * 3);
        assert!(ds.height > 0 && ds.width > 0);
        if let Some(s) = size {
            assert_eq!((ds.height, ds.width), s);
        }
        assert_eq!(ds.labels.as_ref().map(Vec::len), Some(files.len()));
        assert_eq!(ds.num_classes(), files.len());
    }
});

/// The `image-folder` dataset: `train/class{i}/img.ext`, read twice (built, then cached).
fn dataset(root: &std::path::Path, ext: &str, files: &[&[u8]], param: u8, crop: bool) {
    let side = 1 + param as usize % 40;
    let resize = if crop {
        ResizeRule::CenterCrop
    } else {
        ResizeRule::None
    };
    for (i, bytes) in files.iter().enumerate() {
        let class = root.join("train").join(format!("class{i}"));
        std::fs::create_dir_all(&class).unwrap();
        let path = class.join(format!("img.{ext}"));
        std::fs::write(&path, bytes).unwrap();
        // The resize step on its own: center-crop fits every image that decodes.
        if let Ok(img) = image_folder::decode_rgb(&path) {
            for rule in [ResizeRule::None, ResizeRule::CenterCrop] {
                let fitted = image_folder::fit_to_square(&img, side, rule, &path);
                match (&fitted, rule) {
                    (Ok(px), _) => assert_eq!(px.len(), side * side * 3),
                    (Err(e), ResizeRule::CenterCrop) => panic!("center-crop failed: {e}"),
                    (Err(_), ResizeRule::None) => {
                        assert_ne!((img.width() as usize, img.height() as usize), (side, side))
                    }
                }
            }
        }
    }
    let spec = FolderSpec {
        path: root.to_path_buf(),
        image_size: side,
        resize,
        cache_dir: root.join(image_folder::CACHE_FOLDER),
    };
    let Ok(ds) = image_folder::load(&spec, Split::Train, CachePolicy::Reuse, &mut |_| {}) else {
        return;
    };
    assert_eq!(ds.len(), files.len());
    assert_eq!((ds.height, ds.width), (side, side));
    assert_eq!(ds.pixels.len(), ds.len() * side * side * 3);
    assert_eq!(ds.labels.as_ref().map(Vec::len), Some(files.len()));
    let mut reused = false;
    let again = image_folder::load(&spec, Split::Train, CachePolicy::Reuse, &mut |e| {
        reused |= matches!(e, image_folder::CacheEvent::Reused { .. })
    })
    .expect("a split that loaded loads again");
    assert!(reused, "the second load reads the cache");
    assert_eq!(again.pixels, ds.pixels);
    assert_eq!(again.labels, ds.labels);
}
