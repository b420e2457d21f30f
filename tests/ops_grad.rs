//! Finite-difference gradient checks of every op in `spatial_reasoning::ops`, on both paths
//! (the fast CPU kernels and the device-generic composition of dfdx ops), and agreement of the
//! two paths on larger shapes.
//!
//! The scalar checked is `L = Σ r ⊙ op(x)` with a fixed random `r`; the finite difference is a
//! central difference of the op's own (f32) forward, summed in f64.

use dfdx::prelude::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use spatial_reasoning::ops::{cpu, generic, Act, BnMode, BnParams, ConvWeight, Precision};

#[derive(Clone, Copy, Debug, PartialEq)]
enum Path {
    Fast,
    Generic,
}
const PATHS: [Path; 2] = [Path::Fast, Path::Generic];

fn randv(rng: &mut ChaCha8Rng, n: usize, scale: f32) -> Vec<f32> {
    (0..n)
        .map(|_| rng.gen_range(-1.0f32..1.0) * scale)
        .collect()
}

fn dot(r: &[f32], y: &[f32]) -> f64 {
    assert_eq!(r.len(), y.len());
    r.iter().zip(y).map(|(&a, &b)| a as f64 * b as f64).sum()
}

/// Central differences of `L(v) = Σ r·f(v)` at `v0`.
fn fd(v0: &[f32], eps: f32, r: &[f32], f: &dyn Fn(&[f32]) -> Vec<f32>) -> Vec<f32> {
    (0..v0.len())
        .map(|i| {
            let mut p = v0.to_vec();
            p[i] += eps;
            let lp = dot(r, &f(&p));
            p[i] = v0[i] - eps;
            let lm = dot(r, &f(&p));
            ((lp - lm) / (2.0 * eps as f64)) as f32
        })
        .collect()
}

fn assert_close(what: &str, got: &[f32], want: &[f32], atol: f32, rtol: f32) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        assert!(
            (g - w).abs() <= atol + rtol * w.abs(),
            "{what}[{i}]: got {g}, want {w} (|diff| {})",
            (g - w).abs()
        );
    }
}

// ---------------------------------------------------------------- conv2d

fn conv<const I: usize, const O: usize, const K: usize, T: Tape<f32, Cpu>>(
    path: Path,
    x: Act<I, Cpu, T>,
    w: &ConvWeight<O, I, K, Cpu>,
    s: usize,
    p: usize,
) -> Act<O, Cpu, T> {
    match path {
        Path::Fast => cpu::conv2d(x, w, s, p, cpu::ConvRoute::fastest(Precision::F32)).unwrap(),
        Path::Generic => generic::conv2d(x, w, s, p).unwrap(),
    }
}

/// Output, and gradients of `Σ r·y` w.r.t. x and w.
#[allow(clippy::type_complexity)]
fn conv_run<const I: usize, const O: usize, const K: usize>(
    path: Path,
    dims: (usize, usize, usize),
    xv: &[f32],
    wv: &[f32],
    s: usize,
    p: usize,
    r: Option<&[f32]>,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let dev = Cpu::default();
    let (b, h, wd) = dims;
    let x = dev.tensor_from_vec(xv.to_vec(), (b, Const::<I>, h, wd));
    let w: ConvWeight<O, I, K, Cpu> =
        dev.tensor_from_vec(wv.to_vec(), (Const, Const, Const, Const));
    let Some(r) = r else {
        return (conv(path, x, &w, s, p).as_vec(), vec![], vec![]);
    };
    let y = conv(path, x.clone().leaky_traced(), &w, s, p);
    let yv = y.as_vec();
    let rt = dev.tensor_from_vec(r.to_vec(), *y.shape());
    let g = y.try_mul(rt).unwrap().sum().backward();
    (yv, g.get(&x).as_vec(), g.get(&w).as_vec())
}

fn conv_fd_check<const I: usize, const O: usize, const K: usize>(
    path: Path,
    dims: (usize, usize, usize),
    s: usize,
    p: usize,
) {
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let (b, h, wd) = dims;
    let xv = randv(&mut rng, b * I * h * wd, 1.0);
    let wv = randv(&mut rng, O * I * K * K, 0.5);
    let (y, _, _) = conv_run::<I, O, K>(path, dims, &xv, &wv, s, p, None);
    let r = randv(&mut rng, y.len(), 1.0);
    let (_, gx, gw) = conv_run::<I, O, K>(path, dims, &xv, &wv, s, p, Some(&r));
    let fx = fd(&xv, 1e-2, &r, &|x| {
        conv_run::<I, O, K>(path, dims, x, &wv, s, p, None).0
    });
    let fw = fd(&wv, 1e-2, &r, &|w| {
        conv_run::<I, O, K>(path, dims, &xv, w, s, p, None).0
    });
    let tag = format!("{path:?} conv k{K} s{s} p{p}");
    assert_close(&format!("{tag} dx"), &gx, &fx, 2e-3, 2e-3);
    assert_close(&format!("{tag} dw"), &gw, &fw, 2e-3, 2e-3);
}

#[test]
fn conv2d_gradients_match_finite_differences() {
    for path in PATHS {
        conv_fd_check::<2, 3, 3>(path, (2, 5, 6), 1, 1);
        conv_fd_check::<2, 3, 3>(path, (2, 5, 6), 2, 1);
        conv_fd_check::<3, 2, 1>(path, (2, 5, 4), 2, 0);
    }
}

#[test]
fn conv2d_fast_and_generic_agree() {
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    for &(s, p, dims) in &[(1, 1, (3, 9, 7)), (2, 1, (3, 9, 8)), (2, 1, (2, 8, 8))] {
        let (b, h, w) = dims;
        let xv = randv(&mut rng, b * 5 * h * w, 1.0);
        let wv = randv(&mut rng, 7 * 5 * 9, 0.5);
        let (y, _, _) = conv_run::<5, 7, 3>(Path::Fast, dims, &xv, &wv, s, p, None);
        let r = randv(&mut rng, y.len(), 1.0);
        let a = conv_run::<5, 7, 3>(Path::Fast, dims, &xv, &wv, s, p, Some(&r));
        let g = conv_run::<5, 7, 3>(Path::Generic, dims, &xv, &wv, s, p, Some(&r));
        assert_close("y", &a.0, &g.0, 1e-5, 1e-5);
        assert_close("dx", &a.1, &g.1, 1e-5, 1e-5);
        assert_close("dw", &a.2, &g.2, 1e-4, 1e-5);
    }
    // 1×1 stride-2 shortcut geometry.
    let dims = (3, 8, 8);
    let xv = randv(&mut rng, 3 * 5 * 64, 1.0);
    let wv = randv(&mut rng, 7 * 5, 0.5);
    let r = randv(&mut rng, 3 * 7 * 16, 1.0);
    let a = conv_run::<5, 7, 1>(Path::Fast, dims, &xv, &wv, 2, 0, Some(&r));
    let g = conv_run::<5, 7, 1>(Path::Generic, dims, &xv, &wv, 2, 0, Some(&r));
    assert_close("y", &a.0, &g.0, 1e-5, 1e-5);
    assert_close("dx", &a.1, &g.1, 1e-5, 1e-5);
    assert_close("dw", &a.2, &g.2, 1e-4, 1e-5);
}

// ---------------------------------------------------------------- batch-norm

struct BnOut {
    y: Vec<f32>,
    gx: Vec<f32>,
    gw: Vec<f32>,
    gb: Vec<f32>,
    running: (Vec<f32>, Vec<f32>),
}

/// Runs batch-norm with weight `gv`, bias `bv`, running stats `rs` on `x`.
#[allow(clippy::too_many_arguments)]
fn bn_run<const C: usize>(
    path: Path,
    dims: (usize, usize, usize),
    xv: &[f32],
    gv: &[f32],
    bv: &[f32],
    rs: (&[f32], &[f32]),
    mode: BnMode,
    relu: bool,
    r: Option<&[f32]>,
) -> BnOut {
    let dev = Cpu::default();
    let (b, h, w) = dims;
    let x = dev.tensor_from_vec(xv.to_vec(), (b, Const::<C>, h, w));
    let weight: Tensor<Rank1<C>, f32, Cpu> = dev.tensor_from_vec(gv.to_vec(), (Const,));
    let bias: Tensor<Rank1<C>, f32, Cpu> = dev.tensor_from_vec(bv.to_vec(), (Const,));
    let mut rm: Tensor<Rank1<C>, f32, Cpu> = dev.tensor_from_vec(rs.0.to_vec(), (Const,));
    let mut rv: Tensor<Rank1<C>, f32, Cpu> = dev.tensor_from_vec(rs.1.to_vec(), (Const,));
    let params = BnParams {
        weight: &weight,
        bias: &bias,
        running_mean: &mut rm,
        running_var: &mut rv,
    };
    fn go<const C: usize, T: Tape<f32, Cpu>>(
        path: Path,
        x: Act<C, Cpu, T>,
        p: BnParams<'_, C, Cpu>,
        m: BnMode,
        relu: bool,
    ) -> Act<C, Cpu, T> {
        match path {
            Path::Fast => cpu::batch_norm2d(x, p, m, relu).unwrap(),
            Path::Generic => generic::batch_norm2d(x, p, m, relu).unwrap(),
        }
    }
    let (y, gx, gw, gb) = match r {
        None => (
            go(path, x, params, mode, relu).as_vec(),
            vec![],
            vec![],
            vec![],
        ),
        Some(r) => {
            let y = go(path, x.clone().leaky_traced(), params, mode, relu);
            let yv = y.as_vec();
            let rt = dev.tensor_from_vec(r.to_vec(), *y.shape());
            let g = y.try_mul(rt).unwrap().sum().backward();
            (
                yv,
                g.get(&x).as_vec(),
                g.get(&weight).as_vec(),
                g.get(&bias).as_vec(),
            )
        }
    };
    BnOut {
        y,
        gx,
        gw,
        gb,
        running: (rm.as_vec(), rv.as_vec()),
    }
}

fn bn_fd_check(path: Path, mode: BnMode, relu: bool) {
    const C: usize = 3;
    let dims = (3, 2, 3);
    let gv = vec![1.3, -0.8, 0.6];
    let bv = vec![0.2, -0.1, 0.05];
    let rs = (vec![0.3, -0.2, 0.1], vec![1.5, 0.7, 2.0]);
    let rsr = (&rs.0[..], &rs.1[..]);
    // Finite differences are only valid away from the ReLU kink: take the first seed whose
    // pre-activations all lie at least 2e-2 from zero.
    let (mut rng, xv) = (0..)
        .map(|seed| {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            let xv: Vec<f32> = randv(&mut rng, 3 * C * 6, 2.0)
                .iter()
                .map(|v| v + 0.5)
                .collect();
            (rng, xv)
        })
        .find(|(_, xv)| {
            let pre = bn_run::<C>(path, dims, xv, &gv, &bv, rsr, mode, false, None).y;
            !relu || pre.iter().all(|y| y.abs() > 2e-2)
        })
        .unwrap();
    let base = bn_run::<C>(path, dims, &xv, &gv, &bv, rsr, mode, relu, None);
    let r = randv(&mut rng, base.y.len(), 1.0);
    let an = bn_run::<C>(path, dims, &xv, &gv, &bv, rsr, mode, relu, Some(&r));
    let eps = 2e-3;
    let fx = fd(&xv, eps, &r, &|x| {
        bn_run::<C>(path, dims, x, &gv, &bv, rsr, mode, relu, None).y
    });
    let fw = fd(&gv, eps, &r, &|g| {
        bn_run::<C>(path, dims, &xv, g, &bv, rsr, mode, relu, None).y
    });
    let fb = fd(&bv, eps, &r, &|b| {
        bn_run::<C>(path, dims, &xv, &gv, b, rsr, mode, relu, None).y
    });
    let tag = format!("{path:?} bn {mode:?} relu={relu}");
    assert_close(&format!("{tag} dx"), &an.gx, &fx, 5e-3, 1e-2);
    assert_close(&format!("{tag} dweight"), &an.gw, &fw, 5e-3, 1e-2);
    assert_close(&format!("{tag} dbias"), &an.gb, &fb, 5e-3, 1e-2);
}

#[test]
fn batch_norm2d_gradients_match_finite_differences() {
    for path in PATHS {
        for mode in [BnMode::Train, BnMode::Eval] {
            for relu in [false, true] {
                bn_fd_check(path, mode, relu);
            }
        }
    }
}

#[test]
fn batch_norm2d_fast_and_generic_agree() {
    const C: usize = 6;
    let dims = (5, 7, 6);
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    let xv: Vec<f32> = randv(&mut rng, 5 * C * 42, 3.0)
        .iter()
        .map(|v| v + 1.0)
        .collect();
    let gv = randv(&mut rng, C, 1.5);
    let bv = randv(&mut rng, C, 0.5);
    let rs = (
        randv(&mut rng, C, 0.5),
        randv(&mut rng, C, 0.5)
            .iter()
            .map(|v| v + 1.0)
            .collect::<Vec<_>>(),
    );
    let r = randv(&mut rng, xv.len(), 1.0);
    for mode in [BnMode::Train, BnMode::Eval] {
        for relu in [false, true] {
            let a = bn_run::<C>(
                Path::Fast,
                dims,
                &xv,
                &gv,
                &bv,
                (&rs.0, &rs.1),
                mode,
                relu,
                Some(&r),
            );
            let g = bn_run::<C>(
                Path::Generic,
                dims,
                &xv,
                &gv,
                &bv,
                (&rs.0, &rs.1),
                mode,
                relu,
                Some(&r),
            );
            let tag = format!("{mode:?} relu={relu}");
            assert_close(&format!("{tag} y"), &a.y, &g.y, 1e-4, 1e-4);
            assert_close(&format!("{tag} dx"), &a.gx, &g.gx, 1e-4, 1e-3);
            assert_close(&format!("{tag} dweight"), &a.gw, &g.gw, 1e-3, 1e-4);
            assert_close(&format!("{tag} dbias"), &a.gb, &g.gb, 1e-3, 1e-4);
            assert_close(
                &format!("{tag} running_mean"),
                &a.running.0,
                &g.running.0,
                1e-6,
                1e-5,
            );
            assert_close(
                &format!("{tag} running_var"),
                &a.running.1,
                &g.running.1,
                1e-6,
                1e-5,
            );
        }
    }
}

// ---------------------------------------------------------------- pooling

#[derive(Clone, Copy, Debug)]
enum Pool {
    Avg,
    Max,
    Global,
}

fn pool_run(
    path: Path,
    pool: Pool,
    dims: (usize, usize, usize),
    xv: &[f32],
    r: Option<&[f32]>,
) -> (Vec<f32>, Vec<f32>) {
    const C: usize = 2;
    let dev = Cpu::default();
    let (b, h, w) = dims;
    let x = dev.tensor_from_vec(xv.to_vec(), (b, Const::<C>, h, w));
    fn go<T: Tape<f32, Cpu>>(
        path: Path,
        pool: Pool,
        x: Act<2, Cpu, T>,
    ) -> Tensor<(usize,), f32, Cpu, T> {
        let y = match (path, pool) {
            (Path::Fast, Pool::Avg) => cpu::avg_pool2x2(x).unwrap(),
            (Path::Fast, Pool::Max) => cpu::max_pool2x2(x).unwrap(),
            (Path::Generic, Pool::Avg) => generic::avg_pool2x2(x).unwrap(),
            (Path::Generic, Pool::Max) => generic::max_pool2x2(x).unwrap(),
            (Path::Fast, Pool::Global) => {
                let y = cpu::global_avg_pool(x).unwrap();
                let n = y.shape().num_elements();
                return y.reshape_like(&(n,));
            }
            (Path::Generic, Pool::Global) => {
                let y = generic::global_avg_pool(x).unwrap();
                let n = y.shape().num_elements();
                return y.reshape_like(&(n,));
            }
        };
        let n = y.shape().num_elements();
        y.reshape_like(&(n,))
    }
    match r {
        None => (go(path, pool, x).as_vec(), vec![]),
        Some(r) => {
            let y = go(path, pool, x.clone().leaky_traced());
            let yv = y.as_vec();
            let rt = dev.tensor_from_vec(r.to_vec(), *y.shape());
            let g = y.try_mul(rt).unwrap().sum().backward();
            (yv, g.get(&x).as_vec())
        }
    }
}

#[test]
fn pooling_gradients_match_finite_differences() {
    let mut rng = ChaCha8Rng::seed_from_u64(9);
    for dims in [(2, 4, 6), (2, 5, 5)] {
        let n = dims.0 * 2 * dims.1 * dims.2;
        // Distinct values at least 0.1 apart, so no max-pool tie is within the FD step.
        let mut perm: Vec<usize> = (0..n).collect();
        for i in (1..n).rev() {
            perm.swap(i, rng.gen_range(0..=i));
        }
        let xv: Vec<f32> = perm.iter().map(|&p| p as f32 * 0.1 - 2.0).collect();
        for path in PATHS {
            for pool in [Pool::Avg, Pool::Max, Pool::Global] {
                let (y, _) = pool_run(path, pool, dims, &xv, None);
                let r = randv(&mut rng, y.len(), 1.0);
                let (_, gx) = pool_run(path, pool, dims, &xv, Some(&r));
                let f = fd(&xv, 1e-2, &r, &|x| pool_run(path, pool, dims, x, None).0);
                assert_close(
                    &format!("{path:?} {pool:?} {dims:?} dx"),
                    &gx,
                    &f,
                    1e-3,
                    1e-3,
                );
            }
        }
    }
}

#[test]
fn pooling_values_by_hand() {
    // One 4×4 plane (per channel, channel 1 = channel 0 + 100) in a batch of one.
    let plane: Vec<f32> = (0..16).map(|i| i as f32).collect();
    let xv: Vec<f32> = plane
        .iter()
        .copied()
        .chain(plane.iter().map(|v| v + 100.0))
        .collect();
    for path in PATHS {
        let (avg, _) = pool_run(path, Pool::Avg, (1, 4, 4), &xv, None);
        assert_eq!(
            avg,
            vec![2.5, 4.5, 10.5, 12.5, 102.5, 104.5, 110.5, 112.5],
            "{path:?}"
        );
        let (max, _) = pool_run(path, Pool::Max, (1, 4, 4), &xv, None);
        assert_eq!(
            max,
            vec![5.0, 7.0, 13.0, 15.0, 105.0, 107.0, 113.0, 115.0],
            "{path:?}"
        );
        let (gap, _) = pool_run(path, Pool::Global, (1, 4, 4), &xv, None);
        assert_eq!(gap, vec![7.5, 107.5], "{path:?}");
    }
}

// ---------------------------------------------------------------- residual add + ReLU

fn add_relu_run(
    path: Path,
    dims: (usize, usize, usize),
    av: &[f32],
    bv: &[f32],
    r: Option<&[f32]>,
) -> [Vec<f32>; 3] {
    let dev = Cpu::default();
    let (n, h, w) = dims;
    let a = dev.tensor_from_vec(av.to_vec(), (n, Const::<3>, h, w));
    let b = dev.tensor_from_vec(bv.to_vec(), (n, Const::<3>, h, w));
    fn go<T: Tape<f32, Cpu>>(path: Path, a: Act<3, Cpu, T>, b: Act<3, Cpu, T>) -> Act<3, Cpu, T> {
        match path {
            Path::Fast => cpu::add_relu(a, b).unwrap(),
            Path::Generic => generic::add_relu(a, b).unwrap(),
        }
    }
    match r {
        None => [go(path, a, b).as_vec(), vec![], vec![]],
        Some(r) => {
            // Both operands carry (separate) tapes, as in a residual block.
            let y = go(path, a.clone().leaky_traced(), b.clone().leaky_traced());
            let yv = y.as_vec();
            let rt = dev.tensor_from_vec(r.to_vec(), *y.shape());
            let g = y.try_mul(rt).unwrap().sum().backward();
            [yv, g.get(&a).as_vec(), g.get(&b).as_vec()]
        }
    }
}

#[test]
fn add_relu_gradients_match_finite_differences_and_paths_agree() {
    let mut rng = ChaCha8Rng::seed_from_u64(21);
    let dims = (2, 4, 5);
    let n = 2 * 3 * 20;
    let av = randv(&mut rng, n, 1.0);
    // a + b at least 0.1 away from the ReLU kink.
    let bv: Vec<f32> = av
        .iter()
        .map(|&a| {
            let t: f32 = rng.gen_range(0.1f32..1.0) * if rng.gen_bool(0.5) { 1.0 } else { -1.0 };
            t - a
        })
        .collect();
    let r = randv(&mut rng, n, 1.0);
    let mut results = vec![];
    for path in PATHS {
        let [y, ga, gb] = add_relu_run(path, dims, &av, &bv, Some(&r));
        assert!(
            y.contains(&0.0) && y.iter().any(|&v| v > 0.0),
            "both ReLU branches exercised"
        );
        let fa = fd(&av, 1e-2, &r, &|a| {
            add_relu_run(path, dims, a, &bv, None)[0].clone()
        });
        let fb = fd(&bv, 1e-2, &r, &|b| {
            add_relu_run(path, dims, &av, b, None)[0].clone()
        });
        assert_close(&format!("{path:?} add_relu da"), &ga, &fa, 1e-3, 1e-3);
        assert_close(&format!("{path:?} add_relu db"), &gb, &fb, 1e-3, 1e-3);
        results.push((y, ga, gb));
    }
    assert_eq!(
        results[0], results[1],
        "fast and generic add_relu agree exactly"
    );
}

/// The fast add+ReLU keeps its mask as bits in chunks of 16,384 elements: a size spanning
/// several chunks and ending mid-word must give exactly the generic path's values and gradients.
#[test]
fn add_relu_bit_mask_spans_chunks() {
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    let dims = (5, 41, 43); // 3 · 5 · 41 · 43 = 26,445 elements: two chunks, last word partial
    let n = 3 * 5 * 41 * 43;
    let av = randv(&mut rng, n, 1.0);
    let bv = randv(&mut rng, n, 1.0);
    let r = randv(&mut rng, n, 1.0);
    let fast = add_relu_run(Path::Fast, dims, &av, &bv, Some(&r));
    let generic = add_relu_run(Path::Generic, dims, &av, &bv, Some(&r));
    assert!(fast[1].contains(&0.0) && fast[1].iter().any(|&g| g != 0.0));
    assert_eq!(fast, generic, "fast and generic add_relu agree exactly");
}
