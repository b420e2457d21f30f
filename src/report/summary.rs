//! Mean ± sample standard deviation over seeds.

use serde::{Deserialize, Serialize};

use crate::eval::ResultRow;

/// Mean and sample standard deviation of one group of [`ResultRow`]s: one arm, one probe, all
/// seeds.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SummaryRow {
    pub dataset: String,
    pub backbone: String,
    pub arm: String,
    pub protocol: String,
    pub metric: String,
    pub probe_patches: usize,
    /// The arm without its `key=value` part (see [`split_arm`]): `sr patches=3 → sr`.
    pub family: String,
    /// For an ablation arm (see [`split_arm`]): the hyper-parameter varied, e.g. `patches`.
    pub varied_key: Option<String>,
    /// For an ablation arm: its value, e.g. `3`.
    pub varied_value: Option<String>,
    /// Number of rows (seeds) in the group.
    pub count: usize,
    /// Seeds of the group, in the order met.
    pub seeds: Vec<u64>,
    /// Mean of `value`, in [0, 1] for accuracies.
    pub mean: f64,
    /// Sample standard deviation (divisor n − 1); `NaN` when `count < 2`.
    pub std: f64,
}

/// Mean and sample standard deviation (divisor n − 1) of `xs`.
///
/// `mean = Σx / n`, `std = sqrt(Σ(x − mean)² / (n − 1))`; the mean of an empty slice and the std of
/// fewer than two values are `NaN`.
pub fn mean_std(xs: &[f64]) -> (f64, f64) {
    let n = xs.len();
    if n == 0 {
        return (f64::NAN, f64::NAN);
    }
    let mean = xs.iter().sum::<f64>() / n as f64;
    if n < 2 {
        return (mean, f64::NAN);
    }
    let ss: f64 = xs.iter().map(|x| (x - mean) * (x - mean)).sum();
    (mean, (ss / (n - 1) as f64).sqrt())
}

/// Groups `rows` by (dataset, backbone, arm, protocol, metric, probe_patches) and reduces each
/// group over its seeds to mean ± sample std.
///
/// Groups come out in the order their first row appears, so the caller's arm order (e.g. `random`,
/// `rr`, `sr`, `supervised`) is kept. The results CSV is append-only, so a run evaluated again
/// has two rows for one probe: the later row (the re-evaluation) replaces the earlier one, and a
/// run counts once.
pub fn summarize(rows: &[ResultRow]) -> Vec<SummaryRow> {
    type Key<'a> = (&'a str, &'a str, &'a str, &'a str, &'a str, usize);
    fn key(r: &ResultRow) -> Key<'_> {
        (
            &r.dataset,
            &r.backbone,
            &r.arm,
            &r.protocol,
            &r.metric,
            r.probe_patches,
        )
    }
    let mut order: Vec<Key> = Vec::new();
    let mut groups: Vec<Vec<&ResultRow>> = Vec::new();
    for r in rows {
        let k = key(r);
        match order.iter().position(|o| *o == k) {
            Some(i) => match groups[i]
                .iter()
                .position(|o| o.run == r.run && o.seed == r.seed)
            {
                Some(j) => groups[i][j] = r,
                None => groups[i].push(r),
            },
            None => {
                order.push(k);
                groups.push(vec![r]);
            }
        }
    }
    groups
        .into_iter()
        .map(|g| {
            let values: Vec<f64> = g.iter().map(|r| r.value).collect();
            let (mean, std) = mean_std(&values);
            let first = g[0];
            // The row's own varied key and value win; else they are read from the arm's name.
            let (family, parsed) = split_arm(&first.arm);
            let given = g
                .iter()
                .find_map(|r| r.varied_key.clone().zip(r.varied_value.clone()));
            let (varied_key, varied_value) = given.or(parsed).unzip();
            SummaryRow {
                dataset: first.dataset.clone(),
                backbone: first.backbone.clone(),
                arm: first.arm.clone(),
                protocol: first.protocol.clone(),
                metric: first.metric.clone(),
                probe_patches: first.probe_patches,
                family,
                varied_key,
                varied_value,
                count: g.len(),
                seeds: g.iter().map(|r| r.seed).collect(),
                mean,
                std,
            }
        })
        .collect()
}

/// Splits an arm name into its family and, for an ablation arm, the varied hyper-parameter:
/// the words after the first that read `key=value`. [`summarize`] uses it for rows whose
/// `varied_key`/`varied_value` are empty.
///
/// `sr patches=3 → (sr, Some((patches, 3)))`, `rr → (rr, None)`; several pairs are joined with
/// commas: `sr patches=3 alpha=0.5 → (sr, Some((patches,alpha, 3,0.5)))`. An arm that is only
/// `key=value` words has the family `key`.
pub fn split_arm(arm: &str) -> (String, Option<(String, String)>) {
    let mut family = Vec::new();
    let (mut keys, mut values) = (Vec::new(), Vec::new());
    for (i, word) in arm.split_whitespace().enumerate() {
        match word.split_once('=') {
            Some((k, v)) if i > 0 || arm.split_whitespace().count() == 1 => {
                keys.push(k);
                values.push(v);
            }
            _ => family.push(word),
        }
    }
    if keys.is_empty() {
        return (arm.trim().to_string(), None);
    }
    let family = if family.is_empty() {
        keys.join(",")
    } else {
        family.join(" ")
    };
    (family, Some((keys.join(","), values.join(","))))
}

/// Formats a fraction as a percentage with one decimal: `0.6123 → "61.2"`; `NaN → "–"`.
pub fn format_pct(x: f64) -> String {
    if x.is_finite() {
        format!("{:.1}", 100.0 * x)
    } else {
        "–".to_string()
    }
}

/// The label of a probe: `knn`, `linear n=0`, `linear n=9`.
///
/// The patch count is shown for protocols that take patches (those with some row where
/// `probe_patches > 0`, passed as `with_patches`); `metric` is appended in parentheses when the
/// protocol reports more than one metric.
pub fn probe_label(
    protocol: &str,
    n: usize,
    metric: &str,
    with_patches: bool,
    many_metrics: bool,
) -> String {
    let mut s = protocol.to_string();
    if with_patches || n > 0 {
        s.push_str(&format!(" n={n}"));
    }
    if many_metrics {
        s.push_str(&format!(" ({metric})"));
    }
    s
}

/// Probe columns of a summary, ordered by protocol (first appearance), then patch count, then
/// metric (first appearance), each with its label.
pub(crate) fn probe_columns(rows: &[SummaryRow]) -> Vec<((String, usize, String), String)> {
    let mut protocols: Vec<&str> = Vec::new();
    let mut metrics: Vec<&str> = Vec::new();
    for r in rows {
        if !protocols.contains(&r.protocol.as_str()) {
            protocols.push(&r.protocol);
        }
        if !metrics.contains(&r.metric.as_str()) {
            metrics.push(&r.metric);
        }
    }
    let mut cols: Vec<(String, usize, String)> = Vec::new();
    for r in rows {
        let c = (r.protocol.clone(), r.probe_patches, r.metric.clone());
        if !cols.contains(&c) {
            cols.push(c);
        }
    }
    let pos = |v: &[&str], s: &str| v.iter().position(|x| *x == s).unwrap_or(usize::MAX);
    cols.sort_by_key(|(p, n, m)| (pos(&protocols, p), *n, pos(&metrics, m)));
    cols.into_iter()
        .map(|c| {
            let with_patches = rows
                .iter()
                .any(|r| r.protocol == c.0 && r.probe_patches > 0);
            let many_metrics = rows.iter().any(|r| r.protocol == c.0 && r.metric != c.2);
            let label = probe_label(&c.0, c.1, &c.2, with_patches, many_metrics);
            (c, label)
        })
        .collect()
}

/// Distinct values of `f(row)` in first-appearance order.
pub(crate) fn distinct<T: PartialEq + Clone>(
    rows: &[SummaryRow],
    f: impl Fn(&SummaryRow) -> T,
) -> Vec<T> {
    let mut out: Vec<T> = Vec::new();
    for r in rows {
        let v = f(r);
        if !out.contains(&v) {
            out.push(v);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eval::Protocol::{self, Knn, Linear};

    fn row(arm: &str, seed: u64, protocol: Protocol, n: usize, value: f64) -> ResultRow {
        ResultRow {
            run: format!("{arm}-seed{seed}"),
            arm: arm.into(),
            seed,
            dataset: "cifar10".into(),
            backbone: "conv4".into(),
            protocol: protocol.name().into(),
            metric: protocol.metric().into(),
            probe_patches: n,
            value,
            epochs: 100,
            varied_key: None,
            varied_value: None,
            timestamp: None,
        }
    }

    #[test]
    fn mean_std_analytic() {
        // [0.5, 0.6, 0.7]: mean 0.6, squared deviations 0.01 + 0 + 0.01 = 0.02, / (3 − 1) → 0.01, sqrt → 0.1.
        let (m, s) = mean_std(&[0.5, 0.6, 0.7]);
        assert!((m - 0.6).abs() < 1e-12);
        assert!((s - 0.1).abs() < 1e-12);
        // [1, 2, 3, 4]: mean 2.5, Σ(x − m)² = 5, / 3 → sqrt(5/3).
        let (m, s) = mean_std(&[1.0, 2.0, 3.0, 4.0]);
        assert_eq!(m, 2.5);
        assert!((s - (5.0f64 / 3.0).sqrt()).abs() < 1e-12);
        let (m, s) = mean_std(&[0.42]);
        assert_eq!(m, 0.42);
        assert!(s.is_nan());
        assert!(mean_std(&[]).0.is_nan());
    }

    #[test]
    fn summarize_groups_per_arm_and_probe_in_first_seen_order() {
        let rows = vec![
            row("rr", 1, Linear, 0, 0.5),
            row("sr", 1, Linear, 0, 0.6),
            row("rr", 2, Linear, 0, 0.6),
            row("rr", 1, Linear, 9, 0.9),
            row("rr", 3, Linear, 0, 0.7),
            row("sr", 2, Linear, 0, 0.8),
        ];
        let s = summarize(&rows);
        assert_eq!(s.len(), 3);
        assert_eq!((s[0].arm.as_str(), s[0].probe_patches), ("rr", 0));
        assert_eq!(s[0].count, 3);
        assert_eq!(s[0].seeds, vec![1, 2, 3]);
        assert!((s[0].mean - 0.6).abs() < 1e-12 && (s[0].std - 0.1).abs() < 1e-12);
        assert_eq!((s[1].arm.as_str(), s[1].count), ("sr", 2));
        assert!((s[1].mean - 0.7).abs() < 1e-12);
        // two values 0.6, 0.8: std = sqrt(2 · 0.01 / 1) = 0.1·sqrt(2)
        assert!((s[1].std - 0.1 * 2f64.sqrt()).abs() < 1e-12);
        assert_eq!((s[2].probe_patches, s[2].count), (9, 1));
        assert!(s[2].std.is_nan());
        // A re-evaluated run (same run and seed appended again) replaces its earlier number.
        let mut again = rows.clone();
        again.push(row("rr", 2, Linear, 0, 0.9));
        let s = summarize(&again);
        assert_eq!(s[0].count, 3);
        assert!((s[0].mean - (0.5 + 0.9 + 0.7) / 3.0).abs() < 1e-12);
    }

    #[test]
    fn probe_columns_order_and_labels() {
        let rows = summarize(&[
            row("rr", 1, Knn, 0, 0.4),
            row("rr", 1, Linear, 9, 0.6),
            row("rr", 1, Linear, 0, 0.5),
        ]);
        let labels: Vec<String> = probe_columns(&rows).into_iter().map(|c| c.1).collect();
        assert_eq!(labels, vec!["knn", "linear n=0", "linear n=9"]);
        assert_eq!(format_pct(0.6123), "61.2");
        // The linear probe reports `linear_eval_acc`, kNN `knn_acc`: one metric per protocol,
        // so no metric in the labels.
        assert_eq!(rows[0].metric, "knn_acc");
        assert_eq!(format_pct(0.99951), "100.0");
        assert_eq!(format_pct(f64::NAN), "–");
    }

    #[test]
    fn split_arm_reads_the_varied_hyper_parameter() {
        let kv = |k: &str, v: &str| Some((k.to_string(), v.to_string()));
        assert_eq!(split_arm("rr"), ("rr".into(), None));
        assert_eq!(split_arm("sr patches=3"), ("sr".into(), kv("patches", "3")));
        assert_eq!(
            split_arm("patches=3"),
            ("patches".into(), kv("patches", "3"))
        );
        assert_eq!(
            split_arm("sr patches=3 alpha=0.5"),
            ("sr".into(), kv("patches,alpha", "3,0.5"))
        );
        let s = summarize(&[row("sr patches=4", 1, Linear, 0, 0.5)]);
        assert_eq!(s[0].family, "sr");
        assert_eq!(s[0].varied_key.as_deref(), Some("patches"));
        assert_eq!(s[0].varied_value.as_deref(), Some("4"));
        // A row's own varied key and value win over the arm's name.
        let mut r = row("sr big", 1, Linear, 0, 0.5);
        r.varied_key = Some("size".into());
        r.varied_value = Some("big".into());
        let s = summarize(&[r]);
        assert_eq!(s[0].varied_key.as_deref(), Some("size"));
        assert_eq!(s[0].varied_value.as_deref(), Some("big"));
    }
}
