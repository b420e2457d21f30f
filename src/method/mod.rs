//! Relational reasoning with the spatial-reasoning auxiliary task: one code path.
//!
//! RR is SR with α = 0 and P = 0: the same [`SslModel`], the same [`PairBatch`], the same
//! [`forward_loss`]. A relation head ([`head`]) with one output reads only a logit; with three it
//! reads `(Δrow, Δcol, logit)`. Its aggregation and widths come from the config ([`HeadSpec`]).

pub mod head;
pub mod inspect;
pub mod losses;
pub mod pairs;

use dfdx::nn::tensor_collection::{ModuleVisitor, TensorCollection};
use dfdx::prelude::*;

use crate::config::{PatchGeometry, RelationLoss, TargetPolicy, ValidConfig};
use crate::models::{Backbone, Images};
pub use head::{aggregate, HeadSpec, RelationHead};
pub use pairs::{pair_index, PairIndex};

/// A taped tensor on device `D` (training mode).
pub type Taped<S, D> = Tensor<S, f32, D, OwnedTape<f32, D>>;

/// Backbone and relation head in one struct, so one gradient set and one optimiser cover both.
/// Parameter names: `backbone.…`, `head.l1.weight`, ….
#[derive(Clone, Debug)]
pub struct SslModel<B, H> {
    pub backbone: B,
    pub head: H,
}

impl<B, H, D> TensorCollection<f32, D> for SslModel<B, H>
where
    B: TensorCollection<f32, D>,
    H: TensorCollection<f32, D>,
    D: Device<f32>,
{
    type To<E2: Dtype, D2: Device<E2>> = SslModel<B::To<E2, D2>, H::To<E2, D2>>;
    fn iter_tensors<V: ModuleVisitor<Self, f32, D>>(
        visitor: &mut V,
    ) -> Result<Option<Self::To<V::E2, V::D2>>, V::Err> {
        visitor.visit_fields(
            (
                Self::module("backbone", |s| &s.backbone, |s| &mut s.backbone),
                Self::module("head", |s| &s.head, |s| &mut s.head),
            ),
            |(backbone, head)| SslModel { backbone, head },
        )
    }
}

/// The host-side description of one minibatch's pairs and targets.
///
/// Items are laid out as `views` slots of `batch` images (slot-major), then `patches` slots of
/// `batch` images: item `v·B + b` is view `v` of image `b`; item `K·B + q·B + b` is patch `q`.
#[derive(Clone, Debug)]
pub struct PairBatch {
    pub batch: usize,
    pub views: usize,
    pub patches: usize,
    pub index: PairIndex,
    /// Same/different target per pair (1 = same image).
    pub same: Vec<f32>,
    /// Distance target per pair, `(Δrow, Δcol)` flattened to `2·M` values.
    pub offsets: Vec<f32>,
    /// Weight of each distance element (0 or 1), `2·M` values.
    pub offset_weight: Vec<f32>,
}

impl PairBatch {
    /// Build pairs for `batch` images with `views` views and `positions.len() / batch` patches
    /// each. `positions[q·B + b]` is the top-left `(row, col)` of patch `q` of image `b` in
    /// image pixels; `geometry` gives S and p.
    ///
    /// Distance targets (SPEC §3): positive patch pair `(i, j)` → `((r_i − r_j)/(S − p),
    /// (c_i − c_j)/(S − p))`. Under [`TargetPolicy::Reference`] every other pair also carries the
    /// MSE term, with `(0, 0)` for positive view pairs and `(1, 1)` for every negative pair; under
    /// [`TargetPolicy::PositivePatchesOnly`] only positive patch pairs do.
    pub fn new(
        batch: usize,
        views: usize,
        positions: &[(usize, usize)],
        geometry: &PatchGeometry,
        policy: TargetPolicy,
    ) -> Self {
        let patches = positions.len().checked_div(batch).unwrap_or(0);
        let view_pairs = pair_index(batch, views, 0);
        let patch_pairs = pair_index(batch, patches, views * batch);
        let n_view = view_pairs.len();
        let mut index = view_pairs;
        index.left.extend(&patch_pairs.left);
        index.right.extend(&patch_pairs.right);
        index.positive.extend(&patch_pairs.positive);
        index.slots.extend(&patch_pairs.slots);
        let m = index.len();
        let mut same = Vec::with_capacity(m);
        let mut offsets = Vec::with_capacity(2 * m);
        let mut offset_weight = Vec::with_capacity(2 * m);
        let denom = geometry.range().max(1) as f32;
        for k in 0..m {
            let pos = index.positive[k];
            same.push(if pos { 1.0 } else { 0.0 });
            let is_patch = k >= n_view;
            let (target, weight) = if is_patch && pos {
                let b = index.left[k] % batch;
                let (qi, qj) = index.slots[k];
                let (ri, ci) = positions[qi * batch + b];
                let (rj, cj) = positions[qj * batch + b];
                (
                    [
                        (ri as f32 - rj as f32) / denom,
                        (ci as f32 - cj as f32) / denom,
                    ],
                    1.0,
                )
            } else {
                let t = if pos { [0.0, 0.0] } else { [1.0, 1.0] };
                let w = match policy {
                    TargetPolicy::Reference => 1.0,
                    TargetPolicy::PositivePatchesOnly => 0.0,
                };
                (t, w)
            };
            offsets.extend_from_slice(&target);
            offset_weight.extend_from_slice(&[weight, weight]);
        }
        Self {
            batch,
            views,
            patches,
            index,
            same,
            offsets,
            offset_weight,
        }
    }

    /// Number of backbone inputs: `B·(K + P)`.
    pub fn items(&self) -> usize {
        self.batch * (self.views + self.patches)
    }
}

/// Loss weights and choices read from the config.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LossSettings {
    pub alpha: f32,
    pub loss: RelationLoss,
    pub focal_gamma: f32,
    pub focal_alpha: f32,
}

impl LossSettings {
    pub fn from_config(cfg: &ValidConfig) -> Self {
        Self {
            alpha: cfg.method.alpha,
            loss: cfg.method.loss,
            focal_gamma: cfg.method.focal_gamma,
            focal_alpha: cfg.method.focal_alpha,
        }
    }
}

/// Host-side statistics of one forward pass.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct StepStats {
    pub loss: f32,
    pub loss_relation: f32,
    pub loss_distance: f32,
    /// Fraction of pairs whose logit has the sign of its target.
    pub relation_acc: f32,
}

/// All views and patches through the backbone in one pass, all pairs through the head together
/// (aggregated with the head's [`crate::config::Aggregation`]), and the loss
/// `relation + α · distance`.
///
/// # Shapes
/// `x`: `(B·(K+P), 3, S, S)` in the item order of [`PairBatch`]; features `(B·(K+P), F)`; head
/// input `(M, 2F)` (cat) or `(M, F)`; head output `(M, 1)` (RR) or `(M, 3)` (SR).
pub fn forward_loss<B, D>(
    model: &mut SslModel<B, RelationHead<f32, D>>,
    x: Images<D, OwnedTape<f32, D>>,
    pairs: &PairBatch,
    settings: &LossSettings,
) -> Result<(Taped<Rank0, D>, StepStats), D::Err>
where
    B: Backbone<D>,
    D: Device<f32>,
{
    let outputs = model.head.outputs();
    assert!(
        outputs == 1 || outputs == 3,
        "relation head has 1 (RR) or 3 (SR) outputs"
    );
    let dev = x.device().clone();
    let z = model.backbone.forward_train(x)?;
    let m = pairs.index.len();
    let left = dev.tensor_from_vec(pairs.index.left.clone(), (m,));
    let right = dev.tensor_from_vec(pairs.index.right.clone(), (m,));
    let (z, tape) = z.split_tape();
    let zl = z.clone().put_tape(tape).try_gather(left)?;
    let zr = z.retaped::<OwnedTape<f32, D>>().try_gather(right)?;
    let agg = aggregate(zl, zr, model.head.aggregation)?;
    let out = model.head.forward_train(agg)?;
    let same = dev.tensor_from_vec(pairs.same.clone(), (m,));

    let (out, tape) = out.split_tape();
    let logit_col = outputs - 1;
    let logits = out
        .clone()
        .put_tape(tape)
        .try_slice((.., logit_col..logit_col + 1))?
        .try_reshape_like(&(m,))?;
    let logit_values = logits.as_vec();
    let relation = match settings.loss {
        RelationLoss::Bce => losses::bce(logits, same),
        RelationLoss::Focal => {
            losses::focal(logits, same, settings.focal_gamma, settings.focal_alpha)
        }
    };
    let loss_relation = relation.as_vec()[0];
    let correct = logit_values
        .iter()
        .zip(&pairs.same)
        .filter(|(&l, &y)| (l > 0.0) == (y > 0.5))
        .count();
    let mut stats = StepStats {
        loss: loss_relation,
        loss_relation,
        loss_distance: 0.0,
        relation_acc: if m == 0 {
            0.0
        } else {
            correct as f32 / m as f32
        },
    };
    if outputs == 1 || settings.alpha == 0.0 {
        return Ok((relation, stats));
    }
    let pred = out
        .retaped::<OwnedTape<f32, D>>()
        .try_slice((.., 0..2))?
        .realize::<(usize, Const<2>)>();
    let target = dev.tensor_from_vec(pairs.offsets.clone(), (m, Const::<2>));
    let distance = losses::weighted_mse(pred, target, &pairs.offset_weight);
    stats.loss_distance = distance.as_vec()[0];
    stats.loss = stats.loss_relation + settings.alpha * stats.loss_distance;
    let loss = relation + distance * settings.alpha;
    Ok((loss, stats))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::OverlapRule;

    #[test]
    fn pair_batch_targets_follow_the_reference_policy() {
        // B = 2 images, K = 2 views, P = 2 patches of side 4 in an 8×8 image (S − p = 4).
        let positions = [(0, 0), (4, 0), (0, 4), (4, 4)]; // q0: b0 (0,0), b1 (4,0); q1: b0 (0,4), b1 (4,4)
        let g = PatchGeometry::resolve(8, 4, 2, OverlapRule::Forbidden).unwrap();
        let pb = PairBatch::new(2, 2, &positions, &g, TargetPolicy::Reference);
        assert_eq!(pb.items(), 8);
        // B·K(K−1) view pairs + B·P(P−1) patch pairs = 4 + 4
        assert_eq!(pb.index.len(), 8);
        // view pairs first: 2 positive (target 0,0), 2 negative (1,1)
        assert_eq!(&pb.offsets[..8], &[0.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0]);
        // patch pairs: positives carry the normalised offset of patch 0 minus patch 1
        assert_eq!(&pb.offsets[8..12], &[0.0, -1.0, 0.0, -1.0]);
        assert_eq!(&pb.offsets[12..16], &[1.0, 1.0, 1.0, 1.0]);
        assert!(pb.offset_weight.iter().all(|&w| w == 1.0));
        assert_eq!(pb.same, vec![1.0, 1.0, 0.0, 0.0, 1.0, 1.0, 0.0, 0.0]);
        // patch items are offset past the views
        assert!(pb.index.left[4..].iter().all(|&i| i >= 4));

        let only = PairBatch::new(2, 2, &positions, &g, TargetPolicy::PositivePatchesOnly);
        let w: Vec<f32> = only.offset_weight.iter().step_by(2).copied().collect();
        assert_eq!(w, vec![0.0, 0.0, 0.0, 0.0, 1.0, 1.0, 0.0, 0.0]);
    }

    #[test]
    fn rr_has_no_patch_pairs() {
        let g = PatchGeometry::resolve(32, 12, 0, OverlapRule::Forbidden).unwrap();
        let pb = PairBatch::new(4, 3, &[], &g, TargetPolicy::Reference);
        assert_eq!(pb.patches, 0);
        assert_eq!(pb.index.len(), 4 * 3 * 2);
        assert_eq!(pb.items(), 12);
    }
}
