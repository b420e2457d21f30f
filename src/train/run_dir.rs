//! A run directory (`../shared/STYLE.md`): `config.toml` and `meta.json` written before step 0,
//! then `metrics.jsonl`, `checkpoints/` ([`super::checkpoint`]), `diagnostics/`, `eval/`.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::TrainError;
use crate::config::ValidConfig;
use crate::eval::Diagnostics;
use crate::files::write_atomic;

/// `meta.json`: provenance of a run.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Meta {
    pub crate_version: String,
    pub git_revision: Option<String>,
    pub seed: u64,
    pub device: String,
    pub threads: usize,
    pub normalize_mean: [f32; 3],
    pub normalize_std: [f32; 3],
    pub train_images: usize,
}

/// The git revision of the working directory, if it is a git checkout.
pub fn git_revision() -> Option<String> {
    let out = std::process::Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Create (or, with `resume`, reopen) a run directory and check it is writable before any work.
pub fn open_run_dir(
    cfg: &ValidConfig,
    run_dir: &Path,
    resume: bool,
    meta: &Meta,
) -> Result<(), TrainError> {
    let rd = |detail: String| TrainError::RunDir {
        path: run_dir.to_path_buf(),
        detail,
    };
    std::fs::create_dir_all(run_dir).map_err(|e| rd(format!("cannot create: {e}")))?;
    let config_path = run_dir.join("config.toml");
    if resume {
        let saved = crate::config::Config::from_toml_file(&config_path)
            .map_err(|e| rd(format!("cannot resume: {e}")))?;
        // `train.nonfinite` may change on resume: the steps before the checkpoint did not
        // depend on it (under "stop" none was skipped), and switching to "skip" is what the
        // non-finite error suggests. The saved config is updated to say so.
        let mut comparable = saved.clone();
        comparable.train.nonfinite = cfg.raw().train.nonfinite;
        if &comparable != cfg.raw() {
            return Err(rd(format!(
                "cannot resume: {} differs from the configuration given now; resume with the saved one (omit --config/--set) or start a new run directory",
                config_path.display()
            )));
        }
        if saved != comparable {
            write_atomic(&config_path, cfg.raw().to_toml_string().as_bytes())?;
        }
        return Ok(());
    }
    if config_path.exists() {
        return Err(rd(
            "already holds a run (config.toml exists); use --resume to continue it or choose another --out".into(),
        ));
    }
    // Probe writability and free space with a real write before training starts.
    let probe = run_dir.join(".write-probe");
    std::fs::write(&probe, vec![0u8; 1 << 20])
        .and_then(|_| std::fs::remove_file(&probe))
        .map_err(|e| rd(format!("not writable: {e}")))?;
    write_atomic(&config_path, cfg.raw().to_toml_string().as_bytes())?;
    write_atomic(
        &run_dir.join("meta.json"),
        &serde_json::to_vec_pretty(meta).expect("meta serialises"),
    )?;
    Ok(())
}

/// `run_dir/diagnostics/offsets.json`: the head's `(true, predicted)` offsets on the probe's test
/// pairs after step `step` (rewritten at every epoch end; the report draws it as a scatter).
pub fn save_offsets(run_dir: &Path, step: u64, d: &Diagnostics) -> Result<(), TrainError> {
    let dir = run_dir.join("diagnostics");
    std::fs::create_dir_all(&dir).map_err(|e| TrainError::RunDir {
        path: dir.clone(),
        detail: format!("cannot create: {e}"),
    })?;
    let json = serde_json::json!({ "step": step, "pairs": d.predictions });
    write_atomic(
        &dir.join("offsets.json"),
        &serde_json::to_vec(&json).expect("offsets serialise"),
    )?;
    Ok(())
}
