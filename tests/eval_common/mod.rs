//! Shared helpers of the `eval_*` integration tests: a tiny backbone and synthetic data.
#![allow(dead_code)]

use dfdx::nn::modules;
use dfdx::nn::tensor_collection::{ModuleVisitor, TensorCollection};
use dfdx::prelude::*;
use spatial_reasoning::data::ImageDataset;
use spatial_reasoning::eval::FeatureSet;
use spatial_reasoning::models::{Backbone, Features, Images};

/// A tiny backbone with real batch-norm: per-channel means and mean squares of the pixels, each
/// projected by a Linear(3 → 64), summed, then BatchNorm1D(64) and ReLU. Train mode uses batch
/// statistics (and updates the running ones), eval mode the running statistics.
#[derive(Clone, Debug)]
pub struct Toy<E: Dtype, D: Storage<E>> {
    pub lm: modules::Linear<3, 64, E, D>,
    pub lq: modules::Linear<3, 64, E, D>,
    pub bn: modules::BatchNorm1D<64, E, D>,
}

impl<D: Device<f32>> TensorCollection<f32, D> for Toy<f32, D> {
    type To<E2: Dtype, D2: Device<E2>> = Toy<E2, D2>;
    fn iter_tensors<V: ModuleVisitor<Self, f32, D>>(
        v: &mut V,
    ) -> Result<Option<Self::To<V::E2, V::D2>>, V::Err> {
        v.visit_fields(
            (
                Self::module("lm", |s| &s.lm, |s| &mut s.lm),
                Self::module("lq", |s| &s.lq, |s| &mut s.lq),
                Self::module("bn", |s| &s.bn, |s| &mut s.bn),
            ),
            |(lm, lq, bn)| Toy { lm, lq, bn },
        )
    }
}

pub fn toy(dev: &Cpu) -> Toy<f32, Cpu> {
    Toy {
        lm: dev.build_module::<Linear<3, 64>, f32>(),
        lq: dev.build_module::<Linear<3, 64>, f32>(),
        bn: dev.build_module::<BatchNorm1D<64>, f32>(),
    }
}

impl Backbone<Cpu> for Toy<f32, Cpu> {
    fn forward_train(
        &mut self,
        x: Images<Cpu, OwnedTape<f32, Cpu>>,
    ) -> Result<Features<Cpu, OwnedTape<f32, Cpu>>, CpuError> {
        let m = x
            .with_empty_tape()
            .try_mean::<(usize, Const<3>), Axes2<2, 3>>()?;
        let q = x.square().try_mean::<(usize, Const<3>), Axes2<2, 3>>()?;
        let h = self.lq.try_forward(q)?.try_add(self.lm.try_forward(m)?)?;
        self.bn.try_forward_mut(h)?.try_relu()
    }
    fn forward_eval(&self, x: Images<Cpu>) -> Result<Features<Cpu>, CpuError> {
        let m = x.clone().try_mean::<(usize, Const<3>), Axes2<2, 3>>()?;
        let q = x.square().try_mean::<(usize, Const<3>), Axes2<2, 3>>()?;
        let h = self.lq.try_forward(q)?.try_add(self.lm.try_forward(m)?)?;
        self.bn.try_forward(h)?.try_relu()
    }
    // No convolution: the arithmetic is always f32, and a precision changes nothing.
    fn precision(&self) -> spatial_reasoning::Precision {
        spatial_reasoning::Precision::F32
    }
    fn set_precision(&mut self, _: spatial_reasoning::Precision) {}
}

/// `n` square images of side `s`, class `i % classes`; class `c` has a distinct mean colour,
/// plus per-pixel noise, so classes are separable by colour statistics.
pub fn colour_dataset(n: usize, s: usize, classes: usize, seed: u64) -> ImageDataset {
    use rand::{Rng, SeedableRng};
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut pixels = Vec::with_capacity(n * s * s * 3);
    let mut labels = Vec::with_capacity(n);
    for i in 0..n {
        let c = i % classes;
        labels.push(c as u16);
        let base = [
            (40 + 170 * c / classes.max(1)) as i32,
            (200 - 150 * c / classes.max(1)) as i32,
            (60 + 90 * (c % 2)) as i32,
        ];
        for _ in 0..s * s {
            for b in base {
                pixels.push((b + rng.gen_range(-20..=20)).clamp(0, 255) as u8);
            }
        }
    }
    ImageDataset {
        name: "colours".into(),
        split: "train".into(),
        height: s,
        width: s,
        pixels,
        labels: Some(labels),
        class_names: (0..classes).map(|c| format!("c{c}")).collect(),
    }
}

/// Gaussian clusters: class `c` centred at `scale · e_c` (one-hot direction) in `dim` dims,
/// unit-variance noise. Separable when `scale` is large.
pub fn clusters(n: usize, dim: usize, classes: usize, scale: f32, seed: u64) -> FeatureSet {
    use rand::SeedableRng;
    use rand_distr::{Distribution, StandardNormal};
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut data = Vec::with_capacity(n * dim);
    let mut labels = Vec::with_capacity(n);
    for i in 0..n {
        let c = i % classes;
        labels.push(c as u16);
        for d in 0..dim {
            let noise: f32 = StandardNormal.sample(&mut rng);
            data.push(noise + if d == c { scale } else { 0.0 });
        }
    }
    FeatureSet::new(dim, data, labels, classes).unwrap()
}

/// Bytes of a module's safetensors serialisation (every tensor, running stats included).
pub fn snapshot<M: TensorCollection<f32, Cpu>>(m: &M, name: &str) -> Vec<u8> {
    let dir = std::env::temp_dir().join(format!("sr-eval-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join("m.safetensors");
    m.save_safetensors(&p).unwrap();
    let bytes = std::fs::read(&p).unwrap();
    std::fs::remove_file(&p).ok();
    bytes
}

/// A fresh temporary directory for one test.
pub fn temp_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("sr-eval-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
