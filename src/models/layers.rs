//! Building blocks of the backbones: a bias-free convolution, batch-norm, and the two together.
//! Each is a dfdx [`TensorCollection`], so save/load and optimisers see readable names
//! (`conv.weight`, `bn.running_mean`, …) with PyTorch's shapes.

use crate::ops::{self, Act, BnMode, BnParams, ConvBnParams, OpsDevice, Precision};
use crate::rng::Rng;
use dfdx::prelude::*;
use rand_distr::{Distribution, Normal};

/// How one forward pass runs: which statistics batch-norm uses, and the convolutions'
/// arithmetic. Training passes take the run's precision ([`Pass::train`]); evaluation is
/// [`Pass::EVAL`], f32 by definition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pass {
    pub bn: BnMode,
    pub precision: Precision,
}

impl Pass {
    /// Running statistics, f32: evaluation, probes, diagnostics.
    pub const EVAL: Pass = Pass {
        bn: BnMode::Eval,
        precision: Precision::F32,
    };

    /// Batch statistics (running ones updated), convolutions in `precision`.
    pub fn train(precision: Precision) -> Pass {
        Pass {
            bn: BnMode::Train,
            precision,
        }
    }
}

/// Kaiming-normal standard deviation with fan-out for a conv weight `(O, I, K, K)`:
/// `sqrt(2 / (O·K·K))`.
pub fn kaiming_fan_out_std(out_channels: usize, k: usize) -> f32 {
    (2.0 / (out_channels * k * k) as f32).sqrt()
}

/// A square convolution without bias, stride `S`, padding `K / 2`.
#[derive(Clone, Debug)]
pub struct Conv2d<
    const I: usize,
    const O: usize,
    const K: usize,
    const S: usize,
    E: Dtype,
    D: Storage<E>,
> {
    /// `(O, I, K, K)`, PyTorch layout.
    pub weight: Tensor<(Const<O>, Const<I>, Const<K>, Const<K>), E, D>,
}

impl<const I: usize, const O: usize, const K: usize, const S: usize, D: Device<f32>>
    Conv2d<I, O, K, S, f32, D>
{
    /// Kaiming-normal (fan-out) weights drawn from `rng`.
    pub fn new(dev: &D, rng: &mut Rng) -> Result<Self, D::Err> {
        let normal = Normal::new(0.0f32, kaiming_fan_out_std(O, K)).expect("positive std");
        let v: Vec<f32> = (0..O * I * K * K).map(|_| normal.sample(rng)).collect();
        Ok(Self {
            weight: dev.try_tensor_from_vec(v, (Const, Const, Const, Const))?,
        })
    }
}

impl<const I: usize, const O: usize, const K: usize, const S: usize, D: OpsDevice>
    Conv2d<I, O, K, S, f32, D>
{
    /// The convolution in `precision`.
    ///
    /// # Shapes
    /// `(B, I, H, W)` → `(B, O, (H + 2p − K)/S + 1, …)` with `p = K / 2`
    pub fn forward<T: Tape<f32, D>>(
        &self,
        x: Act<I, D, T>,
        precision: Precision,
    ) -> Result<Act<O, D, T>, D::Err> {
        ops::conv2d(x, &self.weight, S, K / 2, precision)
    }
}

impl<const I: usize, const O: usize, const K: usize, const S: usize, D: Device<f32>>
    TensorCollection<f32, D> for Conv2d<I, O, K, S, f32, D>
{
    type To<E2: Dtype, D2: Device<E2>> = Conv2d<I, O, K, S, E2, D2>;
    fn iter_tensors<V: ModuleVisitor<Self, f32, D>>(
        v: &mut V,
    ) -> Result<Option<Self::To<V::E2, V::D2>>, V::Err> {
        v.visit_fields(
            Self::tensor(
                "weight",
                |s| &s.weight,
                |s| &mut s.weight,
                TensorOptions::reset_with(|t| {
                    t.try_fill_with_distr(
                        Normal::new(0.0f32, kaiming_fan_out_std(O, K)).expect("positive std"),
                    )
                }),
            ),
            |weight| Conv2d { weight },
        )
    }
}

/// 2-D batch-norm: affine `weight`/`bias` (trainable) and running statistics (buffers).
/// Momentum [`ops::BN_MOMENTUM`], epsilon [`ops::BN_EPS`], as PyTorch.
#[derive(Clone, Debug)]
pub struct BatchNorm<const C: usize, E: Dtype, D: Storage<E>> {
    pub weight: Tensor<Rank1<C>, E, D>,
    pub bias: Tensor<Rank1<C>, E, D>,
    pub running_mean: Tensor<Rank1<C>, E, D>,
    pub running_var: Tensor<Rank1<C>, E, D>,
}

impl<const C: usize, D: Device<f32>> BatchNorm<C, f32, D> {
    /// Weight 1, bias 0, running mean 0, running variance 1.
    pub fn new(dev: &D) -> Result<Self, D::Err> {
        Ok(Self {
            weight: dev.try_ones()?,
            bias: dev.try_zeros()?,
            running_mean: dev.try_zeros()?,
            running_var: dev.try_ones()?,
        })
    }
}

impl<const C: usize, D: OpsDevice> BatchNorm<C, f32, D> {
    /// The parameters borrowed for one op call.
    pub fn params(&mut self) -> BnParams<'_, C, D> {
        BnParams {
            weight: &self.weight,
            bias: &self.bias,
            running_mean: &mut self.running_mean,
            running_var: &mut self.running_var,
        }
    }

    /// Batch-norm (then ReLU if `relu`). In [`BnMode::Train`] the running statistics are updated.
    ///
    /// # Shapes
    /// `(B, C, H, W)` → `(B, C, H, W)`
    pub fn forward<T: Tape<f32, D>>(
        &mut self,
        x: Act<C, D, T>,
        mode: BnMode,
        relu: bool,
    ) -> Result<Act<C, D, T>, D::Err> {
        ops::batch_norm2d(x, self.params(), mode, relu)
    }
}

impl<const C: usize, D: Device<f32>> TensorCollection<f32, D> for BatchNorm<C, f32, D> {
    type To<E2: Dtype, D2: Device<E2>> = BatchNorm<C, E2, D2>;
    fn iter_tensors<V: ModuleVisitor<Self, f32, D>>(
        v: &mut V,
    ) -> Result<Option<Self::To<V::E2, V::D2>>, V::Err> {
        v.visit_fields(
            (
                Self::tensor(
                    "weight",
                    |s| &s.weight,
                    |s| &mut s.weight,
                    TensorOptions::reset_to_ones(),
                ),
                Self::tensor(
                    "bias",
                    |s| &s.bias,
                    |s| &mut s.bias,
                    TensorOptions::reset_to_zeros(),
                ),
                Self::tensor(
                    "running_mean",
                    |s| &s.running_mean,
                    |s| &mut s.running_mean,
                    TensorOptions::detached(|t| t.try_fill_with_zeros()),
                ),
                Self::tensor(
                    "running_var",
                    |s| &s.running_var,
                    |s| &mut s.running_var,
                    TensorOptions::detached(|t| t.try_fill_with_ones()),
                ),
            ),
            |(weight, bias, running_mean, running_var)| BatchNorm {
                weight,
                bias,
                running_mean,
                running_var,
            },
        )
    }
}

/// Convolution (no bias, padding `K / 2`, stride `S`) followed by batch-norm.
#[derive(Clone, Debug)]
pub struct ConvBn<
    const I: usize,
    const O: usize,
    const K: usize,
    const S: usize,
    E: Dtype,
    D: Storage<E>,
> {
    pub conv: Conv2d<I, O, K, S, E, D>,
    pub bn: BatchNorm<O, E, D>,
}

impl<const I: usize, const O: usize, const K: usize, const S: usize, D: Device<f32>>
    ConvBn<I, O, K, S, f32, D>
{
    pub fn new(dev: &D, rng: &mut Rng) -> Result<Self, D::Err> {
        Ok(Self {
            conv: Conv2d::new(dev, rng)?,
            bn: BatchNorm::new(dev)?,
        })
    }
}

impl<const I: usize, const O: usize, const K: usize, const S: usize, D: OpsDevice>
    ConvBn<I, O, K, S, f32, D>
{
    /// The convolution and its batch-norm borrowed for one fused op call.
    pub fn params(&mut self) -> ConvBnParams<'_, I, O, K, D> {
        ConvBnParams {
            weight: &self.conv.weight,
            stride: S,
            bn: self.bn.params(),
        }
    }

    /// conv → BN (→ ReLU if `relu`) as one op ([`ops::conv_bn`]).
    ///
    /// # Shapes
    /// `(B, I, H, W)` → `(B, O, H', W')`
    pub fn forward<T: Tape<f32, D>>(
        &mut self,
        x: Act<I, D, T>,
        pass: Pass,
        relu: bool,
    ) -> Result<Act<O, D, T>, D::Err> {
        ops::conv_bn(x, self.params(), pass.bn, relu, pass.precision)
    }
}

impl<const I: usize, const O: usize, const K: usize, const S: usize, D: Device<f32>>
    TensorCollection<f32, D> for ConvBn<I, O, K, S, f32, D>
{
    type To<E2: Dtype, D2: Device<E2>> = ConvBn<I, O, K, S, E2, D2>;
    fn iter_tensors<V: ModuleVisitor<Self, f32, D>>(
        v: &mut V,
    ) -> Result<Option<Self::To<V::E2, V::D2>>, V::Err> {
        v.visit_fields(
            (
                Self::module("conv", |s| &s.conv, |s| &mut s.conv),
                Self::module("bn", |s| &s.bn, |s| &mut s.bn),
            ),
            |(conv, bn)| ConvBn { conv, bn },
        )
    }
}
