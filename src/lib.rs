//! # spatial-reasoning
//!
//! Relational reasoning (contrastive learning as pair classification, Patacchiola & Storkey 2020)
//! and its auxiliary **spatial reasoning** task (Albert, Eskofier & Zanca 2023): predict the relative
//! offset of two non-overlapping patches of one image with the same relation head.
//!
//! Built on [dfdx] 0.13 on stable Rust. Convolution, pooling and fused batch-norm are the crate's
//! own ops ([`ops`]), registered on dfdx's gradient tape.
//!
//! Module map (arrows point to what is used):
//! `bin → train, eval, report → method → models → ops`; `train → data, augment, optim`;
//! everything may use [`config`].

pub mod augment;
pub mod config;
pub mod data;
pub mod eval;
pub mod experiment;
pub mod method;
pub mod models;
pub mod ops;
pub mod optim;
pub mod report;
pub mod rng;
pub mod train;

/// The CPU device.
pub type Cpu = dfdx::prelude::Cpu;

/// The device training and evaluation run on: [`Cpu`], or `Cuda` with the `cuda` feature.
#[cfg(not(feature = "cuda"))]
pub type Device = dfdx::prelude::Cpu;
/// The device training and evaluation run on: [`Cpu`], or `Cuda` with the `cuda` feature.
#[cfg(feature = "cuda")]
pub type Device = dfdx::prelude::Cuda;

/// A short name of the compute device, for run metadata.
pub fn device_name() -> String {
    if cfg!(feature = "cuda") {
        "cuda".into()
    } else {
        format!("cpu ({} threads)", rayon::current_num_threads())
    }
}
