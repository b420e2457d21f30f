//! The [`Image`] type (3-channel CHW `f32` in [0, 1]), cropping, and bilinear resizing.
//!
//! # Resize semantics (decision)
//!
//! [`resize_bilinear`] reproduces `torchvision.transforms.functional.resize(tensor, size,
//! InterpolationMode.BILINEAR, antialias=True)`, i.e. PyTorch's `_upsample_bilinear2d_aa`, which
//! was written to match PIL's `Image.resize(..., BILINEAR)`. The authors of both papers ran
//! `RandomResizedCrop` on **PIL** images, and PIL's bilinear filter always antialiases (its
//! triangle filter is stretched by the scale factor when downscaling). So antialiasing is on, as
//! in the authors' pipeline. For upscaling (every crop in `RandomResizedCrop` to the source size,
//! every zoomed patch) antialias on and off give the same numbers: the filter support is one
//! pixel and the border renormalisation equals the usual edge clamp. The one remaining
//! difference with PIL is that PIL rounds to `u8` after each pass; we keep `f32` throughout.

/// A 3-channel image, channel-major (CHW), `f32` values nominally in [0, 1].
///
/// # Shapes
/// `data.len() == 3 * height * width`; pixel `(c, y, x)` is `data[(c * height + y) * width + x]`.
#[derive(Clone, Debug, PartialEq)]
pub struct Image {
    pub height: usize,
    pub width: usize,
    pub data: Vec<f32>,
}

impl Image {
    /// An all-zero image.
    pub fn zeros(height: usize, width: usize) -> Image {
        Image {
            height,
            width,
            data: vec![0.0; 3 * height * width],
        }
    }

    /// Convert `u8` HWC RGB bytes (as stored by [`crate::data::ImageDataset`]) to CHW `f32` in
    /// [0, 1], dividing by 255 like `torchvision.transforms.ToTensor`.
    ///
    /// # Shapes
    /// `bytes.len() == h * w * 3`.
    ///
    /// # Panics
    /// If `bytes.len() != h * w * 3` (a programming error: the dataset fixes the size).
    pub fn from_hwc_u8(bytes: &[u8], h: usize, w: usize) -> Image {
        assert_eq!(
            bytes.len(),
            h * w * 3,
            "Image::from_hwc_u8: {} bytes for a {h}×{w}×3 image",
            bytes.len()
        );
        let hw = h * w;
        let mut data = vec![0.0f32; 3 * hw];
        for (i, px) in bytes.chunks_exact(3).enumerate() {
            for c in 0..3 {
                data[c * hw + i] = U8_TO_F32[px[c] as usize];
            }
        }
        Image {
            height: h,
            width: w,
            data,
        }
    }

    /// Convert back to `u8` HWC RGB, clamping to [0, 1] and rounding (for drawing).
    pub fn to_hwc_u8(&self) -> Vec<u8> {
        let hw = self.height * self.width;
        let mut out = vec![0u8; 3 * hw];
        for i in 0..hw {
            for c in 0..3 {
                out[i * 3 + c] = (self.data[c * hw + i].clamp(0.0, 1.0) * 255.0).round() as u8;
            }
        }
        out
    }

    /// Value at channel `c`, row `y`, column `x`.
    pub fn at(&self, c: usize, y: usize, x: usize) -> f32 {
        self.data[(c * self.height + y) * self.width + x]
    }
}

/// The `h × w` window of `src` whose top-left pixel is `(top, left)`, like
/// `torchvision.transforms.functional.crop` inside the image.
///
/// # Panics
/// If the window does not lie inside the image (callers derive windows from the image size).
pub fn crop(src: &Image, top: usize, left: usize, h: usize, w: usize) -> Image {
    assert!(
        top + h <= src.height && left + w <= src.width,
        "crop: window top={top} left={left} {h}×{w} outside a {}×{} image",
        src.height,
        src.width
    );
    let mut out = Image::zeros(h, w);
    for c in 0..3 {
        for y in 0..h {
            let s = (c * src.height + top + y) * src.width + left;
            let d = (c * h + y) * w;
            out.data[d..d + w].copy_from_slice(&src.data[s..s + w]);
        }
    }
    out
}

/// Bilinear resize of the whole image to `out_h × out_w`, antialiased when downscaling (see the
/// module docs: torchvision `resize(..., BILINEAR, antialias=True)` = PIL bilinear).
///
/// # Panics
/// If any size is zero.
pub fn resize_bilinear(src: &Image, out_h: usize, out_w: usize) -> Image {
    let window = Window {
        top: 0,
        left: 0,
        height: src.height,
        width: src.width,
    };
    resized_crop(src, window, out_h, out_w)
}

/// Crop then resize, as `torchvision.transforms.functional.resized_crop(..., antialias=True)`.
pub fn resized_crop(src: &Image, window: Window, out_h: usize, out_w: usize) -> Image {
    let mut out = Image::zeros(out_h, out_w);
    let mut scratch = ResizeScratch::default();
    resize_window_into(
        &Source::F32Chw {
            data: &src.data,
            height: src.height,
            width: src.width,
        },
        window,
        out_h,
        out_w,
        &mut out.data,
        &mut scratch,
    );
    out
}

/// A rectangle inside an image: top-left pixel `(top, left)`, size `height × width`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct Window {
    pub top: usize,
    pub left: usize,
    pub height: usize,
    pub width: usize,
}

/// Where resize reads its pixels from: the dataset's `u8` HWC bytes (scaled by 1/255 on the fly,
/// so no converted copy is made) or an `f32` CHW buffer.
pub(crate) enum Source<'a> {
    U8Hwc {
        data: &'a [u8],
        height: usize,
        width: usize,
    },
    F32Chw {
        data: &'a [f32],
        height: usize,
        width: usize,
    },
}

impl Source<'_> {
    pub(crate) fn dims(&self) -> (usize, usize) {
        match *self {
            Source::U8Hwc { height, width, .. } | Source::F32Chw { height, width, .. } => {
                (height, width)
            }
        }
    }
}

/// `v / 255` in `f32` for every byte, exactly as `ToTensor` divides.
pub(crate) static U8_TO_F32: [f32; 256] = {
    let mut t = [0.0f32; 256];
    let mut i = 0;
    while i < 256 {
        t[i] = i as f32 / 255.0;
        i += 1;
    }
    t
};

/// Reusable buffers for [`resize_window_into`]: no allocation once warmed up.
#[derive(Default)]
pub(crate) struct ResizeScratch {
    rows: AxisWeights,
    cols: AxisWeights,
    tmp: Vec<f32>,
}

/// Antialiased bilinear weights along one axis: output `i` reads input pixels
/// `start[i] .. start[i] + len[i]` (relative to the window) with weights
/// `w[i * stride .. i * stride + len[i]]`.
#[derive(Default)]
struct AxisWeights {
    start: Vec<usize>,
    len: Vec<usize>,
    w: Vec<f32>,
    stride: usize,
}

impl AxisWeights {
    /// PyTorch `_compute_indices_min_size_weights_aa` with the bilinear (triangle) filter,
    /// `align_corners = false`, scale = in / out.
    #[inline]
    fn compute(&mut self, in_size: usize, out_size: usize) {
        let scale = in_size as f64 / out_size as f64;
        let support = if scale >= 1.0 { scale } else { 1.0 };
        let invscale = if scale >= 1.0 { 1.0 / scale } else { 1.0 };
        let stride = (support.ceil() as usize) * 2 + 1;
        self.stride = stride;
        self.start.clear();
        self.len.clear();
        self.w.clear();
        self.w.resize(out_size * stride, 0.0);
        let filter = |x: f64| {
            let x = x.abs();
            if x < 1.0 {
                1.0 - x
            } else {
                0.0
            }
        };
        for i in 0..out_size {
            let center = scale * (i as f64 + 0.5);
            // `as i64` truncates toward zero like the C++ static_cast.
            let xmin = ((center - support + 0.5) as i64).max(0) as usize;
            let xmax = ((center + support + 0.5) as i64).min(in_size as i64) as usize;
            let xsize = xmax.saturating_sub(xmin).min(stride);
            let tap = |j: usize| filter(((j + xmin) as f64 - center + 0.5) * invscale);
            let total: f64 = (0..xsize).map(tap).sum();
            let row = &mut self.w[i * stride..i * stride + xsize];
            for (j, dst) in row.iter_mut().enumerate() {
                *dst = if total != 0.0 {
                    (tap(j) / total) as f32
                } else {
                    0.0
                };
            }
            self.start.push(xmin);
            self.len.push(xsize);
        }
    }
}

/// Resize `window` of `src` to `out_h × out_w`, writing CHW `f32` into `out`
/// (`out.len() == 3 * out_h * out_w`). Horizontal pass first, then vertical (PyTorch's order).
#[inline]
pub(crate) fn resize_window_into(
    src: &Source,
    window: Window,
    out_h: usize,
    out_w: usize,
    out: &mut [f32],
    scratch: &mut ResizeScratch,
) {
    assert!(
        window.height > 0 && window.width > 0 && out_h > 0 && out_w > 0,
        "resize: zero size (window {}×{}, output {out_h}×{out_w})",
        window.height,
        window.width
    );
    let (sh, sw) = src.dims();
    assert!(
        window.top + window.height <= sh && window.left + window.width <= sw,
        "resize: window {window:?} outside a {sh}×{sw} image"
    );
    assert_eq!(out.len(), 3 * out_h * out_w);
    scratch.cols.compute(window.width, out_w);
    scratch.rows.compute(window.height, out_h);
    let wh = window.height;
    scratch.tmp.clear();
    scratch.tmp.resize(3 * wh * out_w, 0.0);
    let cols = &scratch.cols;
    let tmp = &mut scratch.tmp;
    // Horizontal pass: tmp[c][y][ox] over the window's rows.
    match *src {
        Source::U8Hwc { data, width, .. } => {
            for y in 0..wh {
                let row = &data[((window.top + y) * width + window.left) * 3..];
                for ox in 0..out_w {
                    let s = cols.start[ox];
                    let n = cols.len[ox];
                    let ws = &cols.w[ox * cols.stride..ox * cols.stride + n];
                    let (mut r, mut g, mut b) = (0.0f32, 0.0f32, 0.0f32);
                    for (k, &wk) in ws.iter().enumerate() {
                        let p = &row[(s + k) * 3..(s + k) * 3 + 3];
                        r += wk * U8_TO_F32[p[0] as usize];
                        g += wk * U8_TO_F32[p[1] as usize];
                        b += wk * U8_TO_F32[p[2] as usize];
                    }
                    tmp[y * out_w + ox] = r;
                    tmp[(wh + y) * out_w + ox] = g;
                    tmp[(2 * wh + y) * out_w + ox] = b;
                }
            }
        }
        Source::F32Chw {
            data,
            height,
            width,
        } => {
            for c in 0..3 {
                for y in 0..wh {
                    let base = (c * height + window.top + y) * width + window.left;
                    let row = &data[base..base + window.width];
                    let dst = &mut tmp[(c * wh + y) * out_w..(c * wh + y + 1) * out_w];
                    for (ox, d) in dst.iter_mut().enumerate() {
                        let s = cols.start[ox];
                        let n = cols.len[ox];
                        let ws = &cols.w[ox * cols.stride..ox * cols.stride + n];
                        let mut acc = 0.0f32;
                        for (k, &wk) in ws.iter().enumerate() {
                            acc += wk * row[s + k];
                        }
                        *d = acc;
                    }
                }
            }
        }
    }
    // Vertical pass: out[c][oy][ox].
    let rows = &scratch.rows;
    for c in 0..3 {
        let plane = &tmp[c * wh * out_w..(c + 1) * wh * out_w];
        for oy in 0..out_h {
            let s = rows.start[oy];
            let n = rows.len[oy];
            let ws = &rows.w[oy * rows.stride..oy * rows.stride + n];
            let dst = &mut out[(c * out_h + oy) * out_w..(c * out_h + oy + 1) * out_w];
            dst.fill(0.0);
            for (k, &wk) in ws.iter().enumerate() {
                let src_row = &plane[(s + k) * out_w..(s + k + 1) * out_w];
                for (d, &v) in dst.iter_mut().zip(src_row) {
                    *d += wk * v;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Deterministic non-constant test image: byte `i` of the HWC buffer is `(i·37 + 11) mod 256`
    /// (the preamble of `tests/augment_golden.rs`).
    fn img(h: usize, w: usize) -> Image {
        let bytes: Vec<u8> = (0..h * w * 3)
            .map(|i| ((i * 37 + 11) % 256) as u8)
            .collect();
        Image::from_hwc_u8(&bytes, h, w)
    }

    /// (source h, source w, output h, output w): up, down, mixed, non-square.
    const CASES: [(usize, usize, usize, usize); 6] = [
        (6, 7, 4, 3),
        (6, 7, 3, 9),
        (5, 5, 11, 13),
        (32, 32, 17, 23),
        (9, 4, 2, 31),
        (1, 8, 5, 1),
    ];

    /// `resize_bilinear` is `resized_crop` over the whole image, bit for bit. (Before the two
    /// shared one implementation, all `CASES` outputs were compared bitwise against the previous
    /// stand-alone `resize_bilinear`: identical.)
    #[test]
    fn resize_is_resized_crop_of_the_full_window() {
        for &(h, w, oh, ow) in &CASES {
            let src = img(h, w);
            let full = Window {
                top: 0,
                left: 0,
                height: h,
                width: w,
            };
            let a = resize_bilinear(&src, oh, ow);
            let b = resized_crop(&src, full, oh, ow);
            assert_eq!((a.height, a.width), (oh, ow));
            let bits = |im: &Image| im.data.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&a), bits(&b), "{h}×{w} -> {oh}×{ow}");
        }
    }

    /// Resizing a window reads only that window: `resized_crop(src, win)` equals cropping first
    /// and resizing the crop, bit for bit.
    #[test]
    fn resized_crop_equals_crop_then_resize() {
        let src = img(12, 10);
        for &(top, left, h, w, oh, ow) in &[
            (1, 2, 4, 3, 5, 6),
            (3, 0, 9, 10, 4, 4),
            (0, 5, 12, 5, 20, 2),
            (11, 9, 1, 1, 3, 2),
        ] {
            let win = Window {
                top,
                left,
                height: h,
                width: w,
            };
            let a = resized_crop(&src, win, oh, ow);
            let b = resize_bilinear(&crop(&src, top, left, h, w), oh, ow);
            assert_eq!(a, b, "window {win:?} -> {oh}×{ow}");
        }
    }

    /// Resizing to the source size returns the source exactly (the triangle filter has weight 1
    /// at the pixel centre and 0 at its neighbours).
    #[test]
    fn same_size_resize_is_identity() {
        for &(h, w, _, _) in &CASES {
            let src = img(h, w);
            assert_eq!(resize_bilinear(&src, h, w), src, "{h}×{w}");
        }
    }
}
