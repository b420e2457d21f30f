#!/usr/bin/env bash
# Build the CUDA binary (and the CUDA op-check test binary) on a machine with no CUDA install and
# no GPU, with the wheel toolchain of scripts/cuda-toolchain.sh, and check what came out.
#
#   bash scripts/cuda-build.sh            # -> target/cuda/gpu-bundle/{spatial-reasoning,cuda_ops}
#
# Builds into its own target dir (CARGO_TARGET_DIR, default target/cuda) so that the CPU build in
# target/ is not rebuilt with other features. The checks (fail the script when they fail):
# - the binary's NEEDED entries name libcuda.so.1, libnvrtc.so.13, libcublas.so.13, libcudnn.so.9
#   (the link stubs' sonames, resolved to the real libraries on a GPU machine);
# - it embeds all 49 of dfdx's kernels as non-empty PTX for the target architecture, and the
#   crate's own (src/ops/kernels.cu: 11 entry points), which ptxas also assembles for that
#   architecture (what the driver's JIT will do);
# - src/ops/cuda/cudnn_abi.c compiles against the cuDNN 9 headers (constants, struct layout and
#   prototypes of the crate's cuDNN declarations), and every cuDNN function the binary imports is
#   one the real libcudnn.so.9 exports (the list goes into the bundle for scripts/gpu-check.sh);
# - run against the link stubs (a driver that sees no GPU), it fails with "no CUDA device" and
#   exit 1, not a panic.
# gpu-bundle/ holds the stripped binaries to copy to a GPU machine (scripts/gpu-check.sh runs them).
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
cd "$repo"

eval "$(scripts/cuda-toolchain.sh)"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$repo/target/cuda}"
cap="${SR_CUDA_COMPUTE_CAP/./}"

start=$(date +%s)
cargo build --release --features cuda --bin spatial-reasoning
# The op check: built, not run (it needs a GPU). Print its path from cargo's JSON messages.
# (The test's own artifact: cargo also reports the crate's binary, built for integration tests.)
test_bin="$(cargo test --release --features cuda --test cuda_ops --no-run --message-format=json |
  grep '"kind":\["test"\]' | sed -n 's/.*"executable":"\([^"]*\)".*/\1/p' | tail -1)"
# cuDNN's host-side descriptor calls against the real library (no GPU needed; scripts/gpu-check.sh).
host_bin="$(cargo test --release --features cuda --test cuda_cudnn_host --no-run --message-format=json |
  grep '"kind":\["test"\]' | sed -n 's/.*"executable":"\([^"]*\)".*/\1/p' | tail -1)"
[ -n "$test_bin" ] && [ -n "$host_bin" ] || { echo "cuda-build: FAIL: test executables not found" >&2; exit 1; }
secs=$(($(date +%s) - start))
echo "cuda-build: built in ${secs}s (CARGO_TARGET_DIR=$CARGO_TARGET_DIR)"

bin="$CARGO_TARGET_DIR/release/spatial-reasoning"
fail() { echo "cuda-build: FAIL: $*" >&2; exit 1; }

needed="$(readelf -d "$bin" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p' | tr '\n' ' ')"
echo "cuda-build: NEEDED $needed"
# (libcublasLt.so.13 is linked too but dropped by --as-needed: dfdx calls no cublasLt function.
# The real libcublas.so.13 loads it.)
for lib in libcuda.so.1 libnvrtc.so.13 libcublas.so.13 libcudnn.so.9; do
  [[ " $needed " == *" $lib "* ]] || fail "$bin does not link $lib"
done

# dfdx's build script compiles its 49 kernels to PTX files in its OUT_DIR; the binary embeds
# those of the ops the crate uses (the linker drops the rest). Each PTX module names its `.target`.
ptx_dir="$(ls -td "$CARGO_TARGET_DIR"/release/build/dfdx-*/out 2>/dev/null | head -1)"
ptx=$(find "$ptx_dir" -name '*.ptx' -size +0 2>/dev/null | wc -l)
isa=$(grep -h '^\.version' "$ptx_dir"/*.ptx 2>/dev/null | sort -u | tr '\n' ' ')
modules=$(strings -n 8 "$bin" | grep -c "^\.target sm_${cap}\b" || true)
entries=$(strings -n 8 "$bin" | grep -c '^\.visible \.entry' || true)
echo "cuda-build: dfdx compiled $ptx non-empty PTX files (PTX ISA ${isa% }); the binary embeds $modules modules for sm_${cap} with $entries kernel entry points"
[ "$ptx" -eq 49 ] || fail "expected 49 non-empty PTX files in $ptx_dir, found $ptx"
[ "$modules" -ge 30 ] || fail "the binary embeds only $modules PTX modules for sm_${cap}"
[ "$entries" -ge "$modules" ] || fail "the embedded PTX holds only $entries kernel entry points"

# The crate's kernels: compiled by build.rs into the crate's OUT_DIR, embedded in the binary.
own_ptx="$(ls -t "$CARGO_TARGET_DIR"/release/build/spatial-reasoning-*/out/sr_kernels.ptx 2>/dev/null | head -1)"
[ -s "$own_ptx" ] || fail "no sr_kernels.ptx from build.rs under $CARGO_TARGET_DIR/release/build"
own=$(grep -c '^\.visible \.entry sr_' "$own_ptx")
own_bin=$(strings -n 8 "$bin" | grep -c '^\.visible \.entry sr_' || true)
echo "cuda-build: src/ops/kernels.cu: $own kernels in $own_ptx ($(grep -m1 '^\.target' "$own_ptx")), $own_bin embedded in the binary"
[ "$own" -eq 11 ] && [ "$own_bin" -eq 11 ] || fail "expected the 11 kernels of src/ops/kernels.cu"
if command -v ptxas >/dev/null; then
  ptxas -arch="sm_${cap}" -o /dev/null "$own_ptx" || fail "ptxas rejects sr_kernels.ptx"
  echo "cuda-build: ptxas assembles sr_kernels.ptx for sm_${cap}"
fi

# The crate's cuDNN declarations against the cuDNN 9 headers, and its imports against the real
# library's exports (the link stub holds exactly those, so linking already proved it).
gcc -std=c11 -Wall -Werror -fsyntax-only -I"$CUDA_ROOT/include" src/ops/cuda/cudnn_abi.c ||
  fail "src/ops/cuda/cudnn_abi.c: the cuDNN declarations disagree with the cuDNN 9 headers"
imports="$(nm -D --undefined-only "$bin" | awk '{print $2}' | sed 's/@.*//' | grep '^cudnn' | sort -u)"
exports="${SR_CUDA_TOOLCHAIN:-$repo/target/cuda-toolchain}/cudnn-exports.txt"
extra="$(comm -23 <(echo "$imports") <(sort -u "$exports"))"
[ -z "$extra" ] || fail "the binary imports cuDNN functions libcudnn.so.9 does not export: $extra"
echo "cuda-build: cuDNN: $(echo "$imports" | wc -l) functions imported, all exported by cuDNN 9 ($(echo "$imports" | tr '\n' ' '))"

bundle="$CARGO_TARGET_DIR/gpu-bundle"
mkdir -p "$bundle"
strip -o "$bundle/spatial-reasoning" "$bin"
if [ -n "$test_bin" ]; then strip -o "$bundle/cuda_ops" "$test_bin"; fi
if [ -n "$host_bin" ]; then strip -o "$bundle/cuda_cudnn_host" "$host_bin"; fi
echo "$imports" >"$bundle/cudnn-imports.txt"
echo "cuda-build: bundle $(du -sh "$bundle" | cut -f1): $(ls "$bundle" | tr '\n' ' ')"
# dfdx compiles a few kernels with NVRTC at run time, #including cuda_fp16.h from this folder:
# scripts/gpu-check.sh makes it exist on the GPU machine.
echo "$CUDA_ROOT/include" >"$bundle/cuda-include-dir"
echo "$SR_CUDA_COMPUTE_CAP" >"$bundle/compute-cap"
# dfdx's reshape/contiguous kernels are NVRTC-compiled at run time too, #including the .cuh
# headers of its build OUT_DIR by the absolute path baked in at build time (a binary run where
# that build folder is missing fails with "cannot open source file cuda_utils.cuh"): carry them.
echo "$ptx_dir" >"$bundle/dfdx-out-dir"
mkdir -p "$bundle/dfdx-cuh"
cp "$ptx_dir"/*.cuh "$bundle/dfdx-cuh/"
echo "cuda-build: CUDA include dir baked in: $CUDA_ROOT/include"

# Without a GPU the binary must fail cleanly. Here the stubs stand in for a driver that sees no
# device (every call returns CUDA_ERROR_NO_DEVICE), as on a GPU machine with CUDA_VISIBLE_DEVICES=
# set empty. (`bench` builds the device first.) Without any driver library the loader refuses to
# start the binary at all (exit 127, "libcuda.so.1: cannot open shared object file").
set +e
err="$(LD_LIBRARY_PATH="$CUDA_ROOT/lib64/stubs" "$bin" bench --batch 2 --steps 1 --warmup 0 2>&1 >/dev/null)"
rc=$?
set -e
echo "cuda-build: run with a driver that sees no GPU: exit $rc: $err"
[ "$rc" -ne 0 ] || fail "the cuda binary exited 0 with no GPU"
[[ "$err" == *"no CUDA device"* ]] || fail "expected 'no CUDA device' in: $err"
[[ "$err" != *panick* ]] || fail "the cuda binary panicked: $err"
echo "cuda-build: OK"
