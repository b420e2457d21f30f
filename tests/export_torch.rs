//! `spatial-reasoning export` → `python/spatial_reasoning_torch.py`: a ResNet-32 (SR) and a
//! Conv-4 (RR) pretrained for a few steps on real CIFAR-10 (so the batch-norm running statistics
//! are not their initial values) are exported, loaded in PyTorch with `strict=True`, and give the
//! same features as this crate on the same CIFAR-10 test images in eval mode, within 1e-4
//! relative (max over images of ‖f_torch − f_ours‖∞ / ‖f_ours‖∞).
//!
//! PyTorch comes from `target/torch-venv` (made by `scripts/torch-venv.sh`) or
//! `$SPATIAL_REASONING_TORCH_PYTHON`. Without it the test prints a skip note, except under
//! `CI=true`, where it fails. CIFAR-10 comes from `$SPATIAL_REASONING_DATA`, else
//! `../shared/data`, with the same rule.

use std::path::{Path, PathBuf};
use std::process::Command;

use dfdx::prelude::*;
use spatial_reasoning::config::Config;
use spatial_reasoning::data::{self, Split};
use spatial_reasoning::eval::features::extract_features;
use spatial_reasoning::method::HeadSpec;
use spatial_reasoning::models::{Backbone, Conv4, ResNet32};
use spatial_reasoning::train::{self, PretrainOptions};

fn ci() -> bool {
    std::env::var("CI").as_deref() == Ok("true")
}

fn data_root() -> Option<PathBuf> {
    let root = std::env::var_os("SPATIAL_REASONING_DATA")
        .filter(|s| !s.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data"));
    if root.join("cifar-10-batches-bin/test_batch.bin").is_file() {
        return Some(root);
    }
    assert!(
        !ci(),
        "CIFAR-10 not found under {} (CI=true: the real-data tests must run)",
        root.display()
    );
    eprintln!("skipping: CIFAR-10 not found under {}", root.display());
    None
}

/// A Python with torch: `$SPATIAL_REASONING_TORCH_PYTHON`, else `target/torch-venv/bin/python`.
fn torch_python() -> Option<PathBuf> {
    let python = std::env::var_os("SPATIAL_REASONING_TORCH_PYTHON")
        .filter(|s| !s.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR")).join("target/torch-venv/bin/python")
        });
    let works = Command::new(&python)
        .args(["-c", "import torch"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if works {
        return Some(python);
    }
    assert!(
        !ci(),
        "no Python with torch at {} (CI=true: run `bash scripts/torch-venv.sh` first)",
        python.display()
    );
    eprintln!(
        "skipping: no Python with torch at {} (make one with `bash scripts/torch-venv.sh`)",
        python.display()
    );
    None
}

struct TempDir(PathBuf);
impl TempDir {
    fn new(tag: &str) -> TempDir {
        let p = std::env::temp_dir().join(format!("sr-export-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
}
impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Loads the export in PyTorch, checks its metadata, computes features of the images in eval
/// mode and prints the largest relative difference from ours.
const COMPARE: &str = r#"
import json, sys
import torch
sys.path.insert(0, sys.argv[1])
import spatial_reasoning_torch as srt
export, images, ours, n, side, backbone, mean, std = sys.argv[2:10]
n, side = int(n), int(side)
torch.set_num_threads(2)
model = srt.load(export)
assert not model.training
assert model.metadata["backbone"] == backbone, model.metadata
assert list(model.normalize_mean) == json.loads(mean), (model.normalize_mean, mean)
assert list(model.normalize_std) == json.loads(std), (model.normalize_std, std)
raw = torch.frombuffer(bytearray(open(images, "rb").read()), dtype=torch.uint8).reshape(n, side, side, 3)
ref = torch.frombuffer(bytearray(open(ours, "rb").read()), dtype=torch.float32).reshape(n, 64)
with torch.no_grad():
    got = model(srt.preprocess(raw, model))
rel = ((got - ref).abs().amax(1) / ref.abs().amax(1)).max().item()
print(json.dumps({"max_rel": rel, "images": n, "feature_std": ref.std(0).mean().item()}))
"#;

/// Pretrain `steps` steps on CIFAR-10, export through the CLI, and compare features with
/// PyTorch. `B` is the backbone type `backbone` names.
fn check<B>(backbone: &str, method: &[&str], fresh: B)
where
    B: Backbone<Cpu> + 'static,
{
    let (Some(root), Some(python)) = (data_root(), torch_python()) else {
        return;
    };
    let tmp = TempDir::new(backbone);
    let mut sets = vec![
        "data.dataset=cifar10".to_string(),
        format!("data.root={:?}", root.display().to_string()),
        "data.train_limit=256".into(),
        format!("backbone.name={backbone}"),
        "method.views=2".into(),
        "train.batch_size=16".into(),
        "train.max_steps=3".into(),
        "train.log_every=1".into(),
        "train.threads=2".into(),
    ];
    sets.extend(method.iter().map(|s| s.to_string()));
    let cfg = Config::default()
        .apply_overrides(&sets)
        .unwrap()
        .check()
        .unwrap();
    let run = tmp.0.join("run");
    let data = train::prepare_data(&cfg).unwrap();
    train::pretrain(&cfg, &data, &run, PretrainOptions::default()).unwrap();

    // Export through the command line.
    let out_file = tmp.0.join("backbone.safetensors");
    let out = Command::new(env!("CARGO_BIN_EXE_spatial-reasoning"))
        .args(["export", "--run"])
        .arg(&run)
        .arg("--out")
        .arg(&out_file)
        .args(["--format", "torch"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Our features: the checkpoint's backbone, eval mode, on 200 CIFAR-10 test images.
    let dev = Cpu::default();
    let (found, _) = train::checkpoint::find_latest(&run).unwrap();
    let model = train::checkpoint::load_model(
        fresh.clone(),
        HeadSpec::from_config(&cfg),
        &dev,
        &found.model_path(),
    )
    .unwrap();
    let test = data::load(cfg.data.dataset, &root, Split::Test, &cfg.data).unwrap();
    let test = test.subset(&(0..200).collect::<Vec<_>>());
    let norm = data.normalize;
    let ours = extract_features(&model.backbone, &dev, &test, &norm, 32, 100, &mut |_| {}).unwrap();
    // The export loads back into the crate's backbone unchanged (its extra num_batches_tracked
    // entries are ignored): the same features, bit for bit.
    let mut back = fresh;
    back.load_safetensors(&out_file).unwrap();
    let again = extract_features(&back, &dev, &test, &norm, 32, 100, &mut |_| {}).unwrap();
    assert_eq!(again.data, ours.data);

    let images = tmp.0.join("images.u8");
    let feats = tmp.0.join("features.f32");
    std::fs::write(&images, &test.pixels).unwrap();
    let bytes: Vec<u8> = ours.data.iter().flat_map(|v| v.to_le_bytes()).collect();
    std::fs::write(&feats, bytes).unwrap();
    let list = |v: [f32; 3]| format!("[{}, {}, {}]", v[0], v[1], v[2]);
    let out = Command::new(&python)
        .env("OMP_WAIT_POLICY", "PASSIVE")
        .arg("-c")
        .arg(COMPARE)
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("python"))
        .arg(&out_file)
        .arg(&images)
        .arg(&feats)
        .arg(test.len().to_string())
        .arg("32")
        .arg(backbone)
        .arg(list(norm.mean))
        .arg(list(norm.std))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = stdout.lines().last().unwrap_or_default();
    let r: serde_json::Value = serde_json::from_str(line).unwrap();
    let max_rel = r["max_rel"].as_f64().unwrap();
    eprintln!("{backbone}: PyTorch vs ours on 200 CIFAR-10 test images: {line}");
    // The features vary over images (a constant output would match trivially).
    assert!(r["feature_std"].as_f64().unwrap() > 1e-3, "{line}");
    assert!(
        max_rel <= 1e-4,
        "{backbone}: relative difference {max_rel} > 1e-4"
    );
}

#[test]
fn resnet32_sr_export_matches_pytorch() {
    let dev = Cpu::default();
    check::<_>("resnet32", &[], ResNet32::<Cpu>::new(&dev, 99).unwrap());
}

#[test]
fn conv4_rr_export_matches_pytorch() {
    let dev = Cpu::default();
    check::<_>(
        "conv4",
        &["method.patches=0", "method.alpha=0"],
        Conv4::<Cpu>::new(&dev, 99).unwrap(),
    );
}
