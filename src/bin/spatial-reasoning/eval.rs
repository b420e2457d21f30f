//! `eval --run DIR --protocol linear|knn [--patches N] [--set k=v …]`.

use std::path::PathBuf;

use spatial_reasoning::eval::EvalPlan;
use spatial_reasoning::experiment::{self, JobProgress};

use crate::common::init_threads;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ProtocolArg {
    Linear,
    Knn,
    All,
}

#[derive(clap::Args)]
pub struct Args {
    /// A pretraining run directory (holds config.toml, meta.json, checkpoints/).
    #[arg(long)]
    run: PathBuf,
    /// Which probe.
    #[arg(long, value_enum, default_value = "all")]
    protocol: ProtocolArg,
    /// Patch counts of the patch-concatenated linear probe (repeatable; 0 = plain feature).
    /// Default: the config's eval.probe_patches.
    #[arg(long = "patches")]
    patches: Vec<usize>,
    /// Override a config value, e.g. `--set eval.linear_epochs=20` (repeatable).
    #[arg(long = "set", value_name = "SECTION.KEY=VALUE")]
    sets: Vec<String>,
    /// Results CSV to append to (default: RUN/../results.csv).
    #[arg(long)]
    csv: Option<PathBuf>,
    /// Arm name recorded in the CSV (default: rr or sr from the run's config).
    #[arg(long)]
    arm: Option<String>,
    /// Compute threads (0 = all cores).
    #[arg(long, default_value_t = 0)]
    threads: usize,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    init_threads(args.threads);
    let cfg = spatial_reasoning::config::Config::from_toml_file(&args.run.join("config.toml"))?
        .apply_overrides(&args.sets)?
        .check()?;
    let mut probe_patches = if args.patches.is_empty() {
        cfg.eval.probe_patches.clone()
    } else {
        args.patches.clone()
    };
    if let Some(&bad) = probe_patches
        .iter()
        .find(|n| ![0, 1, 3, 5, 7, 9].contains(*n))
    {
        anyhow::bail!("--patches {bad}: allowed values are 0, 1, 3, 5, 7, 9");
    }
    probe_patches.dedup();
    let mut plan = EvalPlan {
        probe_patches,
        ..EvalPlan::from_config(&cfg)
    };
    if args.protocol == ProtocolArg::Knn {
        plan.linear = None;
    }
    if args.protocol == ProtocolArg::Linear {
        plan.knn = None;
    }
    let arm = args
        .arm
        .clone()
        .unwrap_or_else(|| if cfg.method.is_rr() { "rr" } else { "sr" }.to_string());
    let csv = args.csv.clone().unwrap_or_else(|| {
        args.run
            .parent()
            .map(|p| p.join("results.csv"))
            .unwrap_or_else(|| PathBuf::from("results.csv"))
    });
    let mut progress = |p: JobProgress| {
        if let JobProgress::Eval(s) = p {
            eprintln!("[eval] {s}");
        }
    };
    crate::common::prepare_image_cache(
        &cfg,
        &[
            spatial_reasoning::data::Split::Train,
            spatial_reasoning::data::Split::Test,
        ],
    )?;
    let rows = experiment::evaluate_run(
        &args.run,
        &args.sets,
        Some(plan),
        Some(&csv),
        &arm,
        &mut progress,
    )?;
    for r in &rows {
        println!(
            "{} {} n={} {:.4}",
            r.arm, r.metric, r.probe_patches, r.value
        );
    }
    eprintln!(
        "wrote {}/eval/*.json and appended {} rows to {}",
        args.run.display(),
        rows.len(),
        csv.display()
    );
    Ok(())
}
