//! Result records: JSON round trip, CSV header handling and quoting, timestamps.

mod eval_common;

use eval_common::temp_dir;
use spatial_reasoning::eval::results::{rfc3339_utc, CSV_COLUMNS};
use spatial_reasoning::eval::{
    append_csv, EvalResult, KnnResult, LinearProbeResult, Protocol, ResultRow,
};

fn linear() -> EvalResult {
    let r = LinearProbeResult {
        acc: 0.6125,
        test_loss: 1.1,
        final_train_loss: 1.05,
        train_acc: 0.65,
        epochs: 100,
        dim: 64,
        classes: 10,
        loss_history: vec![2.0, 1.05],
    };
    EvalResult::from_linear(&r, 0, 50_000, 10_000, 3.5)
}

#[test]
fn results_carry_metric_names_and_round_trip_through_json() {
    let l = linear();
    assert_eq!(
        (l.protocol, l.metric.as_str()),
        (Protocol::Linear, "linear_eval_acc")
    );
    assert!((l.value - 0.6125).abs() < 1e-7);
    let k = EvalResult::from_knn(
        &KnnResult {
            acc: 0.5,
            k: 200,
            temperature: 0.1,
            n_train: 50_000,
            n_test: 10_000,
            predictions: vec![],
        },
        64,
        1.2,
    );
    assert_eq!(k.metric, "knn_acc");
    assert_eq!(k.k, Some(200));
    for r in [l, k] {
        let json = serde_json::to_string(&r).unwrap();
        let back: EvalResult = serde_json::from_str(&json).unwrap();
        assert_eq!(back, r);
    }
    let json = serde_json::to_value(linear()).unwrap();
    assert_eq!(json["protocol"], "linear");
    assert!(
        json.get("k").is_none(),
        "kNN-only fields are omitted: {json}"
    );
}

#[test]
fn csv_gets_one_header_and_one_line_per_row() {
    let p = temp_dir("csv").join("sub").join("results.csv");
    let mut row = ResultRow::new("run-1", "sr", 1, "cifar10", "conv4", &linear());
    assert_eq!(row.protocol, "linear");
    row.timestamp = Some("2026-11-27T06:18:15Z".into());
    append_csv(&p, &row).unwrap();
    row.arm = "rr, \"ablation\"".into();
    row.seed = 2;
    row.varied_key = Some("patches".into());
    row.varied_value = Some("3".into());
    append_csv(&p, &row).unwrap();
    let text = std::fs::read_to_string(&p).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "{text}");
    assert_eq!(lines[0], CSV_COLUMNS.join(","));
    assert_eq!(
        lines[1],
        "run-1,sr,1,cifar10,conv4,linear,linear_eval_acc,0,0.612500011920929,100,,,2026-11-27T06:18:15Z"
    );
    assert!(
        lines[2].starts_with("run-1,\"rr, \"\"ablation\"\"\",2,"),
        "{}",
        lines[2]
    );
    assert!(
        lines[2].ends_with(",patches,3,2026-11-27T06:18:15Z"),
        "{}",
        lines[2]
    );
}

#[test]
fn an_existing_file_keeps_its_column_order() {
    let p = temp_dir("csv-order").join("results.csv");
    std::fs::write(&p, "arm,value,run\nrr,0.5,x").unwrap();
    let row = ResultRow::new("r", "sr", 1, "cifar10", "conv4", &linear());
    append_csv(&p, &row).unwrap();
    assert_eq!(
        std::fs::read_to_string(&p).unwrap(),
        "arm,value,run\nrr,0.5,x\nsr,0.612500011920929,r\n"
    );
}

#[test]
fn a_csv_with_an_unknown_column_is_refused() {
    let p = temp_dir("csv-bad").join("results.csv");
    std::fs::write(&p, "a,b,c\n1,2,3\n").unwrap();
    let row = ResultRow::new("r", "sr", 1, "cifar10", "conv4", &linear());
    let e = append_csv(&p, &row).unwrap_err();
    assert!(
        e.to_string().contains("results.csv") && e.to_string().contains("\"a\""),
        "{e}"
    );
    assert_eq!(
        std::fs::read_to_string(&p).unwrap(),
        "a,b,c\n1,2,3\n",
        "file untouched"
    );
}

// Golden timestamps:
// python -c "import datetime as d; [print(t, d.datetime.fromtimestamp(t, d.timezone.utc)
//   .strftime('%Y-%m-%dT%H:%M:%SZ')) for t in [0, 951782400, 1795760295, 4102444799]]"
#[test]
fn timestamps_are_rfc3339_utc() {
    assert_eq!(rfc3339_utc(0), "1970-01-01T00:00:00Z");
    assert_eq!(rfc3339_utc(951_782_400), "2000-02-29T00:00:00Z");
    assert_eq!(rfc3339_utc(1_795_760_295), "2026-11-27T06:18:15Z");
    assert_eq!(rfc3339_utc(4_102_444_799), "2099-12-31T23:59:59Z");
    let now = ResultRow::timestamp_now();
    assert!(now.starts_with("20") && now.ends_with('Z'), "{now}");
    assert_eq!(now.len(), 20, "{now}");
}
