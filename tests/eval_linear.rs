//! Linear probe: golden values against PyTorch, analytic and behavioural checks.
// Golden values are kept exactly as PyTorch printed them.
#![allow(clippy::excessive_precision)]

mod eval_common;

use eval_common::clusters;
use spatial_reasoning::eval::{
    linear_probe, train_linear, train_linear_from, FeatureSet, LinearClassifier, LinearProbeConfig,
};

fn quiet() -> impl FnMut(spatial_reasoning::eval::ProgressEvent) {
    |_| {}
}

// Golden values: full-batch Adam (lr 0.1) on 6 rows, 3 features, 3 classes, 5 steps.
// ```python
// import torch
// X = torch.tensor([[1.0, 0.5, -0.2],[0.3,-1.0,0.8],[-0.5,0.2,0.1],[0.9,0.9,-0.9],[-1.2,0.4,0.6],[0.0,-0.3,-0.7]])
// y = torch.tensor([0,1,2,0,2,1])
// lin = torch.nn.Linear(3,3)
// with torch.no_grad():
//     lin.weight.copy_(torch.tensor([[0.1,-0.2,0.3],[0.0,0.25,-0.1],[-0.3,0.05,0.2]]))
//     lin.bias.copy_(torch.tensor([0.01,-0.02,0.03]))
// opt = torch.optim.Adam(lin.parameters(), lr=0.1)
// losses=[]
// for e in range(5):
//     opt.zero_grad(); loss = torch.nn.functional.cross_entropy(lin(X), y); loss.backward(); opt.step(); losses.append(loss.item())
// print(losses, lin.weight.tolist(), lin.bias.tolist())
// ```
#[test]
fn full_batch_adam_matches_pytorch() {
    let x = vec![
        1.0, 0.5, -0.2, 0.3, -1.0, 0.8, -0.5, 0.2, 0.1, 0.9, 0.9, -0.9, -1.2, 0.4, 0.6, 0.0, -0.3,
        -0.7,
    ];
    let set = FeatureSet::new(3, x, vec![0, 1, 2, 0, 2, 1], 3).unwrap();
    let init = LinearClassifier {
        dim: 3,
        classes: 3,
        weight: vec![0.1, -0.2, 0.3, 0.0, 0.25, -0.1, -0.3, 0.05, 0.2],
        bias: vec![0.01, -0.02, 0.03],
    };
    let cfg = LinearProbeConfig {
        epochs: 5,
        batch: 8,
        lr: 0.1,
        ..Default::default()
    };
    let (clf, stats) = train_linear_from(&set, init, &cfg, &mut quiet()).unwrap();
    let losses = [1.12967312, 0.99138141, 0.86292988, 0.75046676, 0.65486151];
    for (s, l) in stats.iter().zip(losses) {
        assert!((s.loss - l).abs() < 1e-5, "loss {} vs torch {l}", s.loss);
    }
    let w = [
        0.58923465,
        0.2921209,
        -0.18148592,
        0.00156512,
        -0.2438758,
        0.35863265,
        -0.79442179,
        0.5482924,
        0.69129896,
    ];
    let b = [-0.1822256, 0.16177714, -0.07511767];
    for (a, e) in clf.weight.iter().zip(w).chain(clf.bias.iter().zip(b)) {
        assert!((a - e).abs() < 1e-5, "parameter {a} vs torch {e}");
    }
}

#[test]
fn separable_clusters_reach_full_accuracy_and_the_loss_falls() {
    let train = clusters(2000, 16, 4, 6.0, 1);
    let test = clusters(1000, 16, 4, 6.0, 2);
    let cfg = LinearProbeConfig {
        epochs: 20,
        lr: 1e-2,
        ..Default::default()
    };
    let r = linear_probe(&train, &test, &cfg, &mut quiet()).unwrap();
    assert!(r.acc >= 0.99, "test acc {}", r.acc);
    assert!(r.train_acc >= 0.99, "train acc {}", r.train_acc);
    assert_eq!(r.loss_history.len(), 20);
    assert_eq!(r.epochs, 20);
    assert_eq!(r.final_train_loss, *r.loss_history.last().unwrap());
    // Behaviour: the loss falls, and by a lot on separable data.
    let (first, last) = (r.loss_history[0], r.final_train_loss);
    assert!(last < 0.2 * first, "loss {first} -> {last}");
    for w in r.loss_history.windows(2).take(10) {
        assert!(
            w[1] < w[0],
            "loss rose early in training: {:?}",
            r.loss_history
        );
    }
}

#[test]
fn random_labels_stay_at_chance_on_the_test_set() {
    // Features carry no information about the labels: the class of row i is (i * 7919) % 10
    // of a random permutation-like sequence, independent of the Gaussian features.
    let mut train = clusters(3000, 32, 10, 0.0, 3);
    let mut test = clusters(3000, 32, 10, 0.0, 4);
    let mut state = 12345u64;
    for l in train.labels.iter_mut().chain(test.labels.iter_mut()) {
        state = spatial_reasoning::rng::mix(state);
        *l = (state % 10) as u16;
    }
    let cfg = LinearProbeConfig {
        epochs: 10,
        ..Default::default()
    };
    let r = linear_probe(&train, &test, &cfg, &mut quiet()).unwrap();
    assert!(
        (r.acc - 0.1).abs() < 0.03,
        "test acc {} should be ~0.10",
        r.acc
    );
}

#[test]
fn same_seed_same_result_other_seed_differs() {
    let train = clusters(500, 8, 3, 1.0, 5);
    let test = clusters(300, 8, 3, 1.0, 6);
    let cfg = |seed| LinearProbeConfig {
        epochs: 3,
        batch: 32,
        seed,
        ..Default::default()
    };
    let a = linear_probe(&train, &test, &cfg(1), &mut quiet()).unwrap();
    let b = linear_probe(&train, &test, &cfg(1), &mut quiet()).unwrap();
    let c = linear_probe(&train, &test, &cfg(2), &mut quiet()).unwrap();
    assert_eq!(a, b);
    assert_ne!(a.loss_history, c.loss_history);
}

#[test]
fn progress_reports_every_epoch() {
    let train = clusters(100, 4, 2, 3.0, 7);
    let mut epochs = vec![];
    let cfg = LinearProbeConfig {
        epochs: 4,
        ..Default::default()
    };
    train_linear(&train, 2, &cfg, &mut |e| {
        if let spatial_reasoning::eval::ProgressEvent::LinearEpoch {
            epoch, epochs: n, ..
        } = e
        {
            assert_eq!(n, 4);
            epochs.push(epoch);
        }
    })
    .unwrap();
    assert_eq!(epochs, vec![1, 2, 3, 4]);
}

#[test]
fn bad_inputs_are_named_errors() {
    let train = clusters(50, 4, 2, 3.0, 8);
    let other = clusters(50, 5, 2, 3.0, 9);
    let cfg = LinearProbeConfig::default();
    let e = linear_probe(&train, &other, &cfg, &mut quiet()).unwrap_err();
    assert!(e.to_string().contains("dim"), "{e}");
    let e = train_linear(&train, 1, &cfg, &mut quiet()).unwrap_err();
    assert!(e.to_string().contains("classes = 1"), "{e}");
    let zero = LinearProbeConfig {
        epochs: 0,
        ..Default::default()
    };
    let e = train_linear(&train, 2, &zero, &mut quiet()).unwrap_err();
    assert!(e.to_string().contains("epochs"), "{e}");
    let e = FeatureSet::new(2, vec![0.0; 4], vec![0, 3], 2).unwrap_err();
    assert!(e.to_string().contains("label 3"), "{e}");
    let e = FeatureSet::new(2, vec![0.0, f32::NAN, 1.0, 1.0], vec![0, 1], 2).unwrap_err();
    assert!(e.to_string().contains("not finite"), "{e}");
}
