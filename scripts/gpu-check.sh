#!/usr/bin/env bash
# The GPU check: what only a machine with an NVIDIA GPU can verify, in one run of a few minutes.
#
# Here (no GPU needed), build and pack what the GPU machine needs (under 64 MiB):
#   bash scripts/cuda-build.sh && bash scripts/gpu-check.sh --prepare
# There, from the repository root, with target/cuda/gpu-bundle copied along:
#   bash scripts/gpu-check.sh
#
# The GPU machine needs: the NVIDIA driver (libcuda.so.1) of the CUDA 13 generation or newer;
# libnvrtc.so.13, libcublas.so.13, libcublasLt.so.13 and CUDA 13's cuda_fp16.h, from a CUDA 13
# install (/usr/local/cuda) or the `nvidia-*` CUDA 13 wheels of the Python environment (as
# PyTorch cu130 installs them); and python3 with PyTorch for the twin benchmark. Nothing is
# downloaded.
#
# Steps (each is timed out; any failure fails the script, after the later steps have run):
#  1. the GPU, and the libraries and headers the binary will load;
#  2. no device visible (CUDA_VISIBLE_DEVICES=""): clean "no CUDA device" error, no panic;
#  3. tests/cuda_ops.rs: every op and two backbones on Cuda against Cpu (values, gradients);
#  4. SR pretraining, default config (ResNet-32, K=4, P=2), 50 steps on the first 10,000 real
#     CIFAR-10 training images; the first two steps' losses must match the CPU binary's;
#  5. `bench` ResNet-32 training at batch 128 and 512 next to benches/torch_twin.py --device cuda.
set -uo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
cd "$repo"
bundle="${SR_GPU_BUNDLE:-$repo/target/cuda/gpu-bundle}"

if [ "${1:-}" = "--prepare" ]; then
  set -e
  [ -x "$bundle/spatial-reasoning" ] && [ -x "$bundle/cuda_ops" ] ||
    { echo "gpu-check: run scripts/cuda-build.sh first" >&2; exit 1; }
  # The CPU binary, for the pretraining cross-check (the default CPU build).
  cargo build --release --bin spatial-reasoning
  strip -o "$bundle/spatial-reasoning-cpu" target/release/spatial-reasoning
  # Real CIFAR-10: data_batch_1.bin only (the whole set does not fit the 64 MiB that travels);
  # the run trains on its 10,000 images (data.train_limit=10000).
  data="${SPATIAL_REASONING_DATA:-$repo/../shared/data}"
  src="$data/cifar-10-batches-bin/data_batch_1.bin"
  [ -f "$src" ] || src="$data/data_batch_1.bin"
  [ -f "$src" ] || { echo "gpu-check: no CIFAR-10 data_batch_1.bin under $data" >&2; exit 1; }
  cp "$src" "$bundle/data_batch_1.bin"
  du -sh "$bundle"
  ls -la "$bundle"
  total=$(du -sb "$bundle" | cut -f1)
  [ "$total" -lt $((60 * 1024 * 1024)) ] || { echo "gpu-check: bundle over 60 MiB" >&2; exit 1; }
  echo "gpu-check: ready: carry target/cuda/gpu-bundle, run: bash scripts/gpu-check.sh"
  exit 0
fi

py="${PYTHON:-python3}"
out="${OUT:-/tmp/gpu-check}"
mkdir -p "$out"
failures=()
fail() { echo "gpu-check: FAIL: $*"; failures+=("$*"); }
step() { echo; echo "== $* ($(date -u +%T))"; }
for f in spatial-reasoning spatial-reasoning-cpu cuda_ops cuda-include-dir dfdx-out-dir dfdx-cuh data_batch_1.bin; do
  [ -e "$bundle/$f" ] || { echo "gpu-check: $bundle/$f missing: run --prepare here first"; exit 1; }
done
bin="$bundle/spatial-reasoning"

step "1. GPU, libraries, headers"
nvidia-smi --query-gpu=name,driver_version,compute_cap,memory.total --format=csv,noheader ||
  fail "nvidia-smi"
echo "built for compute capability $(cat "$bundle/compute-cap" 2>/dev/null)"
# Directories that may hold the CUDA 13 libraries and headers: the Python environment's nvidia
# wheels (nvidia/cu13/{lib,include}, or per-package nvidia/*/{lib,include}), then a toolkit.
nv_dirs="$("$py" -c 'import nvidia; print(" ".join(nvidia.__path__))' 2>/dev/null || true)"
# The driver's own libcuda comes first (/usr/local/nvidia, or a folder already on
# LD_LIBRARY_PATH); a toolkit's compat/libcuda.so.1 is for older drivers and fails with
# CUDA_ERROR_SYSTEM_DRIVER_MISMATCH on a current one, so it is never picked.
ld_dirs=()
IFS=: read -ra ld_dirs <<<"${LD_LIBRARY_PATH:-}"
search=("${ld_dirs[@]}" /usr/local/nvidia $nv_dirs /usr/local/cuda /usr/local/cuda-13* /usr/lib/x86_64-linux-gnu)
libdirs=()
for lib in libcuda.so.1 libnvrtc.so.13 libcublas.so.13 libcublasLt.so.13; do
  if ldconfig -p | grep -q " $lib "; then
    echo "$lib: $(ldconfig -p | grep -m1 " $lib " | sed 's/.*=> //')"
    continue
  fi
  hit="$(find "${search[@]}" -maxdepth 5 -name "$lib" -not -path '*/compat/*' 2>/dev/null | head -1)"
  if [ -n "$hit" ]; then
    echo "$lib: $hit"
    libdirs+=("$(dirname "$hit")")
  else
    fail "$lib not found (searched ldconfig and ${search[*]})"
  fi
done
if [ ${#libdirs[@]} -gt 0 ]; then
  LD_LIBRARY_PATH="$(printf '%s\n' "${libdirs[@]}" | sort -u | paste -sd:):${LD_LIBRARY_PATH:-}"
  export LD_LIBRARY_PATH
fi
# The include folder baked into the binary (dfdx's NVRTC kernels #include "cuda_fp16.h").
inc="$(cat "$bundle/cuda-include-dir")"
if [ ! -e "$inc/cuda_fp16.h" ]; then
  # Prefer the headers of the nvrtc that will be loaded; cuda_fp16.h comes with the runtime.
  hdr="$(find "${search[@]}" -maxdepth 5 -name cuda_fp16.h -path '*13*' 2>/dev/null | head -1)"
  [ -n "$hdr" ] || hdr="$(find "${search[@]}" -maxdepth 5 -name cuda_fp16.h 2>/dev/null | head -1)"
  if [ -n "$hdr" ]; then
    mkdir -p "$(dirname "$inc")"
    ln -sfn "$(dirname "$hdr")" "$inc"
    echo "linked $inc -> $(dirname "$hdr")"
  else
    fail "no cuda_fp16.h found for $inc"
  fi
fi
# dfdx's run-time NVRTC kernels also #include its build folder's .cuh headers by absolute path.
dfdx_out="$(cat "$bundle/dfdx-out-dir")"
if [ ! -e "$dfdx_out/cuda_utils.cuh" ]; then
  mkdir -p "$dfdx_out" && cp "$bundle"/dfdx-cuh/*.cuh "$dfdx_out/" &&
    echo "copied dfdx's .cuh headers to $dfdx_out" || fail "dfdx headers for $dfdx_out"
fi
ldd "$bin" | grep -E 'cuda|nvrtc|cublas'

step "2. no device visible: a clean error"
err="$(CUDA_VISIBLE_DEVICES= timeout 60 "$bin" bench --batch 2 --steps 1 --warmup 0 2>&1 >/dev/null)"
rc=$?
echo "exit $rc: $err"
{ [ "$rc" -ne 0 ] && [[ "$err" == *"no CUDA device"* ]] && [[ "$err" != *panick* ]]; } ||
  fail "no-device run: exit $rc: $err"

step "3. ops and backbones on Cuda against Cpu (tests/cuda_ops.rs)"
timeout 240 "$bundle/cuda_ops" --test-threads=1 --nocapture 2>&1 | tee "$out/cuda_ops.txt" |
  grep -E 'max \|gpu|^test |panicked|needs a GPU|: gpu |FAILED|result' || true
grep -q 'test result: ok' "$out/cuda_ops.txt" || fail "cuda_ops (see $out/cuda_ops.txt)"

step "4. SR pretraining on real CIFAR-10 (first 10,000 training images)"
# The loader wants the official five batches + test batch: all but batch 1 are stand-ins that
# data.train_limit=10000 never reads past (pretraining reads the train split only).
d=/tmp/gpu-check-data/cifar-10-batches-bin
mkdir -p "$d"
cp -f "$bundle/data_batch_1.bin" "$d/data_batch_1.bin"
for n in data_batch_2 data_batch_3 data_batch_4 data_batch_5 test_batch; do
  ln -sfn data_batch_1.bin "$d/$n.bin"
done
sets=(--set data.root=/tmp/gpu-check-data --set data.train_limit=10000 --set train.log_every=1)
rm -rf /tmp/gpu-check-pre-gpu /tmp/gpu-check-pre-cpu
timeout 300 "$bin" pretrain --out /tmp/gpu-check-pre-gpu "${sets[@]}" --set train.max_steps=50 \
  2>&1 | grep -E 'step (1|2|10|20|30|40|50)/|done|error' || fail "GPU pretraining"
timeout 180 "$bundle/spatial-reasoning-cpu" pretrain --out /tmp/gpu-check-pre-cpu "${sets[@]}" \
  --set train.max_steps=2 2>&1 | grep -E 'done|error' || fail "CPU pretraining"
cp /tmp/gpu-check-pre-gpu/metrics.jsonl "$out/pretrain-gpu-metrics.jsonl" 2>/dev/null
[ -f /tmp/gpu-check-pre-gpu/metrics.jsonl ] && [ -f /tmp/gpu-check-pre-cpu/metrics.jsonl ] &&
  "$py" - /tmp/gpu-check-pre-gpu/metrics.jsonl /tmp/gpu-check-pre-cpu/metrics.jsonl <<'PY' ||
import json, math, statistics, sys
def steps(p):
    return {r["step"]: r for r in map(json.loads, open(p)) if r.get("kind") == "step"}
g, c = steps(sys.argv[1]), steps(sys.argv[2])
ok = len(g) == 50 and all(math.isfinite(r["loss"]) for r in g.values())
for s in (1, 2):
    d = abs(g[s]["loss"] - c[s]["loss"])
    print(f"step {s}: loss gpu {g[s]['loss']:.6f} cpu {c[s]['loss']:.6f} |diff| {d:.2e}")
    ok &= d <= 1e-3 * max(1.0, abs(c[s]["loss"]))
ips = statistics.median(g[s]["img_per_s"] for s in g if s > 5)
print(f"gpu: {len(g)} steps, loss {g[1]['loss']:.4f} -> {g[max(g)]['loss']:.4f}, "
      f"median {ips:.1f} img/s (steps 6+); cpu step 2: {c[2]['img_per_s']:.1f} img/s")
sys.exit(0 if ok else 1)
PY
  fail "pretraining: not 50 finite steps, or GPU and CPU losses differ"

step "5. bench ResNet-32 train: dfdx (Cuda) vs PyTorch (CUDA, fp32)"
for b in 128 512; do
  args=(--backbone resnet32 --mode train --batch "$b" --steps 10 --warmup 3 --json)
  dj="$(timeout 240 "$bin" bench "${args[@]}" | tail -1)" || fail "dfdx bench batch $b"
  tj="$(timeout 120 "$py" benches/torch_twin.py --device cuda "${args[@]}" | tail -1)" ||
    fail "torch bench batch $b"
  echo "$dj"
  echo "$tj"
  [ -n "$dj" ] && [ -n "$tj" ] || continue
  "$py" -c 'import json,sys; d,t=(json.loads(a)["img_per_s"] for a in sys.argv[1:]);
print(f"resnet32 train batch '"$b"': dfdx {d:.0f} img/s, torch {t:.0f} img/s, dfdx/torch {d/t:.3f}")' \
    "$dj" "$tj" || fail "bench output batch $b"
done

echo
if [ ${#failures[@]} -eq 0 ]; then
  echo "gpu-check: ALL OK"
else
  printf 'gpu-check: FAILED: %s\n' "${failures[@]}"
  exit 1
fi
