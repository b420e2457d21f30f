//! The synthetic "parts" dataset: 32×32 RGB images of three primitive parts whose **spatial
//! arrangement** decides the class.
//!
//! Every image draws its three part types at random (disc, ring, square, horizontal or vertical
//! bar, triangle up or down, plus sign), independently of the class, so *which* parts occur says
//! nothing about the class. The class fixes where the parts sit relative to each other on a
//! coarse grid (cell spacing 8.5–10.5 px), up to a left-right mirror:
//!
//! ```text
//!  0 row          1 column   2 diagonal   3 peak    4 valley   5 corner-low  6 corner-high
//!  X X X          X          X . .        . X .     X . X      X .           X X
//!                 X          . X .        X . X     . X .      X X           X .
//!                 X          . . X
//!  7 stair-low    8 stair-high   9 chevron
//!  X . .          X X .          X .
//!  . X X          . . X          . X
//!                                X .
//! ```
//!
//! Each image shows its class's layout or that layout's mirror image (chosen at random), so a
//! horizontal flip — the pretraining augmentation — never changes the class; no class is the
//! mirror image of another ([`layout_class`] recognises a layout in either orientation).
//! Classes 3/4, 5/6 and 7/8 are vertical flips (equivalently 180° rotations) of each other: they
//! contain the same pairwise offsets between parts and differ only in which parts are above.
//!
//! Nuisance variation: cell spacing, per-part jitter (±0.75 px), part size (radius 2.4–3.2 px), per-part colour, the
//! position of the whole group, background colour and polarity (dark on light or light on
//! dark), a linear background gradient and Gaussian pixel noise.
//!
//! Image `i` of a split is a pure function of `(seed, split, i)` through
//! `rng_for(seed, Stream::Synthetic, split_id, i)` (train 0, test 1); its class is `i mod 10`,
//! so the classes are exactly balanced. Generation runs in parallel and does not depend on the
//! thread count.

use rand::Rng as _;
use rand_distr::{Distribution, Normal};
use rayon::prelude::*;

use super::{DataError, ImageDataset, Split};
use crate::rng::{rng_for, Rng, Stream};

/// Image side in pixels.
pub const SIZE: usize = 32;
/// Number of classes.
pub const NUM_CLASSES: usize = 10;
/// Parts per image.
pub const PARTS: usize = 3;

/// Largest extent of any part from its centre, in units of its radius.
const REACH: f64 = 1.15;
/// Per-part position jitter (uniform, ± pixels on each axis).
pub const JITTER: f64 = 0.75;

/// A grid cell `(row, col)` of a layout.
pub type Cell = (i32, i32);

/// Class names, in label order.
pub const CLASS_NAMES: [&str; NUM_CLASSES] = [
    "row",
    "column",
    "diagonal",
    "peak",
    "valley",
    "corner-low",
    "corner-high",
    "stair-low",
    "stair-high",
    "chevron",
];

/// The canonical layout of each class (its mirror image is the same class).
pub const CLASS_LAYOUTS: [[Cell; PARTS]; NUM_CLASSES] = [
    [(0, 0), (0, 1), (0, 2)],
    [(0, 0), (1, 0), (2, 0)],
    [(0, 0), (1, 1), (2, 2)],
    [(0, 1), (1, 0), (1, 2)],
    [(0, 0), (0, 2), (1, 1)],
    [(0, 0), (1, 0), (1, 1)],
    [(0, 0), (0, 1), (1, 0)],
    [(0, 0), (1, 1), (1, 2)],
    [(0, 0), (0, 1), (1, 2)],
    [(0, 0), (1, 1), (2, 0)],
];

/// A layout as a sorted set of cells translated so that its top-left bounding corner is (0, 0).
pub fn normalise(cells: &[Cell]) -> Vec<Cell> {
    let r0 = cells.iter().map(|c| c.0).min().unwrap_or(0);
    let c0 = cells.iter().map(|c| c.1).min().unwrap_or(0);
    let mut v: Vec<Cell> = cells.iter().map(|&(r, c)| (r - r0, c - c0)).collect();
    v.sort_unstable();
    v
}

/// The left-right mirror image of a layout (normalised).
pub fn mirror(cells: &[Cell]) -> Vec<Cell> {
    let flipped: Vec<Cell> = cells.iter().map(|&(r, c)| (r, -c)).collect();
    normalise(&flipped)
}

/// The class whose layout is `cells` (in any order and position, either orientation), or
/// `None` when it is no class's layout.
pub fn layout_class(cells: &[Cell]) -> Option<usize> {
    let n = normalise(cells);
    CLASS_LAYOUTS
        .iter()
        .position(|l| normalise(l) == n || mirror(l) == n)
}

/// The kinds of part; every shape is symmetric under a left-right mirror.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PartKind {
    Disc,
    Ring,
    Square,
    HBar,
    VBar,
    TriangleUp,
    TriangleDown,
    Plus,
}

impl PartKind {
    pub const ALL: [PartKind; 8] = [
        PartKind::Disc,
        PartKind::Ring,
        PartKind::Square,
        PartKind::HBar,
        PartKind::VBar,
        PartKind::TriangleUp,
        PartKind::TriangleDown,
        PartKind::Plus,
    ];

    /// Whether the offset `(dx, dy)` from the centre lies inside a part of radius `r`.
    fn contains(self, dx: f64, dy: f64, r: f64) -> bool {
        let (ax, ay) = (dx.abs(), dy.abs());
        match self {
            PartKind::Disc => dx * dx + dy * dy <= r * r,
            PartKind::Ring => {
                let d2 = dx * dx + dy * dy;
                d2 <= r * r && d2 >= 0.3 * r * r
            }
            PartKind::Square => ax <= 0.85 * r && ay <= 0.85 * r,
            PartKind::HBar => ax <= 1.15 * r && ay <= 0.45 * r,
            PartKind::VBar => ay <= 1.15 * r && ax <= 0.45 * r,
            PartKind::TriangleUp => dy <= 0.8 * r && dy >= -r && ax <= (dy + r) / 1.8,
            PartKind::TriangleDown => -dy <= 0.8 * r && -dy >= -r && ax <= (r - dy) / 1.8,
            PartKind::Plus => (ax <= r && ay <= 0.35 * r) || (ay <= r && ax <= 0.35 * r),
        }
    }
}

/// One part: a shape of radius `r` centred at `(cx, cy)` (pixels; x right, y down; pixel
/// `(row, col)` covers `[col, col+1) × [row, row+1)`), filled with `color` (0–255).
#[derive(Clone, Debug, PartialEq)]
pub struct Part {
    pub kind: PartKind,
    pub cx: f64,
    pub cy: f64,
    pub r: f64,
    pub color: [f64; 3],
}

/// Everything that determines one image. [`render`] is a pure function of it.
#[derive(Clone, Debug, PartialEq)]
pub struct Scene {
    pub class: usize,
    /// The grid cell of each part (the class layout or its mirror, before jitter).
    pub cells: [Cell; PARTS],
    /// Grid spacing in pixels.
    pub spacing: f64,
    pub parts: [Part; PARTS],
    /// Background colour (0–255) at the image centre.
    pub background: [f64; 3],
    /// Background change per pixel along x and y (added to all channels).
    pub gradient: [f64; 2],
    /// Per-pixel, per-channel additive noise, HWC, `32·32·3` values.
    pub noise: Vec<f64>,
}

impl Scene {
    /// The left-right mirror image of this scene: `render(&s.mirrored())` is exactly the
    /// horizontal flip of `render(&s)` (positions are multiples of 1/64 px, so `32 − x` is exact).
    pub fn mirrored(&self) -> Scene {
        let max_col = self.cells.iter().map(|c| c.1).max().unwrap_or(0);
        let mut s = self.clone();
        for (k, cell) in s.cells.iter_mut().enumerate() {
            cell.1 = max_col - self.cells[k].1;
        }
        for p in s.parts.iter_mut() {
            p.cx = SIZE as f64 - p.cx;
        }
        s.gradient[0] = -s.gradient[0];
        for row in 0..SIZE {
            for col in 0..SIZE {
                for ch in 0..3 {
                    s.noise[(row * SIZE + col) * 3 + ch] =
                        self.noise[(row * SIZE + (SIZE - 1 - col)) * 3 + ch];
                }
            }
        }
        s
    }

    /// Recover the grid cells from the (jittered) part centres by rounding offsets from the
    /// first part to multiples of the spacing. Relative jitter is at most 1.5 px, well under half
    /// the smallest spacing, so this recovers `cells` up to translation.
    pub fn cells_from_positions(&self) -> Vec<Cell> {
        let p0 = &self.parts[0];
        self.parts
            .iter()
            .map(|p| {
                (
                    ((p.cy - p0.cy) / self.spacing).round() as i32,
                    ((p.cx - p0.cx) / self.spacing).round() as i32,
                )
            })
            .collect()
    }
}

fn q64(v: f64) -> f64 {
    (v * 64.0).round() / 64.0
}

/// HSV (all in [0, 1]) to RGB in 0–255.
fn hsv(h: f64, s: f64, v: f64) -> [f64; 3] {
    let h6 = (h.rem_euclid(1.0)) * 6.0;
    let i = h6.floor();
    let f = h6 - i;
    let (p, q, t) = (v * (1.0 - s), v * (1.0 - s * f), v * (1.0 - s * (1.0 - f)));
    let (r, g, b) = match i as i32 {
        0 => (v, t, p),
        1 => (q, v, p),
        2 => (p, v, t),
        3 => (p, q, v),
        4 => (t, p, v),
        _ => (v, p, q),
    };
    [r * 255.0, g * 255.0, b * 255.0]
}

/// Draw the scene of class `class` from `rng`.
pub fn sample_scene(class: usize, rng: &mut Rng) -> Scene {
    let class = class % NUM_CLASSES;
    let mut cells = CLASS_LAYOUTS[class];
    if rng.gen_bool(0.5) {
        let m = mirror(&cells);
        cells.copy_from_slice(&m);
    }
    // Shuffle which part sits in which cell (types are drawn independently anyway).
    for k in (1..PARTS).rev() {
        let j = rng.gen_range(0..=k);
        cells.swap(k, j);
    }
    let spacing = rng.gen_range(8.5..10.5);
    // Polarity: bright parts on a dark background, or dark parts on a light one.
    let dark_bg = rng.gen_bool(0.5);
    let (bg_v, part_v) = if dark_bg {
        (rng.gen_range(0.05..0.35), 0.65..1.0)
    } else {
        (rng.gen_range(0.7..0.95), 0.05..0.4)
    };
    let background = hsv(rng.gen(), rng.gen_range(0.0..0.5), bg_v);
    let mut parts: Vec<Part> = cells
        .iter()
        .map(|&(row, col)| {
            let kind = PartKind::ALL[rng.gen_range(0..PartKind::ALL.len())];
            let r = q64(rng.gen_range(2.4..3.2));
            let color = hsv(
                rng.gen(),
                rng.gen_range(0.3..1.0),
                rng.gen_range(part_v.clone()),
            );
            Part {
                kind,
                cx: col as f64 * spacing + rng.gen_range(-JITTER..JITTER),
                cy: row as f64 * spacing + rng.gen_range(-JITTER..JITTER),
                r,
                color,
            }
        })
        .collect();
    // Place the group uniformly where every part stays inside the image with a 0.5 px margin.
    let reach = |p: &Part| REACH * p.r + 0.25;
    let lo_x = parts
        .iter()
        .map(|p| reach(p) - p.cx)
        .fold(f64::MIN, f64::max);
    let hi_x = parts
        .iter()
        .map(|p| SIZE as f64 - reach(p) - p.cx)
        .fold(f64::MAX, f64::min);
    let lo_y = parts
        .iter()
        .map(|p| reach(p) - p.cy)
        .fold(f64::MIN, f64::max);
    let hi_y = parts
        .iter()
        .map(|p| SIZE as f64 - reach(p) - p.cy)
        .fold(f64::MAX, f64::min);
    let shift = |rng: &mut Rng, lo: f64, hi: f64| {
        if hi > lo {
            rng.gen_range(lo..hi)
        } else {
            (lo + hi) / 2.0
        }
    };
    let (sx, sy) = (shift(rng, lo_x, hi_x), shift(rng, lo_y, hi_y));
    for p in parts.iter_mut() {
        p.cx = q64(p.cx + sx);
        p.cy = q64(p.cy + sy);
    }
    let grad_amp = rng.gen_range(0.0..1.2); // per pixel: up to ±19 across the image
    let angle: f64 = rng.gen_range(0.0..std::f64::consts::TAU);
    let gradient = [q64(grad_amp * angle.cos()), q64(grad_amp * angle.sin())];
    let sigma = rng.gen_range(3.0..12.0);
    let normal = Normal::new(0.0, sigma).expect("sigma is positive");
    let noise = (0..SIZE * SIZE * 3).map(|_| normal.sample(rng)).collect();
    Scene {
        class,
        cells,
        spacing,
        parts: [parts[0].clone(), parts[1].clone(), parts[2].clone()],
        background,
        gradient,
        noise,
    }
}

/// Render a scene into `out` (`32·32·3` bytes, HWC RGB). Parts are anti-aliased by 4×4
/// supersampling.
pub fn render(scene: &Scene, out: &mut [u8]) {
    const SS: usize = 4;
    let mut img = vec![0f64; SIZE * SIZE * 3];
    let c = SIZE as f64 / 2.0;
    for row in 0..SIZE {
        for col in 0..SIZE {
            let g = scene.gradient[0] * (col as f64 + 0.5 - c)
                + scene.gradient[1] * (row as f64 + 0.5 - c);
            for ch in 0..3 {
                img[(row * SIZE + col) * 3 + ch] = scene.background[ch] + g;
            }
        }
    }
    for p in &scene.parts {
        let reach = REACH * p.r;
        let r0 = ((p.cy - reach).floor().max(0.0)) as usize;
        let r1 = ((p.cy + reach).ceil().min(SIZE as f64)) as usize;
        let c0 = ((p.cx - reach).floor().max(0.0)) as usize;
        let c1 = ((p.cx + reach).ceil().min(SIZE as f64)) as usize;
        for row in r0..r1 {
            for col in c0..c1 {
                let mut hits = 0;
                for sy in 0..SS {
                    for sx in 0..SS {
                        let x = col as f64 + (sx as f64 + 0.5) / SS as f64;
                        let y = row as f64 + (sy as f64 + 0.5) / SS as f64;
                        if p.kind.contains(x - p.cx, y - p.cy, p.r) {
                            hits += 1;
                        }
                    }
                }
                if hits > 0 {
                    let a = hits as f64 / (SS * SS) as f64;
                    for ch in 0..3 {
                        let v = &mut img[(row * SIZE + col) * 3 + ch];
                        *v = *v * (1.0 - a) + p.color[ch] * a;
                    }
                }
            }
        }
    }
    for (o, (v, n)) in out.iter_mut().zip(img.iter().zip(&scene.noise)) {
        *o = (v + n).round().clamp(0.0, 255.0) as u8;
    }
}

/// The RNG split id of a split (train 0, test 1).
pub fn split_id(split: Split) -> Option<u64> {
    match split {
        Split::Train => Some(0),
        Split::Test => Some(1),
        Split::Unlabeled => None,
    }
}

/// The scene of image `index` of `split`.
pub fn scene_at(seed: u64, split_id: u64, index: usize) -> Scene {
    let mut rng = rng_for(seed, Stream::Synthetic, split_id, index as u64);
    sample_scene(index % NUM_CLASSES, &mut rng)
}

/// Generate `n` images of a split (labels `i mod 10`), in parallel on the current rayon pool.
pub fn generate(split: Split, n: usize, seed: u64) -> Result<ImageDataset, DataError> {
    let Some(sid) = split_id(split) else {
        return Err(DataError::Invalid {
            path: "<synthetic>".into(),
            detail: "synthetic has no unlabeled split".into(),
        });
    };
    if n == 0 {
        return Err(DataError::Invalid {
            path: "<synthetic>".into(),
            detail: format!("{split} size is 0"),
        });
    }
    let per = SIZE * SIZE * 3;
    let mut pixels = vec![0u8; n * per];
    pixels
        .par_chunks_mut(per)
        .enumerate()
        .for_each(|(i, dst)| render(&scene_at(seed, sid, i), dst));
    Ok(ImageDataset {
        name: "synthetic".into(),
        split: split.name().into(),
        height: SIZE,
        width: SIZE,
        pixels,
        labels: Some((0..n).map(|i| (i % NUM_CLASSES) as u16).collect()),
        class_names: CLASS_NAMES.iter().map(|s| s.to_string()).collect(),
    })
}
