//! Evaluation of frozen representations (SPEC §4).
//!
//! - [`features`]: frozen-feature extraction ([`extract_features`]), the 3×3 grid of zoomed patch
//!   features for SR's patch-concatenated probe ([`extract_grid_features`], [`probe_features`]),
//!   and an on-disk feature cache ([`FeatureCache`], file format documented in [`features`]).
//! - [`linear`]: the linear probe, a softmax regression trained with Adam on the host
//!   ([`linear_probe`]).
//! - [`knn`]: weighted k-nearest-neighbour classification on cosine similarity ([`knn_classify`]).
//! - [`supervised`]: the supervised reference arm ([`train_supervised`]).
//! - [`protocol`]: the whole evaluation of one backbone in one call ([`evaluate_backbone`]):
//!   features once (optionally cached), linear probe per patch count n, kNN.
//! - [`diagnostics`]: offset quality, position information in the features and online kNN,
//!   measured at every epoch end of pretraining ([`Probe`]).
//! - [`results`]: serialisable results ([`EvalResult`]) and the CSV log ([`append_csv`]).
//!
//! Accuracies are fractions in `[0, 1]` everywhere in this module (multiply by 100 for the
//! percentages of SPEC §5).
//!
//! The library never prints: long-running functions take a `progress: &mut dyn
//! FnMut(ProgressEvent)` callback (pass `&mut |_| {}` to ignore it).

pub mod diagnostics;
pub mod features;
pub mod knn;
pub mod linear;
pub mod protocol;
pub mod results;
pub mod supervised;

pub use crate::augment::Normalize;
pub use diagnostics::{AxisFit, Diagnostics, OffsetPairs, Probe};
pub use features::{
    check_normalization, extract_features, extract_grid_features, extract_windows, grid_positions,
    probe_features, FeatureCache, FeatureSet, GridFeatures,
};
pub use knn::{knn_classify, KnnConfig, KnnIndex, KnnResult};
pub use linear::{
    linear_probe, train_linear, train_linear_from, EpochStats, LinearClassifier, LinearProbeConfig,
    LinearProbeResult,
};
pub use protocol::{evaluate_backbone, CacheSpec, EvalPlan};
pub use results::{append_csv, EvalResult, Protocol, ResultRow};
pub use supervised::{train_supervised, SupervisedAugment, SupervisedConfig, SupervisedReport};

use std::path::PathBuf;

/// Everything that can go wrong in evaluation. Each variant names the input, file or value.
#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    /// An argument is out of range or inconsistent with another one.
    #[error("{what}: {detail}")]
    Invalid { what: String, detail: String },
    /// A split has no labels (e.g. STL-10 `unlabeled`), so it cannot be evaluated.
    #[error("{dataset}/{split}: the split is unlabelled; evaluation needs labels")]
    Unlabelled { dataset: String, split: String },
    /// The tensor device reported an error.
    #[error("device error during {during}: {detail}")]
    Device { during: String, detail: String },
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A feature file or CSV file is not what it should be.
    #[error("{path}: {detail}")]
    BadFile { path: PathBuf, detail: String },
}

impl EvalError {
    pub(crate) fn invalid(what: impl Into<String>, detail: impl Into<String>) -> Self {
        Self::Invalid {
            what: what.into(),
            detail: detail.into(),
        }
    }
    pub(crate) fn device(during: impl Into<String>, err: impl std::fmt::Debug) -> Self {
        Self::Device {
            during: during.into(),
            detail: format!("{err:?}"),
        }
    }
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            path: path.into(),
            source,
        }
    }
}

/// Result type of this module.
pub type Result<T, E = EvalError> = std::result::Result<T, E>;

/// Progress reports of the long-running evaluation functions.
#[derive(Clone, Debug, PartialEq)]
pub enum ProgressEvent {
    /// Feature extraction: `done` of `total` images of `what` (e.g. `cifar10/test` or
    /// `cifar10/test patch (10,10)`) went through the backbone.
    Features {
        what: String,
        done: usize,
        total: usize,
    },
    /// Linear probe: epoch `epoch` (1-based) of `epochs` finished with this mean minibatch loss.
    LinearEpoch {
        epoch: usize,
        epochs: usize,
        loss: f32,
    },
    /// kNN: `done` of `total` test rows classified.
    Knn { done: usize, total: usize },
    /// Supervised arm: one optimiser step (1-based within the epoch).
    SupervisedStep {
        epoch: usize,
        step: usize,
        steps: usize,
        loss: f32,
    },
    /// Supervised arm: epoch `epoch` (1-based) finished; mean loss and training accuracy
    /// (on the augmented minibatches, train-mode batch-norm).
    SupervisedEpoch {
        epoch: usize,
        epochs: usize,
        loss: f32,
        train_acc: f32,
    },
}
