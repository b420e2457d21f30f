//! Image-folder reader and its PNG/JPEG decode path (`data::folder::load_image_folder`,
//! `decode_rgb`, `decode_all`) through the real file path. Property: never panic; a dataset
//! that loads is consistent (every image the same size, HWC RGB, one label per image).
//!
//! Input layout: byte 0 = mode (bits 0-1: extension .png / .jpg / .jpeg / .PNG; bit 2: a
//! second image in a second class folder, the payload split at byte 1; bit 3: a required size
//! of `(byte 1 % 9, byte 1 / 9 % 9)`), then the file bytes.
#![no_main]

mod scratch;

use libfuzzer_sys::fuzz_target;
use spatial_reasoning::data::folder;

fuzz_target!(|data: &[u8]| {
    if data.len() < 2 {
        return;
    }
    let (mode, param, payload) = (data[0], data[1], &data[2..]);
    let root = scratch::scratch("image", true);
    let ext = ["png", "jpg", "jpeg", "PNG"][(mode & 3) as usize];
    let files: Vec<&[u8]> = if mode & 4 != 0 {
        let k = param as usize * payload.len() / 256;
        vec![&payload[..k], &payload[k..]]
    } else {
        vec![payload]
    };
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
