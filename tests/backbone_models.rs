//! Backbones (SPEC §1): exact parameter counts, shapes at 32/64/96 px, train vs eval batch-norm,
//! gradients reaching every parameter, seeded init, and an exact safetensors round trip with
//! readable names.

use dfdx::optim::Adam;
use dfdx::prelude::*;
use spatial_reasoning::models::{
    build, trainable_params, with_backbone, Backbone, BackboneFn, BackboneKind, Conv4, Images,
    ResNet32, ResNet8, FEATURES,
};

fn images(dev: &Cpu, b: usize, s: usize, seed: u64) -> Images<Cpu> {
    use rand::{Rng, SeedableRng};
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let v: Vec<f32> = (0..b * 3 * s * s)
        .map(|_| rng.gen_range(-2.0f32..2.0))
        .collect();
    dev.tensor_from_vec(v, (b, Const::<3>, s, s))
}

#[test]
fn trainable_parameter_counts_match_spec() {
    assert_eq!(trainable_params(BackboneKind::Conv4), 24_648);
    assert_eq!(trainable_params(BackboneKind::Resnet8), 77_392);
    assert_eq!(trainable_params(BackboneKind::Resnet32), 466_256);
    assert_eq!(trainable_params(BackboneKind::Resnet56), 855_120);
}

struct Shapes;
impl BackboneFn<Cpu> for Shapes {
    type Output = ();
    fn call<B: Backbone<Cpu> + 'static>(self, mut m: B) {
        let dev = Cpu::default();
        for s in [32, 64, 96] {
            let y = m.forward_eval(images(&dev, 2, s, 1)).unwrap();
            assert_eq!(*y.shape(), (2, Const::<FEATURES>));
            assert!(y.as_vec().iter().all(|v| v.is_finite()));
            let y = m
                .forward_train(images(&dev, 2, s, 1).leaky_traced())
                .unwrap();
            assert_eq!(*y.shape(), (2, Const::<FEATURES>));
        }
    }
}

#[test]
fn every_backbone_maps_32_64_96_px_to_features() {
    for kind in [
        BackboneKind::Conv4,
        BackboneKind::Resnet8,
        BackboneKind::Resnet32,
    ] {
        with_backbone(kind, &Cpu::default(), 1, Shapes).unwrap();
    }
}

/// Every trainable tensor gets a gradient (Adam refuses unused parameters), a step changes the
/// loss, training mode updates running statistics, eval mode does not.
struct TrainStep;
impl BackboneFn<Cpu> for TrainStep {
    type Output = ();
    fn call<B: Backbone<Cpu> + 'static>(self, mut m: B) {
        let dev = Cpu::default();
        let x = images(&dev, 4, 32, 2);
        let mut opt = Adam::new(
            &m,
            AdamConfig {
                lr: 1e-2,
                ..Default::default()
            },
        );
        let mut grads = m.alloc_grads();
        let stats_before = running_stats(&m);
        let y0 = m.forward_eval(x.clone()).unwrap().as_vec();
        assert_eq!(
            running_stats(&m),
            stats_before,
            "forward_eval must not touch running stats"
        );
        let mut losses = vec![];
        for _ in 0..3 {
            let y = m.forward_train(x.clone().traced(grads)).unwrap();
            let loss = y.square().mean();
            losses.push(loss.array());
            grads = loss.backward();
            opt.update(&mut m, &grads)
                .expect("every parameter receives a gradient");
            m.zero_grads(&mut grads);
        }
        assert!(losses[2] < losses[0], "loss went {losses:?}");
        assert_ne!(
            running_stats(&m),
            stats_before,
            "forward_train must update running stats"
        );
        let y1 = m.forward_eval(x).unwrap().as_vec();
        assert_ne!(y0, y1);
    }
}

fn running_stats<B: TensorCollection<f32, Cpu>>(m: &B) -> Vec<f32> {
    // Save to bytes via safetensors and pick out the running statistics.
    let dir = std::env::temp_dir().join(format!(
        "sr-stats-{}-{:?}",
        std::process::id(),
        std::thread::current().id()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("m.safetensors");
    m.save_safetensors(&path).unwrap();
    let t = read_safetensors(&path);
    std::fs::remove_dir_all(&dir).unwrap();
    t.into_iter()
        .filter(|(k, _)| k.contains("running_"))
        .flat_map(|(_, v)| v)
        .collect()
}

/// Name → f32 values of a safetensors file (sorted by name).
fn read_safetensors(path: &std::path::Path) -> Vec<(String, Vec<f32>)> {
    let bytes = std::fs::read(path).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    let data = &bytes[8 + n..];
    let mut out: Vec<(String, Vec<f32>)> = header
        .iter()
        .filter(|(k, _)| *k != "__metadata__")
        .map(|(k, v)| {
            assert_eq!(v["dtype"], "F32", "{k}");
            let off = v["data_offsets"].as_array().unwrap();
            let (a, b) = (
                off[0].as_u64().unwrap() as usize,
                off[1].as_u64().unwrap() as usize,
            );
            let vals = data[a..b]
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
                .collect();
            (k.clone(), vals)
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

#[test]
fn every_parameter_trains_and_batch_norm_modes_differ() {
    for kind in [BackboneKind::Conv4, BackboneKind::Resnet8] {
        with_backbone(kind, &Cpu::default(), 3, TrainStep).unwrap();
    }
}

#[test]
fn init_is_seeded_kaiming_fan_out() {
    let dev = Cpu::default();
    let a: ResNet32<Cpu> = build(&dev, 5).unwrap();
    let b: ResNet32<Cpu> = build(&dev, 5).unwrap();
    let c: ResNet32<Cpu> = build(&dev, 6).unwrap();
    let w = a.stage3.rest[0].conv1.weight.as_vec();
    assert_eq!(
        w,
        b.stage3.rest[0].conv1.weight.as_vec(),
        "same seed, same weights"
    );
    assert_ne!(
        w,
        c.stage3.rest[0].conv1.weight.as_vec(),
        "different seed, different weights"
    );
    // 64·64·9 = 36,864 draws of N(0, 2/(64·9)).
    let n = w.len() as f64;
    let mean = w.iter().map(|&v| v as f64).sum::<f64>() / n;
    let std = (w.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / n).sqrt();
    let want = (2.0f64 / (64.0 * 9.0)).sqrt();
    assert!(mean.abs() < 3.0 * want / n.sqrt() * 1.5, "mean {mean}");
    assert!((std / want - 1.0).abs() < 0.02, "std {std}, want {want}");
    let s = a.stage2.first.shortcut.conv.weight.as_vec();
    let s_std = (s.iter().map(|&v| (v as f64).powi(2)).sum::<f64>() / s.len() as f64).sqrt();
    assert!(
        (s_std / (2.0f64 / 32.0).sqrt() - 1.0).abs() < 0.15,
        "1×1 shortcut std {s_std}"
    );
    assert_eq!(a.stem.bn.weight.as_vec(), vec![1.0; 16]);
    assert_eq!(a.stem.bn.bias.as_vec(), vec![0.0; 16]);
    assert_eq!(a.stem.bn.running_var.as_vec(), vec![1.0; 16]);
}

#[test]
fn safetensors_round_trip_is_exact_with_readable_names() {
    let dev = Cpu::default();
    let dir = std::env::temp_dir().join(format!("sr-backbone-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();

    // Train a little so running stats are not at their init values.
    let mut a: ResNet8<Cpu> = build(&dev, 1).unwrap();
    let _ = a
        .forward_train(images(&dev, 4, 32, 9).leaky_traced())
        .unwrap();
    let path = dir.join("resnet8.safetensors");
    a.save_safetensors(&path).unwrap();
    let mut b: ResNet8<Cpu> = build(&dev, 2).unwrap();
    b.load_safetensors(&path).unwrap();
    let x = images(&dev, 3, 32, 4);
    assert_eq!(
        a.forward_eval(x.clone()).unwrap().as_vec(),
        b.forward_eval(x).unwrap().as_vec()
    );
    let tensors = read_safetensors(&path);
    let names: Vec<&str> = tensors.iter().map(|(k, _)| k.as_str()).collect();
    for want in [
        "stem.conv.weight",
        "stem.bn.weight",
        "stage1.0.conv1.weight",
        "stage2.0.bn1.running_mean",
        "stage2.0.shortcut.conv.weight",
        "stage3.0.shortcut.bn.running_var",
        "stage3.0.conv2.weight",
    ] {
        assert!(names.contains(&want), "{want} missing from {names:?}");
    }
    let rm = &tensors
        .iter()
        .find(|(k, _)| k == "stage2.0.bn1.running_mean")
        .unwrap()
        .1;
    assert_eq!(rm, &a.stage2.first.bn1.running_mean.as_vec());
    assert_eq!(
        &tensors
            .iter()
            .find(|(k, _)| k == "stem.conv.weight")
            .unwrap()
            .1
            .len(),
        &(16 * 3 * 9)
    );

    let c4: Conv4<Cpu> = build(&dev, 1).unwrap();
    let p4 = dir.join("conv4.safetensors");
    c4.save_safetensors(&p4).unwrap();
    let names4: Vec<String> = read_safetensors(&p4).into_iter().map(|(k, _)| k).collect();
    assert_eq!(
        names4.len(),
        20,
        "4 conv weights + 4 × 4 batch-norm tensors"
    );
    assert!(
        names4.contains(&"block4.bn.running_var".to_string()),
        "{names4:?}"
    );
    let mut d: Conv4<Cpu> = build(&dev, 7).unwrap();
    d.load_safetensors(&p4).unwrap();
    assert_eq!(
        d.block3.conv.weight.as_vec(),
        c4.block3.conv.weight.as_vec()
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn cpu_backbones_are_send_and_sync() {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<Conv4<Cpu>>();
    send_sync::<ResNet8<Cpu>>();
    send_sync::<ResNet32<Cpu>>();
    send_sync::<spatial_reasoning::models::ResNet56<Cpu>>();
}

/// Loss, input gradient and first/last weight gradients of one training step of ResNet-8,
/// computed inside a rayon pool of `threads` threads.
fn resnet8_step(threads: usize) -> (f32, Vec<f32>, Vec<f32>, Vec<f32>, Vec<f32>) {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap();
    pool.install(|| {
        let dev = Cpu::default();
        let mut m: ResNet8<Cpu> = build(&dev, 11).unwrap();
        let x = images(&dev, 20, 32, 12);
        let f = m.forward_train(x.clone().leaky_traced()).unwrap();
        let loss = f.square().mean();
        let l = loss.array();
        let g = loss.backward();
        (
            l,
            g.get(&x).as_vec(),
            g.get(&m.stem.conv.weight).as_vec(),
            g.get(&m.stage3.first.shortcut.conv.weight).as_vec(),
            m.stage3.first.bn2.running_var.as_vec(),
        )
    })
}

#[test]
fn training_step_is_bitwise_independent_of_thread_count() {
    let one = resnet8_step(1);
    assert_eq!(one, resnet8_step(2));
    assert_eq!(one, resnet8_step(3));
    assert!(
        one.2.iter().any(|&v| v != 0.0),
        "the stem weight receives a gradient"
    );
}
