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
pub mod method;
pub mod models;
pub mod ops;
pub mod optim;
pub mod report;
pub mod rng;

/// The CPU device every example and test uses; `Cuda` with the `cuda` feature.
pub type Cpu = dfdx::prelude::Cpu;
