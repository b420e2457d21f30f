//! Unwritable output and a full disk.
//!
//! - `--out` that cannot be created (under a regular file: ENOTDIR; under /proc; on a read-only
//!   mount) is a clear error naming the directory, before any training step, from the library
//!   and from the binary.
//! - A disk that fills up in the middle of a checkpoint write (a small tmpfs, filled by the test
//!   right after the step-2 checkpoint) stops the run with an error naming the file and the
//!   cause, leaves no partial checkpoint behind, keeps the previous checkpoint verifiable, and
//!   once space is freed `--resume` finishes with exactly the metrics and weights of an
//!   uninterrupted run.
//!
//! The tmpfs cases need `mount` (root in a container that allows it); where mounting fails they
//! say so on stderr and check nothing else.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use spatial_reasoning::config::{Config, ValidConfig};
use spatial_reasoning::train::{self, checkpoint, metrics, PretrainOptions, Progress, TrainError};

const BIN: &str = env!("CARGO_BIN_EXE_spatial-reasoning");

fn tmp(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("sr-rel-disk-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

const SETS: [&str; 9] = [
    "data.dataset=synthetic",
    "data.train_size=64",
    "data.test_size=16",
    "backbone.name=conv4",
    "train.batch_size=16",
    "train.epochs=2",
    "train.log_every=1",
    "train.checkpoint_every=2",
    "method.views=2",
];

fn cfg() -> ValidConfig {
    Config::default()
        .apply_overrides(&SETS)
        .unwrap()
        .check()
        .unwrap()
}

/// A tmpfs mounted for the test, unmounted on drop.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(tag: &str, options: &str) -> Option<Tmpfs> {
        let dir = tmp(tag);
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", options, "tmpfs"])
            .arg(&dir)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            let _ = writeln!(
                std::io::stderr(),
                "reliability_disk: cannot mount a tmpfs here (not root?): tmpfs cases not checked"
            );
            return None;
        }
        Some(Tmpfs(dir))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The library refuses `out` before the first step; returns the message.
fn refused_before_training(out: &Path) -> String {
    let cfg = cfg();
    let data = train::prepare_data(&cfg).unwrap();
    let mut events = 0;
    let mut cb = |_: &Progress| events += 1;
    let err = train::pretrain(
        &cfg,
        &data,
        out,
        PretrainOptions {
            progress: Some(&mut cb),
            ..Default::default()
        },
    )
    .unwrap_err();
    assert!(matches!(err, TrainError::RunDir { .. }), "{err}");
    assert_eq!(events, 0, "nothing started");
    let msg = err.to_string();
    assert!(
        msg.contains(&out.display().to_string()),
        "names the directory: {msg}"
    );
    msg
}

/// The binary exits 1 with the directory named, without a single step.
fn binary_refuses(out: &Path) -> String {
    let mut cmd = Command::new(BIN);
    cmd.arg("pretrain").arg("--out").arg(out);
    for s in SETS {
        cmd.args(["--set", s]);
    }
    let o = cmd.output().unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr).into_owned();
    assert_eq!(o.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains(&out.display().to_string()), "{stderr}");
    assert!(
        !stderr.contains(" steps ("),
        "training did not start: {stderr}"
    );
    stderr
}

#[test]
fn unwritable_out_is_a_clear_error_before_training() {
    let base = tmp("unwritable");
    // Under a regular file (ENOTDIR, whoever runs the test).
    let file = base.join("a-file");
    std::fs::write(&file, b"x").unwrap();
    let out = file.join("run");
    let msg = refused_before_training(&out);
    assert!(
        msg.contains("cannot create") && msg.contains("Not a directory"),
        "{msg}"
    );
    binary_refuses(&out);
    // Under /proc (no new entries, even for root).
    if Path::new("/proc/self").exists() {
        let msg = refused_before_training(Path::new("/proc/sr-reliability-run"));
        assert!(msg.contains("cannot create"), "{msg}");
    }
    // A read-only filesystem (permission bits do not stop root; a read-only mount does).
    if let Some(ro) = Tmpfs::mount("ro", "ro,size=1m") {
        let out = ro.0.join("run");
        let msg = refused_before_training(&out);
        assert!(msg.contains("Read-only file system"), "{msg}");
        binary_refuses(&out);
    }
    std::fs::remove_dir_all(&base).unwrap();
}

fn rows(dir: &Path) -> Vec<(String, u64, [u64; 4], u64)> {
    metrics::read_rows(&dir.join("metrics.jsonl"))
        .unwrap()
        .into_iter()
        .map(|r| {
            let v = [r.loss, r.loss_relation, r.loss_distance, r.relation_acc];
            (
                format!("{:?}", r.kind),
                r.step,
                v.map(f64::to_bits),
                r.skipped,
            )
        })
        .collect()
}

fn dir_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum()
}

fn tmp_checkpoints(run: &Path) -> Vec<String> {
    std::fs::read_dir(checkpoint::checkpoints_dir(run))
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".tmp"))
        .collect()
}

#[test]
fn disk_full_during_a_checkpoint_keeps_the_previous_one_and_resumes_exactly() {
    let cfg = cfg();
    let data = train::prepare_data(&cfg).unwrap();
    // Reference run on the ordinary temp dir; its checkpoint size sizes the tmpfs.
    let reference = tmp("reference");
    train::pretrain(
        &cfg,
        &data,
        &reference.join("run"),
        PretrainOptions::default(),
    )
    .unwrap();
    let (found, _) = checkpoint::find_latest(&reference.join("run")).unwrap();
    let model_bytes = std::fs::metadata(found.model_path()).unwrap().len();
    let ckpt_bytes = dir_bytes(&found.dir);

    // 1 MiB write probe + room for three checkpoints + slack.
    let size = (1 << 20) + 3 * ckpt_bytes + (256 << 10);
    let Some(fs) = Tmpfs::mount("full", &format!("size={size}")) else {
        return;
    };
    let run = fs.0.join("run");
    let filler = fs.0.join("filler");
    // Right after the step-2 checkpoint, fill the disk, then free half a model file's worth:
    // the step-4 checkpoint's model.safetensors runs out of space part way.
    let mut filled = false;
    let mut cb = |p: &Progress| {
        if let Progress::Checkpoint { step: 2, .. } = p {
            let mut f = std::fs::File::create(&filler).unwrap();
            let chunk = vec![0xAAu8; 64 << 10];
            while f.write_all(&chunk).is_ok() {}
            let len = f.metadata().unwrap().len();
            f.set_len(len.saturating_sub(model_bytes / 2)).unwrap();
            filled = true;
        }
    };
    let err = train::pretrain(
        &cfg,
        &data,
        &run,
        PretrainOptions {
            progress: Some(&mut cb),
            ..Default::default()
        },
    )
    .unwrap_err();
    assert!(filled, "the run reached its step-2 checkpoint");
    let msg = err.to_string();
    assert!(matches!(err, TrainError::Checkpoint(_)), "{msg}");
    assert!(
        msg.contains("No space left on device") && msg.contains("step-000000004"),
        "names the checkpoint and the cause: {msg}"
    );
    // No partial checkpoint left; the previous one verifies and is `latest`.
    assert_eq!(
        tmp_checkpoints(&run),
        Vec::<String>::new(),
        "partial checkpoint removed"
    );
    let (found, problems) = checkpoint::find_latest(&run).unwrap();
    assert_eq!((found.state.step, problems.len()), (2, 0));
    let latest = std::fs::read_to_string(checkpoint::checkpoints_dir(&run).join("latest")).unwrap();
    assert_eq!(latest.trim(), "step-000000002");

    // Space freed: resume finishes exactly like the uninterrupted run.
    std::fs::remove_file(&filler).unwrap();
    let out = train::pretrain(
        &cfg,
        &data,
        &run,
        PretrainOptions {
            resume: true,
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(out.steps, 8);
    assert_eq!(rows(&run), rows(&reference.join("run")));
    let a = std::fs::read(checkpoint::find_latest(&run).unwrap().0.model_path()).unwrap();
    let b = std::fs::read(found_model(&reference.join("run"))).unwrap();
    assert!(a == b, "bit-identical final weights");
    drop(fs);
    std::fs::remove_dir_all(&reference).unwrap();
}

fn found_model(run: &Path) -> PathBuf {
    checkpoint::find_latest(run).unwrap().0.model_path()
}
