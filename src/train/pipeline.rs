//! The data pipeline of a pretraining run: a producer thread that builds the next minibatches
//! (K augmented views and P patches per image, straight into NCHW buffers) while the training
//! thread computes, two batches ahead, recycling the buffers it gets back.
//!
//! What a step sees depends only on `(train.seed, epoch, dataset index)` (see
//! [`crate::augment::fill_views`]): epoch `e` visits the images in the permutation drawn from
//! `rng_for(seed, Shuffle, e, 0)`, in steps of `batch` images (the last partial batch dropped).
//! Neither the thread count nor `data.workers` changes a batch.

use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::thread::Scope;
use std::time::Instant;

use rand::seq::SliceRandom;

use super::{TrainData, TrainError};
use crate::augment::{fill_patches, fill_views, BatchKey, SourceBatch};
use crate::augment::{PatchAugment, PatchSampler, ViewAugment};
use crate::config::ValidConfig;
use crate::data::ImageDataset;
use crate::rng::{rng_for, Stream};

/// One prepared minibatch: `B·(K + P)` backbone inputs, slot-major (see
/// [`crate::method::PairBatch`]), and the top-left corner of every patch.
pub struct Batch {
    pub step: u64,
    pub items: Vec<f32>,
    pub positions: Vec<(usize, usize)>,
}

/// How a run's minibatches are made (views, patches, order) and by how many threads.
pub struct Pipeline {
    views: usize,
    batch: usize,
    seed: u64,
    steps_per_epoch: u64,
    view_aug: ViewAugment,
    patches: Option<(PatchSampler, PatchAugment)>,
    item_floats: usize,
    /// `data.workers > 0`: a pool of its own with that many threads; `None`: rayon's global
    /// pool (shared with the training step's compute).
    pool: Option<rayon::ThreadPool>,
}

impl Pipeline {
    /// The pipeline of `cfg` over `data`, with `steps_per_epoch` steps of `train.batch_size`.
    pub fn new(
        cfg: &ValidConfig,
        data: &TrainData,
        steps_per_epoch: u64,
    ) -> Result<Pipeline, TrainError> {
        let size = cfg.data.image_size;
        let geometry = cfg.geometry;
        let patches = if geometry.count() > 0 {
            let sampler = PatchSampler::for_geometry(&geometry);
            let aug = PatchAugment::new(
                cfg.method.patch_mode,
                size,
                geometry.patch(),
                data.normalize,
            )
            .map_err(|e| TrainError::Patches(e.to_string()))?;
            Some((sampler, aug))
        } else {
            None
        };
        let pool = match cfg.data.workers {
            0 => None,
            n => Some(
                rayon::ThreadPoolBuilder::new()
                    .num_threads(n)
                    .thread_name(|i| format!("data-{i}"))
                    .build()
                    .map_err(|e| TrainError::Pipeline(format!("data.workers = {n}: {e}")))?,
            ),
        };
        Ok(Pipeline {
            views: cfg.method.views,
            batch: cfg.train.batch_size,
            seed: cfg.train.seed,
            steps_per_epoch,
            view_aug: ViewAugment::new(size, data.normalize),
            patches,
            item_floats: 3 * size * size,
            pool,
        })
    }

    /// Threads that build a batch: `data.workers`, or rayon's global pool's size.
    pub fn workers(&self) -> usize {
        self.pool
            .as_ref()
            .map_or_else(rayon::current_num_threads, |p| p.current_num_threads())
    }

    /// Builds step `step`'s batch into `buf` (resized as needed) and returns the patch
    /// positions. `order` is the step's epoch order ([`epoch_order`]).
    pub fn build(
        &self,
        data: &ImageDataset,
        step: u64,
        order: &[usize],
        buf: &mut Vec<f32>,
    ) -> Result<Vec<(usize, usize)>, String> {
        match &self.pool {
            Some(pool) => pool.install(|| self.build_here(data, step, order, buf)),
            None => self.build_here(data, step, order, buf),
        }
    }

    fn build_here(
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

    /// Starts the producer thread in `scope` for steps `first..last` and returns the stream of
    /// their batches.
    pub fn spawn<'scope, 'env: 'scope>(
        &'env self,
        scope: &'scope Scope<'scope, 'env>,
        data: &'env ImageDataset,
        first: u64,
        last: u64,
    ) -> Batches {
        let (tx, rx) = sync_channel::<Result<Batch, String>>(2);
        let (recycle_tx, recycle_rx) = sync_channel::<Vec<f32>>(4);
        scope.spawn(move || self.produce(data, first, last, tx, recycle_rx));
        Batches {
            rx,
            recycle: recycle_tx,
        }
    }

    fn produce(
        &self,
        data: &ImageDataset,
        first: u64,
        last: u64,
        tx: SyncSender<Result<Batch, String>>,
        recycle: Receiver<Vec<f32>>,
    ) {
        let mut order_epoch = u64::MAX;
        let mut order = Vec::new();
        for step in first..last {
            let epoch = step / self.steps_per_epoch;
            if epoch != order_epoch {
                order = epoch_order(self.seed, epoch, data.len());
                order_epoch = epoch;
            }
            let mut buf = recycle.try_recv().unwrap_or_default();
            let res = self
                .build(data, step, &order, &mut buf)
                .map(|positions| Batch {
                    step,
                    items: buf,
                    positions,
                });
            let failed = res.is_err();
            if tx.send(res).is_err() || failed {
                return; // the consumer stopped, or this batch failed
            }
        }
    }
}

/// The training thread's end of the pipeline.
pub struct Batches {
    rx: Receiver<Result<Batch, String>>,
    recycle: SyncSender<Vec<f32>>,
}

impl Batches {
    /// The next batch and the seconds spent waiting for it.
    pub fn next(&self) -> Result<(Batch, f64), TrainError> {
        let wait_start = Instant::now();
        let batch = self
            .rx
            .recv()
            .map_err(|_| TrainError::Pipeline("the data pipeline stopped".into()))?
            .map_err(TrainError::Pipeline)?;
        Ok((batch, wait_start.elapsed().as_secs_f64()))
    }

    /// Hands a batch's buffer back for reuse (dropped if the producer has enough).
    pub fn recycle(&self, items: Vec<f32>) {
        let _ = self.recycle.try_send(items);
    }
}

/// The batch order of a run: epoch `epoch` visits the `n` training images in the permutation
/// drawn from `rng_for(seed, Shuffle, epoch, 0)`.
pub fn epoch_order(seed: u64, epoch: u64, n: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..n).collect();
    order.shuffle(&mut rng_for(seed, Stream::Shuffle, epoch, 0));
    order
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::data::{synthetic, Split};

    /// `data.workers` runs the batch building on a pool of its own; the batches are the same.
    #[test]
    fn workers_get_their_own_pool_and_the_same_batches() {
        let data =
            TrainData::from_dataset(synthetic::generate(Split::Train, 16, 3).unwrap()).unwrap();
        let batch = |workers: usize| {
            let cfg = Config::default()
                .apply_overrides(&[
                    "data.dataset=synthetic".to_string(),
                    "train.batch_size=8".to_string(),
                    format!("data.workers={workers}"),
                ])
                .unwrap()
                .check()
                .unwrap();
            let pipe = Pipeline::new(&cfg, &data, 2).unwrap();
            let order = epoch_order(cfg.train.seed, 0, data.train.len());
            let mut buf = Vec::new();
            let positions = pipe.build(&data.train, 1, &order, &mut buf).unwrap();
            (pipe.workers(), buf, positions)
        };
        let (shared, a, pa) = batch(0);
        let (own, b, pb) = batch(3);
        assert_eq!(shared, rayon::current_num_threads());
        assert_eq!(own, 3);
        assert_eq!(a.len(), 8 * (4 + 2) * 3 * 32 * 32);
        assert!(a == b && pa == pb, "data.workers changed a batch");
    }
}
