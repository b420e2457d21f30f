//! Pair construction with roll-shifted negatives (SPEC §2).
//!
//! Items are laid out slot-major: item `slot * batch + b` is slot `slot` (a view or a patch) of
//! image `b`. For every slot pair `i < j` (in lexicographic order) there are `batch` positive
//! pairs `(i·B + b, j·B + b)` and `batch` negative pairs `(i·B + b, j·B + (b − s) mod B)`, where the
//! shift `s` starts at 1, grows by 1 for each slot pair and wraps back to 1 when it reaches `B`, so
//! no image is ever paired with itself.

/// Indices of the pairs of one minibatch into a slot-major item list.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PairIndex {
    /// Left item of each pair.
    pub left: Vec<usize>,
    /// Right item of each pair.
    pub right: Vec<usize>,
    /// Whether both items come from the same image.
    pub positive: Vec<bool>,
    /// Slot of the left and right item of each pair (used for patch offsets).
    pub slots: Vec<(usize, usize)>,
}

impl PairIndex {
    pub fn len(&self) -> usize {
        self.left.len()
    }
    pub fn is_empty(&self) -> bool {
        self.left.is_empty()
    }
    /// Image index (in `0..batch`) of the left and right item of pair `k`.
    pub fn images(&self, k: usize, batch: usize) -> (usize, usize) {
        (self.left[k] % batch, self.right[k] % batch)
    }
}

/// The pairs for `slots` slots of `batch` images, offset by `base` items (so that patch pairs can
/// index past the views in one feature matrix).
///
/// Returns `batch · slots · (slots − 1)` pairs, exactly half positive.
///
/// # Panics
/// If `batch < 2` while `slots ≥ 2` (no negative exists); configs reject this before training.
pub fn pair_index(batch: usize, slots: usize, base: usize) -> PairIndex {
    let mut out = PairIndex::default();
    if slots < 2 {
        return out;
    }
    assert!(
        batch >= 2,
        "roll-shifted negatives need at least two images"
    );
    let mut shift = 1;
    let mut negatives = PairIndex::default();
    for i in 0..slots {
        for j in (i + 1)..slots {
            for b in 0..batch {
                out.left.push(base + i * batch + b);
                out.right.push(base + j * batch + b);
                out.positive.push(true);
                out.slots.push((i, j));
                negatives.left.push(base + i * batch + b);
                negatives
                    .right
                    .push(base + j * batch + (b + batch - shift) % batch);
                negatives.positive.push(false);
                negatives.slots.push((i, j));
            }
            shift += 1;
            if shift >= batch {
                shift = 1;
            }
        }
    }
    out.left.extend(negatives.left);
    out.right.extend(negatives.right);
    out.positive.extend(negatives.positive);
    out.slots.extend(negatives.slots);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_half_positive_no_self_pairs() {
        for (b, k) in [(2, 2), (3, 4), (8, 4), (5, 7), (128, 4), (4, 9)] {
            let p = pair_index(b, k, 0);
            assert_eq!(p.len(), b * k * (k - 1), "B={b} K={k}");
            let pos = p.positive.iter().filter(|&&x| x).count();
            assert_eq!(pos * 2, p.len());
            for n in 0..p.len() {
                let (l, r) = p.images(n, b);
                assert_eq!(l == r, p.positive[n], "pair {n}: images {l},{r}");
                assert_ne!(p.left[n], p.right[n]);
                let (si, sj) = p.slots[n];
                assert!(si < sj);
                assert_eq!(p.left[n] / b, si);
                assert_eq!(p.right[n] / b, sj);
            }
        }
    }

    #[test]
    fn shift_grows_and_wraps() {
        // B = 3, K = 4: six slot pairs, shifts 1, 2, 1, 2, 1, 2.
        let p = pair_index(3, 4, 0);
        let half = p.len() / 2;
        let shifts: Vec<usize> = (0..6)
            .map(|sp| {
                let n = half + sp * 3; // first negative of each slot pair (b = 0)
                let (l, r) = p.images(n, 3);
                (l + 3 - r) % 3
            })
            .collect();
        assert_eq!(shifts, vec![1, 2, 1, 2, 1, 2]);
    }

    #[test]
    fn base_offsets_items() {
        let p = pair_index(4, 2, 100);
        assert!(p
            .left
            .iter()
            .chain(&p.right)
            .all(|&i| (100..108).contains(&i)));
        assert!(pair_index(4, 1, 0).is_empty());
        assert!(pair_index(4, 0, 0).is_empty());
    }
}
