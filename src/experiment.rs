//! Jobs that tie the pieces together: evaluate a run directory, and the main job
//! ([`run_job`]) that pretrains every arm over seeds, evaluates each, and writes the report.
//!
//! Arms (`[run] arms` in the config):
//! - `random-init`: the backbone as initialised from the seed, no training (lower bound);
//! - `rr`: relational reasoning alone (`method.patches = 0`, `method.alpha = 0`);
//! - `sr`: the config's method (spatial reasoning with its patches and α);
//! - `supervised`: the backbone trained with labels (upper bound), same probe.
//!
//! Ablation grids (`[run.sweep]`, e.g. `"method.patches" = [2, 3, 4]`) expand the `sr` arm into
//! one arm per value, named `sr method.patches=3`. With one swept key every value is an arm; with
//! several, each key is varied on its own from the base config (one-at-a-time ablations) next to
//! the plain `sr` arm, and values equal to the base are not run twice. The other arms run once as
//! references.
//!
//! Every arm × seed has its own run directory `OUT/<arm>/seed-<s>/`; a job that is started again
//! skips finished runs and resumes interrupted ones from their checkpoints.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::augment::Normalize;
use crate::config::{Config, ValidConfig};
use crate::data::{self, ImageDataset, Split};
use crate::eval::{self, EvalResult, ProgressEvent, ResultRow};
use crate::method::HeadSpec;
use crate::models::{with_backbone, Backbone, BackboneFn};
use crate::train::{self, checkpoint, Meta, PretrainOptions, TrainData, TrainError};

/// Everything that can stop a job.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    #[error(transparent)]
    Train(#[from] TrainError),
    #[error(transparent)]
    Eval(#[from] eval::EvalError),
    #[error(transparent)]
    Data(#[from] data::DataError),
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error(transparent)]
    Report(#[from] crate::report::ReportError),
    #[error("{path}: {detail}")]
    File { path: PathBuf, detail: String },
    #[error("device: {0}")]
    Device(String),
    #[error(
        "interrupted in {}: stopped at step {step} of {total} with a checkpoint; run the same command again to resume",
        dir.display()
    )]
    Interrupted { dir: PathBuf, step: u64, total: u64 },
    #[error(
        "{}: another process is running this cell (it holds {}/.lock); wait for it to end",
        dir.display(),
        dir.display()
    )]
    Busy { dir: PathBuf },
}

fn file_err(path: &Path, detail: impl ToString) -> JobError {
    JobError::File {
        path: path.to_path_buf(),
        detail: detail.to_string(),
    }
}

/// Which probes to run.
#[derive(Clone, Debug, PartialEq)]
pub struct EvalPlan {
    pub linear: bool,
    pub knn: bool,
    /// Patch counts of the linear probe (0 = plain feature).
    pub probe_patches: Vec<usize>,
}

impl EvalPlan {
    pub fn from_config(cfg: &ValidConfig) -> Self {
        Self {
            linear: true,
            knn: true,
            probe_patches: cfg.eval.probe_patches.clone(),
        }
    }
}

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
fn load_probe_train(cfg: &ValidConfig) -> Result<ImageDataset, JobError> {
    let mut train = data::load(cfg.data.dataset, &cfg.data_root(), Split::Train, &cfg.data)?;
    if cfg.data.train_limit > 0 && cfg.data.train_limit < train.len() {
        train = train.subset(&(0..cfg.data.train_limit).collect::<Vec<_>>());
    }
    Ok(train)
}

/// Progress of a job (the library never prints).
#[derive(Clone, Debug)]
pub enum JobProgress {
    /// Starting `arm` with `seed` (`index` of `total` runs).
    Run {
        arm: String,
        seed: u64,
        index: usize,
        total: usize,
    },
    Train(train::Progress),
    Eval(String),
    Result(ResultRow),
}

/// Probe a frozen backbone with [`eval::evaluate_backbone`]: linear (n = 0 and the
/// patch-concatenated n's of `plan`) and kNN. With `cache`, features are stored under
/// `cache.0` tagged `cache.1` (the checkpoint's weights hash) and reused by later evaluations.
pub fn evaluate_backbone<B: Backbone<crate::Device>>(
    backbone: &B,
    dev: &crate::Device,
    cfg: &ValidConfig,
    data: &EvalData,
    plan: &EvalPlan,
    cache: Option<(&Path, &str)>,
    progress: &mut dyn FnMut(JobProgress),
) -> Result<Vec<EvalResult>, JobError> {
    let mut eval_cfg = cfg.eval.clone();
    eval_cfg.probe_patches = if plan.linear {
        plan.probe_patches.clone()
    } else {
        vec![]
    };
    let eplan = eval::EvalPlan {
        input_size: cfg.data.image_size,
        patch_size: cfg.patch_size,
        extract_batch: 256,
        seed: cfg.train.seed,
        cfg: eval_cfg,
        knn: plan.knn,
    };
    let store = cache.map(|(dir, _)| eval::FeatureCache::new(dir));
    let spec = match (&store, cache) {
        (Some(cache), Some((_, tag))) => Some(eval::CacheSpec { cache, tag }),
        _ => None,
    };
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
        &eplan,
        spec,
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

/// File name of a result in `RUN/eval/`.
pub fn result_file_name(r: &EvalResult) -> String {
    match r.protocol {
        eval::Protocol::Linear => format!("linear_n{}.json", r.probe_patches),
        eval::Protocol::Knn => "knn.json".into(),
    }
}

/// Write results to `run_dir/eval/*.json` (atomically) and append them to `csv`.
pub fn save_results(
    run_dir: &Path,
    csv: Option<&Path>,
    arm: &str,
    cfg: &ValidConfig,
    results: &[EvalResult],
) -> Result<Vec<ResultRow>, JobError> {
    let dir = run_dir.join("eval");
    std::fs::create_dir_all(&dir).map_err(|e| file_err(&dir, e))?;
    let mut rows = Vec::new();
    for r in results {
        let path = dir.join(result_file_name(r));
        checkpoint::write_atomic(&path, &serde_json::to_vec_pretty(r).expect("serialises"))
            .map_err(|e| file_err(&path, e))?;
        let row = ResultRow::new(
            &run_dir.display().to_string(),
            arm,
            cfg.train.seed,
            cfg.data.dataset.name(),
            cfg.backbone.name.name(),
            r,
        );
        if let Some(csv) = csv {
            eval::append_csv(csv, &row)?;
        }
        rows.push(row);
    }
    Ok(rows)
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
    checkpoint::write_atomic(&path, &serde_json::to_vec_pretty(&d).expect("serialises"))
        .map_err(|e| file_err(&path, e))?;
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

/// Build the config's backbone, obtain its weights from `source`, and evaluate it.
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
                    let mut backbone = backbone;
                    let sup = eval::SupervisedConfig {
                        epochs: cfg.train.epochs,
                        batch: cfg.train.batch_size,
                        lr: cfg.optim.lr,
                        seed: cfg.train.seed,
                        input_size: cfg.data.image_size,
                        max_steps: cfg.train.max_steps,
                        ..Default::default()
                    };
                    cfg.train
                        .precision
                        .check_supported()
                        .map_err(TrainError::from)?;
                    backbone.set_precision(cfg.train.precision);
                    let report = eval::train_supervised(
                        &mut backbone,
                        dev,
                        &self.data.train,
                        &self.data.normalize,
                        &sup,
                        &mut |_| {},
                    )?;
                    progress(JobProgress::Eval(format!(
                        "supervised: {} epochs, final train acc {:.1}%",
                        report.epochs,
                        100.0 * report.acc_history.last().copied().unwrap_or(0.0)
                    )));
                    backbone
                }
            };
            let cache = cache_tag.as_ref().map(|(d, t)| (d.as_path(), t.as_str()));
            evaluate_backbone(&backbone, dev, cfg, self.data, self.plan, cache, progress)
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

/// One arm of a job.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Arm {
    /// Display name, e.g. `sr`, `rr`, `sr method.patches=3`.
    pub name: String,
    pub kind: ArmKind,
    /// `--set` overrides this arm applies on top of the job's config.
    pub overrides: Vec<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ArmKind {
    RandomInit,
    Pretrain,
    Supervised,
}

/// Expand the config's `[run]` section into arms (see the module docs).
pub fn expand_arms(cfg: &ValidConfig) -> Result<Vec<Arm>, JobError> {
    let mut arms = Vec::new();
    for name in &cfg.run.arms {
        match name.as_str() {
            "random-init" | "random" => arms.push(Arm {
                name: "random-init".into(),
                kind: ArmKind::RandomInit,
                overrides: vec![],
            }),
            "supervised" => arms.push(Arm {
                name: "supervised".into(),
                kind: ArmKind::Supervised,
                overrides: vec![],
            }),
            "rr" => arms.push(Arm {
                name: "rr".into(),
                kind: ArmKind::Pretrain,
                overrides: vec!["method.patches=0".into(), "method.alpha=0".into()],
            }),
            "sr" => {
                // One swept key: every value is an arm (the base value included), so the
                // ablation plot has all its points. Several keys: the plain `sr` arm plus one arm
                // per value that differs from the base config (one-at-a-time ablations).
                let single = cfg.run.sweep.len() == 1;
                if !single {
                    arms.push(Arm {
                        name: "sr".into(),
                        kind: ArmKind::Pretrain,
                        overrides: vec![],
                    });
                }
                let base = toml::Value::try_from(cfg.raw()).expect("a Config always serialises");
                for (key, values) in &cfg.run.sweep {
                    let (section, field) = key.split_once('.').unwrap_or((key, ""));
                    let current = base.get(section).and_then(|t| t.get(field));
                    for v in values {
                        if !single && current == Some(v) {
                            continue;
                        }
                        let value = match v {
                            toml::Value::String(s) => s.clone(),
                            other => other.to_string(),
                        };
                        let set = format!("{key}={value}");
                        arms.push(Arm {
                            name: format!("sr {set}"),
                            kind: ArmKind::Pretrain,
                            overrides: vec![set],
                        });
                    }
                }
            }
            other => {
                return Err(crate::config::ConfigError::Override {
                    key: "run.arms".into(),
                    message: format!(
                        "unknown arm `{other}` (expected random-init, rr, sr, supervised)"
                    ),
                }
                .into())
            }
        }
    }
    // Every arm's config must be valid before any work starts.
    for arm in &arms {
        cfg.raw().apply_overrides(&arm.overrides)?.check()?;
    }
    Ok(arms)
}

/// The directory of one arm × seed below the job's output directory.
pub fn arm_dir(out: &Path, arm: &str, seed: u64) -> PathBuf {
    let slug: String = arm
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
                c
            } else {
                '_'
            }
        })
        .collect();
    out.join(slug).join(format!("seed-{seed}"))
}

/// One cell of a job: one arm with one seed, run in its own directory below the job's output
/// directory. Cells are independent: each reads only the job's configuration and writes only
/// inside its directory, so they can run in any order or at the same time (a Slurm job array).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Cell {
    /// Position in the job's order (seeds outermost, then arms in [`expand_arms`] order); the
    /// Slurm array index of the cell.
    pub index: usize,
    pub arm: Arm,
    pub seed: u64,
    /// The run directory relative to the job's output directory, e.g. `rr/seed-1`.
    pub dir: PathBuf,
}

impl Cell {
    /// The cell's run directory below the job's output directory `out`.
    pub fn run_dir(&self, out: &Path) -> PathBuf {
        out.join(&self.dir)
    }

    /// The cell's configuration: the job's, without its `[slurm]` section (where a cell runs
    /// does not change what it computes), plus the arm's overrides and the seed.
    pub fn config(&self, job: &ValidConfig) -> Result<ValidConfig, JobError> {
        let mut raw = job.raw().clone();
        raw.slurm = Default::default();
        let mut sets = self.arm.overrides.clone();
        sets.push(format!("train.seed={}", self.seed));
        Ok(raw.apply_overrides(&sets)?.check()?)
    }

    /// The probes of the cell: SR arms every n of `eval.probe_patches`; the other arms (RR,
    /// random-init, supervised) only n = 0, since n > 0 probes are SR's evaluation.
    pub fn eval_plan(&self, cell_cfg: &ValidConfig) -> EvalPlan {
        let plan = EvalPlan::from_config(cell_cfg);
        match self.arm.kind {
            ArmKind::Pretrain if !cell_cfg.method.is_rr() => plan,
            _ => EvalPlan {
                probe_patches: plan
                    .probe_patches
                    .iter()
                    .copied()
                    .filter(|&n| n == 0)
                    .collect(),
                ..plan
            },
        }
    }
}

/// The cells of a job in their stable order: for each seed, every arm of [`expand_arms`].
/// Every cell's configuration is validated before any work starts.
pub fn plan_cells(cfg: &ValidConfig, seeds: &[u64]) -> Result<Vec<Cell>, JobError> {
    let arms = expand_arms(cfg)?;
    let mut cells = Vec::with_capacity(arms.len() * seeds.len());
    for &seed in seeds {
        for arm in &arms {
            let cell = Cell {
                index: cells.len(),
                arm: arm.clone(),
                seed,
                dir: arm_dir(Path::new(""), &arm.name, seed),
            };
            cell.config(cfg)?;
            cells.push(cell);
        }
    }
    Ok(cells)
}

/// What a finished job produced.
#[derive(Clone, Debug)]
pub struct JobOutcome {
    pub rows: Vec<ResultRow>,
    /// `(arm, seed, run dir)` of every pretraining run (for loss curves).
    pub runs: Vec<(String, u64, PathBuf)>,
    /// `(arm, seed, run dir)` of every random-init arm (for the diagnostics' reference lines).
    pub random_init: Vec<(String, u64, PathBuf)>,
    pub wall_time_s: f64,
}

/// The diagnostics a report shows, read from a job's run directories.
#[derive(Clone, Debug, Default)]
pub struct DiagnosticsFiles {
    /// Epoch rows of `metrics.jsonl` per pretraining run `(arm, seed, rows)`.
    pub epochs: Vec<(String, u64, Vec<crate::train::metrics::MetricRow>)>,
    /// `diagnostics.json` of every random-init run that has one.
    pub references: Vec<(String, u64, eval::Diagnostics)>,
    /// `diagnostics/offsets.json` of the lowest seed of every SR arm that has one.
    pub offsets: Vec<(String, crate::eval::OffsetPairs)>,
}

/// A budget at which to recompute a study (the notebooks' `recompute` parameter): how many
/// training images, epochs, seeds and probe epochs, and whether SR arms also get the
/// patch-concatenated probe (n = 9).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StudyBudget {
    /// Training images (the first N of the split; the test split is always whole).
    pub train_images: usize,
    pub epochs: usize,
    /// Seeds 1..=seeds.
    pub seeds: u64,
    /// Epochs of the linear probe.
    pub linear_epochs: usize,
    /// Also probe SR arms with n = 9 grid patches.
    pub patch_probe: bool,
}

impl StudyBudget {
    /// The committed CIFAR-10 studies' budget: 50,000 images, 3 epochs, seeds 1-3, 100 probe
    /// epochs, n = 0 and n = 9.
    pub fn study() -> Self {
        Self {
            train_images: 50_000,
            epochs: 3,
            seeds: 3,
            linear_epochs: 100,
            patch_probe: true,
        }
    }

    /// The smallest budget that runs every arm (what CI executes): 512 images, 1 epoch, 1 seed,
    /// 5 probe epochs, n = 0 only.
    pub fn tiny() -> Self {
        Self {
            train_images: 512,
            epochs: 1,
            seeds: 1,
            linear_epochs: 5,
            patch_probe: false,
        }
    }

    /// Seeds `1..=seeds`.
    pub fn seed_list(&self) -> Vec<u64> {
        (1..=self.seeds).collect()
    }

    /// `--set` overrides that apply the budget to a config.
    pub fn overrides(&self) -> Vec<String> {
        vec![
            format!("data.train_limit={}", self.train_images),
            format!("train.epochs={}", self.epochs),
            format!("eval.linear_epochs={}", self.linear_epochs),
            format!(
                "eval.probe_patches={}",
                if self.patch_probe { "[0, 9]" } else { "[0]" }
            ),
        ]
    }

    /// A rough wall-time estimate of running `cfg`'s arms at this budget on a 2-core CPU like the
    /// development machine, in seconds: pretraining at 3,600 backbone inputs per second for
    /// Conv-4 (600 source images/s at K + P = 6; ResNet-32 ≈ 12× slower), evaluation at 10,000
    /// images/s through the frozen backbone (training and test split, ten times that for an SR
    /// arm's n = 9 probe). Measured on the CIFAR-10 study; other machines scale.
    pub fn estimate_s(&self, cfg: &ValidConfig, test_images: usize) -> Result<f64, JobError> {
        let slow = match cfg.backbone.name {
            crate::models::BackboneKind::Conv4 => 1.0,
            crate::models::BackboneKind::Resnet8 => 3.0,
            crate::models::BackboneKind::Resnet32 => 12.0,
            crate::models::BackboneKind::Resnet56 => 22.0,
        };
        let mut total = 0.0;
        for arm in expand_arms(cfg)? {
            let a = cfg.raw().apply_overrides(&arm.overrides)?.check()?;
            let items = (a.method.views + a.method.patches) as f64;
            let images = self.train_images as f64;
            if arm.kind != ArmKind::RandomInit {
                total += self.epochs as f64 * images * items / 3_600.0 * slow;
            }
            let windows = if self.patch_probe && arm.kind == ArmKind::Pretrain && !a.method.is_rr()
            {
                10.0
            } else {
                1.0
            };
            total += (images + test_images as f64) * windows / 10_000.0 * slow + 5.0;
        }
        Ok(total * self.seeds as f64)
    }
}

/// A finished study read back from its folder: `DIR/results.csv` and the run directories
/// `DIR/runs/<arm>/seed-<s>/` (as `scripts/collect-study.sh` commits a study under `results/`), or
/// `DIR/<arm>/seed-<s>/` (a job's own `--out`).
///
/// The CSV's own `run` column names the directories where the study ran (another machine's
/// paths); the committed ones are found from each row's arm and seed ([`arm_dir`]). Runs with a
/// `metrics.jsonl` count as pretraining runs, runs with a `diagnostics.json` as random-init
/// references, so [`read_diagnostics`] and the report's curves work on the outcome.
pub fn load_study(dir: &Path) -> Result<JobOutcome, JobError> {
    let csv = dir.join("results.csv");
    let rows = crate::report::read_results_csv(&csv)?;
    let mut outcome = JobOutcome {
        rows,
        runs: Vec::new(),
        random_init: Vec::new(),
        wall_time_s: 0.0,
    };
    let runs = if dir.join("runs").is_dir() {
        dir.join("runs")
    } else {
        dir.to_path_buf()
    };
    let mut seen = std::collections::BTreeSet::new();
    for r in &outcome.rows {
        if !seen.insert((r.arm.clone(), r.seed)) {
            continue;
        }
        let run = arm_dir(&runs, &r.arm, r.seed);
        if run.join("metrics.jsonl").exists() {
            outcome.runs.push((r.arm.clone(), r.seed, run));
        } else if run.join(RANDOM_INIT_DIAGNOSTICS).exists() {
            outcome.random_init.push((r.arm.clone(), r.seed, run));
        }
    }
    Ok(outcome)
}

/// Read the diagnostics of `outcome`'s runs (missing files are skipped: runs made before the
/// diagnostics existed have none).
pub fn read_diagnostics(outcome: &JobOutcome) -> Result<DiagnosticsFiles, JobError> {
    let mut out = DiagnosticsFiles::default();
    for (arm, seed, dir) in &outcome.runs {
        let path = dir.join("metrics.jsonl");
        let rows = crate::train::metrics::read_rows(&path).map_err(TrainError::from)?;
        let rows = rows
            .into_iter()
            .filter(|r| r.kind == crate::train::metrics::RowKind::Epoch)
            .collect();
        out.epochs.push((arm.clone(), *seed, rows));
        let offsets = dir.join("diagnostics").join("offsets.json");
        if offsets.exists() && !out.offsets.iter().any(|o| &o.0 == arm) {
            #[derive(serde::Deserialize)]
            struct Offsets {
                pairs: eval::OffsetPairs,
            }
            let text = std::fs::read_to_string(&offsets).map_err(|e| file_err(&offsets, e))?;
            let o: Offsets = serde_json::from_str(&text).map_err(|e| file_err(&offsets, e))?;
            out.offsets.push((arm.clone(), o.pairs));
        }
    }
    for (arm, seed, dir) in &outcome.random_init {
        let path = dir.join(RANDOM_INIT_DIAGNOSTICS);
        if path.exists() {
            let text = std::fs::read_to_string(&path).map_err(|e| file_err(&path, e))?;
            let d = serde_json::from_str(&text).map_err(|e| file_err(&path, e))?;
            out.references.push((arm.clone(), *seed, d));
        }
    }
    Ok(out)
}

/// What one cell produced.
#[derive(Clone, Debug)]
pub struct CellOutcome {
    /// One row per probe.
    pub rows: Vec<ResultRow>,
    /// The pretraining run directory (for loss curves); `None` for random-init and supervised.
    pub pretrain_dir: Option<PathBuf>,
    /// True when every result was already on disk and nothing ran.
    pub reused: bool,
}

/// Read results already written to `run_dir/eval/` (so a restarted job skips finished runs),
/// each with the time its file was written.
fn existing_results(
    run_dir: &Path,
    plan: &EvalPlan,
) -> Option<Vec<(EvalResult, std::time::SystemTime)>> {
    let mut names: Vec<String> = Vec::new();
    if plan.linear {
        names.extend(
            plan.probe_patches
                .iter()
                .map(|n| format!("linear_n{n}.json")),
        );
    }
    if plan.knn {
        names.push("knn.json".into());
    }
    names
        .iter()
        .map(|n| {
            let path = run_dir.join("eval").join(n);
            let text = std::fs::read_to_string(&path).ok()?;
            let written = std::fs::metadata(&path).and_then(|m| m.modified()).ok()?;
            Some((serde_json::from_str(&text).ok()?, written))
        })
        .collect()
}

/// The rows of a cell whose every probe result is in its `eval/` (`None` while any is missing),
/// stamped with the time each result file was written. Nothing is run.
pub fn finished_rows(
    job: &ValidConfig,
    cell: &Cell,
    out: &Path,
) -> Result<Option<Vec<ResultRow>>, JobError> {
    let cell_cfg = cell.config(job)?;
    let dir = cell.run_dir(out);
    let Some(done) = existing_results(&dir, &cell.eval_plan(&cell_cfg)) else {
        return Ok(None);
    };
    Ok(Some(
        done.iter()
            .map(|(r, written)| {
                let mut row = ResultRow::new(
                    &dir.display().to_string(),
                    &cell.arm.name,
                    cell.seed,
                    cell_cfg.data.dataset.name(),
                    cell_cfg.backbone.name.name(),
                    r,
                );
                let secs = written
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs());
                row.timestamp = Some(eval::results::rfc3339_utc(secs));
                row
            })
            .collect(),
    ))
}

/// Take the cell's lock, `RUN/.lock` (an advisory `flock`, released when the holder exits,
/// however it exits), so two processes never run one cell at once. With `wait`, block until the
/// holder is gone (a requeued Slurm task whose first run is still being killed); without, a held
/// lock is [`JobError::Busy`]. Keep the returned file open while the cell runs.
pub fn lock_cell(run_dir: &Path, wait: bool) -> Result<std::fs::File, JobError> {
    std::fs::create_dir_all(run_dir).map_err(|e| file_err(run_dir, e))?;
    let path = run_dir.join(".lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| file_err(&path, e))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) if wait => {
            file.lock().map_err(|e| file_err(&path, e))?;
            Ok(file)
        }
        Err(std::fs::TryLockError::WouldBlock) => Err(JobError::Busy {
            dir: run_dir.to_path_buf(),
        }),
        Err(std::fs::TryLockError::Error(e)) => Err(file_err(&path, e)),
    }
}

/// Run one cell: pretrain (resuming from the newest checkpoint when the directory already holds
/// the run) or build the reference backbone, evaluate, and write `RUN/eval/*.json`; with `csv`,
/// append the rows to it too (the local job's log). A cell whose results are all on disk is not
/// run again. `data` is the job's training split and the probe's data ([`prepare_eval_data`]).
/// A stop request during pretraining ends with a checkpoint and [`JobError::Interrupted`].
pub fn run_cell(
    job: &ValidConfig,
    cell: &Cell,
    out: &Path,
    data: (&TrainData, &EvalData),
    csv: Option<&Path>,
    stop: Option<&std::sync::atomic::AtomicBool>,
    progress: &mut dyn FnMut(JobProgress),
) -> Result<CellOutcome, JobError> {
    let (base, eval_data) = data;
    let arm_cfg = cell.config(job)?;
    let dir = cell.run_dir(out);
    let plan = cell.eval_plan(&arm_cfg);
    let pretrain_dir = (cell.arm.kind == ArmKind::Pretrain).then(|| dir.clone());
    // A random-init arm measures its diagnostics once (cheap: no training), also when its
    // evaluation was done before diagnostics existed.
    if cell.arm.kind == ArmKind::RandomInit
        && arm_cfg.diagnostics.enabled
        && !dir.join(RANDOM_INIT_DIAGNOSTICS).exists()
    {
        progress(JobProgress::Eval(
            "diagnostics of the initial backbone".into(),
        ));
        random_init_diagnostics(&arm_cfg, &base.train, eval_data, &dir)?;
    }
    if let Some(rows) = finished_rows(job, cell, out)? {
        progress(JobProgress::Eval(format!(
            "{}: already evaluated, reusing",
            dir.display()
        )));
        return Ok(CellOutcome {
            rows,
            pretrain_dir,
            reused: true,
        });
    }
    let results = match cell.arm.kind {
        ArmKind::Pretrain => {
            let resume = dir.join("config.toml").exists();
            let mut cb = |p: &train::Progress| progress(JobProgress::Train(p.clone()));
            let outcome = train::pretrain(
                &arm_cfg,
                base,
                &dir,
                PretrainOptions {
                    resume,
                    stop,
                    progress: Some(&mut cb),
                    stop_at_step: None,
                    test: Some(&eval_data.test),
                },
            )?;
            if outcome.interrupted {
                return Err(JobError::Interrupted {
                    dir,
                    step: outcome.steps,
                    total: outcome.total_steps,
                });
            }
            let (found, _) = checkpoint::find_latest(&dir).map_err(TrainError::from)?;
            evaluate_source(
                &arm_cfg,
                BackboneSource::Checkpoint(&found.model_path()),
                eval_data,
                &plan,
                progress,
            )?
        }
        ArmKind::RandomInit | ArmKind::Supervised => {
            std::fs::create_dir_all(&dir).map_err(|e| file_err(&dir, e))?;
            checkpoint::write_atomic(
                &dir.join("config.toml"),
                arm_cfg.raw().to_toml_string().as_bytes(),
            )
            .map_err(TrainError::from)?;
            let source = if cell.arm.kind == ArmKind::Supervised {
                BackboneSource::Supervised
            } else {
                BackboneSource::RandomInit
            };
            evaluate_source(&arm_cfg, source, eval_data, &plan, progress)?
        }
    };
    let rows = save_results(&dir, csv, &cell.arm.name, &arm_cfg, &results)?;
    for r in &rows {
        progress(JobProgress::Result(r.clone()));
    }
    Ok(CellOutcome {
        rows,
        pretrain_dir,
        reused: false,
    })
}

/// The main job: every cell of [`plan_cells`] in order, pretrained (or not) and evaluated; rows
/// appended to `out/results.csv`. The report is written by the caller from the outcome.
pub fn run_job(
    cfg: &ValidConfig,
    seeds: &[u64],
    out: &Path,
    stop: Option<&std::sync::atomic::AtomicBool>,
    progress: &mut dyn FnMut(JobProgress),
) -> Result<JobOutcome, JobError> {
    let started = Instant::now();
    let cells = plan_cells(cfg, seeds)?;
    std::fs::create_dir_all(out).map_err(|e| file_err(out, e))?;
    let csv = out.join("results.csv");
    let base = train::prepare_data(cfg)?;
    let eval_data = prepare_eval_data(cfg, &base)?;
    let mut rows = Vec::new();
    let mut runs = Vec::new();
    let mut random_init = Vec::new();
    for cell in &cells {
        progress(JobProgress::Run {
            arm: cell.arm.name.clone(),
            seed: cell.seed,
            index: cell.index + 1,
            total: cells.len(),
        });
        let _lock = lock_cell(&cell.run_dir(out), false)?;
        let done = run_cell(
            cfg,
            cell,
            out,
            (&base, &eval_data),
            Some(&csv),
            stop,
            progress,
        )?;
        if cell.arm.kind == ArmKind::RandomInit {
            random_init.push((cell.arm.name.clone(), cell.seed, cell.run_dir(out)));
        }
        if let Some(dir) = done.pretrain_dir {
            runs.push((cell.arm.name.clone(), cell.seed, dir));
        }
        rows.extend(done.rows);
    }
    Ok(JobOutcome {
        rows,
        runs,
        random_init,
        wall_time_s: started.elapsed().as_secs_f64(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn arms(sets: &[&str]) -> Vec<String> {
        let cfg = Config::default()
            .apply_overrides(sets)
            .unwrap()
            .check()
            .unwrap();
        expand_arms(&cfg)
            .unwrap()
            .into_iter()
            .map(|a| a.name)
            .collect()
    }

    #[test]
    fn sweeps_expand_the_sr_arm() {
        assert_eq!(arms(&["run.arms=[\"rr\", \"sr\"]"]), vec!["rr", "sr"]);
        assert_eq!(
            arms(&[
                "run.arms=[\"sr\"]",
                "run.sweep={\"method.patches\" = [2, 3]}"
            ]),
            vec!["sr method.patches=2", "sr method.patches=3"]
        );
        assert_eq!(
            arms(&[
                "run.arms=[\"random-init\", \"sr\"]",
                "run.sweep={\"method.patch_mode\" = [\"zoom\", \"additive\"], \"method.overlap\" = [\"allowed\"]}",
            ]),
            vec![
                "random-init",
                "sr",
                "sr method.overlap=allowed",
                "sr method.patch_mode=additive"
            ]
        );
    }

    /// The committed study configs expand to the arms their READMEs describe, with the run
    /// directories of the CPU study's cells that `results/cifar10-ablations/runs` reuses.
    #[test]
    fn study_configs_expand_to_their_arms() {
        let expand = |path: &str| {
            let cfg = Config::from_toml_file(Path::new(path))
                .unwrap()
                .check()
                .unwrap();
            expand_arms(&cfg)
                .unwrap()
                .into_iter()
                .map(|a| a.name)
                .collect::<Vec<_>>()
        };
        let arms = expand("configs/study/cifar10-ablations.toml");
        assert_eq!(
            arms,
            [
                "random-init",
                "rr",
                "sr",
                "sr method.alpha=0.0",
                "sr method.alpha=0.5",
                "sr method.alpha=2.0",
                "sr method.overlap=allowed",
                "sr method.patch_mode=additive",
                "sr method.patch_size=8",
                "sr method.patch_size=16",
                "sr method.patches=3",
                "sr method.patches=4",
                "sr method.target_policy=positive-patches-only",
            ]
        );
        let reused = [
            "random-init",
            "rr",
            "sr",
            "sr_method.patch_mode_additive",
            "sr_method.target_policy_positive-patches-only",
        ];
        for name in reused {
            assert!(
                arms.iter()
                    .any(|a| arm_dir(Path::new("x"), a, 1)
                        == Path::new("x").join(name).join("seed-1")),
                "{name}"
            );
        }
        assert_eq!(
            expand("configs/study/cifar10-long.toml"),
            [
                "rr",
                "sr method.target_policy=reference",
                "sr method.target_policy=positive-patches-only"
            ]
        );
    }

    #[test]
    fn budget_overrides_apply_and_the_estimate_scales() {
        let cfg = |b: &StudyBudget| {
            Config::from_toml_file(Path::new("configs/study/cifar10-cpu.toml"))
                .unwrap()
                .apply_overrides(&b.overrides())
                .unwrap()
                .check()
                .unwrap()
        };
        let tiny = StudyBudget::tiny();
        let c = cfg(&tiny);
        assert_eq!(
            (c.data.train_limit, c.train.epochs, c.eval.linear_epochs),
            (512, 1, 5)
        );
        assert_eq!(c.eval.probe_patches, vec![0]);
        let study = StudyBudget::study();
        let (t, s) = (
            tiny.estimate_s(&c, 10_000).unwrap(),
            study.estimate_s(&cfg(&study), 10_000).unwrap(),
        );
        // The study: 6 arms × 3 seeds, ≈ 24 min of pretraining per seed (measured 97 min in
        // all beside other work).
        assert!((3_600.0..6_000.0).contains(&s), "{s}");
        assert!(t < 120.0 && t > 0.0, "{t}");
        let twice = StudyBudget { epochs: 6, ..study };
        assert!(twice.estimate_s(&cfg(&twice), 10_000).unwrap() > 1.8 * s);
    }

    #[test]
    fn an_invalid_arm_or_value_is_rejected_before_work() {
        let cfg = Config::default()
            .apply_overrides(&["run.arms=[\"sr\", \"byol\"]"])
            .unwrap()
            .check()
            .unwrap();
        assert!(expand_arms(&cfg).unwrap_err().to_string().contains("byol"));
        let cfg = Config::default()
            .apply_overrides(&["run.sweep={\"method.patches\" = [2, 99]}"])
            .unwrap()
            .check()
            .unwrap();
        let e = expand_arms(&cfg).unwrap_err().to_string();
        assert!(e.contains("method.patches = 99"), "{e}");
    }
}
