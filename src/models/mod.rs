//! Backbones (SPEC §1) and the relation head.
//!
//! Channels and feature widths are `Const` in the types; batch and spatial sizes are `usize`.
//!
//! CONTRACT (other modules code against this; keep it stable):
//! - [`FEATURES`], [`Images`], [`Features`], [`Backbone`], [`BackboneKind`].
//!
//! Implementations: [`Conv4`] (`conv4.rs`) and [`ResNet`]`<N>` = [`ResNet8`] / [`ResNet32`] /
//! [`ResNet56`] (`resnet.rs`), built from [`layers`] on the crate's [`crate::ops`]. Build one type
//! with [`build`] (or `Conv4::new(dev, seed)`); run generic code on the backbone a run-time
//! [`BackboneKind`] names with [`with_backbone`] + a [`BackboneFn`]; [`trainable_params`] counts.
//! Safetensors names follow the fields: `stem.conv.weight`, `stage2.0.bn1.running_mean`,
//! `stage3.0.shortcut.conv.weight`, `block1.bn.weight`, …

use dfdx::prelude::*;

/// Feature width F of every backbone.
pub const FEATURES: usize = 64;

/// A batch of images, `(batch, 3, height, width)`, normalised.
pub type Images<D, T = NoneTape> = Tensor<(usize, Const<3>, usize, usize), f32, D, T>;
/// A batch of features, `(batch, FEATURES)`.
pub type Features<D, T = NoneTape> = Tensor<(usize, Const<FEATURES>), f32, D, T>;

/// Which backbone to build.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackboneKind {
    Conv4,
    Resnet8,
    Resnet32,
    Resnet56,
}

impl BackboneKind {
    pub const ALL: [BackboneKind; 4] = [Self::Conv4, Self::Resnet8, Self::Resnet32, Self::Resnet56];
    pub fn name(self) -> &'static str {
        match self {
            Self::Conv4 => "conv4",
            Self::Resnet8 => "resnet8",
            Self::Resnet32 => "resnet32",
            Self::Resnet56 => "resnet56",
        }
    }
}

impl std::str::FromStr for BackboneKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|k| k.name() == s)
            .ok_or_else(|| {
                format!(
                    "unknown backbone `{s}` (expected one of conv4, resnet8, resnet32, resnet56)"
                )
            })
    }
}

/// A feature extractor: images in, `FEATURES`-wide features out.
///
/// `forward_train` uses batch statistics in batch-norm (and updates running statistics) and runs
/// the convolutions in the backbone's [`Precision`] (a property of the run that trains it, set
/// with [`Backbone::set_precision`]; f32 when built); `forward_eval` uses running statistics,
/// records no gradients and is always f32 (evaluation, probes and diagnostics are f32 by
/// definition). Two backbones of different precisions can train at once on different threads.
///
/// No `Send`/`Sync` bound: dfdx's `Cuda` device holds a raw CUDA stream and is neither, so such a
/// bound would rule out every CUDA backbone. On `Cpu` the backbones are `Send + Sync`.
pub trait Backbone<D: Device<f32>>: TensorCollection<f32, D> + Clone + std::fmt::Debug {
    /// # Shapes
    /// `(B, 3, H, W)` → `(B, FEATURES)`
    fn forward_train(
        &mut self,
        x: Images<D, OwnedTape<f32, D>>,
    ) -> Result<Features<D, OwnedTape<f32, D>>, D::Err>;
    /// # Shapes
    /// `(B, 3, H, W)` → `(B, FEATURES)`
    fn forward_eval(&self, x: Images<D>) -> Result<Features<D>, D::Err>;
    /// The arithmetic of [`Backbone::forward_train`]'s convolutions.
    fn precision(&self) -> Precision;
    /// Sets the arithmetic of [`Backbone::forward_train`]'s convolutions (the run's
    /// `train.precision`; check it with [`Precision::check_supported`] first).
    fn set_precision(&mut self, precision: Precision);
}

pub mod conv4;
pub mod layers;
pub mod resnet;

pub use layers::Pass;

pub use conv4::Conv4;
pub use resnet::{ResNet, ResNet32, ResNet56, ResNet8};

use crate::ops::{OpsDevice, Precision};

/// Conv-4 on the CPU.
pub type Conv4Cpu = Conv4<Cpu>;
/// ResNet-8 on the CPU.
pub type ResNet8Cpu = ResNet8<Cpu>;
/// ResNet-32 on the CPU.
pub type ResNet32Cpu = ResNet32<Cpu>;
/// ResNet-56 on the CPU.
pub type ResNet56Cpu = ResNet56<Cpu>;

/// A backbone type that can be built from a seed.
pub trait BuildBackbone<D: OpsDevice>: Backbone<D> + 'static {
    /// Which [`BackboneKind`] this type is.
    const KIND: BackboneKind;
    /// Kaiming-normal (fan-out) conv weights drawn from `rng_for(seed, Stream::Init, 0, 0)`;
    /// BN weight 1, bias 0, running mean 0, running variance 1.
    fn build(dev: &D, seed: u64) -> Result<Self, D::Err>;
}

impl<D: OpsDevice> BuildBackbone<D> for Conv4<D> {
    const KIND: BackboneKind = BackboneKind::Conv4;
    fn build(dev: &D, seed: u64) -> Result<Self, D::Err> {
        Conv4::new(dev, seed)
    }
}

macro_rules! impl_build_resnet {
    ($n:literal, $kind:ident) => {
        impl<D: OpsDevice> BuildBackbone<D> for ResNet<$n, D> {
            const KIND: BackboneKind = BackboneKind::$kind;
            fn build(dev: &D, seed: u64) -> Result<Self, D::Err> {
                ResNet::new(dev, seed)
            }
        }
    };
}
impl_build_resnet!(1, Resnet8);
impl_build_resnet!(5, Resnet32);
impl_build_resnet!(9, Resnet56);

/// Builds backbone type `M` (e.g. `build::<Conv4<Cpu>, _>(&dev, 1)`).
pub fn build<M: BuildBackbone<D>, D: OpsDevice>(dev: &D, seed: u64) -> Result<M, D::Err> {
    M::build(dev, seed)
}

/// Generic code to run on whichever backbone a [`BackboneKind`] names, see [`with_backbone`].
///
/// Rust cannot pass a generic closure, so the generic code is a type implementing this trait:
///
/// ```
/// use spatial_reasoning::models::{with_backbone, Backbone, BackboneFn, BackboneKind};
/// use dfdx::prelude::*;
///
/// struct CountParams;
/// impl BackboneFn<Cpu> for CountParams {
///     type Output = usize;
///     fn call<B: Backbone<Cpu> + 'static>(self, backbone: B) -> usize {
///         backbone.num_trainable_params()
///     }
/// }
/// let n = with_backbone(BackboneKind::Conv4, &Cpu::default(), 0, CountParams).unwrap();
/// assert_eq!(n, 24_648);
/// ```
///
/// A training loop does the same: its state (config, data, run directory) lives in the struct,
/// `call` builds the optimiser for `B` and runs the loop with `backbone`.
pub trait BackboneFn<D: OpsDevice> {
    /// What `call` returns.
    type Output;
    /// Runs the generic code with a freshly built backbone.
    fn call<B: Backbone<D> + 'static>(self, backbone: B) -> Self::Output;
}

/// Builds the backbone `kind` names (from `seed`, see [`BuildBackbone::build`]) and hands it to
/// `f.call`, monomorphised for that backbone type.
pub fn with_backbone<D: OpsDevice, F: BackboneFn<D>>(
    kind: BackboneKind,
    dev: &D,
    seed: u64,
    f: F,
) -> Result<F::Output, D::Err> {
    Ok(match kind {
        BackboneKind::Conv4 => f.call(Conv4::<D>::new(dev, seed)?),
        BackboneKind::Resnet8 => f.call(ResNet8::<D>::new(dev, seed)?),
        BackboneKind::Resnet32 => f.call(ResNet32::<D>::new(dev, seed)?),
        BackboneKind::Resnet56 => f.call(ResNet56::<D>::new(dev, seed)?),
    })
}

/// Trainable parameter count of a backbone kind (BN affine included, running statistics not).
pub fn trainable_params(kind: BackboneKind) -> usize {
    struct Count;
    impl BackboneFn<Cpu> for Count {
        type Output = usize;
        fn call<B: Backbone<Cpu> + 'static>(self, backbone: B) -> usize {
            backbone.num_trainable_params()
        }
    }
    with_backbone(kind, &Cpu::default(), 0, Count)
        .expect("building a backbone on the CPU cannot fail")
}
