#!/usr/bin/env bash
# The full test suite. Works on a fresh machine with only rustup/cargo and python3 installed
# (and network access to crates.io and PyPI: PyTorch for the export test, scripts/torch-venv.sh).
#
#   bash scripts/test.sh
#
# Real-data tests read CIFAR-10 from $SPATIAL_REASONING_DATA (default: ../shared/data beside the
# checkout). With CI=true a missing dataset fails the run instead of skipping.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ -z "${SPATIAL_REASONING_DATA:-}" ] && [ -d ../shared/data ]; then
  export SPATIAL_REASONING_DATA="$(cd ../shared/data && pwd)"
fi
echo "== data root: ${SPATIAL_REASONING_DATA:-<unset>}"

# Toolchain pieces the checks need (no-ops when present).
rustup component add rustfmt clippy >/dev/null 2>&1 || true

echo "== vendor/dfdx is dfdx 0.13.0 from crates.io plus exactly vendor/dfdx-0.13.0-backport.patch"
bash scripts/check-vendor.sh

echo "== cargo fmt --check"
# Not --all: that would also format the vendored dfdx (a path dependency), which must stay byte
# for byte the release plus its patch (check-vendor.sh).
cargo fmt -- --check

echo "== cargo clippy (release, all targets, warnings are errors)"
cargo clippy --release --all-targets -- -D warnings

echo "== cargo check --features cuda,ci-check (the CUDA path type-checks without a GPU)"
cargo check --release --features cuda,ci-check --lib --bins

echo "== CUDA build without a GPU (pinned CUDA 13.0 wheels; built and checked, not run)"
bash scripts/cuda-build.sh

echo "== PyTorch for the export test (target/torch-venv; reused when present)"
bash scripts/torch-venv.sh

echo "== cargo test --release (optimised: tensor code is ~60x slower in debug)"
cargo test --release --no-fail-fast 2>&1 | tee target/test-output.txt
# cargo test exits non-zero on any failure (pipefail); print the totals for the log.

echo "== Slurm: run --slurm against a real single-node cluster (scripts/slurm-local.sh)"
: >target/slurm-test-output.txt
if [ "$(id -u)" != 0 ] && [ "${CI:-}" != true ]; then
  echo "skipped: starting the local cluster needs root (apt-get, munged, slurmd)"
else
  slurm_started=$(date +%s)
  # SlurmdTimeout 10 s instead of 30: the node-failure test waits for the node to go DOWN (measured
  # here: 29 s after the crash instead of 37-42 s).
  slurm_env=$(SLURM_LOCAL_SLURMD_TIMEOUT=10 bash scripts/slurm-local.sh start)
  eval "$slurm_env"
  trap 'bash scripts/slurm-local.sh stop' EXIT
  cargo test --release --test slurm_cluster -- --ignored --test-threads=1 2>&1 | tee target/slurm-test-output.txt
  trap - EXIT
  bash scripts/slurm-local.sh stop
  echo "slurm step: $(( $(date +%s) - slurm_started )) s"
fi

echo "== fuzz the dataset readers and the config parser (10 s per target, libFuzzer on stable)"
if ! cargo install --list | grep -q "^cargo-fuzz v0.13.2:"; then
  cargo install cargo-fuzz --version 0.13.2 --locked
fi
bash scripts/fuzz.sh 10

echo "== notebooks (evcxr Rust kernel, headless; installs evcxr_jupyter 0.22.0 on first use)"
bash scripts/notebooks.sh 2>&1 | tee target/notebooks-output.txt

# Totals for the log: every cargo test binary's counts plus the notebooks' line.
passed=$(cat target/test-output.txt target/slurm-test-output.txt | grep -Eo '[0-9]+ passed' | awk '{s+=$1} END {print s+0}')
failed=$(cat target/test-output.txt target/slurm-test-output.txt | grep -Eo '[0-9]+ failed' | awk '{s+=$1} END {print s+0}')
nb=$(grep -E '^[0-9]+ passed, [0-9]+ failed' target/notebooks-output.txt | tail -n 1)
nb_passed=$(echo "$nb" | grep -Eo '^[0-9]+')
nb_failed=$(echo "$nb" | grep -Eo '[0-9]+ failed' | grep -Eo '[0-9]+')
echo "cargo tests ${passed} passed, ${failed} failed; notebooks ${nb:-missing}"
echo "tests: $((passed + ${nb_passed:-0})) passed, $((failed + ${nb_failed:-0})) failed"
