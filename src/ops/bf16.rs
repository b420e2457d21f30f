//! bf16 matrix product for the convolution GEMMs: inputs rounded from f32 to bf16 (round to
//! nearest even), products and sums in f32, f32 output; weights stay f32 (the master copy) and
//! are rounded when packed.
//!
//! Kernel: AVX-512 BF16 `vdpbf16ps`, which multiplies pairs of bf16 along the reduction
//! dimension and adds both products to one f32 lane. Operands are packed as such pairs, one
//! `u32` per pair (low half: the even index):
//!
//! - `A` (`m × k`, the vector side; `m` runs along the 16 lanes of a register): panels of
//!   `mr` = 32 rows (16 where `m ≤ 16`), `panel[p][lane] = (A[lane][2p], A[lane][2p+1])`,
//!   packed per block of [`KCP`] pairs while the product runs;
//! - `B` (`k × n`, the broadcast side): `packed[j][p] = (B[2p][j], B[2p+1][j])`
//!   ([`PackedB`]; weights are packed once per convolution call and shared by every image).
//!
//! Micro-tile: 32 rows × 8 columns or 16 rows × 16 columns of accumulators (16 registers); a
//! portable kernel with the same rounding and pair order runs where the CPU lacks AVX-512 BF16.
//! The destination is column-major (`dst[i + j·ld]`); a row-major product is the transposed
//! one.

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

/// Rows per micro-tile at most: two vectors of 16 (rows beyond `m` are zero in the panel and
/// masked out of the stores).
const MR: usize = 32;
/// Columns per micro-tile with `mr` rows: 16 accumulator registers either way.
fn nr(mr: usize) -> usize {
    256 / mr
}
/// Pairs of the reduction dimension per block (a panel of `MR × KCP` pairs is 16 KiB).
const KCP: usize = 128;

/// Whether the AVX-512 BF16 kernel can run on this CPU (otherwise the portable kernel runs).
pub fn available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512bw")
            && std::arch::is_x86_feature_detected!("avx512bf16")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Which kernels the bf16 routines run: `Best` = the AVX-512 BF16 ones where the CPU has them
/// (the portable ones elsewhere), `Portable` = the portable ones everywhere (what a CPU without
/// AVX-512 BF16 runs; tests ask for it to check that route on any CPU). Both round the same way
/// and sum in the same pair order.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Kernel {
    #[default]
    Best,
    Portable,
}

impl Kernel {
    /// Whether this choice runs the AVX-512 BF16 kernels on this CPU.
    pub fn simd(self) -> bool {
        self == Kernel::Best && available()
    }
}

/// `x` rounded to bf16 (nearest, ties to even), as its 16 bits. NaN stays NaN.
#[inline]
pub fn to_bf16(x: f32) -> u16 {
    let b = x.to_bits();
    if x.is_nan() {
        return ((b >> 16) | 0x40) as u16;
    }
    ((b + 0x7FFF + ((b >> 16) & 1)) >> 16) as u16
}

/// The f32 value of bf16 bits.
#[inline]
pub fn from_bf16(h: u16) -> f32 {
    f32::from_bits((h as u32) << 16)
}

/// `x` rounded to bf16 and back: the value the product computes with.
#[inline]
pub fn round_bf16(x: f32) -> f32 {
    from_bf16(to_bf16(x))
}

#[inline]
fn pair(lo: f32, hi: f32) -> u32 {
    to_bf16(lo) as u32 | (to_bf16(hi) as u32) << 16
}

/// A read-only f32 matrix in a slice: element `(r, c)` at `data[r·rs + c·cs]`.
#[derive(Clone, Copy)]
pub struct Mat<'a> {
    pub data: &'a [f32],
    pub rs: usize,
    pub cs: usize,
}

impl<'a> Mat<'a> {
    pub fn new(data: &'a [f32], rs: usize, cs: usize) -> Self {
        Self { data, rs, cs }
    }

    /// Panics unless every element of a `rows × cols` matrix lies in the slice.
    fn check(&self, rows: usize, cols: usize, what: &str) {
        if rows > 0 && cols > 0 {
            let last = (rows - 1) * self.rs + (cols - 1) * self.cs;
            assert!(
                last < self.data.len(),
                "bf16 matmul: {what} ({rows}×{cols}, strides {}/{}) exceeds its slice of {}",
                self.rs,
                self.cs,
                self.data.len()
            );
        }
    }

    #[inline]
    fn at(&self, r: usize, c: usize) -> f32 {
        self.data[r * self.rs + c * self.cs]
    }
}

/// The broadcast operand `B` (`k × n`) packed as bf16 pairs, `data[j·kp + p]`.
#[derive(Default)]
pub struct PackedB {
    data: Vec<u32>,
    k: usize,
    n: usize,
    kp: usize,
}

impl PackedB {
    /// Packs `b` (`k × n`) with `kernel`'s rounding routine.
    pub fn new(kernel: Kernel, k: usize, n: usize, b: Mat) -> Self {
        let mut p = Self::default();
        p.repack(kernel, k, n, b);
        p
    }

    /// Packs `b` (`k × n`) in place of the current contents, reusing the allocation.
    pub fn repack(&mut self, kernel: Kernel, k: usize, n: usize, b: Mat) {
        b.check(k, n, "B");
        let kp = k.div_ceil(2);
        let data = &mut self.data;
        data.resize(n * kp, 0);
        for (j, col) in data.chunks_mut(kp.max(1)).enumerate().take(n) {
            if b.rs == 1 {
                pack_row(kernel.simd(), &b.data[j * b.cs..][..k], col);
            } else {
                for (p, d) in col.iter_mut().enumerate() {
                    let hi = if 2 * p + 1 < k {
                        b.at(2 * p + 1, j)
                    } else {
                        0.0
                    };
                    *d = pair(b.at(2 * p, j), hi);
                }
            }
        }
        (self.k, self.n, self.kp) = (k, n, kp);
    }

    /// Packs a `k × n` operand given as bf16 bits: `fill(rows, ld)` writes column `j` of `B`
    /// (its `k` values, rounded to bf16) to `rows[j·ld..][..k]`, `ld = 2·⌈k/2⌉`; the element
    /// past an odd `k` is zeroed here. The pairs are the `u16` view of the packed `u32`s, even
    /// index in the low half, which is how a little-endian CPU lays them out (on a big-endian
    /// one the halves are swapped back after `fill`).
    pub fn fill_rows(&mut self, k: usize, n: usize, fill: impl FnOnce(&mut [u16], usize)) {
        let kp = k.div_ceil(2);
        self.data.resize(n * kp, 0);
        (self.k, self.n, self.kp) = (k, n, kp);
        let len = 2 * self.data.len();
        // SAFETY: the u32 buffer is `len` u16s long, u16's alignment divides u32's, and every
        // bit pattern is a valid u16 and u32.
        let rows =
            unsafe { std::slice::from_raw_parts_mut(self.data.as_mut_ptr() as *mut u16, len) };
        fill(rows, 2 * kp);
        if k % 2 == 1 {
            (0..n).for_each(|j| rows[j * 2 * kp + k] = 0);
        }
        if cfg!(target_endian = "big") {
            self.data.iter_mut().for_each(|v| *v = v.rotate_left(16));
        }
    }

    pub fn k(&self) -> usize {
        self.k
    }

    pub fn n(&self) -> usize {
        self.n
    }
}

/// `out[p] = (row[2p], row[2p+1])` as bf16 pairs (`row[k] = 0` past the end).
fn pack_row(simd: bool, row: &[f32], out: &mut [u32]) {
    let full = (row.len() / 32).min(out.len() / 16);
    #[cfg(target_arch = "x86_64")]
    if simd {
        // SAFETY: AVX-512 BF16 checked; `full` 32-float chunks lie in `row` and 16-pair chunks
        // in `out`.
        unsafe { pack_row_simd(row, out, full) };
        for (p, d) in out.iter_mut().enumerate().skip(full * 16) {
            *d = pair_at(row, p);
        }
        return;
    }
    for (p, d) in out.iter_mut().enumerate() {
        *d = pair_at(row, p);
    }
}

#[inline]
fn pair_at(row: &[f32], p: usize) -> u32 {
    let lo = row.get(2 * p).copied().unwrap_or(0.0);
    let hi = row.get(2 * p + 1).copied().unwrap_or(0.0);
    pair(lo, hi)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
unsafe fn pack_row_simd(row: &[f32], out: &mut [u32], chunks: usize) {
    // SAFETY: AVX-512F/BW/BF16 are present (checked by `Kernel::simd`); the loads read `row[..16·chunks]`
    // and the stores write `out[..8·chunks]`, which the caller sized.
    unsafe {
        let (s, d) = (row.as_ptr(), out.as_mut_ptr());
        for c in 0..chunks {
            let lo = _mm512_loadu_ps(s.add(32 * c));
            let hi = _mm512_loadu_ps(s.add(32 * c + 16));
            // 32 bf16 in order: element 2p in the low half of pair p
            let v: __m512i = std::mem::transmute(_mm512_cvtne2ps_pbh(hi, lo));
            _mm512_storeu_si512(d.add(16 * c) as *mut _, v);
        }
    }
}

/// Runs `f` on `x` rounded to bf16 (a thread-local buffer of bits).
pub fn with_bf16<R>(kernel: Kernel, x: &[f32], f: impl FnOnce(&[u16]) -> R) -> R {
    XBF16.with(|buf| {
        let mut buf = buf.borrow_mut();
        buf.resize(x.len(), 0);
        to_bf16_slice(kernel, x, &mut buf);
        f(&buf)
    })
}

/// `dst[i] = to_bf16(src[i])` (equal lengths).
pub fn to_bf16_slice(kernel: Kernel, src: &[f32], dst: &mut [u16]) {
    assert_eq!(src.len(), dst.len(), "to_bf16_slice: lengths differ");
    let mut done = 0;
    #[cfg(target_arch = "x86_64")]
    if kernel.simd() {
        done = src.len() / 16 * 16;
        // SAFETY: AVX-512 BF16 checked; `done` is within both slices.
        unsafe { to_bf16_simd(&src[..done], &mut dst[..done]) };
    }
    for (d, s) in dst[done..].iter_mut().zip(&src[done..]) {
        *d = to_bf16(*s);
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
unsafe fn to_bf16_simd(src: &[f32], dst: &mut [u16]) {
    // SAFETY: AVX-512F/BW/BF16 are present (checked by `Kernel::simd`); whole and masked vectors stay
    // inside `src` and `dst` (equal lengths).
    unsafe {
        for (s, d) in src.chunks_exact(16).zip(dst.chunks_exact_mut(16)) {
            let v: __m256i = std::mem::transmute(_mm512_cvtneps_pbh(_mm512_loadu_ps(s.as_ptr())));
            _mm256_storeu_si256(d.as_mut_ptr() as *mut __m256i, v);
        }
    }
}

thread_local! {
    static XBF16: std::cell::RefCell<Vec<u16>> = const { std::cell::RefCell::new(Vec::new()) };
    static PANEL: std::cell::RefCell<Vec<u32>> = const { std::cell::RefCell::new(Vec::new()) };
    static ROW: std::cell::RefCell<Vec<u32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Packs rows `m0..m0+rows` (`rows ≤ mr`) and pairs `p0..p0+kc` of `a` (`m × k`) into
/// `panel[p][lane]` (`mr` lanes), lanes past `rows` zero.
fn pack_a(
    simd: bool,
    a: Mat,
    k: usize,
    (m0, rows, mr): (usize, usize, usize),
    p0: usize,
    kc: usize,
    panel: &mut [u32],
) {
    let panel = &mut panel[..kc * mr];
    #[cfg(target_arch = "x86_64")]
    if a.rs == 1 && simd {
        // SAFETY: AVX-512 BF16 checked; `a.check` (by the caller) covers every element read.
        unsafe { pack_a_lanes_simd(a, k, (m0, rows, mr), p0, kc, panel) };
        return;
    }
    if a.cs == 1 {
        // pairs contiguous in each row: convert the row's pairs, then spread them over the lanes
        ROW.with(|t| {
            let mut t = t.borrow_mut();
            t.resize(kc, 0);
            for lane in 0..mr {
                if lane < rows {
                    let start = (m0 + lane) * a.rs + 2 * p0;
                    let end = (start + 2 * kc).min((m0 + lane) * a.rs + k);
                    pack_row(simd, &a.data[start..end], &mut t);
                    for (p, v) in t.iter().enumerate() {
                        panel[p * mr + lane] = *v;
                    }
                } else {
                    (0..kc).for_each(|p| panel[p * mr + lane] = 0);
                }
            }
        });
        return;
    }
    for p in 0..kc {
        let kk = 2 * (p0 + p);
        for lane in 0..mr {
            panel[p * mr + lane] = if lane < rows {
                let hi = if kk + 1 < k {
                    a.at(m0 + lane, kk + 1)
                } else {
                    0.0
                };
                pair(a.at(m0 + lane, kk), hi)
            } else {
                0
            };
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
unsafe fn pack_a_lanes_simd(
    a: Mat,
    k: usize,
    (m0, rows, mr): (usize, usize, usize),
    p0: usize,
    kc: usize,
    panel: &mut [u32],
) {
    // SAFETY: AVX-512F/BW/BF16 are present (checked by `Kernel::simd`); reads stay inside the source
    // matrix's extent and writes inside `out`, both sized by the caller.
    unsafe {
        let s = a.data.as_ptr();
        let d = panel.as_mut_ptr();
        for p in 0..kc {
            let kk = 2 * (p0 + p);
            for v in 0..mr / 16 {
                let lanes = rows.saturating_sub(v * 16).min(16);
                let mask: __mmask16 = ((1u32 << lanes) - 1) as __mmask16;
                let base = m0 + v * 16;
                let lo = _mm512_maskz_loadu_ps(mask, s.wrapping_add(base + kk * a.cs));
                let hi = if kk + 1 < k {
                    _mm512_maskz_loadu_ps(mask, s.wrapping_add(base + (kk + 1) * a.cs))
                } else {
                    _mm512_setzero_ps()
                };
                let lo16: __m256i = std::mem::transmute(_mm512_cvtneps_pbh(lo));
                let hi16: __m256i = std::mem::transmute(_mm512_cvtneps_pbh(hi));
                let w = _mm512_or_si512(
                    _mm512_cvtepu16_epi32(lo16),
                    _mm512_slli_epi32::<16>(_mm512_cvtepu16_epi32(hi16)),
                );
                _mm512_storeu_si512(d.add(p * mr + v * 16) as *mut _, w);
            }
        }
    }
}

/// `dst (m × n, column-major: element (i, j) at dst[i + j·ld]) [+]= A (m × k) · B (k × n)`
/// with bf16 inputs and f32 accumulation, on `kernel`'s micro-kernel. Single-threaded (callers
/// run it per image).
///
/// # Panics
/// If a matrix does not fit its slice, or `b` was packed for another `k`.
pub fn matmul(
    kernel: Kernel,
    m: usize,
    dst: &mut [f32],
    ld: usize,
    accumulate: bool,
    a: Mat,
    b: &PackedB,
) {
    let (n, k) = (b.n, b.k);
    a.check(m, k, "A");
    if m == 0 || n == 0 {
        return;
    }
    assert!(
        ld >= m && (n - 1) * ld + m <= dst.len(),
        "bf16 matmul: destination {m}×{n} (ld {ld}) exceeds its slice of {}",
        dst.len()
    );
    if k == 0 {
        if !accumulate {
            (0..n).for_each(|j| dst[j * ld..][..m].fill(0.0));
        }
        return;
    }
    let simd = kernel.simd();
    let mr = if m <= 16 { 16 } else { MR };
    let nr = nr(mr);
    PANEL.with(|panel| {
        let mut panel = panel.borrow_mut();
        panel.resize(MR * KCP, 0);
        for p0 in (0..b.kp).step_by(KCP) {
            let kc = KCP.min(b.kp - p0);
            let load = accumulate || p0 > 0;
            for m0 in (0..m).step_by(mr) {
                let rows = mr.min(m - m0);
                pack_a(simd, a, k, (m0, rows, mr), p0, kc, &mut panel);
                for n0 in (0..n).step_by(nr) {
                    let cols = nr.min(n - n0);
                    let bp = &b.data[n0 * b.kp + p0..];
                    let c = &mut dst[m0 + n0 * ld..];
                    tile(simd, kc, (&panel, mr), bp, b.kp, c, ld, rows, cols, load);
                }
            }
        }
    });
}

/// One micro-tile: `c[i + j·ld] (+)= Σ_p panel[p][i] · bp[j·ldb + p]` for `i < rows`, `j < cols`
/// (`panel` has `mr` lanes).
#[allow(clippy::too_many_arguments)]
#[inline]
fn tile(
    simd: bool,
    kc: usize,
    (panel, mr): (&[u32], usize),
    bp: &[u32],
    ldb: usize,
    c: &mut [f32],
    ld: usize,
    rows: usize,
    cols: usize,
    load: bool,
) {
    assert!(panel.len() >= kc * mr && bp.len() >= (cols - 1) * ldb + kc);
    assert!(c.len() >= (cols - 1) * ld + rows);
    #[cfg(target_arch = "x86_64")]
    if simd {
        macro_rules! call {
            ($v:literal: $($n:literal)*) => {
                match cols {
                    // SAFETY: AVX-512 BF16 checked by `simd`; bounds asserted above (the
                    // kernel reads and writes only rows < `rows`, columns < its `N`).
                    $($n => unsafe {
                        kernel::<$v, $n>(kc, panel.as_ptr(), bp.as_ptr(), ldb, c.as_mut_ptr(), ld, rows, load)
                    },)*
                    _ => unreachable!(),
                }
            };
        }
        if mr == 16 {
            call!(1: 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16);
        } else {
            call!(2: 1 2 3 4 5 6 7 8);
        }
        return;
    }
    let _ = simd;
    for j in 0..cols {
        for i in 0..rows {
            let mut acc = if load { c[i + j * ld] } else { 0.0 };
            for p in 0..kc {
                let (a, b) = (panel[p * mr + i], bp[j * ldb + p]);
                // vdpbf16ps order: the odd (high) product first, then the even one
                acc += from_bf16((a >> 16) as u16) * from_bf16((b >> 16) as u16);
                acc += from_bf16(a as u16) * from_bf16(b as u16);
            }
            c[i + j * ld] = acc;
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[allow(clippy::too_many_arguments, clippy::needless_range_loop)] // acc[j][v]: two indices
#[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
unsafe fn kernel<const V: usize, const N: usize>(
    kc: usize,
    panel: *const u32,
    bp: *const u32,
    ldb: usize,
    c: *mut f32,
    ld: usize,
    rows: usize,
    load: bool,
) {
    // SAFETY: AVX-512F/BW/BF16 are present (checked by `Kernel::simd`); the packed panels and the
    // destination tile are sized by `matmul`, and masked loads/stores cover the tails.
    unsafe {
        let mut mask = [0 as __mmask16; V];
        for (v, m) in mask.iter_mut().enumerate() {
            let lanes = rows.saturating_sub(v * 16).min(16);
            *m = ((1u32 << lanes) - 1) as __mmask16;
        }
        let mut acc = [[_mm512_setzero_ps(); V]; N];
        if load {
            for j in 0..N {
                for v in 0..V {
                    acc[j][v] = _mm512_maskz_loadu_ps(mask[v], c.wrapping_add(j * ld + v * 16));
                }
            }
        }
        for p in 0..kc {
            let mut a = [_mm512_setzero_si512(); V];
            for (v, a) in a.iter_mut().enumerate() {
                *a = _mm512_loadu_si512(panel.add(p * V * 16 + v * 16) as *const _);
            }
            for j in 0..N {
                let b = _mm512_set1_epi32(*bp.add(j * ldb + p) as i32);
                for v in 0..V {
                    acc[j][v] = _mm512_dpbf16_ps(
                        acc[j][v],
                        std::mem::transmute::<__m512i, __m512bh>(a[v]),
                        std::mem::transmute::<__m512i, __m512bh>(b),
                    );
                }
            }
        }
        for j in 0..N {
            for v in 0..V {
                _mm512_mask_storeu_ps(c.wrapping_add(j * ld + v * 16), mask[v], acc[j][v]);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounding_is_nearest_even() {
        // 1 + 2^-8 lies halfway between bf16 neighbours 1 and 1 + 2^-7: ties to even (1.0)
        assert_eq!(round_bf16(1.0 + 1.0 / 256.0), 1.0);
        // 1 + 3·2^-8 is halfway between 1 + 2^-7 (odd) and 1 + 2^-6 (even): up
        assert_eq!(round_bf16(1.0 + 3.0 / 256.0), 1.0 + 1.0 / 64.0);
        assert_eq!(round_bf16(1.0 + 1.1 / 256.0), 1.0 + 1.0 / 128.0);
        assert_eq!(round_bf16(-2.5), -2.5);
        assert!(round_bf16(f32::NAN).is_nan());
        assert_eq!(round_bf16(f32::INFINITY), f32::INFINITY);
    }
}
