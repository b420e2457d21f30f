//! Runs `examples/sr_minimal.rs` (compiled into this test as a module, so the test does not
//! depend on cargo having built the example binary first) and checks what a researcher would:
//! the loss fell, and the probes beat chance.

#[path = "../examples/sr_minimal.rs"]
#[allow(dead_code)] // the example's `main` is not called here
mod sr_minimal;

use spatial_reasoning::train::metrics::read_rows;

#[test]
fn sr_minimal_example_pretrains_and_probes() {
    let dir = std::env::temp_dir().join(format!("sr-minimal-test-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let started = std::time::Instant::now();
    let rows = sr_minimal::run(&dir).expect("the example runs");
    let secs = started.elapsed().as_secs_f64();

    // Linear (n = 0) and kNN, as fractions.
    let metrics: Vec<&str> = rows.iter().map(|r| r.metric.as_str()).collect();
    assert!(
        metrics.contains(&"linear_eval_acc") && metrics.contains(&"knn_acc"),
        "{metrics:?}"
    );
    // Ten balanced classes: chance is 10 %. Measured at this budget (seeds 1 and 2): linear
    // 15.2 % / 17.7 %, while a random-init Conv-4 probes at 11.3 % (`spatial-reasoning run
    // --set run.arms=["random-init"]` with the same data and probe). 13 % is three binomial
    // standard deviations above chance on 1000 test images: the features carry class information.
    for r in &rows {
        assert!(
            r.value > 0.0 && r.value <= 1.0,
            "{} = {}",
            r.metric,
            r.value
        );
    }
    let linear = rows.iter().find(|r| r.metric == "linear_eval_acc").unwrap();
    assert!(linear.value > 0.13, "linear probe {:.3}", linear.value);
    // Pretraining made progress: the last logged loss is below the first.
    let log = read_rows(&dir.join("metrics.jsonl")).unwrap();
    assert!(log.len() >= 3, "{} metric rows", log.len());
    let (first, last) = (log.first().unwrap().loss, log.last().unwrap().loss);
    assert!(last < first, "loss {first} -> {last}");
    // The relation head learned its pair task (0.5 = guessing).
    assert!(log.last().unwrap().relation_acc > 0.6, "{:?}", log.last());
    eprintln!("sr_minimal ran in {secs:.1} s");
    std::fs::remove_dir_all(&dir).ok();
}
