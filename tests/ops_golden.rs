//! Golden values from PyTorch 2.15 (float64 on the host) for conv2d and batch_norm2d, on both
//! paths. The inputs are closed-form sequences so the Python below reproduces them exactly:
//!
//! ```python
//! import torch, math
//! def seq(n, f): return torch.tensor([f(i) for i in range(n)], dtype=torch.float64)
//! for (s, p, k) in [(2, 1, 3), (1, 1, 3), (2, 0, 1)]:
//!     x = seq(150, lambda i: math.sin(0.37 * i)).reshape(2, 3, 5, 5).requires_grad_()
//!     w = seq(4*3*k*k, lambda i: 0.3 * math.cos(0.11 * i)).reshape(4, 3, k, k).requires_grad_()
//!     y = torch.nn.functional.conv2d(x, w, stride=s, padding=p)
//!     r = seq(y.numel(), lambda i: math.cos(0.5 * i)).reshape(y.shape)
//!     (y * r).sum().backward()
//!     yf, gx, gw = y.flatten(), x.grad.flatten(), w.grad.flatten()
//!     print(f"conv s{s} p{p} k{k} shape {list(y.shape)}")
//!     print(" y", [round(yf[i].item(), 6) for i in [0, 7, 33, yf.numel()-1]], "sum", round(yf.sum().item(), 6))
//!     print(" gx", [round(gx[i].item(), 6) for i in [0, 13, 77, 149]], "sum", round(gx.sum().item(), 6))
//!     print(" gw", [round(gw[i].item(), 6) for i in [0, 5, gw.numel()-1]], "sum", round(gw.sum().item(), 6))
//! x = seq(48, lambda i: math.sin(0.37 * i) * (1 + 0.1 * i)).reshape(4, 3, 2, 2).requires_grad_()
//! bn = torch.nn.BatchNorm2d(3).double()
//! with torch.no_grad():
//!     bn.weight.copy_(torch.tensor([1.5, -0.7, 0.9])); bn.bias.copy_(torch.tensor([0.1, 0.2, -0.3]))
//! bn.train()
//! y = bn(x)
//! r = seq(48, lambda i: math.cos(0.5 * i)).reshape(4, 3, 2, 2)
//! (y * r).sum().backward()
//! yf, gx = y.flatten(), x.grad.flatten()
//! print("bn train y", [round(yf[i].item(), 6) for i in [0, 5, 22, 47]], "sum", round(yf.sum().item(), 6))
//! print(" gx", [round(gx[i].item(), 6) for i in [0, 5, 22, 47]], "sum", round(gx.sum().item(), 6))
//! print(" gweight", [round(v, 6) for v in bn.weight.grad.tolist()], "gbias", [round(v, 6) for v in bn.bias.grad.tolist()])
//! print(" running_mean", [round(v, 7) for v in bn.running_mean.tolist()], "running_var", [round(v, 7) for v in bn.running_var.tolist()])
//! bn.eval()
//! ye = bn(x.detach()).flatten()
//! print("bn eval y", [round(ye[i].item(), 6) for i in [0, 5, 22, 47]])
//! ```
//!
//! Printed (the values asserted below):
//! ```text
//! conv s2 p1 k3 shape [2, 4, 3, 3]
//!  y [0.112251, 0.19381, -0.136023, 0.091357] sum -0.075665
//!  gx [-0.117637, -0.107356, -0.053892, 0.072345] sum 0.477775
//!  gw [-1.568111, 1.366802, -0.836236] sum -0.620835
//! conv s1 p1 k3 shape [2, 4, 5, 5]
//!  y [0.112251, -0.070405, 0.084197, 0.091357] sum -0.118251
//!  gx [-0.105678, 0.012344, -0.14957, 0.024666] sum 2.361877
//!  gw [-1.004017, 1.419432, 0.417969] sum -2.620035
//! conv s2 p0 k1 shape [2, 4, 3, 3]
//!  y [-0.048416, 0.283647, 0.111395, -0.120134] sum 0.497026
//!  gx [0.122166, 0.0, 0.098525, -0.128461] sum 1.140978
//!  gw [1.675888, -1.851371, 2.044426] sum 0.994782
//! bn train y [-0.31657, -0.246155, 0.910096, -1.843525] sum -0.0
//!  gx [0.150364, 0.084533, 0.039278, 0.151082] sum -0.0
//!  gweight [0.42117, 0.937222, 2.20152] gbias [12.254298, -8.856885, -4.882769]
//!  running_mean [0.0668824, -0.0061867, -0.076855] running_var [1.5186672, 1.4937741, 1.7693758]
//! bn eval y [0.018591, -0.629378, 1.829158, -4.080776]
//! ```

use dfdx::prelude::*;
use spatial_reasoning::ops::{cpu, generic, BnMode, BnParams, ConvWeight, Precision};

fn seq(n: usize, f: impl Fn(f64) -> f64) -> Vec<f32> {
    (0..n).map(|i| f(i as f64) as f32).collect()
}

fn pick(v: &[f32], idx: &[usize]) -> Vec<f32> {
    idx.iter().map(|&i| v[i]).collect()
}

fn sum(v: &[f32]) -> f32 {
    v.iter().map(|&x| x as f64).sum::<f64>() as f32
}

fn close(what: &str, got: &[f32], want: &[f32], tol: f32) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!((g - w).abs() <= tol, "{what}[{i}]: got {g}, PyTorch {w}");
    }
}

#[derive(Clone, Copy, Debug)]
enum Path {
    Fast,
    Generic,
}

struct ConvGolden {
    s: usize,
    p: usize,
    out_hw: usize,
    y: [f32; 4],
    y_sum: f32,
    gx: [f32; 4],
    gx_sum: f32,
    gw: [f32; 3],
    gw_sum: f32,
}

fn conv_case<const K: usize>(path: Path, g: &ConvGolden) {
    let dev = Cpu::default();
    let x = dev.tensor_from_vec(seq(150, |i| (0.37 * i).sin()), (2, Const::<3>, 5, 5));
    let w: ConvWeight<4, 3, K, Cpu> = dev.tensor_from_vec(
        seq(4 * 3 * K * K, |i| 0.3 * (0.11 * i).cos()),
        (Const, Const, Const, Const),
    );
    let y = match path {
        Path::Fast => cpu::conv2d(
            x.clone().leaky_traced(),
            &w,
            g.s,
            g.p,
            cpu::ConvRoute::fastest(Precision::F32),
        )
        .unwrap(),
        Path::Generic => generic::conv2d(x.clone().leaky_traced(), &w, g.s, g.p).unwrap(),
    };
    assert_eq!(*y.shape(), (2, Const::<4>, g.out_hw, g.out_hw));
    let yv = y.as_vec();
    let r = dev.tensor_from_vec(seq(yv.len(), |i| (0.5 * i).cos()), *y.shape());
    let grads = y.try_mul(r).unwrap().sum().backward();
    let (gx, gw) = (grads.get(&x).as_vec(), grads.get(&w).as_vec());
    let tag = format!("{path:?} k{K} s{} p{}", g.s, g.p);
    close(
        &format!("{tag} y"),
        &pick(&yv, &[0, 7, 33, yv.len() - 1]),
        &g.y,
        2e-6,
    );
    close(&format!("{tag} y sum"), &[sum(&yv)], &[g.y_sum], 2e-5);
    close(
        &format!("{tag} dx"),
        &pick(&gx, &[0, 13, 77, 149]),
        &g.gx,
        2e-6,
    );
    close(&format!("{tag} dx sum"), &[sum(&gx)], &[g.gx_sum], 2e-5);
    close(
        &format!("{tag} dw"),
        &pick(&gw, &[0, 5, gw.len() - 1]),
        &g.gw,
        5e-6,
    );
    close(&format!("{tag} dw sum"), &[sum(&gw)], &[g.gw_sum], 5e-5);
}

#[test]
fn conv2d_matches_pytorch() {
    let s2p1 = ConvGolden {
        s: 2,
        p: 1,
        out_hw: 3,
        y: [0.112251, 0.19381, -0.136023, 0.091357],
        y_sum: -0.075665,
        gx: [-0.117637, -0.107356, -0.053892, 0.072345],
        gx_sum: 0.477775,
        gw: [-1.568111, 1.366802, -0.836236],
        gw_sum: -0.620835,
    };
    let s1p1 = ConvGolden {
        s: 1,
        p: 1,
        out_hw: 5,
        y: [0.112251, -0.070405, 0.084197, 0.091357],
        y_sum: -0.118251,
        gx: [-0.105678, 0.012344, -0.14957, 0.024666],
        gx_sum: 2.361877,
        gw: [-1.004017, 1.419432, 0.417969],
        gw_sum: -2.620035,
    };
    let s2p0 = ConvGolden {
        s: 2,
        p: 0,
        out_hw: 3,
        y: [-0.048416, 0.283647, 0.111395, -0.120134],
        y_sum: 0.497026,
        gx: [0.122166, 0.0, 0.098525, -0.128461],
        gx_sum: 1.140978,
        gw: [1.675888, -1.851371, 2.044426],
        gw_sum: 0.994782,
    };
    for path in [Path::Fast, Path::Generic] {
        conv_case::<3>(path, &s2p1);
        conv_case::<3>(path, &s1p1);
        conv_case::<1>(path, &s2p0);
    }
}

#[test]
fn batch_norm2d_matches_pytorch() {
    let dev = Cpu::default();
    for path in [Path::Fast, Path::Generic] {
        let x = dev.tensor_from_vec(
            seq(48, |i| (0.37 * i).sin() * (1.0 + 0.1 * i)),
            (4, Const::<3>, 2, 2),
        );
        let weight: Tensor<Rank1<3>, f32, Cpu> = dev.tensor([1.5, -0.7, 0.9]);
        let bias: Tensor<Rank1<3>, f32, Cpu> = dev.tensor([0.1, 0.2, -0.3]);
        let mut rm: Tensor<Rank1<3>, f32, Cpu> = dev.zeros();
        let mut rv: Tensor<Rank1<3>, f32, Cpu> = dev.ones();
        let bn = BnParams {
            weight: &weight,
            bias: &bias,
            running_mean: &mut rm,
            running_var: &mut rv,
        };
        let y = match path {
            Path::Fast => {
                cpu::batch_norm2d(x.clone().leaky_traced(), bn, BnMode::Train, false).unwrap()
            }
            Path::Generic => {
                generic::batch_norm2d(x.clone().leaky_traced(), bn, BnMode::Train, false).unwrap()
            }
        };
        let yv = y.as_vec();
        let r = dev.tensor_from_vec(seq(48, |i| (0.5 * i).cos()), *y.shape());
        let grads = y.try_mul(r).unwrap().sum().backward();
        let gx = grads.get(&x).as_vec();
        let idx = [0, 5, 22, 47];
        let tag = format!("{path:?} bn train");
        close(
            &format!("{tag} y"),
            &pick(&yv, &idx),
            &[-0.31657, -0.246155, 0.910096, -1.843525],
            3e-6,
        );
        close(&format!("{tag} y sum"), &[sum(&yv)], &[0.0], 2e-5);
        close(
            &format!("{tag} dx"),
            &pick(&gx, &idx),
            &[0.150364, 0.084533, 0.039278, 0.151082],
            3e-6,
        );
        close(&format!("{tag} dx sum"), &[sum(&gx)], &[0.0], 2e-5);
        close(
            &format!("{tag} dweight"),
            &grads.get(&weight).as_vec(),
            &[0.42117, 0.937222, 2.20152],
            1e-5,
        );
        close(
            &format!("{tag} dbias"),
            &grads.get(&bias).as_vec(),
            &[12.254298, -8.856885, -4.882769],
            1e-5,
        );
        close(
            &format!("{tag} running_mean"),
            &rm.as_vec(),
            &[0.0668824, -0.0061867, -0.076855],
            1e-6,
        );
        close(
            &format!("{tag} running_var"),
            &rv.as_vec(),
            &[1.518_667_2, 1.493_774, 1.769_375_8],
            2e-6,
        );

        // Eval mode with the updated running statistics.
        let bn = BnParams {
            weight: &weight,
            bias: &bias,
            running_mean: &mut rm,
            running_var: &mut rv,
        };
        let ye = match path {
            Path::Fast => cpu::batch_norm2d(x.clone(), bn, BnMode::Eval, false).unwrap(),
            Path::Generic => generic::batch_norm2d(x.clone(), bn, BnMode::Eval, false).unwrap(),
        };
        close(
            &format!("{path:?} bn eval y"),
            &pick(&ye.as_vec(), &idx),
            &[0.018591, -0.629378, 1.829158, -4.080776],
            3e-6,
        );
    }
}
