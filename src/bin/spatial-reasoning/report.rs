//! `report --csv results.csv --out DIR`: rebuild the table and the accuracy plots from a results
//! CSV alone (no runs needed), e.g. to regenerate a committed study's numbers.

use std::path::PathBuf;

use spatial_reasoning::report;

#[derive(clap::Args)]
pub struct Args {
    /// A results CSV written by `run` or `eval`.
    #[arg(long)]
    csv: PathBuf,
    /// Where to write results.md and plots/ (default: the CSV's folder).
    #[arg(long)]
    out: Option<PathBuf>,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let out = args
        .out
        .clone()
        .or_else(|| args.csv.parent().map(|p| p.to_path_buf()))
        .unwrap_or_else(|| PathBuf::from("."));
    let files = report::regenerate_from_csv(&args.csv, &out)?;
    let rows = report::read_results_csv(&args.csv)?;
    println!("{}", report::accuracy_table(&report::summarize(&rows)));
    eprintln!(
        "wrote {} and {} plots",
        files.markdown.display(),
        files.plots.len()
    );
    Ok(())
}
