//! `bench`: images per second of a backbone, training (forward + backward + Adam update) or
//! inference (eval-mode forward), after warm-up. `benches/torch_twin.py` runs the same model and
//! step in PyTorch with the same options and output; `benches/compare.sh` prints the ratio.
//!
//! The training loss is `mean(features²)`, so the step is the backbone alone.

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
}

struct Timing {
    dev: Dev,
    batch: usize,
    steps: usize,
    warmup: usize,
    mode: Mode,
    size: usize,
    dfdx_cache: bool,
}

impl BackboneFn<Dev> for Timing {
    type Output = anyhow::Result<f64>;
    fn call<B: Backbone<Dev> + 'static>(self, mut model: B) -> anyhow::Result<f64> {
        let dev = self.dev;
        if self.dfdx_cache {
            dev.enable_cache();
        }
        let x: Images<Dev> =
            dev.sample_normal_like(&(self.batch, Const::<3>, self.size, self.size));
        let mut opt = Adam::new(
            &model,
            AdamConfig {
                lr: 1e-3,
                ..Default::default()
            },
        );
        let mut grads = model.alloc_grads();
        let mut elapsed = 0.0;
        for step in 0..self.warmup + self.steps {
            let t = Instant::now();
            match self.mode {
                Mode::Train => {
                    let f = model
                        .forward_train(x.clone().traced(grads))
                        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
                    let loss = f.square().mean();
                    grads = loss.backward();
                    opt.update(&mut model, &grads)
                        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
                    model.zero_grads(&mut grads);
                }
                Mode::Infer => {
                    let f = model
                        .forward_eval(x.clone())
                        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
                    std::hint::black_box(f);
                }
            }
            // A GPU runs the step asynchronously: wait for it before reading the clock.
            dev.try_synchronize()
                .map_err(|e| anyhow::anyhow!("{e:?}"))?;
            if step >= self.warmup {
                elapsed += t.elapsed().as_secs_f64();
            }
        }
        Ok((self.batch * self.steps) as f64 / elapsed)
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
    let dev = spatial_reasoning::new_device(0)?;
    let timing = Timing {
        dev: dev.clone(),
        batch: args.batch,
        steps: args.steps,
        warmup: args.warmup,
        mode: args.mode,
        size: args.size,
        dfdx_cache: args.dfdx_cache,
    };
    let ips =
        with_backbone(args.backbone, &dev, 0, timing).map_err(|e| anyhow::anyhow!("{e:?}"))??;
    if args.json {
        let j = serde_json::json!({
            "impl": "dfdx",
            "backbone": args.backbone.name(),
            "batch": args.batch,
            "mode": args.mode.name(),
            "device": spatial_reasoning::device_name(),
            "threads": threads,
            "size": args.size,
            "steps": args.steps,
            "img_per_s": ips,
        });
        println!("{j}");
    } else {
        println!(
            "{} {} batch {} size {} threads {}: {:.1} img/s",
            args.backbone.name(),
            args.mode.name(),
            args.batch,
            args.size,
            threads,
            ips
        );
    }
    Ok(())
}
