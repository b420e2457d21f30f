//! The pretraining loop: steps, metrics, checkpoints, exact resume.
//!
//! Read top to bottom: [`prepare_data`] loads the training split and its normalisation;
//! [`pretrain`] creates or reopens the run directory ([`run_dir`]) and builds the model;
//! [`train_loop`] is the loop itself, one plain function over the batches of the data pipeline
//! (its own thread), each step one call of [`train_step`].
//!
//! - [`pipeline`] — the producer thread that builds minibatches ahead of the step;
//! - [`run_dir`] — `config.toml`, `meta.json`, `diagnostics/offsets.json`;
//! - [`checkpoint`] — atomic checkpoints, loading a run's model;
//! - [`metrics`] — `metrics.jsonl`.
//!
//! Determinism: every random draw comes from `(seed, stream, epoch, index)` (see [`crate::rng`]),
//! so a run with a fixed seed and thread count is reproducible, and a resumed run continues exactly
//! where its checkpoint left off (weights, batch-norm statistics, optimiser moments and metric
//! windows are all in the checkpoint).

pub mod checkpoint;
pub mod metrics;
pub mod pipeline;
pub mod run_dir;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use dfdx::prelude::*;
use serde::{Deserialize, Serialize};

use crate::augment::Normalize;
use crate::config::{NonFinitePolicy, ValidConfig};
use crate::data::{self, ImageDataset, Split};
use crate::eval::Probe;
use crate::method::{
    forward_loss, HeadSpec, LossSettings, PairBatch, RelationHead, SslModel, StepStats,
};
use crate::models::{Backbone, Images};
use crate::optim::{OptimError, Optimizer};
pub use checkpoint::load_sr_model;
use checkpoint::{TrainState, WindowSums};
use metrics::{DiagColumns, MetricRow, MetricsWriter, RowKind};
use pipeline::Pipeline;
pub use run_dir::{git_revision, open_run_dir, Meta};

/// Everything that can stop a pretraining run.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error(transparent)]
    Data(#[from] crate::data::DataError),
    #[error("run directory {path}: {detail}")]
    RunDir { path: PathBuf, detail: String },
    #[error(transparent)]
    Checkpoint(#[from] checkpoint::CheckpointError),
    #[error(transparent)]
    File(#[from] crate::files::FileError),
    #[error(transparent)]
    Metrics(#[from] metrics::MetricsError),
    #[error("patch sampler: {0}")]
    Patches(String),
    #[error("diagnostics: {0}")]
    Diagnostics(#[from] crate::eval::EvalError),
    #[error("train.precision: {0}")]
    Precision(#[from] crate::ops::PrecisionError),
    #[error("data pipeline: {0}")]
    Pipeline(String),
    #[error(
        "non-finite {what} at step {step}; stopped without updating the weights. The last good checkpoint is kept{hint}"
    )]
    NonFinite {
        what: String,
        step: u64,
        hint: String,
    },
    #[error(
        "{dataset}: channel {channel} has zero variance over the {images} training images (every value is {value}); normalising by its std would divide by zero"
    )]
    ZeroVariance {
        dataset: String,
        channel: &'static str,
        images: usize,
        value: f32,
    },
    #[error("device: {0}")]
    Device(String),
    #[error("{0}")]
    Other(String),
}

/// The training split and its normalisation, loaded once and shared by every arm of a job.
#[derive(Clone, Debug)]
pub struct TrainData {
    pub train: Arc<ImageDataset>,
    pub normalize: Normalize,
}

/// Load the pretraining split named by the config (`data.pretrain_split`, honouring
/// `data.train_limit`) and compute its per-channel mean and std.
pub fn prepare_data(cfg: &ValidConfig) -> Result<TrainData, TrainError> {
    let root = cfg.data_root();
    let split = match cfg.data.pretrain_split {
        crate::config::PretrainSplit::Train => Split::Train,
        crate::config::PretrainSplit::Unlabeled => Split::Unlabeled,
    };
    let mut train = data::load(cfg.data.dataset, &root, split, &cfg.data)?;
    if cfg.data.train_limit > 0 && cfg.data.train_limit < train.len() {
        train = train.subset(&(0..cfg.data.train_limit).collect::<Vec<_>>());
    }
    TrainData::from_dataset(train)
}

impl TrainData {
    /// Wrap a training split with its per-channel normalisation. A channel with zero variance
    /// (e.g. a constant channel, or identical images) is an error: its std is 0 and
    /// normalisation would turn every pixel into ±inf or NaN.
    pub fn from_dataset(train: ImageDataset) -> Result<TrainData, TrainError> {
        let (mean, std) = data::channel_stats(&train);
        if let Some(c) = (0..3).find(|&c| std[c] <= 0.0 || !std[c].is_finite()) {
            return Err(TrainError::ZeroVariance {
                dataset: format!("{} {}", train.name, train.split),
                channel: ["R", "G", "B"][c],
                images: train.len(),
                value: mean[c] * 255.0,
            });
        }
        Ok(TrainData {
            train: Arc::new(train),
            normalize: Normalize { mean, std },
        })
    }
}

/// What the loop reports while it runs (the library never prints).
#[derive(Clone, Debug)]
pub enum Progress {
    Started {
        total_steps: u64,
        steps_per_epoch: u64,
        resumed_from: Option<u64>,
    },
    Row(MetricRow),
    Checkpoint {
        step: u64,
        path: PathBuf,
    },
    Note(String),
}

/// Options of one pretraining call.
#[derive(Default)]
pub struct PretrainOptions<'a> {
    /// Continue from the run directory's newest complete checkpoint.
    pub resume: bool,
    /// Set (e.g. by a SIGINT handler) to stop after the current step, with a checkpoint.
    pub stop: Option<&'a AtomicBool>,
    /// Progress callback.
    pub progress: Option<&'a mut dyn FnMut(&Progress)>,
    /// Stop (with a checkpoint) after this many completed steps in total; `None` = run to the end.
    /// Used by tests that simulate an interruption.
    pub stop_at_step: Option<u64>,
    /// The test split the per-epoch diagnostics draw their pairs and kNN subset from
    /// (`[diagnostics]`); `None` loads it as the config names it.
    pub test: Option<&'a ImageDataset>,
}

/// How a run ended.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Outcome {
    pub steps: u64,
    pub total_steps: u64,
    pub interrupted: bool,
    pub skipped_nonfinite: u64,
    pub elapsed_s: f64,
    pub final_checkpoint: Option<PathBuf>,
}

/// Pretrain the backbone named by the config on `data` into `run_dir`.
pub fn pretrain<'a>(
    cfg: &'a ValidConfig,
    data: &'a TrainData,
    run_dir: &'a Path,
    opts: PretrainOptions<'a>,
) -> Result<Outcome, TrainError> {
    let dev = crate::new_device(cfg.train.seed).map_err(|e| TrainError::Device(e.to_string()))?;
    let meta = Meta {
        crate_version: env!("CARGO_PKG_VERSION").into(),
        git_revision: git_revision(),
        seed: cfg.train.seed,
        device: crate::device_name(),
        threads: rayon::current_num_threads(),
        normalize_mean: data.normalize.mean,
        normalize_std: data.normalize.std,
        train_images: data.train.len(),
    };
    // Before the run directory is touched: a refused precision (a CUDA build) or a missing
    // test split leaves nothing.
    cfg.train.precision.check_supported()?;
    let probe = if cfg.diagnostics.enabled {
        let loaded;
        let test = match opts.test {
            Some(t) => t,
            None => {
                loaded = data::load(cfg.data.dataset, &cfg.data_root(), Split::Test, &cfg.data)?;
                &loaded
            }
        };
        Probe::prepare(cfg, &data.train, test, &data.normalize)?
    } else {
        None
    };
    // A batch larger than the data (known only now, for an image folder) fails here too.
    Schedule::new(cfg, data.train.len())?;
    open_run_dir(cfg, run_dir, opts.resume, &meta)?;
    struct Job<'a> {
        cfg: &'a ValidConfig,
        data: &'a TrainData,
        run_dir: &'a Path,
        opts: PretrainOptions<'a>,
        dev: crate::Device,
        probe: Option<Probe>,
    }
    impl crate::models::BackboneFn<crate::Device> for Job<'_> {
        type Output = Result<Outcome, TrainError>;
        fn call<B: Backbone<crate::Device> + 'static>(self, mut backbone: B) -> Self::Output {
            // Precision is the run's: the backbone carries it into its training passes.
            backbone.set_precision(self.cfg.train.precision);
            let head = RelationHead::new(&self.dev, HeadSpec::from_config(self.cfg))
                .map_err(|e| TrainError::Device(format!("{e:?}")))?;
            train_loop(
                self.cfg,
                &self.dev,
                SslModel { backbone, head },
                self.data,
                self.run_dir,
                self.opts,
                self.probe.as_ref(),
            )
        }
    }
    let job = Job {
        cfg,
        data,
        run_dir,
        opts,
        dev: dev.clone(),
        probe,
    };
    crate::models::with_backbone(cfg.backbone.name, &dev, cfg.train.seed, job)
        .map_err(|e| TrainError::Device(format!("{e:?}")))?
}

/// The model a run trains: a backbone and the relation head.
pub type Model<B> = SslModel<B, RelationHead<f32, crate::Device>>;

/// How many steps a run takes: `⌊N/B⌋` per epoch, `train.epochs` epochs, at most
/// `train.max_steps` (0 = no limit).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Schedule {
    pub steps_per_epoch: u64,
    pub total_steps: u64,
}

impl Schedule {
    pub fn new(cfg: &ValidConfig, train_images: usize) -> Result<Schedule, TrainError> {
        let (t, batch) = (&cfg.train, cfg.train.batch_size);
        if train_images < batch {
            return Err(TrainError::Other(format!(
                "train.batch_size = {batch} is larger than the {train_images} training images"
            )));
        }
        let steps_per_epoch = (train_images / batch) as u64;
        let mut total_steps = steps_per_epoch * t.epochs as u64;
        if t.max_steps > 0 {
            total_steps = total_steps.min(t.max_steps as u64);
        }
        Ok(Schedule {
            steps_per_epoch,
            total_steps,
        })
    }
}

/// The pretraining loop for one backbone and head. See the module docs. With a `probe`, every
/// epoch row carries the diagnostics measured at the epoch's end, and an SR run keeps the head's
/// predictions on the probe's test pairs in `run_dir/diagnostics/offsets.json`.
pub fn train_loop<B: Backbone<crate::Device>>(
    cfg: &ValidConfig,
    dev: &crate::Device,
    mut model: Model<B>,
    data: &TrainData,
    run_dir: &Path,
    mut opts: PretrainOptions<'_>,
    probe: Option<&Probe>,
) -> Result<Outcome, TrainError> {
    let t = &cfg.train;
    let train = &*data.train;
    let batch = t.batch_size;
    let sched = Schedule::new(cfg, train.len())?;
    let (steps_per_epoch, total_steps) = (sched.steps_per_epoch, sched.total_steps);
    let pipe = Pipeline::new(cfg, data, steps_per_epoch)?;
    let settings = LossSettings::from_config(cfg);
    let mut opt = Optimizer::new(cfg.optim.clone());
    let (mut state, resumed_from) = resume(run_dir, &mut model, &mut opt, &mut opts)?;
    let mut metrics = MetricsWriter::open(&run_dir.join("metrics.jsonl"), opts.resume)?;
    emit(
        &mut opts,
        Progress::Started {
            total_steps,
            steps_per_epoch,
            resumed_from,
        },
    );

    let size = cfg.data.image_size;
    let items = batch * (cfg.method.views + cfg.method.patches);
    let mut x: Images<crate::Device> = dev.zeros_like(&(items, Const::<3>, size, size));
    let started = Instant::now();
    let elapsed_before = state.elapsed_s;
    let mut last_ckpt: Option<PathBuf> = None;
    let mut interrupted = false;
    let first = state.step;
    let stop_at = opts.stop_at_step.unwrap_or(u64::MAX).min(total_steps);

    std::thread::scope(|scope| -> Result<(), TrainError> {
        let batches = pipe.spawn(scope, train, first, stop_at);
        let mut step_start = Instant::now();
        for step in first..stop_at {
            // One step: the next batch, its pairs, forward + backward + update.
            let (b, wait) = batches.next()?;
            debug_assert_eq!(b.step, step);
            x.copy_from(&b.items);
            batches.recycle(b.items);
            let pairs = PairBatch::new(
                batch,
                cfg.method.views,
                &b.positions,
                &cfg.geometry,
                cfg.method.target_policy,
            );
            let skip = t.nonfinite == NonFinitePolicy::Skip;
            let (stats, bad) = train_step(&mut model, &mut opt, &x, &pairs, &settings, skip)?;
            if let Some(what) = &bad {
                if !skip {
                    return Err(TrainError::NonFinite {
                        what: what.clone(),
                        step: step + 1,
                        hint: " (set train.nonfinite = \"skip\" to skip such steps instead)".into(),
                    });
                }
                state.skipped_nonfinite += 1;
                let note = format!("step {}: non-finite {what}; skipped", step + 1);
                emit(&mut opts, Progress::Note(note));
            }
            let secs = step_start.elapsed().as_secs_f64();
            step_start = Instant::now();
            state.step = step + 1;
            // A skipped step's statistics are non-finite: they stay out of the averages (a NaN
            // would be written as `null`, making the metrics row and the checkpoint's
            // state.json unreadable); the row's `skipped` column counts it.
            if bad.is_none() {
                state.window.add(&stats, batch, secs, wait);
                state.epoch_sums.add(&stats, batch, secs, wait);
            }

            // Metrics: a step row every `log_every` steps, an epoch row at each epoch's end.
            let done = state.step;
            if done % t.log_every as u64 == 0 || done == total_steps {
                let epoch = done as f64 / steps_per_epoch as f64;
                let row = state
                    .window
                    .row(RowKind::Step, done, epoch, state.skipped_nonfinite);
                metrics.write(&row)?;
                emit(&mut opts, Progress::Row(row));
                state.window = WindowSums::default();
            }
            let epoch_end = done % steps_per_epoch == 0;
            if epoch_end {
                let epoch = (done / steps_per_epoch) as f64;
                let mut row =
                    state
                        .epoch_sums
                        .row(RowKind::Epoch, done, epoch, state.skipped_nonfinite);
                if let Some(probe) = probe {
                    let measured = Instant::now();
                    let at = (done, done / steps_per_epoch);
                    row.diagnostics = diagnose(probe, &model, dev, run_dir, at, &mut opts)?;
                    // The measurement is not part of the next step's time.
                    step_start += measured.elapsed();
                }
                metrics.write(&row)?;
                emit(&mut opts, Progress::Row(row));
                state.epoch_sums = WindowSums::default();
            }

            // Checkpoints: at epoch ends, every `checkpoint_every` steps, on a stop request and
            // at the last step of this call.
            let stop_requested = opts.stop.is_some_and(|s| s.load(Ordering::SeqCst));
            let periodic = t.checkpoint_every > 0 && done % t.checkpoint_every as u64 == 0;
            if epoch_end || periodic || stop_requested || done == stop_at {
                state.elapsed_s = elapsed_before + started.elapsed().as_secs_f64();
                metrics.sync()?;
                let path = checkpoint::save(
                    run_dir,
                    state.clone(),
                    opt.state(),
                    |p| model.save_safetensors(p).map_err(|e| format!("{e:?}")),
                    2,
                )?;
                let (step, path) = (done, path);
                emit(
                    &mut opts,
                    Progress::Checkpoint {
                        step,
                        path: path.clone(),
                    },
                );
                last_ckpt = Some(path);
            }
            if stop_requested && done < total_steps {
                interrupted = true;
                break;
            }
        }
        Ok(())
    })?;
    if state.step < total_steps {
        interrupted = true;
    }
    Ok(Outcome {
        steps: state.step,
        total_steps,
        interrupted,
        skipped_nonfinite: state.skipped_nonfinite,
        elapsed_s: elapsed_before + started.elapsed().as_secs_f64(),
        final_checkpoint: last_ckpt,
    })
}

/// One optimiser step on the batch `x` with its `pairs`: forward, loss, backward, update. The
/// statistics, and what was not finite when the step was not applied (the loss, or a gradient:
/// the optimiser then changes nothing). With `keep_backup`, a step that is not applied leaves
/// the model as it was before (the batch-norm running statistics too), so it can be skipped.
pub fn train_step<B: Backbone<crate::Device>>(
    model: &mut Model<B>,
    opt: &mut Optimizer,
    x: &Images<crate::Device>,
    pairs: &PairBatch,
    settings: &LossSettings,
    keep_backup: bool,
) -> Result<(StepStats, Option<String>), TrainError> {
    let backup = keep_backup.then(|| model.clone());
    let grads = model.alloc_grads();
    let (loss, stats) = forward_loss(model, x.clone().traced(grads), pairs, settings)
        .map_err(|e| TrainError::Device(format!("{e:?}")))?;
    let bad = if !stats.loss.is_finite() {
        Some(format!("loss ({})", stats.loss))
    } else {
        let mut grads = loss.backward();
        match opt.step(model, &mut grads) {
            Ok(()) => None,
            Err(OptimError::NonFiniteGradient { index, count }) => Some(format!(
                "gradient ({count} values in parameter tensor #{index})"
            )),
            Err(e) => return Err(TrainError::Device(e.to_string())),
        }
    };
    if let (Some(_), Some(b)) = (&bad, backup) {
        *model = b;
    }
    Ok((stats, bad))
}

/// Continue from the run directory's newest complete checkpoint when `opts.resume`: weights,
/// optimiser moments and loop state. A run killed before its first checkpoint has none: it
/// restarts from step 0 (its complete metrics rows are kept and not written twice). Damaged
/// checkpoints without a good one are an error.
fn resume<B: Backbone<crate::Device>>(
    run_dir: &Path,
    model: &mut Model<B>,
    opt: &mut Optimizer,
    opts: &mut PretrainOptions<'_>,
) -> Result<(TrainState, Option<u64>), TrainError> {
    if !opts.resume {
        return Ok((TrainState::default(), None));
    }
    let (found, problems) = match checkpoint::find_latest(run_dir) {
        Ok(f) => f,
        Err(checkpoint::CheckpointError::NoneFound(_)) if !checkpoint::has_step_dirs(run_dir) => {
            let note = "no checkpoint yet (stopped before the first one): starting from step 0";
            emit(opts, Progress::Note(note.into()));
            return Ok((TrainState::default(), None));
        }
        Err(e) => return Err(e.into()),
    };
    for p in problems {
        emit(
            opts,
            Progress::Note(format!("skipped a damaged checkpoint: {p}")),
        );
    }
    model.load_safetensors(found.model_path()).map_err(|e| {
        TrainError::Checkpoint(checkpoint::CheckpointError::Corrupt {
            path: found.model_path(),
            detail: format!("{e:?}"),
        })
    })?;
    opt.load_state(found.optim.clone());
    let step = found.state.step;
    Ok((found.state, Some(step)))
}

/// The diagnostics of an epoch's end as metrics columns; an SR run's head predictions go to
/// `run_dir/diagnostics/offsets.json`. A diagnostic never stops training: one that cannot be
/// measured (e.g. non-finite features after skipped steps) leaves the columns empty, with a note.
fn diagnose<B: Backbone<crate::Device>>(
    probe: &Probe,
    model: &Model<B>,
    dev: &crate::Device,
    run_dir: &Path,
    (step, epoch): (u64, u64),
    opts: &mut PretrainOptions<'_>,
) -> Result<DiagColumns, TrainError> {
    match probe.measure(&model.backbone, Some(&model.head), dev) {
        Ok(d) => {
            if !d.predictions.is_empty() {
                run_dir::save_offsets(run_dir, step, &d)?;
            }
            Ok(DiagColumns::from_diagnostics(&d))
        }
        Err(e) => {
            emit(
                opts,
                Progress::Note(format!("epoch {epoch}: diagnostics not measured: {e}")),
            );
            Ok(DiagColumns::default())
        }
    }
}

fn emit(opts: &mut PretrainOptions<'_>, p: Progress) {
    if let Some(f) = opts.progress.as_mut() {
        f(&p);
    }
}
