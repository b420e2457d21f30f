//! A finished study read back from its folder (results and run directories), the diagnostics a
//! report shows, and the budgets at which the notebooks recompute a study.

use std::path::Path;

use super::arms::{arm_dir, expand_arms, ArmKind};
use super::evaluate::RANDOM_INIT_DIAGNOSTICS;
use super::job::JobOutcome;
use super::{file_err, JobError};
use crate::config::ValidConfig;
use crate::eval;
use crate::train::TrainError;

/// The diagnostics a report shows, read from a job's run directories.
#[derive(Clone, Debug, Default)]
pub struct DiagnosticsFiles {
    /// Epoch rows of `metrics.jsonl` per pretraining run `(arm, seed, rows)`.
    pub epochs: Vec<(String, u64, Vec<crate::train::metrics::MetricRow>)>,
    /// `diagnostics.json` of every random-init run that has one.
    pub references: Vec<(String, u64, eval::Diagnostics)>,
    /// `diagnostics/offsets.json` of the lowest seed of every SR arm that has one.
    pub offsets: Vec<(String, crate::eval::OffsetPairs)>,
}

/// A budget at which to recompute a study (the notebooks' `recompute` parameter): how many
/// training images, epochs, seeds and probe epochs, and whether SR arms also get the
/// patch-concatenated probe (n = 9).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StudyBudget {
    /// Training images (the first N of the split; the test split is always whole).
    pub train_images: usize,
    pub epochs: usize,
    /// Seeds 1..=seeds.
    pub seeds: u64,
    /// Epochs of the linear probe.
    pub linear_epochs: usize,
    /// Also probe SR arms with n = 9 grid patches.
    pub patch_probe: bool,
}

impl StudyBudget {
    /// The committed CIFAR-10 studies' budget: 50,000 images, 3 epochs, seeds 1-3, 100 probe
    /// epochs, n = 0 and n = 9.
    pub fn study() -> Self {
        Self {
            train_images: 50_000,
            epochs: 3,
            seeds: 3,
            linear_epochs: 100,
            patch_probe: true,
        }
    }

    /// The smallest budget that runs every arm (what CI executes): 512 images, 1 epoch, 1 seed,
    /// the full 100 probe epochs (400 steps on 512 features: cheap, and 30 epochs left the probe
    /// at chance, 10 %, where 100 reach 14 % random-init and 18 % RR), n = 0 only.
    pub fn tiny() -> Self {
        Self {
            train_images: 512,
            epochs: 1,
            seeds: 1,
            linear_epochs: 100,
            patch_probe: false,
        }
    }

    /// Seeds `1..=seeds`.
    pub fn seed_list(&self) -> Vec<u64> {
        (1..=self.seeds).collect()
    }

    /// `--set` overrides that apply the budget to a config.
    pub fn overrides(&self) -> Vec<String> {
        vec![
            format!("data.train_limit={}", self.train_images),
            format!("train.epochs={}", self.epochs),
            format!("eval.linear_epochs={}", self.linear_epochs),
            format!(
                "eval.probe_patches={}",
                if self.patch_probe { "[0, 9]" } else { "[0]" }
            ),
        ]
    }

    /// A rough wall-time estimate of running `cfg`'s arms at this budget on a 2-core CPU like the
    /// development machine, in seconds: pretraining at 3,600 backbone inputs per second for
    /// Conv-4 (600 source images/s at K + P = 6; ResNet-32 ≈ 12× slower), evaluation at 10,000
    /// images/s through the frozen backbone (training and test split, ten times that for an SR
    /// arm's n = 9 probe). Measured on the CIFAR-10 study; other machines scale.
    pub fn estimate_s(&self, cfg: &ValidConfig, test_images: usize) -> Result<f64, JobError> {
        let slow = match cfg.backbone.name {
            crate::models::BackboneKind::Conv4 => 1.0,
            crate::models::BackboneKind::Resnet8 => 3.0,
            crate::models::BackboneKind::Resnet32 => 12.0,
            crate::models::BackboneKind::Resnet56 => 22.0,
        };
        let mut total = 0.0;
        for arm in expand_arms(cfg)? {
            let a = cfg.raw().apply_overrides(&arm.overrides)?.check()?;
            let items = (a.method.views + a.method.patches) as f64;
            let images = self.train_images as f64;
            if arm.kind != ArmKind::RandomInit {
                total += self.epochs as f64 * images * items / 3_600.0 * slow;
            }
            let windows = if self.patch_probe && arm.kind == ArmKind::Pretrain && !a.method.is_rr()
            {
                10.0
            } else {
                1.0
            };
            total += (images + test_images as f64) * windows / 10_000.0 * slow + 5.0;
        }
        Ok(total * self.seeds as f64)
    }
}

/// A finished study read back from its folder: `DIR/results.csv` and the run directories
/// `DIR/runs/<arm>/seed-<s>/` (as `scripts/collect-study.sh` commits a study under `results/`), or
/// `DIR/<arm>/seed-<s>/` (a job's own `--out`).
///
/// The CSV's own `run` column names the directories where the study ran (another machine's
/// paths); the committed ones are found from each row's arm and seed ([`arm_dir`]). Runs with a
/// `metrics.jsonl` count as pretraining runs, runs with a `diagnostics.json` as random-init
/// references, so [`read_diagnostics`] and the report's curves work on the outcome.
pub fn load_study(dir: &Path) -> Result<JobOutcome, JobError> {
    let csv = dir.join("results.csv");
    let rows = crate::report::read_results_csv(&csv)?;
    let mut outcome = JobOutcome {
        rows,
        runs: Vec::new(),
        random_init: Vec::new(),
        wall_time_s: 0.0,
    };
    let runs = if dir.join("runs").is_dir() {
        dir.join("runs")
    } else {
        dir.to_path_buf()
    };
    let mut seen = std::collections::BTreeSet::new();
    for r in &outcome.rows {
        if !seen.insert((r.arm.clone(), r.seed)) {
            continue;
        }
        let run = arm_dir(&runs, &r.arm, r.seed);
        if run.join("metrics.jsonl").exists() {
            outcome.runs.push((r.arm.clone(), r.seed, run));
        } else if run.join(RANDOM_INIT_DIAGNOSTICS).exists() {
            outcome.random_init.push((r.arm.clone(), r.seed, run));
        }
    }
    Ok(outcome)
}

/// Read the diagnostics of `outcome`'s runs (missing files are skipped: runs made before the
/// diagnostics existed have none).
pub fn read_diagnostics(outcome: &JobOutcome) -> Result<DiagnosticsFiles, JobError> {
    let mut out = DiagnosticsFiles::default();
    for (arm, seed, dir) in &outcome.runs {
        let path = dir.join("metrics.jsonl");
        let rows = crate::train::metrics::read_rows(&path).map_err(TrainError::from)?;
        let rows = rows
            .into_iter()
            .filter(|r| r.kind == crate::train::metrics::RowKind::Epoch)
            .collect();
        out.epochs.push((arm.clone(), *seed, rows));
        let offsets = dir.join("diagnostics").join("offsets.json");
        if offsets.exists() && !out.offsets.iter().any(|o| &o.0 == arm) {
            #[derive(serde::Deserialize)]
            struct Offsets {
                pairs: eval::OffsetPairs,
            }
            let text = std::fs::read_to_string(&offsets).map_err(|e| file_err(&offsets, e))?;
            let o: Offsets = serde_json::from_str(&text).map_err(|e| file_err(&offsets, e))?;
            out.offsets.push((arm.clone(), o.pairs));
        }
    }
    for (arm, seed, dir) in &outcome.random_init {
        let path = dir.join(RANDOM_INIT_DIAGNOSTICS);
        if path.exists() {
            let text = std::fs::read_to_string(&path).map_err(|e| file_err(&path, e))?;
            let d = serde_json::from_str(&text).map_err(|e| file_err(&path, e))?;
            out.references.push((arm.clone(), *seed, d));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    #[test]
    fn budget_overrides_apply_and_the_estimate_scales() {
        let cfg = |b: &StudyBudget| {
            Config::from_toml_file(Path::new("configs/study/cifar10-cpu.toml"))
                .unwrap()
                .apply_overrides(&b.overrides())
                .unwrap()
                .check()
                .unwrap()
        };
        let tiny = StudyBudget::tiny();
        let c = cfg(&tiny);
        assert_eq!(
            (c.data.train_limit, c.train.epochs, c.eval.linear_epochs),
            (512, 1, 100)
        );
        assert_eq!(c.eval.probe_patches, vec![0]);
        let study = StudyBudget::study();
        let (t, s) = (
            tiny.estimate_s(&c, 10_000).unwrap(),
            study.estimate_s(&cfg(&study), 10_000).unwrap(),
        );
        // The study: 6 arms × 3 seeds, ≈ 24 min of pretraining per seed (measured 97 min in
        // all beside other work).
        assert!((3_600.0..6_000.0).contains(&s), "{s}");
        assert!(t < 120.0 && t > 0.0, "{t}");
        let twice = StudyBudget { epochs: 6, ..study };
        assert!(twice.estimate_s(&cfg(&twice), 10_000).unwrap() > 1.8 * s);
    }
}
