//! Checkpoints written atomically: a complete checkpoint directory appears under its final name or
//! not at all, and `latest` names only complete checkpoints.
//!
//! Layout of `RUN/checkpoints/step-000123/`:
//! - `model.safetensors` — backbone and head, readable names (`backbone.…`, `head.l1.weight`);
//! - `optim.bin` — the optimiser's moments ([`crate::optim::OptimizerState`]);
//! - `state.json` — [`TrainState`] with the length and hash of both files.
//!
//! Write: files go into `.tmp-step-…`, are fsynced, the directory is renamed into place and the
//! parent fsynced; then `latest` is replaced the same way ([`crate::files::write_atomic`]). Load: `latest` is followed if its files
//! verify, else the newest complete `step-*` that verifies; a torn or partial checkpoint is never
//! loaded.

use std::fs::{self, File};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use dfdx::nn::tensor_collection::TensorCollection;
use dfdx::prelude::{Device, LoadFromSafetensors};

use crate::files::{fsync_dir, write_atomic};
use crate::method::{HeadSpec, RelationHead, SslModel};
use crate::optim::OptimizerState;

/// Everything besides the weights needed to continue a run exactly.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TrainState {
    /// Completed optimiser steps.
    pub step: u64,
    /// Running sums of the current logging window.
    pub window: WindowSums,
    /// Running sums of the current epoch.
    pub epoch_sums: WindowSums,
    /// Steps skipped for a non-finite loss or gradient.
    pub skipped_nonfinite: u64,
    /// Training seconds spent before this checkpoint (wall time across resumes).
    pub elapsed_s: f64,
    /// `name → (bytes, hash)` of the files of this checkpoint.
    pub files: Vec<FileCheck>,
}

/// Sums over a window of steps (for averaged metrics rows).
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct WindowSums {
    pub steps: u64,
    pub loss: f64,
    pub loss_relation: f64,
    pub loss_distance: f64,
    pub relation_acc: f64,
    pub images: f64,
    pub seconds: f64,
    pub wait_seconds: f64,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileCheck {
    pub name: String,
    pub bytes: u64,
    pub hash: String,
}

#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {detail}")]
    Corrupt { path: PathBuf, detail: String },
    #[error("{0}: no complete checkpoint to resume from")]
    NoneFound(PathBuf),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> CheckpointError + '_ {
    move |source| CheckpointError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// FNV-1a 64 over a file's bytes: detects torn or swapped files (not an adversary).
pub fn file_hash(path: &Path) -> Result<(u64, String), CheckpointError> {
    let mut f = File::open(path).map_err(io(path))?;
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut buf = vec![0u8; 1 << 16];
    let mut n = 0u64;
    loop {
        let k = f.read(&mut buf).map_err(io(path))?;
        if k == 0 {
            break;
        }
        n += k as u64;
        for &b in &buf[..k] {
            h ^= b as u64;
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    Ok((n, format!("{h:016x}")))
}

impl From<crate::files::FileError> for CheckpointError {
    fn from(e: crate::files::FileError) -> Self {
        CheckpointError::Io {
            path: e.path,
            source: e.source,
        }
    }
}

/// A backbone and a relation head of shape `spec` with the weights of a checkpoint's
/// `model.safetensors` (`backbone.…`, `head.…`; every name and shape is checked, so a head of
/// the wrong shape or another backbone is an error naming the file).
pub fn load_model<B, D>(
    backbone: B,
    spec: HeadSpec,
    dev: &D,
    path: &Path,
) -> Result<SslModel<B, RelationHead<f32, D>>, CheckpointError>
where
    B: TensorCollection<f32, D>,
    D: Device<f32>,
{
    let corrupt = |detail: String| CheckpointError::Corrupt {
        path: path.to_path_buf(),
        detail,
    };
    let head = RelationHead::new(dev, spec)
        .map_err(|e| corrupt(format!("building the relation head: {e:?}")))?;
    let mut model = SslModel { backbone, head };
    model
        .load_safetensors(path)
        .map_err(|e| corrupt(format!("cannot load the weights: {e:?}")))?;
    Ok(model)
}

/// Build a `B` backbone and the relation head its run trained (from `run_dir/config.toml`), and
/// load the newest checkpoint of `run_dir` into them (notebook `02-spatial-task`). Fails for an RR
/// run (its head has one output, no offsets) or a run of another backbone.
pub fn load_sr_model<B: crate::models::BuildBackbone<crate::Device>>(
    run_dir: &Path,
) -> Result<crate::method::inspect::SrModel<B>, CheckpointError> {
    let cfg_path = run_dir.join("config.toml");
    let corrupt = |detail: String| CheckpointError::Corrupt {
        path: cfg_path.clone(),
        detail,
    };
    let cfg = crate::config::Config::from_toml_file(&cfg_path)
        .and_then(|c| c.check())
        .map_err(|e| corrupt(e.to_string()))?;
    if cfg.backbone.name != B::KIND {
        return Err(corrupt(format!(
            "the run trained backbone.name = {}, not {}",
            cfg.backbone.name.name(),
            B::KIND.name()
        )));
    }
    if cfg.method.is_rr() {
        return Err(corrupt(
            "an RR run (method.patches = 0): its relation head predicts no offsets".into(),
        ));
    }
    let (found, _) = find_latest(run_dir)?;
    let dev = crate::new_device(0).map_err(|e| corrupt(e.to_string()))?;
    let backbone = B::build(&dev, 0).map_err(|e| corrupt(format!("{e:?}")))?;
    load_model(
        backbone,
        HeadSpec::from_config(&cfg),
        &dev,
        &found.model_path(),
    )
}

/// Serialise optimiser state: `SROPT1\n`, a JSON header line with the tensor sizes, then the
/// moments as little-endian f32.
pub fn encode_optim(state: &OptimizerState) -> Vec<u8> {
    #[derive(Serialize)]
    struct Header<'a> {
        step: u64,
        m: Vec<usize>,
        v: Vec<usize>,
        _note: &'a str,
    }
    let header = Header {
        step: state.step,
        m: state.m.iter().map(Vec::len).collect(),
        v: state.v.iter().map(Vec::len).collect(),
        _note: "moments as little-endian f32, m then v",
    };
    let mut out = b"SROPT1\n".to_vec();
    out.extend(serde_json::to_vec(&header).expect("header serialises"));
    out.push(b'\n');
    for t in state.m.iter().chain(&state.v) {
        for x in t {
            out.extend_from_slice(&x.to_le_bytes());
        }
    }
    out
}

pub fn decode_optim(bytes: &[u8], path: &Path) -> Result<OptimizerState, CheckpointError> {
    let corrupt = |detail: String| CheckpointError::Corrupt {
        path: path.to_path_buf(),
        detail,
    };
    #[derive(Deserialize)]
    struct Header {
        step: u64,
        m: Vec<usize>,
        v: Vec<usize>,
    }
    let rest = bytes
        .strip_prefix(b"SROPT1\n")
        .ok_or_else(|| corrupt("not an optimiser state file (bad magic)".into()))?;
    let nl = rest
        .iter()
        .position(|&b| b == b'\n')
        .ok_or_else(|| corrupt("header line not terminated".into()))?;
    let header: Header =
        serde_json::from_slice(&rest[..nl]).map_err(|e| corrupt(format!("header: {e}")))?;
    let mut data = &rest[nl + 1..];
    let total: usize = header.m.iter().chain(&header.v).sum();
    if data.len() != total * 4 {
        return Err(corrupt(format!(
            "{} bytes of moments, header says {}",
            data.len(),
            total * 4
        )));
    }
    let mut take = |n: usize| {
        let (a, b) = data.split_at(n * 4);
        data = b;
        a.chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect::<Vec<f32>>()
    };
    let m = header.m.iter().map(|&n| take(n)).collect();
    let v = header.v.iter().map(|&n| take(n)).collect();
    Ok(OptimizerState {
        step: header.step,
        m,
        v,
    })
}

/// The checkpoints folder of a run.
pub fn checkpoints_dir(run_dir: &Path) -> PathBuf {
    run_dir.join("checkpoints")
}

fn step_dir_name(step: u64) -> String {
    format!("step-{step:09}")
}

/// Environment variable of a test hook: when it holds a number of milliseconds, [`save`] sleeps
/// that long after writing each file of a checkpoint (before the directory is renamed into
/// place), so a test can kill the process in the middle of a checkpoint write near-deterministically
/// (`tests/reliability_kill.rs`). Unset in normal use: the cost is one environment lookup per
/// checkpoint.
pub const SLOW_CHECKPOINT_ENV: &str = "SPATIAL_REASONING_TEST_SLOW_CHECKPOINT";

fn slow_checkpoint_hook() {
    if let Some(ms) = std::env::var(SLOW_CHECKPOINT_ENV)
        .ok()
        .and_then(|v| v.trim().parse::<u64>().ok())
    {
        std::thread::sleep(std::time::Duration::from_millis(ms));
    }
}

/// Write a complete checkpoint. `write_model` saves the weights to the path it is given.
/// Keeps the newest `keep` checkpoints.
pub fn save(
    run_dir: &Path,
    mut state: TrainState,
    optim: &OptimizerState,
    write_model: impl FnOnce(&Path) -> Result<(), String>,
    keep: usize,
) -> Result<PathBuf, CheckpointError> {
    let root = checkpoints_dir(run_dir);
    fs::create_dir_all(&root).map_err(io(&root))?;
    let name = step_dir_name(state.step);
    let tmp = root.join(format!(".tmp-{name}"));
    if tmp.exists() {
        fs::remove_dir_all(&tmp).map_err(io(&tmp))?;
    }
    fs::create_dir_all(&tmp).map_err(io(&tmp))?;
    // On failure (e.g. the disk is full) the partial files go: they are never a candidate for
    // resume, but they would keep holding the space.
    if let Err(e) = write_files(&tmp, &mut state, optim, write_model) {
        let _ = fs::remove_dir_all(&tmp);
        return Err(e);
    }
    let dst = root.join(&name);
    if dst.exists() {
        fs::remove_dir_all(&dst).map_err(io(&dst))?;
    }
    fs::rename(&tmp, &dst).map_err(io(&dst))?;
    fsync_dir(&root);
    write_atomic(&root.join("latest"), format!("{name}\n").as_bytes())?;
    prune(&root, keep);
    Ok(dst)
}

/// The files of a checkpoint, written and fsynced into `tmp`; `state.files` gets their sizes
/// and hashes.
fn write_files(
    tmp: &Path,
    state: &mut TrainState,
    optim: &OptimizerState,
    write_model: impl FnOnce(&Path) -> Result<(), String>,
) -> Result<(), CheckpointError> {
    let model_path = tmp.join("model.safetensors");
    write_model(&model_path).map_err(|detail| CheckpointError::Corrupt {
        path: model_path.clone(),
        detail,
    })?;
    File::open(&model_path)
        .and_then(|f| f.sync_all())
        .map_err(io(&model_path))?;
    slow_checkpoint_hook();
    let optim_path = tmp.join("optim.bin");
    {
        let mut f = File::create(&optim_path).map_err(io(&optim_path))?;
        f.write_all(&encode_optim(optim)).map_err(io(&optim_path))?;
        f.sync_all().map_err(io(&optim_path))?;
    }
    slow_checkpoint_hook();
    state.files.clear();
    for p in [&model_path, &optim_path] {
        let (bytes, hash) = file_hash(p)?;
        state.files.push(FileCheck {
            name: p.file_name().unwrap().to_string_lossy().into_owned(),
            bytes,
            hash,
        });
    }
    let state_path = tmp.join("state.json");
    {
        let mut f = File::create(&state_path).map_err(io(&state_path))?;
        f.write_all(&serde_json::to_vec_pretty(&state).expect("state serialises"))
            .map_err(io(&state_path))?;
        f.sync_all().map_err(io(&state_path))?;
    }
    fsync_dir(tmp);
    slow_checkpoint_hook();
    Ok(())
}

fn prune(root: &Path, keep: usize) {
    let mut dirs = list_step_dirs(root);
    dirs.sort();
    while dirs.len() > keep.max(1) {
        let d = dirs.remove(0);
        let _ = fs::remove_dir_all(root.join(d));
    }
}

/// Whether the run has any `step-*` checkpoint directory (complete or not).
pub fn has_step_dirs(run_dir: &Path) -> bool {
    !list_step_dirs(&checkpoints_dir(run_dir)).is_empty()
}

fn list_step_dirs(root: &Path) -> Vec<String> {
    fs::read_dir(root)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .filter_map(|e| e.file_name().to_str().map(str::to_string))
                .filter(|n| n.starts_with("step-"))
                .collect()
        })
        .unwrap_or_default()
}

/// A verified checkpoint found on disk.
#[derive(Clone, Debug)]
pub struct Found {
    pub dir: PathBuf,
    pub state: TrainState,
    pub optim: OptimizerState,
}

impl Found {
    pub fn model_path(&self) -> PathBuf {
        self.dir.join("model.safetensors")
    }
}

/// Read and verify one checkpoint directory.
pub fn verify(dir: &Path) -> Result<Found, CheckpointError> {
    let state_path = dir.join("state.json");
    let text = fs::read(&state_path).map_err(io(&state_path))?;
    let state: TrainState =
        serde_json::from_slice(&text).map_err(|e| CheckpointError::Corrupt {
            path: state_path.clone(),
            detail: e.to_string(),
        })?;
    for f in &state.files {
        let p = dir.join(&f.name);
        let (bytes, hash) = file_hash(&p)?;
        if bytes != f.bytes || hash != f.hash {
            return Err(CheckpointError::Corrupt {
                path: p,
                detail: format!(
                    "{bytes} bytes with hash {hash}, state.json says {} bytes with hash {}",
                    f.bytes, f.hash
                ),
            });
        }
    }
    let optim_path = dir.join("optim.bin");
    let bytes = fs::read(&optim_path).map_err(io(&optim_path))?;
    let optim = decode_optim(&bytes, &optim_path)?;
    Ok(Found {
        dir: dir.to_path_buf(),
        state,
        optim,
    })
}

/// The newest complete checkpoint of a run: `latest` if it verifies, else the newest `step-*`
/// directory that does. Returns the problems met on the way so the caller can report them.
pub fn find_latest(run_dir: &Path) -> Result<(Found, Vec<String>), CheckpointError> {
    let root = checkpoints_dir(run_dir);
    let mut problems = Vec::new();
    let mut candidates = Vec::new();
    if let Ok(name) = fs::read_to_string(root.join("latest")) {
        candidates.push(name.trim().to_string());
    }
    let mut dirs = list_step_dirs(&root);
    dirs.sort();
    dirs.reverse();
    // `latest` is also among the step dirs: try (and report) each directory once.
    let latest = candidates.first().cloned();
    candidates.extend(dirs.into_iter().filter(|d| Some(d) != latest.as_ref()));
    for name in candidates {
        match verify(&root.join(&name)) {
            Ok(found) => return Ok((found, problems)),
            Err(e) => problems.push(e.to_string()),
        }
    }
    Err(CheckpointError::NoneFound(root))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmpdir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("sr-ckpt-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).unwrap();
        d
    }

    fn state(step: u64) -> (TrainState, OptimizerState) {
        (
            TrainState {
                step,
                ..Default::default()
            },
            OptimizerState {
                step,
                m: vec![vec![1.0, 2.0], vec![3.0]],
                v: vec![vec![0.5, 0.25], vec![-1.0]],
            },
        )
    }

    #[test]
    fn optim_state_round_trips_and_rejects_truncation() {
        let (_, o) = state(7);
        let bytes = encode_optim(&o);
        assert_eq!(decode_optim(&bytes, Path::new("x")).unwrap(), o);
        let err = decode_optim(&bytes[..bytes.len() - 1], Path::new("x")).unwrap_err();
        assert!(err.to_string().contains("bytes of moments"), "{err}");
    }

    #[test]
    fn latest_skips_a_torn_checkpoint() {
        let dir = tmpdir("torn");
        for step in [10, 20] {
            let (s, o) = state(step);
            save(
                &dir,
                s,
                &o,
                |p| fs::write(p, b"weights").map_err(|e| e.to_string()),
                3,
            )
            .unwrap();
        }
        let (found, problems) = find_latest(&dir).unwrap();
        assert_eq!(found.state.step, 20);
        assert!(problems.is_empty());
        // Tear the newest one's weights: resume falls back to step 10 and says why.
        let torn = checkpoints_dir(&dir).join("step-000000020/model.safetensors");
        fs::write(&torn, b"weig").unwrap();
        let (found, problems) = find_latest(&dir).unwrap();
        assert_eq!(found.state.step, 10);
        assert!(problems[0].contains("model.safetensors"), "{problems:?}");
        // A half-written temp directory is never a candidate.
        fs::create_dir_all(checkpoints_dir(&dir).join(".tmp-step-000000030")).unwrap();
        assert_eq!(find_latest(&dir).unwrap().0.state.step, 10);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn prune_keeps_the_newest() {
        let dir = tmpdir("prune");
        for step in [1, 2, 3, 4] {
            let (s, o) = state(step);
            save(
                &dir,
                s,
                &o,
                |p| fs::write(p, b"w").map_err(|e| e.to_string()),
                2,
            )
            .unwrap();
        }
        let mut left = list_step_dirs(&checkpoints_dir(&dir));
        left.sort();
        assert_eq!(left, vec!["step-000000003", "step-000000004"]);
        fs::remove_dir_all(&dir).unwrap();
    }
}
