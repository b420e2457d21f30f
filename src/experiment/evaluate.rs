//! Where an evaluated backbone comes from and its evaluation: a checkpoint of a run
//! ([`evaluate_run`]), or a fresh backbone of the config, untrained or trained with labels
//! ([`evaluate_source`]); and a random-init arm's diagnostics.

use std::path::Path;
use std::sync::Arc;

use super::results::save_results;
use super::{file_err, JobError, JobProgress};
use crate::augment::Normalize;
use crate::config::{Config, ValidConfig};
use crate::data::{self, ImageDataset, Split};
use crate::eval::{self, EvalPlan, EvalResult, ProgressEvent, ResultRow};
use crate::method::HeadSpec;
use crate::models::{with_backbone, Backbone, BackboneFn};
use crate::train::{checkpoint, Meta, TrainData, TrainError};

/// Train and test splits plus the normalisation the backbone was trained with.
#[derive(Clone, Debug)]
pub struct EvalData {
    pub train: Arc<ImageDataset>,
    pub test: Arc<ImageDataset>,
    pub normalize: Normalize,
}

/// Load the test split; reuse the pretraining split when it is the labelled training split,
/// else (STL-10 pretrained on `unlabeled`) load `train` for the probe.
pub fn prepare_eval_data(cfg: &ValidConfig, pretrain: &TrainData) -> Result<EvalData, JobError> {
    let root = cfg.data_root();
    let test = data::load(cfg.data.dataset, &root, Split::Test, &cfg.data)?;
    let train = if pretrain.train.labels.is_some() {
        pretrain.train.clone()
    } else {
        Arc::new(load_probe_train(cfg)?)
    };
    Ok(EvalData {
        train,
        test: Arc::new(test),
        normalize: pretrain.normalize,
    })
}

/// The labelled training split a probe trains on (honouring `data.train_limit`).
pub(super) fn load_probe_train(cfg: &ValidConfig) -> Result<ImageDataset, JobError> {
    let mut train = data::load(cfg.data.dataset, &cfg.data_root(), Split::Train, &cfg.data)?;
    if cfg.data.train_limit > 0 && cfg.data.train_limit < train.len() {
        train = train.subset(&(0..cfg.data.train_limit).collect::<Vec<_>>());
    }
    Ok(train)
}

/// Read the normalisation a run was trained with from its `meta.json`.
pub fn run_normalization(run_dir: &Path) -> Result<Normalize, JobError> {
    let path = run_dir.join("meta.json");
    let text = std::fs::read_to_string(&path).map_err(|e| file_err(&path, e))?;
    let meta: Meta = serde_json::from_str(&text).map_err(|e| file_err(&path, e))?;
    Ok(Normalize {
        mean: meta.normalize_mean,
        std: meta.normalize_std,
    })
}

/// Evaluate the newest checkpoint of a pretraining run directory. `overrides` apply to the
/// saved config's `eval` (and `data`) sections, e.g. `eval.linear_epochs=10`.
pub fn evaluate_run(
    run_dir: &Path,
    overrides: &[String],
    plan: Option<EvalPlan>,
    csv: Option<&Path>,
    arm: &str,
    progress: &mut dyn FnMut(JobProgress),
) -> Result<Vec<ResultRow>, JobError> {
    let cfg_path = run_dir.join("config.toml");
    let cfg = Config::from_toml_file(&cfg_path)?
        .apply_overrides(overrides)?
        .check()?;
    let plan = plan.unwrap_or_else(|| EvalPlan::from_config(&cfg));
    let normalize = run_normalization(run_dir)?;
    let train = load_probe_train(&cfg)?;
    let test = data::load(cfg.data.dataset, &cfg.data_root(), Split::Test, &cfg.data)?;
    let data = EvalData {
        train: Arc::new(train),
        test: Arc::new(test),
        normalize,
    };
    let (found, _) = checkpoint::find_latest(run_dir).map_err(TrainError::from)?;
    let results = evaluate_source(
        &cfg,
        BackboneSource::Checkpoint(&found.model_path()),
        &data,
        &plan,
        progress,
    )?;
    save_results(run_dir, csv, arm, &cfg, &results)
}

/// File of a random-init arm's diagnostics (the backbone as initialised from the seed) in its run
/// directory, the reference line of the report's per-epoch diagnostics charts.
pub const RANDOM_INIT_DIAGNOSTICS: &str = "diagnostics.json";

/// Measure the diagnostics ([`eval::Probe`]) of the config's backbone as initialised from
/// `train.seed` and write them to `dir/diagnostics.json`. Nothing is written when
/// `[diagnostics]` is off.
pub fn random_init_diagnostics(
    cfg: &ValidConfig,
    train: &ImageDataset,
    data: &EvalData,
    dir: &Path,
) -> Result<Option<eval::Diagnostics>, JobError> {
    let Some(probe) = eval::Probe::prepare(cfg, train, &data.test, &data.normalize)? else {
        return Ok(None);
    };
    struct Job<'a> {
        probe: &'a eval::Probe,
        dev: crate::Device,
    }
    impl BackboneFn<crate::Device> for Job<'_> {
        type Output = Result<eval::Diagnostics, eval::EvalError>;
        fn call<B: Backbone<crate::Device> + 'static>(self, backbone: B) -> Self::Output {
            self.probe.measure(&backbone, None, &self.dev)
        }
    }
    let dev = crate::new_device(cfg.train.seed).map_err(|e| JobError::Device(e.to_string()))?;
    let job = Job {
        probe: &probe,
        dev: dev.clone(),
    };
    let d = with_backbone(cfg.backbone.name, &dev, cfg.train.seed, job)
        .map_err(|e| JobError::Device(format!("{e:?}")))??;
    std::fs::create_dir_all(dir).map_err(|e| file_err(dir, e))?;
    let path = dir.join(RANDOM_INIT_DIAGNOSTICS);
    crate::files::write_atomic(&path, &serde_json::to_vec_pretty(&d).expect("serialises"))?;
    Ok(Some(d))
}

/// Where the evaluated backbone's weights come from.
#[derive(Clone, Copy, Debug)]
pub enum BackboneSource<'a> {
    /// `backbone.*` of a pretraining checkpoint's `model.safetensors`; features are cached in
    /// the run's `eval/features/`, tagged with the file's hash.
    Checkpoint(&'a Path),
    /// Initialised from the seed, no training (the lower bound).
    RandomInit,
    /// Trained with labels first (the upper bound).
    Supervised,
}

/// [`eval::evaluate_backbone`] on `data`, its progress (feature extraction done, each result)
/// reported as [`JobProgress::Eval`] lines.
fn probe<B: Backbone<crate::Device>>(
    backbone: &B,
    dev: &crate::Device,
    data: &EvalData,
    plan: &EvalPlan,
    cache: Option<eval::CacheSpec>,
    progress: &mut dyn FnMut(JobProgress),
) -> Result<Vec<EvalResult>, JobError> {
    let mut report = |e: ProgressEvent| {
        if let ProgressEvent::Features { what, done, total } = &e {
            if done == total {
                progress(JobProgress::Eval(format!(
                    "features {what}: {total} images"
                )));
            }
        }
    };
    let results = eval::evaluate_backbone(
        backbone,
        dev,
        &data.train,
        &data.test,
        &data.normalize,
        plan,
        cache,
        &mut report,
    )?;
    for r in &results {
        progress(JobProgress::Eval(format!(
            "{} n={}: {:.2}% top-1",
            r.metric,
            r.probe_patches,
            100.0 * r.value
        )));
    }
    Ok(results)
}

/// Build the config's backbone, obtain its weights from `source`, and evaluate it with `plan`
/// (a checkpoint's features are cached in its run's `eval/features/`, tagged with the file's
/// hash, and reused by later evaluations).
pub fn evaluate_source(
    cfg: &ValidConfig,
    source: BackboneSource<'_>,
    data: &EvalData,
    plan: &EvalPlan,
    progress: &mut dyn FnMut(JobProgress),
) -> Result<Vec<EvalResult>, JobError> {
    struct Job<'a> {
        cfg: &'a ValidConfig,
        source: BackboneSource<'a>,
        data: &'a EvalData,
        plan: &'a EvalPlan,
        progress: &'a mut dyn FnMut(JobProgress),
        dev: crate::Device,
    }
    impl BackboneFn<crate::Device> for Job<'_> {
        type Output = Result<Vec<EvalResult>, JobError>;
        fn call<B: Backbone<crate::Device> + 'static>(self, backbone: B) -> Self::Output {
            let (cfg, dev, progress) = (self.cfg, &self.dev, self.progress);
            let mut cache_tag = None;
            let backbone = match self.source {
                BackboneSource::Checkpoint(path) => {
                    let tag = checkpoint::file_hash(path).map_err(TrainError::from)?.1;
                    let run = path.parent().and_then(Path::parent).and_then(Path::parent);
                    cache_tag = run.map(|r| (r.join("eval").join("features"), tag));
                    checkpoint::load_model(backbone, HeadSpec::from_config(cfg), dev, path)
                        .map_err(TrainError::from)?
                        .backbone
                }
                BackboneSource::RandomInit => backbone,
                BackboneSource::Supervised => {
                    super::supervised::train(backbone, dev, cfg, self.data, progress)?
                }
            };
            let store = cache_tag
                .as_ref()
                .map(|(dir, _)| eval::FeatureCache::new(dir));
            let cache = match (&store, &cache_tag) {
                (Some(cache), Some((_, tag))) => Some(eval::CacheSpec { cache, tag }),
                _ => None,
            };
            probe(&backbone, dev, self.data, self.plan, cache, progress)
        }
    }
    let dev = crate::new_device(cfg.train.seed).map_err(|e| JobError::Device(e.to_string()))?;
    let job = Job {
        cfg,
        source,
        data,
        plan,
        progress,
        dev: dev.clone(),
    };
    with_backbone(cfg.backbone.name, &dev, cfg.train.seed, job)
        .map_err(|e| JobError::Device(format!("{e:?}")))?
}
