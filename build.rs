//! Compiles the CUDA path's kernels (`src/ops/kernels.cu`) to PTX with `nvcc` when the `cuda`
//! feature is on (into `$OUT_DIR/sr_kernels.ptx`, embedded by `src/ops/cuda/`). Nothing happens
//! in a CPU build; with `ci-check` (type-checking without a CUDA toolkit) the PTX is empty.
//!
//! Target: `sm_XY` from `SR_CUDA_COMPUTE_CAP` or `CUDA_COMPUTE_CAP` (`9.0` or `90`), else from
//! `nvidia-smi --query-gpu=compute_cap` (as dfdx's build script does). `nvcc` is
//! `$CUDA_ROOT/bin/nvcc` when that exists, else the one on `PATH`.
use std::path::PathBuf;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=src/ops/kernels.cu");
    for var in ["SR_CUDA_COMPUTE_CAP", "CUDA_COMPUTE_CAP", "CUDA_ROOT"] {
        println!("cargo:rerun-if-env-changed={var}");
    }
    if std::env::var_os("CARGO_FEATURE_CUDA").is_none() {
        return;
    }
    let out = PathBuf::from(std::env::var("OUT_DIR").unwrap()).join("sr_kernels.ptx");
    if std::env::var_os("CARGO_FEATURE_CI_CHECK").is_some() {
        std::fs::write(&out, "").unwrap();
        println!("cargo:rustc-env=SR_KERNELS_ARCH=ci");
        return;
    }
    let cap = compute_cap();
    let nvcc = std::env::var_os("CUDA_ROOT")
        .map(|r| PathBuf::from(r).join("bin/nvcc"))
        .filter(|p| p.is_file())
        .unwrap_or_else(|| PathBuf::from("nvcc"));
    let result = Command::new(&nvcc)
        .arg(format!("--gpu-architecture=sm_{cap}"))
        .args(["--ptx", "-O3", "-o"])
        .arg(&out)
        .arg("src/ops/kernels.cu")
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e} (set CUDA_ROOT)", nvcc.display()));
    assert!(
        result.status.success(),
        "nvcc failed on src/ops/kernels.cu:\n{}{}",
        String::from_utf8_lossy(&result.stdout),
        String::from_utf8_lossy(&result.stderr)
    );
    println!("cargo:rustc-env=SR_KERNELS_ARCH=sm_{cap}");
}

/// The compute capability as `XY` digits.
fn compute_cap() -> String {
    for var in ["SR_CUDA_COMPUTE_CAP", "CUDA_COMPUTE_CAP"] {
        if let Ok(v) = std::env::var(var) {
            let v = v.trim().replace('.', "");
            if !v.is_empty() {
                return v;
            }
        }
    }
    let out = Command::new("nvidia-smi")
        .args(["--query-gpu=compute_cap", "--format=csv"])
        .output()
        .expect("nvidia-smi failed: set SR_CUDA_COMPUTE_CAP (e.g. 9.0) to build without a GPU");
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .nth(1)
        .expect("nvidia-smi printed no compute capability");
    line.trim().replace('.', "")
}
