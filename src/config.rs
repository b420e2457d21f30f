//! Experiment configuration: one serde struct per concern, `Default` = `../shared/SPEC.md`.
//!
//! A raw [`Config`] (as parsed from TOML, possibly with `--set section.key=value` overrides) is
//! turned into a [`ValidConfig`] by [`Config::check`], which reports the first invalid condition as
//! a named [`ConfigError`]. Nothing downstream of training accepts an unchecked config.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use crate::models::BackboneKind;

/// Which split pretraining reads (evaluation always trains its probe on `train`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PretrainSplit {
    Train,
    /// STL-10's 100,000 unlabelled images (SPEC §6).
    Unlabeled,
}

/// Which dataset to read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DatasetKind {
    /// The generated "parts" dataset: no download needed.
    Synthetic,
    Cifar10,
    /// CIFAR-100 with its 100 fine labels.
    Cifar100,
    /// CIFAR-100 with its 20 coarse labels.
    Cifar100Coarse,
    Stl10,
    TinyImagenet,
    /// Your own images: `data.path` holds `train/<class>/…` and `test/<class>/…` (or `val/`),
    /// optionally `unlabeled/`; any size, brought to `data.image_size` by `data.resize`.
    ImageFolder,
}

impl DatasetKind {
    pub const ALL: [DatasetKind; 7] = [
        Self::Synthetic,
        Self::Cifar10,
        Self::Cifar100,
        Self::Cifar100Coarse,
        Self::Stl10,
        Self::TinyImagenet,
        Self::ImageFolder,
    ];
    pub fn name(self) -> &'static str {
        match self {
            Self::Synthetic => "synthetic",
            Self::Cifar10 => "cifar10",
            Self::Cifar100 => "cifar100",
            Self::Cifar100Coarse => "cifar100-coarse",
            Self::Stl10 => "stl10",
            Self::TinyImagenet => "tiny-imagenet",
            Self::ImageFolder => "image-folder",
        }
    }
    /// Native image side of a fixed-size dataset; `None` for `image-folder`, whose side is
    /// `data.image_size`.
    pub fn native_size(self) -> Option<usize> {
        match self {
            Self::Synthetic | Self::Cifar10 | Self::Cifar100 | Self::Cifar100Coarse => Some(32),
            Self::Stl10 => Some(96),
            Self::TinyImagenet => Some(64),
            Self::ImageFolder => None,
        }
    }
}

/// How `image-folder` images are brought to `data.image_size` × `data.image_size` (once, when
/// the dataset cache is built).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ResizeRule {
    /// No resizing: every image must already be `image_size` × `image_size` (else an error
    /// naming the file and both sizes).
    #[default]
    None,
    /// The centred square of side min(width, height), then a bilinear resize to the side
    /// (antialiased when shrinking: the filter widens with the scale, as PIL's `BILINEAR`).
    CenterCrop,
}

impl ResizeRule {
    pub const ALL: [ResizeRule; 2] = [Self::None, Self::CenterCrop];
    pub fn name(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::CenterCrop => "center-crop",
        }
    }
}

impl std::str::FromStr for ResizeRule {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|k| k.name() == s)
            .ok_or_else(|| format!("unknown resize rule `{s}` (expected none or center-crop)"))
    }
}

impl std::str::FromStr for DatasetKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|k| k.name() == s)
            .ok_or_else(|| {
                let names: Vec<_> = Self::ALL.iter().map(|k| k.name()).collect();
                format!(
                    "unknown dataset `{s}` (expected one of {})",
                    names.join(", ")
                )
            })
    }
}

/// How a patch is turned into a backbone input (SPEC §3).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PatchMode {
    /// Resize the p×p region (bilinear) to the input size.
    Zoom,
    /// Paste the p×p region at a random place on an all-zero canvas.
    Additive,
}

/// Whether patches of one image may overlap (SPEC §3).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OverlapRule {
    /// Every pair satisfies |Δrow| ≥ p or |Δcol| ≥ p: the paper's claim, and our correction of
    /// the authors' sampler (SPEC §3).
    Forbidden,
    /// The authors' sampler exactly (their `random.sample` of 2P distinct coordinates, redrawn
    /// while |row₀ − col₀| < p and |row₁ − col₁| < p): it compares a patch's row with its own
    /// column, so patches overlap (55 % of pairs at S = 32, p = 12). See
    /// [`crate::augment::patches`].
    Allowed,
}

/// Which pairs carry the distance MSE term (SPEC §3).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TargetPolicy {
    /// The authors' code: every pair; (0,0) for positive image pairs, (1,1) for negatives.
    Reference,
    /// Only positive patch pairs.
    PositivePatchesOnly,
}

/// Relation loss on the same/different logit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RelationLoss {
    Bce,
    Focal,
}

/// How the relation head combines the two features of a pair (the RR paper's ablation):
/// concatenation (input width 2F) or the element-wise sum, mean or maximum (width F). See
/// [`crate::method::head::aggregate`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Aggregation {
    Cat,
    Sum,
    Mean,
    Max,
}

impl Aggregation {
    pub const ALL: [Aggregation; 4] = [Self::Cat, Self::Sum, Self::Mean, Self::Max];
    pub fn name(self) -> &'static str {
        match self {
            Self::Cat => "cat",
            Self::Sum => "sum",
            Self::Mean => "mean",
            Self::Max => "max",
        }
    }
}

/// The code saved with a head's weights (`head.aggregation`): 0 = cat, 1 = sum, 2 = mean, 3 = max.
impl num_traits::ToPrimitive for Aggregation {
    fn to_i64(&self) -> Option<i64> {
        Some(Self::ALL.iter().position(|a| a == self).unwrap_or(0) as i64)
    }
    fn to_u64(&self) -> Option<u64> {
        self.to_i64().map(|v| v as u64)
    }
}

impl num_traits::NumCast for Aggregation {
    fn from<T: num_traits::ToPrimitive>(n: T) -> Option<Self> {
        Self::ALL.get(usize::try_from(n.to_i64()?).ok()?).copied()
    }
}

/// What to do when a loss or gradient is not finite.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum NonFinitePolicy {
    /// Stop with an error, keeping the last good checkpoint.
    Stop,
    /// Skip the step (no update) and count it.
    Skip,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OptimizerKind {
    Adam,
    Sgd,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DataConfig {
    pub dataset: DatasetKind,
    /// Data root; `None` = `$SPATIAL_REASONING_DATA` or `./data`.
    pub root: Option<PathBuf>,
    /// Side of the backbone input in pixels (views are cropped/resized to it).
    pub image_size: usize,
    /// Synthetic dataset: number of training images.
    pub train_size: usize,
    /// Synthetic dataset: number of test images.
    pub test_size: usize,
    /// Synthetic dataset: generator seed (independent of the training seed).
    pub synthetic_seed: u64,
    /// Use only the first N training images (0 = all); handy for quick runs on real data.
    pub train_limit: usize,
    /// The split pretraining reads: `train`, or `unlabeled` (STL-10, image-folder).
    pub pretrain_split: PretrainSplit,
    /// Threads that build the pretraining minibatches (augmented views and patches) while the
    /// model trains: a pool of its own with this many threads, or 0 = rayon's global pool,
    /// shared with the training step's compute (`train.threads`). Batches are the same either
    /// way ([`crate::train::pipeline`]).
    pub workers: usize,
    /// `image-folder` only: the folder holding `train/`, `test/` (or `val/`) and optionally
    /// `unlabeled/`.
    pub path: Option<PathBuf>,
    /// `image-folder` only: how images reach `image_size` × `image_size`.
    pub resize: ResizeRule,
    /// `image-folder` only: where the decoded-image cache lives (default:
    /// `<path>/.spatial-reasoning-cache/`).
    pub cache_dir: Option<PathBuf>,
}

impl Default for DataConfig {
    fn default() -> Self {
        Self {
            dataset: DatasetKind::Cifar10,
            root: None,
            image_size: 32,
            train_size: 10_000,
            test_size: 2_000,
            synthetic_seed: 0,
            train_limit: 0,
            pretrain_split: PretrainSplit::Train,
            workers: 0,
            path: None,
            resize: ResizeRule::None,
            cache_dir: None,
        }
    }
}

impl DataConfig {
    /// The dataset checks that need no file: a fixed-size dataset must be read at its native
    /// side (patch geometry and the evaluation grid are in dataset pixels), `image-folder` needs
    /// `data.path`, and its keys (`path`, `resize`, `cache_dir`) mean nothing for other datasets.
    pub fn check_folder_keys(&self) -> Result<(), ConfigError> {
        match self.dataset.native_size() {
            Some(native) => {
                if self.image_size != native {
                    return Err(ConfigError::ImageSizeNotNative {
                        dataset: self.dataset.name(),
                        size: self.image_size,
                        native,
                    });
                }
                let dataset = self.dataset.name();
                if self.path.is_some() {
                    return Err(ConfigError::FolderKeyWithoutFolder {
                        key: "path",
                        dataset,
                    });
                }
                if self.resize != ResizeRule::None {
                    return Err(ConfigError::FolderKeyWithoutFolder {
                        key: "resize",
                        dataset,
                    });
                }
                if self.cache_dir.is_some() {
                    return Err(ConfigError::FolderKeyWithoutFolder {
                        key: "cache_dir",
                        dataset,
                    });
                }
            }
            None => {
                if self.path.is_none() {
                    return Err(ConfigError::FolderPathMissing);
                }
            }
        }
        Ok(())
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BackboneConfig {
    pub name: BackboneKind,
}

impl Default for BackboneConfig {
    fn default() -> Self {
        Self {
            name: BackboneKind::Resnet32,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MethodConfig {
    /// Augmented views per image (K).
    pub views: usize,
    /// Patches per image (P); 0 with `alpha = 0` is plain relational reasoning.
    pub patches: usize,
    /// Patch side p in original-image pixels; 0 = round(0.375 · image side).
    pub patch_size: usize,
    pub patch_mode: PatchMode,
    pub overlap: OverlapRule,
    /// Weight α of the distance MSE.
    pub alpha: f32,
    pub target_policy: TargetPolicy,
    /// How the relation head combines a pair's two features: `cat` (the paper's), `sum`,
    /// `mean`, `max`.
    pub aggregation: Aggregation,
    pub loss: RelationLoss,
    pub focal_gamma: f32,
    pub focal_alpha: f32,
    /// Hidden width of the relation head (the paper's: 256).
    pub head_hidden: usize,
}

impl Default for MethodConfig {
    fn default() -> Self {
        Self {
            views: 4,
            patches: 2,
            patch_size: 0,
            patch_mode: PatchMode::Zoom,
            overlap: OverlapRule::Forbidden,
            alpha: 1.0,
            target_policy: TargetPolicy::Reference,
            aggregation: Aggregation::Cat,
            loss: RelationLoss::Bce,
            focal_gamma: 2.0,
            focal_alpha: 0.5,
            head_hidden: 256,
        }
    }
}

impl MethodConfig {
    /// True when this is relational reasoning alone (no patches, no distance term).
    pub fn is_rr(&self) -> bool {
        self.patches == 0
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OptimConfig {
    pub name: OptimizerKind,
    pub lr: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
    /// SGD momentum (ignored by Adam).
    pub momentum: f64,
}

impl Default for OptimConfig {
    fn default() -> Self {
        Self {
            name: OptimizerKind::Adam,
            lr: 1e-3,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.0,
            momentum: 0.9,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrainConfig {
    pub epochs: usize,
    /// Source images per step (B).
    pub batch_size: usize,
    pub seed: u64,
    /// Write a metrics row every N steps.
    pub log_every: usize,
    /// Write a checkpoint every N steps (0 = only at epoch ends).
    pub checkpoint_every: usize,
    /// Compute threads (0 = the number of cores).
    pub threads: usize,
    pub nonfinite: NonFinitePolicy,
    /// Stop after this many steps in total (0 = no limit); for smoke runs.
    pub max_steps: usize,
    /// Arithmetic of the convolutions while training (pretraining and the supervised arm):
    /// `"f32"` (default) or `"bf16"` (bf16 operands, f32 accumulation, f32 weights; CPU only).
    /// Feature extraction and the probes always run in f32.
    pub precision: crate::ops::Precision,
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            epochs: 200,
            batch_size: 128,
            seed: 1,
            log_every: 20,
            checkpoint_every: 0,
            threads: 0,
            nonfinite: NonFinitePolicy::Stop,
            max_steps: 0,
            precision: crate::ops::Precision::F32,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EvalConfig {
    pub linear_epochs: usize,
    pub linear_batch: usize,
    pub linear_lr: f64,
    pub knn_k: usize,
    pub knn_temperature: f32,
    /// Patch counts n for the patch-concatenated probe (0 = plain feature).
    pub probe_patches: Vec<usize>,
}

impl Default for EvalConfig {
    fn default() -> Self {
        Self {
            linear_epochs: 100,
            linear_batch: 128,
            linear_lr: 1e-3,
            knn_k: 200,
            knn_temperature: 0.1,
            probe_patches: vec![0],
        }
    }
}

/// The per-epoch diagnostics of [`crate::eval::diagnostics`] (`[diagnostics]`). `Default` = on, 2,000 pairs,
/// kNN of 1,000 test images against 5,000 training images.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DiagnosticsConfig {
    /// Measure at every epoch end (and for random-init arms once).
    pub enabled: bool,
    /// Patch pairs drawn from each split (one pair per image; at most the split's size).
    pub pairs: usize,
    /// Training images the online kNN compares against (at most the split's size).
    pub knn_train: usize,
    /// Test images the online kNN classifies (at most the split's size).
    pub knn_test: usize,
    /// Seed of the pair and subset draws (independent of `train.seed`).
    pub seed: u64,
}

impl Default for DiagnosticsConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            pairs: 2_000,
            knn_train: 5_000,
            knn_test: 1_000,
            seed: 0,
        }
    }
}

/// One arm of the main job (`run.arms`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RunArm {
    /// The backbone as initialised from the seed, no training: the lower bound.
    #[serde(alias = "random")]
    RandomInit,
    /// Relational reasoning alone (`method.patches = 0`, `method.alpha = 0`).
    Rr,
    /// The config's method (spatial reasoning with its patches and α), expanded by
    /// `run.sweep` into one arm per swept value.
    Sr,
    /// The backbone trained with labels: the upper bound, same probes.
    Supervised,
}

impl RunArm {
    pub const ALL: [RunArm; 4] = [Self::RandomInit, Self::Rr, Self::Sr, Self::Supervised];
    pub fn name(self) -> &'static str {
        match self {
            Self::RandomInit => "random-init",
            Self::Rr => "rr",
            Self::Sr => "sr",
            Self::Supervised => "supervised",
        }
    }
}

/// The main job (`spatial-reasoning run`): which arms, which seeds, which ablation grid.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RunConfig {
    /// Arms to run: `random-init`, `rr`, `sr`, `supervised` (`random` is read as
    /// `random-init`).
    pub arms: Vec<RunArm>,
    /// Seeds; every arm runs once per seed.
    pub seeds: Vec<u64>,
    /// Ablation grid: `"section.key" = [values…]` expands the `sr` arm into one arm per value.
    pub sweep: std::collections::BTreeMap<String, Vec<toml::Value>>,
}

impl Default for RunConfig {
    fn default() -> Self {
        Self {
            arms: RunArm::ALL.to_vec(),
            seeds: vec![1, 2, 3],
            sweep: Default::default(),
        }
    }
}

/// A whole experiment.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub data: DataConfig,
    pub backbone: BackboneConfig,
    pub method: MethodConfig,
    pub optim: OptimConfig,
    pub train: TrainConfig,
    pub eval: EvalConfig,
    pub diagnostics: DiagnosticsConfig,
    pub run: RunConfig,
    /// Where `run --slurm` runs the cells; changes nothing a cell computes.
    pub slurm: crate::slurm::SlurmConfig,
}

/// One invalid condition, named, with the key and the allowed range.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: {message}")]
    Parse { path: String, message: String },
    #[error("--set {arg}: expected section.key=value")]
    BadOverride { arg: String },
    #[error("--set {key}: {message}")]
    Override { key: String, message: String },
    #[error("data.pretrain_split = \"unlabeled\": only stl10 and image-folder have an unlabeled split (data.dataset = {0})")]
    PretrainSplit(&'static str),
    #[error(
        "data.image_size = {size}: {dataset} images are {native}×{native}; set data.image_size = {native} (only image-folder resizes)"
    )]
    ImageSizeNotNative {
        dataset: &'static str,
        size: usize,
        native: usize,
    },
    #[error("data.path is not set: data.dataset = \"image-folder\" reads the folder holding train/ and test/ (or val/)")]
    FolderPathMissing,
    #[error("data.{key} is read only by data.dataset = \"image-folder\" (data.dataset = {dataset}; its files are found under data.root)")]
    FolderKeyWithoutFolder {
        key: &'static str,
        dataset: &'static str,
    },
    #[error("data.image_size = {0}: must be at least 8")]
    ImageSize(usize),
    #[error("data.image_size = {size}: at most {max} (a larger side overflows buffer sizes)")]
    ImageSizeTooLarge { size: usize, max: usize },
    #[error("data.workers = {0}: at most {MAX_WORKERS} threads (0 = share rayon's global pool)")]
    Workers(usize),
    #[error("data.train_size = {0}: must be at least 2")]
    TrainSize(usize),
    #[error(
        "data.train_size = {size}: at most {max} (synthetic images are generated in memory, 3 KiB each)"
    )]
    TrainSizeTooLarge { size: usize, max: usize },
    #[error("data.test_size = {0}: must be at least 1")]
    TestSize(usize),
    #[error(
        "data.test_size = {size}: at most {max} (synthetic images are generated in memory, 3 KiB each)"
    )]
    TestSizeTooLarge { size: usize, max: usize },
    #[error("method.views = {0}: K must be at least 2")]
    Views(usize),
    #[error("method.patches = {0}: P must be 0 or at least 2 (pairs need two patches)")]
    Patches(usize),
    #[error("method.patch_size = {patch}: must lie in 1..data.image_size = {image}")]
    PatchTooLarge { patch: usize, image: usize },
    #[error(
        "method.patches = {count} patches of side method.patch_size = {patch} cannot be placed without overlap in a {image}×{image} image (at most {max} fit)"
    )]
    PatchesDoNotFit {
        count: usize,
        patch: usize,
        image: usize,
        max: usize,
    },
    #[error(
        "method.overlap = \"allowed\" (the authors' sampler) draws 2·method.patches = {need} distinct coordinates from 0..{range} (data.image_size = {image} − method.patch_size = {patch}): too few values; use fewer or smaller patches, or overlap = \"forbidden\""
    )]
    AuthorsRange {
        need: usize,
        range: usize,
        image: usize,
        patch: usize,
    },
    #[error("method.alpha = {0}: must be finite and ≥ 0")]
    Alpha(f32),
    #[error("method.alpha = {0}: a distance term needs patches (method.patches ≥ 2)")]
    AlphaWithoutPatches(f32),
    #[error("method.focal_gamma = {0}: must be finite and ≥ 0")]
    FocalGamma(f32),
    #[error("method.focal_alpha = {0}: must lie in [0, 1]")]
    FocalAlpha(f32),
    #[error("method.head_hidden = {0}: must lie in 1..={MAX_HEAD_HIDDEN}")]
    HeadHidden(usize),
    #[error("optim.lr = {0}: must be finite and > 0")]
    LearningRate(f64),
    #[error("optim.{key} = {value}: must lie in [0, 1)")]
    Beta { key: &'static str, value: f64 },
    #[error("optim.eps = {0}: must be finite and > 0")]
    Eps(f64),
    #[error("optim.weight_decay = {0}: must be finite and ≥ 0")]
    WeightDecay(f64),
    #[error("optim.momentum = {0}: must lie in [0, 1)")]
    Momentum(f64),
    #[error("train.epochs = {0}: must be at least 1")]
    Epochs(usize),
    #[error("train.batch_size = {0}: B must be at least 2 (negatives pair different images)")]
    BatchSize(usize),
    #[error("train.batch_size = {batch}: larger than the {train} training images")]
    BatchLargerThanData { batch: usize, train: usize },
    #[error("train.log_every = 0: must be at least 1")]
    LogEvery,
    #[error("eval.linear_epochs = 0: must be at least 1")]
    LinearEpochs,
    #[error("eval.linear_batch = {0}: must be at least 1")]
    LinearBatch(usize),
    #[error("eval.linear_lr = {0}: must be finite and > 0")]
    LinearLr(f64),
    #[error("eval.knn_k = 0: must be at least 1")]
    KnnK,
    #[error("eval.knn_temperature = {0}: must be finite and > 0")]
    KnnTemperature(f32),
    #[error("eval.probe_patches contains {0}: allowed values are 0, 1, 3, 5, 7, 9")]
    ProbePatches(usize),
    #[error("diagnostics.{key} = {value}: must be at least {min}")]
    Diagnostics {
        key: &'static str,
        value: usize,
        min: usize,
    },
    #[error("run.seeds is empty: give at least one seed")]
    NoSeeds,
    #[error("run.arms is empty: give at least one of random-init, rr, sr, supervised")]
    NoArms,
    #[error("run.sweep.\"{key}\": {message}")]
    Sweep { key: String, message: String },
    #[error("slurm.{key} = {value}: {message}")]
    Slurm {
        key: &'static str,
        value: String,
        message: String,
    },
}

/// A configuration that passed [`Config::check`]. Derefs to the raw config; the values resolved
/// from it are fields (the patch geometry) or methods (the data root).
#[derive(Clone, Debug, PartialEq)]
pub struct ValidConfig {
    raw: Config,
    /// Image side, patch side (`method.patch_size = 0` resolved), patch count and overlap rule:
    /// what every patch consumer reads.
    pub geometry: PatchGeometry,
}

impl std::ops::Deref for ValidConfig {
    type Target = Config;
    fn deref(&self) -> &Config {
        &self.raw
    }
}

impl ValidConfig {
    pub fn raw(&self) -> &Config {
        &self.raw
    }
    /// Data root: `data.root`, else `$SPATIAL_REASONING_DATA`, else `./data`.
    pub fn data_root(&self) -> PathBuf {
        resolve_data_root(self.raw.data.root.as_deref())
    }
}

/// Data root resolution shared by the CLI and configs: explicit, else `$SPATIAL_REASONING_DATA`,
/// else `./data`.
pub fn resolve_data_root(explicit: Option<&Path>) -> PathBuf {
    if let Some(p) = explicit {
        return p.to_path_buf();
    }
    match std::env::var_os("SPATIAL_REASONING_DATA") {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => PathBuf::from("./data"),
    }
}

/// The default patch side for an image side S: round(0.375·S) (SPEC §3 decision).
pub fn default_patch_size(image_size: usize) -> usize {
    ((image_size as f64) * 0.375).round() as usize
}

/// The patch side `method.patch_size` means for image side `image`: itself, or
/// [`default_patch_size`] for 0.
pub fn patch_side(image: usize, patch_size: usize) -> usize {
    if patch_size == 0 {
        default_patch_size(image)
    } else {
        patch_size
    }
}

/// The largest number of p×p patches that can be placed without overlap in an S×S image:
/// a grid packing of ⌊S/p⌋² is optimal for axis-aligned squares of equal side (any two
/// non-overlapping squares with positions in [0, S−p] need separation p on some axis, and a
/// pigeonhole argument over the ⌊S/p⌋ strips on each axis bounds the count).
pub fn max_non_overlapping(image: usize, patch: usize) -> usize {
    if patch == 0 || patch > image {
        return 0;
    }
    let per_side = image / patch;
    // Saturating: `image` is user input (2^32 with patch 1 overflowed: a panic with overflow
    // checks on, a wrong "at most 0 fit" without).
    per_side.saturating_mul(per_side)
}

/// Why a patch geometry is impossible (see [`patch_fit`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PatchMisfit {
    #[error("the patch side is 0")]
    ZeroPatch,
    #[error("the patch side is not smaller than the image")]
    TooLarge,
    #[error("no patches asked for")]
    NoPatches,
    /// The authors' sampler draws `need` = 2·count distinct values from `0..range`.
    #[error("the authors' sampler needs {need} distinct coordinates from 0..{range}")]
    AuthorsRange { need: usize, range: usize },
    #[error("at most {max} patches fit without overlap")]
    DoNotFit { max: usize },
}

/// The rule every patch geometry obeys, in one place (the config check and the sampler both ask
/// it): `1 ≤ p < min(H, W)`, `count ≥ 1`; under [`OverlapRule::Allowed`] the authors'
/// `random.sample(range(0, S − p), 2·P)` needs `2·P ≤ min(H, W) − p`; under
/// [`OverlapRule::Forbidden`], `count ≤ ⌊H/p⌋·⌊W/p⌋` ([`max_non_overlapping`]).
pub fn patch_fit(
    height: usize,
    width: usize,
    patch: usize,
    count: usize,
    overlap: OverlapRule,
) -> Result<(), PatchMisfit> {
    if patch == 0 {
        return Err(PatchMisfit::ZeroPatch);
    }
    if patch >= height || patch >= width {
        return Err(PatchMisfit::TooLarge);
    }
    if count == 0 {
        return Err(PatchMisfit::NoPatches);
    }
    match overlap {
        OverlapRule::Allowed => {
            let range = height.min(width) - patch;
            if count.saturating_mul(2) > range {
                return Err(PatchMisfit::AuthorsRange {
                    need: count.saturating_mul(2),
                    range,
                });
            }
        }
        OverlapRule::Forbidden => {
            let max = if height == width {
                max_non_overlapping(height, patch)
            } else {
                (height / patch).saturating_mul(width / patch)
            };
            if count > max {
                return Err(PatchMisfit::DoNotFit { max });
            }
        }
    }
    Ok(())
}

/// The patch geometry of a run, resolved once by [`Config::check`] and read by everything that
/// cuts, pairs or draws patches: the sampler ([`crate::augment::PatchSampler::for_geometry`]),
/// the pair batch's distance targets, the evaluation grid, the diagnostics, `bench`, `patches`
/// and the report.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PatchGeometry {
    image: usize,
    patch: usize,
    count: usize,
    overlap: OverlapRule,
}

impl PatchGeometry {
    /// Resolve `patch_size` (0 = [`default_patch_size`]`(image)`) and check that `count`
    /// patches fit ([`patch_fit`]); `count = 0` (RR: no patches) only needs `p < S` for the
    /// evaluation grid and the diagnostics' pairs.
    pub fn resolve(
        image: usize,
        patch_size: usize,
        count: usize,
        overlap: OverlapRule,
    ) -> Result<PatchGeometry, PatchMisfit> {
        let patch = patch_side(image, patch_size);
        if count == 0 {
            // No patches to place: only the side matters (for the grid and the pairs).
            if patch == 0 {
                return Err(PatchMisfit::ZeroPatch);
            }
            if patch >= image {
                return Err(PatchMisfit::TooLarge);
            }
        } else {
            patch_fit(image, image, patch, count, overlap)?;
        }
        Ok(PatchGeometry {
            image,
            patch,
            count,
            overlap,
        })
    }
    /// Side S of the images as the data has them (fixed-size datasets at their native side,
    /// image folders resized to `data.image_size`), which is also the backbone input's side.
    pub fn image(&self) -> usize {
        self.image
    }
    /// Patch side p in image pixels.
    pub fn patch(&self) -> usize {
        self.patch
    }
    /// Patches per image P (0: relational reasoning, no patches).
    pub fn count(&self) -> usize {
        self.count
    }
    pub fn overlap(&self) -> OverlapRule {
        self.overlap
    }
    /// S − p: the range of a corner coordinate, and the distance targets' scale.
    pub fn range(&self) -> usize {
        self.image - self.patch
    }
    /// The same side and patch with two patches per image (the diagnostics' pairs, also for
    /// RR runs): under the run's overlap rule where two fit, else the authors' rule.
    pub fn pair(&self) -> Result<PatchGeometry, PatchMisfit> {
        let fits = |overlap| patch_fit(self.image, self.image, self.patch, 2, overlap);
        let overlap = match fits(self.overlap) {
            Ok(()) => self.overlap,
            Err(_) => {
                fits(OverlapRule::Allowed)?;
                OverlapRule::Allowed
            }
        };
        Ok(PatchGeometry {
            count: 2,
            overlap,
            ..*self
        })
    }
}

/// The largest `data.image_size` accepted: 3·S²·batch floats must stay far from overflow (and
/// 4096 is 40× the largest dataset side).
pub const MAX_IMAGE_SIZE: usize = 4096;

/// The largest synthetic `data.train_size` (and `data.test_size`) accepted: 100× the largest
/// real training split (100,000 images: STL-10 unlabeled, Tiny ImageNet), 31 GB of 32×32 RGB
/// pixels. A larger value
/// is most likely a typo, and a huge one made the generator's allocation fail: an abort, not an
/// error naming the field.
pub const MAX_TRAIN_SIZE: usize = 10_000_000;

/// The largest `data.workers` accepted (each is an OS thread).
pub const MAX_WORKERS: usize = 1024;

/// The largest `method.head_hidden` accepted (the paper's head has 256; a larger value is most
/// likely a typo, and its weights grow linearly with it).
pub const MAX_HEAD_HIDDEN: usize = 16_384;

const PROBE_N: [usize; 6] = [0, 1, 3, 5, 7, 9];

impl Config {
    /// Parse a TOML file. Unknown keys are errors that name the key.
    pub fn from_toml_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Parse {
            path: path.display().to_string(),
            message: e.to_string(),
        })?;
        Self::from_toml_str(&text).map_err(|e| match e {
            ConfigError::Parse { message, .. } => ConfigError::Parse {
                path: path.display().to_string(),
                message,
            },
            other => other,
        })
    }

    pub fn from_toml_str(text: &str) -> Result<Self, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: "<config>".into(),
            message: e.to_string(),
        })
    }

    pub fn to_toml_string(&self) -> String {
        toml::to_string_pretty(self).expect("a Config always serialises")
    }

    /// Apply `section.key=value` overrides. The value is parsed as a TOML value (so `1e-3`,
    /// `true`, `[0, 9]` and `"zoom"` work); a bare word that is not valid TOML is taken as a
    /// string (`method.patch_mode=additive`).
    pub fn apply_overrides<S: AsRef<str>>(&self, overrides: &[S]) -> Result<Self, ConfigError> {
        let mut doc = toml::Value::try_from(self).expect("a Config always serialises");
        for arg in overrides {
            let arg = arg.as_ref();
            let (key, value) = arg
                .split_once('=')
                .ok_or_else(|| ConfigError::BadOverride {
                    arg: arg.to_string(),
                })?;
            let key = key.trim();
            let parts: Vec<&str> = key.split('.').collect();
            if parts.len() != 2 || parts.iter().any(|p| p.is_empty()) {
                return Err(ConfigError::BadOverride {
                    arg: arg.to_string(),
                });
            }
            let parsed = parse_value(value.trim());
            let table = doc
                .as_table_mut()
                .and_then(|t| t.get_mut(parts[0]))
                .and_then(|s| s.as_table_mut())
                .ok_or_else(|| ConfigError::Override {
                    key: key.to_string(),
                    message: format!(
                        "unknown section `{}` (expected data, backbone, method, optim, train, eval, diagnostics, run, slurm)",
                        parts[0]
                    ),
                })?;
            table.insert(parts[1].to_string(), parsed);
        }
        doc.try_into()
            .map_err(|e: toml::de::Error| ConfigError::Override {
                key: overrides
                    .iter()
                    .map(|s| s.as_ref().split('=').next().unwrap_or("").to_string())
                    .collect::<Vec<_>>()
                    .join(", "),
                message: e.message().to_string(),
            })
    }

    /// Validate into a [`ValidConfig`], reporting the first invalid condition.
    pub fn check(self) -> Result<ValidConfig, ConfigError> {
        let d = &self.data;
        if d.image_size < 8 {
            return Err(ConfigError::ImageSize(d.image_size));
        }
        if d.image_size > MAX_IMAGE_SIZE {
            return Err(ConfigError::ImageSizeTooLarge {
                size: d.image_size,
                max: MAX_IMAGE_SIZE,
            });
        }
        if d.pretrain_split == PretrainSplit::Unlabeled
            && !matches!(d.dataset, DatasetKind::Stl10 | DatasetKind::ImageFolder)
        {
            return Err(ConfigError::PretrainSplit(d.dataset.name()));
        }
        d.check_folder_keys()?;
        if d.workers > MAX_WORKERS {
            return Err(ConfigError::Workers(d.workers));
        }
        if d.dataset == DatasetKind::Synthetic {
            if d.train_size < 2 {
                return Err(ConfigError::TrainSize(d.train_size));
            }
            if d.train_size > MAX_TRAIN_SIZE {
                return Err(ConfigError::TrainSizeTooLarge {
                    size: d.train_size,
                    max: MAX_TRAIN_SIZE,
                });
            }
            if d.test_size < 1 {
                return Err(ConfigError::TestSize(d.test_size));
            }
            if d.test_size > MAX_TRAIN_SIZE {
                return Err(ConfigError::TestSizeTooLarge {
                    size: d.test_size,
                    max: MAX_TRAIN_SIZE,
                });
            }
        }
        let m = &self.method;
        if m.views < 2 {
            return Err(ConfigError::Views(m.views));
        }
        if m.patches == 1 {
            return Err(ConfigError::Patches(m.patches));
        }
        let geometry = PatchGeometry::resolve(d.image_size, m.patch_size, m.patches, m.overlap)
            .map_err(|misfit| {
                let patch = patch_side(d.image_size, m.patch_size);
                let image = d.image_size;
                match misfit {
                    PatchMisfit::ZeroPatch | PatchMisfit::TooLarge | PatchMisfit::NoPatches => {
                        ConfigError::PatchTooLarge { patch, image }
                    }
                    PatchMisfit::AuthorsRange { need, range } => ConfigError::AuthorsRange {
                        need,
                        range,
                        image,
                        patch,
                    },
                    PatchMisfit::DoNotFit { max } => ConfigError::PatchesDoNotFit {
                        count: m.patches,
                        patch,
                        image,
                        max,
                    },
                }
            })?;
        if !(m.alpha.is_finite() && m.alpha >= 0.0) {
            return Err(ConfigError::Alpha(m.alpha));
        }
        if m.alpha > 0.0 && m.patches == 0 {
            return Err(ConfigError::AlphaWithoutPatches(m.alpha));
        }
        if !(m.focal_gamma.is_finite() && m.focal_gamma >= 0.0) {
            return Err(ConfigError::FocalGamma(m.focal_gamma));
        }
        if !(0.0..=1.0).contains(&m.focal_alpha) {
            return Err(ConfigError::FocalAlpha(m.focal_alpha));
        }
        if m.head_hidden == 0 || m.head_hidden > MAX_HEAD_HIDDEN {
            return Err(ConfigError::HeadHidden(m.head_hidden));
        }
        let o = &self.optim;
        if !(o.lr.is_finite() && o.lr > 0.0) {
            return Err(ConfigError::LearningRate(o.lr));
        }
        for (key, value) in [("beta1", o.beta1), ("beta2", o.beta2)] {
            if !(0.0..1.0).contains(&value) {
                return Err(ConfigError::Beta { key, value });
            }
        }
        if !(o.eps.is_finite() && o.eps > 0.0) {
            return Err(ConfigError::Eps(o.eps));
        }
        if !(o.weight_decay.is_finite() && o.weight_decay >= 0.0) {
            return Err(ConfigError::WeightDecay(o.weight_decay));
        }
        if !(0.0..1.0).contains(&o.momentum) {
            return Err(ConfigError::Momentum(o.momentum));
        }
        let t = &self.train;
        if t.epochs == 0 {
            return Err(ConfigError::Epochs(t.epochs));
        }
        if t.batch_size < 2 {
            return Err(ConfigError::BatchSize(t.batch_size));
        }
        if d.dataset == DatasetKind::Synthetic && t.batch_size > d.train_size {
            return Err(ConfigError::BatchLargerThanData {
                batch: t.batch_size,
                train: d.train_size,
            });
        }
        if d.train_limit != 0 && t.batch_size > d.train_limit {
            return Err(ConfigError::BatchLargerThanData {
                batch: t.batch_size,
                train: d.train_limit,
            });
        }
        if t.log_every == 0 {
            return Err(ConfigError::LogEvery);
        }
        let e = &self.eval;
        if e.linear_epochs == 0 {
            return Err(ConfigError::LinearEpochs);
        }
        if e.linear_batch == 0 {
            return Err(ConfigError::LinearBatch(e.linear_batch));
        }
        if !(e.linear_lr.is_finite() && e.linear_lr > 0.0) {
            return Err(ConfigError::LinearLr(e.linear_lr));
        }
        if e.knn_k == 0 {
            return Err(ConfigError::KnnK);
        }
        if !(e.knn_temperature.is_finite() && e.knn_temperature > 0.0) {
            return Err(ConfigError::KnnTemperature(e.knn_temperature));
        }
        if let Some(&n) = e.probe_patches.iter().find(|n| !PROBE_N.contains(n)) {
            return Err(ConfigError::ProbePatches(n));
        }
        let g = &self.diagnostics;
        for (key, value, min) in [
            ("pairs", g.pairs, 2),
            ("knn_train", g.knn_train, 1),
            ("knn_test", g.knn_test, 1),
        ] {
            if value < min {
                return Err(ConfigError::Diagnostics { key, value, min });
            }
        }
        let r = &self.run;
        if r.seeds.is_empty() {
            return Err(ConfigError::NoSeeds);
        }
        if r.arms.is_empty() {
            return Err(ConfigError::NoArms);
        }
        for (key, values) in &r.sweep {
            if values.is_empty() {
                return Err(ConfigError::Sweep {
                    key: key.clone(),
                    message: "an empty list of values".into(),
                });
            }
            if key.starts_with("run.") || key.split('.').count() != 2 {
                return Err(ConfigError::Sweep {
                    key: key.clone(),
                    message: "expected a section.key outside [run], e.g. \"method.patches\"".into(),
                });
            }
        }
        self.slurm.check()?;
        Ok(ValidConfig {
            raw: self,
            geometry,
        })
    }
}

fn parse_value(text: &str) -> toml::Value {
    // Parse as the right-hand side of a TOML assignment; fall back to a plain string.
    match toml::from_str::<toml::Table>(&format!("v = {text}")) {
        Ok(mut t) => t.remove("v").expect("key v was just written"),
        Err(_) => toml::Value::String(text.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn valid() -> Config {
        Config::default()
    }

    #[test]
    fn default_matches_spec_and_is_valid() {
        let c = valid().check().unwrap();
        assert_eq!(c.optim.lr, 1e-3);
        assert_eq!(c.method.views, 4);
        assert_eq!(c.train.batch_size, 128);
        assert_eq!(c.geometry.patch(), 12, "round(0.375 * 32)");
        assert_eq!(
            (c.geometry.image(), c.geometry.count(), c.geometry.range()),
            (32, 2, 20)
        );
        assert_eq!(default_patch_size(64), 24);
        assert_eq!(default_patch_size(96), 36);
    }

    #[test]
    fn overrides_parse_values_and_bare_words() {
        let c = valid()
            .apply_overrides(&[
                "optim.lr=5e-4",
                "method.patch_mode=additive",
                "eval.probe_patches=[0, 9]",
                "backbone.name=conv4",
            ])
            .unwrap();
        assert_eq!(c.optim.lr, 5e-4);
        assert_eq!(c.method.patch_mode, PatchMode::Additive);
        assert_eq!(c.eval.probe_patches, vec![0, 9]);
        assert_eq!(c.backbone.name, BackboneKind::Conv4);
    }

    #[test]
    fn unknown_keys_and_values_are_named() {
        let e = valid().apply_overrides(&["optim.lrr=1"]).unwrap_err();
        assert!(e.to_string().contains("lrr"), "{e}");
        let e = valid()
            .apply_overrides(&["backbone.name=resnet9"])
            .unwrap_err();
        assert!(e.to_string().contains("resnet9"), "{e}");
        let e = valid().apply_overrides(&["nosection.x=1"]).unwrap_err();
        assert!(e.to_string().contains("nosection"), "{e}");
        let e = Config::from_toml_str("[train]\nepoch = 3\n").unwrap_err();
        assert!(e.to_string().contains("epoch"), "{e}");
    }

    #[test]
    fn precision_parses_and_rejects_unknown_values() {
        assert_eq!(valid().train.precision, crate::ops::Precision::F32);
        let c = Config::from_toml_str("[train]\nprecision = \"bf16\"\n").unwrap();
        assert_eq!(c.train.precision, crate::ops::Precision::Bf16);
        let c = valid().apply_overrides(&["train.precision=bf16"]).unwrap();
        assert_eq!(c.train.precision, crate::ops::Precision::Bf16);
        let e = valid()
            .apply_overrides(&["train.precision=fp8"])
            .unwrap_err()
            .to_string();
        assert!(e.contains("fp8") && e.contains("bf16"), "{e}");
    }

    #[test]
    fn round_trips_through_toml() {
        let c = valid();
        let back = Config::from_toml_str(&c.to_toml_string()).unwrap();
        assert_eq!(c, back);
    }

    fn err(overrides: &[&str]) -> ConfigError {
        valid()
            .apply_overrides(overrides)
            .unwrap()
            .check()
            .unwrap_err()
    }

    #[test]
    fn one_error_per_invalid_condition() {
        use ConfigError as E;
        assert!(matches!(err(&["data.image_size=4"]), E::ImageSize(4)));
        // Seen with the config fuzz target (fuzz/corpus/config/huge-image-size-overflow):
        // max_non_overlapping(2^32, 1) overflowed (a panic with overflow checks, a wrong "at
        // most 0 fit" without); a huge side also overflowed buffer sizes later.
        assert!(matches!(
            err(&["data.image_size=4294967296", "method.patch_size=1"]),
            E::ImageSizeTooLarge {
                size: 4294967296,
                max: MAX_IMAGE_SIZE
            }
        ));
        assert_eq!(max_non_overlapping(1 << 40, 1), usize::MAX);
        assert_eq!(max_non_overlapping(4096, 4), 1024 * 1024);
        assert!(matches!(
            err(&["data.pretrain_split=unlabeled"]),
            E::PretrainSplit("cifar10")
        ));
        assert!(matches!(
            err(&["data.dataset=stl10"]),
            E::ImageSizeNotNative {
                dataset: "stl10",
                size: 32,
                native: 96
            }
        ));
        assert!(matches!(
            err(&["data.dataset=image-folder"]),
            E::FolderPathMissing
        ));
        assert!(matches!(
            err(&["data.cache_dir=\"c\""]),
            E::FolderKeyWithoutFolder {
                key: "cache_dir",
                dataset: "cifar10"
            }
        ));
        assert!(matches!(
            err(&["data.dataset=synthetic", "data.train_size=1"]),
            E::TrainSize(1)
        ));
        // A typo such as 5_000_000_000 would ask the generator for 15 TB and abort.
        assert!(matches!(
            err(&["data.dataset=synthetic", "data.train_size=5000000000"]),
            E::TrainSizeTooLarge {
                size: 5_000_000_000,
                max: MAX_TRAIN_SIZE
            }
        ));
        let at_max = format!("data.train_size={MAX_TRAIN_SIZE}");
        let over = format!("data.train_size={}", MAX_TRAIN_SIZE + 1);
        let synth = |set: &str| {
            valid()
                .apply_overrides(&["data.dataset=synthetic", set])
                .unwrap()
                .check()
        };
        assert!(synth(&at_max).is_ok());
        assert!(matches!(
            synth(&over).unwrap_err(),
            E::TrainSizeTooLarge { .. }
        ));
        assert!(matches!(
            err(&["data.dataset=synthetic", "data.test_size=5000000000"]),
            E::TestSizeTooLarge {
                size: 5_000_000_000,
                max: MAX_TRAIN_SIZE
            }
        ));
        assert!(matches!(
            err(&["data.dataset=synthetic", "data.test_size=0"]),
            E::TestSize(0)
        ));
        assert!(matches!(err(&["method.views=1"]), E::Views(1)));
        assert!(matches!(err(&["method.patches=1"]), E::Patches(1)));
        assert!(matches!(
            err(&["method.patch_size=32"]),
            E::PatchTooLarge { .. }
        ));
        assert!(matches!(
            err(&["method.patches=5", "method.patch_size=20"]),
            E::PatchesDoNotFit { max: 1, .. }
        ));
        assert!(matches!(err(&["method.alpha=-1"]), E::Alpha(_)));
        assert!(matches!(
            err(&["method.patches=0"]),
            E::AlphaWithoutPatches(_)
        ));
        assert!(matches!(err(&["method.focal_gamma=-1"]), E::FocalGamma(_)));
        assert!(matches!(err(&["method.focal_alpha=2"]), E::FocalAlpha(_)));
        assert!(matches!(err(&["method.head_hidden=0"]), E::HeadHidden(0)));
        assert!(matches!(
            err(&["method.head_hidden=100000"]),
            E::HeadHidden(100_000)
        ));
        assert!(matches!(err(&["data.workers=5000"]), E::Workers(5000)));
        assert!(matches!(err(&["optim.lr=-0.1"]), E::LearningRate(_)));
        assert!(matches!(
            err(&["optim.beta2=1"]),
            E::Beta { key: "beta2", .. }
        ));
        assert!(matches!(err(&["optim.eps=0"]), E::Eps(_)));
        assert!(matches!(err(&["optim.weight_decay=-1"]), E::WeightDecay(_)));
        assert!(matches!(err(&["optim.momentum=1.5"]), E::Momentum(_)));
        assert!(matches!(err(&["train.epochs=0"]), E::Epochs(0)));
        assert!(matches!(err(&["train.batch_size=1"]), E::BatchSize(1)));
        assert!(matches!(
            err(&[
                "data.dataset=synthetic",
                "data.train_size=100",
                "train.batch_size=128"
            ]),
            E::BatchLargerThanData { .. }
        ));
        assert!(matches!(err(&["train.log_every=0"]), E::LogEvery));
        assert!(matches!(err(&["eval.linear_epochs=0"]), E::LinearEpochs));
        assert!(matches!(err(&["eval.linear_batch=0"]), E::LinearBatch(0)));
        assert!(matches!(err(&["eval.linear_lr=0"]), E::LinearLr(_)));
        assert!(matches!(err(&["eval.knn_k=0"]), E::KnnK));
        assert!(matches!(
            err(&["eval.knn_temperature=0"]),
            E::KnnTemperature(_)
        ));
        assert!(matches!(
            err(&["eval.probe_patches=[0, 4]"]),
            E::ProbePatches(4)
        ));
        assert!(matches!(
            err(&["diagnostics.pairs=1"]),
            E::Diagnostics {
                key: "pairs",
                value: 1,
                min: 2
            }
        ));
        assert!(matches!(
            err(&["diagnostics.knn_test=0"]),
            E::Diagnostics {
                key: "knn_test",
                ..
            }
        ));
        assert!(matches!(
            valid().apply_overrides(&["novalue"]).unwrap_err(),
            E::BadOverride { .. }
        ));
    }

    #[test]
    fn geometry_is_resolved_once_with_one_rule() {
        use PatchMisfit as M;
        let g = PatchGeometry::resolve(32, 0, 2, OverlapRule::Forbidden).unwrap();
        assert_eq!(
            (g.image(), g.patch(), g.count(), g.range()),
            (32, 12, 2, 20)
        );
        // RR (no patches) keeps the side for the grid and the diagnostics' pairs.
        let rr = PatchGeometry::resolve(32, 20, 0, OverlapRule::Forbidden).unwrap();
        assert_eq!(rr.count(), 0);
        assert_eq!(
            PatchGeometry::resolve(32, 32, 0, OverlapRule::Forbidden),
            Err(M::TooLarge)
        );
        // Two 20-px patches do not fit side by side in 32 px: the pairs fall back to the
        // authors' rule, which needs 2·2 = 4 ≤ 32 − 20 coordinates.
        let pair = rr.pair().unwrap();
        assert_eq!((pair.count(), pair.overlap()), (2, OverlapRule::Allowed));
        assert_eq!(g.pair().unwrap().overlap(), OverlapRule::Forbidden);
        assert_eq!(
            PatchGeometry::resolve(32, 30, 0, OverlapRule::Forbidden)
                .unwrap()
                .pair(),
            Err(M::AuthorsRange { need: 4, range: 2 })
        );
        // The same rule the sampler applies, rectangles included.
        assert_eq!(
            patch_fit(40, 20, 10, 9, OverlapRule::Forbidden),
            Err(M::DoNotFit { max: 8 })
        );
        assert_eq!(patch_fit(40, 20, 10, 8, OverlapRule::Forbidden), Ok(()));
        // check() puts the resolved geometry in ValidConfig.
        let c = valid()
            .apply_overrides(&["method.patches=3", "method.patch_size=8"])
            .unwrap()
            .check()
            .unwrap();
        assert_eq!(
            c.geometry,
            PatchGeometry::resolve(32, 8, 3, OverlapRule::Forbidden).unwrap()
        );
    }

    #[test]
    fn rr_is_sr_with_no_patches_and_zero_alpha() {
        let c = valid()
            .apply_overrides(&["method.patches=0", "method.alpha=0"])
            .unwrap()
            .check()
            .unwrap();
        assert!(c.method.is_rr());
    }

    #[test]
    fn overlapping_rule_skips_the_fit_check() {
        valid()
            .apply_overrides(&[
                "method.patches=5",
                "method.patch_size=20",
                "method.overlap=allowed",
            ])
            .unwrap()
            .check()
            .unwrap();
        // The authors' `random.sample(range(0, S - p), 2 * P)` needs 2P ≤ S − p values.
        assert!(matches!(
            err(&[
                "method.patches=7",
                "method.patch_size=20",
                "method.overlap=allowed"
            ]),
            ConfigError::AuthorsRange {
                need: 14,
                range: 12,
                ..
            }
        ));
    }
}
