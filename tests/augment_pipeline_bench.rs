//! Throughput of the data pipeline's CPU work (not run by default: it is a measurement).
//!
//! `cargo test --release --test augment_pipeline_bench -- --ignored --nocapture`
//! (`SR_BENCH_SECS` sets the seconds per point, default 5). Compare with
//! `benches/pipeline_twin.py`, which does the same transforms with torchvision.

use spatial_reasoning::augment::bench_pipeline;

#[test]
#[ignore = "a measurement; run explicitly"]
fn pipeline_throughput() {
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
            assert!(rate > 0.0);
            println!(
                "spatial-reasoning size {size} batch 128 views 4 patches 2 threads {threads}: {rate:.0} items/s"
            );
        }
    }
}

#[test]
#[ignore = "a measurement; run explicitly"]
fn stage_timings() {
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
