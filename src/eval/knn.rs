//! Weighted k-nearest-neighbour classification (InstDisc / the RR code's `kNN`): cosine
//! similarity on L2-normalised features; each of the k most similar training rows votes for its
//! class with weight `exp(sim / T)`; the class with the largest total wins.
//!
//! Similarities are computed by blocks of test rows with one matrix product per block
//! (`gemm`, multi-threaded), followed by a parallel top-k selection per row.

use rayon::prelude::*;

use crate::ops::matmul::{matmul, MatMut, MatRef, Threads};

use super::features::FeatureSet;
use super::{EvalError, ProgressEvent, Result};
use crate::config::EvalConfig;

/// k and temperature. `Default` = SPEC §4 (k = 200, T = 0.1).
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct KnnConfig {
    pub k: usize,
    pub temperature: f32,
}

impl Default for KnnConfig {
    fn default() -> Self {
        Self {
            k: 200,
            temperature: 0.1,
        }
    }
}

impl KnnConfig {
    /// From the experiment's [`EvalConfig`].
    pub fn from_eval(cfg: &EvalConfig) -> Self {
        Self {
            k: cfg.knn_k,
            temperature: cfg.knn_temperature,
        }
    }
}

/// The training side of kNN: L2-normalised rows and their labels.
#[derive(Clone, Debug)]
pub struct KnnIndex {
    dim: usize,
    classes: usize,
    /// `n × dim`, each row of unit length (or zero where the input row was zero).
    rows: Vec<f32>,
    labels: Vec<u16>,
}

/// L2-normalise every row in place; an all-zero row stays zero (its similarities are 0).
fn normalise_rows(data: &mut [f32], dim: usize) {
    data.par_chunks_mut(dim).for_each(|r| {
        let norm = r.iter().map(|v| v * v).sum::<f32>().sqrt();
        if norm > 0.0 {
            r.iter_mut().for_each(|v| *v /= norm);
        }
    });
}

/// Keep the k largest `(sim, index)` pairs of a row; ties go to the lower training index.
fn top_k(sims: &[f32], k: usize, heap: &mut Vec<(f32, u32)>) {
    // `heap` is a min-heap on (sim, −index): its root is the weakest kept neighbour.
    heap.clear();
    let weaker = |a: (f32, u32), b: (f32, u32)| a.0 < b.0 || (a.0 == b.0 && a.1 > b.1);
    let sift_down = |heap: &mut Vec<(f32, u32)>, mut i: usize| loop {
        let (l, r) = (2 * i + 1, 2 * i + 2);
        let mut w = i;
        if l < heap.len() && weaker(heap[l], heap[w]) {
            w = l;
        }
        if r < heap.len() && weaker(heap[r], heap[w]) {
            w = r;
        }
        if w == i {
            break;
        }
        heap.swap(i, w);
        i = w;
    };
    for (j, &s) in sims.iter().enumerate() {
        let item = (s, j as u32);
        if heap.len() < k {
            heap.push(item);
            let mut i = heap.len() - 1;
            while i > 0 {
                let p = (i - 1) / 2;
                if weaker(heap[i], heap[p]) {
                    heap.swap(i, p);
                    i = p;
                } else {
                    break;
                }
            }
        } else if weaker(heap[0], item) {
            heap[0] = item;
            sift_down(heap, 0);
        }
    }
}

impl KnnIndex {
    /// Normalise and keep the training rows.
    pub fn new(train: &FeatureSet) -> Result<Self> {
        train.check()?;
        if train.n == 0 {
            return Err(EvalError::invalid("kNN", "no training rows"));
        }
        let mut rows = train.data.clone();
        normalise_rows(&mut rows, train.dim);
        Ok(Self {
            dim: train.dim,
            classes: train.classes,
            rows,
            labels: train.labels.clone(),
        })
    }

    /// Class votes of `m` query rows: `votes[q·C + c] = Σ_{j ∈ topk(q), y_j = c} exp(sim_qj / T)`,
    /// where `sim` is the cosine similarity and `k` is clamped to the number of training rows.
    ///
    /// # Shapes
    /// `queries`: `m × F` row-major → `m × C` row-major, with `C = max(classes)` of index and
    /// the `classes` argument.
    pub fn votes(
        &self,
        queries: &[f32],
        classes: usize,
        cfg: &KnnConfig,
        progress: &mut dyn FnMut(ProgressEvent),
    ) -> Result<Vec<f32>> {
        if cfg.k == 0 {
            return Err(EvalError::invalid("kNN k", "0: must be at least 1"));
        }
        if !(cfg.temperature.is_finite() && cfg.temperature > 0.0) {
            return Err(EvalError::invalid(
                "kNN temperature",
                format!("{}: must be finite and > 0", cfg.temperature),
            ));
        }
        if !queries.len().is_multiple_of(self.dim) {
            return Err(EvalError::invalid(
                "kNN queries",
                format!(
                    "{} values are not a whole number of rows of dim {}",
                    queries.len(),
                    self.dim
                ),
            ));
        }
        let c = classes.max(self.classes);
        let m = queries.len() / self.dim;
        let n = self.labels.len();
        let k = cfg.k.min(n);
        let mut q = queries.to_vec();
        normalise_rows(&mut q, self.dim);
        let mut votes = vec![0f32; m * c];
        // Block of test rows per matrix product: bounds the similarity buffer to ~64 MB.
        let block = (16 * 1024 * 1024 / n).clamp(1, 1024);
        let mut sims = vec![0f32; block.min(m) * n];
        let mut start = 0;
        while start < m {
            let b = block.min(m - start);
            let s = &mut sims[..b * n];
            // sims (b×n) = Q (b×F) · Rᵀ (F×n); Rᵀ[f][j] = R[j·F + f].
            matmul(
                (b, n, self.dim),
                MatMut::new(s, n, 1),
                false,
                MatRef::new(&q[start * self.dim..], self.dim, 1),
                MatRef::new(&self.rows, 1, self.dim),
                Threads::Rayon,
            );
            s.par_chunks(n)
                .zip(votes[start * c..(start + b) * c].par_chunks_mut(c))
                .for_each_init(
                    || Vec::with_capacity(k),
                    |heap, (row, out)| {
                        top_k(row, k, heap);
                        for &(sim, j) in heap.iter() {
                            out[self.labels[j as usize] as usize] += (sim / cfg.temperature).exp();
                        }
                    },
                );
            start += b;
            progress(ProgressEvent::Knn {
                done: start,
                total: m,
            });
        }
        Ok(votes)
    }
}

/// Outcome of [`knn_classify`].
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct KnnResult {
    /// Top-1 accuracy (fraction) on the test rows.
    pub acc: f32,
    /// k actually used (clamped to the number of training rows).
    pub k: usize,
    pub temperature: f32,
    pub n_train: usize,
    pub n_test: usize,
    /// Predicted class of every test row (highest vote; lowest class index on ties).
    pub predictions: Vec<u16>,
}

/// Weighted kNN accuracy of `test` against `train` (no training).
///
/// # Shapes
/// `train`: `N × F`, `test`: `M × F`; one `block × N` similarity matrix at a time.
pub fn knn_classify(
    train: &FeatureSet,
    test: &FeatureSet,
    cfg: &KnnConfig,
    progress: &mut dyn FnMut(ProgressEvent),
) -> Result<KnnResult> {
    test.check()?;
    if test.dim != train.dim {
        return Err(EvalError::invalid(
            "kNN",
            format!(
                "train features have dim {}, test features {}",
                train.dim, test.dim
            ),
        ));
    }
    if test.n == 0 {
        return Err(EvalError::invalid("kNN", "no test rows"));
    }
    let index = KnnIndex::new(train)?;
    let classes = train.classes.max(test.classes);
    let votes = index.votes(&test.data, classes, cfg, progress)?;
    let predictions: Vec<u16> = votes
        .chunks_exact(classes)
        .map(|v| {
            let mut best = 0;
            for (j, &x) in v.iter().enumerate() {
                if x > v[best] {
                    best = j;
                }
            }
            best as u16
        })
        .collect();
    let correct = predictions
        .iter()
        .zip(&test.labels)
        .filter(|(p, l)| p == l)
        .count();
    Ok(KnnResult {
        acc: correct as f32 / test.n as f32,
        k: cfg.k.min(train.n),
        temperature: cfg.temperature,
        n_train: train.n,
        n_test: test.n,
        predictions,
    })
}
