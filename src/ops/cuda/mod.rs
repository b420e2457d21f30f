//! The CUDA path (feature `cuda`): the crate's ops on dfdx's `Cuda` device through cuDNN and fused
//! kernels, registered on dfdx's tape (`Tape::add_backward_op`) like the CPU ops, selected by
//! [`super::OpsDevice`] — models, losses, RR and SR code stay device-generic.
//!
//! - conv2d ([`conv2d`]): cuDNN forward, backward-data and backward-filter. Descriptors, the
//!   algorithm of each direction (`cudnnFind…`, measured once, like PyTorch's
//!   `cudnn.benchmark = True`) and its math type are chosen once per geometry and cached
//!   ([`conv`]); one workspace per device, grown to the largest need, serves every call.
//!   [`set_tf32`] allows TF32 tensor-core math (off by default: FMA-only float math, the same
//!   arithmetic class as the CPU path).
//! - batch-norm (train and eval, ReLU fused), residual add + ReLU, 2×2 average/max pooling and
//!   global average pooling: the kernels of `src/ops/kernels.cu`, compiled to PTX at build time
//!   (`build.rs`, the toolchain's nvcc) and loaded once per device (`CudaDevice::load_ptx`);
//!   launch sequences in
//!   [`super::kernels`] (the same code the CPU emulator test runs).
//! - the optimiser's gradient check ([`count_nonfinite`]); the update itself is dfdx's fused Adam
//!   / SGD kernel (one launch per parameter tensor), see `crate::optim`.
//!
//! Memory: every buffer comes from the device's stream-ordered memory pool (cudarc allocates with
//! `cuMemAllocAsync`); the pool keeps freed memory instead of returning it to the driver at each
//! synchronisation ([`State::new`] raises its release threshold), so after the first step the
//! allocations of a step are served from the pool. Per-device scratch (batch-norm partial sums,
//! the non-finite counts) and the cuDNN workspace are allocated once and reused. Nothing on the
//! host grows with the batch: an op's host work is a few descriptors and one launch structure.
//!
//! Everything runs on the device's stream (the legacy default stream, as dfdx's kernels and
//! cuBLAS calls): cuDNN's handle is bound to it, so all work is ordered.
//!
//! Outputs are new tensors built on the op's own allocation (`Cuda::build_tensor`); inputs are
//! read through their device pointers (`Tensorlike::data`). Running statistics are updated out of
//! place: the op writes new buffers and replaces the tensors, so a clone of the model (the train
//! loop keeps one when it may have to undo a step) keeps the old values — the same copy-on-write
//! meaning the CPU path's `copy_from` has.

pub mod conv;
pub mod cudnn;
pub mod fused;
pub mod profile;

pub use conv::conv2d;
pub use fused::{add_relu, avg_pool2x2, batch_norm2d, global_avg_pool, max_pool2x2};

use super::kernels::{KernelBackend, KernelParams, Ptr};
use cudarc::driver::{
    sys, CudaDevice, CudaFunction, CudaSlice, DevicePtr, DevicePtrMut, DeviceRepr, DeviceSlice,
    LaunchAsync, LaunchConfig,
};
use cudarc::nvrtc::Ptx;
use dfdx::prelude::*;
use dfdx::tensor::{CudaError, Tensorlike};
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::ffi::c_void;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// PTX of `src/ops/kernels.cu`, compiled by `build.rs` for `SR_KERNELS_ARCH`.
const PTX: &str = include_str!(concat!(env!("OUT_DIR"), "/sr_kernels.ptx"));
/// The module name the kernels are loaded under (`CudaDevice::load_ptx`).
const MODULE: &str = "spatial_reasoning_kernels";
/// The architecture the kernels were compiled for (`sm_90`, …).
pub const KERNELS_ARCH: &str = env!("SR_KERNELS_ARCH");

static TF32: AtomicBool = AtomicBool::new(false);

/// Allows TF32 tensor-core math in the cuDNN convolutions (`CUDNN_DEFAULT_MATH`, PyTorch's
/// default `torch.backends.cudnn.allow_tf32 = True`) or restricts them to FMA float math
/// (`CUDNN_FMA_MATH`, the default here and PyTorch with `allow_tf32 = False`). Process-wide;
/// geometries planned before a change keep their plan for the old setting, plans for the new one
/// are made on first use.
pub fn set_tf32(on: bool) {
    TF32.store(on, Ordering::Relaxed);
}

/// Whether the convolutions may use TF32 ([`set_tf32`]).
pub fn tf32() -> bool {
    TF32.load(Ordering::Relaxed)
}

/// Per-device state of the CUDA path, one per device ordinal and thread (cuDNN handles are not
/// shareable across threads).
pub struct State {
    pub(crate) dev: Arc<CudaDevice>,
    funcs: HashMap<&'static str, CudaFunction>,
    pub(crate) cudnn: cudnn::Cudnn,
    pub(crate) plans: RefCell<HashMap<conv::ConvKey, Rc<conv::ConvPlan>>>,
    workspace: RefCell<Option<CudaSlice<u8>>>,
    partial: RefCell<Option<CudaSlice<f64>>>,
    counts: RefCell<Option<CudaSlice<u32>>>,
    launches: Cell<u64>,
}

thread_local! {
    static STATES: RefCell<Vec<(usize, Rc<State>)>> = const { RefCell::new(Vec::new()) };
}

/// The state for `dev`'s ordinal on this thread, created on first use.
pub fn state(dev: &Cuda) -> Result<Rc<State>, CudaError> {
    let cu = dev.cuda_device();
    let ordinal = cu.ordinal();
    if let Some(s) = STATES.with(|s| {
        s.borrow()
            .iter()
            .find(|(o, _)| *o == ordinal)
            .map(|(_, st)| st.clone())
    }) {
        return Ok(s);
    }
    let st = Rc::new(State::new(cu.clone())?);
    STATES.with(|s| s.borrow_mut().push((ordinal, st.clone())));
    Ok(st)
}

impl State {
    /// Loads the kernels, creates the cuDNN handle on the device's stream, and raises the memory
    /// pool's release threshold (so freed memory stays in the pool for the next step).
    fn new(dev: Arc<CudaDevice>) -> Result<Self, CudaError> {
        dev.bind_to_thread()?;
        // Without memory pools (cudarc then allocates synchronously) there is nothing to keep.
        if let Err(e) = keep_pool_memory(&dev) {
            eprintln!("spatial-reasoning: the GPU's memory pool keeps no freed memory: {e:?}");
        }
        if !dev.has_func(MODULE, super::kernels::KERNEL_NAMES[0]) {
            dev.load_ptx(Ptx::from_src(PTX), MODULE, &super::kernels::KERNEL_NAMES)?;
        }
        let mut funcs = HashMap::new();
        for name in super::kernels::KERNEL_NAMES {
            let f = dev
                .get_func(MODULE, name)
                .unwrap_or_else(|| panic!("kernel {name} missing from the loaded PTX"));
            funcs.insert(name, f);
        }
        let cudnn = cudnn::Cudnn::new(&dev)?;
        Ok(Self {
            dev,
            funcs,
            cudnn,
            plans: RefCell::new(HashMap::new()),
            workspace: RefCell::new(None),
            partial: RefCell::new(None),
            counts: RefCell::new(None),
            launches: Cell::new(0),
        })
    }

    /// Uninitialised device memory for `n` values of `T` from the stream-ordered pool.
    pub(crate) fn alloc<T: cudarc::driver::DeviceRepr>(
        &self,
        n: usize,
    ) -> Result<CudaSlice<T>, CudaError> {
        // SAFETY: every caller writes the buffer (a kernel's output) before anything reads it.
        Ok(unsafe { self.dev.alloc::<T>(n.max(1)) }?)
    }

    /// A device pointer to at least `bytes` of cuDNN workspace (grown, never shrunk).
    pub(crate) fn workspace(&self, bytes: usize) -> Result<(Ptr, usize), CudaError> {
        grow(&self.workspace, bytes, |n| self.alloc::<u8>(n))
    }

    /// Scratch for batch-norm partial sums: at least `n` doubles.
    pub(crate) fn partial(&self, n: usize) -> Result<Ptr, CudaError> {
        Ok(grow(&self.partial, n, |n| self.alloc::<f64>(n))?.0)
    }

    /// Kernel launches so far on this state (for tests and the profile).
    pub fn launches(&self) -> u64 {
        self.launches.get()
    }
}

/// Grows the buffer in `cell` to at least `n` elements and returns its pointer and length. A
/// replaced buffer is freed in stream order, after the work already queued that reads it.
fn grow<T: cudarc::driver::DeviceRepr>(
    cell: &RefCell<Option<CudaSlice<T>>>,
    n: usize,
    alloc: impl FnOnce(usize) -> Result<CudaSlice<T>, CudaError>,
) -> Result<(Ptr, usize), CudaError> {
    let mut slot = cell.borrow_mut();
    if slot.as_ref().is_none_or(|s| s.len() < n) {
        *slot = Some(alloc(n.max(1))?);
    }
    let s = slot.as_ref().expect("just allocated");
    Ok((*s.device_ptr(), s.len()))
}

/// A kernel's by-value parameter struct as a cudarc launch argument.
#[repr(transparent)]
struct Param<P>(P);

// SAFETY: `P: KernelParams` is a `#[repr(C)]` mirror of the kernel's parameter struct; cudarc
// passes a pointer to it, and the driver copies the bytes at launch.
unsafe impl<P: KernelParams> DeviceRepr for Param<P> {}

impl KernelBackend for State {
    type Err = CudaError;
    fn launch<P: KernelParams>(
        &self,
        grid: (u32, u32, u32),
        block: u32,
        params: &P,
    ) -> Result<(), CudaError> {
        let f = self
            .funcs
            .get(P::NAME)
            .unwrap_or_else(|| panic!("kernel {} not loaded", P::NAME))
            .clone();
        self.launches.set(self.launches.get() + 1);
        let cfg = LaunchConfig {
            grid_dim: grid,
            block_dim: (block, 1, 1),
            shared_mem_bytes: 0,
        };
        // SAFETY: `P` mirrors the kernel's one by-value parameter (KernelParams' contract); the
        // pointers inside it are live device buffers that the caller keeps alive until the
        // stream has run the kernel (every free is stream-ordered).
        unsafe { f.launch(cfg, (Param(*params),)) }?;
        Ok(())
    }
}

/// Sets the device's default memory pool to keep freed memory (release threshold = max).
fn keep_pool_memory(dev: &CudaDevice) -> Result<(), CudaError> {
    let mut pool: sys::CUmemoryPool = std::ptr::null_mut();
    let mut threshold: u64 = u64::MAX;
    // SAFETY: out-pointer to a local; the attribute takes a u64 (cuuint64_t).
    unsafe {
        sys::cuDeviceGetDefaultMemPool(&mut pool, *dev.cu_device()).result()?;
        sys::cuMemPoolSetAttribute(
            pool,
            sys::CUmemPool_attribute::CU_MEMPOOL_ATTR_RELEASE_THRESHOLD,
            &mut threshold as *mut u64 as *mut c_void,
        )
        .result()?;
    }
    Ok(())
}

/// Peak bytes in use from the device's memory pool since the process started (or since
/// [`reset_peak_memory`]): every tensor, gradient, workspace and scratch buffer of the CUDA path
/// and of dfdx comes from it (cuBLAS's and cuDNN's own handle memory does not).
pub fn peak_memory(dev: &Cuda) -> Result<u64, CudaError> {
    pool_attribute(
        dev,
        sys::CUmemPool_attribute::CU_MEMPOOL_ATTR_USED_MEM_HIGH,
        None,
    )
}

/// Bytes the device's memory pool holds now (in use or cached for reuse): constant from step to
/// step once the pool serves every allocation of a step.
pub fn reserved_memory(dev: &Cuda) -> Result<u64, CudaError> {
    pool_attribute(
        dev,
        sys::CUmemPool_attribute::CU_MEMPOOL_ATTR_RESERVED_MEM_CURRENT,
        None,
    )
}

/// Number of convolution geometries planned on this thread for `dev` (each planned once).
pub fn conv_plans(dev: &Cuda) -> Result<usize, CudaError> {
    Ok(state(dev)?.plans.borrow().len())
}

/// Resets [`peak_memory`]'s high-water mark to the current use.
pub fn reset_peak_memory(dev: &Cuda) -> Result<(), CudaError> {
    pool_attribute(
        dev,
        sys::CUmemPool_attribute::CU_MEMPOOL_ATTR_USED_MEM_HIGH,
        Some(0),
    )
    .map(|_| ())
}

fn pool_attribute(
    dev: &Cuda,
    attr: sys::CUmemPool_attribute,
    set: Option<u64>,
) -> Result<u64, CudaError> {
    let cu = dev.cuda_device();
    cu.bind_to_thread()?;
    let mut pool: sys::CUmemoryPool = std::ptr::null_mut();
    let mut value: u64 = set.unwrap_or(0);
    // SAFETY: out-pointers to locals; the attribute is a u64.
    unsafe {
        sys::cuDeviceGetDefaultMemPool(&mut pool, *cu.cu_device()).result()?;
        let v = &mut value as *mut u64 as *mut c_void;
        match set {
            Some(_) => sys::cuMemPoolSetAttribute(pool, attr, v).result()?,
            None => sys::cuMemPoolGetAttribute(pool, attr, v).result()?,
        }
    }
    Ok(value)
}

/// The device pointer of a tensor's storage.
pub(crate) fn ptr<S: Shape, T>(t: &Tensor<S, f32, Cuda, T>) -> Ptr {
    *t.data().expect("a tensor has storage").device_ptr()
}

/// A new tensor of `shape` on `buf` (contiguous strides).
pub(crate) fn tensor<S: Shape>(dev: &Cuda, shape: S, buf: CudaSlice<f32>) -> Tensor<S, f32, Cuda> {
    dev.build_tensor(shape, shape.strides(), buf)
}

/// Moves the gradient of `ghost` out of `grads` (allocating zeros if absent), leaving a
/// one-element buffer in its place, so it is freed when the caller drops it instead of at the end
/// of the backward pass (see the CPU path's `take_grad!`: every consumer of an op's output has
/// added to that gradient by the time the op's backward runs).
macro_rules! take_grad {
    ($grads:expr, $dev:expr, $ghost:expr) => {{
        let empty = $dev.try_alloc_len(1)?;
        std::mem::replace($grads.get_or_alloc_mut($ghost)?, empty)
    }};
}
pub(crate) use take_grad;

/// Device pointer of a gradient buffer.
pub(crate) fn gptr(g: &mut <Cuda as Storage<f32>>::Vec) -> Ptr {
    *g.device_ptr_mut()
}

/// Number of non-finite values in each of `tensors` (`(device pointer, length)`), in one or a
/// few launches and one copy back (which waits for the queued work).
pub fn count_nonfinite(dev: &Cuda, tensors: &[(Ptr, u64)]) -> Result<Vec<u32>, CudaError> {
    let st = state(dev)?;
    let _p = profile::scope(&st, "optim.check");
    let n = tensors.len().max(1);
    let counts = {
        let mut slot = st.counts.borrow_mut();
        // Exactly n counts (a model's tensor count does not change between steps).
        if slot.as_ref().is_none_or(|s| s.len() != n) {
            *slot = Some(st.alloc::<u32>(n)?);
        }
        let c = slot.as_mut().expect("just allocated");
        st.dev.memset_zeros(c)?;
        *c.device_ptr()
    };
    super::kernels::count_nonfinite(&*st, tensors, counts)?;
    let mut out = vec![0u32; n];
    {
        let slot = st.counts.borrow();
        let c = slot.as_ref().expect("allocated above");
        st.dev.dtoh_sync_copy_into(c, &mut out)?;
    }
    out.truncate(tensors.len());
    Ok(out)
}

/// The cuDNN version loaded (e.g. 92801), for run metadata.
pub fn cudnn_version() -> usize {
    cudnn::version()
}
