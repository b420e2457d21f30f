//! Labelled sample grids of a dataset (`data preview`), drawn with the crate's font
//! ([`crate::font`]).

use std::path::Path;

use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::{DataError, ImageDataset};

/// Which images a preview shows: `per_class = Some(k)` takes the first `k` images of every class
/// (one row per class); otherwise `count` images evenly spread over the dataset.
pub fn select(ds: &ImageDataset, count: usize, per_class: Option<usize>) -> Vec<usize> {
    let n = ds.len();
    match (per_class, ds.labels.as_ref()) {
        (Some(k), Some(labels)) => {
            let mut rows = vec![Vec::new(); ds.num_classes()];
            for (i, &l) in labels.iter().enumerate() {
                if let Some(r) = rows.get_mut(l as usize) {
                    if r.len() < k {
                        r.push(i);
                    }
                }
            }
            rows.into_iter().flatten().collect()
        }
        _ => {
            let count = count.min(n);
            (0..count).map(|j| j * n / count.max(1)).collect()
        }
    }
}

/// Draw `indices` of `ds` in a grid of `columns` columns, each image scaled up `scale` times
/// (nearest neighbour) with its class name (or index, when unlabelled) underneath, and a title
/// line on top. Returns the RGB image.
pub fn render_grid(
    ds: &ImageDataset,
    indices: &[usize],
    columns: usize,
    scale: usize,
) -> Result<image::RgbImage, String> {
    crate::font::register_font();
    let columns = columns.max(1);
    let scale = scale.max(1);
    let (iw, ih) = (ds.width * scale, ds.height * scale);
    let pad = 6;
    let label_h = 16;
    let title_h = 24;
    let cell_w = iw.max(64) + pad;
    let cell_h = ih + label_h + pad;
    let rows = indices.len().div_ceil(columns);
    let (w, h) = (columns * cell_w + pad, title_h + rows * cell_h + pad);
    let mut buf = vec![255u8; w * h * 3];
    // Blit the images first, then let plotters draw text over the same buffer.
    for (k, &i) in indices.iter().enumerate() {
        let x0 = pad + (k % columns) * cell_w + (cell_w - pad - iw) / 2;
        let y0 = title_h + (k / columns) * cell_h;
        let img = ds.image(i);
        for y in 0..ih {
            for x in 0..iw {
                let s = ((y / scale) * ds.width + x / scale) * 3;
                let d = ((y0 + y) * w + x0 + x) * 3;
                buf[d..d + 3].copy_from_slice(&img[s..s + 3]);
            }
        }
    }
    {
        let root = BitMapBackend::with_buffer(&mut buf, (w as u32, h as u32)).into_drawing_area();
        let title = format!(
            "{} {} — {} of {} images",
            ds.name,
            ds.split,
            indices.len(),
            ds.len()
        );
        let title_style = TextStyle::from(("sans-serif", 16).into_font()).color(&BLACK);
        root.draw(&Text::new(title, (pad as i32, 4), title_style))
            .map_err(|e| e.to_string())?;
        let style = TextStyle::from(("sans-serif", 12).into_font())
            .color(&BLACK)
            .pos(Pos::new(HPos::Center, VPos::Top));
        for (k, &i) in indices.iter().enumerate() {
            let label = match ds.label(i) {
                Some(l) => ds
                    .class_names
                    .get(l as usize)
                    .cloned()
                    .unwrap_or_else(|| l.to_string()),
                None => format!("#{i}"),
            };
            let label = fit(&root, &label, &style, (cell_w - 2) as u32);
            let cx = pad + (k % columns) * cell_w + (cell_w - pad) / 2;
            let y = title_h + (k / columns) * cell_h + ih + 2;
            root.draw(&Text::new(label, (cx as i32, y as i32), style.clone()))
                .map_err(|e| e.to_string())?;
        }
        root.present().map_err(|e| e.to_string())?;
    }
    image::RgbImage::from_raw(w as u32, h as u32, buf).ok_or_else(|| "buffer size".to_string())
}

/// Shorten `text` with a trailing "…" until it fits `max_w` pixels.
fn fit<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    text: &str,
    style: &TextStyle,
    max_w: u32,
) -> String {
    let width = |t: &str| area.estimate_text_size(t, style).map(|s| s.0).unwrap_or(0);
    if width(text) <= max_w {
        return text.to_string();
    }
    let chars: Vec<char> = text.chars().collect();
    for n in (1..chars.len()).rev() {
        let t: String = chars[..n].iter().collect::<String>() + "…";
        if width(&t) <= max_w {
            return t;
        }
    }
    "…".into()
}

/// The default up-scaling for an image side: about 96 px per image (32 → 3, 64 → 2, 96 → 1).
pub fn default_scale(side: usize) -> usize {
    ((96.0 / side.max(1) as f64).round() as usize).max(1)
}

/// Render a preview grid and save it as PNG at `out`.
pub fn save_preview(
    ds: &ImageDataset,
    indices: &[usize],
    columns: usize,
    scale: usize,
    out: &Path,
) -> Result<(), DataError> {
    let img = render_grid(ds, indices, columns, scale).map_err(|e| DataError::Invalid {
        path: out.to_path_buf(),
        detail: format!("drawing the preview failed: {e}"),
    })?;
    img.save(out).map_err(|e| DataError::Invalid {
        path: out.to_path_buf(),
        detail: format!("writing the PNG failed: {e}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grey_dataset() -> ImageDataset {
        ImageDataset {
            name: "t".into(),
            split: "train".into(),
            height: 4,
            width: 4,
            pixels: vec![128; 2 * 4 * 4 * 3],
            labels: Some(vec![0, 1]),
            class_names: vec!["alpha".into(), "a-very-long-class-name-indeed".into()],
        }
    }

    #[test]
    fn grid_draws_images_and_label_text() {
        let ds = grey_dataset();
        let img = render_grid(&ds, &[0, 1], 2, 8).unwrap();
        // Two cells of max(32, 64) + 6 px, plus padding; title, image, label rows.
        assert_eq!(img.dimensions(), (2 * 70 + 6, 24 + 32 + 16 + 6 + 6));
        // The first image is blitted (centred in its 64 px cell) …
        assert_eq!(img.get_pixel(6 + 16, 24).0, [128, 128, 128]);
        // … and its label is drawn: dark pixels in the strip under it, which would stay white
        // if the font were not registered.
        let dark = |x0: u32, x1: u32| {
            (x0..x1)
                .flat_map(|x| (24 + 32..24 + 32 + 16).map(move |y| (x, y)))
                .filter(|&(x, y)| img.get_pixel(x, y).0[0] < 100)
                .count()
        };
        assert!(dark(6, 70) > 10, "no label text under image 0");
        // A name too long for the cell is shortened, not drawn across the neighbour.
        assert!(dark(76, 146) > 10);
    }

    #[test]
    fn selection_per_class_and_spread() {
        let mut ds = grey_dataset();
        ds.pixels = vec![0; 6 * 48];
        ds.labels = Some(vec![1, 0, 1, 1, 0, 0]);
        assert_eq!(select(&ds, 0, Some(2)), vec![1, 4, 0, 2]);
        assert_eq!(select(&ds, 3, None), vec![0, 2, 4]);
        assert_eq!(select(&ds, 100, None).len(), 6);
    }
}
