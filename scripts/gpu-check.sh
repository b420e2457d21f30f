#!/usr/bin/env bash
# The GPU check: what only a machine with an NVIDIA GPU can verify, in one run of about five
# minutes: correctness of the CUDA path against the CPU, then benchmarks beside PyTorch.
#
# Here (no GPU needed), build and pack what the GPU machine needs (under 60 MiB):
#   bash scripts/cuda-build.sh && bash scripts/gpu-check.sh --prepare
# There, from the repository root, with target/cuda/gpu-bundle copied along:
#   bash scripts/gpu-check.sh            # everything
#   bash scripts/gpu-check.sh --quick    # steps 1-4 only (correctness)
#
# The GPU machine needs: the NVIDIA driver (libcuda.so.1) of the CUDA 13 generation or newer;
# libnvrtc.so.13, libcublas.so.13, libcublasLt.so.13, libcudnn.so.9 and CUDA 13's cuda_fp16.h,
# from a CUDA 13 install (/usr/local/cuda) or the `nvidia-*` wheels of the Python environment
# (as PyTorch cu130 installs them); python3 with PyTorch for the twins. Nothing is downloaded.
#
# Steps (each is timed out; a failure fails the script after the later steps have run):
#  1. the GPU, the libraries and headers the binary will load; every cuDNN function the binary
#     imports must be exported by the machine's libcudnn.so.9; tests/cuda_cudnn_host.rs (the
#     cuDNN descriptors read back as built; host-side calls only);
#  2. no device visible (CUDA_VISIBLE_DEVICES=""): the clean "no CUDA device" error, no panic;
#  3. tests/cuda_ops.rs: every op on Cuda against Cpu (values, gradients), TF32, the optimiser's
#     device path, memory reuse, two backbones;
#  4. SR pretraining (default config: ResNet-32, K=4, P=2, B=128) on the first 10,000 real
#     CIFAR-10 training images, 50 steps: step 1's loss within 1e-5 of the CPU binary's, step 2's
#     within 1e-3 (after one Adam step);
#  5. training step, ResNet-32 and Conv-4 at batch 128 and 512, ours against
#     benches/torch_twin.py --device cuda, alternating, in fp32 (TF32 off on both sides) and with
#     TF32 convolutions (our --tf32; PyTorch's defaults as users run them); images/s, peak memory;
#  6. end-to-end SR pretraining at the authors' setting (ResNet-32, B 128, K 4, P 3, patch 24,
#     64x64): `bench --pretrain` (data pipeline included; its data-wait fraction) against
#     benches/sr_twin.py, both maths; source images/s and peak GPU memory;
#  7. where the time goes: per-op CUDA-event profile of our ResNet-32 step (batch 128) and SR
#     step, torch.profiler's top kernels for the twins (and nsys, when installed).
# It writes $OUT/gpu-check/ (logs) and one JSON record, benches/results/gpu-<date>.json (also
# under $OUT/results/): date, commit, GPU, versions, and per row the setting, backbone, batch,
# math mode, our and PyTorch's images/s and peak memory, plus the correctness results and the
# profiles. Env: SR_GPU_REPEAT (default 1) repeats step 5's alternation.
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
  # Real CIFAR-10: data_batch_1.bin only (the whole set does not fit the 60 MiB that travels);
  # the run trains on its 10,000 images (data.train_limit=10000).
  data="${SPATIAL_REASONING_DATA:-$repo/../shared/data}"
  src="$data/cifar-10-batches-bin/data_batch_1.bin"
  [ -f "$src" ] || src="$data/data_batch_1.bin"
  [ -f "$src" ] || { echo "gpu-check: no CIFAR-10 data_batch_1.bin under $data" >&2; exit 1; }
  cp -f "$src" "$bundle/data_batch_1.bin"
  { git rev-parse HEAD; git status --porcelain | grep -q . && echo dirty || echo clean; } \
    >"$bundle/commit"
  du -sh "$bundle"
  ls -la "$bundle"
  total=$(du -sb "$bundle" | cut -f1)
  [ "$total" -lt $((60 * 1024 * 1024)) ] || { echo "gpu-check: bundle over 60 MiB" >&2; exit 1; }
  echo "gpu-check: ready: carry target/cuda/gpu-bundle, run: bash scripts/gpu-check.sh"
  exit 0
fi
quick=0
[ "${1:-}" = "--quick" ] && quick=1

py="${PYTHON:-python3}"
out="${OUT:-/tmp}/gpu-check"
mkdir -p "$out"
rec="$out/records.jsonl" # one {"tag": ..., ...} object per measurement, for the JSON record
: >"$rec"
failures=()
fail() { echo "gpu-check: FAIL: $*"; failures+=("$*"); }
step() { echo; echo "== $* ($(date -u +%T))"; }
# Appends a tagged JSON line (from a command's last line of output) to the record.
report() { "$py" benches/gpu_report.py "$@"; }
record() { report tag "$1" "$2" >>"$rec" 2>/dev/null; } # tag json
for f in spatial-reasoning spatial-reasoning-cpu cuda_ops cuda_cudnn_host cuda-include-dir dfdx-out-dir dfdx-cuh data_batch_1.bin cudnn-imports.txt; do
  [ -e "$bundle/$f" ] || { echo "gpu-check: $bundle/$f missing: run --prepare here first"; exit 1; }
done
bin="$bundle/spatial-reasoning"
started=$(date +%s)

step "1. GPU, libraries, headers"
gpu="$(nvidia-smi --query-gpu=name,driver_version,compute_cap,memory.total --format=csv,noheader 2>/dev/null | head -1)"
[ -n "$gpu" ] || fail "nvidia-smi"
echo "GPU: ${gpu:-none}; built for compute capability $(cat "$bundle/compute-cap" 2>/dev/null)"
# Directories that may hold the CUDA 13 libraries and headers: the Python environment's nvidia
# wheels (nvidia/cu13/{lib,include}, nvidia/cudnn/lib, ...), then a toolkit.
nv_dirs="$("$py" -c 'import nvidia; print(" ".join(nvidia.__path__))' 2>/dev/null || true)"
# The driver's own libcuda comes first (/usr/local/nvidia, or a folder already on
# LD_LIBRARY_PATH); a toolkit's compat/libcuda.so.1 is for older drivers and fails with
# CUDA_ERROR_SYSTEM_DRIVER_MISMATCH on a current one, so it is never picked.
ld_dirs=()
IFS=: read -ra ld_dirs <<<"${LD_LIBRARY_PATH:-}"
search=("${ld_dirs[@]}" /usr/local/nvidia $nv_dirs /usr/local/cuda /usr/local/cuda-13* /usr/lib/x86_64-linux-gnu)
libdirs=()
for lib in libcuda.so.1 libnvrtc.so.13 libcublas.so.13 libcublasLt.so.13 libcudnn.so.9; do
  if ldconfig -p | grep -q " $lib "; then
    path="$(ldconfig -p | grep -m1 " $lib " | sed 's/.*=> //')"
  else
    path="$(find "${search[@]}" -maxdepth 5 -name "$lib" -not -path '*/compat/*' 2>/dev/null | head -1)"
    [ -n "$path" ] && libdirs+=("$(dirname "$path")")
  fi
  if [ -n "$path" ]; then echo "$lib: $path"; else fail "$lib not found (searched ldconfig and ${search[*]})"; fi
  [ "$lib" = libcudnn.so.9 ] && cudnn_lib="$path"
done
if [ ${#libdirs[@]} -gt 0 ]; then
  LD_LIBRARY_PATH="$(printf '%s\n' "${libdirs[@]}" | sort -u | paste -sd:):${LD_LIBRARY_PATH:-}"
  export LD_LIBRARY_PATH
fi
# Every cuDNN function the binary calls must exist in this libcudnn (cuDNN 9 removed some
# cuDNN 8 ones); the binary's list was taken at build time.
if [ -n "${cudnn_lib:-}" ]; then
  missing="$(nm -D --defined-only "$cudnn_lib" | awk '{sub(/@.*/, "", $3); print $3}' | sort -u |
    comm -13 - <(sort -u "$bundle/cudnn-imports.txt"))"
  if [ -n "$missing" ]; then fail "libcudnn.so.9 lacks: $missing"; else
    echo "libcudnn.so.9 exports all $(wc -l <"$bundle/cudnn-imports.txt") cuDNN functions the binary imports"; fi
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
ldd "$bin" | grep -E 'cuda|nvrtc|cublas|cudnn'
timeout 60 "$bundle/cuda_cudnn_host" --test-threads=1 2>&1 | tee "$out/cuda_cudnn_host.txt" |
  grep -E '^test |result|cuDNN version' || true
grep -q 'test result: ok' "$out/cuda_cudnn_host.txt" || fail "cuda_cudnn_host (see $out/cuda_cudnn_host.txt)"
versions="$("$py" -c 'import json, torch; print(json.dumps({"torch": torch.__version__, "torch_cuda": torch.version.cuda, "torch_cudnn": torch.backends.cudnn.version()}))' 2>/dev/null || echo '{}')"
echo "PyTorch: $versions"

step "2. no device visible: a clean error"
err="$(CUDA_VISIBLE_DEVICES= timeout 60 "$bin" bench --batch 2 --steps 1 --warmup 0 2>&1 >/dev/null)"
rc=$?
echo "exit $rc: $err"
{ [ "$rc" -ne 0 ] && [[ "$err" == *"no CUDA device"* ]] && [[ "$err" != *panick* ]]; } ||
  fail "no-device run: exit $rc: $err"

step "3. ops, optimiser and backbones on Cuda against Cpu (tests/cuda_ops.rs)"
timeout 300 "$bundle/cuda_ops" --test-threads=1 --nocapture 2>&1 | tee "$out/cuda_ops.txt" |
  grep -E 'max \|gpu|relative|tf32|reserved|^test |panicked|needs a GPU|: gpu |FAILED|result' || true
grep -q 'test result: ok' "$out/cuda_ops.txt" || fail "cuda_ops (see $out/cuda_ops.txt)"
record cuda_ops "{\"result\": \"$(grep -E '^test result' "$out/cuda_ops.txt" | tail -1 | tr -d '"\\')\"}"

step "4. SR pretraining on real CIFAR-10 (first 10,000 training images): GPU against CPU"
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
timeout 240 "$bin" pretrain --out /tmp/gpu-check-pre-gpu "${sets[@]}" --set train.max_steps=50 \
  2>&1 | grep -E 'step (1|2|10|20|30|40|50)/|done|error' || fail "GPU pretraining"
timeout 240 "$bundle/spatial-reasoning-cpu" pretrain --out /tmp/gpu-check-pre-cpu "${sets[@]}" \
  --set train.max_steps=2 2>&1 | grep -E 'done|error' || fail "CPU pretraining"
cp /tmp/gpu-check-pre-gpu/metrics.jsonl "$out/pretrain-gpu-metrics.jsonl" 2>/dev/null
cp /tmp/gpu-check-pre-cpu/metrics.jsonl "$out/pretrain-cpu-metrics.jsonl" 2>/dev/null
pre="$(report pretrain /tmp/gpu-check-pre-gpu/metrics.jsonl /tmp/gpu-check-pre-cpu/metrics.jsonl 50)"
echo "$pre"
record pretrain_check "$pre"
[[ "$pre" == *'"ok": true'* ]] || fail "pretraining: not 50 finite steps, or GPU and CPU losses differ"

if [ "$quick" = 0 ]; then
  step "5. training step: ours against PyTorch (alternating), fp32 and TF32"
  for rep in $(seq "${SR_GPU_REPEAT:-1}"); do
    for bb in resnet32 conv4; do
      for b in 128 512; do
        for math in fp32 tf32; do
          args=(--backbone "$bb" --mode train --batch "$b" --steps 20 --warmup 5 --json)
          ours=(); tm=fp32
          [ "$math" = tf32 ] && { ours=(--tf32); tm=default; }
          dj="$(timeout 120 "$bin" bench "${args[@]}" "${ours[@]}" 2>>"$out/bench.err" | tail -1)" ||
            fail "ours $bb $b $math"
          tj="$(timeout 120 "$py" benches/torch_twin.py --device cuda --math "$tm" "${args[@]}" \
            2>>"$out/bench.err" | tail -1)" || fail "torch $bb $b $math"
          record "train ours" "$dj"
          record "train torch" "$tj"
          report pair "$dj" "$tj"

        done
      done
    done
  done

  step "6. end-to-end SR pretraining, authors' setting (ResNet-32, B 128, K 4, P 3, p 24, 64x64)"
  sr=(--backbone resnet32 --batch 128 --views 4 --patches 3 --patch-size 24 --size 64 --steps 20 --warmup 5 --json)
  for math in fp32 tf32; do
    ours=(); tm=fp32
    [ "$math" = tf32 ] && { ours=(--tf32); tm=default; }
    dj="$(timeout 180 "$bin" bench --pretrain "${sr[@]}" "${ours[@]}" 2>>"$out/bench.err" | tail -1)" ||
      fail "ours SR $math"
    tj="$(timeout 180 "$py" benches/sr_twin.py --device cuda --math "$tm" "${sr[@]}" 2>>"$out/bench.err" | tail -1)" ||
      fail "torch SR $math"
    record "sr ours" "$dj"
    record "sr torch" "$tj"
    report pair "$dj" "$tj"
  done

  step "7. profiles"
  pj="$(timeout 120 "$bin" bench --backbone resnet32 --batch 128 --steps 10 --warmup 3 --profile --json 2>>"$out/bench.err" | tail -1)" ||
    fail "ours profile"
  record "profile ours resnet32" "$pj"
  tj="$(timeout 120 "$py" benches/torch_twin.py --device cuda --backbone resnet32 --batch 128 --steps 10 --warmup 3 --profile --json 2>>"$out/bench.err" | tail -1)" ||
    fail "torch profile"
  record "profile torch resnet32" "$tj"
  sj="$(timeout 180 "$bin" bench --pretrain "${sr[@]}" --profile 2>>"$out/bench.err" | tail -1)" || fail "ours SR profile"
  record "profile ours sr" "$sj"
  tsj="$(timeout 180 "$py" benches/sr_twin.py --device cuda "${sr[@]}" --profile 2>>"$out/bench.err" | tail -1)" ||
    fail "torch SR profile"
  record "profile torch sr" "$tsj"
  report profiles "$pj" "$tj" "$sj" "$tsj" || true
  if command -v nsys >/dev/null; then
    timeout 120 nsys profile --stats=true -o "$out/nsys-ours" -f true "$bin" bench --backbone resnet32 --batch 128 --steps 10 --warmup 3 \
      >"$out/nsys-ours.txt" 2>&1 || true
  fi
fi

step "record"
mkdir -p "$out/../results" benches/results
name="gpu-$(date -u +%Y%m%dT%H%MZ).json"
report record "$rec" "$bundle/commit" "$gpu" "$versions" "$out/../results/$name" "${#failures[@]}" \
  "$(( $(date +%s) - started ))"
cp "$out/../results/$name" benches/results/ 2>/dev/null && echo "also benches/results/$name"

echo
echo "gpu-check: $(( $(date +%s) - started )) s"
if [ ${#failures[@]} -eq 0 ]; then
  echo "gpu-check: ALL OK"
else
  printf 'gpu-check: FAILED: %s\n' "${failures[@]}"
  exit 1
fi
