//! `export --run DIR --out FILE [--format torch]`.

use std::path::PathBuf;

use spatial_reasoning::export::{self, ExportFormat};

#[derive(clap::Args)]
pub struct Args {
    /// A pretraining run directory (holds config.toml, meta.json, checkpoints/); its newest
    /// complete checkpoint is exported.
    #[arg(long)]
    run: PathBuf,
    /// Output file, e.g. backbone.safetensors.
    #[arg(long)]
    out: PathBuf,
    /// torch: safetensors under the names of python/spatial_reasoning_torch.py, with batch-norm
    /// running statistics and num_batches_tracked (the only format so far).
    #[arg(long, default_value = "torch")]
    format: ExportFormat,
}

pub fn run(a: Args) -> anyhow::Result<()> {
    let s = export::export_run(&a.run, &a.out, a.format)?;
    let m = &s.metadata;
    eprintln!(
        "exported {} ({} parameters, {} tensors) from {} (step {}) to {}",
        m.backbone.name(),
        s.params,
        s.tensors,
        s.checkpoint.display(),
        m.step,
        s.out.display()
    );
    eprintln!(
        "inputs: {}×{} RGB in [0, 1], normalised with mean {:?} and std {:?} (stored in the file)",
        m.image_size, m.image_size, m.normalize_mean, m.normalize_std
    );
    println!("{}", s.out.display());
    Ok(())
}
