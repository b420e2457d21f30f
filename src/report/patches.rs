//! A picture of sampled patches on real images: images upscaled in a grid, one coloured box per
//! patch.

use std::fmt::Write as _;
use std::path::Path;

use image::codecs::png::PngEncoder;
use image::{ExtendedColorType, ImageEncoder, RgbImage};
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::plots::{colour, plot_paths, PlotFiles, FAMILY};
use super::ReportError;
use crate::font::register_font;

/// One image with the patches sampled from it.
#[derive(Clone, Debug, PartialEq)]
pub struct PatchPanel {
    /// `height × width × 3` bytes, HWC RGB.
    pub pixels: Vec<u8>,
    pub height: usize,
    pub width: usize,
    /// `(row, col, side)` of each patch: its top-left pixel and its side, in image pixels.
    pub boxes: Vec<(usize, usize, usize)>,
}

const GAP: u32 = 12;
const TITLE_H: u32 = 48;
/// Panels per row of the grid, at most.
const GRID_COLS: usize = 8;

/// Draws `panels` upscaled (nearest neighbour, about 160 px a side) in a grid of up to 8 columns,
/// with a 2-px box in a distinct colour for each patch, and `title` above. Writes `STEM.png`
/// and `STEM.svg` (the SVG embeds each image as a small PNG drawn pixelated, and the boxes as
/// vector rectangles).
///
/// Errors (naming the panel) when a panel's pixel count is not `height · width · 3`, when a box
/// leaves its image or has side 0, or when there is no panel.
pub fn plot_patches(
    panels: &[PatchPanel],
    title: &str,
    stem: &Path,
) -> Result<PlotFiles, ReportError> {
    if panels.is_empty() {
        return Err(ReportError::Input(format!(
            "{}: no image to draw",
            stem.display()
        )));
    }
    for (i, p) in panels.iter().enumerate() {
        if p.height == 0 || p.width == 0 || p.pixels.len() != p.height * p.width * 3 {
            return Err(ReportError::Input(format!(
                "{}: panel {i}: {} bytes for a {}×{}×3 image",
                stem.display(),
                p.pixels.len(),
                p.height,
                p.width
            )));
        }
        for &(r, c, s) in &p.boxes {
            if s == 0 || r + s > p.height || c + s > p.width {
                return Err(ReportError::Input(format!(
                    "{}: panel {i}: patch (row {r}, col {c}, side {s}) leaves the {}×{} image",
                    stem.display(),
                    p.height,
                    p.width
                )));
            }
        }
    }
    register_font();
    let files = plot_paths(stem)?;
    let layout = Layout::new(panels);
    write_png(panels, title, &layout, &files.png)?;
    write_svg(panels, title, &layout, &files.svg)?;
    Ok(files)
}

struct Layout {
    scale: u32,
    cell_w: u32,
    cell_h: u32,
    cols: usize,
    width: u32,
    height: u32,
}

impl Layout {
    fn new(panels: &[PatchPanel]) -> Self {
        let max_h = panels.iter().map(|p| p.height).max().unwrap_or(1) as u32;
        let max_w = panels.iter().map(|p| p.width).max().unwrap_or(1) as u32;
        let scale = (160 / max_h.max(max_w)).max(1);
        let cols = panels.len().min(GRID_COLS);
        let rows = panels.len().div_ceil(cols);
        let (cell_w, cell_h) = (max_w * scale, max_h * scale);
        let width = (GAP + cols as u32 * (cell_w + GAP)).max(420);
        let height = TITLE_H + rows as u32 * (cell_h + GAP);
        Layout {
            scale,
            cell_w,
            cell_h,
            cols,
            width,
            height,
        }
    }
    /// Top-left corner of panel `i`, in output pixels.
    fn origin(&self, i: usize) -> (u32, u32) {
        let (r, c) = ((i / self.cols) as u32, (i % self.cols) as u32);
        let used = self.cols as u32 * (self.cell_w + GAP) - GAP;
        let left = (self.width - used) / 2;
        (
            left + c * (self.cell_w + GAP),
            TITLE_H + r * (self.cell_h + GAP),
        )
    }
    /// Box of a patch in output pixels: (x0, y0, x1, y1), inclusive corners.
    fn patch_box(&self, i: usize, (r, c, s): (usize, usize, usize)) -> (i32, i32, i32, i32) {
        let (ox, oy) = self.origin(i);
        let k = self.scale as i32;
        let x0 = ox as i32 + c as i32 * k;
        let y0 = oy as i32 + r as i32 * k;
        (x0, y0, x0 + s as i32 * k - 1, y0 + s as i32 * k - 1)
    }
}

fn write_png(
    panels: &[PatchPanel],
    title: &str,
    l: &Layout,
    path: &Path,
) -> Result<(), ReportError> {
    let mut img = RgbImage::from_pixel(l.width, l.height, image::Rgb([255, 255, 255]));
    for (i, p) in panels.iter().enumerate() {
        let (ox, oy) = l.origin(i);
        for y in 0..p.height as u32 * l.scale {
            for x in 0..p.width as u32 * l.scale {
                let (sy, sx) = ((y / l.scale) as usize, (x / l.scale) as usize);
                let o = (sy * p.width + sx) * 3;
                img.put_pixel(
                    ox + x,
                    oy + y,
                    image::Rgb([p.pixels[o], p.pixels[o + 1], p.pixels[o + 2]]),
                );
            }
        }
    }
    let plot_err = |e: String| ReportError::Plot {
        path: path.to_path_buf(),
        detail: e,
    };
    {
        let mut buf = img.as_flat_samples_mut();
        let backend = BitMapBackend::with_buffer(buf.as_mut_slice(), (l.width, l.height));
        let root = backend.into_drawing_area();
        let draw = || -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
            root.draw(&Text::new(
                title.to_string(),
                (l.width as i32 / 2, TITLE_H as i32 / 2),
                (FAMILY, 20)
                    .into_font()
                    .color(&BLACK)
                    .pos(Pos::new(HPos::Center, VPos::Center)),
            ))?;
            for (i, p) in panels.iter().enumerate() {
                for (j, &b) in p.boxes.iter().enumerate() {
                    let (x0, y0, x1, y1) = l.patch_box(i, b);
                    let c = colour(j);
                    // Two nested 1-px outlines: a 2-px box that stays inside the patch.
                    root.draw(&Rectangle::new([(x0, y0), (x1, y1)], c.stroke_width(1)))?;
                    root.draw(&Rectangle::new(
                        [(x0 + 1, y0 + 1), (x1 - 1, y1 - 1)],
                        c.stroke_width(1),
                    ))?;
                }
            }
            root.present()?;
            Ok(())
        };
        draw().map_err(|e| plot_err(e.to_string()))?;
    }
    img.save(path).map_err(|e| plot_err(e.to_string()))
}

fn write_svg(
    panels: &[PatchPanel],
    title: &str,
    l: &Layout,
    path: &Path,
) -> Result<(), ReportError> {
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" xmlns:xlink="http://www.w3.org/1999/xlink" width="{w}" height="{h}" viewBox="0 0 {w} {h}">"#,
        w = l.width,
        h = l.height
    );
    let _ = writeln!(
        s,
        r#"<rect x="0" y="0" width="{}" height="{}" fill="white"/>"#,
        l.width, l.height
    );
    let _ = writeln!(
        s,
        r#"<text x="{}" y="{}" font-family="DejaVu Sans, sans-serif" font-size="20" text-anchor="middle" dominant-baseline="middle">{}</text>"#,
        l.width / 2,
        TITLE_H / 2,
        xml_escape(title)
    );
    for (i, p) in panels.iter().enumerate() {
        let mut png = Vec::new();
        PngEncoder::new(&mut png)
            .write_image(
                &p.pixels,
                p.width as u32,
                p.height as u32,
                ExtendedColorType::Rgb8,
            )
            .map_err(|e| ReportError::Plot {
                path: path.to_path_buf(),
                detail: format!("panel {i}: {e}"),
            })?;
        let data = base64(&png);
        let (ox, oy) = l.origin(i);
        let _ = writeln!(
            s,
            r#"<image x="{ox}" y="{oy}" width="{}" height="{}" preserveAspectRatio="none" image-rendering="pixelated" style="image-rendering:pixelated" href="data:image/png;base64,{data}" xlink:href="data:image/png;base64,{data}"/>"#,
            p.width as u32 * l.scale,
            p.height as u32 * l.scale
        );
        for (j, &b) in p.boxes.iter().enumerate() {
            let (x0, y0, x1, y1) = l.patch_box(i, b);
            let RGBColor(r, g, bl) = colour(j);
            // The stroke is centred on the path: inset by 1 so the 2-px line stays inside the patch.
            let _ = writeln!(
                s,
                r#"<rect x="{}" y="{}" width="{}" height="{}" fill="none" stroke="rgb({r},{g},{bl})" stroke-width="2"/>"#,
                x0 + 1,
                y0 + 1,
                x1 - x0 - 1,
                y1 - y0 - 1
            );
        }
    }
    s.push_str("</svg>\n");
    std::fs::write(path, s).map_err(|e| ReportError::io(path, e))
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Standard base64 (RFC 4648, with `=` padding).
fn base64(bytes: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (b[0] as u32) << 16 | (b[1] as u32) << 8 | b[2] as u32;
        for k in 0..4 {
            if k <= chunk.len() {
                out.push(T[(n >> (18 - 6 * k) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_python() {
        // python3 -c "import base64; [print(base64.b64encode(s).decode()) for s in
        //   [b'', b'f', b'fo', b'foo', b'foob', b'fooba', b'foobar', bytes([0, 255, 128, 7])]]"
        let cases: [(&[u8], &str); 8] = [
            (b"", ""),
            (b"f", "Zg=="),
            (b"fo", "Zm8="),
            (b"foo", "Zm9v"),
            (b"foob", "Zm9vYg=="),
            (b"fooba", "Zm9vYmE="),
            (b"foobar", "Zm9vYmFy"),
            (&[0, 255, 128, 7], "AP+ABw=="),
        ];
        for (input, want) in cases {
            assert_eq!(base64(input), want, "input {input:?}");
        }
    }

    #[test]
    fn layout_places_boxes_on_upscaled_pixels() {
        let p = PatchPanel {
            pixels: vec![0; 32 * 32 * 3],
            height: 32,
            width: 32,
            boxes: vec![(2, 3, 8)],
        };
        let l = Layout::new(&[p.clone(), p]);
        assert_eq!(l.scale, 5);
        assert_eq!((l.cell_w, l.cell_h, l.cols), (160, 160, 2));
        let (ox, oy) = l.origin(1);
        assert_eq!(
            l.patch_box(1, (2, 3, 8)),
            (
                ox as i32 + 15,
                oy as i32 + 10,
                ox as i32 + 54,
                oy as i32 + 49
            )
        );
    }
}
