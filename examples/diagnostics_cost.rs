//! What the per-epoch diagnostics cost, as a fraction of a pretraining epoch on CIFAR-10 (K = 4,
//! P = 2, B = 128, the default `[diagnostics]`: 2,000 pairs per split, kNN of 1,000 test images
//! against 5,000 training images).
//!
//!     cargo run --release --example diagnostics_cost -- [conv4|resnet32] [STEPS]
//!
//! Times `STEPS` (default 6) training steps after one warm-up step, and two diagnostics
//! measurements of the trained model, under the same machine load; prints seconds per step, the
//! epoch's length (390 steps of 128 images), and the diagnostics' share of an epoch. The data root
//! is `$SPATIAL_REASONING_DATA` (default `../shared/data`).

use std::time::Instant;

use spatial_reasoning::config::Config;
use spatial_reasoning::data::{self, Split};
use spatial_reasoning::eval::Probe;
use spatial_reasoning::method::{HeadSpec, RelationHead, SslModel};
use spatial_reasoning::models::{BuildBackbone, Conv4, ResNet32};
use spatial_reasoning::train::{self, metrics, PretrainOptions};

/// The faster of two measurements of a freshly built `B` backbone and SR head.
fn measure<B: BuildBackbone<spatial_reasoning::Device>>(probe: &Probe) -> anyhow::Result<f64> {
    let dev = spatial_reasoning::new_device(1)?;
    let model = SslModel {
        backbone: B::build(&dev, 1).map_err(|e| anyhow::anyhow!("{e:?}"))?,
        head: RelationHead::new(&dev, HeadSpec::sr()).map_err(|e| anyhow::anyhow!("{e:?}"))?,
    };
    let mut best = f64::INFINITY;
    for _ in 0..2 {
        let t = Instant::now();
        let d = probe.measure(&model.backbone, Some(&model.head), &dev)?;
        best = best.min(t.elapsed().as_secs_f64());
        assert!(d.knn_acc.is_some() && d.offset.is_some());
    }
    Ok(best)
}

fn main() -> anyhow::Result<()> {
    // A training/timing process: keep freed activation buffers for reuse (as the CLI does).
    spatial_reasoning::tune_allocator();
    let args: Vec<String> = std::env::args().collect();
    let backbone = args.get(1).map(String::as_str).unwrap_or("conv4");
    let steps: usize = args.get(2).map(|s| s.parse()).transpose()?.unwrap_or(6);
    let root = std::env::var("SPATIAL_REASONING_DATA").unwrap_or_else(|_| "../shared/data".into());
    let cfg = Config::default()
        .apply_overrides(&[
            "data.dataset=cifar10".to_string(),
            format!("data.root = {root:?}"),
            format!("backbone.name={backbone}"),
            format!("train.max_steps={}", steps + 1),
            "train.log_every=1".into(),
            "train.epochs=1".into(),
            "diagnostics.enabled=false".into(),
        ])?
        .check()?;
    let data = train::prepare_data(&cfg)?;
    let test = data::load(cfg.data.dataset, &cfg.data_root(), Split::Test, &cfg.data)?;

    // Training steps (diagnostics off, so only the steps are timed).
    let dir = std::env::temp_dir().join(format!("sr-diag-cost-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    train::pretrain(&cfg, &data, &dir, PretrainOptions::default())?;
    let rows = metrics::read_rows(&dir.join("metrics.jsonl"))?;
    let _ = std::fs::remove_dir_all(&dir);
    let timed: Vec<f64> = rows
        .iter()
        .filter(|r| r.kind == metrics::RowKind::Step)
        .skip(1)
        .map(|r| 128.0 / r.img_per_s)
        .collect();
    let step_s = timed.iter().sum::<f64>() / timed.len() as f64;
    let epoch_s = step_s * (data.train.len() / 128) as f64;

    // The diagnostics with the default settings.
    let on = Config::default()
        .apply_overrides(&[format!("backbone.name={backbone}")])?
        .check()?;
    let probe = Probe::prepare(&on, &data.train, &test, &data.normalize)?
        .expect("diagnostics are on by default");
    let diag_s = match cfg.backbone.name {
        spatial_reasoning::config::BackboneKind::Conv4 => measure::<Conv4<_>>(&probe)?,
        spatial_reasoning::config::BackboneKind::Resnet32 => measure::<ResNet32<_>>(&probe)?,
        other => anyhow::bail!("{other:?}: this example measures conv4 and resnet32"),
    };
    println!(
        "{backbone}: {step_s:.3} s/step over {} steps, epoch of {} steps ≈ {epoch_s:.0} s; diagnostics {diag_s:.2} s = {:.2} % of an epoch ({} threads)",
        timed.len(),
        data.train.len() / 128,
        100.0 * diag_s / epoch_s,
        rayon::current_num_threads()
    );
    Ok(())
}
