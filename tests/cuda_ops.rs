//! The CUDA path against the CPU path (feature `cuda`; needs a GPU, so CI only builds it).
//!
//! On `Cuda` every op of `spatial_reasoning::ops` runs the CUDA path (`ops::cuda`: cuDNN
//! convolutions, the fused kernels of `src/ops/kernels.cu`); on `Cpu` the fast kernels, which
//! `tests/ops_grad.rs` checks against finite differences and against the generic path. Here each
//! op's output and the gradients of `L = Σ r ⊙ op(x)` (fixed random `r`) must agree between the
//! two devices, on shapes large enough to launch many GPU blocks; then a whole backbone: features
//! and the input gradient of one training forward. Also: TF32 convolutions (looser tolerance),
//! the generic path still running on `Cuda`, the optimiser's device path (dfdx's reference Adam
//! trajectory, SGD by hand, the non-finite check, state round trip), and that training steps
//! reuse device memory (the pool's reserved bytes stop growing) and plan each geometry once.
//!
//! Run single-threaded (`--test-threads=1`, as `scripts/gpu-check.sh` does): the TF32 switch and
//! the profiler are process-wide.
//!
//! Tolerance: `|gpu − cpu| ≤ 1e-4 · max|cpu| + 1e-6` per element. Both sides are f32 with
//! different summation orders (cuBLAS vs `gemm`), whose error grows like √n·ε ≈ 1e-5 relative
//! for the longest sums here (n = 8192); a wrong index or missing term is off by O(1) relative.
//! Except ResNet-32's input gradient, compared as a whole vector (see [`assert_close_l2`]).
//!
//! Build it without a GPU with `scripts/cuda-build.sh`; `scripts/gpu-check.sh` runs it.
#![cfg(feature = "cuda")]

use dfdx::prelude::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use spatial_reasoning::models::{self, Backbone, BuildBackbone, Images};
use spatial_reasoning::ops::{self, BnMode, BnParams, ConvWeight, OpsDevice, Precision};

fn gpu() -> Cuda {
    spatial_reasoning::new_device(0).unwrap_or_else(|e| panic!("cuda_ops needs a GPU: {e}"))
}

fn randv(rng: &mut ChaCha8Rng, n: usize, scale: f32) -> Vec<f32> {
    (0..n)
        .map(|_| rng.gen_range(-1.0f32..1.0) * scale)
        .collect()
}

fn assert_close(what: &str, gpu: &[f32], cpu: &[f32]) {
    assert_eq!(gpu.len(), cpu.len(), "{what}: length");
    assert!(!cpu.is_empty(), "{what}: empty");
    let scale = cpu.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    let tol = 1e-4 * scale + 1e-6;
    let (i, diff) = gpu
        .iter()
        .zip(cpu)
        .map(|(g, c)| (g - c).abs())
        .enumerate()
        .fold((0, 0.0f32), |a, (i, d)| if d > a.1 { (i, d) } else { a });
    assert!(
        diff <= tol && gpu.iter().all(|v| v.is_finite()),
        "{what}[{i}]: gpu {} cpu {} (|diff| {diff}, tolerance {tol})",
        gpu[i],
        cpu[i]
    );
    eprintln!("{what}: max |gpu - cpu| {diff:.2e} (max |cpu| {scale:.2e})");
}

/// Output and gradients (x, w) of `Σ r ⊙ conv2d(x, w)` on `dev`.
#[allow(clippy::too_many_arguments)]
fn conv_run<D: OpsDevice, const I: usize, const O: usize, const K: usize>(
    dev: &D,
    (b, h, w): (usize, usize, usize),
    xv: &[f32],
    wv: &[f32],
    s: usize,
    p: usize,
    r: &[f32],
) -> [Vec<f32>; 3] {
    let x = dev.tensor_from_vec(xv.to_vec(), (b, Const::<I>, h, w));
    let wt: ConvWeight<O, I, K, D> = dev.tensor_from_vec(wv.to_vec(), (Const, Const, Const, Const));
    let y = ops::conv2d(x.clone().leaky_traced(), &wt, s, p, Precision::F32).unwrap();
    let yv = y.as_vec();
    let rt = dev.tensor_from_vec(r.to_vec(), *y.shape());
    let g = y.try_mul(rt).unwrap().sum().backward();
    [yv, g.get(&x).as_vec(), g.get(&wt).as_vec()]
}

fn conv_case<const I: usize, const O: usize, const K: usize>(
    dims: (usize, usize, usize),
    s: usize,
    p: usize,
) {
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    let (b, h, w) = dims;
    let xv = randv(&mut rng, b * I * h * w, 1.0);
    let wv = randv(&mut rng, O * I * K * K, 0.5);
    let n = b * O * ops::out_size(h, K, s, p) * ops::out_size(w, K, s, p);
    let r = randv(&mut rng, n, 1.0);
    let c = conv_run::<Cpu, I, O, K>(&Cpu::default(), dims, &xv, &wv, s, p, &r);
    let g = conv_run::<Cuda, I, O, K>(&gpu(), dims, &xv, &wv, s, p, &r);
    let tag = format!("conv {I}->{O} k{K} s{s} p{p} {dims:?}");
    for (name, i) in [("y", 0), ("dx", 1), ("dw", 2)] {
        assert_close(&format!("{tag} {name}"), &g[i], &c[i]);
    }
}

#[test]
fn conv2d_cuda_matches_cpu() {
    // ResNet-32's geometries: 3x3 stride 1 and 2, the 1x1 stride-2 shortcut; the stem.
    conv_case::<16, 16, 3>((8, 32, 32), 1, 1);
    conv_case::<16, 32, 3>((8, 32, 32), 2, 1);
    conv_case::<16, 32, 1>((8, 32, 32), 2, 0);
    conv_case::<3, 16, 3>((8, 32, 32), 1, 1);
    // Odd sizes and no padding.
    conv_case::<5, 7, 3>((3, 9, 7), 1, 0);
}

/// Output, gradients (x, weight, bias) and running statistics of batch-norm on `dev`.
#[allow(clippy::too_many_arguments)]
fn bn_run<D: OpsDevice, const C: usize>(
    dev: &D,
    (b, h, w): (usize, usize, usize),
    xv: &[f32],
    gv: &[f32],
    bv: &[f32],
    rs: (&[f32], &[f32]),
    mode: BnMode,
    relu: bool,
    r: &[f32],
) -> [Vec<f32>; 6] {
    let x = dev.tensor_from_vec(xv.to_vec(), (b, Const::<C>, h, w));
    let weight: Tensor<Rank1<C>, f32, D> = dev.tensor_from_vec(gv.to_vec(), (Const,));
    let bias: Tensor<Rank1<C>, f32, D> = dev.tensor_from_vec(bv.to_vec(), (Const,));
    let mut rm: Tensor<Rank1<C>, f32, D> = dev.tensor_from_vec(rs.0.to_vec(), (Const,));
    let mut rv: Tensor<Rank1<C>, f32, D> = dev.tensor_from_vec(rs.1.to_vec(), (Const,));
    let params = BnParams {
        weight: &weight,
        bias: &bias,
        running_mean: &mut rm,
        running_var: &mut rv,
    };
    let y = ops::batch_norm2d(x.clone().leaky_traced(), params, mode, relu).unwrap();
    let yv = y.as_vec();
    let rt = dev.tensor_from_vec(r.to_vec(), *y.shape());
    let g = y.try_mul(rt).unwrap().sum().backward();
    [
        yv,
        g.get(&x).as_vec(),
        g.get(&weight).as_vec(),
        g.get(&bias).as_vec(),
        rm.as_vec(),
        rv.as_vec(),
    ]
}

#[test]
fn batch_norm2d_cuda_matches_cpu() {
    const C: usize = 16;
    let dims = (8, 16, 16);
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    let xv: Vec<f32> = randv(&mut rng, 8 * C * 256, 3.0)
        .iter()
        .map(|v| v + 1.0)
        .collect();
    let gv = randv(&mut rng, C, 1.5);
    let bv = randv(&mut rng, C, 0.5);
    let rm = randv(&mut rng, C, 0.5);
    let rv: Vec<f32> = randv(&mut rng, C, 0.5).iter().map(|v| v + 1.0).collect();
    let r = randv(&mut rng, xv.len(), 1.0);
    let (cpu, cuda) = (Cpu::default(), gpu());
    for mode in [BnMode::Train, BnMode::Eval] {
        for relu in [false, true] {
            let rs = (&rm[..], &rv[..]);
            let c = bn_run::<Cpu, C>(&cpu, dims, &xv, &gv, &bv, rs, mode, relu, &r);
            let g = bn_run::<Cuda, C>(&cuda, dims, &xv, &gv, &bv, rs, mode, relu, &r);
            let names = ["y", "dx", "dweight", "dbias", "running_mean", "running_var"];
            for (i, name) in names.iter().enumerate() {
                assert_close(&format!("bn {mode:?} relu={relu} {name}"), &g[i], &c[i]);
            }
        }
    }
}

/// Which single-input op [`unary_run`] applies.
#[derive(Clone, Copy, Debug)]
#[allow(clippy::enum_variant_names)]
enum Unary {
    AvgPool,
    MaxPool,
    GlobalAvgPool,
}

/// Output and input gradient of `Σ r ⊙ op(x)` on `dev`; `r` is cycled to the output length.
fn unary_run<D: OpsDevice>(
    dev: &D,
    op: Unary,
    (b, h, w): (usize, usize, usize),
    xv: &[f32],
    r: &[f32],
) -> [Vec<f32>; 2] {
    const C: usize = 8;
    let x = dev.tensor_from_vec(xv.to_vec(), (b, Const::<C>, h, w));
    let t = x.clone().leaky_traced();
    let weigh = |n: usize| r.iter().copied().cycle().take(n).collect::<Vec<f32>>();
    let (yv, g) = match op {
        Unary::AvgPool | Unary::MaxPool => {
            let y = match op {
                Unary::AvgPool => ops::avg_pool2x2(t),
                _ => ops::max_pool2x2(t),
            }
            .unwrap();
            let yv = y.as_vec();
            let rt = dev.tensor_from_vec(weigh(yv.len()), *y.shape());
            (yv, y.try_mul(rt).unwrap().sum().backward())
        }
        Unary::GlobalAvgPool => {
            let y = ops::global_avg_pool(t).unwrap();
            let yv = y.as_vec();
            let rt = dev.tensor_from_vec(weigh(yv.len()), *y.shape());
            (yv, y.try_mul(rt).unwrap().sum().backward())
        }
    };
    [yv, g.get(&x).as_vec()]
}

#[test]
fn pooling_cuda_matches_cpu() {
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    // Odd height: the last row is dropped by the 2x2 pools.
    for dims in [(8, 32, 32), (3, 9, 6)] {
        let xv = randv(&mut rng, dims.0 * 8 * dims.1 * dims.2, 2.0);
        let r = randv(&mut rng, xv.len(), 1.0);
        for op in [Unary::AvgPool, Unary::MaxPool, Unary::GlobalAvgPool] {
            let c = unary_run(&Cpu::default(), op, dims, &xv, &r);
            let g = unary_run(&gpu(), op, dims, &xv, &r);
            assert_close(&format!("{op:?} {dims:?} y"), &g[0], &c[0]);
            assert_close(&format!("{op:?} {dims:?} dx"), &g[1], &c[1]);
        }
    }
}

/// Output and gradients (a, b) of `Σ r ⊙ relu(a + b)` on `dev`.
fn add_relu_run<D: OpsDevice>(dev: &D, av: &[f32], bv: &[f32], r: &[f32]) -> [Vec<f32>; 3] {
    let shape = (4, Const::<16>, 8, 8);
    let a = dev.tensor_from_vec(av.to_vec(), shape);
    let b = dev.tensor_from_vec(bv.to_vec(), shape);
    // Both operands carry (separate) tapes, as in a residual block.
    let y = ops::add_relu(a.clone().leaky_traced(), b.clone().leaky_traced()).unwrap();
    let yv = y.as_vec();
    let rt = dev.tensor_from_vec(r.to_vec(), shape);
    let g = y.try_mul(rt).unwrap().sum().backward();
    [yv, g.get(&a).as_vec(), g.get(&b).as_vec()]
}

#[test]
fn add_relu_cuda_matches_cpu() {
    let mut rng = ChaCha8Rng::seed_from_u64(9);
    let n = 4 * 16 * 8 * 8;
    let (av, bv, r) = (
        randv(&mut rng, n, 1.0),
        randv(&mut rng, n, 1.0),
        randv(&mut rng, n, 1.0),
    );
    let c = add_relu_run(&Cpu::default(), &av, &bv, &r);
    let g = add_relu_run(&gpu(), &av, &bv, &r);
    for (name, i) in [("y", 0), ("da", 1), ("db", 2)] {
        assert_close(&format!("add_relu {name}"), &g[i], &c[i]);
    }
}

/// Features and input gradient of `mean(features²)` after one training forward of `M`.
fn backbone_run<D: OpsDevice, M: BuildBackbone<D>>(dev: &D, xv: &[f32], b: usize) -> [Vec<f32>; 2] {
    let mut model = models::build::<M, D>(dev, 7).unwrap();
    let x: Images<D> = dev.tensor_from_vec(xv.to_vec(), (b, Const::<3>, 32, 32));
    let f = model.forward_train(x.clone().leaky_traced()).unwrap();
    let fv = f.as_vec();
    let g = f.square().mean().backward();
    [fv, g.get(&x).as_vec()]
}

#[test]
fn backbones_cuda_match_cpu() {
    let b = 16;
    let mut rng = ChaCha8Rng::seed_from_u64(21);
    let xv = randv(&mut rng, b * 3 * 32 * 32, 2.0);
    let c = backbone_run::<Cpu, models::Conv4<Cpu>>(&Cpu::default(), &xv, b);
    let g = backbone_run::<Cuda, models::Conv4<Cuda>>(&gpu(), &xv, b);
    assert_close("conv4 features", &g[0], &c[0]);
    assert_close("conv4 dx", &g[1], &c[1]);
    let c = backbone_run::<Cpu, models::ResNet32<Cpu>>(&Cpu::default(), &xv, b);
    let g = backbone_run::<Cuda, models::ResNet32<Cuda>>(&gpu(), &xv, b);
    assert_close("resnet32 features", &g[0], &c[0]);
    assert_close_l2("resnet32 dx", &g[1], &c[1], 2e-2);
}

/// Whole-vector agreement `‖gpu − cpu‖₂ ≤ tol · ‖cpu‖₂`, for a gradient that is not
/// elementwise stable. ResNet-32's input gradient (batch-norm in training mode, 31 ReLU layers)
/// is not: on the CPU alone, scaling every seventh input by (1 + 1e-7) moved 2,460 of its
/// 49,152 elements by more than `assert_close`'s tolerance and the whole vector by 3.6e-3
/// relative (L2) — ReLUs at a pre-activation of ~0 flip — and the first GPU run differed from the
/// CPU at exactly such an element (dx[39365]: gpu −0.0017966, cpu −0.0017368, perturbed CPU
/// −0.0017966). A wrong index or a missing term is off by O(1).
fn assert_close_l2(what: &str, gpu: &[f32], cpu: &[f32], tol: f64) {
    assert_eq!(gpu.len(), cpu.len(), "{what}: length");
    assert!(gpu.iter().all(|v| v.is_finite()), "{what}: non-finite");
    let diff: f64 = gpu
        .iter()
        .zip(cpu)
        .map(|(g, c)| ((g - c) as f64).powi(2))
        .sum::<f64>()
        .sqrt();
    let norm: f64 = cpu.iter().map(|c| (*c as f64).powi(2)).sum::<f64>().sqrt();
    assert!(norm > 0.0, "{what}: zero gradient");
    let rel = diff / norm;
    assert!(
        rel <= tol,
        "{what}: relative L2 difference {rel:.2e} > {tol:.0e}"
    );
    eprintln!("{what}: relative L2 |gpu - cpu| {rel:.2e} (tolerance {tol:.0e})");
}

/// Conv-4's and ResNet's first convolution with TF32 allowed: close to the FMA (default) result
/// within TF32's precision (10-bit mantissa: ~1e-3 relative per product, summed); each geometry
/// is planned once per math mode.
#[test]
fn conv2d_tf32_is_close_and_plans_are_cached() {
    let dev = gpu();
    let mut rng = ChaCha8Rng::seed_from_u64(13);
    let (b, h, w) = (16, 32, 32);
    let xv = randv(&mut rng, b * 16 * h * w, 1.0);
    let wv = randv(&mut rng, 16 * 16 * 9, 0.5);
    let r = randv(&mut rng, b * 16 * h * w, 1.0);
    ops::cuda::set_tf32(false);
    let before = ops::cuda::conv_plans(&dev).unwrap();
    let fma = conv_run::<Cuda, 16, 16, 3>(&dev, (b, h, w), &xv, &wv, 1, 1, &r);
    let again = conv_run::<Cuda, 16, 16, 3>(&dev, (b, h, w), &xv, &wv, 1, 1, &r);
    assert_eq!(
        ops::cuda::conv_plans(&dev).unwrap(),
        before + 1,
        "one plan per geometry"
    );
    ops::cuda::set_tf32(true);
    let tf32 = conv_run::<Cuda, 16, 16, 3>(&dev, (b, h, w), &xv, &wv, 1, 1, &r);
    ops::cuda::set_tf32(false);
    assert_eq!(
        ops::cuda::conv_plans(&dev).unwrap(),
        before + 2,
        "one more for TF32"
    );
    for (name, i) in [("y", 0), ("dx", 1), ("dw", 2)] {
        // The same plan twice: the same algorithms (backward-filter ones may accumulate in a
        // different order run to run), so equal up to rounding.
        assert_close(&format!("conv fma repeat {name}"), &again[i], &fma[i]);
        let scale = fma[i].iter().fold(0.0f32, |m, v| m.max(v.abs()));
        let diff = tf32[i]
            .iter()
            .zip(&fma[i])
            .fold(0.0f32, |m, (a, b)| m.max((a - b).abs()));
        eprintln!("conv tf32 vs fma {name}: max diff {diff:.2e} (max {scale:.2e})");
        assert!(
            diff <= 2e-2 * scale,
            "TF32 {name} off by {diff} (max {scale})"
        );
    }
}

/// Larger batch-norm (many blocks per channel), max pooling with ties, on both devices.
#[test]
fn batch_norm_many_slices_and_max_pool_ties_match_cpu() {
    const C: usize = 16;
    let dims = (64, 32, 32); // 65,536 values per channel: 64 slices per channel
    let mut rng = ChaCha8Rng::seed_from_u64(17);
    let xv: Vec<f32> = randv(&mut rng, 64 * C * 1024, 2.0)
        .iter()
        .map(|v| v - 0.5)
        .collect();
    let gv = randv(&mut rng, C, 1.5);
    let bv = randv(&mut rng, C, 0.5);
    let rm = randv(&mut rng, C, 0.5);
    let rv: Vec<f32> = randv(&mut rng, C, 0.5).iter().map(|v| v + 1.0).collect();
    let r = randv(&mut rng, xv.len(), 1.0);
    let rs = (&rm[..], &rv[..]);
    for relu in [false, true] {
        let c = bn_run::<Cpu, C>(
            &Cpu::default(),
            dims,
            &xv,
            &gv,
            &bv,
            rs,
            BnMode::Train,
            relu,
            &r,
        );
        let g = bn_run::<Cuda, C>(&gpu(), dims, &xv, &gv, &bv, rs, BnMode::Train, relu, &r);
        let names = ["y", "dx", "dweight", "dbias", "running_mean", "running_var"];
        for (i, name) in names.iter().enumerate() {
            assert_close(&format!("bn large relu={relu} {name}"), &g[i], &c[i]);
        }
    }
    // Ties: values on a coarse grid, so many windows have several maxima.
    let dims = (8, 16, 16);
    let xv: Vec<f32> = randv(&mut rng, 8 * 8 * 256, 2.0)
        .iter()
        .map(|v| v.round())
        .collect();
    let r = randv(&mut rng, xv.len(), 1.0);
    let c = unary_run(&Cpu::default(), Unary::MaxPool, dims, &xv, &r);
    let g = unary_run(&gpu(), Unary::MaxPool, dims, &xv, &r);
    assert_close("max pool ties y", &g[0], &c[0]);
    assert_close("max pool ties dx", &g[1], &c[1]);
}

/// The device-generic path stays callable on `Cuda` and agrees with the CUDA path.
#[test]
fn generic_path_still_runs_on_cuda() {
    let dev = gpu();
    let mut rng = ChaCha8Rng::seed_from_u64(19);
    let (b, h, w) = (4, 12, 12);
    let xv = randv(&mut rng, b * 8 * h * w, 1.0);
    let wv = randv(&mut rng, 16 * 8 * 9, 0.5);
    let x = dev.tensor_from_vec(xv, (b, Const::<8>, h, w));
    let wt: ConvWeight<16, 8, 3, Cuda> = dev.tensor_from_vec(wv, (Const, Const, Const, Const));
    let fast = ops::conv2d(x.clone(), &wt, 2, 1, Precision::F32)
        .unwrap()
        .as_vec();
    let generic = ops::generic::conv2d(x.clone(), &wt, 2, 1).unwrap().as_vec();
    assert_close("generic vs cuda conv", &generic, &fast);
    let pooled = ops::generic::global_avg_pool(x.clone()).unwrap().as_vec();
    let fused = ops::global_avg_pool(x).unwrap().as_vec();
    assert_close("generic vs cuda global pool", &pooled, &fused);
}

/// The optimiser's device path follows dfdx's reference Adam trajectory (as the host path's unit
/// test does) and PyTorch's SGD with momentum (computed by hand).
#[test]
fn optimizer_on_cuda_follows_the_reference_trajectories() {
    use spatial_reasoning::config::{OptimConfig, OptimizerKind};
    use spatial_reasoning::optim::Optimizer;
    let dev = gpu();
    let mut t: Tensor<Rank1<5>, f32, Cuda> = dev.ones();
    let rate = dev.tensor([1e-6f32, 1e-5, 1e-4, 1e-3, 1e-2]);
    let expected = [
        [0.99999994f32, 0.999996, 0.9997143, 0.9990244, 0.99900025],
        [0.9999999, 0.999992, 0.99942863, 0.99804884, 0.9980005],
        [0.9999998, 0.999988, 0.999143, 0.9970733, 0.9970008],
    ];
    let mut opt = Optimizer::new(OptimConfig::default());
    for e in expected {
        let mut g = (t.leaky_trace() * rate.clone()).square().mean().backward();
        opt.step(&mut t, &mut g).unwrap();
        let got = t.array();
        for (a, b) in got.iter().zip(e) {
            assert!((a - b).abs() < 1e-6, "adam on cuda: {got:?} vs {e:?}");
        }
    }
    // SGD(lr 0.1, momentum 0.9) on 0.5 p², p0 = 1: 0.9, then 0.72.
    let mut p: Tensor<Rank1<1>, f32, Cuda> = dev.ones();
    let mut sgd = Optimizer::new(OptimConfig {
        name: OptimizerKind::Sgd,
        lr: 0.1,
        momentum: 0.9,
        ..Default::default()
    });
    for want in [0.9f32, 0.72] {
        let mut g = (p.leaky_trace().square() * 0.5).sum().backward();
        sgd.step(&mut p, &mut g).unwrap();
        assert!(
            (p.array()[0] - want).abs() < 1e-6,
            "sgd on cuda: {:?}",
            p.array()
        );
    }
}

/// A non-finite gradient changes nothing on the device either; the state read back from the GPU
/// resumes bit-identically on a fresh optimiser (uploaded again), as on the host.
#[test]
fn optimizer_on_cuda_refuses_nonfinite_and_round_trips_state() {
    use spatial_reasoning::config::OptimConfig;
    use spatial_reasoning::optim::{OptimError, Optimizer};
    let dev = gpu();
    let mut t: Tensor<Rank1<2>, f32, Cuda> = dev.tensor([1.0, -1.0]);
    let mut opt = Optimizer::new(OptimConfig::default());
    let mut g = t.leaky_trace().sqrt().sum().backward(); // sqrt(-1): NaN gradient
    let err = opt.step(&mut t, &mut g).unwrap_err();
    assert!(
        matches!(err, OptimError::NonFiniteGradient { index: 0, count: 1 }),
        "{err}"
    );
    assert_eq!(t.array(), [1.0, -1.0]);
    assert_eq!(opt.step_count(), 0);

    let target = dev.tensor([0.5f32, -2.0, 3.0]);
    let loss = |t: &Tensor<Rank1<3>, f32, Cuda>| {
        (t.leaky_trace() - target.clone()).square().sum().backward()
    };
    let mut a: Tensor<Rank1<3>, f32, Cuda> = dev.ones();
    let mut opt_a = Optimizer::new(OptimConfig::default());
    for _ in 0..3 {
        let mut g = loss(&a);
        opt_a.step(&mut a, &mut g).unwrap();
    }
    let saved_p = a.as_vec();
    let saved = opt_a.state().clone();
    assert_eq!(saved.step, 3);
    assert!(
        saved.m[0].iter().all(|m| *m != 0.0),
        "moments read back: {saved:?}"
    );
    for _ in 0..3 {
        let mut g = loss(&a);
        opt_a.step(&mut a, &mut g).unwrap();
    }
    let mut b: Tensor<Rank1<3>, f32, Cuda> = dev.zeros();
    b.copy_from(&saved_p);
    let mut opt_b = Optimizer::new(OptimConfig::default());
    opt_b.load_state(saved);
    for _ in 0..3 {
        let mut g = loss(&b);
        opt_b.step(&mut b, &mut g).unwrap();
    }
    assert_eq!(
        a.as_vec(),
        b.as_vec(),
        "bit-identical after resume on the GPU"
    );
}

/// Training steps of ResNet-8 with the crate's optimiser: from step 4 on the memory pool's
/// reserved bytes stay constant (every allocation of a step is served from memory freed by the
/// previous one; the pool keeps freed memory, so an allocation it could not serve would show as
/// growth), the convolutions are planned once, the loss stays finite and falls, and the profiler
/// sees every op of the step.
#[test]
fn training_steps_reuse_device_memory() {
    use spatial_reasoning::optim::Optimizer;
    let dev = gpu();
    let b = 64;
    let mut rng = ChaCha8Rng::seed_from_u64(23);
    let xv = randv(&mut rng, b * 3 * 32 * 32, 1.0);
    let x: Images<Cuda> = dev.tensor_from_vec(xv, (b, Const::<3>, 32, 32));
    let mut model = models::build::<models::ResNet8<Cuda>, Cuda>(&dev, 3).unwrap();
    let mut opt = Optimizer::new(Default::default());
    let mut reserved = Vec::new();
    let mut losses = Vec::new();
    let mut plans = Vec::new();
    for step in 0..6 {
        if step == 4 {
            ops::cuda::profile::enable(true);
        }
        let grads = model.alloc_grads();
        let f = model.forward_train(x.clone().traced(grads)).unwrap();
        let loss = f.square().mean();
        losses.push(loss.array());
        let mut grads = loss.backward();
        opt.step(&mut model, &mut grads).unwrap();
        dev.synchronize();
        reserved.push(ops::cuda::reserved_memory(&dev).unwrap());
        plans.push(ops::cuda::conv_plans(&dev).unwrap());
    }
    let profile = ops::cuda::profile::report(&dev).unwrap();
    ops::cuda::profile::enable(false);
    eprintln!("reserved bytes per step {reserved:?}; losses {losses:?}; plans {plans:?}");
    eprintln!("profile (steps 5-6): {profile:?}");
    assert!(
        losses.iter().all(|l| l.is_finite()) && losses[5] < losses[0],
        "{losses:?}"
    );
    assert!(
        reserved[3..].windows(2).all(|w| w[1] <= w[0]),
        "the pool grew after step 4: {reserved:?}"
    );
    assert!(plans[1..].iter().all(|&p| p == plans[0]), "{plans:?}");
    for op in [
        "conv.fwd",
        "conv.bwd_data",
        "conv.bwd_filter",
        "bn.fwd",
        "bn.bwd",
    ] {
        assert!(
            profile.iter().any(|o| o.name == op),
            "{op} missing: {profile:?}"
        );
    }
    for op in ["add_relu.fwd", "gap.fwd", "optim.check", "optim.update"] {
        assert!(
            profile.iter().any(|o| o.name == op),
            "{op} missing: {profile:?}"
        );
    }
}
