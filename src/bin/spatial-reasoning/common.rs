//! Pieces the subcommands share: config loading with `--set`, the thread pool, progress output
//! (training and the image-folder cache).

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context;
use spatial_reasoning::config::{Config, DatasetKind, PretrainSplit, ValidConfig};
use spatial_reasoning::data::{image_folder, Split};
use spatial_reasoning::train::metrics::RowKind;
use spatial_reasoning::train::Progress;

/// `--config FILE` (or the defaults of `../shared/SPEC.md`) plus `--set section.key=value`
/// overrides, validated.
pub fn load_config(path: Option<&Path>, sets: &[String]) -> anyhow::Result<ValidConfig> {
    let base = match path {
        Some(p) => Config::from_toml_file(p)?,
        None => Config::default(),
    };
    Ok(base.apply_overrides(sets)?.check()?)
}

/// Size rayon's global pool once (0 = one thread per core).
pub fn init_threads(threads: usize) {
    if threads > 0 {
        // A second call (e.g. several arms in one process) keeps the first pool.
        let _ = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build_global();
    }
}

/// Renders training progress: a one-line bar on a terminal, plain periodic lines otherwise.
pub struct ProgressPrinter {
    label: String,
    tty: bool,
    total: u64,
    start: Instant,
    first_step: u64,
}

impl ProgressPrinter {
    pub fn new(label: &str) -> Self {
        Self {
            label: label.to_string(),
            tty: std::io::stderr().is_terminal(),
            total: 0,
            start: Instant::now(),
            first_step: 0,
        }
    }

    pub fn handle(&mut self, p: &Progress) {
        let mut err = std::io::stderr();
        match p {
            Progress::Started {
                total_steps,
                steps_per_epoch,
                resumed_from,
            } => {
                self.total = *total_steps;
                self.first_step = resumed_from.unwrap_or(0);
                self.start = Instant::now();
                let resumed = resumed_from
                    .map(|s| format!(", resumed from step {s}"))
                    .unwrap_or_default();
                let _ = writeln!(
                    err,
                    "[{}] {total_steps} steps ({steps_per_epoch} per epoch){resumed}",
                    self.label
                );
            }
            Progress::Row(r) => {
                let done = r.step.saturating_sub(self.first_step) as f64;
                let left = self.total.saturating_sub(r.step) as f64;
                let eta = if done > 0.0 {
                    self.start.elapsed().as_secs_f64() / done * left
                } else {
                    0.0
                };
                let line = format!(
                    "[{}] {} {}/{} epoch {:.2} loss {:.4} (rel {:.4} dist {:.4}) acc {:.1}% {:.0} img/s wait {:.0}% eta {}",
                    self.label,
                    if r.kind == RowKind::Epoch { "EPOCH" } else { "step" },
                    r.step,
                    self.total,
                    r.epoch,
                    r.loss,
                    r.loss_relation,
                    r.loss_distance,
                    100.0 * r.relation_acc,
                    r.img_per_s,
                    100.0 * r.data_wait,
                    fmt_secs(eta)
                ) + &diagnostics_text(&r.diagnostics);
                if self.tty && r.kind == RowKind::Step {
                    let frac = r.step as f64 / self.total.max(1) as f64;
                    let filled = (frac * 20.0).round() as usize;
                    let _ = write!(
                        err,
                        "\r\x1b[2K[{}{}] {line}",
                        "#".repeat(filled),
                        ".".repeat(20 - filled.min(20))
                    );
                } else {
                    if self.tty {
                        let _ = write!(err, "\r\x1b[2K");
                    }
                    let _ = writeln!(err, "{line}");
                }
            }
            Progress::Checkpoint { step, path } => {
                if !self.tty {
                    let _ = writeln!(
                        err,
                        "[{}] checkpoint {step} -> {}",
                        self.label,
                        path.display()
                    );
                }
            }
            Progress::Note(n) => {
                let _ = writeln!(err, "\n[{}] {n}", self.label);
            }
        }
    }
}

/// ` | kNN 41.2% pos R² 0.31/0.29 offset r 0.52/0.48 (3s)` for an epoch row with diagnostics.
fn diagnostics_text(d: &spatial_reasoning::train::metrics::DiagColumns) -> String {
    let pair = |a: Option<f64>, b: Option<f64>| {
        let f = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.2}"));
        format!("{}/{}", f(a), f(b))
    };
    let mut out = String::new();
    if let Some(k) = d.online_knn_acc {
        out += &format!(" kNN {:.1}%", 100.0 * k);
    }
    if d.position_r2_row.is_some() || d.position_r2_col.is_some() {
        out += &format!(" pos R² {}", pair(d.position_r2_row, d.position_r2_col));
    }
    if d.offset_r_row.is_some() || d.offset_r_col.is_some() {
        out += &format!(" offset r {}", pair(d.offset_r_row, d.offset_r_col));
    }
    if let Some(s) = d.diagnostics_s {
        out = format!(" |{out} ({})", fmt_secs(s));
    }
    out
}

pub fn fmt_secs(s: f64) -> String {
    let s = s.max(0.0) as u64;
    if s >= 3600 {
        format!("{}h{:02}m", s / 3600, (s % 3600) / 60)
    } else if s >= 60 {
        format!("{}m{:02}s", s / 60, s % 60)
    } else {
        format!("{s}s")
    }
}

/// Install a handler of SIGINT (Ctrl-C), SIGTERM (Slurm's time limit, preemption, scancel)
/// and SIGHUP that sets the returned flag: training finishes its step, writes a checkpoint and
/// stops. A second signal exits at once, without a checkpoint.
pub fn stop_flag() -> anyhow::Result<&'static std::sync::atomic::AtomicBool> {
    use std::sync::atomic::{AtomicBool, Ordering};
    static STOP: AtomicBool = AtomicBool::new(false);
    static ONCE: std::sync::Once = std::sync::Once::new();
    let mut result = Ok(());
    ONCE.call_once(|| {
        result = ctrlc::set_handler(|| {
            if STOP.swap(true, Ordering::SeqCst) {
                eprintln!("\nsecond interrupt: exiting without a checkpoint");
                std::process::exit(130);
            }
            eprintln!("\ninterrupt (Ctrl-C or SIGTERM): finishing the current step and writing a checkpoint (a second one aborts)");
        })
        .context("installing the SIGINT/SIGTERM handler");
    });
    result.map(|_| &STOP)
}

pub fn default_run_dir(cfg: &ValidConfig) -> PathBuf {
    PathBuf::from("runs").join(format!(
        "{}-{}-{}-s{}",
        cfg.data.dataset.name(),
        cfg.backbone.name.name(),
        if cfg.method.is_rr() { "rr" } else { "sr" },
        cfg.train.seed
    ))
}

/// Print an image-folder cache event on stderr (a build reports every 256 images, at most one
/// line per second, and its last one).
pub fn print_cache_event(e: image_folder::CacheEvent) {
    use image_folder::CacheEvent as E;
    use std::sync::Mutex;
    static LAST: Mutex<Option<Instant>> = Mutex::new(None);
    match e {
        E::Scanned {
            split,
            images,
            classes,
            hidden,
        } => {
            let hidden = if hidden > 0 {
                format!(", {hidden} hidden entries skipped")
            } else {
                String::new()
            };
            let classes = if classes > 0 {
                format!(" in {classes} classes")
            } else {
                String::new()
            };
            eprintln!("[data] {split}: {images} images{classes}{hidden}");
        }
        E::Reused { split, path } => eprintln!("[data] {split}: cache {}", path.display()),
        E::Building {
            split,
            images,
            reason,
        } => {
            eprintln!("[data] {split}: decoding {images} images into the cache ({reason})");
            *LAST.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
        }
        E::Decoded { split, done, total } => {
            let mut last = LAST.lock().unwrap_or_else(|p| p.into_inner());
            if done == total || last.is_none_or(|t| t.elapsed().as_secs_f64() >= 1.0) {
                eprintln!("[data] {split}: decoded {done}/{total}");
                *last = Some(Instant::now());
            }
        }
        E::Written {
            split,
            path,
            bytes,
            seconds,
        } => eprintln!(
            "[data] {split}: wrote {} ({:.1} MB) in {}",
            path.display(),
            bytes as f64 / 1e6,
            fmt_secs(seconds)
        ),
    }
}

/// Before a command reads an image folder: make the caches of `splits` current, printing the
/// progress of a build (later reads then take seconds). A no-op for the other datasets.
pub fn prepare_image_cache(cfg: &ValidConfig, splits: &[Split]) -> anyhow::Result<()> {
    if cfg.data.dataset != DatasetKind::ImageFolder {
        return Ok(());
    }
    let spec = image_folder::FolderSpec::from_config(&cfg.data)?;
    let mut seen = Vec::new();
    for &split in splits {
        if !seen.contains(&split) {
            seen.push(split);
            image_folder::prepare(&spec, split, &mut print_cache_event)?;
        }
    }
    Ok(())
}

/// The split pretraining reads.
pub fn pretrain_split(cfg: &ValidConfig) -> Split {
    match cfg.data.pretrain_split {
        PretrainSplit::Train => Split::Train,
        PretrainSplit::Unlabeled => Split::Unlabeled,
    }
}
