//! Losses of relational and spatial reasoning (SPEC §2–3).

use dfdx::prelude::*;

/// Binary cross-entropy with logits, mean-reduced:
/// `mean(max(x, 0) − x·y + log(1 + exp(−|x|)))`.
///
/// # Shapes
/// `logits`, `targets`: `(M,)`.
pub fn bce<D: Device<f32>, T: Tape<f32, D>>(
    logits: Tensor<(usize,), f32, D, T>,
    targets: Tensor<(usize,), f32, D>,
) -> Tensor<Rank0, f32, D, T> {
    binary_cross_entropy_with_logits_loss(logits, targets)
}

/// Focal loss on logits (RR paper): `mean(−α_t · (1 − p_t)^γ · log p_t)` with
/// `p_t = σ(x)` for positives and `1 − σ(x)` for negatives, `α_t = α·y + (1 − α)(1 − y)`.
/// With γ = 0 and α = 0.5 it is half the BCE.
///
/// # Shapes
/// `logits`, `targets`: `(M,)`.
pub fn focal<D: Device<f32>, T: Tape<f32, D>>(
    logits: Tensor<(usize,), f32, D, T>,
    targets: Tensor<(usize,), f32, D>,
    gamma: f32,
    alpha: f32,
) -> Tensor<Rank0, f32, D, T> {
    let dev = logits.device().clone();
    let y = targets.as_vec();
    let alpha_t: Vec<f32> = y
        .iter()
        .map(|&y| alpha * y + (1.0 - alpha) * (1.0 - y))
        .collect();
    let alpha_t = dev.tensor_from_vec(alpha_t, *targets.shape());
    // 1 − p_t = σ(x)·(1 − 2y) + y
    let one_minus_2y =
        dev.tensor_from_vec(y.iter().map(|&y| 1.0 - 2.0 * y).collect(), *targets.shape());
    let (x, tape) = logits.split_tape();
    let per = x.clone().put_tape(tape).bce_with_logits(targets.clone());
    let loss_terms = if gamma == 0.0 {
        per * alpha_t
    } else {
        let q = x.retaped::<T>().sigmoid() * one_minus_2y + targets;
        // clamp away from 0 so that d/dq q^γ stays finite for γ < 1
        let w = q.clamp(1e-12, 1.0).powf(gamma);
        per * (w * alpha_t)
    };
    loss_terms.mean()
}

/// Weighted mean squared error: `Σ w·(p − t)² / Σ w` (0 when every weight is 0). With all weights
/// 1 it is PyTorch's `MSELoss` (mean over all elements).
///
/// # Shapes
/// `pred`, `target`, `weight`: `(M, 2)`.
pub fn weighted_mse<D: Device<f32>, T: Tape<f32, D>>(
    pred: Tensor<(usize, Const<2>), f32, D, T>,
    target: Tensor<(usize, Const<2>), f32, D>,
    weight: &[f32],
) -> Tensor<Rank0, f32, D, T> {
    let total: f32 = weight.iter().sum();
    let dev = pred.device().clone();
    let w = dev.tensor_from_vec(weight.to_vec(), *pred.shape());
    let sq = (pred - target).square() * w;
    sq.sum() / total.max(1.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t1(dev: &Cpu, v: &[f32]) -> Tensor<(usize,), f32, Cpu> {
        dev.tensor_from_vec(v.to_vec(), (v.len(),))
    }

    /// Closed form, computed by hand: terms 0.126928, 0.313262, 0.974077, 3.048587; mean 1.115713
    /// (the value `F.binary_cross_entropy_with_logits` gives for these inputs).
    #[test]
    fn bce_matches_closed_form() {
        let dev: Cpu = Default::default();
        let x = [2.0f32, -1.0, 0.5, -3.0];
        let y = [1.0f32, 0.0, 0.0, 1.0];
        let want: f32 = x
            .iter()
            .zip(&y)
            .map(|(&x, &y)| x.max(0.0) - x * y + (1.0 + (-x.abs()).exp()).ln())
            .sum::<f32>()
            / 4.0;
        let got = bce(t1(&dev, &x), t1(&dev, &y)).array();
        assert!((got - want).abs() < 1e-6, "{got} vs {want}");
        assert!((want - 1.115713).abs() < 1e-5);
    }

    #[test]
    fn focal_reduces_to_half_bce_and_downweights_easy_pairs() {
        let dev: Cpu = Default::default();
        let x = [2.0f32, -1.0, 0.5, -3.0];
        let y = [1.0f32, 0.0, 0.0, 1.0];
        let b = bce(t1(&dev, &x), t1(&dev, &y)).array();
        let f0 = focal(t1(&dev, &x), t1(&dev, &y), 0.0, 0.5).array();
        assert!((f0 - 0.5 * b).abs() < 1e-6);
        // γ = 2: the easy first pair (p_t = σ(2) = 0.8808) is weighted (1 − 0.8808)^2.
        let f2 = focal(t1(&dev, &x[..1]), t1(&dev, &y[..1]), 2.0, 0.5).array();
        let pt = 1.0 / (1.0 + (-2.0f32).exp());
        let want = 0.5 * (1.0 - pt).powi(2) * -(pt.ln());
        assert!((f2 - want).abs() < 1e-6, "{f2} vs {want}");
    }

    #[test]
    fn focal_gradient_matches_finite_difference() {
        let dev: Cpu = Default::default();
        let y = [1.0f32, 0.0, 1.0];
        let x0 = [0.3f32, -0.7, 1.2];
        let x = t1(&dev, &x0);
        let g = focal(x.leaky_trace(), t1(&dev, &y), 2.0, 0.25).backward();
        let ga = g.get(&x).as_vec();
        for i in 0..3 {
            let eps = 1e-3f32;
            let mut xp = x0;
            xp[i] += eps;
            let mut xm = x0;
            xm[i] -= eps;
            let fp = focal(t1(&dev, &xp), t1(&dev, &y), 2.0, 0.25).array();
            let fm = focal(t1(&dev, &xm), t1(&dev, &y), 2.0, 0.25).array();
            let fd = (fp - fm) / (2.0 * eps);
            assert!((fd - ga[i]).abs() < 1e-3, "i={i}: fd {fd} vs {}", ga[i]);
        }
    }

    #[test]
    fn weighted_mse_masks_and_means() {
        let dev: Cpu = Default::default();
        let p = dev.tensor_from_vec(vec![1.0f32, 2.0, 3.0, 4.0], (2, Const::<2>));
        let t = dev.tensor_from_vec(vec![0.0f32, 0.0, 0.0, 0.0], (2, Const::<2>));
        let all = weighted_mse(p.clone(), t.clone(), &[1.0; 4]).array();
        assert!((all - 30.0 / 4.0).abs() < 1e-6);
        let second = weighted_mse(p.clone(), t.clone(), &[0.0, 0.0, 1.0, 1.0]).array();
        assert!((second - 25.0 / 2.0).abs() < 1e-6);
        assert_eq!(weighted_mse(p, t, &[0.0; 4]).array(), 0.0);
    }
}
