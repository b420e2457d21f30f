//! Conv-4 (SPEC §1): four blocks of conv3×3 (no bias) → BN → ReLU → avg-pool 2×2 at widths
//! 8-16-32-64; the last block ends in global average pooling instead. 24,648 trainable parameters.

use super::layers::{ConvBn, Pass};
use super::{Backbone, Features, Images};
use crate::ops::{self, OpsDevice, Precision};
use crate::rng::{rng_for, Stream};
use dfdx::prelude::*;

/// The Conv-4 backbone. Parameter names: `block{1..4}.conv.weight`, `block{1..4}.bn.{weight,bias,
/// running_mean,running_var}`.
#[derive(Clone, Debug)]
pub struct Conv4<D: Storage<E>, E: Dtype = f32> {
    pub block1: ConvBn<3, 8, 3, 1, E, D>,
    pub block2: ConvBn<8, 16, 3, 1, E, D>,
    pub block3: ConvBn<16, 32, 3, 1, E, D>,
    pub block4: ConvBn<32, 64, 3, 1, E, D>,
    /// Arithmetic of the convolutions in [`Backbone::forward_train`] (not a weight: not saved,
    /// and f32 again in a model rebuilt through dfdx's `TensorCollection`, e.g. `to_device`).
    pub precision: Precision,
}

impl<D: OpsDevice> Conv4<D> {
    /// Kaiming-normal (fan-out) conv weights from `rng_for(seed, Stream::Init, 0, 0)`, BN weight 1,
    /// bias 0.
    pub fn new(dev: &D, seed: u64) -> Result<Self, D::Err> {
        let mut rng = rng_for(seed, Stream::Init, 0, 0);
        Ok(Self {
            block1: ConvBn::new(dev, &mut rng)?,
            block2: ConvBn::new(dev, &mut rng)?,
            block3: ConvBn::new(dev, &mut rng)?,
            block4: ConvBn::new(dev, &mut rng)?,
            precision: Precision::F32,
        })
    }

    /// # Shapes
    /// `(B, 3, H, W)` → `(B, 64)`
    pub fn forward<T: Tape<f32, D>>(
        &mut self,
        x: Images<D, T>,
        pass: Pass,
    ) -> Result<Features<D, T>, D::Err> {
        let x = ops::avg_pool2x2(self.block1.forward(x, pass, true)?)?;
        let x = ops::avg_pool2x2(self.block2.forward(x, pass, true)?)?;
        let x = ops::avg_pool2x2(self.block3.forward(x, pass, true)?)?;
        ops::global_avg_pool(self.block4.forward(x, pass, true)?)
    }
}

impl<D: OpsDevice> Backbone<D> for Conv4<D> {
    fn forward_train(
        &mut self,
        x: Images<D, OwnedTape<f32, D>>,
    ) -> Result<Features<D, OwnedTape<f32, D>>, D::Err> {
        let pass = Pass::train(self.precision);
        self.forward(x, pass)
    }
    fn forward_eval(&self, x: Images<D>) -> Result<Features<D>, D::Err> {
        // Eval mode reads but never writes the running statistics; the clone shares storage.
        self.clone().forward(x, Pass::EVAL)
    }
    fn precision(&self) -> Precision {
        self.precision
    }
    fn set_precision(&mut self, precision: Precision) {
        self.precision = precision;
    }
}

impl<D: Device<f32>> TensorCollection<f32, D> for Conv4<D> {
    type To<E2: Dtype, D2: Device<E2>> = Conv4<D2, E2>;
    fn iter_tensors<V: ModuleVisitor<Self, f32, D>>(
        v: &mut V,
    ) -> Result<Option<Self::To<V::E2, V::D2>>, V::Err> {
        v.visit_fields(
            (
                Self::module("block1", |s| &s.block1, |s| &mut s.block1),
                Self::module("block2", |s| &s.block2, |s| &mut s.block2),
                Self::module("block3", |s| &s.block3, |s| &mut s.block3),
                Self::module("block4", |s| &s.block4, |s| &mut s.block4),
            ),
            |(block1, block2, block3, block4)| Conv4 {
                block1,
                block2,
                block3,
                block4,
                precision: Precision::F32,
            },
        )
    }
}
