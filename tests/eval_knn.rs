//! Weighted kNN: hand-computed votes, a brute-force cross-check, separable clusters.

mod eval_common;

use eval_common::clusters;
use spatial_reasoning::eval::{knn_classify, FeatureSet, KnnConfig, KnnIndex};

fn quiet() -> impl FnMut(spatial_reasoning::eval::ProgressEvent) {
    |_| {}
}

/// Training rows a = (1, 0) class 0, b = (0, 1) class 1, c = (1, 1) class 1, d = (−1, 0) class 0.
fn four_points() -> FeatureSet {
    FeatureSet::new(
        2,
        vec![1.0, 0.0, 0.0, 1.0, 1.0, 1.0, -1.0, 0.0],
        vec![0, 1, 1, 0],
        2,
    )
    .unwrap()
}

fn close(a: f32, b: f64) -> bool {
    ((a as f64) - b).abs() <= 1e-5 * b.abs().max(1.0)
}

#[test]
fn votes_match_hand_computation() {
    let index = KnnIndex::new(&four_points()).unwrap();
    // Query q = (2, 0): cosines a 1, b 0, c 1/√2, d −1.
    // k = 2, T = 0.5: neighbours a, c → class 0: e^(1/0.5) = e², class 1: e^(√2).
    let cfg = KnnConfig {
        k: 2,
        temperature: 0.5,
    };
    let v = index.votes(&[2.0, 0.0], 2, &cfg, &mut quiet()).unwrap();
    let e = std::f64::consts::E;
    assert!(close(v[0], e * e), "{v:?}");
    assert!(close(v[1], 2f64.sqrt().exp()), "{v:?}");
    // k = 3 adds b (cosine 0): class 1 gains e^0 = 1.
    let cfg3 = KnnConfig { k: 3, ..cfg };
    let v = index.votes(&[2.0, 0.0], 2, &cfg3, &mut quiet()).unwrap();
    assert!(
        close(v[0], e * e) && close(v[1], 2f64.sqrt().exp() + 1.0),
        "{v:?}"
    );
    // Query (0.2, 1), |q| = √1.04: cosines a 0.2/√1.04, b 1/√1.04, c 1.2/(√1.04·√2),
    // d −0.2/√1.04. k = 2 → b and c, both class 1; class 0 gets nothing.
    let n = 1.04f64.sqrt();
    let v = index.votes(&[0.2, 1.0], 2, &cfg, &mut quiet()).unwrap();
    let expect = (1.0 / n / 0.5).exp() + (1.2 / (n * 2f64.sqrt()) / 0.5).exp();
    assert_eq!(v[0], 0.0);
    assert!(close(v[1], expect), "{v:?} vs {expect}");
    // k larger than the training set is clamped: all four vote, T = 0.1.
    let all = KnnConfig {
        k: 200,
        temperature: 0.1,
    };
    let v = index.votes(&[2.0, 0.0], 2, &all, &mut quiet()).unwrap();
    assert!(close(v[0], 10f64.exp() + (-10f64).exp()), "{v:?}");
    assert!(close(v[1], 1.0 + (2f64.sqrt() / 2.0 / 0.1).exp()), "{v:?}");
}

#[test]
fn prediction_and_zero_query() {
    let train = four_points();
    let test = FeatureSet::new(2, vec![2.0, 0.0, 0.2, 1.0, 0.0, 0.0], vec![0, 1, 0], 2).unwrap();
    let cfg = KnnConfig {
        k: 2,
        temperature: 0.5,
    };
    let r = knn_classify(&train, &test, &cfg, &mut quiet()).unwrap();
    // The zero query has similarity 0 to everything: the top 2 by (similarity, lower index)
    // are a (class 0) and b (class 1) with equal votes, and the tie goes to class 0.
    assert_eq!(r.predictions, vec![0, 1, 0]);
    assert!((r.acc - 1.0).abs() < 1e-6);
    assert_eq!((r.k, r.n_train, r.n_test), (2, 4, 3));
}

#[test]
fn agrees_with_brute_force_on_random_data() {
    let train = clusters(300, 6, 5, 0.5, 21);
    let test = clusters(40, 6, 5, 0.5, 22);
    let cfg = KnnConfig {
        k: 7,
        temperature: 0.1,
    };
    let index = KnnIndex::new(&train).unwrap();
    let votes = index.votes(&test.data, 5, &cfg, &mut quiet()).unwrap();
    let unit = |r: &[f32]| {
        let n = r.iter().map(|v| (*v as f64).powi(2)).sum::<f64>().sqrt();
        r.iter().map(|v| *v as f64 / n).collect::<Vec<f64>>()
    };
    for q in 0..test.n {
        let qn = unit(test.row(q));
        let mut sims: Vec<(f64, usize)> = (0..train.n)
            .map(|j| {
                let tn = unit(train.row(j));
                (qn.iter().zip(&tn).map(|(a, b)| a * b).sum(), j)
            })
            .collect();
        sims.sort_by(|a, b| b.0.partial_cmp(&a.0).unwrap());
        let mut expect = [0f64; 5];
        for &(s, j) in &sims[..7] {
            expect[train.labels[j] as usize] += (s / 0.1).exp();
        }
        for c in 0..5 {
            let got = votes[q * 5 + c] as f64;
            assert!(
                (got - expect[c]).abs() <= 1e-4 * expect[c].max(1.0),
                "query {q} class {c}: {got} vs {}",
                expect[c]
            );
        }
    }
}

#[test]
fn separable_clusters_are_classified_perfectly() {
    let train = clusters(2000, 16, 8, 8.0, 23);
    let test = clusters(500, 16, 8, 8.0, 24);
    let r = knn_classify(&train, &test, &KnnConfig::default(), &mut quiet()).unwrap();
    assert_eq!(r.acc, 1.0);
    assert_eq!(r.k, 200);
}

#[test]
fn bad_settings_are_named_errors() {
    let train = four_points();
    let test = FeatureSet::new(3, vec![1.0; 3], vec![0], 2).unwrap();
    let e = knn_classify(&train, &test, &KnnConfig::default(), &mut quiet()).unwrap_err();
    assert!(e.to_string().contains("dim"), "{e}");
    let index = KnnIndex::new(&train).unwrap();
    let bad_k = KnnConfig {
        k: 0,
        temperature: 0.1,
    };
    let e = index
        .votes(&[1.0, 0.0], 2, &bad_k, &mut quiet())
        .unwrap_err();
    assert!(e.to_string().contains("k"), "{e}");
    let bad_t = KnnConfig {
        k: 1,
        temperature: 0.0,
    };
    let e = index
        .votes(&[1.0, 0.0], 2, &bad_t, &mut quiet())
        .unwrap_err();
    assert!(e.to_string().contains("temperature"), "{e}");
}
