//! Direct 3×3, stride-1, padding-1 convolution with an AVX-512 kernel: no im2col matrix, no
//! GEMM packing, no col2im scatter.
//!
//! Layout: each input channel is copied into a zero-bordered plane of width `wp = w + 2`
//! ([`Pad`]); the output is computed in "padded-width" order, index `i = oy·wp + ox`, where the
//! tap `(ky, kx)` of output `i` is input `i + ky·wp + kx` of the padded plane, one constant offset
//! per tap. So one vector of 16 consecutive outputs reads 16 consecutive inputs per tap, and the
//! two columns `ox ∈ {w, w+1}` of each row are junk that [`unpad_add`] / [`unpad_into`] drop.
//!
//! Kernel: 3 vectors (48 outputs) × 8 output channels = 24 accumulators; per input channel and
//! tap, 3 loads, 8 weight broadcasts, 24 FMAs. The input-gradient of the same convolution is the
//! same kernel on the padded output gradient with the weights flipped and transposed
//! ([`pack_weights`] with `transpose = true`).
//!
//! bf16 ([`Weights::Bf16`], precision `bf16`): the same kernel with `vdpbf16ps` on planes that
//! hold two input channels per pixel as a bf16 pair ([`pad_pairs_into`]), so each load and each
//! weight broadcast carries two channels and the loop over input channels is half as long.
//!
//! Used by [`super::cpu::conv2d`] when the CPU has AVX-512F (checked at run time); the
//! im2col + gemm path stays for other geometries and CPUs, and for comparison
//! ([`super::cpu::ConvRoute`]).

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

/// Output channels per kernel block.
pub const OB: usize = 8;
/// Vectors of 16 outputs per kernel call.
const NV: usize = 3;

/// Whether the direct kernel can run on this CPU.
pub fn available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512f")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Geometry of the padded planes of one `h × w` image.
#[derive(Clone, Copy, Debug)]
pub struct Pad {
    pub h: usize,
    pub w: usize,
    /// Padded row width, `w + 2`.
    pub wp: usize,
    /// Floats per padded input plane: `(h + 2)·wp`, plus the 2 that the last junk outputs'
    /// taps reach past it (always zero).
    pub plane: usize,
    /// Outputs per channel in padded-width order, `h·wp`.
    pub out: usize,
}

impl Pad {
    pub fn new(h: usize, w: usize) -> Self {
        let wp = w + 2;
        Self {
            h,
            w,
            wp,
            plane: (h + 2) * wp + 2,
            out: h * wp,
        }
    }
}

/// Rounds `n` up to a multiple of [`OB`].
pub fn ceil_ob(n: usize) -> usize {
    n.div_ceil(OB) * OB
}

/// Copies `c` planes of `h × w` from `x` into zero-bordered padded planes in `xp`
/// (`c · pad.plane` floats).
pub fn pad_into(pad: &Pad, c: usize, x: &[f32], xp: &mut [f32]) {
    assert!(x.len() >= c * pad.h * pad.w && xp.len() >= c * pad.plane);
    assert!(available(), "direct conv needs AVX-512F");
    // SAFETY: AVX-512F checked; lengths checked above.
    unsafe { pad_planes(pad, c, x, xp) }
}

#[cfg_attr(target_arch = "x86_64", target_feature(enable = "avx512f"))]
unsafe fn pad_planes(pad: &Pad, c: usize, x: &[f32], xp: &mut [f32]) {
    // SAFETY: the caller runs on a CPU with AVX-512F (checked by `available()`); every masked load
    // and store stays inside `x` and `xp`, whose lengths the caller sized from `pad`.
    unsafe {
        let (h, w, wp) = (pad.h, pad.w, pad.wp);
        for ch in 0..c {
            let dst = &mut xp[ch * pad.plane..][..pad.plane];
            let src = &x[ch * h * w..][..h * w];
            dst[..wp + 1].iter_mut().for_each(|v| *v = 0.0);
            for iy in 0..h {
                let row = (iy + 1) * wp + 1;
                row_op(&src[iy * w..][..w], &mut dst[row..row + w], false);
                // this row's right border and the next row's left border
                dst[row + w] = 0.0;
                dst[row + w + 1] = 0.0;
            }
            dst[(h + 1) * wp + 1..].iter_mut().for_each(|v| *v = 0.0);
        }
    }
}

/// `y[o] (h × w) = yp[o]` without the junk columns, for `o < n`.
pub fn unpad_into(pad: &Pad, n: usize, yp: &[f32], y: &mut [f32]) {
    assert!(yp.len() >= n * pad.out && y.len() >= n * pad.h * pad.w);
    assert!(available(), "direct conv needs AVX-512F");
    // SAFETY: AVX-512F checked; lengths checked above.
    unsafe { unpad(pad, n, yp, y, false) }
}

/// `y[o] (h × w) += yp[o]` without the junk columns, for `o < n`.
pub fn unpad_add(pad: &Pad, n: usize, yp: &[f32], y: &mut [f32]) {
    assert!(yp.len() >= n * pad.out && y.len() >= n * pad.h * pad.w);
    assert!(available(), "direct conv needs AVX-512F");
    // SAFETY: AVX-512F checked; lengths checked above.
    unsafe { unpad(pad, n, yp, y, true) }
}

#[cfg_attr(target_arch = "x86_64", target_feature(enable = "avx512f"))]
unsafe fn unpad(pad: &Pad, n: usize, yp: &[f32], y: &mut [f32], add: bool) {
    // SAFETY: AVX-512F is present (the caller checked `available()`); rows are copied within `yp`
    // and `y`, sized from `pad` by the caller.
    unsafe {
        let (h, w, wp) = (pad.h, pad.w, pad.wp);
        for o in 0..n {
            for oy in 0..h {
                let src = &yp[o * pad.out + oy * wp..][..w];
                let dst = &mut y[(o * h + oy) * w..][..w];
                row_op(src, dst, add);
            }
        }
    }
}

/// `dst = src` or `dst += src` (equal lengths) in masked 16-lane vectors, inlined into the
/// plane loops above: the rows here are 6–66 floats, where a `memcpy`/`memset` call per row
/// cost more than the copy (15 % of a ResNet-32 step with library calls, 7 % as a call per row).
#[cfg(target_arch = "x86_64")]
#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn row_op(src: &[f32], dst: &mut [f32], add: bool) {
    // SAFETY: the caller runs on a CPU with AVX-512F; every lane is masked to `i < n`, the shorter
    // of `src` and `dst`.
    unsafe {
        let n = src.len().min(dst.len());
        let (s, d) = (src.as_ptr(), dst.as_mut_ptr());
        let mut i = 0;
        while i < n {
            let m = lane_mask(i, n);
            let v = _mm512_maskz_loadu_ps(m, s.wrapping_add(i));
            let v = if add {
                _mm512_add_ps(v, _mm512_maskz_loadu_ps(m, d.wrapping_add(i)))
            } else {
                v
            };
            _mm512_mask_storeu_ps(d.wrapping_add(i), m, v);
            i += 16;
        }
    }
}

#[cfg(not(target_arch = "x86_64"))]
unsafe fn row_op(src: &[f32], dst: &mut [f32], add: bool) {
    for (d, s) in dst.iter_mut().zip(src) {
        *d = if add { *d + s } else { *s };
    }
}

/// Packs a 3×3 weight `(O, C, 3, 3)` for the kernel: `[block][cin][tap][OB]`, output channels
/// padded with zeros to a multiple of [`OB`].
///
/// `transpose = false`: the forward convolution (`cin = C`, `cout = O`).
/// `transpose = true`: the input gradient, a convolution of the output gradient (`cin = O`,
/// `cout = C`) with the weights flipped in space: `w'[c][o][ky][kx] = w[o][c][2 − ky][2 − kx]`.
pub fn pack_weights(w: &[f32], o: usize, c: usize, transpose: bool) -> Vec<f32> {
    let (cin, cout) = if transpose { (o, c) } else { (c, o) };
    let blocks = ceil_ob(cout) / OB;
    let mut p = vec![0.0f32; blocks * cin * 9 * OB];
    for b in 0..blocks {
        for ci in 0..cin {
            for t in 0..9 {
                for j in 0..OB {
                    let co = b * OB + j;
                    if co >= cout {
                        continue;
                    }
                    let v = if transpose {
                        // output channel co = c, input channel ci = o, flipped tap
                        w[(ci * c + co) * 9 + (8 - t)]
                    } else {
                        w[(co * c + ci) * 9 + t]
                    };
                    p[((b * cin + ci) * 9 + t) * OB + j] = v;
                }
            }
        }
    }
    p
}

/// `yp[co] (padded-width, co < ceil_ob(cout)) = Σ_ci Σ_tap w · xp[ci]` for one image.
///
/// `xp`: `cin` padded planes; `wpk`: [`pack_weights`] output; `yp`: `ceil_ob(cout) · pad.out`.
///
/// # Panics
/// If the buffers are too short, or the CPU lacks AVX-512F.
pub fn conv3x3(pad: &Pad, cin: usize, cout: usize, xp: &[f32], wpk: &[f32], yp: &mut [f32]) {
    assert!(available(), "direct conv needs AVX-512F");
    for_blocks(pad, (cin, cout), (xp.len(), wpk.len()), yp, |b, yb, i0| {
        let wb = &wpk[b * cin * 9 * OB..][..cin * 9 * OB];
        // SAFETY: AVX-512F checked above; every load and store is masked to the valid range,
        // which `for_blocks`'s asserts and `Pad::plane` bound (see `block`).
        #[cfg(target_arch = "x86_64")]
        unsafe {
            block(pad, cin, xp, wb, yb, i0)
        };
    });
}

/// Checks the buffers of a direct convolution reading `planes` padded planes, with `weights`
/// packed elements, into `yp`; then calls `f(block, yb, i0)` for every output-channel block
/// (`yb`: its `OB` padded-width planes) and every stretch of `NV·16` outputs from `i0`.
fn for_blocks(
    pad: &Pad,
    (planes, cout): (usize, usize),
    (xp_len, weights): (usize, usize),
    yp: &mut [f32],
    mut f: impl FnMut(usize, &mut [f32], usize),
) {
    let blocks = ceil_ob(cout) / OB;
    assert!(
        xp_len >= planes * pad.plane,
        "direct conv: input buffer too short"
    );
    assert!(
        weights >= blocks * planes * 9 * OB,
        "direct conv: weights too short"
    );
    assert!(
        yp.len() >= blocks * OB * pad.out,
        "direct conv: output buffer too short"
    );
    for b in 0..blocks {
        let yb = &mut yp[b * OB * pad.out..][..OB * pad.out];
        let mut i0 = 0;
        while i0 < pad.out {
            f(b, yb, i0);
            i0 += NV * 16;
        }
    }
}

/// Lane mask for the 16 outputs starting at `i` of `n`.
#[inline(always)]
fn lane_mask(i: usize, n: usize) -> u16 {
    if i + 16 <= n {
        0xFFFF
    } else if i < n {
        ((1u32 << (n - i)) - 1) as u16
    } else {
        0
    }
}

/// Lane masks of the `NV` vectors of outputs from `i0` (shared by both kernels).
#[inline(always)]
fn vector_masks(pad: &Pad, i0: usize) -> [u16; NV] {
    std::array::from_fn(|v| lane_mask(i0 + 16 * v, pad.out))
}

/// Offset of tap `t = 3·ky + kx` in a padded plane.
#[inline(always)]
fn tap_offsets(pad: &Pad) -> [usize; 9] {
    std::array::from_fn(|t| (t / 3) * pad.wp + t % 3)
}

/// Stores one kernel call's accumulators: channel `j` of the block, outputs `i0 + 16·v ..`.
#[cfg(target_arch = "x86_64")]
#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn store_block(
    pad: &Pad,
    acc: &[[__m512; OB]; NV],
    m: [u16; NV],
    yb: &mut [f32],
    i0: usize,
) {
    let ybase = yb.as_mut_ptr();
    for (v, accv) in acc.iter().enumerate() {
        for (j, a) in accv.iter().enumerate() {
            // SAFETY: AVX-512F is present (checked by the kernel's callers); lanes outside
            // the mask `m[v]` are not written, and the unmasked ones lie inside `yb`
            // (valid outputs `i0 + 16·v + lane < pad.out` of channel `j` of the block).
            unsafe {
                _mm512_mask_storeu_ps(ybase.wrapping_add(j * pad.out + i0 + 16 * v), m[v], *a)
            };
        }
    }
}

/// One kernel call: outputs `[i0, i0 + 48)` of the 8 channels of one block.
///
/// Reads `xp[ci·plane + i + ky·wp + kx]` for valid outputs `i < out`: at most
/// `(h − 1)·wp + wp − 1 + 2·wp + 2 = (h + 2)·wp + 1 < plane`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn block(pad: &Pad, cin: usize, xp: &[f32], wb: &[f32], yb: &mut [f32], i0: usize) {
    // SAFETY: AVX-512F is present; every load reads at most `xp[(h + 2)·wp + 1]` < `plane` (see the
    // bound above) and `wb`/`yb` are sized by `for_blocks`.
    unsafe {
        let (m, offs) = (vector_masks(pad, i0), tap_offsets(pad));
        let mut acc = [[_mm512_setzero_ps(); OB]; NV];
        let xbase = xp.as_ptr();
        let wbase = wb.as_ptr();
        for ci in 0..cin {
            // wrapping_add: the masked-off lanes of the last vectors may point past the buffer
            // (never dereferenced).
            let xc = xbase.wrapping_add(ci * pad.plane + i0);
            let wc = wbase.add(ci * 9 * OB);
            for (t, &off) in offs.iter().enumerate() {
                let x0 = _mm512_maskz_loadu_ps(m[0], xc.wrapping_add(off));
                let x1 = _mm512_maskz_loadu_ps(m[1], xc.wrapping_add(off + 16));
                let x2 = _mm512_maskz_loadu_ps(m[2], xc.wrapping_add(off + 32));
                let wt = wc.add(t * OB);
                #[allow(clippy::needless_range_loop)] // j indexes three accumulator rows
                for j in 0..OB {
                    let wv = _mm512_set1_ps(*wt.add(j));
                    acc[0][j] = _mm512_fmadd_ps(x0, wv, acc[0][j]);
                    acc[1][j] = _mm512_fmadd_ps(x1, wv, acc[1][j]);
                    acc[2][j] = _mm512_fmadd_ps(x2, wv, acc[2][j]);
                }
            }
        }
        store_block(pad, &acc, m, yb, i0);
    }
}

/// Weights packed for one direction of the direct convolution: f32 ([`pack_weights`]) or bf16
/// pairs of input channels ([`Weights::pack`] with `bf16 = true`), and the kernel that uses them.
pub enum Weights {
    F32(Vec<f32>),
    /// `[block][cin pair q][tap][OB]`: `(w[.., 2q, tap], w[.., 2q + 1, tap])` as bf16 bits, the
    /// even channel in the low half (zero past `cin`).
    Bf16(Vec<u32>),
}

impl Weights {
    /// Packs `w` `(O, C, 3, 3)` for the forward convolution (`transpose = false`) or the input
    /// gradient (`transpose = true`), in f32 or as bf16 pairs.
    pub fn pack(w: &[f32], o: usize, c: usize, transpose: bool, bf16: bool) -> Self {
        let p = pack_weights(w, o, c, transpose);
        if !bf16 {
            return Weights::F32(p);
        }
        let (cin, cout) = if transpose { (o, c) } else { (c, o) };
        let (blocks, cp) = (ceil_ob(cout) / OB, cin.div_ceil(2));
        let mut q = vec![0u32; blocks * cp * 9 * OB];
        for b in 0..blocks {
            for ci in 0..cin {
                for t in 0..9 {
                    for j in 0..OB {
                        let v = super::bf16::to_bf16(p[((b * cin + ci) * 9 + t) * OB + j]) as u32;
                        q[((b * cp + ci / 2) * 9 + t) * OB + j] |= v << (16 * (ci % 2));
                    }
                }
            }
        }
        Weights::Bf16(q)
    }

    /// Input planes the kernel reads for `cin` channels: `cin` f32 planes, or `⌈cin/2⌉` planes
    /// of channel pairs.
    pub fn planes(&self, cin: usize) -> usize {
        match self {
            Weights::F32(_) => cin,
            Weights::Bf16(_) => cin.div_ceil(2),
        }
    }

    /// Pads `cin` planes of `x` into `xp` ([`pad_into`], or [`pad_pairs_into`] for bf16), then
    /// `yp = conv(xp)` ([`conv3x3`] or its bf16 twin).
    pub fn conv(
        &self,
        pad: &Pad,
        (cin, cout): (usize, usize),
        x: &[f32],
        xp: &mut [f32],
        yp: &mut [f32],
    ) {
        match self {
            Weights::F32(w) => {
                pad_into(pad, cin, x, xp);
                conv3x3(pad, cin, cout, xp, w, yp);
            }
            Weights::Bf16(w) => {
                pad_pairs_into(pad, cin, x, xp);
                conv3x3_bf16(pad, cin.div_ceil(2), cout, xp, w, yp);
            }
        }
    }
}

/// Whether the bf16 direct kernel can run on this CPU (AVX-512F and AVX-512 BF16).
pub fn available_bf16() -> bool {
    available() && super::bf16::available()
}

/// Like [`pad_into`], but each padded plane `q` holds channels `2q` and `2q + 1` as bf16 pairs
/// (the bits of one `u32` per pixel, stored in the f32 buffer; the odd channel of an odd `c` is
/// zero): `⌈c/2⌉ · pad.plane` elements of `xp`.
pub fn pad_pairs_into(pad: &Pad, c: usize, x: &[f32], xp: &mut [f32]) {
    assert!(x.len() >= c * pad.h * pad.w && xp.len() >= c.div_ceil(2) * pad.plane);
    assert!(available_bf16(), "bf16 direct conv needs AVX-512 BF16");
    // SAFETY: AVX-512 BF16 checked; lengths checked above.
    unsafe { pad_pair_planes(pad, c, x, xp) }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
unsafe fn pad_pair_planes(pad: &Pad, c: usize, x: &[f32], xp: &mut [f32]) {
    // SAFETY: AVX-512F/BW/BF16 are present (checked by `available_bf16()`); the loads and stores stay
    // inside `x` and `xp`, sized from `pad` by the caller.
    unsafe {
        let (h, w, wp) = (pad.h, pad.w, pad.wp);
        let hw = h * w;
        for q in 0..c.div_ceil(2) {
            let dst = &mut xp[q * pad.plane..][..pad.plane];
            let lo_plane = &x[2 * q * hw..][..hw];
            let hi_plane = (2 * q + 1 < c).then(|| &x[(2 * q + 1) * hw..][..hw]);
            dst[..wp + 1].iter_mut().for_each(|v| *v = 0.0);
            for iy in 0..h {
                let row = (iy + 1) * wp + 1;
                let d = dst[row..row + w].as_mut_ptr();
                let lo = lo_plane[iy * w..][..w].as_ptr();
                let hi = hi_plane.map(|p| p[iy * w..][..w].as_ptr());
                let mut i = 0;
                while i < w {
                    let m = lane_mask(i, w);
                    let a = _mm512_maskz_loadu_ps(m, lo.add(i));
                    let b = match hi {
                        Some(hi) => _mm512_maskz_loadu_ps(m, hi.add(i)),
                        None => _mm512_setzero_ps(),
                    };
                    let a: __m256i = std::mem::transmute(_mm512_cvtneps_pbh(a));
                    let b: __m256i = std::mem::transmute(_mm512_cvtneps_pbh(b));
                    let v = _mm512_or_si512(
                        _mm512_cvtepu16_epi32(a),
                        _mm512_slli_epi32::<16>(_mm512_cvtepu16_epi32(b)),
                    );
                    _mm512_mask_storeu_epi32(d.add(i) as *mut i32, m, v);
                    i += 16;
                }
                dst[row + w] = 0.0;
                dst[row + w + 1] = 0.0;
            }
            dst[(h + 1) * wp + 1..].iter_mut().for_each(|v| *v = 0.0);
        }
    }
}

#[cfg(not(target_arch = "x86_64"))]
unsafe fn pad_pair_planes(_: &Pad, _: usize, _: &[f32], _: &mut [f32]) {
    unreachable!("bf16 direct conv needs AVX-512 BF16")
}

/// [`conv3x3`] on channel-pair planes ([`pad_pairs_into`]) and [`Weights::Bf16`]: `cp` planes
/// of pairs in, f32 out (`vdpbf16ps`: bf16 products, f32 sums).
pub fn conv3x3_bf16(pad: &Pad, cp: usize, cout: usize, xp: &[f32], wpk: &[u32], yp: &mut [f32]) {
    assert!(available_bf16(), "bf16 direct conv needs AVX-512 BF16");
    for_blocks(pad, (cp, cout), (xp.len(), wpk.len()), yp, |b, yb, i0| {
        let wb = &wpk[b * cp * 9 * OB..][..cp * 9 * OB];
        // SAFETY: as in `conv3x3`: AVX-512 BF16 checked, every access masked to the range
        // `for_blocks` bounds.
        #[cfg(target_arch = "x86_64")]
        unsafe {
            block_bf16(pad, cp, xp, wb, yb, i0)
        };
    });
}

/// [`block`] with `vdpbf16ps`: each lane of an input load is a pair of channels.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
unsafe fn block_bf16(pad: &Pad, cp: usize, xp: &[f32], wb: &[u32], yb: &mut [f32], i0: usize) {
    // SAFETY: AVX-512F/BW/BF16 are present; the same bounds as [`block`], over channel pairs.
    unsafe {
        let (m, offs) = (vector_masks(pad, i0), tap_offsets(pad));
        let mut acc = [[_mm512_setzero_ps(); OB]; NV];
        let xbase = xp.as_ptr() as *const i32;
        let wbase = wb.as_ptr();
        for q in 0..cp {
            let xc = xbase.wrapping_add(q * pad.plane + i0);
            let wc = wbase.add(q * 9 * OB);
            for (t, &off) in offs.iter().enumerate() {
                let x: [__m512bh; NV] = std::array::from_fn(|v| {
                    std::mem::transmute(_mm512_maskz_loadu_epi32(
                        m[v],
                        xc.wrapping_add(off + 16 * v),
                    ))
                });
                let wt = wc.add(t * OB);
                #[allow(clippy::needless_range_loop)] // j indexes three accumulator rows
                for j in 0..OB {
                    let wv: __m512bh = std::mem::transmute(_mm512_set1_epi32(*wt.add(j) as i32));
                    for v in 0..NV {
                        acc[v][j] = _mm512_dpbf16_ps(acc[v][j], x[v], wv);
                    }
                }
            }
        }
        store_block(pad, &acc, m, yb, i0);
    }
}
