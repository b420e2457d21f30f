//! Convolution with bf16 GEMMs (`Precision::Bf16`), on each of its routes (`ops::cpu::ConvRoute`:
//! the direct 3×3 kernel on channel pairs, im2col + the bf16 matrix product, and the portable
//! kernels a CPU without AVX-512 BF16 runs), against an f64 convolution of
//! the same bf16-rounded operands: output `y = x ⋆ w`, input gradient `r ⋆ᵀ w` and weight
//! gradient `r ⋆ x` of `L = Σ r ⊙ y` (so the output gradient is `r`).
//!
//! Tolerance `2e-6 · Σ|terms| + 1e-7` per element: only f32 summation error is allowed. An f32
//! (unrounded) product misses that by ~1e-3 relative, so a path that silently stayed in f32, or
//! paired the wrong channels or taps, fails.

use dfdx::prelude::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use spatial_reasoning::ops::{bf16, cpu, ConvWeight};
use spatial_reasoning::Precision;

fn randv(rng: &mut ChaCha8Rng, n: usize) -> Vec<f32> {
    (0..n).map(|_| rng.gen_range(-1.0f32..1.0)).collect()
}

struct Geometry {
    b: usize,
    h: usize,
    w: usize,
    k: usize,
    stride: usize,
    pad: usize,
}

impl Geometry {
    fn out(&self) -> (usize, usize) {
        let o = |n: usize| (n + 2 * self.pad - self.k) / self.stride + 1;
        (o(self.h), o(self.w))
    }
}

/// f64 reference on rounded operands: (y, dx, dw) and their per-element Σ|terms|.
fn reference(
    g: &Geometry,
    (ci, co): (usize, usize),
    x: &[f32],
    w: &[f32],
    r: &[f32],
) -> [(Vec<f64>, Vec<f64>); 3] {
    let rd = |v: &[f32]| {
        v.iter()
            .map(|&a| bf16::round_bf16(a) as f64)
            .collect::<Vec<_>>()
    };
    let (x, w, r) = (rd(x), rd(w), rd(r));
    let (ho, wo) = g.out();
    let k = g.k;
    let mut y = (vec![0.0; g.b * co * ho * wo], vec![0.0; g.b * co * ho * wo]);
    let mut dx = (vec![0.0; x.len()], vec![0.0; x.len()]);
    let mut dw = (vec![0.0; w.len()], vec![0.0; w.len()]);
    for n in 0..g.b {
        for o in 0..co {
            for oy in 0..ho {
                for ox in 0..wo {
                    let yi = ((n * co + o) * ho + oy) * wo + ox;
                    for c in 0..ci {
                        for ky in 0..k {
                            for kx in 0..k {
                                let iy = (oy * g.stride + ky) as isize - g.pad as isize;
                                let ix = (ox * g.stride + kx) as isize - g.pad as isize;
                                if iy < 0 || ix < 0 || iy >= g.h as isize || ix >= g.w as isize {
                                    continue;
                                }
                                let xi = ((n * ci + c) * g.h + iy as usize) * g.w + ix as usize;
                                let wi = ((o * ci + c) * k + ky) * k + kx;
                                y.0[yi] += x[xi] * w[wi];
                                y.1[yi] += (x[xi] * w[wi]).abs();
                                dx.0[xi] += r[yi] * w[wi];
                                dx.1[xi] += (r[yi] * w[wi]).abs();
                                dw.0[wi] += r[yi] * x[xi];
                                dw.1[wi] += (r[yi] * x[xi]).abs();
                            }
                        }
                    }
                }
            }
        }
    }
    [y, dx, dw]
}

fn check<const I: usize, const O: usize, const K: usize>(g: Geometry, route: Route) {
    let Route { direct, portable } = route;
    let mut rng = ChaCha8Rng::seed_from_u64((I * 131 + O * 7 + g.h * 3 + g.w + K) as u64);
    let xv = randv(&mut rng, g.b * I * g.h * g.w);
    let wv = randv(&mut rng, O * I * K * K);
    let (ho, wo) = g.out();
    let r = randv(&mut rng, g.b * O * ho * wo);
    let mut conv_route = if direct {
        cpu::ConvRoute::fastest(Precision::Bf16)
    } else {
        cpu::ConvRoute::im2col(Precision::Bf16)
    };
    if portable {
        conv_route = conv_route.portable();
    }
    let dev = Cpu::default();
    let x = dev.tensor_from_vec(xv.clone(), (g.b, Const::<I>, g.h, g.w));
    let wt: ConvWeight<O, I, K, Cpu> =
        dev.tensor_from_vec(wv.clone(), (Const, Const, Const, Const));
    let y = cpu::conv2d(x.clone().leaky_traced(), &wt, g.stride, g.pad, conv_route).unwrap();
    let yv = y.as_vec();
    let rt = dev.tensor_from_vec(r.clone(), *y.shape());
    let grads = y.try_mul(rt).unwrap().sum().backward();
    let got = [yv, grads.get(&x).as_vec(), grads.get(&wt).as_vec()];
    let want = reference(&g, (I, O), &xv, &wv, &r);
    for (name, (got, (want, mag))) in ["y", "dx", "dw"].iter().zip(got.iter().zip(&want)) {
        assert_eq!(got.len(), want.len());
        for (i, &a) in got.iter().enumerate() {
            let tol = 2e-6 * mag[i] + 1e-7;
            assert!(
                (a as f64 - want[i]).abs() <= tol,
                "{I}->{O} k{K} s{} {}×{} {route:?} {name}[{i}]: {a}, want {} (±{tol:.2e})",
                g.stride,
                g.h,
                g.w,
                want[i]
            );
        }
    }
}

fn geo(b: usize, h: usize, w: usize, k: usize, stride: usize, pad: usize) -> Geometry {
    Geometry {
        b,
        h,
        w,
        k,
        stride,
        pad,
    }
}

/// Which route: the direct 3×3 kernel where the geometry allows (`direct`), and the portable
/// kernels of a CPU without AVX-512 BF16 (`portable`: im2col + the portable product).
#[derive(Clone, Copy, Debug)]
struct Route {
    direct: bool,
    portable: bool,
}

#[test]
fn bf16_convolution_equals_f64_on_rounded_operands() {
    for (direct, portable) in [(true, false), (false, false), (true, true)] {
        let route = Route { direct, portable };
        check::<16, 16, 3>(geo(2, 32, 32, 3, 1, 1), route); // ResNet stage 1
        check::<3, 16, 3>(geo(2, 32, 32, 3, 1, 1), route); // the stem: an odd channel count
        check::<5, 7, 3>(geo(2, 9, 7, 3, 1, 1), route); // odd everything
        check::<64, 64, 3>(geo(2, 8, 8, 3, 1, 1), route); // stage 3
        check::<16, 32, 3>(geo(2, 16, 16, 3, 2, 1), route); // downsampling: always im2col
        check::<16, 32, 1>(geo(2, 16, 16, 1, 2, 0), route); // 1×1 projection shortcut
        check::<8, 12, 3>(geo(1, 1, 1, 3, 1, 1), route); // 1×1 image
    }
}
