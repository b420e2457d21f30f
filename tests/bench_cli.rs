//! `spatial-reasoning bench` smoke runs: the model and whole-step benchmarks run one tiny step,
//! report a positive throughput, and `--bf16` reaches the arithmetic they time (the pretraining
//! benchmark reports the precision of the training config it ran, which the loop applies).

use std::process::Command;

fn bench(args: &[&str]) -> serde_json::Value {
    let out = Command::new(env!("CARGO_BIN_EXE_spatial-reasoning"))
        .arg("bench")
        .args(args)
        .args(["--threads", "1", "--json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    serde_json::from_str(text.trim()).unwrap_or_else(|e| panic!("{e}: {text}"))
}

#[test]
fn bench_reports_the_precision_it_ran() {
    let model = [
        "--backbone",
        "conv4",
        "--batch",
        "4",
        "--steps",
        "1",
        "--warmup",
        "0",
    ];
    let pretrain = [
        "--pretrain",
        "--backbone",
        "conv4",
        "--batch",
        "8",
        "--views",
        "2",
        "--patches",
        "2",
        "--steps",
        "1",
        "--warmup",
        "0",
    ];
    for args in [&model[..], &pretrain[..]] {
        for (flag, want) in [(None, "f32"), (Some("--bf16"), "bf16")] {
            let mut a = args.to_vec();
            a.extend(flag);
            let j = bench(&a);
            assert_eq!(j["precision"], want, "{a:?}: {j}");
            let rate = j["img_per_s"].as_f64().unwrap_or(0.0);
            assert!(rate > 0.0, "{a:?}: {j}");
        }
    }
}
