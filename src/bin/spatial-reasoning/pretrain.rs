//! `pretrain --config FILE [--set k=v …] --out DIR [--resume]`.

use std::path::PathBuf;

use anyhow::Context;
use spatial_reasoning::config::Config;
use spatial_reasoning::train::{self, PretrainOptions};

use crate::common::{fmt_secs, init_threads, load_config, stop_flag, ProgressPrinter};

#[derive(clap::Args)]
pub struct Args {
    /// TOML experiment config (default: the paper's values; with --resume: the run's saved one).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Override a config value, e.g. `--set train.epochs=5` (repeatable).
    #[arg(long = "set", value_name = "SECTION.KEY=VALUE")]
    sets: Vec<String>,
    /// Run directory (config, metrics.jsonl, checkpoints).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Continue the run in --out from its last complete checkpoint.
    #[arg(long)]
    resume: bool,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let cfg = if args.resume && args.config.is_none() {
        let out = args.out.as_ref().context("--resume needs --out DIR")?;
        let saved = Config::from_toml_file(&out.join("config.toml"))?;
        saved.apply_overrides(&args.sets)?.check()?
    } else {
        load_config(args.config.as_deref(), &args.sets)?
    };
    init_threads(cfg.train.threads);
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| crate::common::default_run_dir(&cfg));
    let stop = stop_flag()?;
    eprintln!(
        "pretraining {} on {} ({} {}) -> {}",
        cfg.backbone.name.name(),
        cfg.data.dataset.name(),
        if cfg.method.is_rr() { "RR" } else { "SR" },
        format_args!(
            "K={} P={} p={} α={}",
            cfg.method.views,
            cfg.method.patches,
            cfg.geometry.patch(),
            cfg.method.alpha
        ),
        out.display()
    );
    // The per-epoch diagnostics read the test split too.
    let mut splits = vec![crate::common::pretrain_split(&cfg)];
    if cfg.diagnostics.enabled {
        splits.push(spatial_reasoning::data::Split::Test);
    }
    crate::common::prepare_image_cache(&cfg, &splits)?;
    let data = train::prepare_data(&cfg)?;
    let mut printer = ProgressPrinter::new("pretrain");
    let mut cb = |p: &train::Progress| printer.handle(p);
    let outcome = train::pretrain(
        &cfg,
        &data,
        &out,
        PretrainOptions {
            resume: args.resume,
            stop: Some(stop),
            progress: Some(&mut cb),
            stop_at_step: None,
            test: None,
        },
    )?;
    if outcome.interrupted {
        eprintln!(
            "stopped at step {}/{}; continue with: spatial-reasoning pretrain --out {} --resume",
            outcome.steps,
            outcome.total_steps,
            out.display()
        );
        std::process::exit(130);
    }
    eprintln!(
        "done: {} steps in {} ({} non-finite steps skipped); run directory {}",
        outcome.steps,
        fmt_secs(outcome.elapsed_s),
        outcome.skipped_nonfinite,
        out.display()
    );
    Ok(())
}
