//! The `spatial-reasoning` command line. Each subcommand lives in its own module; the library
//! does the work, this binary only parses arguments and prints.

use clap::{Parser, Subcommand};

mod bench;
mod common;
mod data;
mod eval;
mod export;
mod info;
mod patches;
mod pretrain;
mod report;
mod run;
mod slurm;

#[derive(Parser)]
#[command(
    name = "spatial-reasoning",
    version,
    about = "Relational + spatial reasoning for self-supervised visual representation learning"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Crate version, compiled features, thread count; with --backbone, its parameter count.
    Info(info::Args),
    /// Verify or preview a dataset.
    #[command(subcommand)]
    Data(data::Command),
    /// Sample patch positions (JSON lines) or draw them on real images.
    Patches(patches::Args),
    /// Time training or inference steps of a backbone.
    Bench(bench::Args),
    /// Pretrain a backbone with relational reasoning (+ spatial reasoning).
    Pretrain(pretrain::Args),
    /// Probe a pretrained run: linear (with n patches) and kNN.
    Eval(eval::Args),
    /// The main job: pretrain every arm over seeds, evaluate, write report.md with plots.
    Run(run::Args),
    /// Rebuild the results table and accuracy plots from a results CSV.
    Report(report::Args),
    /// Write a run's trained backbone for PyTorch (python/spatial_reasoning_torch.py loads it).
    Export(export::Args),
}

fn main() {
    let cli = Cli::parse();
    // Training and timing processes keep freed activation buffers for reuse (see the function).
    spatial_reasoning::tune_allocator();
    let result = match cli.command {
        Command::Info(a) => info::run(a),
        Command::Data(c) => data::run(c),
        Command::Patches(a) => patches::run(a),
        Command::Bench(a) => bench::run(a),
        Command::Pretrain(a) => pretrain::run(a),
        Command::Eval(a) => eval::run(a),
        Command::Run(a) => run::run(a),
        Command::Report(a) => report::run(a),
        Command::Export(a) => export::run(a),
    };
    if let Err(e) = result {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
