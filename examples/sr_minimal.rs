//! The smallest spatial-reasoning experiment: pretrain Conv-4 with SR on the synthetic dataset
//! (generated, no download), then probe the frozen backbone (linear n = 0 and kNN).
//!
//!     cargo run --release --example sr_minimal [RUN_DIR]
//!
//! Budgets are tiny (about 20 s on two cores: linear probe ≈ 15–18 % against 10 % chance and ≈ 11 %
//! for a random-init Conv-4); the full `configs/quickstart.toml` budget learns much more.

use std::path::{Path, PathBuf};

use spatial_reasoning::config::Config;
use spatial_reasoning::experiment::evaluate_run;
use spatial_reasoning::report::ResultRow;
use spatial_reasoning::train::{prepare_data, pretrain, PretrainOptions};

/// Pretrain into `run_dir` (which must not hold a run yet), probe, and return the result rows.
pub fn run(run_dir: &Path) -> anyhow::Result<Vec<ResultRow>> {
    let cfg = Config::from_toml_str(include_str!("../configs/quickstart.toml"))?
        .apply_overrides(&[
            "data.train_size=3000",
            "data.test_size=1000",
            "train.epochs=2",
            "train.log_every=4",
            "eval.probe_patches=[0]",
        ])?
        .check()?;
    let data = prepare_data(&cfg)?;
    let outcome = pretrain(&cfg, &data, run_dir, PretrainOptions::default())?;
    println!(
        "pretrained {} steps in {:.1} s",
        outcome.steps, outcome.elapsed_s
    );
    let results = evaluate_run(run_dir, &[], None, None, "sr", &mut |_| {})?;
    for r in &results {
        println!(
            "{} (n = {}): {:.1} %",
            r.metric,
            r.probe_patches,
            100.0 * r.value
        );
    }
    Ok(results)
}

fn main() -> anyhow::Result<()> {
    let default = std::env::temp_dir().join(format!("sr-minimal-{}", std::process::id()));
    let run_dir = std::env::args().nth(1).map_or(default, PathBuf::from);
    run(&run_dir)?;
    println!("run directory: {}", run_dir.display());
    Ok(())
}
