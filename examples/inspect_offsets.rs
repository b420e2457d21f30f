//! What does a trained SR head predict for patch pairs? Loads the newest checkpoint of an SR run
//! directory (Conv-4 backbone), predicts the offsets of the patch pairs of test images, and prints
//! the Pearson correlation between predicted and true Δrow and Δcol (1 = perfect, 0 = no
//! relation).
//!
//!     cargo run --release --example inspect_offsets -- RUN_DIR [IMAGES]

use std::path::PathBuf;

use spatial_reasoning::augment::{PatchAugment, PatchSampler};
use spatial_reasoning::config::Config;
use spatial_reasoning::data::{self, Split};
use spatial_reasoning::experiment::run_normalization;
use spatial_reasoning::method::inspect::{predict_offsets, SrConv4};
use spatial_reasoning::train::load_sr_model;

fn pearson(xs: &[f32], ys: &[f32]) -> f64 {
    let n = xs.len() as f64;
    let mx = xs.iter().map(|&x| x as f64).sum::<f64>() / n;
    let my = ys.iter().map(|&y| y as f64).sum::<f64>() / n;
    let (mut c, mut vx, mut vy) = (0.0, 0.0, 0.0);
    for (&x, &y) in xs.iter().zip(ys) {
        let (dx, dy) = (x as f64 - mx, y as f64 - my);
        c += dx * dy;
        vx += dx * dx;
        vy += dy * dy;
    }
    c / (vx * vy).sqrt()
}

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let run_dir = PathBuf::from(
        args.next()
            .ok_or_else(|| anyhow::anyhow!("usage: inspect_offsets RUN_DIR [IMAGES]"))?,
    );
    let images: usize = args.next().map_or(Ok(500), |s| s.parse())?;
    let cfg = Config::from_toml_file(&run_dir.join("config.toml"))?.check()?;
    let test = data::load(cfg.data.dataset, &cfg.data_root(), Split::Test, &cfg.data)?;
    let model: SrConv4 = load_sr_model(&run_dir)?;
    let sampler = PatchSampler::for_geometry(&cfg.geometry);
    let aug = PatchAugment::new(
        cfg.method.patch_mode,
        cfg.geometry.image(),
        cfg.geometry.patch(),
        run_normalization(&run_dir)?,
    )?;
    let idx: Vec<usize> = (0..images.min(test.len())).collect();
    let preds = predict_offsets(&model, &test, &idx, &sampler, &aug, 11)?;
    let col = |f: fn(&(f32, f32)) -> f32, g: bool| -> Vec<f32> {
        preds
            .iter()
            .map(|p| f(if g { &p.predicted } else { &p.target }))
            .collect()
    };
    let r_row = pearson(&col(|t| t.0, false), &col(|t| t.0, true));
    let r_col = pearson(&col(|t| t.1, false), &col(|t| t.1, true));
    let same = preds.iter().filter(|p| p.logit > 0.0).count();
    println!(
        "{} patch pairs of {} test images: r(Δrow) = {r_row:.3}, r(Δcol) = {r_col:.3}, {same} called 'same image'",
        preds.len(),
        idx.len()
    );
    Ok(())
}
