//! The fused kernels of the CUDA path (`src/ops/kernels.cu`): their parameter structs, launch
//! plans and launch sequences, independent of the device that runs them.
//!
//! The CUDA path ([`super::cuda`], feature `cuda`) runs them on the GPU; the test
//! `tests/cuda_kernels_emu.rs` runs the very same source and the same launch sequences on the CPU
//! through an emulator (each block's threads as cooperative fibers) and compares the results with
//! the CPU ops ([`super::cpu`]). That is why this module is compiled in every build: the launch
//! sequences are written once, against [`KernelBackend`].
//!
//! Every kernel takes one parameter, a `#[repr(C)]` struct mirrored field by field from
//! `kernels.cu` (pointers are device pointers, `u64` here). The emulator checks each struct's size
//! against the C compiler's.
//!
//! Sizes: grid dimensions and the pooling kernels' 32-bit index arithmetic limit a tensor to
//! fewer than 2³² elements ([`check_elements`]).

/// Threads per block of every kernel (`SR_THREADS`); [`gap_forward`] may use fewer.
pub const THREADS: u32 = 256;
/// Tensors per launch of `sr_count_nonfinite` (`SR_MAX_TENSORS`).
pub const MAX_TENSORS: usize = 32;
/// The most blocks a grid-stride kernel is launched with.
const MAX_BLOCKS: u64 = 8192;

/// A kernel parameter struct.
///
/// # Safety
/// `Self` must be `#[repr(C)]` and match the C struct of the kernel named [`KernelParams::NAME`]
/// in `kernels.cu` field by field.
pub unsafe trait KernelParams: Copy {
    /// The kernel's entry point in `kernels.cu`.
    const NAME: &'static str;
}

/// Every kernel entry point of `kernels.cu` (what the CUDA path loads from the PTX module).
pub const KERNEL_NAMES: [&str; 11] = [
    SrBnStats::NAME,
    SrBnForward::NAME,
    SrBnBackwardReduce::NAME,
    SrBnBackwardApply::NAME,
    SrPoolForward::NAME,
    SrPoolBackward::NAME,
    SrGapForward::NAME,
    SrGapBackward::NAME,
    SrAddRelu::NAME,
    SrAddReluBackward::NAME,
    SrCountNonfinite::NAME,
];

/// Where the kernels run: the GPU, or the CPU emulator of the tests.
pub trait KernelBackend {
    type Err;
    /// Launches `P::NAME` on a grid of `grid` blocks of `block` threads (x only) with `params`.
    /// Launches run in order (one stream).
    fn launch<P: KernelParams>(
        &self,
        grid: (u32, u32, u32),
        block: u32,
        params: &P,
    ) -> Result<(), Self::Err>;
}

/// A device pointer (an address in the backend's memory).
pub type Ptr = u64;

macro_rules! params {
    ($(#[$doc:meta])* $name:ident = $kernel:literal { $($field:ident : $ty:ty),* $(,)? }) => {
        $(#[$doc])*
        #[repr(C)]
        #[derive(Clone, Copy, Debug, Default, PartialEq)]
        pub struct $name {
            $(pub $field: $ty),*
        }
        // SAFETY: mirrored from the C struct of the same name in kernels.cu (checked for size by
        // the emulator test).
        unsafe impl KernelParams for $name {
            const NAME: &'static str = $kernel;
        }
    };
}

params!(
    /// Batch-norm statistics, pass 1 (training): per-slice `(Σx, Σx²)`.
    SrBnStats = "sr_bn_stats" {
        x: Ptr, partial: Ptr, n: u32, c: u32, hw: u32, slices: u32, slice_len: u64,
    }
);
params!(
    /// Batch-norm forward (training: pass 2; eval: the only pass), ReLU fused.
    SrBnForward = "sr_bn_forward" {
        x: Ptr, y: Ptr, gamma: Ptr, beta: Ptr, partial: Ptr, run_mean: Ptr, run_var: Ptr,
        run_mean_out: Ptr, run_var_out: Ptr, saved: Ptr,
        n: u32, c: u32, hw: u32, slices: u32, slice_len: u64,
        momentum: f32, eps: f32, train: i32, relu: i32,
    }
);
params!(
    /// Batch-norm backward, pass 1: per-slice `(Σdy', Σdy'·x)`.
    SrBnBackwardReduce = "sr_bn_backward_reduce" {
        x: Ptr, dy: Ptr, saved: Ptr, partial: Ptr,
        n: u32, c: u32, hw: u32, slices: u32, slice_len: u64, relu: i32, pad: i32,
    }
);
params!(
    /// Batch-norm backward, pass 2: `dx`, `dγ`, `dβ`.
    SrBnBackwardApply = "sr_bn_backward_apply" {
        x: Ptr, dy: Ptr, gamma: Ptr, saved: Ptr, partial: Ptr, dx: Ptr, dgamma: Ptr, dbeta: Ptr,
        n: u32, c: u32, hw: u32, slices: u32, slice_len: u64, train: i32, relu: i32,
    }
);
params!(
    /// 2×2 pooling forward (average or max).
    SrPoolForward = "sr_pool_forward" {
        x: Ptr, y: Ptr, outputs: u64, h: u32, w: u32, ho: u32, wo: u32, max: i32, pad: i32,
    }
);
params!(
    /// 2×2 pooling backward.
    SrPoolBackward = "sr_pool_backward" {
        x: Ptr, dy: Ptr, dx: Ptr, outputs: u64, h: u32, w: u32, ho: u32, wo: u32, max: i32, pad: i32,
    }
);
params!(
    /// Global average pooling forward.
    SrGapForward = "sr_gap_forward" { x: Ptr, y: Ptr, planes: u64, hw: u32, pad: u32 }
);
params!(
    /// Global average pooling backward.
    SrGapBackward = "sr_gap_backward" { dy: Ptr, dx: Ptr, elements: u64, hw: u32, inv_hw: f32 }
);
params!(
    /// `y = relu(a + b)`.
    SrAddRelu = "sr_add_relu_forward" { a: Ptr, b: Ptr, y: Ptr, elements: u64 }
);
params!(
    /// `da += dy·[y > 0]`, `db += dy·[y > 0]`.
    SrAddReluBackward = "sr_add_relu_backward" { y: Ptr, dy: Ptr, da: Ptr, db: Ptr, elements: u64 }
);

/// `counts[first + k] += #non-finite values of tensor k`, for up to [`MAX_TENSORS`] tensors.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SrCountNonfinite {
    pub ptr: [Ptr; MAX_TENSORS],
    pub len: [u64; MAX_TENSORS],
    pub counts: Ptr,
    pub first: u32,
    pub count: u32,
}
// SAFETY: mirrors `SrCountNonfinite` in kernels.cu.
unsafe impl KernelParams for SrCountNonfinite {
    const NAME: &'static str = "sr_count_nonfinite";
}

/// Panics unless a tensor of `n` elements fits the kernels' limits (fewer than 2³² elements).
pub fn check_elements(what: &str, n: u64) {
    assert!(
        n < 1 << 32,
        "{what}: {n} elements; the CUDA kernels take fewer than 2^32 per tensor"
    );
}

/// Blocks for a grid-stride kernel over `n` items.
fn stride_blocks(n: u64) -> u32 {
    n.div_ceil(THREADS as u64).clamp(1, MAX_BLOCKS) as u32
}

/// How a per-channel kernel splits the work: `slices` blocks per channel, each owning
/// `slice_len` consecutive values of its channel (flattened over images and pixels).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BnPlan {
    pub n: u32,
    pub c: u32,
    pub hw: u32,
    pub slices: u32,
    pub slice_len: u64,
}

impl BnPlan {
    /// About 1024 blocks in all (a few per SM of a large GPU), each with at least 1024 values
    /// (4 per thread) when the channel has that many.
    pub fn new(n: usize, c: usize, hw: usize) -> Self {
        let m = (n * hw) as u64;
        let want = 1024u64.div_ceil(c as u64);
        let by_work = m.div_ceil(1024);
        Self::with_slices(n, c, hw, want.min(by_work).max(1) as u32)
    }

    /// A plan with `slices` blocks per channel (at most one per value).
    pub fn with_slices(n: usize, c: usize, hw: usize, slices: u32) -> Self {
        let m = (n * hw) as u64;
        assert!(m > 0 && c > 0, "batch-norm of an empty tensor");
        check_elements("batch-norm input", m * c as u64);
        assert!(
            c <= 65535,
            "batch-norm: {c} channels (grid y is at most 65535)"
        );
        let slices = (slices.max(1) as u64).min(m);
        let slice_len = m.div_ceil(slices);
        // Slices that would start past the end are dropped.
        let slices = m.div_ceil(slice_len) as u32;
        Self {
            n: n as u32,
            c: c as u32,
            hw: hw as u32,
            slices,
            slice_len,
        }
    }

    /// Doubles in the partial-sums buffer: `(C, S, 2)`.
    pub fn partial_len(&self) -> usize {
        2 * self.c as usize * self.slices as usize
    }

    fn grid(&self) -> (u32, u32, u32) {
        (self.slices, self.c, 1)
    }
}

/// Buffers of [`bn_forward`].
#[derive(Clone, Copy, Debug, Default)]
pub struct BnForwardBufs {
    /// Input `(N, C, H, W)`.
    pub x: Ptr,
    /// Output `(N, C, H, W)`.
    pub y: Ptr,
    /// γ, β: `(C,)`.
    pub gamma: Ptr,
    pub beta: Ptr,
    /// Running statistics read (`(C,)` each).
    pub run_mean: Ptr,
    pub run_var: Ptr,
    /// Updated running statistics (training only). May alias `run_mean`/`run_var`: in training
    /// only block `(0, c)` reads them, before it writes.
    pub run_mean_out: Ptr,
    pub run_var_out: Ptr,
    /// `(4, C)`: mean, invstd, a = γ·invstd, b = β − mean·a, for [`bn_backward`].
    pub saved: Ptr,
    /// Scratch, [`BnPlan::partial_len`] doubles (training only).
    pub partial: Ptr,
}

/// Batch-norm forward with the ReLU fused when `relu`: training (batch statistics, running
/// statistics updated) or eval (running statistics). Two launches in training, one in eval.
pub fn bn_forward<B: KernelBackend>(
    b: &B,
    plan: &BnPlan,
    bufs: &BnForwardBufs,
    train: bool,
    relu: bool,
    momentum: f32,
    eps: f32,
) -> Result<(), B::Err> {
    let BnPlan {
        n,
        c,
        hw,
        slices,
        slice_len,
    } = *plan;
    if train {
        assert!(
            n as u64 * hw as u64 > 1,
            "batch-norm in training mode needs more than one value per channel"
        );
        b.launch(
            plan.grid(),
            THREADS,
            &SrBnStats {
                x: bufs.x,
                partial: bufs.partial,
                n,
                c,
                hw,
                slices,
                slice_len,
            },
        )?;
    }
    b.launch(
        plan.grid(),
        THREADS,
        &SrBnForward {
            x: bufs.x,
            y: bufs.y,
            gamma: bufs.gamma,
            beta: bufs.beta,
            partial: bufs.partial,
            run_mean: bufs.run_mean,
            run_var: bufs.run_var,
            run_mean_out: bufs.run_mean_out,
            run_var_out: bufs.run_var_out,
            saved: bufs.saved,
            n,
            c,
            hw,
            slices,
            slice_len,
            momentum,
            eps,
            train: train as i32,
            relu: relu as i32,
        },
    )
}

/// Buffers of [`bn_backward`].
#[derive(Clone, Copy, Debug, Default)]
pub struct BnBackwardBufs {
    /// The forward's input `(N, C, H, W)`.
    pub x: Ptr,
    /// Output gradient `(N, C, H, W)`.
    pub dy: Ptr,
    /// γ `(C,)`.
    pub gamma: Ptr,
    /// The forward's `saved` `(4, C)`.
    pub saved: Ptr,
    /// Gradients accumulated into: `dx` `(N, C, H, W)`, `dγ`, `dβ` `(C,)`.
    pub dx: Ptr,
    pub dgamma: Ptr,
    pub dbeta: Ptr,
    /// Scratch, [`BnPlan::partial_len`] doubles.
    pub partial: Ptr,
}

/// Batch-norm backward (two launches): accumulates into `dx`, `dγ`, `dβ`.
pub fn bn_backward<B: KernelBackend>(
    b: &B,
    plan: &BnPlan,
    bufs: &BnBackwardBufs,
    train: bool,
    relu: bool,
) -> Result<(), B::Err> {
    let BnPlan {
        n,
        c,
        hw,
        slices,
        slice_len,
    } = *plan;
    b.launch(
        plan.grid(),
        THREADS,
        &SrBnBackwardReduce {
            x: bufs.x,
            dy: bufs.dy,
            saved: bufs.saved,
            partial: bufs.partial,
            n,
            c,
            hw,
            slices,
            slice_len,
            relu: relu as i32,
            pad: 0,
        },
    )?;
    b.launch(
        plan.grid(),
        THREADS,
        &SrBnBackwardApply {
            x: bufs.x,
            dy: bufs.dy,
            gamma: bufs.gamma,
            saved: bufs.saved,
            partial: bufs.partial,
            dx: bufs.dx,
            dgamma: bufs.dgamma,
            dbeta: bufs.dbeta,
            n,
            c,
            hw,
            slices,
            slice_len,
            train: train as i32,
            relu: relu as i32,
        },
    )
}

/// Geometry of a 2×2 pooling: `planes` = N·C planes of `h × w`, output `ho × wo`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PoolGeo {
    pub planes: usize,
    pub h: usize,
    pub w: usize,
    pub ho: usize,
    pub wo: usize,
}

impl PoolGeo {
    /// # Panics
    /// If a plane is smaller than 2×2.
    pub fn new(planes: usize, h: usize, w: usize) -> Self {
        let (ho, wo) = (super::out_size(h, 2, 2, 0), super::out_size(w, 2, 2, 0));
        check_elements("pooling input", (planes * h * w) as u64);
        Self {
            planes,
            h,
            w,
            ho,
            wo,
        }
    }

    pub fn outputs(&self) -> u64 {
        (self.planes * self.ho * self.wo) as u64
    }
}

/// 2×2 pooling forward, average or max (one launch).
pub fn pool_forward<B: KernelBackend>(
    b: &B,
    g: &PoolGeo,
    x: Ptr,
    y: Ptr,
    max: bool,
) -> Result<(), B::Err> {
    let outputs = g.outputs();
    b.launch(
        (stride_blocks(outputs), 1, 1),
        THREADS,
        &SrPoolForward {
            x,
            y,
            outputs,
            h: g.h as u32,
            w: g.w as u32,
            ho: g.ho as u32,
            wo: g.wo as u32,
            max: max as i32,
            pad: 0,
        },
    )
}

/// 2×2 pooling backward: accumulates into `dx` (one launch).
pub fn pool_backward<B: KernelBackend>(
    b: &B,
    g: &PoolGeo,
    x: Ptr,
    dy: Ptr,
    dx: Ptr,
    max: bool,
) -> Result<(), B::Err> {
    let outputs = g.outputs();
    b.launch(
        (stride_blocks(outputs), 1, 1),
        THREADS,
        &SrPoolBackward {
            x,
            dy,
            dx,
            outputs,
            h: g.h as u32,
            w: g.w as u32,
            ho: g.ho as u32,
            wo: g.wo as u32,
            max: max as i32,
            pad: 0,
        },
    )
}

/// Threads per block of [`gap_forward`]: the plane size rounded up to a power of two, 32..256.
pub fn gap_block(hw: usize) -> u32 {
    (hw.next_power_of_two() as u32).clamp(32, THREADS)
}

/// Global average pooling forward: `y[plane] = mean(x[plane])` (one launch).
pub fn gap_forward<B: KernelBackend>(
    b: &B,
    planes: usize,
    hw: usize,
    x: Ptr,
    y: Ptr,
) -> Result<(), B::Err> {
    assert!(hw > 0, "global average pooling of an empty plane");
    check_elements("global average pooling input", (planes * hw) as u64);
    b.launch(
        ((planes as u64).clamp(1, MAX_BLOCKS) as u32, 1, 1),
        gap_block(hw),
        &SrGapForward {
            x,
            y,
            planes: planes as u64,
            hw: hw as u32,
            pad: 0,
        },
    )
}

/// Global average pooling backward: `dx += dy / hw` broadcast over each plane (one launch).
pub fn gap_backward<B: KernelBackend>(
    b: &B,
    planes: usize,
    hw: usize,
    dy: Ptr,
    dx: Ptr,
) -> Result<(), B::Err> {
    let elements = (planes * hw) as u64;
    check_elements("global average pooling input", elements);
    b.launch(
        (stride_blocks(elements), 1, 1),
        THREADS,
        &SrGapBackward {
            dy,
            dx,
            elements,
            hw: hw as u32,
            inv_hw: 1.0 / hw as f32,
        },
    )
}

/// `y = relu(a + b)` over `elements` values (one launch).
pub fn add_relu_forward<B: KernelBackend>(
    b: &B,
    elements: usize,
    x_a: Ptr,
    x_b: Ptr,
    y: Ptr,
) -> Result<(), B::Err> {
    let elements = elements as u64;
    b.launch(
        (stride_blocks(elements), 1, 1),
        THREADS,
        &SrAddRelu {
            a: x_a,
            b: x_b,
            y,
            elements,
        },
    )
}

/// `da += dy·[y > 0]`, `db += dy·[y > 0]` (one launch; `da` and `db` may be the same buffer).
pub fn add_relu_backward<B: KernelBackend>(
    b: &B,
    elements: usize,
    y: Ptr,
    dy: Ptr,
    da: Ptr,
    db: Ptr,
) -> Result<(), B::Err> {
    let elements = elements as u64;
    b.launch(
        (stride_blocks(elements), 1, 1),
        THREADS,
        &SrAddReluBackward {
            y,
            dy,
            da,
            db,
            elements,
        },
    )
}

/// `counts[k] += #non-finite values of tensors[k]` (`(pointer, length)` pairs; `counts` holds
/// `tensors.len()` u32, zeroed by the caller). One launch per [`MAX_TENSORS`] tensors.
pub fn count_nonfinite<B: KernelBackend>(
    b: &B,
    tensors: &[(Ptr, u64)],
    counts: Ptr,
) -> Result<(), B::Err> {
    for (chunk_index, chunk) in tensors.chunks(MAX_TENSORS).enumerate() {
        let mut p = SrCountNonfinite {
            ptr: [0; MAX_TENSORS],
            len: [0; MAX_TENSORS],
            counts,
            first: (chunk_index * MAX_TENSORS) as u32,
            count: chunk.len() as u32,
        };
        for (k, &(ptr, len)) in chunk.iter().enumerate() {
            p.ptr[k] = ptr;
            p.len[k] = len;
        }
        let longest = chunk.iter().map(|t| t.1).max().unwrap_or(0);
        let blocks = longest.div_ceil(THREADS as u64 * 4).clamp(1, 64) as u32;
        b.launch((blocks, chunk.len() as u32, 1), THREADS, &p)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bn_plan_covers_every_value_once() {
        for &(n, c, hw) in &[
            (128, 16, 1024),
            (3, 5, 63),
            (896, 16, 4096),
            (2, 64, 1),
            (1, 1, 2),
        ] {
            let p = BnPlan::new(n, c, hw);
            let m = (n * hw) as u64;
            assert!(p.slices >= 1);
            // The slices tile [0, m): the last one starts before m, all end at min(.., m).
            assert!((p.slices as u64 - 1) * p.slice_len < m, "{p:?}");
            assert!(p.slices as u64 * p.slice_len >= m, "{p:?}");
            assert!(p.slices as u64 * p.c as u64 <= 2048, "{p:?}");
        }
        // Forced slicing drops slices that would start past the end.
        let p = BnPlan::with_slices(2, 1, 3, 5);
        assert_eq!((p.slices, p.slice_len), (3, 2));
    }

    #[test]
    fn gap_block_is_a_power_of_two_in_range() {
        for hw in [1, 4, 16, 63, 64, 65, 256, 4096] {
            let b = gap_block(hw);
            assert!(
                b.is_power_of_two() && (32..=THREADS).contains(&b),
                "{hw} -> {b}"
            );
            assert!(b as usize >= hw.min(THREADS as usize));
        }
    }

    #[test]
    fn param_structs_have_the_c_layout_sizes() {
        // Sizes the C compiler gives these structs on x86-64 (and nvcc on the device): the
        // emulator test checks them against the compiler too.
        assert_eq!(std::mem::size_of::<SrBnStats>(), 40);
        assert_eq!(std::mem::size_of::<SrBnForward>(), 120);
        assert_eq!(std::mem::size_of::<SrBnBackwardReduce>(), 64);
        assert_eq!(std::mem::size_of::<SrCountNonfinite>(), 528);
    }
}
