//! The bf16 matrix product (`ops::bf16`): the AVX-512 BF16 kernel and the portable kernel
//! against an f64 product of the same bf16-rounded inputs, over the operand layouts the
//! convolution uses (lanes contiguous, pairs contiguous, neither), tails in every dimension,
//! accumulation, and reduction lengths longer than one packing block.

use spatial_reasoning::ops::bf16::{self, Mat, PackedB};

fn lcg(seed: u64, n: usize) -> Vec<f32> {
    let mut s = seed;
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

/// (m, n, k) and whether A is stored lanes-contiguous (`rs = 1`), pairs-contiguous (`cs = 1`),
/// or with neither stride 1; B with k contiguous (`rs = 1`) or not.
fn check(m: usize, n: usize, k: usize, a_layout: u8, b_krows: bool, accumulate: bool) {
    let a_data = lcg(1 + m as u64, m * k * 2 + 5);
    let b_data = lcg(7 + n as u64, k * n + 3);
    let a = match a_layout {
        0 => Mat::new(&a_data, 1, m),     // A[i][p] = data[i + p·m]
        1 => Mat::new(&a_data, k, 1),     // A[i][p] = data[i·k + p]
        _ => Mat::new(&a_data, 2 * k, 2), // every other element of rows 2k apart
    };
    let b = if b_krows {
        Mat::new(&b_data, 1, k) // B[p][j] = data[p + j·k]
    } else {
        Mat::new(&b_data, n, 1) // B[p][j] = data[p·n + j]
    };
    let ld = m + 3;
    let init = lcg(99, ld * n);
    let mut reference = vec![0.0f64; ld * n];
    let mut bound = vec![0.0f64; ld * n];
    for i in 0..m {
        for j in 0..n {
            let (mut s, mut t) = (0.0f64, 0.0f64);
            for p in 0..k {
                let x = bf16::round_bf16(a.data[i * a.rs + p * a.cs]) as f64;
                let y = bf16::round_bf16(b.data[p * b.rs + j * b.cs]) as f64;
                s += x * y;
                t += (x * y).abs();
            }
            let c0 = if accumulate {
                init[i + j * ld] as f64
            } else {
                0.0
            };
            reference[i + j * ld] = c0 + s;
            bound[i + j * ld] = (t + c0.abs()) * (k as f64 + 1.0) * 6e-8 + 1e-7;
        }
    }
    for portable in [false, true] {
        let kernel = if portable {
            bf16::Kernel::Portable
        } else {
            bf16::Kernel::Best
        };
        let packed = PackedB::new(kernel, k, n, b);
        let mut dst = init.clone();
        bf16::matmul(kernel, m, &mut dst, ld, accumulate, a, &packed);
        for j in 0..n {
            for i in 0..ld {
                let got = dst[i + j * ld];
                if i >= m {
                    assert_eq!(got, init[i + j * ld], "row {i} past m={m} was written");
                    continue;
                }
                let (r, tol) = (reference[i + j * ld], bound[i + j * ld]);
                assert!(
                    (got as f64 - r).abs() <= tol,
                    "m{m} n{n} k{k} layout {a_layout} b_krows {b_krows} acc {accumulate} \
                     portable {portable}: ({i},{j}) = {got}, want {r} ± {tol}"
                );
            }
        }
    }
}

#[test]
fn matches_f64_reference_on_every_layout_and_tail() {
    for &(m, n, k) in &[
        (1, 1, 1),
        (16, 8, 2),
        (32, 16, 144),
        (37, 13, 27),
        (64, 9, 300),
        (100, 21, 257),
        (17, 3, 5),
        (16, 40, 33), // 16-row panels (m ≤ 16), 16-column tiles and a tail
        (9, 17, 130),
    ] {
        for a_layout in 0..3 {
            for b_krows in [true, false] {
                for accumulate in [false, true] {
                    check(m, n, k, a_layout, b_krows, accumulate);
                }
            }
        }
    }
}
