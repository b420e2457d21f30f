//! Micro-benchmarks of the crate's parts (measurements, not tests): the data pipeline, its
//! transforms one by one, kNN and the linear probe at CIFAR size, and the bf16 matrix product
//! against f32 `gemm`. Each prints what it measured; nothing is asserted.
//!
//!     cargo bench --bench micro                 # all of them
//!     cargo bench --bench micro -- knn linear   # some of them
//!
//! `SR_BENCH_SECS` sets the seconds per point of `pipeline` (default 5). Compare `pipeline` with
//! `benches/pipeline_twin.py` (the same transforms with torchvision). Whole training steps are
//! measured by `spatial-reasoning bench` against `benches/torch_twin.py` (`benches/compare.sh`).

#[path = "../tests/eval_common/mod.rs"]
mod eval_common;

use eval_common::clusters;
use spatial_reasoning::augment::bench_pipeline;
use spatial_reasoning::eval::{knn_classify, linear_probe, KnnConfig, LinearProbeConfig};
use spatial_reasoning::ops::bf16::{self, Mat, PackedB};
use spatial_reasoning::ops::matmul::{matmul, MatMut, MatRef, Threads};

fn quiet() -> impl FnMut(spatial_reasoning::eval::ProgressEvent) {
    |_| {}
}

/// Throughput of the data pipeline's CPU work (views and patches per second).
fn pipeline() {
    let secs: f64 = std::env::var("SR_BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5.0);
    for size in [32, 64] {
        for threads in [1, 2] {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            let rate = pool.install(|| bench_pipeline(size, 128, 4, 2, secs));
            println!(
                "spatial-reasoning size {size} batch 128 views 4 patches 2 threads {threads}: {rate:.0} items/s"
            );
        }
    }
}

/// Each transform of the pipeline alone, on one 64×64 image (best of 10 rounds).
fn stages() {
    use spatial_reasoning::augment::color::*;
    use spatial_reasoning::augment::*;
    use std::time::Instant;
    let s = 64;
    let bytes: Vec<u8> = (0..s * s * 3).map(|i| (i * 37 % 251) as u8).collect();
    let img = Image::from_hwc_u8(&bytes, s, s);
    let n = 3000;
    // Best of 10 rounds: the machine is shared, the minimum is the least disturbed.
    let time = |name: &str, f: &mut dyn FnMut()| {
        let mut best = f64::MAX;
        for _ in 0..10 {
            let t = Instant::now();
            for _ in 0..n / 10 {
                f();
            }
            best = best.min(t.elapsed().as_secs_f64() * 1e6 / (n / 10) as f64);
        }
        println!("{name}: {best:.1} µs");
    };
    let mut d = img.data.clone();
    time("resize 40x30 -> 64", &mut || {
        std::hint::black_box(resized_crop(
            &img,
            Window {
                top: 3,
                left: 5,
                height: 40,
                width: 30,
            },
            s,
            s,
        ));
    });
    time("brightness", &mut || brightness_planes(&mut d, 1.0001));
    time("contrast", &mut || contrast_planes(&mut d, s * s, 1.0001));
    time("saturation", &mut || {
        saturation_planes(&mut d, s * s, 1.0001)
    });
    time("hue", &mut || hue_planes(&mut d, s * s, 0.0001));
    time("gray", &mut || {
        grayscale_planes(&mut img.data.clone(), s * s)
    });
    time("normalize", &mut || {
        normalize_planes(&mut d, s * s, &[0.0; 3], &[1.0; 3])
    });
}

/// kNN at CIFAR size (10,000 test × 50,000 train × 64, k = 200).
fn knn() {
    let train = clusters(50_000, 64, 10, 1.0, 25);
    let test = clusters(10_000, 64, 10, 1.0, 26);
    let t = std::time::Instant::now();
    let r = knn_classify(&train, &test, &KnnConfig::default(), &mut quiet()).unwrap();
    println!(
        "kNN 10000 x 50000 x 64, k 200: {:.2} s (acc {:.4}, {} threads)",
        t.elapsed().as_secs_f64(),
        r.acc,
        rayon::current_num_threads()
    );
}

/// SPEC §4's linear probe on CIFAR-sized features (50,000 × 64, 10 classes, 100 epochs, batch
/// 128), and the n = 9 patch probe's width (640) for 10 epochs.
fn linear() {
    let train = clusters(50_000, 64, 10, 1.0, 10);
    let test = clusters(10_000, 64, 10, 1.0, 11);
    let t = std::time::Instant::now();
    let r = linear_probe(&train, &test, &LinearProbeConfig::default(), &mut quiet()).unwrap();
    let secs = t.elapsed().as_secs_f64();
    println!(
        "linear probe 50000x64 -> 10, 100 epochs: {secs:.2} s (acc {:.4}, final loss {:.4})",
        r.acc, r.final_train_loss
    );
    let train9 = clusters(50_000, 640, 10, 1.0, 12);
    let test9 = clusters(10_000, 640, 10, 1.0, 13);
    let cfg = LinearProbeConfig {
        epochs: 10,
        ..Default::default()
    };
    let t = std::time::Instant::now();
    linear_probe(&train9, &test9, &cfg, &mut quiet()).unwrap();
    println!(
        "linear probe 50000x640 -> 10 (n = 9 patch probe), 10 epochs: {:.2} s",
        t.elapsed().as_secs_f64()
    );
}

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

/// The bf16 product against f32 `gemm` on the convolutions' shapes, one thread.
fn bf16_product() {
    for &(m, n, k, what) in &[
        (1024, 16, 144, "fwd s1"),
        (256, 32, 288, "fwd s2"),
        (64, 64, 576, "fwd s3"),
        (16, 144, 1024, "dW s1"),
        (64, 576, 64, "dW s3"),
        (1024, 144, 16, "dX s1"),
    ] {
        let a_data = lcg(1, m * k);
        let b_data = lcg(2, k * n);
        let reps = (2e9 / (2.0 * (m * n * k) as f64)).ceil() as usize;
        let mut dst = vec![0.0f32; m * n];
        let t = std::time::Instant::now();
        let packed = PackedB::new(bf16::Kernel::Best, k, n, Mat::new(&b_data, 1, k));
        for _ in 0..reps {
            bf16::matmul(
                bf16::Kernel::Best,
                m,
                &mut dst,
                m,
                false,
                Mat::new(&a_data, 1, m),
                &packed,
            );
        }
        let bf = 2.0 * (m * n * k * reps) as f64 / t.elapsed().as_secs_f64() / 1e9;
        let t = std::time::Instant::now();
        for _ in 0..reps {
            matmul(
                (m, n, k),
                MatMut::new(&mut dst, 1, m),
                false,
                MatRef::new(&a_data, 1, m),
                MatRef::new(&b_data, 1, k),
                Threads::One,
            );
        }
        let f = 2.0 * (m * n * k * reps) as f64 / t.elapsed().as_secs_f64() / 1e9;
        eprintln!(
            "{what:8} m{m:5} n{n:4} k{k:5}: bf16 {bf:6.1} GFLOP/s, f32 gemm {f:6.1} ({:.2}×)",
            bf / f
        );
    }
}

fn main() {
    // A training/timing process: keep freed activation buffers for reuse (as the CLI does).
    spatial_reasoning::tune_allocator();
    type Bench = (&'static str, fn());
    let all: [Bench; 5] = [
        ("pipeline", pipeline),
        ("stages", stages),
        ("knn", knn),
        ("linear", linear),
        ("bf16", bf16_product),
    ];
    // `cargo bench` passes `--bench`; every other argument names a measurement.
    let wanted: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    if let Some(bad) = wanted.iter().find(|w| !all.iter().any(|(n, _)| n == w)) {
        let names: Vec<_> = all.iter().map(|(n, _)| *n).collect();
        eprintln!(
            "unknown measurement `{bad}` (expected some of {})",
            names.join(", ")
        );
        std::process::exit(2);
    }
    for (name, f) in all {
        if wanted.is_empty() || wanted.iter().any(|w| w == name) {
            println!("== {name}");
            f();
        }
    }
}
