//! `data verify` and `data preview`.

use std::path::PathBuf;

use spatial_reasoning::config::{resolve_data_root, DataConfig, DatasetKind};
use spatial_reasoning::data::{self, preview, ImageDataset, Split};

#[derive(clap::Subcommand)]
pub enum Command {
    /// Load every split of a dataset and print its record count and per-class counts; fails,
    /// naming the file and byte offset, on a missing, truncated or malformed file.
    Verify(VerifyArgs),
    /// Write a labelled grid of sample images as PNG.
    Preview(PreviewArgs),
}

#[derive(clap::Args)]
pub struct VerifyArgs {
    /// synthetic, cifar10, cifar100, cifar100-coarse, stl10, tiny-imagenet.
    #[arg(long)]
    dataset: DatasetKind,
    /// Data root (default: $SPATIAL_REASONING_DATA, else ./data). The dataset's official
    /// folder (e.g. cifar-10-batches-bin) may be inside it, or be it.
    #[arg(long)]
    root: Option<PathBuf>,
    /// Also print per-channel mean and std (in [0, 1] units) of each split.
    #[arg(long)]
    stats: bool,
}

#[derive(clap::Args)]
pub struct PreviewArgs {
    #[arg(long)]
    dataset: DatasetKind,
    #[arg(long)]
    root: Option<PathBuf>,
    /// train, test or unlabeled (STL-10 only).
    #[arg(long, default_value = "train")]
    split: Split,
    /// Number of images, spread evenly over the split.
    #[arg(long, default_value_t = 64)]
    count: usize,
    /// Instead of --count: the first N images of every class, one row per class.
    #[arg(long)]
    per_class: Option<usize>,
    /// Up-scaling factor (default: about 96 px per image).
    #[arg(long)]
    scale: Option<usize>,
    /// Output PNG.
    #[arg(long)]
    out: PathBuf,
}

pub fn run(c: Command) -> anyhow::Result<()> {
    match c {
        Command::Verify(a) => verify(a),
        Command::Preview(a) => preview_cmd(a),
    }
}

/// The error as one message. `DataError::Io` already prints its I/O cause, so it is not kept as
/// a chained source (anyhow's `{:#}` would print the cause twice).
fn flat(kind: DatasetKind, split: Split, e: data::DataError) -> anyhow::Error {
    anyhow::anyhow!("{} {split}: {e}", kind.name())
}

/// One line: `name split count 0:n0 1:n1 …`.
fn summary(ds: &ImageDataset) -> String {
    let mut line = format!("{} {} {}", ds.name, ds.split, ds.len());
    if let Some(counts) = ds.class_counts() {
        for (c, n) in counts.iter().enumerate() {
            line.push_str(&format!(" {c}:{n}"));
        }
    }
    line
}

fn verify(a: VerifyArgs) -> anyhow::Result<()> {
    let root = resolve_data_root(a.root.as_deref());
    let cfg = DataConfig {
        dataset: a.dataset,
        ..DataConfig::default()
    };
    for &split in Split::of(a.dataset) {
        let ds =
            data::load(a.dataset, &root, split, &cfg).map_err(|e| flat(a.dataset, split, e))?;
        println!("{}", summary(&ds));
        if a.stats {
            let (m, s) = data::channel_stats(&ds);
            println!(
                "{} {split} mean {:.4} {:.4} {:.4} std {:.4} {:.4} {:.4}",
                a.dataset.name(),
                m[0],
                m[1],
                m[2],
                s[0],
                s[1],
                s[2]
            );
        }
    }
    Ok(())
}

fn preview_cmd(a: PreviewArgs) -> anyhow::Result<()> {
    let root = resolve_data_root(a.root.as_deref());
    let cfg = DataConfig {
        dataset: a.dataset,
        ..DataConfig::default()
    };
    let ds =
        data::load(a.dataset, &root, a.split, &cfg).map_err(|e| flat(a.dataset, a.split, e))?;
    let indices = preview::select(&ds, a.count, a.per_class);
    let columns = match a.per_class {
        Some(k) if ds.labels.is_some() => k,
        _ => (indices.len() as f64).sqrt().ceil() as usize,
    };
    let scale = a.scale.unwrap_or_else(|| preview::default_scale(ds.width));
    preview::save_preview(&ds, &indices, columns, scale, &a.out)?;
    println!("wrote {} ({} images)", a.out.display(), indices.len());
    Ok(())
}
