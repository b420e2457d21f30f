//! A hand-written ablation loop: vary one hyper-parameter of SR, pretrain one run per value and
//! seed, probe each, and plot accuracy against the value. This is what
//! `spatial-reasoning run` does with a `[run.sweep]` table, written out so that it is easy to
//! change (another key, a custom metric, an extra arm …).
//!
//!     cargo run --release --example ablation_loop -- [KEY] [V1,V2,…] [OUT]
//!     cargo run --release --example ablation_loop -- method.alpha 0,0.5,1,2 runs/alpha
//!
//! Budgets are tiny (about a minute per run on two cores); the conclusions need the budgets of
//! `configs/quickstart.toml` or larger.

use std::path::PathBuf;

use spatial_reasoning::config::Config;
use spatial_reasoning::experiment::evaluate_run;
use spatial_reasoning::report::{self, ResultRow};
use spatial_reasoning::train::{prepare_data, pretrain, PretrainOptions};

fn main() -> anyhow::Result<()> {
    // A training/timing process: keep freed activation buffers for reuse (as the CLI does).
    spatial_reasoning::tune_allocator();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let key = args
        .first()
        .cloned()
        .unwrap_or_else(|| "method.alpha".into());
    let values: Vec<String> = args
        .get(1)
        .map_or("0,1", String::as_str)
        .split(',')
        .map(str::to_string)
        .collect();
    let out = args
        .get(2)
        .map_or_else(|| std::env::temp_dir().join("ablation-loop"), PathBuf::from);
    let seeds = [1, 2];

    let base =
        Config::from_toml_str(include_str!("../configs/quickstart.toml"))?.apply_overrides(&[
            "data.train_size=2000",
            "data.test_size=1000",
            "train.epochs=2",
            "eval.linear_epochs=30",
            "eval.probe_patches=[0]",
        ])?;
    // Every value is checked before any training starts.
    for v in &values {
        base.apply_overrides(&[format!("{key}={v}")])?.check()?;
    }
    let data = prepare_data(&base.clone().check()?)?; // the same images for every arm
    let mut rows: Vec<ResultRow> = Vec::new();
    for v in &values {
        for seed in seeds {
            let cfg = base
                .apply_overrides(&[format!("{key}={v}"), format!("train.seed={seed}")])?
                .check()?;
            let arm = format!("sr {key}={v}");
            let dir = out.join(format!("{key}={v}")).join(format!("seed-{seed}"));
            let resume = dir.join("config.toml").exists(); // finish or skip an earlier run
            let opts = PretrainOptions {
                resume,
                ..Default::default()
            };
            pretrain(&cfg, &data, &dir, opts)?;
            let results = evaluate_run(&dir, &[], None, None, &arm, &mut |_| {})?;
            for r in &results {
                eprintln!("{arm} seed {seed}: {} {:.1} %", r.metric, 100.0 * r.value);
            }
            rows.extend(results);
        }
    }
    let summary = report::summarize(&rows);
    println!("{}", report::accuracy_table(&summary));
    let files = report::plot_ablation(
        &summary,
        &key,
        &format!("SR: accuracy against {key}"),
        &out.join("ablation"),
    )?;
    println!("plot: {}", files.png.display());
    Ok(())
}
