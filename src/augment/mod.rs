//! Pure image transforms with torchvision semantics, the SR patch sampler ([`patches`]), and the
//! batch builder that writes views and patches into NCHW buffers ([`fill_views`],
//! [`fill_patches`]).
//!
//! Every transform is split into parameter sampling (`sample_params(rng, ..)`, the only place
//! that draws random numbers, always from an explicit [`crate::rng::Rng`]) and application
//! (`apply(&Image, &Params) -> Image`, deterministic), so tests compare the application with
//! torchvision on fixed parameters.
//!
//! Semantics: torchvision's **tensor** functions on `f32` in [0, 1] (`ToTensor` first), with
//! bilinear resizing antialiased like PIL (see [`resize_bilinear`]).

mod batch;
pub mod color;
mod image;
pub mod patches;
mod pipeline;

pub use batch::{bench_pipeline, fill_patches, fill_views, BatchError, BatchKey, SourceBatch};
pub use color::{ColorJitter, JitterParams};
pub use image::{crop, resize_bilinear, resized_crop, Image, Window};
pub use patches::{
    eval_grid, offset_target, PatchAugment, PatchError, PatchParams, PatchPos, PatchSampler,
};
pub use pipeline::{
    ColorAugment, ColorParams, Normalize, RandomResizedCrop, ViewAugment, ViewParams,
};
