//! The pretraining loop: data pipeline, steps, metrics, checkpoints, exact resume.
//!
//! Read top to bottom: [`prepare_data`] loads the training split and its normalisation;
//! [`pretrain`] creates or reopens the run directory and dispatches on the backbone; [`train_loop`]
//! is the loop itself, one plain function.
//!
//! Run directory (`../shared/STYLE.md`): `config.toml` and `meta.json` written before step 0,
//! `metrics.jsonl`, `checkpoints/step-…/` (atomic, see [`checkpoint`]), `eval/`.
//!
//! Determinism: every random draw comes from `(seed, stream, epoch, index)` (see [`crate::rng`]),
//! so a run with a fixed seed and thread count is reproducible, and a resumed run continues exactly
//! where its checkpoint left off (weights, batch-norm statistics, optimiser moments and metric
//! windows are all in the checkpoint).

pub mod checkpoint;
pub mod metrics;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::Arc;
use std::time::Instant;

use dfdx::prelude::*;
use rand::seq::SliceRandom;
use serde::{Deserialize, Serialize};

use crate::augment::{fill_patches, fill_views, BatchKey, SourceBatch};
use crate::augment::{Normalize, PatchAugment, PatchSampler, ViewAugment};
use crate::config::{NonFinitePolicy, ValidConfig};
use crate::data::{self, ImageDataset, Split};
use crate::eval::{Diagnostics, Probe};
use crate::method::{
    forward_loss, HeadSpec, LossSettings, PairBatch, RelationHead, SslModel, StepStats,
};
use crate::models::{Backbone, Images};
use crate::optim::{OptimError, Optimizer};
use crate::rng::{rng_for, Stream};
pub use checkpoint::load_sr_model;
use checkpoint::{TrainState, WindowSums};
use metrics::{DiagColumns, MetricRow, MetricsWriter, RowKind};

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

/// `meta.json`: provenance of a run.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Meta {
    pub crate_version: String,
    pub git_revision: Option<String>,
    pub seed: u64,
    pub device: String,
    pub threads: usize,
    pub normalize_mean: [f32; 3],
    pub normalize_std: [f32; 3],
    pub train_images: usize,
}

/// The git revision of the working directory, if it is a git checkout.
pub fn git_revision() -> Option<String> {
    let out = std::process::Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Create (or, with `resume`, reopen) a run directory and check it is writable before any work.
pub fn open_run_dir(
    cfg: &ValidConfig,
    run_dir: &Path,
    resume: bool,
    meta: &Meta,
) -> Result<(), TrainError> {
    let rd = |detail: String| TrainError::RunDir {
        path: run_dir.to_path_buf(),
        detail,
    };
    std::fs::create_dir_all(run_dir).map_err(|e| rd(format!("cannot create: {e}")))?;
    let config_path = run_dir.join("config.toml");
    if resume {
        let saved = crate::config::Config::from_toml_file(&config_path)
            .map_err(|e| rd(format!("cannot resume: {e}")))?;
        // `train.nonfinite` may change on resume: the steps before the checkpoint did not
        // depend on it (under "stop" none was skipped), and switching to "skip" is what the
        // non-finite error suggests. The saved config is updated to say so.
        let mut comparable = saved.clone();
        comparable.train.nonfinite = cfg.raw().train.nonfinite;
        if &comparable != cfg.raw() {
            return Err(rd(format!(
                "cannot resume: {} differs from the configuration given now; resume with the saved one (omit --config/--set) or start a new run directory",
                config_path.display()
            )));
        }
        if saved != comparable {
            checkpoint::write_atomic(&config_path, cfg.raw().to_toml_string().as_bytes())?;
        }
        return Ok(());
    }
    if config_path.exists() {
        return Err(rd(
            "already holds a run (config.toml exists); use --resume to continue it or choose another --out".into(),
        ));
    }
    // Probe writability and free space with a real write before training starts.
    let probe = run_dir.join(".write-probe");
    std::fs::write(&probe, vec![0u8; 1 << 20])
        .and_then(|_| std::fs::remove_file(&probe))
        .map_err(|e| rd(format!("not writable: {e}")))?;
    checkpoint::write_atomic(&config_path, cfg.raw().to_toml_string().as_bytes())?;
    checkpoint::write_atomic(
        &run_dir.join("meta.json"),
        &serde_json::to_vec_pretty(meta).expect("meta serialises"),
    )?;
    Ok(())
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

/// One prepared minibatch from the pipeline.
struct Batch {
    step: u64,
    items: Vec<f32>,
    positions: Vec<(usize, usize)>,
}

/// The batch order of a run: epoch `e` visits the training set in the permutation drawn from
/// `rng_for(seed, Shuffle, e, 0)`, in steps of `batch` images (the last partial batch dropped).
fn epoch_order(seed: u64, epoch: u64, n: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..n).collect();
    order.shuffle(&mut rng_for(seed, Stream::Shuffle, epoch, 0));
    order
}

struct Pipeline {
    views: usize,
    batch: usize,
    seed: u64,
    steps_per_epoch: u64,
    view_aug: ViewAugment,
    patches: Option<(PatchSampler, PatchAugment)>,
    item_floats: usize,
}

impl Pipeline {
    fn build(
        &self,
        data: &ImageDataset,
        step: u64,
        order: &[usize],
        buf: &mut Vec<f32>,
    ) -> Result<Vec<(usize, usize)>, String> {
        let epoch = step / self.steps_per_epoch;
        let pos = (step % self.steps_per_epoch) as usize;
        let idx = &order[pos * self.batch..(pos + 1) * self.batch];
        let images: Vec<&[u8]> = idx.iter().map(|&i| data.image(i)).collect();
        let indices: Vec<u64> = idx.iter().map(|&i| i as u64).collect();
        let src = SourceBatch {
            images: &images,
            height: data.height,
            width: data.width,
            indices: &indices,
        };
        let key = BatchKey {
            seed: self.seed,
            epoch,
        };
        let n_patches = self.patches.as_ref().map_or(0, |(s, _)| s.count());
        buf.resize(
            self.batch * (self.views + n_patches) * self.item_floats,
            0.0,
        );
        let split = self.batch * self.views * self.item_floats;
        let (v, p) = buf.split_at_mut(split);
        fill_views(&src, &self.view_aug, self.views, key, v).map_err(|e| e.to_string())?;
        let positions = match &self.patches {
            Some((sampler, aug)) => fill_patches(&src, sampler, aug, key, p)
                .map_err(|e| e.to_string())?
                .into_iter()
                .map(|q| (q.row, q.col))
                .collect(),
            None => Vec::new(),
        };
        Ok(positions)
    }
}

fn producer(
    pipe: &Pipeline,
    data: &ImageDataset,
    first: u64,
    last: u64,
    tx: SyncSender<Result<Batch, String>>,
    recycle: Receiver<Vec<f32>>,
) {
    let mut order_epoch = u64::MAX;
    let mut order = Vec::new();
    for step in first..last {
        let epoch = step / pipe.steps_per_epoch;
        if epoch != order_epoch {
            order = epoch_order(pipe.seed, epoch, data.len());
            order_epoch = epoch;
        }
        let mut buf = recycle.try_recv().unwrap_or_default();
        let res = pipe
            .build(data, step, &order, &mut buf)
            .map(|positions| Batch {
                step,
                items: buf,
                positions,
            });
        let failed = res.is_err();
        if tx.send(res).is_err() || failed {
            return; // consumer stopped
        }
    }
}

fn row_from(kind: RowKind, step: u64, epoch: f64, w: &WindowSums, skipped: u64) -> MetricRow {
    let n = w.steps.max(1) as f64;
    MetricRow {
        kind,
        step,
        epoch,
        loss: w.loss / n,
        loss_relation: w.loss_relation / n,
        loss_distance: w.loss_distance / n,
        relation_acc: w.relation_acc / n,
        img_per_s: if w.seconds > 0.0 {
            w.images / w.seconds
        } else {
            0.0
        },
        data_wait: if w.seconds > 0.0 {
            w.wait_seconds / w.seconds
        } else {
            0.0
        },
        skipped,
        diagnostics: Default::default(),
    }
}

fn add(w: &mut WindowSums, s: &StepStats, images: usize, seconds: f64, wait: f64) {
    w.steps += 1;
    w.loss += s.loss as f64;
    w.loss_relation += s.loss_relation as f64;
    w.loss_distance += s.loss_distance as f64;
    w.relation_acc += s.relation_acc as f64;
    w.images += images as f64;
    w.seconds += seconds;
    w.wait_seconds += wait;
}

/// The pretraining loop for one backbone and head. See the module docs. With a `probe`, every
/// epoch row carries the diagnostics measured at the epoch's end, and an SR run keeps the head's
/// predictions on the probe's test pairs in `run_dir/diagnostics/offsets.json`.
pub fn train_loop<B>(
    cfg: &ValidConfig,
    dev: &crate::Device,
    mut model: SslModel<B, RelationHead<f32, crate::Device>>,
    data: &TrainData,
    run_dir: &Path,
    mut opts: PretrainOptions<'_>,
    probe: Option<&Probe>,
) -> Result<Outcome, TrainError>
where
    B: Backbone<crate::Device>,
{
    let t = &cfg.train;
    let m = &cfg.method;
    let train = &*data.train;
    let batch = t.batch_size;
    if train.len() < batch {
        return Err(TrainError::Other(format!(
            "train.batch_size = {batch} is larger than the {} training images",
            train.len()
        )));
    }
    let steps_per_epoch = (train.len() / batch) as u64;
    let mut total_steps = steps_per_epoch * t.epochs as u64;
    if t.max_steps > 0 {
        total_steps = total_steps.min(t.max_steps as u64);
    }
    let size = cfg.data.image_size;
    let view_aug = ViewAugment::new(size, data.normalize);
    let patches = if m.patches > 0 {
        let sampler = PatchSampler::new(
            train.height,
            train.width,
            cfg.patch_size,
            m.patches,
            m.overlap,
        )
        .map_err(|e| TrainError::Patches(e.to_string()))?;
        let aug = PatchAugment::new(m.patch_mode, size, cfg.patch_size, data.normalize)
            .map_err(|e| TrainError::Patches(e.to_string()))?;
        Some((sampler, aug))
    } else {
        None
    };
    let pipe = Pipeline {
        views: m.views,
        batch,
        seed: t.seed,
        steps_per_epoch,
        view_aug,
        patches,
        item_floats: 3 * size * size,
    };
    let settings = LossSettings::from_config(cfg);
    let mut opt = Optimizer::new(cfg.optim.clone());

    // Resume.
    let mut state = TrainState::default();
    let mut resumed_from = None;
    // A run killed before its first checkpoint has none: it restarts from step 0 (its complete
    // metrics rows are kept and not written twice). Damaged checkpoints without a good one are
    // still an error.
    let found = if !opts.resume {
        None
    } else {
        match checkpoint::find_latest(run_dir) {
            Ok(f) => Some(f),
            Err(checkpoint::CheckpointError::NoneFound(_))
                if !checkpoint::has_step_dirs(run_dir) =>
            {
                emit(
                    &mut opts,
                    Progress::Note(
                        "no checkpoint yet (stopped before the first one): starting from step 0"
                            .into(),
                    ),
                );
                None
            }
            Err(e) => return Err(e.into()),
        }
    };
    if let Some((found, problems)) = found {
        for p in problems {
            emit(
                &mut opts,
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
        state = found.state;
        resumed_from = Some(state.step);
    }
    let mut metrics = MetricsWriter::open(&run_dir.join("metrics.jsonl"), opts.resume)?;
    emit(
        &mut opts,
        Progress::Started {
            total_steps,
            steps_per_epoch,
            resumed_from,
        },
    );

    let items = batch * (m.views + m.patches);
    let shape = (items, Const::<3>, size, size);
    let mut x: Images<crate::Device> = dev.zeros_like(&shape);
    let started = Instant::now();
    let elapsed_before = state.elapsed_s;
    let mut last_ckpt: Option<PathBuf> = None;
    let mut interrupted = false;
    let first = state.step;
    let stop_at = opts.stop_at_step.unwrap_or(u64::MAX).min(total_steps);

    let save = |model: &SslModel<B, RelationHead<f32, crate::Device>>,
                state: &TrainState,
                opt: &Optimizer,
                metrics: &mut MetricsWriter|
     -> Result<PathBuf, TrainError> {
        metrics.sync()?;
        let path = checkpoint::save(
            run_dir,
            state.clone(),
            opt.state(),
            |p| model.save_safetensors(p).map_err(|e| format!("{e:?}")),
            2,
        )?;
        Ok(path)
    };

    let result: Result<(), TrainError> = std::thread::scope(|scope| {
        let (tx, rx) = sync_channel::<Result<Batch, String>>(2);
        let (recycle_tx, recycle_rx) = sync_channel::<Vec<f32>>(4);
        let pipe_ref = &pipe;
        scope.spawn(move || producer(pipe_ref, train, first, stop_at, tx, recycle_rx));
        let mut step_start = Instant::now();
        for step in first..stop_at {
            let wait_start = Instant::now();
            let b = rx
                .recv()
                .map_err(|_| TrainError::Pipeline("the data pipeline stopped".into()))?
                .map_err(TrainError::Pipeline)?;
            let wait = wait_start.elapsed().as_secs_f64();
            debug_assert_eq!(b.step, step);
            x.copy_from(&b.items);
            let _ = recycle_tx.try_send(b.items);
            let pairs = PairBatch::new(
                batch,
                m.views,
                &b.positions,
                train.height,
                cfg.patch_size,
                m.target_policy,
            );
            let backup = (t.nonfinite == NonFinitePolicy::Skip).then(|| model.clone());
            let grads = model.alloc_grads();
            let (loss, stats) =
                forward_loss(&mut model, x.clone().traced(grads), &pairs, &settings)
                    .map_err(|e| TrainError::Device(format!("{e:?}")))?;
            let mut bad: Option<String> = None;
            if !stats.loss.is_finite() {
                bad = Some(format!("loss ({})", stats.loss));
            } else {
                let mut grads = loss.backward();
                match opt.step(&mut model, &mut grads) {
                    Ok(()) => {}
                    Err(OptimError::NonFiniteGradient { index, count }) => {
                        bad = Some(format!(
                            "gradient ({count} values in parameter tensor #{index})"
                        ))
                    }
                    Err(e) => return Err(TrainError::Device(e.to_string())),
                }
            }
            let skipped = bad.is_some();
            if let Some(what) = bad {
                match (t.nonfinite, backup) {
                    (NonFinitePolicy::Skip, Some(b)) => {
                        model = b;
                        state.skipped_nonfinite += 1;
                        emit(
                            &mut opts,
                            Progress::Note(format!(
                                "step {}: non-finite {what}; skipped",
                                step + 1
                            )),
                        );
                    }
                    _ => {
                        return Err(TrainError::NonFinite {
                            what,
                            step: step + 1,
                            hint: " (set train.nonfinite = \"skip\" to skip such steps instead)"
                                .into(),
                        })
                    }
                }
            }
            let secs = step_start.elapsed().as_secs_f64();
            step_start = Instant::now();
            state.step = step + 1;
            // A skipped step's statistics are non-finite: they stay out of the averages (a NaN
            // would be written as `null`, making the metrics row and the checkpoint's
            // state.json unreadable); the row's `skipped` column counts it.
            if !skipped {
                add(&mut state.window, &stats, batch, secs, wait);
                add(&mut state.epoch_sums, &stats, batch, secs, wait);
            }
            let done = state.step;
            let epoch_f = done as f64 / steps_per_epoch as f64;
            if done % t.log_every as u64 == 0 || done == total_steps {
                let row = row_from(
                    RowKind::Step,
                    done,
                    epoch_f,
                    &state.window,
                    state.skipped_nonfinite,
                );
                metrics.write(&row)?;
                emit(&mut opts, Progress::Row(row));
                state.window = WindowSums::default();
            }
            let epoch_end = done % steps_per_epoch == 0;
            if epoch_end {
                let mut row = row_from(
                    RowKind::Epoch,
                    done,
                    (done / steps_per_epoch) as f64,
                    &state.epoch_sums,
                    state.skipped_nonfinite,
                );
                if let Some(probe) = probe {
                    // A diagnostic never stops training: one that cannot be measured (e.g.
                    // non-finite features after skipped steps) leaves the row's columns empty.
                    let measured = Instant::now();
                    match probe.measure(&model.backbone, Some(&model.head), dev) {
                        Ok(d) => {
                            if !d.predictions.is_empty() {
                                save_offsets(run_dir, done, &d)?;
                            }
                            row.diagnostics = DiagColumns::from_diagnostics(&d);
                        }
                        Err(e) => emit(
                            &mut opts,
                            Progress::Note(format!(
                                "epoch {}: diagnostics not measured: {e}",
                                done / steps_per_epoch
                            )),
                        ),
                    }
                    // The measurement is not part of the next step's time.
                    step_start += measured.elapsed();
                }
                metrics.write(&row)?;
                emit(&mut opts, Progress::Row(row));
                state.epoch_sums = WindowSums::default();
            }
            let stop_requested = opts.stop.is_some_and(|s| s.load(Ordering::SeqCst));
            let periodic = t.checkpoint_every > 0 && done % t.checkpoint_every as u64 == 0;
            if epoch_end || periodic || stop_requested || done == stop_at {
                state.elapsed_s = elapsed_before + started.elapsed().as_secs_f64();
                let path = save(&model, &state, &opt, &mut metrics)?;
                emit(
                    &mut opts,
                    Progress::Checkpoint {
                        step: done,
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
    });
    result?;
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

/// `run_dir/diagnostics/offsets.json`: the head's `(true, predicted)` offsets on the probe's test
/// pairs after step `step` (rewritten at every epoch end; the report draws it as a scatter).
fn save_offsets(run_dir: &Path, step: u64, d: &Diagnostics) -> Result<(), TrainError> {
    let dir = run_dir.join("diagnostics");
    std::fs::create_dir_all(&dir).map_err(|e| TrainError::RunDir {
        path: dir.clone(),
        detail: format!("cannot create: {e}"),
    })?;
    let json = serde_json::json!({ "step": step, "pairs": d.predictions });
    checkpoint::write_atomic(
        &dir.join("offsets.json"),
        &serde_json::to_vec(&json).expect("offsets serialise"),
    )?;
    Ok(())
}

fn emit(opts: &mut PretrainOptions<'_>, p: Progress) {
    if let Some(f) = opts.progress.as_mut() {
        f(&p);
    }
}
