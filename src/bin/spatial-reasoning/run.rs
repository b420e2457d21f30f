//! `run [--config FILE] [--seeds 1,2,3] [--out DIR] [--set k=v …]`: the main job.
//!
//! With no arguments it runs the embedded `configs/quickstart.toml` (synthetic data, no
//! download) and writes `runs/quickstart/report.md`. With `--slurm` the same cells go to a Slurm
//! cluster instead (see `slurm.rs` here and `spatial_reasoning::slurm`).

use std::path::{Path, PathBuf};
use std::time::Instant;

use spatial_reasoning::config::{Config, ValidConfig};
use spatial_reasoning::experiment::{self, JobOutcome, JobProgress};
use spatial_reasoning::report::{self, PatchPanel, ReportInput};

use crate::common::{fmt_secs, init_threads, stop_flag, ProgressPrinter};

/// The quickstart config, compiled into the binary so `run` works from any directory.
pub const QUICKSTART: &str = include_str!("../../../configs/quickstart.toml");

#[derive(clap::Args)]
pub struct Args {
    /// TOML experiment config (default: the embedded configs/quickstart.toml).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Comma-separated seeds (default: the config's run.seeds).
    #[arg(long, value_delimiter = ',')]
    seeds: Vec<u64>,
    /// Output directory (default: runs/<config name>).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Override a config value, e.g. `--set train.epochs=5` (repeatable).
    #[arg(long = "set", value_name = "SECTION.KEY=VALUE")]
    sets: Vec<String>,
    /// Submit the cells (arm × seed) to Slurm as a job array, plus a report job that merges
    /// them into OUT/report.md; again with the same config, submit only unfinished cells.
    #[arg(long)]
    pub slurm: bool,
    /// With --slurm: write OUT/plan.json and the sbatch scripts and print them; submit nothing.
    #[arg(long, requires = "slurm")]
    pub dry_run: bool,
    /// Run cell N of OUT/plan.json (what Slurm array task N does).
    #[arg(long, value_name = "N", requires = "out", conflicts_with_all = ["config", "seeds", "sets", "slurm", "merge", "status"])]
    pub cell: Option<usize>,
    /// Merge the finished cells of OUT/plan.json into OUT/results.csv and OUT/report.md, naming
    /// the cells without results (what the Slurm report job does).
    #[arg(long, requires = "out", conflicts_with_all = ["config", "seeds", "sets", "slurm", "status"])]
    pub merge: bool,
    /// Print the state of every cell of OUT/plan.json (and of its Slurm tasks).
    #[arg(long, requires = "out", conflicts_with_all = ["config", "seeds", "sets", "slurm"])]
    pub status: bool,
    #[command(flatten)]
    pub cluster: crate::slurm::ClusterArgs,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    if let (Some(index), Some(out)) = (args.cell, &args.out) {
        return crate::slurm::cell(out, index);
    }
    if let (true, Some(out)) = (args.merge, &args.out) {
        return crate::slurm::merge(out);
    }
    if let (true, Some(out)) = (args.status, &args.out) {
        return crate::slurm::status(out);
    }
    let started = Instant::now();
    let (raw, name) = match &args.config {
        Some(p) => (
            Config::from_toml_file(p)?,
            p.file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_else(|| "run".into()),
        ),
        None => (Config::from_toml_str(QUICKSTART)?, "quickstart".to_string()),
    };
    let mut raw = raw.apply_overrides(&args.sets)?;
    args.cluster.apply(&mut raw.slurm);
    let cfg = raw.check()?;
    let seeds = if args.seeds.is_empty() {
        cfg.run.seeds.clone()
    } else {
        args.seeds.clone()
    };
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| PathBuf::from("runs").join(&name));
    if args.slurm {
        return crate::slurm::submit(&cfg, &name, &seeds, &out, args.dry_run);
    }
    init_threads(cfg.train.threads);
    let arms = experiment::expand_arms(&cfg)?;
    eprintln!(
        "job `{name}`: {} on {}, arms [{}], seeds {:?} -> {}",
        cfg.backbone.name.name(),
        cfg.data.dataset.name(),
        arms.iter()
            .map(|a| a.name.as_str())
            .collect::<Vec<_>>()
            .join(", "),
        seeds,
        out.display()
    );
    let stop = stop_flag()?;
    let mut progress = progress_printer(started);
    {
        use spatial_reasoning::data::Split;
        let first = crate::common::pretrain_split(&cfg);
        crate::common::prepare_image_cache(&cfg, &[first, Split::Train, Split::Test])?;
    }
    let outcome = experiment::run_job(&cfg, &seeds, &out, Some(stop), &mut progress)?;

    let notes = format!(
        "Command: `spatial-reasoning run{}`. Crate {} (git {}). Accuracies are top-1 on the test split; mean ± sample std over seeds.",
        std::env::args().skip(2).map(|a| format!(" {a}")).collect::<String>(),
        env!("CARGO_PKG_VERSION"),
        spatial_reasoning::train::git_revision().unwrap_or_else(|| "unknown".into())
    );
    let files = write_job_report(
        &cfg,
        &name,
        &seeds,
        &out,
        &outcome,
        started.elapsed().as_secs_f64(),
        notes,
    )?;
    eprintln!(
        "done in {}: {} (plots in {})",
        fmt_secs(started.elapsed().as_secs_f64()),
        files.markdown.display(),
        out.join("plots").display()
    );
    println!(
        "{}",
        report::accuracy_table(&report::summarize(&outcome.rows))
    );
    Ok(())
}

/// Renders a job's progress on stderr: one header per cell, the training progress, evaluations.
pub fn progress_printer(started: Instant) -> impl FnMut(JobProgress) {
    let mut printer = ProgressPrinter::new("-");
    move |p: JobProgress| match p {
        JobProgress::Run {
            arm,
            seed,
            index,
            total,
        } => {
            eprintln!(
                "== [{index}/{total}] {arm} seed {seed} ({} so far)",
                fmt_secs(started.elapsed().as_secs_f64())
            );
            printer = ProgressPrinter::new(&format!("{arm} s{seed}"));
        }
        JobProgress::Train(t) => printer.handle(&t),
        JobProgress::Eval(s) => eprintln!("   {s}"),
        JobProgress::Result(_) => {}
    }
}

/// Write `out/report.md` for a job: the table of `outcome.rows`, plots, the loss curves and
/// per-epoch diagnostics of its pretraining runs, the random-init references, and sampled
/// patches on real images.
pub fn write_job_report(
    cfg: &ValidConfig,
    name: &str,
    seeds: &[u64],
    out: &Path,
    outcome: &JobOutcome,
    wall_time_s: f64,
    notes: String,
) -> anyhow::Result<report::ReportFiles> {
    let mut curves = Vec::new();
    for (arm, seed, dir) in &outcome.runs {
        let rows = report::read_metrics_jsonl(&dir.join("metrics.jsonl"), Some("step"))?;
        curves.push((arm.clone(), *seed, rows));
    }
    let patch_picture = patch_panels(cfg).map(|p| {
        (
            format!(
                "Sampled patches ({} per image, side {} px, {:?} mode)",
                cfg.method.patches,
                cfg.geometry.patch(),
                cfg.method.patch_mode
            ),
            p,
        )
    });
    let diagnostics = experiment::read_diagnostics(outcome)?;
    let input = ReportInput {
        title: format!(
            "{name}: {} on {}, seeds {:?}",
            cfg.backbone.name.name(),
            cfg.data.dataset.name(),
            seeds
        ),
        settings: cfg.raw().to_toml_string(),
        wall_time_s,
        rows: outcome.rows.clone(),
        curves,
        epochs: diagnostics.epochs,
        references: diagnostics.references,
        offsets: diagnostics.offsets,
        patch_picture,
        notes,
    };
    Ok(report::write_report(out, &input)?)
}

/// A few training images with the patches the sampler draws for them.
fn patch_panels(cfg: &spatial_reasoning::config::ValidConfig) -> Option<Vec<PatchPanel>> {
    use spatial_reasoning::augment::PatchSampler;
    use spatial_reasoning::rng::{rng_for, Stream};
    if cfg.method.patches == 0 {
        return None;
    }
    let ds = spatial_reasoning::data::load(
        cfg.data.dataset,
        &cfg.data_root(),
        spatial_reasoning::data::Split::Test,
        &cfg.data,
    )
    .ok()?;
    if (ds.height, ds.width) != (cfg.geometry.image(), cfg.geometry.image()) {
        return None;
    }
    let sampler = PatchSampler::for_geometry(&cfg.geometry);
    Some(
        (0..8.min(ds.len()))
            .map(|i| {
                let mut rng = rng_for(cfg.train.seed, Stream::Patches, 0, i as u64);
                PatchPanel {
                    pixels: ds.image(i).to_vec(),
                    height: ds.height,
                    width: ds.width,
                    boxes: sampler
                        .sample(&mut rng)
                        .into_iter()
                        .map(|p| (p.row, p.col, cfg.geometry.patch()))
                        .collect(),
                }
            })
            .collect(),
    )
}
