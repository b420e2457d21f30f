//! CIFAR ResNets (SPEC §1): conv3×3 3→16 → BN → ReLU; three stages of `N` basic blocks at widths
//! 16/32/64, stride 2 entering stages 2 and 3, where the shortcut is conv1×1 (stride 2, no bias)
//! + BN; global average pooling. `N` = 1 / 5 / 9 gives ResNet-8 / 32 / 56.
//!
//! Parameter names: `stem.conv.weight`, `stem.bn.*`, `stage{1,2,3}.{i}.conv1.weight`,
//! `stage{s}.{i}.bn1.*`, `…conv2…`, `…bn2…`, and `stage{2,3}.0.shortcut.{conv.weight,bn.*}`.

use super::layers::{BatchNorm, Conv2d, ConvBn, Pass};
use super::{Backbone, Features, Images};
use crate::ops::{self, Act, ConvBnParams, OpsDevice, Precision};
use crate::rng::{rng_for, Rng, Stream};
use dfdx::prelude::*;

/// Basic block with an identity shortcut: `relu(bn2(conv2(relu(bn1(conv1(x))))) + x)`.
#[derive(Clone, Debug)]
pub struct BasicBlock<const C: usize, E: Dtype, D: Storage<E>> {
    pub conv1: Conv2d<C, C, 3, 1, E, D>,
    pub bn1: BatchNorm<C, E, D>,
    pub conv2: Conv2d<C, C, 3, 1, E, D>,
    pub bn2: BatchNorm<C, E, D>,
}

impl<const C: usize, D: OpsDevice> BasicBlock<C, f32, D> {
    pub fn new(dev: &D, rng: &mut Rng) -> Result<Self, D::Err> {
        Ok(Self {
            conv1: Conv2d::new(dev, rng)?,
            bn1: BatchNorm::new(dev)?,
            conv2: Conv2d::new(dev, rng)?,
            bn2: BatchNorm::new(dev)?,
        })
    }

    /// # Shapes
    /// `(B, C, H, W)` → `(B, C, H, W)`
    pub fn forward<T: Tape<f32, D>>(
        &mut self,
        x: Act<C, D, T>,
        pass: Pass,
    ) -> Result<Act<C, D, T>, D::Err> {
        let conv1 = ConvBnParams {
            weight: &self.conv1.weight,
            stride: 1,
            bn: self.bn1.params(),
        };
        let conv2 = ConvBnParams {
            weight: &self.conv2.weight,
            stride: 1,
            bn: self.bn2.params(),
        };
        ops::basic_block(x, conv1, conv2, pass.bn, pass.precision)
    }
}

impl<const C: usize, D: Device<f32>> TensorCollection<f32, D> for BasicBlock<C, f32, D> {
    type To<E2: Dtype, D2: Device<E2>> = BasicBlock<C, E2, D2>;
    fn iter_tensors<V: ModuleVisitor<Self, f32, D>>(
        v: &mut V,
    ) -> Result<Option<Self::To<V::E2, V::D2>>, V::Err> {
        v.visit_fields(
            (
                Self::module("conv1", |s| &s.conv1, |s| &mut s.conv1),
                Self::module("bn1", |s| &s.bn1, |s| &mut s.bn1),
                Self::module("conv2", |s| &s.conv2, |s| &mut s.conv2),
                Self::module("bn2", |s| &s.bn2, |s| &mut s.bn2),
            ),
            |(conv1, bn1, conv2, bn2)| BasicBlock {
                conv1,
                bn1,
                conv2,
                bn2,
            },
        )
    }
}

/// Basic block entering a stage: stride 2, `I → O` channels, projection shortcut
/// `bn(conv1×1 stride 2 (x))`.
#[derive(Clone, Debug)]
pub struct DownBlock<const I: usize, const O: usize, E: Dtype, D: Storage<E>> {
    pub conv1: Conv2d<I, O, 3, 2, E, D>,
    pub bn1: BatchNorm<O, E, D>,
    pub conv2: Conv2d<O, O, 3, 1, E, D>,
    pub bn2: BatchNorm<O, E, D>,
    pub shortcut: ConvBn<I, O, 1, 2, E, D>,
}

impl<const I: usize, const O: usize, D: OpsDevice> DownBlock<I, O, f32, D> {
    pub fn new(dev: &D, rng: &mut Rng) -> Result<Self, D::Err> {
        Ok(Self {
            conv1: Conv2d::new(dev, rng)?,
            bn1: BatchNorm::new(dev)?,
            conv2: Conv2d::new(dev, rng)?,
            bn2: BatchNorm::new(dev)?,
            shortcut: ConvBn::new(dev, rng)?,
        })
    }

    /// # Shapes
    /// `(B, I, H, W)` → `(B, O, ⌈H/2⌉, ⌈W/2⌉)`
    pub fn forward<T: Tape<f32, D>>(
        &mut self,
        x: Act<I, D, T>,
        pass: Pass,
    ) -> Result<Act<O, D, T>, D::Err> {
        let conv1 = ConvBnParams {
            weight: &self.conv1.weight,
            stride: 2,
            bn: self.bn1.params(),
        };
        let conv2 = ConvBnParams {
            weight: &self.conv2.weight,
            stride: 1,
            bn: self.bn2.params(),
        };
        let shortcut = self.shortcut.params();
        ops::down_block(x, conv1, conv2, shortcut, pass.bn, pass.precision)
    }
}

impl<const I: usize, const O: usize, D: Device<f32>> TensorCollection<f32, D>
    for DownBlock<I, O, f32, D>
{
    type To<E2: Dtype, D2: Device<E2>> = DownBlock<I, O, E2, D2>;
    fn iter_tensors<V: ModuleVisitor<Self, f32, D>>(
        v: &mut V,
    ) -> Result<Option<Self::To<V::E2, V::D2>>, V::Err> {
        v.visit_fields(
            (
                Self::module("conv1", |s| &s.conv1, |s| &mut s.conv1),
                Self::module("bn1", |s| &s.bn1, |s| &mut s.bn1),
                Self::module("conv2", |s| &s.conv2, |s| &mut s.conv2),
                Self::module("bn2", |s| &s.bn2, |s| &mut s.bn2),
                Self::module("shortcut", |s| &s.shortcut, |s| &mut s.shortcut),
            ),
            |(conv1, bn1, conv2, bn2, shortcut)| DownBlock {
                conv1,
                bn1,
                conv2,
                bn2,
                shortcut,
            },
        )
    }
}

/// The first stage: `N` identity blocks at width `C` (named `0 … N−1`).
#[derive(Clone, Debug)]
pub struct PlainStage<const C: usize, const N: usize, E: Dtype, D: Storage<E>> {
    pub blocks: Vec<BasicBlock<C, E, D>>,
}

impl<const C: usize, const N: usize, D: OpsDevice> PlainStage<C, N, f32, D> {
    pub fn new(dev: &D, rng: &mut Rng) -> Result<Self, D::Err> {
        Ok(Self {
            blocks: (0..N)
                .map(|_| BasicBlock::new(dev, rng))
                .collect::<Result<_, _>>()?,
        })
    }
    pub fn forward<T: Tape<f32, D>>(
        &mut self,
        mut x: Act<C, D, T>,
        pass: Pass,
    ) -> Result<Act<C, D, T>, D::Err> {
        for b in self.blocks.iter_mut() {
            x = b.forward(x, pass)?;
        }
        Ok(x)
    }
}

impl<const C: usize, const N: usize, D: Device<f32>> TensorCollection<f32, D>
    for PlainStage<C, N, f32, D>
{
    type To<E2: Dtype, D2: Device<E2>> = PlainStage<C, N, E2, D2>;
    fn iter_tensors<V: ModuleVisitor<Self, f32, D>>(
        v: &mut V,
    ) -> Result<Option<Self::To<V::E2, V::D2>>, V::Err> {
        let names: Vec<String> = (0..N).map(|i| i.to_string()).collect();
        v.visit_fields(
            names
                .iter()
                .enumerate()
                .map(|(i, name)| {
                    Self::module(name, move |s| &s.blocks[i], move |s| &mut s.blocks[i])
                })
                .collect::<Vec<_>>(),
            |blocks| PlainStage { blocks },
        )
    }
}

/// A down-sampling stage: one [`DownBlock`] (named `0`) then `N − 1` identity blocks (`1 … N−1`).
#[derive(Clone, Debug)]
pub struct DownStage<const I: usize, const O: usize, const N: usize, E: Dtype, D: Storage<E>> {
    pub first: DownBlock<I, O, E, D>,
    pub rest: Vec<BasicBlock<O, E, D>>,
}

impl<const I: usize, const O: usize, const N: usize, D: OpsDevice> DownStage<I, O, N, f32, D> {
    pub fn new(dev: &D, rng: &mut Rng) -> Result<Self, D::Err> {
        let first = DownBlock::new(dev, rng)?;
        let rest = (1..N)
            .map(|_| BasicBlock::new(dev, rng))
            .collect::<Result<_, _>>()?;
        Ok(Self { first, rest })
    }
    pub fn forward<T: Tape<f32, D>>(
        &mut self,
        x: Act<I, D, T>,
        pass: Pass,
    ) -> Result<Act<O, D, T>, D::Err> {
        let mut x = self.first.forward(x, pass)?;
        for b in self.rest.iter_mut() {
            x = b.forward(x, pass)?;
        }
        Ok(x)
    }
}

impl<const I: usize, const O: usize, const N: usize, D: Device<f32>> TensorCollection<f32, D>
    for DownStage<I, O, N, f32, D>
{
    type To<E2: Dtype, D2: Device<E2>> = DownStage<I, O, N, E2, D2>;
    fn iter_tensors<V: ModuleVisitor<Self, f32, D>>(
        v: &mut V,
    ) -> Result<Option<Self::To<V::E2, V::D2>>, V::Err> {
        let names: Vec<String> = (1..N).map(|i| i.to_string()).collect();
        v.visit_fields(
            (
                Self::module("0", |s| &s.first, |s| &mut s.first),
                names
                    .iter()
                    .enumerate()
                    .map(|(i, name)| {
                        Self::module(name, move |s| &s.rest[i], move |s| &mut s.rest[i])
                    })
                    .collect::<Vec<_>>(),
            ),
            |(first, rest)| DownStage { first, rest },
        )
    }
}

/// CIFAR ResNet with `N` blocks per stage (6N + 2 layers).
#[derive(Clone, Debug)]
pub struct ResNet<const N: usize, D: Storage<E>, E: Dtype = f32> {
    pub stem: ConvBn<3, 16, 3, 1, E, D>,
    pub stage1: PlainStage<16, N, E, D>,
    pub stage2: DownStage<16, 32, N, E, D>,
    pub stage3: DownStage<32, 64, N, E, D>,
    /// Arithmetic of the convolutions in [`Backbone::forward_train`] (not a weight: not saved,
    /// and f32 again in a model rebuilt through dfdx's `TensorCollection`, e.g. `to_device`).
    pub precision: Precision,
}

/// ResNet-8 (77,392 parameters).
pub type ResNet8<D> = ResNet<1, D>;
/// ResNet-32 (466,256 parameters).
pub type ResNet32<D> = ResNet<5, D>;
/// ResNet-56 (855,120 parameters).
pub type ResNet56<D> = ResNet<9, D>;

impl<const N: usize, D: OpsDevice> ResNet<N, D> {
    /// Kaiming-normal (fan-out) conv weights from `rng_for(seed, Stream::Init, 0, 0)`, drawn in
    /// parameter order; BN weight 1, bias 0.
    pub fn new(dev: &D, seed: u64) -> Result<Self, D::Err> {
        let mut rng = rng_for(seed, Stream::Init, 0, 0);
        Ok(Self {
            stem: ConvBn::new(dev, &mut rng)?,
            stage1: PlainStage::new(dev, &mut rng)?,
            stage2: DownStage::new(dev, &mut rng)?,
            stage3: DownStage::new(dev, &mut rng)?,
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
        let x = self.stem.forward(x, pass, true)?;
        let x = self.stage1.forward(x, pass)?;
        let x = self.stage2.forward(x, pass)?;
        let x = self.stage3.forward(x, pass)?;
        ops::global_avg_pool(x)
    }
}

impl<const N: usize, D: OpsDevice> Backbone<D> for ResNet<N, D> {
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

impl<const N: usize, D: Device<f32>> TensorCollection<f32, D> for ResNet<N, D> {
    type To<E2: Dtype, D2: Device<E2>> = ResNet<N, D2, E2>;
    fn iter_tensors<V: ModuleVisitor<Self, f32, D>>(
        v: &mut V,
    ) -> Result<Option<Self::To<V::E2, V::D2>>, V::Err> {
        v.visit_fields(
            (
                Self::module("stem", |s| &s.stem, |s| &mut s.stem),
                Self::module("stage1", |s| &s.stage1, |s| &mut s.stage1),
                Self::module("stage2", |s| &s.stage2, |s| &mut s.stage2),
                Self::module("stage3", |s| &s.stage3, |s| &mut s.stage3),
            ),
            |(stem, stage1, stage2, stage3)| ResNet {
                stem,
                stage1,
                stage2,
                stage3,
                precision: Precision::F32,
            },
        )
    }
}
