//! The direct 3×3 convolution kernel (`ops::direct`, AVX-512F) against the im2col + gemm path
//! of the same op (`ops::cpu::conv2d` on `ConvRoute::im2col`): output, input gradient and
//! weight gradient of `L = Σ r ⊙ conv(x)` on every geometry the kernel takes, including sizes
//! whose padded-width output is not a multiple of 16 lanes, a 1×1 image, the 3-channel stem, and
//! channel counts not a multiple of its 8-channel block.
//!
//! Tolerance `1e-5 · max|ref| + 1e-6`: both sides are f32 with different summation orders (the
//! kernel sums channel by channel and tap by tap; gemm in blocks of its own).

use dfdx::prelude::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use spatial_reasoning::ops::{cpu, direct, ConvWeight};
use spatial_reasoning::Precision;

fn randv(rng: &mut ChaCha8Rng, n: usize) -> Vec<f32> {
    (0..n).map(|_| rng.gen_range(-1.0f32..1.0)).collect()
}

fn run<const I: usize, const O: usize>(
    (b, h, w): (usize, usize, usize),
    xv: &[f32],
    wv: &[f32],
    r: &[f32],
    use_direct: bool,
) -> [Vec<f32>; 3] {
    let route = if use_direct {
        cpu::ConvRoute::fastest(Precision::F32)
    } else {
        cpu::ConvRoute::im2col(Precision::F32)
    };
    let dev = Cpu::default();
    let x = dev.tensor_from_vec(xv.to_vec(), (b, Const::<I>, h, w));
    let wt: ConvWeight<O, I, 3, Cpu> =
        dev.tensor_from_vec(wv.to_vec(), (Const, Const, Const, Const));
    let y = cpu::conv2d(x.clone().leaky_traced(), &wt, 1, 1, route).unwrap();
    let yv = y.as_vec();
    let rt = dev.tensor_from_vec(r.to_vec(), *y.shape());
    let g = y.try_mul(rt).unwrap().sum().backward();
    [yv, g.get(&x).as_vec(), g.get(&wt).as_vec()]
}

fn check<const I: usize, const O: usize>(dims: (usize, usize, usize)) {
    let (b, h, w) = dims;
    let mut rng = ChaCha8Rng::seed_from_u64((I * 131 + O * 7 + h * 3 + w) as u64);
    let xv = randv(&mut rng, b * I * h * w);
    let wv = randv(&mut rng, O * I * 9);
    let r = randv(&mut rng, b * O * h * w);
    let reference = run::<I, O>(dims, &xv, &wv, &r, false);
    let got = run::<I, O>(dims, &xv, &wv, &r, true);
    for (name, (g, want)) in ["y", "dx", "dw"].iter().zip(got.iter().zip(&reference)) {
        let scale = want.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        let tol = 1e-5 * scale + 1e-6;
        for (i, (a, e)) in g.iter().zip(want).enumerate() {
            assert!(
                (a - e).abs() <= tol,
                "{I}->{O} {dims:?} {name}[{i}]: direct {a}, im2col {e} (tolerance {tol})"
            );
        }
    }
}

#[test]
fn direct_kernel_matches_im2col_path() {
    if !direct::available() {
        // The kernel cannot run here, so there is nothing of it to compare; what this CPU runs
        // instead must be the im2col route whatever the switch says.
        eprintln!("SKIPPED the direct kernel (no AVX-512F on this CPU); checking the fallback");
        let dims = (2, 9, 7);
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        let (xv, wv, r) = (
            randv(&mut rng, 2 * 5 * 9 * 7),
            randv(&mut rng, 7 * 5 * 9),
            randv(&mut rng, 2 * 7 * 9 * 7),
        );
        let on = run::<5, 7>(dims, &xv, &wv, &r, true);
        let off = run::<5, 7>(dims, &xv, &wv, &r, false);
        assert_eq!(
            on, off,
            "without AVX-512F both routes must be the im2col one"
        );
        return;
    }
    check::<16, 16>((2, 32, 32)); // ResNet stage 1
    check::<32, 32>((2, 16, 16)); // stage 2
    check::<64, 64>((2, 8, 8)); // stage 3
    check::<3, 16>((3, 32, 32)); // the stem
    check::<16, 16>((1, 64, 64)); // the authors' 64×64 inputs
    check::<5, 7>((2, 9, 7)); // odd everything: 9·9 = 81 outputs, 7 channels of an 8-block
    check::<8, 12>((2, 1, 1)); // 1×1 image: only the centre tap sees data
    check::<4, 9>((1, 3, 20)); // wide rows, 9 = one block + 1
    check::<3, 5>((2, 11, 1)); // one-pixel rows: a 16-lane vector spans up to 7 output rows
    check::<6, 8>((1, 7, 2)); // two-pixel rows
}
