//! The crate's own tensor ops on dfdx's gradient tape: conv2d, fused batch-norm (+ReLU), pooling.
//!
//! dfdx 0.13 on stable Rust has no 2-D convolution or pooling, and its `BatchNorm2D` is ten
//! unfused ops. The ops here fill that gap. Each has two implementations:
//!
//! - [`cpu`]: a fast path for [`Cpu`] (3×3 "same" convolutions through the [`direct`] AVX-512
//!   kernel where the CPU has it, other convolutions through im2col + the `gemm` crate's
//!   AVX-512/AVX2 kernels; rayon over the batch or over channel planes, thread-local scratch
//!   buffers; convolution + batch-norm fused per layer and per ResNet block in [`fused`], their
//!   memory-bound loops compiled for AVX-512/AVX2 at run time by [`simd::wide`]), registered on
//!   the tape with `Tape::add_backward_op`;
//! - [`generic`]: the same maths composed of dfdx's own ops (gather + matmul for conv,
//!   reductions + broadcasts for batch-norm), so it runs on any dfdx device, CUDA included.
//!
//! **Precision** ([`Precision`], config key `train.precision`, passed to [`conv2d`] by the layer
//! that calls it; no process-wide switch): f32 by default; `bf16` runs the convolutions' three
//! products (output, input gradient, weight gradient) on bf16-rounded
//! operands with f32 accumulation — the direct kernel on pairs of channels
//! ([`direct::Weights::Bf16`]), the rest through [`bf16::matmul`] (AVX-512 BF16 `vdpbf16ps`).
//! Weights, activations, batch-norm, losses and the optimiser stay f32 (the master weights are
//! rounded when packed, each call).
//!
//! [`matmul`] is the host-side f32 matrix product (probes, kNN): the one safe entry to `gemm`.
//!
//! On `Cuda` (feature `cuda`) a third: [`cuda`], cuDNN convolutions and fused kernels
//! ([`kernels`], `kernels.cu`) registered on the tape the same way.
//!
//! [`OpsDevice`] picks one per device: `Cpu` uses the fast path, `Cuda` the CUDA path. All stay
//! callable directly (`ops::cpu::conv2d`, `ops::generic::conv2d`, `ops::cuda::conv2d`), which is
//! how the tests check them against each other and against finite differences.
//!
//! All activations are NCHW, [`Act<C, D, T>`] = `(batch, Const<C>, height, width)`, batch and
//! spatial sizes at run time. Inputs may be any layout: the fast path makes them contiguous first
//! (free when they already are).
//!
//! Performance notes (measured, see BENCHMARKS.md):
//! - Leave dfdx's tensor cache **off** (`dev.enable_cache()`): the fast path's buffers come from
//!   the allocator and would only pile up in the cache; a ResNet-32 step was slower with it on.
//! - [`tune_allocator`] (called by the CLI, `bench` and the examples, not by the ops) turns off
//!   glibc's per-allocation `mmap` and heap trimming, so freed activation buffers are reused
//!   instead of page-faulted in afresh every step (at the authors' 64×64 setting the kernel's
//!   page zeroing had been 31 % of a pretraining step). The process keeps its peak heap once
//!   reached.
//! - The ops free their output's gradient as soon as their backward has used it (dfdx keeps
//!   intermediate gradients to the end of the backward pass): a fifth less peak memory, and at
//!   64×64 ×896 images 1.4× faster (fewer fresh pages).
//! - Threads: everything runs on the global rayon pool (`RAYON_NUM_THREADS` or
//!   `rayon::ThreadPoolBuilder::build_global`), dfdx's matmul included.
//!
//! Precondition (checked with `assert!`, as dfdx does for shapes): the spatial size must be at
//! least the kernel/window size after padding, so every output has at least one pixel.

pub mod bf16;
pub mod cpu;
#[cfg(feature = "cuda")]
pub mod cuda;
pub mod direct;
pub mod fused;
pub mod generic;
pub mod kernels;
pub mod matmul;
pub mod simd;

use dfdx::prelude::*;

/// An NCHW activation: `(batch, C, height, width)`.
pub type Act<const C: usize, D, T = NoneTape> = Tensor<(usize, Const<C>, usize, usize), f32, D, T>;

/// A pooled feature batch, `(batch, C)`.
pub type Pooled<const C: usize, D, T = NoneTape> = Tensor<(usize, Const<C>), f32, D, T>;

/// A convolution weight, PyTorch layout `(out, in, k, k)`.
pub type ConvWeight<const O: usize, const I: usize, const K: usize, D> =
    Tensor<(Const<O>, Const<I>, Const<K>, Const<K>), f32, D>;

/// A per-channel vector (batch-norm weight, bias, running statistics).
pub type Channels<const C: usize, D> = Tensor<Rank1<C>, f32, D>;

/// Arithmetic of the convolution GEMMs on the CPU: a property of a run (`train.precision`),
/// carried by the backbone ([`crate::models::Backbone::set_precision`]) and applied by its
/// training forward pass; evaluation is always f32.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// f32 throughout (the default).
    #[default]
    F32,
    /// Convolution products on bf16-rounded operands with f32 accumulation ([`bf16`]); weights,
    /// activations, batch-norm, losses and the optimiser stay f32.
    Bf16,
}

impl Precision {
    pub fn name(self) -> &'static str {
        match self {
            Precision::F32 => "f32",
            Precision::Bf16 => "bf16",
        }
    }
}

/// Why a precision cannot run in this build.
#[derive(Debug, thiserror::Error)]
pub enum PrecisionError {
    #[error("precision bf16 runs on the CPU path only; this build computes on CUDA")]
    NotOnCuda,
}

impl Precision {
    /// Whether this build computes in `self`: `Bf16` runs on any CPU (the AVX-512 BF16 kernel
    /// where the CPU has it, a portable one, much slower, elsewhere) and is refused in a `cuda`
    /// build. Runs call this before they create anything.
    pub fn check_supported(self) -> Result<(), PrecisionError> {
        if cfg!(feature = "cuda") && self == Precision::Bf16 {
            return Err(PrecisionError::NotOnCuda);
        }
        Ok(())
    }
}

/// Tunes glibc's allocator for this process's training loop: freed activation buffers are kept
/// for reuse instead of being returned to the OS and page-faulted in afresh every step. An
/// explicit call, made once by the programs that train or time steps (the CLI, `bench`,
/// `benches/`, the examples); a library user decides for their own process. Changes no result,
/// only speed (and keeps the peak resident set once reached). A no-op off glibc; calling it
/// again does nothing.
///
/// - `M_MMAP_MAX = 0`: no `mmap` per allocation (glibc serves large requests with a fresh
///   mapping and unmaps it on `free`; above 64 MiB it does so in a thread's arena whatever the
///   threshold).
/// - `M_TRIM_THRESHOLD = -1`: never trim the heap top. The previous setting, `i32::MAX` (the
///   largest positive value `mallopt` takes, 2 GiB), was below what a 64×64 pretraining step
///   frees at its end (gigabytes), so the heap was trimmed and re-faulted every step.
///
/// With the previous settings (mmap threshold 256 MiB, trim 2 GiB), 31 % of the authors'-setting
/// pretraining step (896 inputs of 64×64) was the kernel's `clear_page`; with these, the step
/// ran 1.44× faster and steady-state page faults fell to ~5,600 per step (which of the two
/// settings did it was not isolated). At 32×32 and batch 64 the earlier settings had already
/// taken a ResNet-32 step from 32 to 109 images/s.
pub fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        static ONCE: std::sync::Once = std::sync::Once::new();
        ONCE.call_once(|| {
            extern "C" {
                fn mallopt(param: i32, value: i32) -> i32;
            }
            const M_TRIM_THRESHOLD: i32 = -1;
            const M_MMAP_MAX: i32 = -4;
            // SAFETY: mallopt only adjusts allocator tunables of glibc, which is the allocator
            // here (target_env = "gnu"); it is thread-safe and takes plain integers.
            unsafe {
                mallopt(M_MMAP_MAX, 0);
                mallopt(M_TRIM_THRESHOLD, -1);
            }
        });
    }
}

/// Batch-norm momentum (PyTorch convention: `running = (1 - m)·running + m·batch`).
pub const BN_MOMENTUM: f32 = 0.1;
/// Batch-norm epsilon added to the variance.
pub const BN_EPS: f32 = 1e-5;

/// Which statistics batch-norm normalises with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BnMode {
    /// Batch statistics (biased variance); running statistics are updated with
    /// [`BN_MOMENTUM`] and the *unbiased* batch variance, as PyTorch does.
    Train,
    /// Running statistics; nothing is updated.
    Eval,
}

/// Batch-norm tensors of one layer, borrowed for one forward call.
pub struct BnParams<'a, const C: usize, D: Storage<f32>> {
    /// Scale γ, shape `(C,)`.
    pub weight: &'a Channels<C, D>,
    /// Shift β, shape `(C,)`.
    pub bias: &'a Channels<C, D>,
    /// Running mean, shape `(C,)`; updated in [`BnMode::Train`].
    pub running_mean: &'a mut Channels<C, D>,
    /// Running (unbiased) variance, shape `(C,)`; updated in [`BnMode::Train`].
    pub running_var: &'a mut Channels<C, D>,
}

/// A convolution without bias (zero padding `K / 2`) and the batch-norm after it, borrowed for
/// one forward call: the unit the fused ops ([`OpsDevice::conv_bn`], [`OpsDevice::basic_block`],
/// [`OpsDevice::down_block`]) take.
pub struct ConvBnParams<'a, const I: usize, const O: usize, const K: usize, D: Storage<f32>> {
    /// `(O, I, K, K)`.
    pub weight: &'a ConvWeight<O, I, K, D>,
    pub stride: usize,
    pub bn: BnParams<'a, O, D>,
}

/// Output size of a convolution or pooling window along one axis.
///
/// # Panics
/// If the padded input is smaller than the kernel.
pub fn out_size(input: usize, kernel: usize, stride: usize, padding: usize) -> usize {
    assert!(stride > 0, "stride must be positive");
    assert!(
        input + 2 * padding >= kernel,
        "spatial size {input} (+2·padding {padding}) is smaller than the kernel {kernel}"
    );
    (input + 2 * padding - kernel) / stride + 1
}

/// A dfdx device with the crate's ops. `Cpu` overrides every method with the fast path, `Cuda`
/// with the CUDA path ([`cuda`]); other devices use the defaults, the [`generic`] path.
pub trait OpsDevice: Device<f32> {
    /// 2-D convolution, no bias, square kernel `K`, zero padding, in `precision` (`Bf16` runs on
    /// the CPU path; other devices compute in f32, and a `cuda` build refuses a bf16 run before
    /// it starts, [`Precision::check_supported`]).
    ///
    /// # Shapes
    /// `x: (B, I, H, W)`, `w: (O, I, K, K)` → `(B, O, (H + 2p − K)/s + 1, (W + 2p − K)/s + 1)`
    fn conv2d<const I: usize, const O: usize, const K: usize, T: Tape<f32, Self>>(
        x: Act<I, Self, T>,
        w: &ConvWeight<O, I, K, Self>,
        stride: usize,
        padding: usize,
        precision: Precision,
    ) -> Result<Act<O, Self, T>, Self::Err> {
        let _ = precision;
        generic::conv2d(x, w, stride, padding)
    }

    /// Batch-norm over (batch, height, width) per channel, optionally followed by ReLU.
    ///
    /// # Shapes
    /// `x: (B, C, H, W)` → `(B, C, H, W)`
    fn batch_norm2d<const C: usize, T: Tape<f32, Self>>(
        x: Act<C, Self, T>,
        bn: BnParams<'_, C, Self>,
        mode: BnMode,
        relu: bool,
    ) -> Result<Act<C, Self, T>, Self::Err> {
        generic::batch_norm2d(x, bn, mode, relu)
    }

    /// 2×2 average pooling, stride 2 (odd trailing rows/columns are dropped, like PyTorch).
    ///
    /// # Shapes
    /// `(B, C, H, W)` → `(B, C, H/2, W/2)`
    fn avg_pool2x2<const C: usize, T: Tape<f32, Self>>(
        x: Act<C, Self, T>,
    ) -> Result<Act<C, Self, T>, Self::Err> {
        generic::avg_pool2x2(x)
    }

    /// 2×2 max pooling, stride 2.
    ///
    /// # Shapes
    /// `(B, C, H, W)` → `(B, C, H/2, W/2)`
    fn max_pool2x2<const C: usize, T: Tape<f32, Self>>(
        x: Act<C, Self, T>,
    ) -> Result<Act<C, Self, T>, Self::Err> {
        generic::max_pool2x2(x)
    }

    /// Residual join `relu(a + b)`, fused.
    ///
    /// # Shapes
    /// `a, b: (B, C, H, W)` → `(B, C, H, W)`
    fn add_relu<const C: usize, T: Tape<f32, Self>>(
        a: Act<C, Self, T>,
        b: Act<C, Self, T>,
    ) -> Result<Act<C, Self, T>, Self::Err> {
        generic::add_relu(a, b)
    }

    /// Global average pooling.
    ///
    /// # Shapes
    /// `(B, C, H, W)` → `(B, C)`
    fn global_avg_pool<const C: usize, T: Tape<f32, Self>>(
        x: Act<C, Self, T>,
    ) -> Result<Pooled<C, Self, T>, Self::Err> {
        generic::global_avg_pool(x)
    }

    /// Convolution (no bias, padding `K / 2`) then batch-norm, then ReLU if `relu`. By default
    /// [`OpsDevice::conv2d`] then [`OpsDevice::batch_norm2d`]; the CPU fuses them
    /// ([`fused::conv_bn`]).
    ///
    /// # Shapes
    /// `x: (B, I, H, W)` → `(B, O, (H − 1)/s + 1, (W − 1)/s + 1)` (K odd)
    fn conv_bn<const I: usize, const O: usize, const K: usize, T: Tape<f32, Self>>(
        x: Act<I, Self, T>,
        layer: ConvBnParams<'_, I, O, K, Self>,
        mode: BnMode,
        relu: bool,
        precision: Precision,
    ) -> Result<Act<O, Self, T>, Self::Err> {
        let y = Self::conv2d(x, layer.weight, layer.stride, K / 2, precision)?;
        Self::batch_norm2d(y, layer.bn, mode, relu)
    }

    /// A residual block with an identity shortcut:
    /// `relu(bn2(conv2(relu(bn1(conv1(x))))) + x)`, both convolutions 3×3 (stride 1). By
    /// default [`OpsDevice::conv_bn`] twice and [`OpsDevice::add_relu`]; the CPU runs the block
    /// as one op ([`fused::basic_block`]).
    ///
    /// # Shapes
    /// `(B, C, H, W)` → `(B, C, H, W)`
    fn basic_block<const C: usize, T: Tape<f32, Self>>(
        x: Act<C, Self, T>,
        conv1: ConvBnParams<'_, C, C, 3, Self>,
        conv2: ConvBnParams<'_, C, C, 3, Self>,
        mode: BnMode,
        precision: Precision,
    ) -> Result<Act<C, Self, T>, Self::Err> {
        let y = Self::conv_bn(x.with_empty_tape(), conv1, mode, true, precision)?;
        let y = Self::conv_bn(y, conv2, mode, false, precision)?;
        Self::add_relu(y, x)
    }

    /// A residual block with a projection shortcut:
    /// `relu(bn2(conv2(relu(bn1(conv1(x))))) + bn_s(conv_s(x)))`, `conv1` 3×3 and the shortcut
    /// `conv_s` 1×1 with the same stride, `conv2` 3×3 stride 1. By default
    /// [`OpsDevice::conv_bn`] three times and [`OpsDevice::add_relu`]; the CPU runs the block
    /// as one op ([`fused::down_block`]).
    ///
    /// # Shapes
    /// `(B, I, H, W)` → `(B, O, (H − 1)/s + 1, (W − 1)/s + 1)`
    fn down_block<const I: usize, const O: usize, T: Tape<f32, Self>>(
        x: Act<I, Self, T>,
        conv1: ConvBnParams<'_, I, O, 3, Self>,
        conv2: ConvBnParams<'_, O, O, 3, Self>,
        shortcut: ConvBnParams<'_, I, O, 1, Self>,
        mode: BnMode,
        precision: Precision,
    ) -> Result<Act<O, Self, T>, Self::Err> {
        assert_eq!(
            conv1.stride, shortcut.stride,
            "down_block: the shortcut's stride differs from conv1's"
        );
        let y = Self::conv_bn(x.with_empty_tape(), conv1, mode, true, precision)?;
        let y = Self::conv_bn(y, conv2, mode, false, precision)?;
        let s = Self::conv_bn(x, shortcut, mode, false, precision)?;
        Self::add_relu(y, s)
    }
}

impl OpsDevice for Cpu {
    fn add_relu<const C: usize, T: Tape<f32, Self>>(
        a: Act<C, Self, T>,
        b: Act<C, Self, T>,
    ) -> Result<Act<C, Self, T>, Self::Err> {
        cpu::add_relu(a, b)
    }
    fn conv2d<const I: usize, const O: usize, const K: usize, T: Tape<f32, Self>>(
        x: Act<I, Self, T>,
        w: &ConvWeight<O, I, K, Self>,
        stride: usize,
        padding: usize,
        precision: Precision,
    ) -> Result<Act<O, Self, T>, Self::Err> {
        cpu::conv2d(x, w, stride, padding, cpu::ConvRoute::fastest(precision))
    }
    fn batch_norm2d<const C: usize, T: Tape<f32, Self>>(
        x: Act<C, Self, T>,
        bn: BnParams<'_, C, Self>,
        mode: BnMode,
        relu: bool,
    ) -> Result<Act<C, Self, T>, Self::Err> {
        cpu::batch_norm2d(x, bn, mode, relu)
    }
    fn avg_pool2x2<const C: usize, T: Tape<f32, Self>>(
        x: Act<C, Self, T>,
    ) -> Result<Act<C, Self, T>, Self::Err> {
        cpu::avg_pool2x2(x)
    }
    fn max_pool2x2<const C: usize, T: Tape<f32, Self>>(
        x: Act<C, Self, T>,
    ) -> Result<Act<C, Self, T>, Self::Err> {
        cpu::max_pool2x2(x)
    }
    fn global_avg_pool<const C: usize, T: Tape<f32, Self>>(
        x: Act<C, Self, T>,
    ) -> Result<Pooled<C, Self, T>, Self::Err> {
        cpu::global_avg_pool(x)
    }
    fn conv_bn<const I: usize, const O: usize, const K: usize, T: Tape<f32, Self>>(
        x: Act<I, Self, T>,
        layer: ConvBnParams<'_, I, O, K, Self>,
        mode: BnMode,
        relu: bool,
        precision: Precision,
    ) -> Result<Act<O, Self, T>, Self::Err> {
        fused::conv_bn(x, layer, mode, relu, cpu::ConvRoute::fastest(precision))
    }
    fn basic_block<const C: usize, T: Tape<f32, Self>>(
        x: Act<C, Self, T>,
        conv1: ConvBnParams<'_, C, C, 3, Self>,
        conv2: ConvBnParams<'_, C, C, 3, Self>,
        mode: BnMode,
        precision: Precision,
    ) -> Result<Act<C, Self, T>, Self::Err> {
        fused::basic_block(x, conv1, conv2, mode, cpu::ConvRoute::fastest(precision))
    }
    fn down_block<const I: usize, const O: usize, T: Tape<f32, Self>>(
        x: Act<I, Self, T>,
        conv1: ConvBnParams<'_, I, O, 3, Self>,
        conv2: ConvBnParams<'_, O, O, 3, Self>,
        shortcut: ConvBnParams<'_, I, O, 1, Self>,
        mode: BnMode,
        precision: Precision,
    ) -> Result<Act<O, Self, T>, Self::Err> {
        let route = cpu::ConvRoute::fastest(precision);
        fused::down_block(x, conv1, conv2, shortcut, mode, route)
    }
}

#[cfg(feature = "cuda")]
impl OpsDevice for Cuda {
    fn add_relu<const C: usize, T: Tape<f32, Self>>(
        a: Act<C, Self, T>,
        b: Act<C, Self, T>,
    ) -> Result<Act<C, Self, T>, Self::Err> {
        cuda::add_relu(a, b)
    }
    fn conv2d<const I: usize, const O: usize, const K: usize, T: Tape<f32, Self>>(
        x: Act<I, Self, T>,
        w: &ConvWeight<O, I, K, Self>,
        stride: usize,
        padding: usize,
        precision: Precision,
    ) -> Result<Act<O, Self, T>, Self::Err> {
        // f32 always: a bf16 run is refused before it starts (`Precision::check_supported`).
        let _ = precision;
        cuda::conv2d(x, w, stride, padding)
    }
    fn batch_norm2d<const C: usize, T: Tape<f32, Self>>(
        x: Act<C, Self, T>,
        bn: BnParams<'_, C, Self>,
        mode: BnMode,
        relu: bool,
    ) -> Result<Act<C, Self, T>, Self::Err> {
        cuda::batch_norm2d(x, bn, mode, relu)
    }
    fn avg_pool2x2<const C: usize, T: Tape<f32, Self>>(
        x: Act<C, Self, T>,
    ) -> Result<Act<C, Self, T>, Self::Err> {
        cuda::avg_pool2x2(x)
    }
    fn max_pool2x2<const C: usize, T: Tape<f32, Self>>(
        x: Act<C, Self, T>,
    ) -> Result<Act<C, Self, T>, Self::Err> {
        cuda::max_pool2x2(x)
    }
    fn global_avg_pool<const C: usize, T: Tape<f32, Self>>(
        x: Act<C, Self, T>,
    ) -> Result<Pooled<C, Self, T>, Self::Err> {
        cuda::global_avg_pool(x)
    }
}

/// [`OpsDevice::conv2d`] on `x`'s device, in `precision`. See there for shapes.
pub fn conv2d<D: OpsDevice, const I: usize, const O: usize, const K: usize, T: Tape<f32, D>>(
    x: Act<I, D, T>,
    w: &ConvWeight<O, I, K, D>,
    stride: usize,
    padding: usize,
    precision: Precision,
) -> Result<Act<O, D, T>, D::Err> {
    D::conv2d(x, w, stride, padding, precision)
}

/// [`OpsDevice::batch_norm2d`] on `x`'s device. See there for shapes.
pub fn batch_norm2d<D: OpsDevice, const C: usize, T: Tape<f32, D>>(
    x: Act<C, D, T>,
    bn: BnParams<'_, C, D>,
    mode: BnMode,
    relu: bool,
) -> Result<Act<C, D, T>, D::Err> {
    D::batch_norm2d(x, bn, mode, relu)
}

/// [`OpsDevice::avg_pool2x2`] on `x`'s device.
pub fn avg_pool2x2<D: OpsDevice, const C: usize, T: Tape<f32, D>>(
    x: Act<C, D, T>,
) -> Result<Act<C, D, T>, D::Err> {
    D::avg_pool2x2(x)
}

/// [`OpsDevice::max_pool2x2`] on `x`'s device.
pub fn max_pool2x2<D: OpsDevice, const C: usize, T: Tape<f32, D>>(
    x: Act<C, D, T>,
) -> Result<Act<C, D, T>, D::Err> {
    D::max_pool2x2(x)
}

/// [`OpsDevice::global_avg_pool`] on `x`'s device.
pub fn global_avg_pool<D: OpsDevice, const C: usize, T: Tape<f32, D>>(
    x: Act<C, D, T>,
) -> Result<Pooled<C, D, T>, D::Err> {
    D::global_avg_pool(x)
}

/// [`OpsDevice::add_relu`] on `a`'s device.
pub fn add_relu<D: OpsDevice, const C: usize, T: Tape<f32, D>>(
    a: Act<C, D, T>,
    b: Act<C, D, T>,
) -> Result<Act<C, D, T>, D::Err> {
    D::add_relu(a, b)
}

/// [`OpsDevice::conv_bn`] on `x`'s device. See there for shapes.
pub fn conv_bn<D: OpsDevice, const I: usize, const O: usize, const K: usize, T: Tape<f32, D>>(
    x: Act<I, D, T>,
    layer: ConvBnParams<'_, I, O, K, D>,
    mode: BnMode,
    relu: bool,
    precision: Precision,
) -> Result<Act<O, D, T>, D::Err> {
    D::conv_bn(x, layer, mode, relu, precision)
}

/// [`OpsDevice::basic_block`] on `x`'s device. See there for shapes.
pub fn basic_block<D: OpsDevice, const C: usize, T: Tape<f32, D>>(
    x: Act<C, D, T>,
    conv1: ConvBnParams<'_, C, C, 3, D>,
    conv2: ConvBnParams<'_, C, C, 3, D>,
    mode: BnMode,
    precision: Precision,
) -> Result<Act<C, D, T>, D::Err> {
    D::basic_block(x, conv1, conv2, mode, precision)
}

/// [`OpsDevice::down_block`] on `x`'s device. See there for shapes.
pub fn down_block<D: OpsDevice, const I: usize, const O: usize, T: Tape<f32, D>>(
    x: Act<I, D, T>,
    conv1: ConvBnParams<'_, I, O, 3, D>,
    conv2: ConvBnParams<'_, O, O, 3, D>,
    shortcut: ConvBnParams<'_, I, O, 1, D>,
    mode: BnMode,
    precision: Precision,
) -> Result<Act<O, D, T>, D::Err> {
    D::down_block(x, conv1, conv2, shortcut, mode, precision)
}
