//! Fast CPU path: hand-written kernels registered on dfdx's tape.
//!
//! - conv2d: 3×3 "same" convolutions on an AVX-512 CPU run the [`super::direct`] kernel for the
//!   output and the input gradient; otherwise im2col into a thread-local scratch buffer, then one
//!   `gemm` call per image (single-threaded gemm; rayon runs images in parallel). The weight
//!   gradient is im2col + gemm on both routes, accumulated per fixed chunk of images and reduced
//!   in chunk order; the im2col route scatters the column gradient back (col2im).
//! - conv2d with [`super::Precision::Bf16`]: the same routes on bf16 operands — the direct
//!   kernel on planes of channel pairs, im2col + [`super::bf16::matmul`] otherwise; the weight
//!   gradient's column matrix is built from the image rounded once (bf16 bits, no f32 copy).
//! - batch-norm: per-channel statistics in f64 (one pass over memory, rayon over channels), one
//!   fused normalise-scale-shift(-ReLU) pass over planes; backward in two fused passes.
//! - pooling: direct loops, rayon over planes.
//!
//! Every op reads its inputs in place ([`data`]: `Tensorlike::data`, public in the vendored dfdx)
//! and builds its output with `tensor_from_vec` (no copy). Backward closures keep a clone of the
//! input tensors they need (shared storage, no copy) and read the output gradient in place: it is
//! moved out of the gradient map, never copied, and freed when the closure is done (see
//! [`take_grad!`]).

use super::bf16::{self, Mat, PackedB};
use super::direct::{self, Pad};
use super::{out_size, Act, BnMode, BnParams, ConvWeight, Pooled, Precision, BN_EPS, BN_MOMENTUM};
use dfdx::prelude::*;
use dfdx::tensor::Tensorlike;
use rayon::prelude::*;
use std::cell::RefCell;

pub(crate) type Err = <Cpu as HasErr>::Err;

/// Scratch buffers per thread: 0–3 for the convolutions ([`ConvPlan`]), 4–7 for the fused ops
/// ([`super::fused`]).
const SCRATCH_SLOTS: usize = 8;

thread_local! {
    static SCRATCH: [RefCell<Vec<f32>>; SCRATCH_SLOTS] =
        const { [const { RefCell::new(Vec::new()) }; SCRATCH_SLOTS] };
}

thread_local! {
    /// The bf16 weight gradient's broadcast operand (an image's im2col matrix), reused.
    static BF16_COLS: RefCell<PackedB> = RefCell::new(PackedB::default());
}

/// Runs `f` with this thread's scratch buffer number `i` (0..8) of length `len` (contents
/// unspecified). Nested calls must use different slots.
pub(crate) fn with_scratch<R>(i: usize, len: usize, f: impl FnOnce(&mut [f32]) -> R) -> R {
    SCRATCH.with(|s| {
        let mut s = s[i].borrow_mut();
        if s.len() < len {
            s.resize(len, 0.0);
        }
        f(&mut s[..len])
    })
}

/// Runs `f` with this thread's scratch buffer `A` of length `len` (contents unspecified).
fn with_scratch_a<R>(len: usize, f: impl FnOnce(&mut [f32]) -> R) -> R {
    with_scratch(0, len, f)
}

/// Runs `f` with this thread's scratch buffer `B` of length `len` (contents unspecified).
fn with_scratch_b<R>(len: usize, f: impl FnOnce(&mut [f32]) -> R) -> R {
    with_scratch(1, len, f)
}

/// How [`conv2d`] computes on the CPU: its arithmetic, and which kernels it may use. The model
/// path takes [`ConvRoute::fastest`] for the run's precision; tests and benchmarks that compare
/// the routes of one op ask for the others explicitly (the choice is per call: nothing global).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConvRoute {
    /// f32, or bf16 products with f32 accumulation.
    pub precision: Precision,
    /// Use the direct 3×3 kernel ([`super::direct`]) where the geometry and the CPU allow it
    /// (AVX-512F; for bf16 also AVX-512 BF16 and `bf16_kernel` = `Best`); otherwise im2col + gemm.
    pub direct: bool,
    /// Which bf16 matrix kernel the im2col route runs ([`bf16::Kernel`]); `Portable` also rules
    /// out the bf16 direct kernel, as on a CPU without AVX-512 BF16.
    pub bf16_kernel: bf16::Kernel,
}

impl ConvRoute {
    /// The fastest route this CPU has for `precision`.
    pub fn fastest(precision: Precision) -> Self {
        Self {
            precision,
            direct: true,
            bf16_kernel: bf16::Kernel::Best,
        }
    }

    /// im2col + gemm (or the bf16 matrix product) on every geometry.
    pub fn im2col(precision: Precision) -> Self {
        Self {
            direct: false,
            ..Self::fastest(precision)
        }
    }

    /// What a CPU without AVX-512 BF16 runs for bf16 (im2col + the portable bf16 product); f32
    /// is unaffected.
    pub fn portable(self) -> Self {
        Self {
            bf16_kernel: bf16::Kernel::Portable,
            ..self
        }
    }

    pub(crate) fn bf16(&self) -> bool {
        self.precision == Precision::Bf16
    }

    /// Whether a convolution of this geometry takes the direct kernel (f32, or bf16 pairs).
    fn use_direct(&self, g: &Geo) -> bool {
        g.k == 3
            && is_same(g)
            && self.direct
            && if self.bf16() {
                self.bf16_kernel.simd() && super::direct::available_bf16()
            } else {
                super::direct::available()
            }
    }
}

/// A contiguous host copy of a (contiguous) tensor (the small per-channel vectors).
pub(crate) fn host<S: Shape, T>(t: &Tensor<S, f32, Cpu, T>) -> Vec<f32> {
    let mut v = vec![0.0; t.shape().num_elements()];
    t.copy_into(&mut v);
    v
}

/// The storage of a contiguous tensor, read in place ([`Tensorlike::data`], the vendored dfdx's
/// backport): no copy. Backward closures keep a clone of the tensor (which shares the storage)
/// instead of a host copy of its values.
///
/// # Panics
/// If the storage does not hold exactly the tensor's elements (the ops make their inputs
/// contiguous first, so it always does).
pub(crate) fn data<S: Shape, T>(t: &Tensor<S, f32, Cpu, T>) -> &[f32] {
    let v: &[f32] = t.data().expect("a tensor has storage");
    assert_eq!(
        v.len(),
        t.shape().num_elements(),
        "op input is not a contiguous tensor"
    );
    v
}

/// Moves the gradient of a ghost tensor out of `grads` (allocating zeros if absent), as a `Vec`,
/// leaving an empty `Vec` in its place. (A macro, because dfdx's `GhostTensor` type cannot be
/// named outside dfdx.)
///
/// Every op here takes its *output's* gradient this way and never puts it back: once an op's
/// backward runs, every consumer of its output has already added to that gradient (dfdx runs
/// backward ops in reverse creation order) and nothing reads it again, so it is released at
/// once instead of at the end of the backward pass (dfdx keeps every intermediate gradient until
/// `drop_non_leafs`): peak memory of a ResNet-32 step fell by a fifth (batch 256 at 32×32:
/// 889 → 724 MB; the authors' 64×64 setting: 12.0 → 9.8 GB). The flip side: with
/// `Gradients::leaky()`, the gradient of an op's *output* reads back empty (inputs' and
/// parameters' gradients are unaffected).
macro_rules! take_grad {
    ($grads:expr, $ghost:expr) => {
        std::mem::take(&mut **$grads.get_or_alloc_mut($ghost)?)
    };
}

pub(crate) use take_grad;

/// Frees an output gradient taken with [`take_grad!`] (see there).
#[inline]
pub(crate) fn release_grad(g: Vec<f32>) -> Result<(), Err> {
    drop(g);
    Ok(())
}

/// A strided matrix view: element `(i, j)` is at `ptr + i·rs + j·cs`.
#[derive(Clone, Copy)]
struct View<P> {
    ptr: P,
    rs: usize,
    cs: usize,
}

fn view<P>(ptr: P, rs: usize, cs: usize) -> View<P> {
    View { ptr, rs, cs }
}

/// Matrix product with strides: `dst (m×n) [+]= lhs (m×k) · rhs (k×n)`.
///
/// gemm 0.19 computes in column-major order: a row-major `dst` (`cs = 1`) is transposed
/// internally (`dstᵀ = rhsᵀ · lhsᵀ`), so `dst`'s layout, not the order of the operands, decides
/// which dimension its 64×6 AVX-512 microkernel runs along.
///
/// # Safety
/// The pointers must be valid for the given sizes and strides, and `dst` must not alias.
unsafe fn matmul(
    (m, n, k): (usize, usize, usize),
    dst: View<*mut f32>,
    accumulate: bool,
    lhs: View<*const f32>,
    rhs: View<*const f32>,
) {
    // SAFETY: the caller guarantees what `# Safety` above asks: valid pointers for the sizes and
    // strides, and a `dst` that aliases nothing.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.ptr,
            dst.cs as isize,
            dst.rs as isize,
            accumulate,
            lhs.ptr,
            lhs.cs as isize,
            lhs.rs as isize,
            rhs.ptr,
            rhs.cs as isize,
            rhs.rs as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::None,
        )
    }
}

/// Geometry of one convolution.
#[derive(Clone, Copy, Debug)]
struct Geo {
    c: usize,
    h: usize,
    w: usize,
    k: usize,
    s: usize,
    p: usize,
    ho: usize,
    wo: usize,
}

impl Geo {
    fn ckk(&self) -> usize {
        self.c * self.k * self.k
    }
    fn out_plane(&self) -> usize {
        self.ho * self.wo
    }
    fn in_image(&self) -> usize {
        self.c * self.h * self.w
    }
    /// Output columns `[lo, hi)` whose input column `ox·s + kx − p` lies inside the image.
    fn valid_cols(&self, kx: usize) -> (usize, usize) {
        let lo = if self.p > kx {
            (self.p - kx).div_ceil(self.s)
        } else {
            0
        };
        let hi = if self.w + self.p > kx {
            ((self.w + self.p - kx - 1) / self.s + 1).min(self.wo)
        } else {
            0
        };
        (lo.min(hi), hi)
    }
}

/// For a "same" convolution (stride 1, `2p = k − 1`), row `(c, ky, kx)` of the column matrix is
/// the input plane shifted by `(ky − p)·w + (kx − p)`: one contiguous copy (or add) over the rows
/// whose input row exists, clipped to the plane. Returns `(dst range, src offset, valid output
/// rows)`; the columns that wrapped around a row edge must be zeroed separately.
#[inline]
fn same_shift(g: &Geo, ky: usize, kx: usize) -> (usize, usize, isize, usize, usize) {
    // Clamped so that images smaller than the kernel's reach (a 1×1 image: every tap but the
    // centre is padding) give empty ranges instead of out-of-range or wrapped indices.
    let (h, plane) = (g.h as isize, (g.h * g.w) as isize);
    let (dy, dx) = (ky as isize - g.p as isize, kx as isize - g.p as isize);
    let oy_lo = (-dy).clamp(0, h);
    let oy_hi = (h - dy).clamp(oy_lo, h);
    let off = dy * g.w as isize + dx;
    let js = (oy_lo * g.w as isize).max(-off).clamp(0, plane);
    let je = (oy_hi * g.w as isize).min(plane - off).clamp(js, plane);
    (
        js as usize,
        je as usize,
        off,
        oy_lo as usize,
        oy_hi as usize,
    )
}

/// Zeroes, in rows `[oy_lo, oy_hi)` of a "same" column row, the columns whose input column
/// `ox + kx − p` lies outside the image.
#[inline]
fn zero_wrapped<T: Copy + Default>(g: &Geo, row: &mut [T], kx: usize, oy_lo: usize, oy_hi: usize) {
    let (lo, hi) = g.valid_cols(kx);
    if lo == 0 && hi == g.w {
        return;
    }
    for oy in oy_lo..oy_hi {
        let base = oy * g.w;
        for j in (0..lo).chain(hi..g.w) {
            row[base + j] = T::default();
        }
    }
}

fn is_same(g: &Geo) -> bool {
    g.s == 1 && 2 * g.p + 1 == g.k && g.ho == g.h && g.wo == g.w
}

/// `cols[(c·k + ky)·k + kx][oy·wo + ox] = x[c][oy·s + ky − p][ox·s + kx − p]` (0 outside).
///
/// Rows are `ld ≥ wo·ho` elements apart (only their first `wo·ho` are written). Generic over the
/// element: f32, or bf16 bits (`u16`) for the bf16 weight gradient.
fn im2col<T: Copy + Default>(g: &Geo, x: &[T], cols: &mut [T], ld: usize) {
    let opl = g.out_plane();
    let zero = T::default();
    if is_same(g) {
        let plane = g.h * g.w;
        for c in 0..g.c {
            let xc = &x[c * plane..][..plane];
            for ky in 0..g.k {
                for kx in 0..g.k {
                    let row = &mut cols[((c * g.k + ky) * g.k + kx) * ld..][..opl];
                    let (js, je, off, oy_lo, oy_hi) = same_shift(g, ky, kx);
                    row[..js].fill(zero);
                    row[je..].fill(zero);
                    if je > js {
                        let s0 = (js as isize + off) as usize;
                        row[js..je].copy_from_slice(&xc[s0..s0 + (je - js)]);
                    }
                    zero_wrapped(g, row, kx, oy_lo, oy_hi);
                }
            }
        }
        return;
    }
    for c in 0..g.c {
        let xc = &x[c * g.h * g.w..][..g.h * g.w];
        for ky in 0..g.k {
            for kx in 0..g.k {
                let row = &mut cols[((c * g.k + ky) * g.k + kx) * ld..][..opl];
                let (lo, hi) = g.valid_cols(kx);
                for oy in 0..g.ho {
                    let dst = &mut row[oy * g.wo..][..g.wo];
                    let iy = (oy * g.s + ky) as isize - g.p as isize;
                    if iy < 0 || iy >= g.h as isize {
                        dst.fill(zero);
                        continue;
                    }
                    let src = &xc[iy as usize * g.w..][..g.w];
                    dst[..lo].fill(zero);
                    dst[hi..].fill(zero);
                    if g.s == 1 {
                        let off = lo + kx - g.p;
                        dst[lo..hi].copy_from_slice(&src[off..off + (hi - lo)]);
                    } else {
                        for (ox, d) in dst[lo..hi].iter_mut().enumerate() {
                            *d = src[(ox + lo) * g.s + kx - g.p];
                        }
                    }
                }
            }
        }
    }
}

/// Adjoint of [`im2col`]: `dx += col2im(cols)`. `cols` is scratch: its entries for padding
/// positions may be overwritten.
fn col2im_add(g: &Geo, cols: &mut [f32], dx: &mut [f32]) {
    let opl = g.out_plane();
    if is_same(g) {
        let plane = g.h * g.w;
        for c in 0..g.c {
            let dxc = &mut dx[c * plane..][..plane];
            for ky in 0..g.k {
                for kx in 0..g.k {
                    let row = &mut cols[((c * g.k + ky) * g.k + kx) * opl..][..opl];
                    let (js, je, off, oy_lo, oy_hi) = same_shift(g, ky, kx);
                    zero_wrapped(g, row, kx, oy_lo, oy_hi);
                    if je > js {
                        let s0 = (js as isize + off) as usize;
                        for (d, s) in dxc[s0..s0 + (je - js)].iter_mut().zip(&row[js..je]) {
                            *d += *s;
                        }
                    }
                }
            }
        }
        return;
    }
    for c in 0..g.c {
        let dxc = &mut dx[c * g.h * g.w..][..g.h * g.w];
        for ky in 0..g.k {
            for kx in 0..g.k {
                let row = &cols[((c * g.k + ky) * g.k + kx) * opl..][..opl];
                let (lo, hi) = g.valid_cols(kx);
                for oy in 0..g.ho {
                    let iy = (oy * g.s + ky) as isize - g.p as isize;
                    if iy < 0 || iy >= g.h as isize {
                        continue;
                    }
                    let src = &row[oy * g.wo..][..g.wo];
                    let dst = &mut dxc[iy as usize * g.w..][..g.w];
                    if g.s == 1 {
                        let off = lo + kx - g.p;
                        for (d, s) in dst[off..off + (hi - lo)].iter_mut().zip(&src[lo..hi]) {
                            *d += *s;
                        }
                    } else {
                        for ox in lo..hi {
                            dst[ox * g.s + kx - g.p] += src[ox];
                        }
                    }
                }
            }
        }
    }
}

/// One image through the [`direct`] 3×3 kernel: `cin` planes of `input` are padded into scratch,
/// convolved with the packed weights `packed` (f32 or bf16 pairs) into scratch, and the `cout`
/// valid output planes written to (`add = false`) or added into (`add = true`) `out`.
fn direct_conv_image(
    pad: &Pad,
    (cin, cout): (usize, usize),
    input: &[f32],
    packed: &direct::Weights,
    out: &mut [f32],
    add: bool,
) {
    with_scratch(2, packed.planes(cin) * pad.plane, |xp| {
        with_scratch(3, direct::ceil_ob(cout) * pad.out, |yp| {
            packed.conv(pad, (cin, cout), input, xp, yp);
            if add {
                direct::unpad_add(pad, cout, yp, out);
            } else {
                direct::unpad_into(pad, cout, yp, out);
            }
        })
    });
}

/// Images per task of a convolution's backward pass: each task accumulates the weight gradient
/// of its images, and the partial sums are added in task order, so the weight gradient never
/// depends on how rayon schedules the tasks (runs are reproducible at any thread count).
pub(crate) const CHUNK: usize = 8;

/// One convolution of one call, image by image: geometry, weights (packed once per call for
/// the direct kernel or the bf16 products) and route. [`conv2d`] runs its images through it,
/// and so do the fused ops ([`super::fused`]), so both compute the same arithmetic.
pub(crate) struct ConvPlan {
    g: Geo,
    /// Output channels.
    o: usize,
    route: ConvRoute,
    /// The weight `(O, C, K, K)`, row-major.
    wv: Vec<f32>,
    /// The direct kernel's geometry and weights (forward; flipped and transposed for the input
    /// gradient), where the route and geometry take it.
    direct: Option<(Pad, direct::Weights, direct::Weights)>,
    /// bf16 GEMM operands off the direct route: `Wᵀ` (`ckk × O`) for the output, `W`
    /// (`O × ckk`) for the input gradient.
    packed: Option<(PackedB, PackedB)>,
}

impl ConvPlan {
    /// A `k × k` convolution of `c` input planes of `h × w` into `o` output planes, stride `s`,
    /// zero padding `p`, weights `wv` `(o, c, k, k)`.
    pub(crate) fn new(
        (c, h, w): (usize, usize, usize),
        (o, k, s, p): (usize, usize, usize, usize),
        wv: Vec<f32>,
        route: ConvRoute,
    ) -> Self {
        assert_eq!(wv.len(), o * c * k * k, "conv weight has the wrong length");
        let g = Geo {
            c,
            h,
            w,
            k,
            s,
            p,
            ho: out_size(h, k, s, p),
            wo: out_size(w, k, s, p),
        };
        let bf16 = route.bf16();
        let ckk = g.ckk();
        // The direct kernel for 3×3 "same" convolutions; im2col + gemm otherwise.
        let direct = route.use_direct(&g).then(|| {
            (
                Pad::new(h, w),
                direct::Weights::pack(&wv, o, c, false, bf16),
                direct::Weights::pack(&wv, o, c, true, bf16),
            )
        });
        let kernel = route.bf16_kernel;
        let packed = (bf16 && direct.is_none()).then(|| {
            (
                PackedB::new(kernel, ckk, o, Mat::new(&wv, 1, ckk)),
                PackedB::new(kernel, o, ckk, Mat::new(&wv, ckk, 1)),
            )
        });
        Self {
            g,
            o,
            route,
            wv,
            direct,
            packed,
        }
    }

    /// Output size `(ho, wo)`.
    pub(crate) fn out_hw(&self) -> (usize, usize) {
        (self.g.ho, self.g.wo)
    }

    /// Floats of one input image, `c·h·w`.
    pub(crate) fn in_image(&self) -> usize {
        self.g.in_image()
    }

    /// Floats of one output image, `o·ho·wo`.
    pub(crate) fn out_image(&self) -> usize {
        self.o * self.g.out_plane()
    }

    /// `y_n = conv(x_n)` for one image.
    pub(crate) fn forward_image(&self, x_n: &[f32], y_n: &mut [f32]) {
        let (g, o) = (&self.g, self.o);
        let (ckk, opl) = (g.ckk(), g.out_plane());
        if let Some((pad, wf, _)) = &self.direct {
            direct_conv_image(pad, (g.c, o), x_n, wf, y_n, false);
            return;
        }
        with_scratch_a(ckk * opl, |cols| {
            im2col(g, x_n, cols, opl);
            if let Some((wt, _)) = &self.packed {
                // y_n (opl × O, column-major) = colsᵀ (opl × ckk) · Wᵀ
                let kernel = self.route.bf16_kernel;
                bf16::matmul(kernel, opl, y_n, opl, false, Mat::new(cols, 1, opl), wt);
                return;
            }
            assert!(y_n.len() >= o * opl && self.wv.len() >= o * ckk);
            // y_nᵀ (opl × O) = colsᵀ (opl × ckk) · Wᵀ (ckk × O); y_nᵀ[i][o] = y_n[o·opl + i]
            // SAFETY: `y_n` holds O·opl floats (checked), `cols` (scratch of ckk·opl) and `wv`
            // (O·ckk, checked) cover every element the strides reach, and `y_n` is a unique
            // borrow.
            unsafe {
                matmul(
                    (opl, o, ckk),
                    view(y_n.as_mut_ptr(), 1, opl),
                    false,
                    view(cols.as_ptr(), 1, opl),
                    view(self.wv.as_ptr(), 1, ckk),
                )
            }
        });
    }

    /// `dwt += ` one image's weight gradient, transposed (`ckk × O`, row-major): `x_n` is the
    /// image the convolution read, `gy_n` its output gradient.
    pub(crate) fn weight_grad_image(&self, x_n: &[f32], gy_n: &[f32], dwt: &mut [f32]) {
        let (g, o) = (&self.g, self.o);
        let (ckk, opl) = (g.ckk(), g.out_plane());
        assert!(dwt.len() >= ckk * o && gy_n.len() >= o * opl);
        if self.route.bf16() {
            // dWᵀ (ckk × O row-major = O × ckk column-major) += gy_n (O × opl) · colsᵀ
            // (opl × ckk); the image is rounded to bf16 once and the column matrix built from
            // it in place, as packed pairs
            let kernel = self.route.bf16_kernel;
            BF16_COLS.with(|pb| {
                let mut pb = pb.borrow_mut();
                bf16::with_bf16(kernel, x_n, |x16| {
                    pb.fill_rows(opl, ckk, |rows, ld| im2col(g, x16, rows, ld))
                });
                let a = Mat::new(gy_n, opl, 1);
                bf16::matmul(kernel, o, dwt, o, true, a, &pb);
            });
            return;
        }
        with_scratch_a(ckk * opl, |cols| {
            im2col(g, x_n, cols, opl);
            // dWᵀ (ckk × O) += cols (ckk × opl) · gy_nᵀ (opl × O), on both routes. (Stored
            // row-major, gemm transposes it to m = O; stored column-major, i.e. as dW, the step
            // ran at 0.68×; dW = gy_n · colsᵀ row-major was ~30× slower in gemm 0.19; two direct
            // AVX-512 kernels were slower too, see BENCHMARKS.md.)
            // SAFETY: `dwt` holds ckk·O floats and `gy_n` O·opl (checked above), `cols` is
            // scratch of ckk·opl: every strided access is inside, and `dwt` is a unique borrow.
            unsafe {
                matmul(
                    (ckk, o, opl),
                    view(dwt.as_mut_ptr(), o, 1),
                    true,
                    view(cols.as_ptr(), opl, 1),
                    view(gy_n.as_ptr(), 1, opl),
                )
            }
        });
    }

    /// One image's input gradient from its output gradient `gy_n`: written to `gx_n`
    /// (`add = false`) or added into it (`add = true`).
    pub(crate) fn input_grad_image(&self, gy_n: &[f32], gx_n: &mut [f32], add: bool) {
        let (g, o) = (&self.g, self.o);
        let (ckk, opl) = (g.ckk(), g.out_plane());
        if let Some((pad, _, wb)) = &self.direct {
            // dx (+)= the same convolution of gy, weights flipped, transposed
            direct_conv_image(pad, (o, g.c), gy_n, wb, gx_n, add);
            return;
        }
        if !add {
            gx_n[..g.in_image()].fill(0.0);
        }
        with_scratch_b(ckk * opl, |dcols| {
            if let Some((_, wn)) = &self.packed {
                // dcols (ckk × opl) = (gy_nᵀ (opl × O) · W)ᵀ
                let a = Mat::new(gy_n, 1, opl);
                bf16::matmul(self.route.bf16_kernel, opl, dcols, opl, false, a, wn);
                col2im_add(g, dcols, gx_n);
                return;
            }
            assert!(gy_n.len() >= o * opl && self.wv.len() >= o * ckk);
            // dcolsᵀ (opl × ckk) = gy_nᵀ (opl × O) · W (O × ckk)
            // SAFETY: `dcols` is this thread's scratch of ckk·opl floats, `gy_n` holds O·opl and
            // `wv` O·ckk (checked): every access is inside.
            unsafe {
                matmul(
                    (opl, ckk, o),
                    view(dcols.as_mut_ptr(), 1, opl),
                    false,
                    view(gy_n.as_ptr(), 1, opl),
                    view(self.wv.as_ptr(), ckk, 1),
                )
            }
            col2im_add(g, dcols, gx_n);
        });
    }

    /// A zeroed weight-gradient accumulator for [`ConvPlan::weight_grad_image`] (`ckk × O`).
    pub(crate) fn new_dwt(&self) -> Vec<f32> {
        vec![0.0f32; self.g.ckk() * self.o]
    }

    /// `gw (O, C, K, K) += Σ partials` (each `ckk × O`), added in the given order.
    pub(crate) fn finish_weight_grad(&self, partials: &[Vec<f32>], gw: &mut [f32]) {
        let (ckk, o) = (self.g.ckk(), self.o);
        let mut dwt = vec![0.0f32; ckk * o];
        for part in partials {
            dwt.iter_mut().zip(part).for_each(|(a, b)| *a += b);
        }
        for oc in 0..o {
            for j in 0..ckk {
                gw[oc * ckk + j] += dwt[j * o + oc];
            }
        }
    }
}

/// Fast CPU [`super::OpsDevice::conv2d`], on `route` (the model path: [`ConvRoute::fastest`]).
///
/// # Shapes
/// `x: (B, I, H, W)`, `w: (O, I, K, K)` → `(B, O, Ho, Wo)`
pub fn conv2d<const I: usize, const O: usize, const K: usize, T: Tape<f32, Cpu>>(
    x: Act<I, Cpu, T>,
    w: &ConvWeight<O, I, K, Cpu>,
    stride: usize,
    padding: usize,
    route: ConvRoute,
) -> Result<Act<O, Cpu, T>, Err> {
    let x = x.try_contiguous()?;
    let (x, mut tape) = x.split_tape();
    let (b, _, h, wd) = *x.shape();
    let plan = ConvPlan::new((I, h, wd), (O, K, stride, padding), host(w), route);
    let xv = data(&x);
    let (iml, oml) = (plan.in_image(), plan.out_image());
    let (ho, wo) = plan.out_hw();
    let mut yv = vec![0.0f32; b * oml];
    yv.par_chunks_mut(oml)
        .zip(xv.par_chunks(iml))
        .for_each(|(y_n, x_n)| plan.forward_image(x_n, y_n));
    let y = x.device().tensor_from_vec(yv, (b, Const::<O>, ho, wo));
    if <T as Tape<f32, Cpu>>::OWNS_TAPE {
        let (xg, wg, yg) = (x.ghost(), w.ghost(), y.ghost());
        let xk = x.clone();
        tape.add_backward_op(move |grads| {
            let xv = data(&xk);
            let gy = take_grad!(grads, &yg);
            let gx = grads.get_or_alloc_mut(&xg)?;
            let partials: Vec<Vec<f32>> = gx
                .par_chunks_mut(iml * CHUNK)
                .zip(gy.par_chunks(oml * CHUNK))
                .zip(xv.par_chunks(iml * CHUNK))
                .map(|((gx_c, gy_c), x_c)| {
                    let mut dwt = plan.new_dwt();
                    for ((gx_n, gy_n), x_n) in gx_c
                        .chunks_mut(iml)
                        .zip(gy_c.chunks(oml))
                        .zip(x_c.chunks(iml))
                    {
                        plan.weight_grad_image(x_n, gy_n, &mut dwt);
                        plan.input_grad_image(gy_n, gx_n, true);
                    }
                    dwt
                })
                .collect();
            let gw = grads.get_or_alloc_mut(&wg)?;
            plan.finish_weight_grad(&partials, gw);
            release_grad(gy)
        });
    }
    Ok(y.put_tape(tape))
}

const LANES: usize = 16;

/// `(Σ f(x), Σ g(x))` over a slice, with `LANES` independent f32 accumulators per sum so the
/// loop vectorises; lanes are combined in f64.
#[inline(always)]
fn sum2(xs: &[f32], ys: &[f32], f: impl Fn(f32, f32) -> (f32, f32)) -> (f64, f64) {
    let (mut a, mut b) = ([0.0f32; LANES], [0.0f32; LANES]);
    let (xc, yc) = (xs.chunks_exact(LANES), ys.chunks_exact(LANES));
    let (xr, yr) = (xc.remainder(), yc.remainder());
    for (x, y) in xc.zip(yc) {
        for i in 0..LANES {
            let (u, v) = f(x[i], y[i]);
            a[i] += u;
            b[i] += v;
        }
    }
    let (mut sa, mut sb) = (0.0f64, 0.0f64);
    for (&x, &y) in xr.iter().zip(yr) {
        let (u, v) = f(x, y);
        sa += u as f64;
        sb += v as f64;
    }
    (
        sa + a.iter().map(|&v| v as f64).sum::<f64>(),
        sb + b.iter().map(|&v| v as f64).sum::<f64>(),
    )
}

/// `(Σ x, M2)` of one plane: its sum and its squared deviations from its own mean (two reads
/// of the plane, the second from cache). [`combine_stats`] combines planes into channels.
#[inline]
pub(crate) fn plane_stats(p: &[f32]) -> (f64, f64) {
    super::simd::wide(
        #[inline(always)]
        || plane_stats_base(p),
    )
}

/// [`plane_stats`] for the target the caller is compiled for.
#[inline(always)]
pub(crate) fn plane_stats_base(p: &[f32]) -> (f64, f64) {
    let hw = p.len();
    let sum = sum2(p, p, |x, _| (x, 0.0)).0;
    let mp = (sum / hw as f64) as f32;
    let m2 = sum2(p, p, |x, _| ((x - mp) * (x - mp), 0.0)).0;
    // Deviations were taken from the f32-rounded plane mean `mp`: correct M2 to the exact plane
    // mean (Σ(x − mp)² = M2ₚ + hw·(mean_p − mp)²).
    let exact = sum / hw as f64;
    (sum, m2 - hw as f64 * (exact - mp as f64).powi(2))
}

/// Per-channel `(mean, biased variance)` from the [`plane_stats`] of every plane of an NCHW
/// batch (`planes[n·c + ch]`), combined exactly in f64 (Chan et al.:
/// `M2 = Σ M2ₚ + Σ nₚ·(meanₚ − mean)²`), images in order.
pub(crate) fn combine_stats(planes: &[(f64, f64)], c: usize, hw: usize) -> Vec<(f64, f64)> {
    let b = planes.len() / c;
    let m = (b * hw) as f64;
    (0..c)
        .map(|ch| {
            let per_plane = (0..b).map(|n| planes[n * c + ch]);
            let mean = per_plane.clone().map(|p| p.0).sum::<f64>() / m;
            let m2: f64 = per_plane
                .map(|(sum, m2p)| m2p + hw as f64 * (sum / hw as f64 - mean).powi(2))
                .sum();
            (mean, (m2 / m).max(0.0))
        })
        .collect()
}

/// Per-channel `(mean, biased variance)` of a contiguous NCHW buffer, in one pass over memory
/// ([`plane_stats`] of each plane, rayon over planes, then [`combine_stats`]). (A
/// mean-then-deviations pair of passes over the whole channel read every activation twice from
/// memory.)
fn channel_stats(xv: &[f32], c: usize, hw: usize) -> Vec<(f64, f64)> {
    let planes: Vec<(f64, f64)> = xv.par_chunks(hw).map(plane_stats).collect();
    combine_stats(&planes, c, hw)
}

/// One batch-norm layer's per-channel affine map on the host, `y = x·a + c` (then ReLU where
/// asked), with what its backward pass needs.
#[derive(Clone, Debug)]
pub(crate) struct BnAffine {
    pub(crate) mode: BnMode,
    /// Values per channel the statistics cover (`B·H·W`).
    m: usize,
    mean: Vec<f32>,
    invstd: Vec<f32>,
    gamma: Vec<f32>,
    /// `γ·invstd`
    pub(crate) a: Vec<f32>,
    /// `β − mean·a`
    pub(crate) c: Vec<f32>,
}

impl BnAffine {
    /// The map of `bn` for a batch of `b` images of `hw` pixels: in [`BnMode::Train`] from the
    /// batch's per-channel `(mean, biased variance)` `stats` (the running statistics are updated
    /// with [`BN_MOMENTUM`] and the unbiased variance); in [`BnMode::Eval`] from the running
    /// statistics (`stats` unused).
    ///
    /// # Panics
    /// In training mode, if a channel has a single value (`b·hw ≤ 1`).
    pub(crate) fn new<const C: usize>(
        bn: BnParams<'_, C, Cpu>,
        mode: BnMode,
        stats: impl FnOnce() -> Vec<(f64, f64)>,
        b: usize,
        hw: usize,
    ) -> Self {
        let m = b * hw;
        let gamma = host(bn.weight);
        let beta = host(bn.bias);
        let (mean, invstd): (Vec<f32>, Vec<f32>) = match mode {
            BnMode::Train => {
                assert!(
                    m > 1,
                    "batch-norm in training mode needs more than one value per channel (got {m})"
                );
                let stats = stats();
                let mut rm = host(bn.running_mean);
                let mut rv = host(bn.running_var);
                let mom = BN_MOMENTUM as f64;
                for (ch, &(mu, var)) in stats.iter().enumerate() {
                    rm[ch] = ((1.0 - mom) * rm[ch] as f64 + mom * mu) as f32;
                    rv[ch] = ((1.0 - mom) * rv[ch] as f64 + mom * var * m as f64 / (m as f64 - 1.0))
                        as f32;
                }
                bn.running_mean.copy_from(&rm);
                bn.running_var.copy_from(&rv);
                stats
                    .iter()
                    .map(|&(mu, var)| (mu as f32, (1.0 / (var + BN_EPS as f64).sqrt()) as f32))
                    .unzip()
            }
            BnMode::Eval => {
                let rm = host(bn.running_mean);
                let rv = host(bn.running_var);
                (rm, rv.iter().map(|&v| 1.0 / (v + BN_EPS).sqrt()).collect())
            }
        };
        Self::from_stats(mode, m, (mean, invstd), gamma, &beta)
    }

    /// The map `y = x·a + c` with `a = γ·invstd`, `c = β − mean·a`, per channel.
    fn from_stats(
        mode: BnMode,
        m: usize,
        (mean, invstd): (Vec<f32>, Vec<f32>),
        gamma: Vec<f32>,
        beta: &[f32],
    ) -> Self {
        let a: Vec<f32> = (0..gamma.len()).map(|ch| gamma[ch] * invstd[ch]).collect();
        let c: Vec<f32> = (0..gamma.len())
            .map(|ch| beta[ch] - mean[ch] * a[ch])
            .collect();
        Self {
            mode,
            m,
            mean,
            invstd,
            gamma,
            a,
            c,
        }
    }

    /// A map from given per-channel `γ` and `β` with mean 0.1·ch and variance 1 + ch, for
    /// `m` values per channel (unit tests of the loops that use it).
    #[cfg(test)]
    pub(crate) fn test_affine(gamma: Vec<f32>, beta: Vec<f32>, mode: BnMode, m: usize) -> Self {
        let c = gamma.len();
        let mean: Vec<f32> = (0..c).map(|ch| 0.1 * ch as f32).collect();
        let invstd: Vec<f32> = (0..c).map(|ch| 1.0 / (1.0 + ch as f32).sqrt()).collect();
        Self::from_stats(mode, m, (mean, invstd), gamma, &beta)
    }

    /// `y = x·a + c` (then ReLU) over one plane of channel `ch`.
    #[inline]
    pub(crate) fn apply(&self, ch: usize, relu: bool, x: &[f32], y: &mut [f32]) {
        super::simd::wide(
            #[inline(always)]
            || self.apply_base(ch, relu, x, y),
        )
    }

    /// [`BnAffine::apply`] for the target the caller is compiled for.
    #[inline(always)]
    pub(crate) fn apply_base(&self, ch: usize, relu: bool, x: &[f32], y: &mut [f32]) {
        let (a, c) = (self.a[ch], self.c[ch]);
        if relu {
            y.iter_mut()
                .zip(x)
                .for_each(|(y, &x)| *y = (x * a + c).max(0.0));
        } else {
            y.iter_mut().zip(x).for_each(|(y, &x)| *y = x * a + c);
        }
    }

    /// One plane's backward sums `(Σ dy', Σ dy'·x)` of channel `ch`, where `dy'` is `dy` masked
    /// by the ReLU (pre-activation `x·a + c > 0`, recomputed from `x`) when `relu`.
    #[inline]
    pub(crate) fn plane_sums(&self, ch: usize, relu: bool, x: &[f32], dy: &[f32]) -> (f64, f64) {
        super::simd::wide(
            #[inline(always)]
            || self.plane_sums_base(ch, relu, x, dy),
        )
    }

    /// [`BnAffine::plane_sums`] for the target the caller is compiled for.
    #[inline(always)]
    pub(crate) fn plane_sums_base(
        &self,
        ch: usize,
        relu: bool,
        x: &[f32],
        dy: &[f32],
    ) -> (f64, f64) {
        if relu {
            let (ac, ccc) = (self.a[ch], self.c[ch]);
            sum2(x, dy, |x, dy| {
                let d = if x * ac + ccc > 0.0 { dy } else { 0.0 };
                (d, d * x)
            })
        } else {
            sum2(x, dy, |x, dy| (dy, dy * x))
        }
    }

    /// The backward pass's per-channel terms from every plane's [`BnAffine::plane_sums`]
    /// (`planes[n·C + ch]`, added images in order): the gradients of γ and β, and the
    /// coefficients of the input gradient ([`BnGrad::apply`]).
    pub(crate) fn grad(&self, planes: &[(f64, f64)]) -> BnGrad {
        let c = self.a.len();
        let b = planes.len() / c;
        let m = self.m as f64;
        let mut g = BnGrad {
            dgamma: Vec::with_capacity(c),
            dbeta: Vec::with_capacity(c),
            k: Vec::with_capacity(c),
            c0: Vec::with_capacity(c),
            c1: Vec::with_capacity(c),
            a: self.a.clone(),
            c: self.c.clone(),
        };
        for ch in 0..c {
            // Per channel: Σ dy' and Σ dy'·x̂ = invstd·(Σ dy'·x − mean·Σ dy').
            let (mut s1, mut sx) = (0.0f64, 0.0f64);
            for n in 0..b {
                let (p1, px) = planes[n * c + ch];
                s1 += p1;
                sx += px;
            }
            let (mu, is) = (self.mean[ch], self.invstd[ch]);
            let sxh = is as f64 * (sx - mu as f64 * s1);
            let k = self.gamma[ch] * is;
            // gx = k·(dy' − m1 − x̂·m2) = k·dy' + (k·(mu·is·m2 − m1)) − (k·is·m2)·x
            let (m1, m2) = match self.mode {
                BnMode::Train => ((s1 / m) as f32, (sxh / m) as f32),
                BnMode::Eval => (0.0, 0.0),
            };
            g.dgamma.push(sxh as f32);
            g.dbeta.push(s1 as f32);
            g.k.push(k);
            g.c0.push(k * (mu * is * m2 - m1));
            g.c1.push(k * is * m2);
        }
        g
    }
}

/// A batch-norm layer's backward terms per channel ([`BnAffine::grad`]).
pub(crate) struct BnGrad {
    pub(crate) dgamma: Vec<f32>,
    pub(crate) dbeta: Vec<f32>,
    k: Vec<f32>,
    c0: Vec<f32>,
    c1: Vec<f32>,
    a: Vec<f32>,
    c: Vec<f32>,
}

impl BnGrad {
    /// The input gradient over one plane of channel `ch`: `gx (+)= k·dy' + c0 − c1·x`, with `dy'`
    /// masked by the ReLU when `relu`; written (`add = false`) or added (`add = true`).
    #[inline]
    pub(crate) fn apply(
        &self,
        ch: usize,
        relu: bool,
        x: &[f32],
        dy: &[f32],
        gx: &mut [f32],
        add: bool,
    ) {
        super::simd::wide(
            #[inline(always)]
            || self.apply_base(ch, relu, x, dy, gx, add),
        )
    }

    /// [`BnGrad::apply`] for the target the caller is compiled for.
    #[inline(always)]
    pub(crate) fn apply_base(
        &self,
        ch: usize,
        relu: bool,
        x: &[f32],
        dy: &[f32],
        gx: &mut [f32],
        add: bool,
    ) {
        let (k, c0, c1) = (self.k[ch], self.c0[ch], self.c1[ch]);
        let (ac, ccc) = (self.a[ch], self.c[ch]);
        let it = gx.iter_mut().zip(x).zip(dy);
        match (relu, add) {
            (true, true) => it.for_each(|((g, &x), &dy)| {
                let d = if x * ac + ccc > 0.0 { dy } else { 0.0 };
                *g += k * d + c0 - c1 * x;
            }),
            (true, false) => it.for_each(|((g, &x), &dy)| {
                let d = if x * ac + ccc > 0.0 { dy } else { 0.0 };
                *g = k * d + c0 - c1 * x;
            }),
            (false, true) => it.for_each(|((g, &x), &dy)| *g += k * dy + c0 - c1 * x),
            (false, false) => it.for_each(|((g, &x), &dy)| *g = k * dy + c0 - c1 * x),
        }
    }

    /// Adds dγ and dβ to the gradients of the layer's weight (`wg`) and bias (`bg`).
    pub(crate) fn add_param_grads<S: Shape>(
        &self,
        grads: &mut Gradients<f32, Cpu>,
        wg: &impl Tensorlike<S, f32, Cpu>,
        bg: &impl Tensorlike<S, f32, Cpu>,
    ) -> Result<(), Err> {
        let gw = grads.get_or_alloc_mut(wg)?;
        gw.iter_mut().zip(&self.dgamma).for_each(|(g, d)| *g += d);
        let gb = grads.get_or_alloc_mut(bg)?;
        gb.iter_mut().zip(&self.dbeta).for_each(|(g, d)| *g += d);
        Ok(())
    }
}

/// Fast CPU [`super::OpsDevice::batch_norm2d`], with ReLU fused when `relu`.
///
/// # Shapes
/// `x: (B, C, H, W)` → `(B, C, H, W)`
pub fn batch_norm2d<const C: usize, T: Tape<f32, Cpu>>(
    x: Act<C, Cpu, T>,
    bn: BnParams<'_, C, Cpu>,
    mode: BnMode,
    relu: bool,
) -> Result<Act<C, Cpu, T>, Err> {
    let x = x.try_contiguous()?;
    let (x, mut tape) = x.split_tape();
    let (b, _, h, w) = *x.shape();
    let hw = h * w;
    let (wg, bg) = (bn.weight.ghost(), bn.bias.ghost());
    let xv = data(&x);
    let bn = BnAffine::new(bn, mode, || channel_stats(xv, C, hw), b, hw);
    let mut yv = vec![0.0f32; xv.len()];
    yv.par_chunks_mut(hw)
        .zip(xv.par_chunks(hw))
        .enumerate()
        .for_each(|(i, (y, x))| bn.apply(i % C, relu, x, y));
    let y = x.device().tensor_from_vec(yv, (b, Const::<C>, h, w));
    if <T as Tape<f32, Cpu>>::OWNS_TAPE {
        let (xg, yg) = (x.ghost(), y.ghost());
        let xk = x.clone();
        tape.add_backward_op(move |grads| {
            let xv = data(&xk);
            let gy = take_grad!(grads, &yg);
            let planes: Vec<(f64, f64)> = xv
                .par_chunks(hw)
                .zip(gy.par_chunks(hw))
                .enumerate()
                .map(|(i, (x, dy))| bn.plane_sums(i % C, relu, x, dy))
                .collect();
            let g = bn.grad(&planes);
            let gx = grads.get_or_alloc_mut(&xg)?;
            gx.par_chunks_mut(hw)
                .zip(xv.par_chunks(hw).zip(gy.par_chunks(hw)))
                .enumerate()
                .for_each(|(i, (gx, (x, dy)))| g.apply(i % C, relu, x, dy, gx, true));
            g.add_param_grads(grads, &wg, &bg)?;
            release_grad(gy)
        });
    }
    Ok(y.put_tape(tape))
}

/// Shared body of the two 2×2 pools. `pick` returns the output value and the index (0..4) of
/// the input that receives the gradient, or `None` for "all four, each ×0.25" (average).
fn pool2x2<const C: usize, T: Tape<f32, Cpu>>(
    x: Act<C, Cpu, T>,
    max: bool,
) -> Result<Act<C, Cpu, T>, Err> {
    let x = x.try_contiguous()?;
    let (x, mut tape) = x.split_tape();
    let (b, _, h, w) = *x.shape();
    let (ho, wo) = (out_size(h, 2, 2, 0), out_size(w, 2, 2, 0));
    let xv = data(&x);
    let mut yv = vec![0.0f32; b * C * ho * wo];
    let mut arg: Vec<u8> = if max { vec![0u8; yv.len()] } else { Vec::new() };
    let planes = yv.par_chunks_mut(ho * wo).zip(xv.par_chunks(h * w));
    if max {
        planes
            .zip(arg.par_chunks_mut(ho * wo))
            .for_each(|((y, x), arg)| {
                for oy in 0..ho {
                    for ox in 0..wo {
                        let i0 = 2 * oy * w + 2 * ox;
                        let cand = [x[i0], x[i0 + 1], x[i0 + w], x[i0 + w + 1]];
                        let mut best = 0;
                        for j in 1..4 {
                            if cand[j] > cand[best] {
                                best = j;
                            }
                        }
                        y[oy * wo + ox] = cand[best];
                        arg[oy * wo + ox] = best as u8;
                    }
                }
            });
    } else {
        planes.for_each(|(y, x)| {
            for oy in 0..ho {
                for ox in 0..wo {
                    let i0 = 2 * oy * w + 2 * ox;
                    y[oy * wo + ox] = 0.25 * (x[i0] + x[i0 + 1] + x[i0 + w] + x[i0 + w + 1]);
                }
            }
        });
    }
    let y = x.device().tensor_from_vec(yv, (b, Const::<C>, ho, wo));
    if <T as Tape<f32, Cpu>>::OWNS_TAPE {
        let (xg, yg) = (x.ghost(), y.ghost());
        tape.add_backward_op(move |grads| {
            let gy = take_grad!(grads, &yg);
            let gx = grads.get_or_alloc_mut(&xg)?;
            let planes = gx
                .par_chunks_mut(h * w)
                .zip(gy.par_chunks(ho * wo))
                .enumerate();
            planes.for_each(|(pi, (gx, gy))| {
                for oy in 0..ho {
                    for ox in 0..wo {
                        let i0 = 2 * oy * w + 2 * ox;
                        let d = gy[oy * wo + ox];
                        if max {
                            let j = arg[pi * ho * wo + oy * wo + ox] as usize;
                            gx[i0 + (j / 2) * w + (j % 2)] += d;
                        } else {
                            let d = 0.25 * d;
                            gx[i0] += d;
                            gx[i0 + 1] += d;
                            gx[i0 + w] += d;
                            gx[i0 + w + 1] += d;
                        }
                    }
                }
            });
            release_grad(gy)
        });
    }
    Ok(y.put_tape(tape))
}

/// Fast CPU [`super::OpsDevice::avg_pool2x2`].
///
/// # Shapes
/// `(B, C, H, W)` → `(B, C, H/2, W/2)`
pub fn avg_pool2x2<const C: usize, T: Tape<f32, Cpu>>(
    x: Act<C, Cpu, T>,
) -> Result<Act<C, Cpu, T>, Err> {
    pool2x2(x, false)
}

/// Fast CPU [`super::OpsDevice::max_pool2x2`]. Ties send the gradient to the first maximum
/// (row-major within the window), as PyTorch does.
///
/// # Shapes
/// `(B, C, H, W)` → `(B, C, H/2, W/2)`
pub fn max_pool2x2<const C: usize, T: Tape<f32, Cpu>>(
    x: Act<C, Cpu, T>,
) -> Result<Act<C, Cpu, T>, Err> {
    pool2x2(x, true)
}

/// Fast CPU [`super::OpsDevice::global_avg_pool`].
///
/// # Shapes
/// `(B, C, H, W)` → `(B, C)`
pub fn global_avg_pool<const C: usize, T: Tape<f32, Cpu>>(
    x: Act<C, Cpu, T>,
) -> Result<Pooled<C, Cpu, T>, Err> {
    let x = x.try_contiguous()?;
    let (x, mut tape) = x.split_tape();
    let (b, _, h, w) = *x.shape();
    let hw = h * w;
    assert!(hw > 0, "global average pooling of an empty plane");
    let xv = data(&x);
    let yv: Vec<f32> = xv
        .par_chunks(hw)
        .map(|p| (p.iter().map(|&v| v as f64).sum::<f64>() / hw as f64) as f32)
        .collect();
    let y = x.device().tensor_from_vec(yv, (b, Const::<C>));
    if <T as Tape<f32, Cpu>>::OWNS_TAPE {
        let (xg, yg) = (x.ghost(), y.ghost());
        tape.add_backward_op(move |grads| {
            let gy = take_grad!(grads, &yg);
            let gx = grads.get_or_alloc_mut(&xg)?;
            let inv = 1.0 / hw as f32;
            gx.par_chunks_mut(hw)
                .zip(gy.par_iter())
                .for_each(|(gx, &d)| {
                    let d = d * inv;
                    gx.iter_mut().for_each(|g| *g += d);
                });
            release_grad(gy)
        });
    }
    Ok(y.put_tape(tape))
}

/// Fast CPU [`super::OpsDevice::add_relu`]: `relu(a + b)` in one pass; the backward keeps only
/// the ReLU mask, one bit per element (a byte per element was a quarter of an activation per
/// residual block: 0.4 GB at the authors' 64×64 pretraining setting).
///
/// # Shapes
/// `a, b: (B, C, H, W)` → `(B, C, H, W)`
pub fn add_relu<const C: usize, T: Tape<f32, Cpu>>(
    a: Act<C, Cpu, T>,
    b: Act<C, Cpu, T>,
) -> Result<Act<C, Cpu, T>, Err> {
    assert_eq!(a.shape(), b.shape(), "add_relu: shapes differ");
    let (a, ta) = a.try_contiguous()?.split_tape();
    let (b, tb) = b.try_contiguous()?.split_tape();
    let mut tape = ta.merge(tb);
    let (av, bv) = (data(&a), data(&b));
    let mut yv = vec![0.0f32; av.len()];
    // Chunks of CH elements = CH / 64 mask words; CH is a multiple of 64.
    const CH: usize = 1 << 14;
    const WORDS: usize = CH / 64;
    let owns = <T as Tape<f32, Cpu>>::OWNS_TAPE;
    let mut mask: Vec<u64> = vec![0; if owns { yv.len().div_ceil(64) } else { 0 }];
    let relu = |y: &mut [f32], a: &[f32], b: &[f32]| {
        y.iter_mut()
            .zip(a.iter().zip(b))
            .for_each(|(y, (&a, &b))| *y = (a + b).max(0.0));
    };
    if owns {
        yv.par_chunks_mut(CH)
            .zip(av.par_chunks(CH).zip(bv.par_chunks(CH)))
            .zip(mask.par_chunks_mut(WORDS))
            .for_each(|((y, (a, b)), m)| {
                relu(y, a, b);
                for (word, y64) in m.iter_mut().zip(y.chunks(64)) {
                    *word = y64
                        .iter()
                        .enumerate()
                        .fold(0u64, |w, (i, &v)| w | (u64::from(v > 0.0) << i));
                }
            });
    } else {
        yv.par_chunks_mut(CH)
            .zip(av.par_chunks(CH).zip(bv.par_chunks(CH)))
            .for_each(|(y, (a, b))| relu(y, a, b));
    }
    let y = a.device().tensor_from_vec(yv, *a.shape());
    if owns {
        let (ag, bg, yg) = (a.ghost(), b.ghost(), y.ghost());
        tape.add_backward_op(move |grads| {
            let gy = take_grad!(grads, &yg);
            for g in [&ag, &bg] {
                let gx = grads.get_or_alloc_mut(g)?;
                gx.par_chunks_mut(CH)
                    .zip(gy.par_chunks(CH))
                    .zip(mask.par_chunks(WORDS))
                    .for_each(|((gx, gy), m)| {
                        for ((gx, gy), &word) in gx.chunks_mut(64).zip(gy.chunks(64)).zip(m) {
                            for (i, (g, &d)) in gx.iter_mut().zip(gy).enumerate() {
                                *g += if (word >> i) & 1 != 0 { d } else { 0.0 };
                            }
                        }
                    });
            }
            release_grad(gy)
        });
    }
    Ok(y.put_tape(tape))
}
