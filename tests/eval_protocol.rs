//! `evaluate_backbone`: the whole protocol in one call, with and without the feature cache.

mod eval_common;

use dfdx::prelude::*;
use eval_common::{colour_dataset, temp_dir, toy};
use spatial_reasoning::augment::Normalize;
use spatial_reasoning::config::{OverlapRule, PatchGeometry};
use spatial_reasoning::eval::{
    evaluate_backbone, CacheSpec, EvalPlan, FeatureCache, KnnConfig, LinearProbeConfig, Protocol,
};

const NORM: Normalize = Normalize {
    mean: [0.5, 0.5, 0.5],
    std: [0.25, 0.25, 0.25],
};

fn plan() -> EvalPlan {
    EvalPlan {
        geometry: PatchGeometry::resolve(16, 6, 0, OverlapRule::Forbidden).unwrap(),
        extract_batch: 32,
        linear: Some(LinearProbeConfig {
            epochs: 5,
            seed: 1,
            ..Default::default()
        }),
        probe_patches: vec![3, 0],
        knn: Some(KnnConfig {
            k: 10,
            ..Default::default()
        }),
    }
}

#[test]
fn runs_linear_per_n_then_knn_and_the_cache_is_read_back() {
    let dev = Cpu::seed_from_u64(0);
    let bb = toy(&dev);
    let train = colour_dataset(120, 16, 3, 1);
    let mut test = colour_dataset(60, 16, 3, 2);
    test.split = "test".into();
    let plain =
        evaluate_backbone(&bb, &dev, &train, &test, &NORM, &plan(), None, &mut |_| {}).unwrap();
    let order: Vec<_> = plain
        .iter()
        .map(|r| (r.protocol, r.probe_patches, r.feature_dim))
        .collect();
    assert_eq!(
        order,
        vec![
            (Protocol::Linear, 0, 64),
            (Protocol::Linear, 3, 256),
            (Protocol::Knn, 0, 64)
        ]
    );
    assert_eq!(
        (plain[0].n_train, plain[0].n_test, plain[0].epochs),
        (120, 60, 5)
    );
    assert_eq!(plain[2].k, Some(10));

    let dir = temp_dir("protocol-cache");
    let cache = FeatureCache::new(&dir);
    let spec = CacheSpec {
        cache: &cache,
        tag: "toy seed 0",
    };
    let first = evaluate_backbone(
        &bb,
        &dev,
        &train,
        &test,
        &NORM,
        &plan(),
        Some(spec),
        &mut |_| {},
    )
    .unwrap();
    let files = std::fs::read_dir(&dir).unwrap().count();
    assert_eq!(files, 2 + 2 * 3, "full + 3 windows, for train and test");
    // A different backbone under the same tag reads the cached features: same numbers.
    let other = toy(&Cpu::seed_from_u64(99));
    let cached = evaluate_backbone(
        &other,
        &dev,
        &train,
        &test,
        &NORM,
        &plan(),
        Some(spec),
        &mut |_| {},
    )
    .unwrap();
    let values =
        |rs: &[spatial_reasoning::eval::EvalResult]| rs.iter().map(|r| r.value).collect::<Vec<_>>();
    assert_eq!(values(&first), values(&plain));
    assert_eq!(values(&cached), values(&first));
    // Under another tag it is recomputed from the other backbone.
    let spec2 = CacheSpec {
        cache: &cache,
        tag: "toy seed 99",
    };
    let fresh = evaluate_backbone(
        &other,
        &dev,
        &train,
        &test,
        &NORM,
        &plan(),
        Some(spec2),
        &mut |_| {},
    )
    .unwrap();
    let direct = evaluate_backbone(
        &other,
        &dev,
        &train,
        &test,
        &NORM,
        &plan(),
        None,
        &mut |_| {},
    )
    .unwrap();
    assert_eq!(values(&fresh), values(&direct));
    assert_ne!(
        values(&direct),
        values(&first),
        "the two backbones must be told apart"
    );
}
