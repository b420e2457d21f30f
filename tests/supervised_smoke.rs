//! Supervised smoke test on real CIFAR-10: Conv-4 + Linear(64→10), Adam, a few hundred steps
//! must lower the loss and beat chance clearly on held-out test images (measured 2026-11-27:
//! loss 2.11 → 1.41 over 300 steps of 64, 47.9 % on 2,000 test images, 3.7 s of training).
//!
//! Data root: `SPATIAL_REASONING_DATA` (locally /work/shared/data). Without the data the test is
//! skipped with a note, except under `CI=true`, where missing data is a failure.

use dfdx::optim::Adam;
use dfdx::prelude::*;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use spatial_reasoning::data::{cifar, Counts, ImageDataset, Split};
use spatial_reasoning::models::{build, Backbone, Conv4, FEATURES};

/// Conv-4 backbone + linear classifier in one collection, so one optimiser covers both.
#[derive(Clone, Debug)]
struct Net {
    bb: Conv4<Cpu>,
    head: modules::Linear<FEATURES, 10, f32, Cpu>,
}

impl TensorCollection<f32, Cpu> for Net {
    type To<E2: Dtype, D2: Device<E2>> = ();
    fn iter_tensors<V: ModuleVisitor<Self, f32, Cpu>>(
        v: &mut V,
    ) -> Result<Option<Self::To<V::E2, V::D2>>, V::Err> {
        v.visit_fields(
            (
                Self::module("bb", |s| &s.bb, |s| &mut s.bb),
                Self::module("head", |s| &s.head, |s| &mut s.head),
            ),
            |_| (),
        )
    }
}

type Batch = (
    Tensor<(usize, Const<3>, usize, usize), f32, Cpu>,
    Tensor<(usize, Const<10>), f32, Cpu>,
    Vec<usize>,
);

/// Images `idx` of `ds` as a normalised NCHW batch, with one-hot labels and the labels.
fn batch(dev: &Cpu, ds: &ImageDataset, idx: &[usize], mean: [f32; 3], std: [f32; 3]) -> Batch {
    let (h, w) = (ds.height, ds.width);
    let mut x = vec![0.0f32; idx.len() * 3 * h * w];
    let mut y = vec![0.0f32; idx.len() * 10];
    let mut labels = vec![];
    for (n, &i) in idx.iter().enumerate() {
        let img = ds.image(i);
        for p in 0..h * w {
            for c in 0..3 {
                x[(n * 3 + c) * h * w + p] = (img[p * 3 + c] as f32 / 255.0 - mean[c]) / std[c];
            }
        }
        let l = ds.label(i).expect("CIFAR-10 is labelled") as usize;
        y[n * 10 + l] = 1.0;
        labels.push(l);
    }
    (
        dev.tensor_from_vec(x, (idx.len(), Const, h, w)),
        dev.tensor_from_vec(y, (idx.len(), Const)),
        labels,
    )
}

#[test]
fn conv4_learns_cifar10() {
    let root = spatial_reasoning::config::resolve_data_root(None);
    let root = if std::env::var_os("SPATIAL_REASONING_DATA").is_some() {
        root
    } else {
        "/work/shared/data".into()
    };
    let train = match cifar::load_cifar10(&root, Split::Train, Counts::Official) {
        Ok(d) => d,
        Err(e) if std::env::var("CI").as_deref() != Ok("true") => {
            eprintln!(
                "SKIPPED: CIFAR-10 not available under {} ({e}); set SPATIAL_REASONING_DATA",
                root.display()
            );
            return;
        }
        Err(e) => panic!("CI=true and CIFAR-10 is missing: {e}"),
    };
    let test = cifar::load_cifar10(&root, Split::Test, Counts::Official).unwrap();
    let (mean, std) = spatial_reasoning::data::channel_stats(&train);

    let dev = Cpu::default();
    let mut net = Net {
        bb: build(&dev, 1).unwrap(),
        head: dev.build_module::<Linear<FEATURES, 10>, f32>(),
    };
    let mut opt = Adam::new(
        &net,
        AdamConfig {
            lr: 3e-3,
            ..Default::default()
        },
    );
    let mut grads = net.alloc_grads();

    let (steps, bs) = (300, 64);
    let mut order: Vec<usize> = (0..156 * bs).collect(); // 9,984 training images
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
    let mut losses = vec![];
    let t0 = std::time::Instant::now();
    for step in 0..steps {
        let start = (step * bs) % order.len();
        if start == 0 {
            order.shuffle(&mut rng);
        }
        let (x, y, _) = batch(&dev, &train, &order[start..start + bs], mean, std);
        let f = net.bb.forward_train(x.traced(grads)).unwrap();
        let loss = cross_entropy_with_logits_loss(net.head.forward_mut(f), y);
        losses.push(loss.array());
        grads = loss.backward();
        opt.update(&mut net, &grads).unwrap();
        net.zero_grads(&mut grads);
    }
    let train_s = t0.elapsed().as_secs_f32();

    let mut correct = 0;
    let n_test = 2000;
    for chunk in (0..n_test).collect::<Vec<_>>().chunks(250) {
        let (x, _, labels) = batch(&dev, &test, chunk, mean, std);
        let logits = net.head.forward(net.bb.forward_eval(x).unwrap()).as_vec();
        for (n, &l) in labels.iter().enumerate() {
            let row = &logits[n * 10..][..10];
            let arg = (0..10).max_by(|&a, &b| row[a].total_cmp(&row[b])).unwrap();
            correct += usize::from(arg == l);
        }
    }
    let acc = correct as f32 / n_test as f32;
    let first: f32 = losses[..20].iter().sum::<f32>() / 20.0;
    let last: f32 = losses[steps - 20..].iter().sum::<f32>() / 20.0;
    eprintln!("conv4 smoke: {steps} steps of {bs} in {train_s:.1}s, loss {first:.3} -> {last:.3}, test acc {acc:.3}");
    assert!(last < first - 0.3, "loss {first} -> {last}");
    assert!(acc > 0.35, "held-out accuracy {acc} (chance 0.10)");
}
