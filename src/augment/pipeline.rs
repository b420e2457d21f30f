//! The composed pipelines: `RandomResizedCrop`, the RR view pipeline ([`ViewAugment`], SPEC §2)
//! and the colour stage shared with the SR patch pipeline ([`ColorAugment`], SPEC §3).

use rand::Rng as _;

use super::color::{grayscale_planes, hflip_planes, jitter_planes, normalize_planes};
use super::image::{resize_window_into, ResizeScratch, Source};
use super::{ColorJitter, Image, JitterParams, Window};
use crate::rng::Rng;

/// `torchvision.transforms.RandomResizedCrop(size, scale, ratio)` with bilinear antialiased
/// resizing (see [`super::resize_bilinear`]).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RandomResizedCrop {
    /// Output `(height, width)`.
    pub size: (usize, usize),
    /// Range of the crop's area as a fraction of the image area.
    pub scale: (f64, f64),
    /// Range of the crop's aspect ratio width / height (sampled log-uniformly).
    pub ratio: (f64, f64),
}

impl RandomResizedCrop {
    /// Square output `size × size` with torchvision's defaults scale (0.08, 1), ratio (3/4, 4/3).
    pub fn new(size: usize) -> RandomResizedCrop {
        RandomResizedCrop {
            size: (size, size),
            scale: (0.08, 1.0),
            ratio: (3.0 / 4.0, 4.0 / 3.0),
        }
    }

    /// `RandomResizedCrop.get_params`: up to 10 tries of (area, log-ratio) drawn uniformly,
    /// rounded half-to-even like Python's `round`; the first that fits is placed uniformly.
    /// Otherwise the central fallback: the whole image, clipped to the ratio range.
    pub fn sample_params(&self, rng: &mut Rng, height: usize, width: usize) -> Window {
        let area = (height * width) as f64;
        let (lr0, lr1) = (self.ratio.0.ln(), self.ratio.1.ln());
        for _ in 0..10 {
            let target_area =
                area * (self.scale.0 + (self.scale.1 - self.scale.0) * rng.gen::<f64>());
            let aspect = (lr0 + (lr1 - lr0) * rng.gen::<f64>()).exp();
            let w = (target_area * aspect).sqrt().round_ties_even() as usize;
            let h = (target_area / aspect).sqrt().round_ties_even() as usize;
            if 0 < w && w <= width && 0 < h && h <= height {
                let top = rng.gen_range(0..=height - h);
                let left = rng.gen_range(0..=width - w);
                return Window {
                    top,
                    left,
                    height: h,
                    width: w,
                };
            }
        }
        Self::fallback(self.ratio, height, width)
    }

    /// torchvision's central-crop fallback after 10 failed tries.
    pub fn fallback(ratio: (f64, f64), height: usize, width: usize) -> Window {
        let in_ratio = width as f64 / height as f64;
        let (min_r, max_r) = (ratio.0.min(ratio.1), ratio.0.max(ratio.1));
        let (h, w) = if in_ratio < min_r {
            ((width as f64 / min_r).round_ties_even() as usize, width)
        } else if in_ratio > max_r {
            (height, (height as f64 * max_r).round_ties_even() as usize)
        } else {
            (height, width)
        };
        Window {
            top: (height - h) / 2,
            left: (width - w) / 2,
            height: h,
            width: w,
        }
    }

    /// Crop `window` and resize it to [`Self::size`].
    pub fn apply(&self, img: &Image, window: &Window) -> Image {
        super::resized_crop(img, *window, self.size.0, self.size.1)
    }
}

/// Per-channel normalisation constants.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Normalize {
    pub mean: [f32; 3],
    pub std: [f32; 3],
}

impl Normalize {
    /// Mean 0, std 1: leaves values unchanged.
    pub const IDENTITY: Normalize = Normalize {
        mean: [0.0; 3],
        std: [1.0; 3],
    };
}

/// The colour stage shared by views and patches: `RandomApply(ColorJitter, p = jitter_p)` then
/// `RandomGrayscale(p = gray_p)`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ColorAugment {
    pub jitter: ColorJitter,
    pub jitter_p: f64,
    pub gray_p: f64,
}

/// One draw of [`ColorAugment`]: `None` = jitter not applied.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ColorParams {
    pub jitter: Option<JitterParams>,
    pub gray: bool,
}

impl ColorAugment {
    /// SPEC §2/§3: ColorJitter(0.8, 0.8, 0.8, 0.2) with p = 0.8, RandomGrayscale p = 0.2.
    pub fn spec() -> ColorAugment {
        ColorAugment {
            jitter: ColorJitter::spec(),
            jitter_p: 0.8,
            gray_p: 0.2,
        }
    }

    /// Draw as torchvision: `RandomApply` skips when `p < u`, so it applies when `u ≤ p`; the
    /// jitter parameters are drawn only when it applies; `RandomGrayscale` applies when `u < p`.
    pub fn sample_params(&self, rng: &mut Rng) -> ColorParams {
        let apply_jitter = rng.gen::<f64>() <= self.jitter_p;
        let jitter = apply_jitter.then(|| self.jitter.sample_params(rng));
        let gray = rng.gen::<f64>() < self.gray_p;
        ColorParams { jitter, gray }
    }

    /// Apply in place to CHW planes of `hw` pixels.
    #[inline]
    pub fn apply_planes(data: &mut [f32], hw: usize, p: &ColorParams) {
        if let Some(j) = &p.jitter {
            jitter_planes(data, hw, j);
        }
        if p.gray {
            grayscale_planes(data, hw);
        }
    }

    /// Apply to a copy of `img`.
    pub fn apply(img: &Image, p: &ColorParams) -> Image {
        let mut out = img.clone();
        Self::apply_planes(&mut out.data, img.height * img.width, p);
        out
    }
}

/// The RR view pipeline (SPEC §2): RandomResizedCrop → horizontal flip (p = 0.5) →
/// ColorJitter(0.8, 0.8, 0.8, 0.2) with p = 0.8 → RandomGrayscale (p = 0.2) → Normalize.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ViewAugment {
    pub crop: RandomResizedCrop,
    pub flip_p: f64,
    pub color: ColorAugment,
    pub normalize: Normalize,
}

/// One draw of [`ViewAugment`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ViewParams {
    /// The crop window in source-image pixels.
    pub crop: Window,
    pub flip: bool,
    pub color: ColorParams,
}

impl ViewAugment {
    /// The SPEC §2 pipeline producing `size × size` views, normalised with `normalize`.
    pub fn new(size: usize, normalize: Normalize) -> ViewAugment {
        ViewAugment {
            crop: RandomResizedCrop::new(size),
            flip_p: 0.5,
            color: ColorAugment::spec(),
            normalize,
        }
    }

    /// Output `(height, width)`.
    pub fn out_size(&self) -> (usize, usize) {
        self.crop.size
    }

    /// Draw in torchvision's order: crop, flip, jitter (apply? then factors), grayscale.
    pub fn sample_params(&self, rng: &mut Rng, height: usize, width: usize) -> ViewParams {
        let crop = self.crop.sample_params(rng, height, width);
        let flip = rng.gen::<f64>() < self.flip_p;
        let color = self.color.sample_params(rng);
        ViewParams { crop, flip, color }
    }

    /// Apply fixed parameters to `img`.
    pub fn apply(&self, img: &Image, p: &ViewParams) -> Image {
        let (oh, ow) = self.out_size();
        let mut out = Image::zeros(oh, ow);
        let src = Source::F32Chw {
            data: &img.data,
            height: img.height,
            width: img.width,
        };
        self.apply_into(&src, p, &mut out.data, &mut ResizeScratch::default());
        out
    }

    /// The allocation-free path: write the view (CHW, `3 · oh · ow` values) into `out`.
    #[inline]
    pub(crate) fn apply_into(
        &self,
        src: &Source,
        p: &ViewParams,
        out: &mut [f32],
        scratch: &mut ResizeScratch,
    ) {
        let (oh, ow) = self.out_size();
        resize_window_into(src, p.crop, oh, ow, out, scratch);
        if p.flip {
            hflip_planes(out, oh, ow);
        }
        ColorAugment::apply_planes(out, oh * ow, &p.color);
        normalize_planes(out, oh * ow, &self.normalize.mean, &self.normalize.std);
    }
}
