//! `bench`: images per second of a backbone, training (forward + backward + Adam update) or
//! inference (eval-mode forward), after warm-up. `benches/torch_twin.py` runs the same model and
//! step in PyTorch with the same options and output; `benches/compare.sh` prints the ratio.
//!
//! The training loss is `mean(features²)`, so the step is the backbone alone. In a `cuda` build
//! the training step's update is the crate's optimiser (Adam on the device, as the training loop
//! runs it); on the CPU it is dfdx's Adam (as the CPU figures in BENCHMARKS.md were measured).

use dfdx::optim::Adam;
use dfdx::prelude::*;
use spatial_reasoning::models::{with_backbone, Backbone, BackboneFn, BackboneKind, Images};
use spatial_reasoning::Device as Dev;
use std::time::Instant;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    /// Forward (batch statistics) + backward + Adam update.
    Train,
    /// Eval-mode forward, no tape.
    Infer,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Train => "train",
            Mode::Infer => "infer",
        }
    }
}

#[derive(clap::Args)]
pub struct Args {
    /// Backbone to time.
    #[arg(long, default_value = "resnet32")]
    backbone: BackboneKind,
    /// Images per step.
    #[arg(long, default_value_t = 64)]
    batch: usize,
    /// Timed steps (after warm-up).
    #[arg(long, default_value_t = 10)]
    steps: usize,
    /// Untimed warm-up steps.
    #[arg(long, default_value_t = 2)]
    warmup: usize,
    /// Worker threads (rayon pool; dfdx's matmul and the crate's ops use it). Default: all cores.
    #[arg(long)]
    threads: Option<usize>,
    #[arg(long, value_enum, default_value_t = Mode::Train)]
    mode: Mode,
    /// Image side in pixels.
    #[arg(long, default_value_t = 32)]
    size: usize,
    /// Turn on dfdx's tensor cache. Off by default: with the crate's ops it only grows (their
    /// buffers come from the allocator and end in the cache), measured slower.
    #[arg(long)]
    dfdx_cache: bool,
    /// Print one JSON object instead of a sentence.
    #[arg(long)]
    json: bool,
    /// Time the whole pretraining step instead: the data pipeline (K views + P patches per
    /// image) and the model (backbone + relation head + our Adam) running together, through the
    /// real training loop on random `size`×`size` images. Reports source images per second, the
    /// fraction of time the model waited for data, and peak resident memory.
    #[arg(long)]
    pretrain: bool,
    /// Time only the data pipeline (K views + P patches per image), items per second.
    #[arg(long, conflicts_with = "pretrain")]
    pipeline: bool,
    /// With --pretrain/--pipeline: augmented views per image (K).
    #[arg(long, default_value_t = 4)]
    views: usize,
    /// With --pretrain/--pipeline: patches per image (P).
    #[arg(long, default_value_t = 2)]
    patches: usize,
    /// With --pretrain: patch side p in pixels (default round(0.375 · size)).
    #[arg(long)]
    patch_size: Option<usize>,
    /// Run the convolution GEMMs in bf16 (bf16 operands, f32 accumulation, f32 weights;
    /// CPU only, see `train.precision`).
    #[arg(long)]
    bf16: bool,
    /// `cuda` build: let cuDNN's convolutions use TF32 tensor cores (PyTorch's default
    /// `cudnn.allow_tf32 = True`); without it they are restricted to FMA float math.
    #[arg(long)]
    tf32: bool,
    /// `cuda` build: also time each op of the step on the GPU (CUDA events) and report the
    /// milliseconds per step of each (adds the events' own cost to the step). With --pretrain:
    /// over every step, warm-up included.
    #[arg(long)]
    profile: bool,
}

struct Timing {
    dev: Dev,
    batch: usize,
    steps: usize,
    warmup: usize,
    mode: Mode,
    size: usize,
    dfdx_cache: bool,
    profile: bool,
    precision: spatial_reasoning::Precision,
}

/// What a timed run measured.
struct Measured {
    img_per_s: f64,
    /// `cuda` build: per-op GPU milliseconds per timed step (`--profile`), and peak bytes in use.
    profile: Option<serde_json::Value>,
    peak_gpu_bytes: Option<u64>,
}

impl BackboneFn<Dev> for Timing {
    type Output = anyhow::Result<Measured>;
    fn call<B: Backbone<Dev> + 'static>(self, mut model: B) -> anyhow::Result<Measured> {
        let dev = self.dev;
        if self.dfdx_cache {
            dev.enable_cache();
        }
        model.set_precision(self.precision);
        let x: Images<Dev> =
            dev.sample_normal_like(&(self.batch, Const::<3>, self.size, self.size));
        let mut opt = Adam::new(
            &model,
            AdamConfig {
                lr: 1e-3,
                ..Default::default()
            },
        );
        // The training loop's optimiser (on the device in a cuda build), Adam lr 1e-3.
        let mut ours = spatial_reasoning::optim::Optimizer::new(Default::default());
        let mut grads = model.alloc_grads();
        let mut elapsed = 0.0;
        for step in 0..self.warmup + self.steps {
            if step == self.warmup {
                profile_start(&dev, self.profile)?;
            }
            let t = Instant::now();
            {
                // (--profile: the step's events bracket this block, before the wait below)
                let _scope = step_scope(&dev, self.profile && step >= self.warmup);
                match self.mode {
                    Mode::Train => {
                        let f = model
                            .forward_train(x.clone().traced(grads))
                            .map_err(|e| anyhow::anyhow!("{e:?}"))?;
                        let loss = f.square().mean();
                        grads = loss.backward();
                        if cfg!(feature = "cuda") {
                            ours.step(&mut model, &mut grads)?;
                        } else {
                            opt.update(&mut model, &grads)
                                .map_err(|e| anyhow::anyhow!("{e:?}"))?;
                        }
                        model.zero_grads(&mut grads);
                    }
                    Mode::Infer => {
                        let f = model
                            .forward_eval(x.clone())
                            .map_err(|e| anyhow::anyhow!("{e:?}"))?;
                        std::hint::black_box(f);
                    }
                }
            }
            // A GPU runs the step asynchronously: wait for it before reading the clock.
            dev.try_synchronize()
                .map_err(|e| anyhow::anyhow!("{e:?}"))?;
            if step >= self.warmup {
                elapsed += t.elapsed().as_secs_f64();
            }
        }
        Ok(Measured {
            img_per_s: (self.batch * self.steps) as f64 / elapsed,
            profile: profile_report(&dev, self.profile, self.steps)?,
            peak_gpu_bytes: peak_gpu_bytes(&dev),
        })
    }
}

#[cfg(feature = "cuda")]
use spatial_reasoning::ops::cuda;

/// Starts the per-op profile (drops what warm-up recorded).
fn profile_start(dev: &Dev, on: bool) -> anyhow::Result<()> {
    #[cfg(feature = "cuda")]
    if on {
        cuda::profile::enable(true);
        cuda::profile::reset(dev).map_err(|e| anyhow::anyhow!("{e:?}"))?;
    }
    let _ = (dev, on);
    Ok(())
}

#[cfg(feature = "cuda")]
fn step_scope(dev: &Dev, on: bool) -> Option<cuda::profile::Scope> {
    if on {
        cuda::profile::scope_on(dev, "step")
    } else {
        None
    }
}

#[cfg(not(feature = "cuda"))]
fn step_scope(_dev: &Dev, _on: bool) -> Option<()> {
    None
}

/// The per-op table: milliseconds per step and launches per step of each op name.
fn profile_report(dev: &Dev, on: bool, steps: usize) -> anyhow::Result<Option<serde_json::Value>> {
    #[cfg(feature = "cuda")]
    if on {
        let ops = cuda::profile::report(dev).map_err(|e| anyhow::anyhow!("{e:?}"))?;
        cuda::profile::enable(false);
        let rows: Vec<serde_json::Value> = ops
            .iter()
            .map(|o| {
                serde_json::json!({
                    "op": o.name,
                    "ms_per_step": o.ms / steps as f64,
                    "calls_per_step": o.calls as f64 / steps as f64,
                })
            })
            .collect();
        return Ok(Some(serde_json::Value::Array(rows)));
    }
    let _ = (dev, on, steps);
    Ok(None)
}

/// Peak bytes in use from the GPU's memory pool (`cuda` build).
fn peak_gpu_bytes(dev: &Dev) -> Option<u64> {
    #[cfg(feature = "cuda")]
    {
        cuda::peak_memory(dev).ok()
    }
    #[cfg(not(feature = "cuda"))]
    {
        let _ = dev;
        None
    }
}

pub fn run(args: Args) -> anyhow::Result<()> {
    if args.batch < 2 || args.steps == 0 {
        anyhow::bail!("--batch must be at least 2 (batch-norm) and --steps at least 1");
    }
    if args.size < 16 {
        anyhow::bail!(
            "--size {} is too small: the backbones need at least 16 px",
            args.size
        );
    }
    if let Some(n) = args.threads {
        rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .build_global()?;
    }
    let threads = rayon::current_num_threads();
    let precision = if args.bf16 {
        spatial_reasoning::Precision::Bf16
    } else {
        spatial_reasoning::Precision::F32
    };
    precision.check_supported()?;
    if (args.tf32 || args.profile) && !cfg!(feature = "cuda") {
        anyhow::bail!("--tf32 and --profile apply to the cuda build only");
    }
    #[cfg(feature = "cuda")]
    cuda::set_tf32(args.tf32);
    if args.pipeline {
        return bench_pipeline(&args, threads);
    }
    if args.pretrain {
        return bench_pretrain(&args, threads, precision);
    }
    let dev = spatial_reasoning::new_device(0)?;
    let timing = Timing {
        dev: dev.clone(),
        batch: args.batch,
        steps: args.steps,
        warmup: args.warmup,
        mode: args.mode,
        size: args.size,
        dfdx_cache: args.dfdx_cache,
        profile: args.profile,
        precision,
    };
    let m =
        with_backbone(args.backbone, &dev, 0, timing).map_err(|e| anyhow::anyhow!("{e:?}"))??;
    let ips = m.img_per_s;
    let math = if cfg!(feature = "cuda") {
        Some(if args.tf32 { "tf32" } else { "fp32" })
    } else {
        None
    };
    if args.json {
        let mut j = serde_json::json!({
            "impl": "dfdx",
            "backbone": args.backbone.name(),
            "batch": args.batch,
            "mode": args.mode.name(),
            "device": spatial_reasoning::device_name(),
            "threads": threads,
            "size": args.size,
            "precision": precision.name(),
            "steps": args.steps,
            "img_per_s": ips,
        });
        if let Some(math) = math {
            j["math"] = math.into();
        }
        if let Some(b) = m.peak_gpu_bytes {
            j["peak_gpu_mib"] = (b as f64 / (1 << 20) as f64).into();
        }
        if let Some(p) = m.profile {
            j["profile"] = p;
        }
        println!("{j}");
    } else {
        println!(
            "{} {} batch {} size {} threads {} {}{}: {:.1} img/s{}",
            args.backbone.name(),
            args.mode.name(),
            args.batch,
            args.size,
            threads,
            precision.name(),
            math.map(|m| format!(" ({m})")).unwrap_or_default(),
            ips,
            m.peak_gpu_bytes
                .map(|b| format!(", peak GPU memory {:.0} MiB", b as f64 / (1 << 20) as f64))
                .unwrap_or_default()
        );
        if let Some(serde_json::Value::Array(rows)) = &m.profile {
            for r in rows {
                println!(
                    "  {:<18} {:>8.3} ms/step {:>6.1} calls/step",
                    r["op"].as_str().unwrap_or("?"),
                    r["ms_per_step"].as_f64().unwrap_or(0.0),
                    r["calls_per_step"].as_f64().unwrap_or(0.0)
                );
            }
        }
    }
    Ok(())
}

/// Peak resident set size of this process in MiB (`VmHWM`), where /proc is available.
fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

fn bench_pipeline(args: &Args, threads: usize) -> anyhow::Result<()> {
    let secs = (args.steps as f64).max(1.0);
    let items_per_s = spatial_reasoning::augment::bench_pipeline(
        args.size,
        args.batch,
        args.views,
        args.patches,
        secs,
    );
    if args.json {
        let j = serde_json::json!({
            "impl": "spatial-reasoning",
            "bench": "pipeline",
            "batch": args.batch,
            "views": args.views,
            "patches": args.patches,
            "size": args.size,
            "threads": threads,
            "items_per_s": items_per_s,
        });
        println!("{j}");
    } else {
        println!(
            "pipeline size {} batch {} K {} P {} threads {}: {:.0} views+patches/s",
            args.size, args.batch, args.views, args.patches, threads, items_per_s
        );
    }
    Ok(())
}

fn bench_pretrain(
    args: &Args,
    threads: usize,
    precision: spatial_reasoning::Precision,
) -> anyhow::Result<()> {
    use rand::Rng as _;
    use spatial_reasoning::config::Config;
    use spatial_reasoning::train::{self, metrics::RowKind, PretrainOptions, Progress};
    let total = args.warmup + args.steps;
    let dir = std::env::temp_dir().join(format!("sr-bench-pretrain-{}", std::process::id()));
    let sets = vec![
        // Random images of any size, made below: the config names an image folder (the one
        // dataset kind of any size) that is never read.
        "data.dataset=image-folder".to_string(),
        format!("data.path={:?}", dir.display().to_string()),
        format!("data.image_size={}", args.size),
        format!("backbone.name={}", args.backbone.name()),
        format!("method.views={}", args.views),
        format!("method.patches={}", args.patches),
        format!("method.patch_size={}", args.patch_size.unwrap_or(0)),
        format!("method.alpha={}", if args.patches == 0 { 0.0 } else { 1.0 }),
        format!("train.batch_size={}", args.batch),
        "train.epochs=1".into(),
        "train.log_every=1".into(),
        // time the training step alone
        "diagnostics.enabled=false".into(),
        // the training loop gives the backbone the run's precision
        format!("train.precision={}", precision.name()),
    ];
    let cfg = Config::default().apply_overrides(&sets)?.check()?;
    // Random images of the requested size (the synthetic generator is 32×32 only).
    let n = args.batch * total;
    let mut rng = spatial_reasoning::rng::rng_for(0, spatial_reasoning::rng::Stream::Other, 0, 0);
    let pixels: Vec<u8> = (0..n * args.size * args.size * 3)
        .map(|_| rng.gen())
        .collect();
    let ds = spatial_reasoning::data::ImageDataset {
        name: "random".into(),
        split: "train".into(),
        height: args.size,
        width: args.size,
        pixels,
        labels: None,
        class_names: vec![],
    };
    let (mean, std) = spatial_reasoning::data::channel_stats(&ds);
    let data = train::TrainData {
        train: std::sync::Arc::new(ds),
        normalize: spatial_reasoning::augment::Normalize { mean, std },
    };
    let _ = std::fs::remove_dir_all(&dir);
    let mut rows = Vec::new();
    let mut cb = |p: &Progress| {
        if let Progress::Row(r) = p {
            if r.kind == RowKind::Step {
                rows.push(r.clone());
            }
        }
    };
    // --profile: every op of every step (warm-up included) on the training thread (this one).
    #[cfg(feature = "cuda")]
    cuda::profile::enable(args.profile);
    let result = train::pretrain(
        &cfg,
        &data,
        &dir,
        PretrainOptions {
            progress: Some(&mut cb),
            ..Default::default()
        },
    );
    let _ = std::fs::remove_dir_all(&dir);
    result?;
    let profile = if args.profile {
        let dev = spatial_reasoning::new_device(0)?;
        profile_report(&dev, true, rows.len().max(1))?
    } else {
        None
    };
    // Each row covers one step (log_every = 1): drop the warm-up steps, then
    // images/s = Σ images / Σ seconds and wait = Σ wait / Σ seconds over the timed steps.
    let timed: Vec<_> = rows.iter().skip(args.warmup).collect();
    let secs: f64 = timed.iter().map(|r| args.batch as f64 / r.img_per_s).sum();
    let wait: f64 = timed
        .iter()
        .map(|r| r.data_wait * args.batch as f64 / r.img_per_s)
        .sum();
    let img_per_s = (timed.len() * args.batch) as f64 / secs;
    let wait_frac = wait / secs;
    let rss = peak_rss_mib();
    // cuda build: the device's memory pool is per GPU, so a second handle reads its high-water mark.
    let peak_gpu_mib = if cfg!(feature = "cuda") {
        spatial_reasoning::new_device(0)
            .ok()
            .and_then(|d| peak_gpu_bytes(&d))
            .map(|b| b as f64 / (1 << 20) as f64)
    } else {
        None
    };
    if args.json {
        let mut j = serde_json::json!({
            "impl": "spatial-reasoning",
            "bench": "pretrain",
            "backbone": args.backbone.name(),
            "batch": args.batch,
            "views": args.views,
            "patches": args.patches,
            "patch_size": cfg.geometry.patch(),
            "size": args.size,
            "precision": cfg.train.precision.name(),
            "threads": threads,
            "steps": timed.len(),
            "img_per_s": img_per_s,
            "data_wait": wait_frac,
            "peak_rss_mib": rss,
        });
        if let Some(m) = peak_gpu_mib {
            j["peak_gpu_mib"] = m.into();
            j["math"] = (if args.tf32 { "tf32" } else { "fp32" }).into();
        }
        if let Some(p) = profile {
            j["profile"] = p;
        }
        println!("{j}");
    } else {
        println!(
            "pretrain {} B {} K {} P {} p {} size {} threads {} {}: {:.2} source img/s, data wait {:.1}%, peak RSS {}{}",
            args.backbone.name(),
            args.batch,
            args.views,
            args.patches,
            cfg.geometry.patch(),
            args.size,
            threads,
            cfg.train.precision.name(),
            img_per_s,
            100.0 * wait_frac,
            rss.map(|m| format!("{m:.0} MiB")).unwrap_or_else(|| "n/a".into()),
            peak_gpu_mib
                .map(|m| format!(", peak GPU memory {m:.0} MiB"))
                .unwrap_or_default()
        );
    }
    Ok(())
}
