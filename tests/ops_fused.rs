//! The fused CPU ops (`ops::fused`: conv + batch-norm, whole residual blocks) against the
//! op-by-op path they replace (`cpu::conv2d` → `cpu::batch_norm2d` → `cpu::add_relu`): outputs,
//! every gradient and the running statistics agree to the bit, in training (batch statistics, with a tape)
//! and in evaluation (running statistics, no tape), for f32 and bf16 convolutions.

use dfdx::prelude::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use spatial_reasoning::ops::cpu::{self, ConvRoute};
use spatial_reasoning::ops::{fused, Act, BnMode, BnParams, ConvBnParams, Precision};

fn randv(rng: &mut ChaCha8Rng, n: usize, lo: f32, hi: f32) -> Vec<f32> {
    (0..n).map(|_| rng.gen_range(lo..hi)).collect()
}

/// Agreement to the bit (the fused path runs the op-by-op path's arithmetic in the same order;
/// `0.0` and `-0.0` count as equal).
fn assert_close(what: &str, got: &[f32], want: &[f32]) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        assert!(
            g.to_bits() == w.to_bits() || (g == 0.0 && w == 0.0),
            "{what}[{i}]: fused {g}, op-by-op {w} (|diff| {})",
            (g - w).abs()
        );
    }
}

/// One conv + batch-norm layer's tensors.
struct Layer<const I: usize, const O: usize, const K: usize> {
    w: Tensor<(Const<O>, Const<I>, Const<K>, Const<K>), f32, Cpu>,
    g: Tensor<Rank1<O>, f32, Cpu>,
    b: Tensor<Rank1<O>, f32, Cpu>,
    rm: Tensor<Rank1<O>, f32, Cpu>,
    rv: Tensor<Rank1<O>, f32, Cpu>,
    stride: usize,
}

impl<const I: usize, const O: usize, const K: usize> Layer<I, O, K> {
    fn new(dev: &Cpu, seed: u64, stride: usize) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let sd = (2.0 / (O * K * K) as f32).sqrt();
        Self {
            w: dev.tensor_from_vec(
                randv(&mut rng, O * I * K * K, -sd, sd),
                (Const, Const, Const, Const),
            ),
            g: dev.tensor_from_vec(randv(&mut rng, O, 0.5, 1.5), (Const,)),
            b: dev.tensor_from_vec(randv(&mut rng, O, -0.5, 0.5), (Const,)),
            rm: dev.tensor_from_vec(randv(&mut rng, O, -0.2, 0.2), (Const,)),
            rv: dev.tensor_from_vec(randv(&mut rng, O, 0.5, 2.0), (Const,)),
            stride,
        }
    }
    fn params(&mut self) -> ConvBnParams<'_, I, O, K, Cpu> {
        ConvBnParams {
            weight: &self.w,
            stride: self.stride,
            bn: BnParams {
                weight: &self.g,
                bias: &self.b,
                running_mean: &mut self.rm,
                running_var: &mut self.rv,
            },
        }
    }
    fn bn(&mut self) -> BnParams<'_, O, Cpu> {
        BnParams {
            weight: &self.g,
            bias: &self.b,
            running_mean: &mut self.rm,
            running_var: &mut self.rv,
        }
    }
    /// Op by op.
    fn reference<T: Tape<f32, Cpu>>(
        &mut self,
        x: Act<I, Cpu, T>,
        mode: BnMode,
        relu: bool,
        route: ConvRoute,
    ) -> Act<O, Cpu, T> {
        let y = cpu::conv2d(x, &self.w, self.stride, K / 2, route).unwrap();
        cpu::batch_norm2d(y, self.bn(), mode, relu).unwrap()
    }
    /// Output-side values to compare: gradients (if any) and running statistics.
    fn state(&self, g: Option<&Gradients<f32, Cpu>>) -> Vec<(String, Vec<f32>)> {
        let mut v = vec![
            ("running_mean".to_string(), self.rm.as_vec()),
            ("running_var".to_string(), self.rv.as_vec()),
        ];
        if let Some(g) = g {
            v.push(("grad w".into(), g.get(&self.w).as_vec()));
            v.push(("grad gamma".into(), g.get(&self.g).as_vec()));
            v.push(("grad beta".into(), g.get(&self.b).as_vec()));
        }
        v
    }
}

fn compare(tag: &str, a: &[(String, Vec<f32>)], b: &[(String, Vec<f32>)]) {
    for ((na, va), (_, vb)) in a.iter().zip(b) {
        assert_close(&format!("{tag} {na}"), va, vb);
    }
}

fn routes() -> [(Precision, ConvRoute); 2] {
    [
        (Precision::F32, ConvRoute::fastest(Precision::F32)),
        (Precision::Bf16, ConvRoute::fastest(Precision::Bf16)),
    ]
}

#[test]
fn conv_bn_matches_conv_then_batch_norm() {
    let dev = Cpu::default();
    let (b, h, w) = (5, 9, 7);
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let xv = randv(&mut rng, b * 4 * h * w, -1.0, 1.0);
    for (prec, route) in routes() {
        for mode in [BnMode::Train, BnMode::Eval] {
            for relu in [false, true] {
                for stride in [1, 2] {
                    let tag = format!("conv_bn {prec:?} {mode:?} relu {relu} stride {stride}");
                    let mut l1 = Layer::<4, 6, 3>::new(&dev, 11, stride);
                    let mut l2 = Layer::<4, 6, 3>::new(&dev, 11, stride);
                    let x1 = dev.tensor_from_vec(xv.clone(), (b, Const::<4>, h, w));
                    let x2 = dev.tensor_from_vec(xv.clone(), (b, Const::<4>, h, w));
                    // with a tape
                    let yf =
                        fused::conv_bn(x1.clone().leaky_traced(), l1.params(), mode, relu, route)
                            .unwrap();
                    let yr = l2.reference(x2.clone().leaky_traced(), mode, relu, route);
                    assert_close(&format!("{tag} y"), &yf.as_vec(), &yr.as_vec());
                    let rt = dev.tensor_from_vec(
                        randv(&mut rng, yf.shape().num_elements(), -1.0, 1.0),
                        *yf.shape(),
                    );
                    let gf = yf.try_mul(rt.clone()).unwrap().sum().backward();
                    let gr = yr.try_mul(rt).unwrap().sum().backward();
                    assert_close(
                        &format!("{tag} grad x"),
                        &gf.get(&x1).as_vec(),
                        &gr.get(&x2).as_vec(),
                    );
                    compare(&tag, &l1.state(Some(&gf)), &l2.state(Some(&gr)));
                    // without a tape
                    let yf = fused::conv_bn(x1, l1.params(), mode, relu, route).unwrap();
                    let yr = l2.reference(x2, mode, relu, route);
                    assert_close(&format!("{tag} y (no tape)"), &yf.as_vec(), &yr.as_vec());
                    compare(&tag, &l1.state(None), &l2.state(None));
                }
            }
        }
    }
    // the 1×1 projection shortcut's shape
    let mut l1 = Layer::<4, 6, 1>::new(&dev, 5, 2);
    let mut l2 = Layer::<4, 6, 1>::new(&dev, 5, 2);
    let x1 = dev.tensor_from_vec(xv.clone(), (b, Const::<4>, h, w));
    let x2 = dev.tensor_from_vec(xv, (b, Const::<4>, h, w));
    let route = ConvRoute::fastest(Precision::F32);
    let yf = fused::conv_bn(
        x1.clone().leaky_traced(),
        l1.params(),
        BnMode::Train,
        false,
        route,
    )
    .unwrap();
    let yr = l2.reference(x2.clone().leaky_traced(), BnMode::Train, false, route);
    assert_close("conv_bn 1x1 y", &yf.as_vec(), &yr.as_vec());
    let gf = yf.sum().backward();
    let gr = yr.sum().backward();
    assert_close(
        "conv_bn 1x1 grad x",
        &gf.get(&x1).as_vec(),
        &gr.get(&x2).as_vec(),
    );
    compare("conv_bn 1x1", &l1.state(Some(&gf)), &l2.state(Some(&gr)));
}

#[test]
fn basic_block_matches_op_by_op() {
    let dev = Cpu::default();
    let (b, h, w) = (6, 8, 8);
    let mut rng = ChaCha8Rng::seed_from_u64(4);
    let xv = randv(&mut rng, b * 5 * h * w, -1.0, 1.0);
    for (prec, route) in routes() {
        for mode in [BnMode::Train, BnMode::Eval] {
            let tag = format!("basic_block {prec:?} {mode:?}");
            let (mut a1, mut a2) = (
                Layer::<5, 5, 3>::new(&dev, 21, 1),
                Layer::<5, 5, 3>::new(&dev, 22, 1),
            );
            let (mut r1, mut r2) = (
                Layer::<5, 5, 3>::new(&dev, 21, 1),
                Layer::<5, 5, 3>::new(&dev, 22, 1),
            );
            let xf = dev.tensor_from_vec(xv.clone(), (b, Const::<5>, h, w));
            let xr = dev.tensor_from_vec(xv.clone(), (b, Const::<5>, h, w));
            let yf = fused::basic_block(
                xf.clone().leaky_traced(),
                a1.params(),
                a2.params(),
                mode,
                route,
            )
            .unwrap();
            let xt = xr.clone().leaky_traced();
            let y = r1.reference(xt.with_empty_tape(), mode, true, route);
            let y = r2.reference(y, mode, false, route);
            let yr = cpu::add_relu(y, xt).unwrap();
            assert_close(&format!("{tag} y"), &yf.as_vec(), &yr.as_vec());
            let rt = dev.tensor_from_vec(
                randv(&mut rng, yf.shape().num_elements(), -1.0, 1.0),
                *yf.shape(),
            );
            let gf = yf.try_mul(rt.clone()).unwrap().sum().backward();
            let gr = yr.try_mul(rt).unwrap().sum().backward();
            assert_close(
                &format!("{tag} grad x"),
                &gf.get(&xf).as_vec(),
                &gr.get(&xr).as_vec(),
            );
            compare(
                &format!("{tag} conv1"),
                &a1.state(Some(&gf)),
                &r1.state(Some(&gr)),
            );
            compare(
                &format!("{tag} conv2"),
                &a2.state(Some(&gf)),
                &r2.state(Some(&gr)),
            );
            // without a tape
            let yf = fused::basic_block(xf, a1.params(), a2.params(), mode, route).unwrap();
            let y = r1.reference(xr.clone(), mode, true, route);
            let y = r2.reference(y, mode, false, route);
            let yr = cpu::add_relu(y, xr).unwrap();
            assert_close(&format!("{tag} y (no tape)"), &yf.as_vec(), &yr.as_vec());
        }
    }
}

#[test]
fn down_block_matches_op_by_op() {
    let dev = Cpu::default();
    let (b, h, w) = (4, 9, 8);
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    let xv = randv(&mut rng, b * 3 * h * w, -1.0, 1.0);
    for (prec, route) in routes() {
        for mode in [BnMode::Train, BnMode::Eval] {
            let tag = format!("down_block {prec:?} {mode:?}");
            let mut a = (
                Layer::<3, 6, 3>::new(&dev, 31, 2),
                Layer::<6, 6, 3>::new(&dev, 32, 1),
                Layer::<3, 6, 1>::new(&dev, 33, 2),
            );
            let mut r = (
                Layer::<3, 6, 3>::new(&dev, 31, 2),
                Layer::<6, 6, 3>::new(&dev, 32, 1),
                Layer::<3, 6, 1>::new(&dev, 33, 2),
            );
            let xf = dev.tensor_from_vec(xv.clone(), (b, Const::<3>, h, w));
            let xr = dev.tensor_from_vec(xv.clone(), (b, Const::<3>, h, w));
            let yf = fused::down_block(
                xf.clone().leaky_traced(),
                a.0.params(),
                a.1.params(),
                a.2.params(),
                mode,
                route,
            )
            .unwrap();
            let xt = xr.clone().leaky_traced();
            let y = r.0.reference(xt.with_empty_tape(), mode, true, route);
            let y = r.1.reference(y, mode, false, route);
            let s = r.2.reference(xt, mode, false, route);
            let yr = cpu::add_relu(y, s).unwrap();
            assert_close(&format!("{tag} y"), &yf.as_vec(), &yr.as_vec());
            let rt = dev.tensor_from_vec(
                randv(&mut rng, yf.shape().num_elements(), -1.0, 1.0),
                *yf.shape(),
            );
            let gf = yf.try_mul(rt.clone()).unwrap().sum().backward();
            let gr = yr.try_mul(rt).unwrap().sum().backward();
            assert_close(
                &format!("{tag} grad x"),
                &gf.get(&xf).as_vec(),
                &gr.get(&xr).as_vec(),
            );
            compare(
                &format!("{tag} conv1"),
                &a.0.state(Some(&gf)),
                &r.0.state(Some(&gr)),
            );
            compare(
                &format!("{tag} conv2"),
                &a.1.state(Some(&gf)),
                &r.1.state(Some(&gr)),
            );
            compare(
                &format!("{tag} shortcut"),
                &a.2.state(Some(&gf)),
                &r.2.state(Some(&gr)),
            );
            let yf = fused::down_block(xf, a.0.params(), a.1.params(), a.2.params(), mode, route)
                .unwrap();
            let y = r.0.reference(xr.clone(), mode, true, route);
            let y = r.1.reference(y, mode, false, route);
            let s = r.2.reference(xr, mode, false, route);
            let yr = cpu::add_relu(y, s).unwrap();
            assert_close(&format!("{tag} y (no tape)"), &yf.as_vec(), &yr.as_vec());
        }
    }
}
