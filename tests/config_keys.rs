//! No accepted key is ignored. Every key of a default config (options included) is listed here
//! with another valid value and what the change does:
//!
//! - `Run`: it changes the first two steps of a pretraining run (synthetic data, Conv-4, batch 8):
//!   their metrics rows, the checkpoints written, or the weights after them;
//! - `Resolved`: it changes a value resolved from the config (the patch geometry, the evaluation
//!   plan, the diagnostics' probe, the job's cells, the image-folder spec, the schedule);
//! - `Consumer`: it is read outside these (named), where its own tests cover it.
//!
//! Some keys mean something only beside another value (`method.focal_gamma` with
//! `method.loss = "focal"`, `optim.momentum` with SGD): those list that value in `with`, and the
//! comparison is made there. A key added to the config without an entry here fails
//! `every_key_is_listed`; a listed `Run` or `Resolved` key that stops mattering fails
//! `every_listed_key_changes_what_it_claims`.
//!
//! Also here: a config that fails leaves no run directory.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use spatial_reasoning::config::{Config, ValidConfig};
use spatial_reasoning::data::{self, image_folder::FolderSpec, Split};
use spatial_reasoning::eval::{EvalPlan, Probe};
use spatial_reasoning::experiment::plan_cells;
use spatial_reasoning::train::{self, metrics, PretrainOptions, Schedule};

#[derive(Clone, Copy)]
enum Effect {
    Run,
    Resolved(fn(&ValidConfig) -> String),
    Consumer(&'static str),
}

struct Key {
    key: &'static str,
    value: &'static str,
    with: &'static [&'static str],
    effect: Effect,
}

const fn key(key: &'static str, value: &'static str, effect: Effect) -> Key {
    Key {
        key,
        value,
        with: &[],
        effect,
    }
}

fn geometry(c: &ValidConfig) -> String {
    format!("{:?}", c.geometry)
}
fn eval_plan(c: &ValidConfig) -> String {
    format!("{:?}", EvalPlan::from_config(c))
}
fn cells(c: &ValidConfig) -> String {
    format!("{:?}", plan_cells(c, &c.run.seeds).unwrap())
}
fn schedule(c: &ValidConfig) -> String {
    format!("{:?}", Schedule::new(c, 64).unwrap())
}
fn folder(c: &ValidConfig) -> String {
    format!("{:?}", FolderSpec::from_config(&c.data).unwrap())
}
fn data_root(c: &ValidConfig) -> String {
    c.data_root().display().to_string()
}
/// The diagnostics' fixed pairs and subsets, drawn from the run's synthetic splits.
fn probe(c: &ValidConfig) -> String {
    let train = train::prepare_data(c).unwrap();
    let test = data::load(c.data.dataset, &c.data_root(), Split::Test, &c.data).unwrap();
    format!(
        "{:?}",
        Probe::prepare(c, &train.train, &test, &train.normalize).unwrap()
    )
}

const FOCAL: &[&str] = &["method.loss=\"focal\""];
const SGD: &[&str] = &["optim.name=\"sgd\""];
const FOLDER: &[&str] = &[
    "data.dataset=\"image-folder\"",
    "data.path=\"/no/such/folder\"",
];
const DIAGNOSTICS: &[&str] = &["diagnostics.enabled=true"];

fn keys() -> Vec<Key> {
    use Effect::*;
    vec![
        key(
            "data.dataset",
            "\"cifar10\"",
            Consumer("data::load: which files are read"),
        ),
        key("data.root", "\"/elsewhere\"", Resolved(data_root)),
        Key {
            with: FOLDER,
            ..key("data.image_size", "48", Resolved(geometry))
        },
        key("data.train_size", "24", Run),
        Key {
            with: DIAGNOSTICS,
            ..key("data.test_size", "12", Resolved(probe))
        },
        key("data.synthetic_seed", "5", Run),
        key("data.train_limit", "8", Run),
        key(
            "data.pretrain_split",
            "\"unlabeled\"",
            Consumer("train::prepare_data: STL-10's or an image folder's unlabeled split"),
        ),
        key(
            "data.workers",
            "2",
            Consumer("train::pipeline: threads that build batches (batches are identical)"),
        ),
        Key {
            with: FOLDER,
            ..key("data.path", "\"/other/folder\"", Resolved(folder))
        },
        Key {
            with: FOLDER,
            ..key("data.resize", "\"center-crop\"", Resolved(folder))
        },
        Key {
            with: FOLDER,
            ..key("data.cache_dir", "\"/cache\"", Resolved(folder))
        },
        key("backbone.name", "\"resnet8\"", Run),
        key("method.views", "3", Run),
        key("method.patches", "3", Run),
        key("method.patch_size", "8", Run),
        key("method.patch_mode", "\"additive\"", Run),
        key("method.overlap", "\"allowed\"", Run),
        key("method.alpha", "0.5", Run),
        key("method.target_policy", "\"positive-patches-only\"", Run),
        key("method.aggregation", "\"max\"", Run),
        key("method.loss", "\"focal\"", Run),
        Key {
            with: FOCAL,
            ..key("method.focal_gamma", "1.0", Run)
        },
        Key {
            with: FOCAL,
            ..key("method.focal_alpha", "0.25", Run)
        },
        key("method.head_hidden", "64", Run),
        key("optim.name", "\"sgd\"", Run),
        key("optim.lr", "0.01", Run),
        key("optim.beta1", "0.5", Run),
        key("optim.beta2", "0.9", Run),
        key("optim.eps", "0.001", Run),
        key("optim.weight_decay", "0.1", Run),
        Key {
            with: SGD,
            ..key("optim.momentum", "0.5", Run)
        },
        key("train.epochs", "3", Resolved(schedule)),
        key("train.batch_size", "4", Run),
        key("train.seed", "2", Run),
        key("train.log_every", "2", Run),
        key("train.checkpoint_every", "1", Run),
        key(
            "train.threads",
            "1",
            Consumer("the CLI: rayon's global pool (results do not depend on it)"),
        ),
        key(
            "train.nonfinite",
            "\"skip\"",
            Consumer("train::train_loop on a non-finite loss or gradient (reliability_nonfinite)"),
        ),
        key("train.max_steps", "1", Run),
        key("train.precision", "\"bf16\"", Run),
        key("eval.linear_epochs", "7", Resolved(eval_plan)),
        key("eval.linear_batch", "64", Resolved(eval_plan)),
        key("eval.linear_lr", "0.01", Resolved(eval_plan)),
        key("eval.knn_k", "20", Resolved(eval_plan)),
        key("eval.knn_temperature", "0.5", Resolved(eval_plan)),
        key("eval.probe_patches", "[0, 9]", Resolved(eval_plan)),
        key("diagnostics.enabled", "true", Run),
        Key {
            with: DIAGNOSTICS,
            ..key("diagnostics.pairs", "4", Resolved(probe))
        },
        Key {
            with: DIAGNOSTICS,
            ..key("diagnostics.knn_train", "5", Resolved(probe))
        },
        Key {
            with: DIAGNOSTICS,
            ..key("diagnostics.knn_test", "3", Resolved(probe))
        },
        Key {
            with: DIAGNOSTICS,
            ..key("diagnostics.seed", "9", Resolved(probe))
        },
        key("run.arms", "[\"rr\"]", Resolved(cells)),
        key("run.seeds", "[4]", Resolved(cells)),
        key(
            "run.sweep",
            "{\"method.alpha\" = [0.5, 2.0]}",
            Resolved(cells),
        ),
    ]
    .into_iter()
    .chain(
        [
            "partition",
            "account",
            "time",
            "cpus_per_task",
            "mem",
            "gpus",
            "max_parallel",
            "sbatch_args",
            "report_partition",
            "command",
        ]
        .into_iter()
        .map(|k| Key {
            key: Box::leak(format!("slurm.{k}").into_boxed_str()),
            value: "",
            with: &[],
            effect: Effect::Consumer("slurm::script: the generated sbatch scripts"),
        }),
    )
    .collect()
}

/// The base of every comparison: synthetic data, Conv-4, 16 images in batches of 8, two steps
/// (one epoch), diagnostics off (the `diagnostics.*` keys turn them on).
fn base() -> Config {
    Config::default()
        .apply_overrides(&[
            "data.dataset=synthetic",
            "data.train_size=16",
            "data.test_size=8",
            "backbone.name=conv4",
            "train.batch_size=8",
            "train.epochs=1",
            "train.log_every=1",
            "diagnostics.enabled=false",
            "diagnostics.pairs=8",
            "diagnostics.knn_train=8",
            "diagnostics.knn_test=8",
            "eval.knn_k=4",
            "run.seeds=[1]",
        ])
        .unwrap()
}

/// What two steps of pretraining leave: the metrics rows (kind, step, loss bits, whether
/// diagnostics were measured), the checkpoints, the final weights.
fn observe(cfg: &ValidConfig, dir: &Path) -> (Vec<String>, Vec<String>, Vec<u8>) {
    let _ = std::fs::remove_dir_all(dir);
    let data = train::prepare_data(cfg).unwrap();
    let out = train::pretrain(cfg, &data, dir, PretrainOptions::default()).unwrap();
    let rows = metrics::read_rows(&dir.join("metrics.jsonl"))
        .unwrap()
        .iter()
        .map(|r| {
            format!(
                "{:?} {} {:x} {:?}",
                r.kind,
                r.step,
                r.loss.to_bits(),
                r.diagnostics.online_knn_acc.is_some()
            )
        })
        .collect();
    let mut ckpts: Vec<String> = std::fs::read_dir(dir.join("checkpoints"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    ckpts.sort();
    let model = std::fs::read(out.final_checkpoint.unwrap().join("model.safetensors")).unwrap();
    let _ = std::fs::remove_dir_all(dir);
    (rows, ckpts, model)
}

/// `section.key` of every key a default config has (options included: `null` in JSON).
fn default_keys() -> BTreeSet<String> {
    let json = serde_json::to_value(Config::default()).unwrap();
    let mut keys = BTreeSet::new();
    for (section, table) in json.as_object().unwrap() {
        for key in table.as_object().unwrap().keys() {
            keys.insert(format!("{section}.{key}"));
        }
    }
    keys
}

#[test]
fn every_key_is_listed() {
    let listed: BTreeSet<String> = keys().iter().map(|k| k.key.to_string()).collect();
    let all = default_keys();
    let missing: Vec<_> = all.difference(&listed).collect();
    let extra: Vec<_> = listed.difference(&all).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "keys without an entry: {missing:?}; entries without a key: {extra:?}"
    );
}

#[test]
fn every_listed_key_changes_what_it_claims() {
    let tmp = std::env::temp_dir().join(format!("sr-config-keys-{}", std::process::id()));
    let mut failures = vec![];
    for k in keys() {
        let before: Vec<String> = k.with.iter().map(|s| s.to_string()).collect();
        let mut after = before.clone();
        after.push(format!("{}={}", k.key, k.value));
        let cfg = |sets: &[String]| {
            base()
                .apply_overrides(sets)
                .unwrap_or_else(|e| panic!("{}: {e}", k.key))
                .check()
                .unwrap_or_else(|e| panic!("{}: {e}", k.key))
        };
        let changed = match k.effect {
            Effect::Consumer(consumer) => {
                assert!(!consumer.is_empty(), "{}: name its consumer", k.key);
                continue;
            }
            Effect::Resolved(f) => f(&cfg(&before)) != f(&cfg(&after)),
            Effect::Run => {
                let dir: PathBuf = tmp.join(k.key);
                observe(&cfg(&before), &dir) != observe(&cfg(&after), &dir)
            }
        };
        if !changed {
            failures.push(k.key);
        }
    }
    let _ = std::fs::remove_dir_all(&tmp);
    assert!(
        failures.is_empty(),
        "changing these changed nothing: {failures:?}"
    );
}

/// A config that fails leaves no run directory: the CLI checks the whole config (patch
/// geometry included) before it creates one.
#[test]
fn a_config_that_fails_leaves_no_run_directory() {
    let tmp = std::env::temp_dir().join(format!("sr-config-fail-{}", std::process::id()));
    for sets in [
        &["method.patches=50"][..],
        &["data.dataset=cifar10", "data.image_size=64"],
        &["method.patch_size=40"],
        &["method.aggregation=\"product\""],
    ] {
        let out = tmp.join("run");
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_spatial-reasoning"));
        cmd.args(["pretrain", "--out"]).arg(&out);
        for s in sets {
            cmd.args(["--set", s]);
        }
        let res = cmd.output().unwrap();
        assert!(!res.status.success(), "{sets:?} passed");
        let err = String::from_utf8_lossy(&res.stderr);
        let named = sets[sets.len() - 1].split('=').next().unwrap();
        assert!(
            err.contains(named) || err.contains("product"),
            "{sets:?}: {err}"
        );
        assert!(!out.exists(), "{sets:?} left {}", out.display());
    }
    // A batch larger than data whose size only loading tells (an image folder, real files):
    // refused before the run directory too.
    let cfg = base().check().unwrap();
    let few = data::synthetic::generate(Split::Train, 4, 1).unwrap();
    let data = train::TrainData::from_dataset(few).unwrap();
    let out = tmp.join("small");
    let e = train::pretrain(&cfg, &data, &out, PretrainOptions::default()).unwrap_err();
    assert!(e.to_string().contains("larger than the 4"), "{e}");
    assert!(!out.exists(), "left {}", out.display());
    let _ = std::fs::remove_dir_all(&tmp);
}
