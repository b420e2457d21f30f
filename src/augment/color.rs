//! Colour transforms with torchvision's **tensor** semantics (`_functional_tensor.py`):
//! brightness, contrast, saturation, hue, grayscale and normalisation, all on CHW `f32` in
//! [0, 1], each result clamped to [0, 1] as torchvision does for float images.
//!
//! The in-place `*_planes` functions work on a CHW slice of `3 * hw` values; the [`Image`]
//! wrappers copy and call them.

use rand::seq::SliceRandom;
use rand::Rng as _;

use super::Image;
use crate::rng::Rng;

/// ITU-R 601-2 luma weights as torchvision writes them (`rgb_to_grayscale` for float tensors).
pub const LUMA: [f32; 3] = [0.2989, 0.587, 0.114];

/// `torchvision.transforms.ColorJitter`: the factor ranges it samples from. `None` = that
/// adjustment is off (torchvision's `None`, which also skips its random draw).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ColorJitter {
    pub brightness: Option<(f32, f32)>,
    pub contrast: Option<(f32, f32)>,
    pub saturation: Option<(f32, f32)>,
    pub hue: Option<(f32, f32)>,
}

/// The parameters of one jitter draw: the order of the four adjustments (a permutation of
/// 0 = brightness, 1 = contrast, 2 = saturation, 3 = hue) and the factors.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct JitterParams {
    pub order: [u8; 4],
    pub brightness: Option<f32>,
    pub contrast: Option<f32>,
    pub saturation: Option<f32>,
    pub hue: Option<f32>,
}

impl ColorJitter {
    /// `ColorJitter(brightness, contrast, saturation, hue)` with torchvision's ranges:
    /// `[max(0, 1 − v), 1 + v]` for the first three and `[−hue, hue]` for hue; a strength of 0
    /// turns that adjustment off.
    pub fn new(brightness: f32, contrast: f32, saturation: f32, hue: f32) -> ColorJitter {
        let factor = |v: f32| (v > 0.0).then(|| ((1.0 - v).max(0.0), 1.0 + v));
        ColorJitter {
            brightness: factor(brightness),
            contrast: factor(contrast),
            saturation: factor(saturation),
            hue: (hue > 0.0).then_some((-hue, hue)),
        }
    }

    /// The SPEC §2 jitter: `ColorJitter(0.8, 0.8, 0.8, 0.2)`.
    pub fn spec() -> ColorJitter {
        ColorJitter::new(0.8, 0.8, 0.8, 0.2)
    }

    /// Draw like `ColorJitter.get_params`: a random permutation, then each factor uniformly.
    pub fn sample_params(&self, rng: &mut Rng) -> JitterParams {
        let mut order = [0u8, 1, 2, 3];
        order.shuffle(rng);
        let mut draw = |r: Option<(f32, f32)>| r.map(|(lo, hi)| lo + (hi - lo) * rng.gen::<f32>());
        let brightness = draw(self.brightness);
        let contrast = draw(self.contrast);
        let saturation = draw(self.saturation);
        let hue = draw(self.hue);
        JitterParams {
            order,
            brightness,
            contrast,
            saturation,
            hue,
        }
    }

    /// Apply fixed parameters (a copy of `img`).
    pub fn apply(img: &Image, p: &JitterParams) -> Image {
        let mut out = img.clone();
        jitter_planes(&mut out.data, img.height * img.width, p);
        out
    }
}

/// Apply the four adjustments in `p.order`, skipping those whose factor is `None`.
#[inline]
pub fn jitter_planes(data: &mut [f32], hw: usize, p: &JitterParams) {
    for &f in &p.order {
        match f {
            0 => {
                if let Some(b) = p.brightness {
                    brightness_planes(data, b)
                }
            }
            1 => {
                if let Some(c) = p.contrast {
                    contrast_planes(data, hw, c)
                }
            }
            2 => {
                if let Some(s) = p.saturation {
                    saturation_planes(data, hw, s)
                }
            }
            _ => {
                if let Some(h) = p.hue {
                    hue_planes(data, hw, h)
                }
            }
        }
    }
}

/// `adjust_brightness`: `clamp(f · x, 0, 1)`.
#[inline]
pub fn brightness_planes(data: &mut [f32], factor: f32) {
    for v in data.iter_mut() {
        *v = (factor * *v).clamp(0.0, 1.0);
    }
}

/// `adjust_contrast`: `clamp(f · x + (1 − f) · m, 0, 1)` with `m` the mean of the grayscale image.
#[inline]
pub fn contrast_planes(data: &mut [f32], hw: usize, factor: f32) {
    let (r, rest) = data.split_at(hw);
    let (g, b) = rest.split_at(hw);
    let mut sum = 0.0f64;
    for i in 0..hw {
        sum += (LUMA[0] * r[i] + LUMA[1] * g[i] + LUMA[2] * b[i]) as f64;
    }
    let mean = (sum / hw as f64) as f32;
    let add = (1.0 - factor) * mean;
    for v in data.iter_mut() {
        *v = (factor * *v + add).clamp(0.0, 1.0);
    }
}

/// `adjust_saturation`: `clamp(f · x + (1 − f) · gray(x), 0, 1)` per pixel.
#[inline]
pub fn saturation_planes(data: &mut [f32], hw: usize, factor: f32) {
    let (r, rest) = data.split_at_mut(hw);
    let (g, b) = rest.split_at_mut(hw);
    let keep = 1.0 - factor;
    for i in 0..hw {
        let l = LUMA[0] * r[i] + LUMA[1] * g[i] + LUMA[2] * b[i];
        let add = keep * l;
        r[i] = (factor * r[i] + add).clamp(0.0, 1.0);
        g[i] = (factor * g[i] + add).clamp(0.0, 1.0);
        b[i] = (factor * b[i] + add).clamp(0.0, 1.0);
    }
}

/// `adjust_hue`: RGB → HSV (torchvision `_rgb2hsv`), `h = (h + f) mod 1`, HSV → RGB
/// (`_hsv2rgb`, with its clamps of p, q, t). torchvision rejects `f ∉ [−0.5, 0.5]`; here such a
/// factor is first reduced to the equivalent shift in that range.
///
/// Written with selects instead of branches (the same operations as torchvision's masked
/// arithmetic, so the same values) so that it vectorises: hue is the costliest transform.
pub fn hue_planes(data: &mut [f32], hw: usize, factor: f32) {
    let factor = if (-0.5..=0.5).contains(&factor) {
        factor
    } else {
        factor - factor.round()
    };
    let (r, rest) = data.split_at_mut(hw);
    let (g, b) = rest.split_at_mut(hw);
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU supports AVX2, checked just above.
        unsafe { hue_avx2(r, g, &mut b[..hw], factor) };
        return;
    }
    hue_kernel(r, g, &mut b[..hw], factor);
}

/// [`hue_kernel`] compiled for AVX2 (8 lanes). The crate is built for baseline x86-64, where
/// LLVM judges this select-heavy loop not worth vectorising; with AVX2 blends it is. Same IEEE
/// operations in the same order (no FMA contraction), so the same values as the scalar path.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn hue_avx2(r: &mut [f32], g: &mut [f32], b: &mut [f32], factor: f32) {
    hue_kernel(r, g, b, factor)
}

#[inline(always)]
fn hue_kernel(r: &mut [f32], g: &mut [f32], b: &mut [f32], factor: f32) {
    for ((r, g), b) in r.iter_mut().zip(g.iter_mut()).zip(b.iter_mut()) {
        let (rr, gg, bb) = (*r, *g, *b);
        let maxc = rr.max(gg).max(bb);
        let minc = rr.min(gg).min(bb);
        let eqc = maxc == minc;
        let cr = maxc - minc;
        let s = cr / if eqc { 1.0 } else { maxc };
        let div = if eqc { 1.0 } else { cr };
        let rc = (maxc - rr) / div;
        let gc = (maxc - gg) / div;
        let bc = (maxc - bb) / div;
        // torch: hr + hg + hb with exactly one of the three masks set.
        let h6 = if maxc == rr {
            bc - gc
        } else if maxc == gg {
            2.0 + rc - bc
        } else {
            4.0 + gc - rc
        };
        // torch.fmod(h / 6 + 1, 1): the argument lies in [5/6, 2), so subtracting 1 when it is
        // ≥ 1 is exact and equal.
        let h = h6 / 6.0 + 1.0;
        let h = if h >= 1.0 { h - 1.0 } else { h };
        // (h + f) % 1 for h + f ∈ [−0.5, 1.5): x − floor(x).
        let x = h + factor;
        let h = if x < 0.0 {
            x + 1.0
        } else if x >= 1.0 {
            x - 1.0
        } else {
            x
        };
        let v = maxc;
        let h6 = h * 6.0;
        // i = floor(h6) for h6 ∈ [0, 6], counted with compares (no float→int conversion, so the
        // loop vectorises); i = 6 (h rounded up to 1) acts as torch's i % 6 = 0.
        let i = (h6 >= 1.0) as u32 as f32
            + (h6 >= 2.0) as u32 as f32
            + (h6 >= 3.0) as u32 as f32
            + (h6 >= 4.0) as u32 as f32
            + (h6 >= 5.0) as u32 as f32
            + (h6 >= 6.0) as u32 as f32;
        let f = h6 - i;
        let p = (v * (1.0 - s)).clamp(0.0, 1.0);
        let q = (v * (1.0 - s * f)).clamp(0.0, 1.0);
        let t = (v * (1.0 - s * (1.0 - f))).clamp(0.0, 1.0);
        // Sector table (torch's a1, a2, a3 stacks): r = v q p p t v, g = t v v q p p,
        // b = p p t v v q for i = 0..5.
        *r = if i == 1.0 {
            q
        } else if i == 2.0 || i == 3.0 {
            p
        } else if i == 4.0 {
            t
        } else {
            v
        };
        *g = if i == 1.0 || i == 2.0 {
            v
        } else if i == 3.0 {
            q
        } else if i == 4.0 || i == 5.0 {
            p
        } else {
            t
        };
        *b = if i == 2.0 {
            t
        } else if i == 3.0 || i == 4.0 {
            v
        } else if i == 5.0 {
            q
        } else {
            p
        };
    }
}

/// `rgb_to_grayscale(img, num_output_channels=3)`: every channel becomes
/// `0.2989 r + 0.587 g + 0.114 b`.
#[inline]
pub fn grayscale_planes(data: &mut [f32], hw: usize) {
    let (r, rest) = data.split_at_mut(hw);
    let (g, b) = rest.split_at_mut(hw);
    for i in 0..hw {
        let l = LUMA[0] * r[i] + LUMA[1] * g[i] + LUMA[2] * b[i];
        r[i] = l;
        g[i] = l;
        b[i] = l;
    }
}

/// `Normalize(mean, std)`: `(x − mean[c]) / std[c]` per channel.
#[inline]
pub fn normalize_planes(data: &mut [f32], hw: usize, mean: &[f32; 3], std: &[f32; 3]) {
    for c in 0..3 {
        let (m, sd) = (mean[c], std[c]);
        for v in &mut data[c * hw..(c + 1) * hw] {
            *v = (*v - m) / sd;
        }
    }
}

/// [`grayscale_planes`] on a copy.
pub fn grayscale(img: &Image) -> Image {
    let mut out = img.clone();
    grayscale_planes(&mut out.data, img.height * img.width);
    out
}

/// [`normalize_planes`] on a copy.
pub fn normalize(img: &Image, mean: &[f32; 3], std: &[f32; 3]) -> Image {
    let mut out = img.clone();
    normalize_planes(&mut out.data, img.height * img.width, mean, std);
    out
}

/// Horizontal flip in place (`hflip`).
#[inline]
pub fn hflip_planes(data: &mut [f32], height: usize, width: usize) {
    for row in data.chunks_exact_mut(width).take(3 * height) {
        row.reverse();
    }
}

/// [`hflip_planes`] on a copy.
pub fn hflip(img: &Image) -> Image {
    let mut out = img.clone();
    hflip_planes(&mut out.data, img.height, img.width);
    out
}
