#!/usr/bin/env bash
# Fuzz the dataset readers (CIFAR-10/100, STL-10, image folder / PNG / JPEG decode) and the
# config parser (from_toml_str + apply_overrides + check) with libFuzzer, each for a bounded
# time. Targets live in fuzz/ (its own workspace and target dir), seed inputs in
# fuzz/corpus/<target>/ (read only: new inputs go to a temp dir, deleted afterwards).
#
# Usage: scripts/fuzz.sh [SECONDS_PER_TARGET (default 30)] [TARGET ...]
#        targets: cifar stl10 image_folder config (default: all)
# Exit status: 0 when no target found a crash; 1 when one did (panic, failed property,
# timeout or out-of-memory), the reproducer is then in fuzz/artifacts/<target>/ and
# `RUSTC_BOOTSTRAP=1 cargo fuzz run --sanitizer none <target> <file>` (in fuzz/) replays it;
# 2 when cargo-fuzz is missing.
#
# Toolchain: cargo-fuzz passes nightly-only flags, and a nightly toolchain does not build dfdx
# 0.13, so stable rustc is used with RUSTC_BOOTSTRAP=1. `--sanitizer none`: the code under test (readers, config) is safe
# Rust (the properties are "no panic", checked with debug assertions and overflow checks on,
# which cargo-fuzz enables); AddressSanitizer would only slow the runs down.
# Install once: cargo install cargo-fuzz --version 0.13.2 --locked   (needs a C++ compiler for
# libFuzzer). The first build of fuzz/ takes ~15 min on 2 cores, later ones a few minutes.
set -euo pipefail
cd "$(dirname "$0")/.."

secs=30
if [[ $# -gt 0 && $1 =~ ^[0-9]+$ ]]; then
    secs=$1
    shift
fi
targets=("$@")
if [[ ${#targets[@]} -eq 0 ]]; then
    targets=(cifar stl10 image_folder config)
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz.sh: cargo-fuzz is not installed: cargo install cargo-fuzz --version 0.13.2 --locked" >&2
    exit 2
fi

export RUSTC_BOOTSTRAP=1
cd fuzz
echo "== building the fuzz targets"
cargo fuzz build --sanitizer none
bin_dir="target/$(rustc -vV | sed -n 's/^host: //p')/release"

max_len() {
    case $1 in
        cifar) echo 16384 ;;        # up to 5 CIFAR records (3,073 / 3,074 bytes)
        stl10) echo 4096 ;;         # structured inputs expand to whole 27,648-byte images
        image_folder) echo 65536 ;;
        *) echo 4096 ;;
    esac
}

failed=()
for t in "${targets[@]}"; do
    work=$(mktemp -d)
    echo "== fuzz $t for ${secs}s"
    # The binary built above, run directly (`cargo fuzz run` would rebuild first). The first
    # corpus directory receives new inputs, the seed directory is only read.
    mkdir -p "artifacts/$t"
    if "$bin_dir/$t" "$work" "corpus/$t" -artifact_prefix="artifacts/$t/" \
        -max_total_time="$secs" -max_len="$(max_len "$t")" -timeout=20 -rss_limit_mb=2048 \
        -print_final_stats=1 2>"$work.log"; then
        grep -E "^stat::number_of_executed_units|^stat::new_units_added" "$work.log" || true
    else
        failed+=("$t")
        tail -n 40 "$work.log"
    fi
    rm -rf "$work" "$work.log"
    # The targets' scratch folders (named after the fuzzer's pid).
    rm -rf /dev/shm/sr-fuzz-* "${TMPDIR:-/tmp}"/sr-fuzz-*
done

if [[ ${#failed[@]} -gt 0 ]]; then
    echo "fuzz.sh: crash in: ${failed[*]} (reproducers in fuzz/artifacts/)" >&2
    exit 1
fi
echo "fuzz.sh: no crash in ${targets[*]} (${secs}s each)"
