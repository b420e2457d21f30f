//! Export a pretrained backbone for PyTorch (`spatial-reasoning export`).
//!
//! [`export_run`] reads a run directory's newest checkpoint, loads its backbone (so names and
//! shapes are checked against the backbone type), and writes a safetensors file that
//! `python/spatial_reasoning_torch.py` loads with `load_state_dict(strict=True)`:
//!
//! - the parameter names are the crate's own, which are the PyTorch module's by construction:
//!   `stem.conv.weight`, `stage2.0.shortcut.bn.running_var`, `block3.bn.bias`, … (conv weights
//!   `(O, I, K, K)` as PyTorch; batch-norm `weight`, `bias`, `running_mean`, `running_var`);
//! - every batch-norm also gets `num_batches_tracked` (int64, shape `[]`), which PyTorch's
//!   `BatchNorm2d` keeps as a buffer and so strict loading requires; its value is the number of
//!   training steps (one batch-norm update per step). PyTorch reads it only when `momentum` is
//!   `None`, which these modules never use (momentum 0.1, epsilon 1e-5 as here);
//! - the header's `__metadata__` says what the file is (see [`Metadata`]): the backbone, the
//!   input normalisation the backbone was trained with, the image side and the run it came from.
//!
//! The same file loads back into this crate's backbone with dfdx's `load_safetensors` (the extra
//! `num_batches_tracked` entries are ignored).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use ::safetensors::tensor::{Dtype as SafeDtype, SafeTensors, TensorView};
use dfdx::prelude::*;

use crate::config::Config;
use crate::method::HeadSpec;
use crate::models::{with_backbone, Backbone, BackboneFn, BackboneKind};
use crate::train::{checkpoint, Meta};

/// The file formats `export` writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ExportFormat {
    /// safetensors with the parameter and buffer names of `python/spatial_reasoning_torch.py`
    /// (the only format so far).
    Torch,
}

impl ExportFormat {
    pub const ALL: [ExportFormat; 1] = [Self::Torch];
    pub fn name(self) -> &'static str {
        match self {
            Self::Torch => "torch",
        }
    }
}

impl std::str::FromStr for ExportFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|k| k.name() == s)
            .ok_or_else(|| format!("unknown export format `{s}` (expected torch)"))
    }
}

/// Value of the `format` metadata key.
pub const FORMAT_TAG: &str = "spatial-reasoning-backbone/1";

/// Everything that can stop an export. Each variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("{}: {detail}", .path.display())]
    File { path: PathBuf, detail: String },
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error(transparent)]
    Checkpoint(#[from] checkpoint::CheckpointError),
}

fn file_err(path: &Path, detail: impl ToString) -> ExportError {
    ExportError::File {
        path: path.to_path_buf(),
        detail: detail.to_string(),
    }
}

/// The `__metadata__` of an exported file (all values are strings, as safetensors requires).
#[derive(Clone, Debug, PartialEq)]
pub struct Metadata {
    /// `conv4`, `resnet8`, `resnet32` or `resnet56`.
    pub backbone: BackboneKind,
    /// Per-channel (R, G, B) mean and std in `[0, 1]` units: inputs are `(x / 255 − mean) / std`.
    pub normalize_mean: [f32; 3],
    pub normalize_std: [f32; 3],
    /// `data.image_size` of the run.
    pub image_size: usize,
    /// `data.dataset` of the run.
    pub dataset: String,
    /// Training steps of the exported checkpoint.
    pub step: u64,
}

impl Metadata {
    /// As the string map stored in the file.
    pub fn to_map(&self) -> HashMap<String, String> {
        let list = |v: &[f32; 3]| format!("[{}, {}, {}]", v[0], v[1], v[2]);
        [
            ("format", FORMAT_TAG.to_string()),
            ("backbone", self.backbone.name().to_string()),
            ("features", crate::models::FEATURES.to_string()),
            ("normalize_mean", list(&self.normalize_mean)),
            ("normalize_std", list(&self.normalize_std)),
            ("image_size", self.image_size.to_string()),
            ("dataset", self.dataset.clone()),
            ("step", self.step.to_string()),
            ("crate_version", env!("CARGO_PKG_VERSION").to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }
}

/// What [`export_run`] wrote.
#[derive(Clone, Debug, PartialEq)]
pub struct ExportSummary {
    pub out: PathBuf,
    pub checkpoint: PathBuf,
    pub metadata: Metadata,
    /// Tensors written (parameters, running statistics and `num_batches_tracked`).
    pub tensors: usize,
    /// Trainable parameters of the backbone.
    pub params: usize,
}

/// Write the backbone of `run_dir`'s newest checkpoint to `out` in `format` (see the module
/// docs). The file is written atomically; an existing `out` is replaced.
pub fn export_run(
    run_dir: &Path,
    out: &Path,
    format: ExportFormat,
) -> Result<ExportSummary, ExportError> {
    // One format so far; a new one gets its own arm here.
    match format {
        ExportFormat::Torch => {}
    }
    let cfg_path = run_dir.join("config.toml");
    if !cfg_path.is_file() {
        return Err(file_err(
            run_dir,
            "not a run directory (no config.toml); give the folder `pretrain` wrote",
        ));
    }
    let cfg = Config::from_toml_file(&cfg_path)?.check()?;
    let meta_path = run_dir.join("meta.json");
    let meta: Meta = std::fs::read_to_string(&meta_path)
        .map_err(|e| file_err(&meta_path, e))
        .and_then(|t| serde_json::from_str(&t).map_err(|e| file_err(&meta_path, e)))?;
    let (found, _) = checkpoint::find_latest(run_dir)?;
    let model_path = found.model_path();
    let metadata = Metadata {
        backbone: cfg.backbone.name,
        normalize_mean: meta.normalize_mean,
        normalize_std: meta.normalize_std,
        image_size: cfg.data.image_size,
        dataset: cfg.data.dataset.name().to_string(),
        step: found.state.step,
    };

    // Load through the backbone type (checks every name and shape), save it on its own (the
    // names without `backbone.`), then add the batch-norm counters and the metadata.
    struct Save<'a> {
        dev: crate::Cpu,
        checkpoint: &'a Path,
        head: HeadSpec,
        tmp: &'a Path,
    }
    impl BackboneFn<crate::Cpu> for Save<'_> {
        type Output = Result<usize, ExportError>;
        fn call<B: Backbone<crate::Cpu> + 'static>(self, backbone: B) -> Self::Output {
            let backbone =
                checkpoint::load_model(backbone, self.head, &self.dev, self.checkpoint)?.backbone;
            backbone
                .save_safetensors(self.tmp)
                .map_err(|e| file_err(self.tmp, format!("cannot write: {e:?}")))?;
            Ok(backbone.num_trainable_params())
        }
    }
    let dir = out
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|e| file_err(dir, e))?;
    let tmp = dir.join(format!(
        ".{}.backbone-{}",
        out.file_name().unwrap_or_default().to_string_lossy(),
        std::process::id()
    ));
    let dev = crate::Cpu::default();
    let save = Save {
        dev: dev.clone(),
        checkpoint: &model_path,
        head: HeadSpec::from_config(&cfg),
        tmp: &tmp,
    };
    let saved = with_backbone(cfg.backbone.name, &dev, 0, save)
        .map_err(|e| file_err(&model_path, format!("{e:?}")))
        .and_then(|r| r);
    let bytes = std::fs::read(&tmp).map_err(|e| file_err(&tmp, e));
    let _ = std::fs::remove_file(&tmp);
    let (params, bytes) = (saved?, bytes?);

    let st = SafeTensors::deserialize(&bytes).map_err(|e| file_err(&tmp, format!("{e:?}")))?;
    let step = (found.state.step as i64).to_le_bytes();
    let mut tensors: Vec<(String, TensorView<'_>)> = Vec::new();
    for (name, view) in st.tensors() {
        if let Some(prefix) = name.strip_suffix(".running_mean") {
            let counter = TensorView::new(SafeDtype::I64, vec![], &step)
                .map_err(|e| file_err(out, format!("{e:?}")))?;
            tensors.push((format!("{prefix}.num_batches_tracked"), counter));
        }
        tensors.push((name, view));
    }
    tensors.sort_by(|a, b| a.0.cmp(&b.0));
    let count = tensors.len();
    let file = ::safetensors::tensor::serialize(tensors, &Some(metadata.to_map()))
        .map_err(|e| file_err(out, format!("{e:?}")))?;
    crate::files::write_atomic(out, &file).map_err(|e| file_err(out, e))?;
    Ok(ExportSummary {
        out: out.to_path_buf(),
        checkpoint: model_path,
        metadata,
        tensors: count,
        params,
    })
}
