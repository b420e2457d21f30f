//! The relation head (SPEC §2) with its widths set at run time: aggregation of the two features
//! of a pair (`method.aggregation`), then Linear(in → hidden) → BatchNorm1d(hidden) →
//! LeakyReLU(0.01) → Linear(hidden → out), with `hidden = method.head_hidden`, `in = 2F` for
//! `cat` and `F` for `sum`/`mean`/`max`, and `out` = 1 (RR: a logit) or 3 (SR: Δrow, Δcol, logit).
//!
//! Why run-time sizes: dfdx's `Linear<I, O>` fixes its widths in the type, so every (aggregation,
//! hidden width, outputs) combination would be another monomorphisation of the whole training loop
//! (per backbone). Here the weights are `(usize, usize)` tensors ([`Dense`], [`Norm1d`]); the ops
//! are dfdx's own, in the order its `Linear` and `BatchNorm1D` apply them, so the default head
//! (cat, 256) computes bit for bit what the dfdx modules computed (`tests/method_head.rs`), draws
//! its initial weights from the device RNG in the same order, and saves under the same names
//! (`head.l1.weight`, `head.bn.running_var`, …). dfdx 0.13 builds options for run-time shapes
//! only with the vendored backport `TensorOptions::with_shape` (see `vendor/`).
//!
//! A head is made with [`RelationHead::new`] from a [`HeadSpec`], never with dfdx's
//! `BuildModule` (which would allocate empty tensors).

use dfdx::nn::tensor_collection::{ModuleVisitor, ScalarOptions, TensorCollection, TensorOptions};
use dfdx::prelude::*;
use rand_distr::Uniform;

use crate::config::{Aggregation, ValidConfig};
use crate::models::FEATURES;

/// A batch of rows of run-time width, `(M, width)`.
pub type Rows<D, T = NoneTape> = Tensor<(usize, usize), f32, D, T>;

/// The shape of a relation head: how pairs are aggregated, the hidden width, the outputs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HeadSpec {
    pub aggregation: Aggregation,
    /// Hidden width (`method.head_hidden`).
    pub hidden: usize,
    /// 1 (RR: the logit) or 3 (SR: `Δrow, Δcol, logit`).
    pub outputs: usize,
}

impl HeadSpec {
    /// The head a run of `cfg` trains: 1 output for RR (`method.patches = 0`), 3 for SR.
    pub fn from_config(cfg: &ValidConfig) -> Self {
        Self {
            aggregation: cfg.method.aggregation,
            hidden: cfg.method.head_hidden,
            outputs: if cfg.method.is_rr() { 1 } else { 3 },
        }
    }

    /// The paper's SR head: cat, 256 hidden, 3 outputs.
    pub fn sr() -> Self {
        Self {
            aggregation: Aggregation::Cat,
            hidden: 256,
            outputs: 3,
        }
    }

    /// Input width: `2F` for [`Aggregation::Cat`], `F` otherwise.
    pub fn input(&self) -> usize {
        input_width(self.aggregation)
    }
}

/// Width of an aggregated pair vector: `2F` for [`Aggregation::Cat`], `F` otherwise.
pub fn input_width(aggregation: Aggregation) -> usize {
    match aggregation {
        Aggregation::Cat => 2 * FEATURES,
        Aggregation::Sum | Aggregation::Mean | Aggregation::Max => FEATURES,
    }
}

/// Two feature rows into one pair vector: `[a, b]` (cat), `a + b` (sum), `(a + b)/2` (mean) or
/// the element-wise maximum (max; a tie sends half the gradient to each side).
///
/// # Shapes
/// `a, b: (M, F)` → `(M, 2F)` for cat, `(M, F)` otherwise.
pub fn aggregate<D: Device<f32>, T: Tape<f32, D> + Merge<T> + std::fmt::Debug>(
    a: Tensor<(usize, Const<FEATURES>), f32, D, T>,
    b: Tensor<(usize, Const<FEATURES>), f32, D, T>,
    aggregation: Aggregation,
) -> Result<Rows<D, T>, D::Err> {
    Ok(match aggregation {
        Aggregation::Cat => (a.realize::<(usize, usize)>(), b.realize::<(usize, usize)>())
            .try_concat_along(Axis::<1>)?,
        Aggregation::Sum => a.try_add(b)?.realize(),
        Aggregation::Mean => a.try_add(b)?.try_mul(0.5)?.realize(),
        Aggregation::Max => a.try_maximum(b)?.realize(),
    })
}

/// A fully connected layer of run-time widths, PyTorch's layout and default init (dfdx's
/// `Linear`): `y = x·Wᵀ + b`, `W` and `b` uniform in `±1/√in`.
#[derive(Clone, Debug)]
pub struct Dense<E: Dtype, D: Storage<E>> {
    /// `(out, in)`.
    pub weight: Tensor<(usize, usize), E, D>,
    /// `(out,)`.
    pub bias: Tensor<(usize,), E, D>,
}

impl<D: Device<f32>> Dense<f32, D> {
    /// Weight, then bias, drawn from the device's RNG (the order dfdx's `Linear` builds in).
    pub fn new(dev: &D, input: usize, output: usize) -> Result<Self, D::Err> {
        let bound = 1.0f32 / (input as f32).sqrt();
        let mut weight = dev.try_zeros_like(&(output, input))?;
        weight.try_fill_with_distr(Uniform::new(-bound, bound))?;
        let mut bias = dev.try_zeros_like(&(output,))?;
        bias.try_fill_with_distr(Uniform::new(-bound, bound))?;
        Ok(Self { weight, bias })
    }

    /// # Shapes
    /// `(M, in)` → `(M, out)`
    pub fn forward<T: Tape<f32, D>>(&self, x: Rows<D, T>) -> Result<Rows<D, T>, D::Err> {
        let y = x.try_matmul(self.weight.retaped::<T>().try_permute::<_, Axes2<1, 0>>()?)?;
        let shape = *y.shape();
        y.try_add(
            self.bias
                .retaped::<T>()
                .try_broadcast_like::<_, Axis<0>>(&shape)?,
        )
    }
}

impl<D: Device<f32>> TensorCollection<f32, D> for Dense<f32, D> {
    type To<E2: Dtype, D2: Device<E2>> = Dense<E2, D2>;
    fn iter_tensors<V: ModuleVisitor<Self, f32, D>>(
        visitor: &mut V,
    ) -> Result<Option<Self::To<V::E2, V::D2>>, V::Err> {
        visitor.visit_fields(
            (
                Self::tensor("weight", |s| &s.weight, |s| &mut s.weight, trainable()),
                Self::tensor("bias", |s| &s.bias, |s| &mut s.bias, trainable()),
            ),
            |(weight, bias)| Dense { weight, bias },
        )
    }
}

/// Options of a trainable tensor of run-time shape. The shape given is a placeholder: it is read
/// only by dfdx's `BuildModule` and `reset_params`, which a head never goes through.
fn trainable<S: Shape + Default, D: Device<f32>>() -> TensorOptions<S, f32, D> {
    TensorOptions::with_shape(S::default(), true, |_| Ok(()))
}

/// Like [`trainable`], for a buffer that gradients do not update (running statistics).
fn buffer<S: Shape + Default, D: Device<f32>>() -> TensorOptions<S, f32, D> {
    TensorOptions::with_shape(S::default(), false, |_| Ok(()))
}

/// 1-D batch-norm of run-time width (dfdx's `BatchNorm1D`: scale 1, bias 0, running mean 0,
/// running variance 1, ε = 1e-5, momentum 0.1; the running variance is updated with the
/// unbiased batch variance).
#[derive(Clone, Debug)]
pub struct Norm1d<E: Dtype, D: Storage<E>> {
    pub scale: Tensor<(usize,), E, D>,
    pub bias: Tensor<(usize,), E, D>,
    pub running_mean: Tensor<(usize,), E, D>,
    pub running_var: Tensor<(usize,), E, D>,
    pub epsilon: f64,
    pub momentum: f64,
}

impl<D: Device<f32>> Norm1d<f32, D> {
    pub fn new(dev: &D, width: usize) -> Result<Self, D::Err> {
        Ok(Self {
            scale: dev.try_ones_like(&(width,))?,
            bias: dev.try_zeros_like(&(width,))?,
            running_mean: dev.try_zeros_like(&(width,))?,
            running_var: dev.try_ones_like(&(width,))?,
            epsilon: 1e-5,
            momentum: 0.1,
        })
    }

    /// Batch statistics; the running statistics are updated (dfdx's `train_fwd`, op for op).
    ///
    /// # Shapes
    /// `(M, C)` → `(M, C)`
    pub fn forward_train(
        &mut self,
        x: Rows<D, OwnedTape<f32, D>>,
    ) -> Result<Rows<D, OwnedTape<f32, D>>, D::Err> {
        type T<D> = OwnedTape<f32, D>;
        let (momentum, epsilon) = (self.momentum, self.epsilon);
        let shape = *x.shape();
        let n = shape.0 as f64;
        let mean_chan = x.retaped::<T<D>>().try_mean::<(usize,), Axis<0>>()?;
        self.running_mean
            .try_axpy(1.0 - momentum, &mean_chan, momentum)?;
        let centered = x.try_sub(mean_chan.try_broadcast_like::<_, Axis<0>>(&shape)?)?;
        let var_chan = centered
            .retaped::<T<D>>()
            .try_square()?
            .try_mean::<(usize,), Axis<0>>()?;
        self.running_var
            .try_axpy(1.0 - momentum, &var_chan, momentum * n / (n - 1.0))?;
        let std = var_chan.try_add(epsilon as f32)?.try_sqrt()?;
        let scale = self
            .scale
            .retaped::<T<D>>()
            .try_div(std)?
            .try_broadcast_like::<_, Axis<0>>(&shape)?;
        let bias = self
            .bias
            .retaped::<T<D>>()
            .try_broadcast_like::<_, Axis<0>>(&shape)?;
        centered.try_mul(scale)?.try_add(bias)
    }

    /// Running statistics, nothing updated (dfdx's `infer_fwd`).
    ///
    /// # Shapes
    /// `(M, C)` → `(M, C)`
    pub fn forward_eval(&self, x: Rows<D>) -> Result<Rows<D>, D::Err> {
        let shape = *x.shape();
        let std = self
            .running_var
            .clone()
            .try_add(self.epsilon as f32)?
            .try_sqrt()?;
        let scale = self
            .scale
            .clone()
            .try_div(std)?
            .try_broadcast_like::<_, Axis<0>>(&shape)?;
        let x = x.try_sub(
            self.running_mean
                .clone()
                .try_broadcast_like::<_, Axis<0>>(&shape)?,
        )?;
        let x = x.try_mul(scale)?;
        x.try_add(self.bias.clone().try_broadcast_like::<_, Axis<0>>(&shape)?)
    }
}

impl<D: Device<f32>> TensorCollection<f32, D> for Norm1d<f32, D> {
    type To<E2: Dtype, D2: Device<E2>> = Norm1d<E2, D2>;
    fn iter_tensors<V: ModuleVisitor<Self, f32, D>>(
        visitor: &mut V,
    ) -> Result<Option<Self::To<V::E2, V::D2>>, V::Err> {
        visitor.visit_fields(
            (
                Self::tensor("scale", |s| &s.scale, |s| &mut s.scale, trainable()),
                Self::tensor("bias", |s| &s.bias, |s| &mut s.bias, trainable()),
                Self::tensor(
                    "running_mean",
                    |s| &s.running_mean,
                    |s| &mut s.running_mean,
                    buffer(),
                ),
                Self::tensor(
                    "running_var",
                    |s| &s.running_var,
                    |s| &mut s.running_var,
                    buffer(),
                ),
                Self::scalar(
                    "epsilon",
                    |s| &s.epsilon,
                    |s| &mut s.epsilon,
                    ScalarOptions::from_default(1e-5),
                ),
                Self::scalar(
                    "momentum",
                    |s| &s.momentum,
                    |s| &mut s.momentum,
                    ScalarOptions::from_default(0.1),
                ),
            ),
            |(scale, bias, running_mean, running_var, epsilon, momentum)| Norm1d {
                scale,
                bias,
                running_mean,
                running_var,
                epsilon,
                momentum,
            },
        )
    }
}

/// Aggregation → Linear(in → hidden) → BatchNorm1d(hidden) → LeakyReLU(0.01) →
/// Linear(hidden → out). See the module docs.
///
/// The aggregation is saved with the weights (`head.aggregation`, 0 = cat, 1 = sum, 2 = mean,
/// 3 = max; absent in checkpoints written before it existed, which were all cat).
#[derive(Clone, Debug)]
pub struct RelationHead<E: Dtype, D: Storage<E>> {
    pub aggregation: Aggregation,
    pub l1: Dense<E, D>,
    pub bn: Norm1d<E, D>,
    pub l2: Dense<E, D>,
}

impl<D: Device<f32>> TensorCollection<f32, D> for RelationHead<f32, D> {
    type To<E2: Dtype, D2: Device<E2>> = RelationHead<E2, D2>;
    fn iter_tensors<V: ModuleVisitor<Self, f32, D>>(
        visitor: &mut V,
    ) -> Result<Option<Self::To<V::E2, V::D2>>, V::Err> {
        visitor.visit_fields(
            (
                Self::module("l1", |s| &s.l1, |s| &mut s.l1),
                Self::module("bn", |s| &s.bn, |s| &mut s.bn),
                Self::module("l2", |s| &s.l2, |s| &mut s.l2),
                Self::scalar(
                    "aggregation",
                    |s| &s.aggregation,
                    |s| &mut s.aggregation,
                    ScalarOptions::from_default(Aggregation::Cat),
                ),
            ),
            |(l1, bn, l2, aggregation)| RelationHead {
                aggregation,
                l1,
                bn,
                l2,
            },
        )
    }
}

impl<D: Device<f32>> RelationHead<f32, D> {
    /// A head of shape `spec`, PyTorch's default Linear init drawn from the device's RNG
    /// (l1's weight and bias, then l2's).
    pub fn new(dev: &D, spec: HeadSpec) -> Result<Self, D::Err> {
        Ok(Self {
            aggregation: spec.aggregation,
            l1: Dense::new(dev, spec.input(), spec.hidden)?,
            bn: Norm1d::new(dev, spec.hidden)?,
            l2: Dense::new(dev, spec.hidden, spec.outputs)?,
        })
    }

    /// The head's shape, read from its weights.
    pub fn spec(&self) -> HeadSpec {
        let (hidden, _) = *self.l1.weight.shape();
        let (outputs, _) = *self.l2.weight.shape();
        HeadSpec {
            aggregation: self.aggregation,
            hidden,
            outputs,
        }
    }

    /// Number of outputs (1 for RR, 3 for SR).
    pub fn outputs(&self) -> usize {
        self.l2.weight.shape().0
    }

    /// Training mode (batch statistics in the batch-norm), on aggregated pairs.
    ///
    /// # Shapes
    /// `(M, in)` → `(M, out)`
    pub fn forward_train(
        &mut self,
        x: Rows<D, OwnedTape<f32, D>>,
    ) -> Result<Rows<D, OwnedTape<f32, D>>, D::Err> {
        let h = self.l1.forward(x)?;
        let h = self.bn.forward_train(h)?;
        let h = h.try_prelu(0.01)?;
        self.l2.forward(h)
    }

    /// Evaluation mode (running statistics), on aggregated pairs.
    ///
    /// # Shapes
    /// `(M, in)` → `(M, out)`
    pub fn forward_eval(&self, x: Rows<D>) -> Result<Rows<D>, D::Err> {
        let h = self.l1.forward(x)?;
        let h = self.bn.forward_eval(h)?;
        let h = h.try_prelu(0.01)?;
        self.l2.forward(h)
    }

    /// Evaluation mode on pairs of features: aggregated with the head's aggregation, then
    /// [`Self::forward_eval`].
    ///
    /// # Shapes
    /// `a, b: (M, F)` → `(M, out)`
    pub fn forward_pairs_eval(
        &self,
        a: Tensor<(usize, Const<FEATURES>), f32, D>,
        b: Tensor<(usize, Const<FEATURES>), f32, D>,
    ) -> Result<Rows<D>, D::Err> {
        self.forward_eval(aggregate(a, b, self.aggregation)?)
    }
}
