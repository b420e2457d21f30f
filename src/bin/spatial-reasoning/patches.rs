//! `patches`: sample SR patch positions (JSON lines), or draw them on real images.

use std::path::PathBuf;

use anyhow::Context;
use spatial_reasoning::augment::{
    Image, Normalize, PatchAugment, PatchParams, PatchPos, PatchSampler,
};
use spatial_reasoning::config::{
    patch_side, resolve_data_root, DataConfig, DatasetKind, OverlapRule, PatchMode,
};
use spatial_reasoning::data::{self, Split};
use spatial_reasoning::rng::{rng_for, Stream};

#[derive(clap::Args)]
pub struct Args {
    /// Image side S in pixels.
    #[arg(long, default_value_t = 32)]
    image_size: usize,
    /// Patch side p in pixels (0 = round(0.375·S)).
    #[arg(long, default_value_t = 0)]
    patch_size: usize,
    /// Patches per image P.
    #[arg(long, default_value_t = 2)]
    count: usize,
    /// Number of samples (images) to draw.
    #[arg(long, default_value_t = 1)]
    samples: usize,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// How a patch becomes a backbone input (only changes the drawn tiles with --out).
    #[arg(long, default_value = "zoom", value_parser = ["zoom", "additive"])]
    mode: String,
    /// `forbidden`: no two patches overlap; `allowed`: the authors' sampler.
    #[arg(long, default_value = "forbidden", value_parser = ["forbidden", "allowed"])]
    overlap: String,
    /// Print one JSON object per sample: {"patches":[{"row":r,"col":c},…]}.
    #[arg(long)]
    json: bool,
    /// Draw the boxes on the first `samples` test images of the dataset into this PNG
    /// (×4 upscaled, each image followed by its patch inputs before normalisation).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Dataset for --out (its images must be S×S).
    #[arg(long, default_value = "cifar10")]
    dataset: DatasetKind,
    /// Data root for --out (default: $SPATIAL_REASONING_DATA or ./data).
    #[arg(long)]
    root: Option<PathBuf>,
}

/// Box colours, one per patch slot (cycled).
const COLOURS: [[u8; 3]; 8] = [
    [230, 25, 75],
    [60, 180, 75],
    [255, 225, 25],
    [0, 130, 200],
    [245, 130, 48],
    [145, 30, 180],
    [70, 240, 240],
    [240, 50, 230],
];

pub fn run(a: Args) -> anyhow::Result<()> {
    let s = a.image_size;
    let overlap = match a.overlap.as_str() {
        "allowed" => OverlapRule::Allowed,
        _ => OverlapRule::Forbidden,
    };
    let mode = match a.mode.as_str() {
        "additive" => PatchMode::Additive,
        _ => PatchMode::Zoom,
    };
    // Geometry errors come before any output: the patch side as a run's config resolves it
    // (0 = round(0.375·S)), and the sampler's rule (`config::patch_fit`, as `check` applies it).
    let p = patch_side(s, a.patch_size);
    let sampler = PatchSampler::square(s, p, a.count, overlap)
        .with_context(|| format!("--image-size {s} --patch-size {p} --count {}", a.count))?;
    let aug = PatchAugment::new(mode, s, p, Normalize::IDENTITY)?;
    let samples: Vec<Vec<PatchPos>> = (0..a.samples)
        .map(|i| sampler.sample(&mut rng_for(a.seed, Stream::Patches, 0, i as u64)))
        .collect();
    if let Some(out) = &a.out {
        let root = resolve_data_root(a.root.as_deref());
        let ds = data::load(a.dataset, &root, Split::Test, &DataConfig::default())?;
        if (ds.height, ds.width) != (s, s) {
            anyhow::bail!(
                "--image-size {s}: {} images are {}×{}",
                a.dataset.name(),
                ds.height,
                ds.width
            );
        }
        if ds.len() < a.samples {
            anyhow::bail!(
                "--samples {}: {} has {} test images",
                a.samples,
                a.dataset.name(),
                ds.len()
            );
        }
        draw(&ds, &samples, &sampler, &aug, a.seed, out)?;
        eprintln!("wrote {}", out.display());
    }
    for (i, pos) in samples.iter().enumerate() {
        if a.json {
            let patches: Vec<_> = pos
                .iter()
                .map(|q| serde_json::json!({"row": q.row, "col": q.col}))
                .collect();
            println!("{}", serde_json::json!({ "patches": patches }));
        } else {
            let list: Vec<String> = pos
                .iter()
                .map(|q| format!("({}, {})", q.row, q.col))
                .collect();
            println!("sample {i}: {}", list.join(" "));
        }
    }
    Ok(())
}

/// One row per sample: the image with its boxes, then each patch's backbone input.
fn draw(
    ds: &data::ImageDataset,
    samples: &[Vec<PatchPos>],
    sampler: &PatchSampler,
    aug: &PatchAugment,
    seed: u64,
    out: &std::path::Path,
) -> anyhow::Result<()> {
    const UP: usize = 4;
    const GAP: usize = 4;
    let s = ds.height;
    let p = sampler.patch();
    let tile = s * UP;
    let cols = 1 + sampler.count();
    let width = cols * tile + (cols + 1) * GAP;
    let height = samples.len() * (tile + GAP) + GAP;
    let mut canvas = image::RgbImage::from_pixel(width as u32, height as u32, image::Rgb([255; 3]));
    let blit = |canvas: &mut image::RgbImage, rgb: &[u8], x0: usize, y0: usize| {
        for y in 0..tile {
            for x in 0..tile {
                let i = ((y / UP) * s + x / UP) * 3;
                canvas.put_pixel(
                    (x0 + x) as u32,
                    (y0 + y) as u32,
                    image::Rgb([rgb[i], rgb[i + 1], rgb[i + 2]]),
                );
            }
        }
    };
    let rect =
        |canvas: &mut image::RgbImage, x0: usize, y0: usize, w: usize, h: usize, c: [u8; 3]| {
            for t in 0..2 {
                for x in x0..x0 + w {
                    canvas.put_pixel(x as u32, (y0 + t) as u32, image::Rgb(c));
                    canvas.put_pixel(x as u32, (y0 + h - 1 - t) as u32, image::Rgb(c));
                }
                for y in y0..y0 + h {
                    canvas.put_pixel((x0 + t) as u32, y as u32, image::Rgb(c));
                    canvas.put_pixel((x0 + w - 1 - t) as u32, y as u32, image::Rgb(c));
                }
            }
        };
    for (i, pos) in samples.iter().enumerate() {
        let y0 = GAP + i * (tile + GAP);
        let bytes = ds.image(i);
        blit(&mut canvas, bytes, GAP, y0);
        let img = Image::from_hwc_u8(bytes, s, s);
        // Colour draws from the sample's own stream, after the positions.
        let mut rng = rng_for(seed, Stream::Patches, 1, i as u64);
        for (j, q) in pos.iter().enumerate() {
            let c = COLOURS[j % COLOURS.len()];
            rect(
                &mut canvas,
                GAP + q.col * UP,
                y0 + q.row * UP,
                p * UP,
                p * UP,
                c,
            );
            let params: PatchParams = aug.sample_params(&mut rng, *q, p);
            let x0 = GAP + (j + 1) * (tile + GAP);
            blit(
                &mut canvas,
                &aug.apply(&img, p, &params).to_hwc_u8(),
                x0,
                y0,
            );
            rect(&mut canvas, x0, y0, tile, tile, c);
        }
    }
    canvas
        .save(out)
        .with_context(|| format!("writing {}", out.display()))?;
    Ok(())
}
