//! Pure image transforms with torchvision semantics, the SR patch sampler ([`patches`]), and the
//! batch builder that writes views and patches into NCHW buffers ([`fill_views`],
//! [`fill_patches`]).
//!
//! Every transform is split into parameter sampling (`sample_params(rng, ..)`, the only place
//! that draws random numbers, always from an explicit [`crate::rng::Rng`]) and application
//! (`apply(&Image, &Params) -> Image`, deterministic), so tests compare the application with
//! torchvision on fixed parameters.
//!
//! # Semantics (decisions)
//! - torchvision's **tensor** functions on `f32` in [0, 1] (`ToTensor` first): checked against
//!   torchvision 0.29 on fixed parameters in `tests/augment_golden.rs`. The RR/SR authors ran
//!   the same transforms on PIL images; PIL's ColorJitter works in `u8` (ImageEnhance, its own
//!   HSV), so their pixels differ from ours by rounding, and their contrast mean is an integer.
//! - Bilinear resizing is antialiased when downscaling, which is what PIL (the authors' path) and
//!   torchvision's tensor default (`antialias=True`) both do; see [`resize_bilinear`]. Every
//!   resize in the RR/SR pipelines upscales (crops and patches to the input size), where
//!   antialiasing changes nothing.
//! - The RNG is ours ([`crate::rng::Rng`]), so draws match torchvision's in distribution (tested),
//!   not value by value.
//!
//! # Speed
//! The per-item pixel work of [`fill_views`] / [`fill_patches`] is compiled for AVX2 when the CPU
//! has it (runtime detection), with bit-identical results; `bench_pipeline` measures it.

mod batch;
pub mod color;
mod image;
pub mod patches;
mod pipeline;

pub use batch::{bench_pipeline, fill_patches, fill_views, BatchError, BatchKey, SourceBatch};
pub use color::{ColorJitter, JitterParams};
pub(crate) use image::Source;
pub use image::{crop, resize_bilinear, resized_crop, Image, Window};
pub use patches::{
    eval_grid, offset_target, PatchAugment, PatchError, PatchParams, PatchPos, PatchSampler,
};
pub use pipeline::{
    ColorAugment, ColorParams, Normalize, RandomResizedCrop, ViewAugment, ViewParams,
};
