//! `info`: version, features, threads; `--backbone NAME` prints `params N`.

use spatial_reasoning::models::BackboneKind;

#[derive(clap::Args)]
pub struct Args {
    /// Print the trainable parameter count of this backbone.
    #[arg(long)]
    backbone: Option<BackboneKind>,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    if let Some(kind) = args.backbone {
        println!(
            "params {}",
            spatial_reasoning::models::trainable_params(kind)
        );
        return Ok(());
    }
    println!("spatial-reasoning {}", env!("CARGO_PKG_VERSION"));
    let features: Vec<&str> = [("cpu", true), ("cuda", cfg!(feature = "cuda"))]
        .into_iter()
        .filter(|(_, on)| *on)
        .map(|(n, _)| n)
        .collect();
    println!("features {}", features.join(","));
    println!("threads {}", rayon::current_num_threads());
    Ok(())
}
