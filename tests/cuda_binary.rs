//! The `cuda` build of the binary on a machine without a GPU: it must fail with a clean
//! "no CUDA device" error and exit 1, never panic.
//!
//! Runs the binary that `scripts/cuda-build.sh` leaves in `target/cuda/release/` (or
//! `$SR_CUDA_BIN`), against the link stubs of `scripts/cuda-toolchain.sh` on `LD_LIBRARY_PATH`:
//! they act as a driver that sees no device (every call returns CUDA_ERROR_NO_DEVICE), which is
//! also what the real driver answers with `CUDA_VISIBLE_DEVICES=` empty. Skipped, with a note,
//! when that binary or the stubs have not been built (the default CPU-only test run).

use std::path::PathBuf;
use std::process::Command;

fn cuda_build() -> Option<(PathBuf, PathBuf)> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let bin = std::env::var_os("SR_CUDA_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target/cuda/release/spatial-reasoning"));
    let stubs = root.join("target/cuda-toolchain/nvidia/cu13/lib64/stubs");
    if bin.is_file() && stubs.join("libcuda.so.1").exists() {
        Some((bin, stubs))
    } else {
        eprintln!(
            "skipped: no cuda build at {} with stubs in {} (run scripts/cuda-build.sh)",
            bin.display(),
            stubs.display()
        );
        None
    }
}

#[test]
fn cuda_binary_without_gpu_reports_no_device() {
    let Some((bin, stubs)) = cuda_build() else {
        return;
    };
    // `info` never opens the device: the binary starts and is the cuda build.
    let info = Command::new(&bin)
        .arg("info")
        .env("LD_LIBRARY_PATH", &stubs)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&info.stdout);
    assert!(info.status.success(), "info failed: {info:?}");
    assert!(
        stdout.contains("features cpu,cuda"),
        "not a cuda build: {stdout}"
    );

    // `bench` and `pretrain` create the device before any work.
    for args in [
        &["bench", "--batch", "2", "--steps", "1", "--warmup", "0"][..],
        &[
            "pretrain",
            "--set",
            "data.dataset=synthetic",
            "--set",
            "data.train_size=64",
            "--set",
            "data.test_size=16",
            "--set",
            "train.max_steps=1",
            "--set",
            "train.batch_size=16",
            "--out",
        ][..],
    ] {
        let tmp = std::env::temp_dir().join(format!("sr-cuda-binary-{}", std::process::id()));
        let mut cmd = Command::new(&bin);
        cmd.args(args).env("LD_LIBRARY_PATH", &stubs);
        if args[0] == "pretrain" {
            cmd.arg(&tmp);
        }
        let out = cmd.output().unwrap();
        let _ = std::fs::remove_dir_all(&tmp);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {out:?}");
        assert!(
            stderr.contains("error: ") && stderr.contains("no CUDA device"),
            "{args:?}: stderr {stderr}"
        );
        assert!(!stderr.contains("panicked"), "{args:?} panicked: {stderr}");
        assert!(
            stderr.contains("CUDA_ERROR_NO_DEVICE"),
            "{args:?}: the driver's error is not named: {stderr}"
        );
    }
}
