//! Backbones (SPEC §1) and the relation head.
//!
//! Channels and feature widths are `Const` in the types; batch and spatial sizes are `usize`.
//!
//! CONTRACT (other modules code against this; keep it stable):
//! - [`FEATURES`], [`Images`], [`Features`], [`Backbone`], [`BackboneKind`].

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
            .ok_or_else(|| format!("unknown backbone `{s}` (expected one of conv4, resnet8, resnet32, resnet56)"))
    }
}

/// A feature extractor: images in, `FEATURES`-wide features out.
///
/// `forward_train` uses batch statistics in batch-norm (and updates running statistics);
/// `forward_eval` uses running statistics and records no gradients.
pub trait Backbone<D: Device<f32>>: TensorCollection<f32, D> + Clone + Send + Sync + std::fmt::Debug {
    /// # Shapes
    /// `(B, 3, H, W)` → `(B, FEATURES)`
    fn forward_train(
        &mut self,
        x: Images<D, OwnedTape<f32, D>>,
    ) -> Result<Features<D, OwnedTape<f32, D>>, D::Err>;
    /// # Shapes
    /// `(B, 3, H, W)` → `(B, FEATURES)`
    fn forward_eval(&self, x: Images<D>) -> Result<Features<D>, D::Err>;
}
