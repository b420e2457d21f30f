//! # spatial-reasoning
//!
//! Relational reasoning (contrastive learning as pair classification, Patacchiola & Storkey 2020)
//! and its auxiliary **spatial reasoning** task (Albert, Eskofier & Zanca 2023): predict the relative
//! offset of two non-overlapping patches of one image with the same relation head.
//!
//! Built on [dfdx] 0.13 on stable Rust. Convolution, pooling and fused batch-norm are the crate's
//! own ops ([`ops`]), registered on dfdx's gradient tape.
//!
//! Module map (arrows point to what is used; `docs/ARCHITECTURE.md` has the five-minute tour):
//!
//! ```text
//! bin → slurm → experiment → train → eval → method → models → ops
//!       report → train::metrics, eval::results;  export → train::checkpoint
//!       train and eval also use data, augment, optim
//! everything may use config, files, font, rng
//! ```
//!
//! - [`config`]: the serde config and [`config::Config::check`] → [`config::ValidConfig`] with
//!   the resolved [`config::PatchGeometry`];
//! - [`data`], [`augment`]: datasets as `u8` images; pure transforms, the patch sampler, batches;
//! - [`ops`], [`models`]: the tensor ops on dfdx's tape; Conv-4 and the CIFAR ResNets, which
//!   carry their training [`Precision`];
//! - [`method`]: RR/SR pairs, losses, the relation head, [`method::forward_loss`];
//! - [`optim`], [`train`]: Adam/SGD; the pretraining loop, its pipeline, checkpoints, metrics;
//! - [`eval`]: features, linear probe, kNN, supervised trainer, diagnostics,
//!   [`eval::evaluate_backbone`];
//! - [`experiment`], [`slurm`], [`report`], [`export`]: arms, cells and the job; on a cluster;
//!   tables and charts; a backbone for PyTorch;
//! - [`files`], [`font`], [`rng`]: atomic writes, slugs, CSV fields; the plot font; seeded RNGs.
//!
//! The library never prints and changes nothing process-wide: long jobs report through
//! callbacks, precision belongs to the backbone, and the allocator tuning that training processes
//! want is an explicit call ([`tune_allocator`], made by the CLI).

#![deny(unsafe_op_in_unsafe_fn)]

pub mod augment;
pub mod config;
pub mod data;
pub mod eval;
pub mod experiment;
pub mod export;
pub mod files;
pub mod font;
pub mod method;
pub mod models;
pub mod ops;
pub mod optim;
pub mod report;
pub mod rng;
pub mod slurm;
pub mod train;

pub use ops::{tune_allocator, Precision};

/// The CPU device.
pub type Cpu = dfdx::prelude::Cpu;

/// The device training and evaluation run on: [`Cpu`], or `Cuda` with the `cuda` feature.
#[cfg(not(feature = "cuda"))]
pub type Device = dfdx::prelude::Cpu;
/// The device training and evaluation run on: [`Cpu`], or `Cuda` with the `cuda` feature.
#[cfg(feature = "cuda")]
pub type Device = dfdx::prelude::Cuda;

/// Why [`new_device`] could not create the compute device.
#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    /// The `cuda` build found no usable GPU: no device, or the driver failed to initialise.
    #[error("no CUDA device: {0}")]
    NoCuda(String),
}

/// Creates the compute [`Device`], its random generator seeded with `seed`. Every place that
/// needs the training/evaluation device calls this, never `Device::seed_from_u64` or `default()`.
///
/// On [`Cpu`] this cannot fail. With the `cuda` feature it opens GPU 0; when there is none it
/// returns [`DeviceError::NoCuda`] instead of panicking. (cudarc 0.9 unwraps `cuInit`, so the
/// panic is caught, and its message is kept out of stderr by a panic hook swapped in for the
/// duration of the call: a panic on another thread during that call would print nothing.)
/// A machine without the NVIDIA driver does not get this far: the loader refuses to start a
/// `cuda` binary that cannot find `libcuda.so.1`.
pub fn new_device(seed: u64) -> Result<Device, DeviceError> {
    #[cfg(not(feature = "cuda"))]
    {
        Ok(Cpu::seed_from_u64(seed))
    }
    #[cfg(feature = "cuda")]
    {
        // Callers on several threads (tests) must not interleave the hook swaps, or the silent
        // hook could stay installed.
        static HOOK_SWAP: std::sync::Mutex<()> = std::sync::Mutex::new(());
        let made = {
            let _guard = HOOK_SWAP.lock().unwrap_or_else(|e| e.into_inner());
            let hook = std::panic::take_hook();
            std::panic::set_hook(Box::new(|_| {}));
            let made = std::panic::catch_unwind(|| dfdx::prelude::Cuda::try_seed_from_u64(seed));
            std::panic::set_hook(hook);
            made
        };
        match made {
            Ok(Ok(dev)) => Ok(dev),
            Ok(Err(e)) => Err(DeviceError::NoCuda(format!("{e}"))),
            Err(payload) => {
                let msg = payload
                    .downcast_ref::<String>()
                    .map(String::as_str)
                    .or_else(|| payload.downcast_ref::<&str>().copied())
                    .unwrap_or("the CUDA driver failed to initialise");
                let msg = msg
                    .strip_prefix("called `Result::unwrap()` on an `Err` value: ")
                    .unwrap_or(msg);
                Err(DeviceError::NoCuda(msg.to_string()))
            }
        }
    }
}

/// A short name of the compute device, for run metadata.
pub fn device_name() -> String {
    if cfg!(feature = "cuda") {
        "cuda".into()
    } else {
        format!("cpu ({} threads)", rayon::current_num_threads())
    }
}
