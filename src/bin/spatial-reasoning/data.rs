//! `data verify` and `data preview`.

use std::path::PathBuf;

use spatial_reasoning::config::{resolve_data_root, Config, DataConfig, DatasetKind, ResizeRule};
use spatial_reasoning::data::{self, image_folder, preview, ImageDataset, Split};

#[derive(clap::Subcommand)]
pub enum Command {
    /// Load every split of a dataset and print its record count and per-class counts; fails,
    /// naming the file and byte offset, on a missing, truncated or malformed file. An image
    /// folder is decoded in full (its cache rewritten) and every bad file is listed.
    Verify(VerifyArgs),
    /// Write a labelled grid of sample images as PNG.
    Preview(PreviewArgs),
}

/// Which dataset, from flags or a config's `[data]` section.
#[derive(clap::Args)]
pub struct DataArgs {
    /// synthetic, cifar10, cifar100, cifar100-coarse, stl10, tiny-imagenet, image-folder
    /// (default: the config's data.dataset).
    #[arg(long)]
    dataset: Option<DatasetKind>,
    /// Data root (default: $SPATIAL_REASONING_DATA, else ./data). The dataset's official
    /// folder (e.g. cifar-10-batches-bin) may be inside it, or be it.
    #[arg(long)]
    root: Option<PathBuf>,
    /// Read the `[data]` section of this experiment config (flags below override it).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Override a config value, e.g. `--set data.resize=center-crop` (repeatable).
    #[arg(long = "set", value_name = "SECTION.KEY=VALUE")]
    sets: Vec<String>,
    /// image-folder: the folder holding train/, test/ (or val/) and optionally unlabeled/.
    #[arg(long)]
    path: Option<PathBuf>,
    /// image-folder: side of the square images (default: the config's, else the dataset's
    /// native side).
    #[arg(long)]
    image_size: Option<usize>,
    /// image-folder: none (every image must already be image-size square) or center-crop.
    #[arg(long)]
    resize: Option<ResizeRule>,
}

impl DataArgs {
    /// The `[data]` section these flags describe, checked (`check_folder_keys`).
    fn data_config(&self) -> anyhow::Result<DataConfig> {
        let base = match &self.config {
            Some(p) => Config::from_toml_file(p)?,
            None if self.dataset.is_some() => Config::default(),
            None => anyhow::bail!("give --dataset NAME or --config FILE"),
        };
        let mut d = base.apply_overrides(&self.sets)?.data;
        if let Some(kind) = self.dataset {
            d.dataset = kind;
            if self.config.is_none() && self.image_size.is_none() {
                // A dataset named on the command line is read at its native side.
                d.image_size = kind.native_size().unwrap_or(d.image_size);
            }
        }
        if let Some(r) = &self.root {
            d.root = Some(r.clone());
        }
        if let Some(p) = &self.path {
            d.path = Some(p.clone());
        }
        if let Some(s) = self.image_size {
            d.image_size = s;
        }
        if let Some(r) = self.resize {
            d.resize = r;
        }
        d.check_folder_keys()?;
        Ok(d)
    }
}

#[derive(clap::Args)]
pub struct VerifyArgs {
    #[command(flatten)]
    data: DataArgs,
    /// Also print per-channel mean and std (in [0, 1] units) of each split.
    #[arg(long)]
    stats: bool,
}

#[derive(clap::Args)]
pub struct PreviewArgs {
    #[command(flatten)]
    data: DataArgs,
    /// train, test or unlabeled (STL-10, image-folder).
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

/// Read one split; an image folder shows its cache being built and, with `rebuild`, decodes
/// every file again.
fn load_split(
    cfg: &DataConfig,
    split: Split,
    rebuild: bool,
) -> Result<ImageDataset, data::DataError> {
    let root = resolve_data_root(cfg.root.as_deref());
    if cfg.dataset != DatasetKind::ImageFolder {
        return data::load(cfg.dataset, &root, split, cfg);
    }
    let spec = image_folder::FolderSpec::from_config(cfg)?;
    let policy = if rebuild {
        image_folder::CachePolicy::Rebuild
    } else {
        image_folder::CachePolicy::Reuse
    };
    image_folder::load(&spec, split, policy, &mut crate::common::print_cache_event)
}

/// The splits `verify` reads: an image folder's `unlabeled/` only when it exists.
fn splits_of(cfg: &DataConfig) -> Vec<Split> {
    Split::of(cfg.dataset)
        .iter()
        .copied()
        .filter(|&s| {
            s != Split::Unlabeled
                || cfg.dataset != DatasetKind::ImageFolder
                || image_folder::FolderSpec::from_config(cfg)
                    .map(|spec| image_folder::has_unlabeled(&spec))
                    .unwrap_or(false)
        })
        .collect()
}

fn verify(a: VerifyArgs) -> anyhow::Result<()> {
    let cfg = a.data.data_config()?;
    let kind = cfg.dataset;
    let splits = splits_of(&cfg);
    // Every split is read, and every problem printed, before the exit status says "failed".
    let mut failed = Vec::new();
    for &split in &splits {
        let ds = match load_split(&cfg, split, true) {
            Ok(ds) => ds,
            Err(e) => {
                eprintln!("error: {}", flat(kind, split, e));
                failed.push(split.name());
                continue;
            }
        };
        println!("{}", summary(&ds));
        if a.stats {
            let (m, s) = data::channel_stats(&ds);
            println!(
                "{} {split} mean {:.4} {:.4} {:.4} std {:.4} {:.4} {:.4}",
                kind.name(),
                m[0],
                m[1],
                m[2],
                s[0],
                s[1],
                s[2]
            );
        }
    }
    if !failed.is_empty() {
        anyhow::bail!(
            "{} verify: {} of {} splits failed ({})",
            kind.name(),
            failed.len(),
            splits.len(),
            failed.join(", ")
        );
    }
    Ok(())
}

fn preview_cmd(a: PreviewArgs) -> anyhow::Result<()> {
    let cfg = a.data.data_config()?;
    let ds = load_split(&cfg, a.split, false).map_err(|e| flat(cfg.dataset, a.split, e))?;
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
