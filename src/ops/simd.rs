//! Wider vectors for the memory-bound loops of the CPU ops (batch-norm statistics and
//! normalisation, their backward sums and input gradients, the residual add + ReLU and its mask).
//!
//! The crate is built for baseline x86-64 (SSE2), so a loop that LLVM vectorises by itself gets
//! 4-lane vectors, and the two-stream reductions (`Σ dy`, `Σ dy·x` over 16 lane accumulators
//! each) spill their accumulators to the stack: they were 13 % of a one-thread ResNet-32 training
//! step (`perf`, 2026-12-02). [`wide`] runs a closure inside a function compiled for AVX-512F
//! (else AVX2) when the CPU has it, chosen at run time, so the loops the closure inlines get
//! 16-lane (8-lane) vectors and masks.
//!
//! **Same values, to the bit**: the code is the same Rust; LLVM keeps IEEE semantics with or
//! without the wider target (no reassociation, and no FMA contraction, which Rust never asks
//! for), and the reductions have the same fixed lane structure at every width (16 independent
//! accumulators combined in order). The tests below run each wrapped loop on both routes and
//! compare bits; `tests/ops_fused.rs` and the thread-count test cover the ops around them.

/// Which instruction set [`wide`] compiles its closure for on this CPU.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Level {
    /// Baseline x86-64 (or not x86-64): the closure is called as it is.
    Base,
    /// AVX2: 8-lane vectors.
    Avx2,
    /// AVX-512F: 16-lane vectors and mask registers.
    Avx512,
}

/// The widest [`Level`] this CPU runs (detected once per call; `std` caches the CPUID query).
#[inline]
pub fn level() -> Level {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            return Level::Avx512;
        }
        if std::arch::is_x86_feature_detected!("avx2") {
            return Level::Avx2;
        }
    }
    Level::Base
}

/// Runs `f` compiled for the widest [`level`] of this CPU. `f` should be a closure whose hot loop
/// is inlined into it (`#[inline(always)]` callees): code it calls out of line keeps the
/// baseline target. Call it per image or per plane, not per element.
#[inline(always)]
pub fn wide<R>(f: impl FnOnce() -> R) -> R {
    #[cfg(target_arch = "x86_64")]
    match level() {
        // SAFETY: the CPU has AVX-512F (checked by `level`).
        Level::Avx512 => return unsafe { avx512(f) },
        // SAFETY: the CPU has AVX2 (checked by `level`).
        Level::Avx2 => return unsafe { avx2(f) },
        Level::Base => {}
    }
    f()
}

/// `f`, inlined into a function compiled for AVX-512F.
///
/// # Safety
/// The CPU must have AVX-512F.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn avx512<R>(f: impl FnOnce() -> R) -> R {
    f()
}

/// `f`, inlined into a function compiled for AVX2.
///
/// # Safety
/// The CPU must have AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn avx2<R>(f: impl FnOnce() -> R) -> R {
    f()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::cpu::{plane_stats_base, BnAffine};
    use crate::ops::fused::{block_out_base, masked_base};
    use crate::ops::BnMode;

    /// Deterministic values in about [−2, 2], with exact zeros and negative zeros sprinkled in
    /// (the ReLU and mask decisions at 0 must agree too).
    fn values(n: usize, seed: u32) -> Vec<f32> {
        let mut s = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
        (0..n)
            .map(|i| {
                s ^= s << 13;
                s ^= s >> 17;
                s ^= s << 5;
                match i % 11 {
                    3 => 0.0,
                    7 => -0.0,
                    _ => (s as f32 / u32::MAX as f32) * 4.0 - 2.0,
                }
            })
            .collect()
    }

    fn bits(v: &[f32]) -> Vec<u32> {
        v.iter().map(|x| x.to_bits()).collect()
    }

    fn bits64(v: &[f64]) -> Vec<u32> {
        v.iter()
            .flat_map(|x| [x.to_bits() as u32, (x.to_bits() >> 32) as u32])
            .collect()
    }

    /// The routes each available tier would take: baseline always, and every wider tier the CPU
    /// has (so the comparison is real on AVX-512 machines and on AVX2-only ones).
    fn tiers() -> Vec<Level> {
        let mut t = vec![Level::Base];
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx2") {
                t.push(Level::Avx2);
            }
            if std::arch::is_x86_feature_detected!("avx512f") {
                t.push(Level::Avx512);
            }
        }
        t
    }

    fn on<R>(tier: Level, f: impl FnOnce() -> R) -> R {
        match tier {
            Level::Base => f(),
            // SAFETY: `tiers` lists only what the CPU has.
            #[cfg(target_arch = "x86_64")]
            Level::Avx2 => unsafe { avx2(f) },
            // SAFETY: as above.
            #[cfg(target_arch = "x86_64")]
            Level::Avx512 => unsafe { avx512(f) },
            #[cfg(not(target_arch = "x86_64"))]
            _ => unreachable!(),
        }
    }

    /// Plane lengths of the backbones (8×8 … 64×64) and odd ones that leave remainders.
    const LENS: [usize; 6] = [1, 15, 64, 77, 256, 4096];

    #[test]
    fn every_tier_gives_the_same_bits() {
        let bn = BnAffine::test_affine(vec![0.7, -1.3], vec![0.25, 0.5], BnMode::Train, 1000);
        let g = bn.grad(&[(3.5, -1.25), (-0.75, 2.0)]);
        for &n in &LENS {
            let (x, dy, r) = (values(n, 1), values(n, 2), values(n, 3));
            let mut reference: Option<Vec<Vec<u32>>> = None;
            for tier in tiers() {
                let mut got = Vec::new();
                let (s, m2) = on(
                    tier,
                    #[inline(always)]
                    || plane_stats_base(&x),
                );
                got.push(bits64(&[s, m2]));
                for ch in 0..2 {
                    for relu in [false, true] {
                        let (a, b) = on(
                            tier,
                            #[inline(always)]
                            || bn.plane_sums_base(ch, relu, &x, &dy),
                        );
                        got.push(bits64(&[a, b]));
                        let mut y = vec![0.0; n];
                        on(
                            tier,
                            #[inline(always)]
                            || bn.apply_base(ch, relu, &x, &mut y),
                        );
                        got.push(bits(&y));
                        for add in [false, true] {
                            let mut gx = r.clone();
                            on(
                                tier,
                                #[inline(always)]
                                || g.apply_base(ch, relu, &x, &dy, &mut gx, add),
                            );
                            got.push(bits(&gx));
                        }
                    }
                }
                // block_out over two channels of n, with and without a projection shortcut
                let (x2, xin, xs) = (values(2 * n, 4), values(2 * n, 5), values(2 * n, 6));
                for sc in [false, true] {
                    let mut out = vec![0.0; 2 * n];
                    let mut mask = vec![0u64; (2 * n).div_ceil(64)];
                    let shortcut = sc.then_some((&bn, &xs[..]));
                    on(
                        tier,
                        #[inline(always)]
                        || block_out_base((&bn, n), shortcut, &x2, &xin, &mut out, Some(&mut mask)),
                    );
                    got.push(bits(&out));
                    got.push(
                        mask.iter()
                            .flat_map(|&w| [w as u32, (w >> 32) as u32])
                            .collect(),
                    );
                    // the ReLU both passes and clips values (so the mask is not trivial)
                    assert!(n < 64 || (mask.iter().any(|&w| w != 0) && out.contains(&0.0)));
                    let mut d = vec![1.0; 2 * n];
                    on(
                        tier,
                        #[inline(always)]
                        || masked_base(&xs, &mask, &mut d),
                    );
                    got.push(bits(&d));
                }
                match &reference {
                    None => reference = Some(got),
                    Some(r) => assert!(*r == got, "tier {tier:?} differs at length {n}"),
                }
            }
        }
    }
}
