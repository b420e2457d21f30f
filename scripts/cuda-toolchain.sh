#!/usr/bin/env bash
# A CUDA 13.0 build toolchain from PyPI wheels, for building `--features cuda` on a machine with
# no CUDA install and no GPU (CI, a laptop). Prints the environment to `eval`:
#
#   eval "$(scripts/cuda-toolchain.sh)"     # then: cargo build --release --features cuda
#
# What it sets up (once; later runs reuse it and only print the environment):
# - the pinned wheels (--no-deps) unpacked into one tree, $SR_CUDA_TOOLCHAIN/nvidia/cu13, where
#   `nvcc` works in place (about 105 MB). Only CUDA 13.0 works: the CUDA 12 nvcc wheels hold no
#   `nvcc` binary, and a newer nvcc emits PTX that a CUDA 13.0-generation driver rejects.
# - CUDA_ROOT=/tmp/spatial-reasoning-cuda13, a link to that tree. dfdx bakes "$CUDA_ROOT/include"
#   into the binary (NVRTC reads cuda_fp16.h from it at run time), so a short fixed path is one that
#   a GPU machine can recreate without root: `scripts/gpu-check.sh` points it at that machine's
#   CUDA 13 headers.
# - bin/nvidia-smi, a stand-in that prints the compute capability dfdx's build script asks for
#   (it calls `nvidia-smi --query-gpu=compute_cap` before reading any override). Default 9.0
#   (H100/H200); set SR_CUDA_COMPUTE_CAP=8.0 (A100), 8.9 (L4/4090)... before the first `eval`.
#   Only ever put this on PATH for building, never on a machine whose real nvidia-smi you need.
# - link-only stub libraries libcuda.so (soname libcuda.so.1), libnvrtc.so (libnvrtc.so.13),
#   libcublas.so (libcublas.so.13), libcublasLt.so (libcublasLt.so.13) in $CUDA_ROOT/lib64/stubs,
#   a folder cudarc's build script already adds to the link search path. They define every
#   function cudarc declares for these libraries, each returning CUDA_ERROR_NO_DEVICE; the
#   binary's NEEDED entries name the real sonames, which the GPU machine's loader resolves to the
#   real libraries. Never install them: on LD_LIBRARY_PATH they act as "driver, but no GPU" (the
#   no-GPU test uses that).
# - cuDNN 9: the headers of the pinned nvidia-cudnn-cu13 wheel in $CUDA_ROOT/include (cudarc's
#   build script wants include/cudnn.h) and a link-only stub libcudnn.so (soname libcudnn.so.9)
#   that defines exactly the functions the real libcudnn.so.9 of that wheel exports (listed in
#   $SR_CUDA_TOOLCHAIN/cudnn-exports.txt; the real ones carry the symbol version libcudnn.so.9,
#   which unversioned references bind to): a call to a function cuDNN 9 removed, such as the ones
#   cudarc's `cudnn::result::version_check` makes, fails to link here instead of failing to load
#   on the GPU machine. The wheel is 517 MB (downloaded once, to a temporary folder); only the
#   headers (1.3 MB) and the export list are kept.
#
# Needs: python3 with pip (or $PYTHON), gcc, network access to PyPI on the first run, and cargo's
# registry holding cudarc's sources (any `cargo fetch` / build of the crate puts them there).
set -euo pipefail

repo="$(cd "$(dirname "$0")/.." && pwd)"
tc="${SR_CUDA_TOOLCHAIN:-$repo/target/cuda-toolchain}"
cap="${SR_CUDA_COMPUTE_CAP:-9.0}"
link="${SR_CUDA_ROOT_LINK:-/tmp/spatial-reasoning-cuda13}"
py="${PYTHON:-python3}"

# Pinned: the versions measured to work together (nvcc + nvvm + crt headers + runtime headers +
# CCCL, without which nvcc fails on `nv/target`).
wheels=(
  nvidia-cuda-nvcc==13.0.88
  nvidia-nvvm==13.0.88
  nvidia-cuda-crt==13.0.88
  nvidia-cuda-runtime==13.0.96
  nvidia-cuda-cccl==13.0.85
)
stamp="$tc/.wheels-$(printf '%s\n' "${wheels[@]}" | cksum | cut -d' ' -f1)"

log() { echo "cuda-toolchain: $*" >&2; }

mkdir -p "$tc"
if [ ! -e "$stamp" ]; then
  log "installing ${wheels[*]} into $tc (about 105 MB, once)"
  rm -rf "$tc/nvidia" "$tc"/.wheels-*
  # --target keeps the executable bits of nvcc/cicc/ptxas; all wheels share one nvidia/cu13 tree.
  "$py" -m pip install --quiet --disable-pip-version-check --no-deps --no-compile \
    --target "$tc" "${wheels[@]}" >&2
  touch "$stamp"
fi
cu="$tc/nvidia/cu13"
for f in bin/nvcc include/cuda.h include/cuda_fp16.h; do
  [ -e "$cu/$f" ] || { log "missing $cu/$f after install: delete $tc and rerun"; exit 1; }
done

# The fixed CUDA_ROOT path (see above). Replace a stale link, refuse to touch anything else.
if [ "$(readlink "$link" 2>/dev/null || true)" != "$cu" ]; then
  if [ -e "$link" ] && [ ! -L "$link" ]; then
    log "$link exists and is not a link: remove it or set SR_CUDA_ROOT_LINK"
    exit 1
  fi
  ln -sfn "$cu" "$link"
fi

# nvidia-smi stand-in: answers only the query dfdx's build script makes.
mkdir -p "$tc/bin"
cat >"$tc/bin/nvidia-smi.tmp" <<EOF
#!/bin/sh
# Stand-in written by scripts/cuda-toolchain.sh for building dfdx without a GPU.
case "\$*" in
  *compute_cap*) printf 'compute_cap\n%s\n' "\${SR_CUDA_COMPUTE_CAP:-$cap}" ;;
  *) echo "nvidia-smi stand-in (scripts/cuda-toolchain.sh): no GPU here" >&2; exit 9 ;;
esac
EOF
chmod +x "$tc/bin/nvidia-smi.tmp"
mv "$tc/bin/nvidia-smi.tmp" "$tc/bin/nvidia-smi"

# cuDNN 9 headers and the export list of the real libcudnn.so.9 (see above).
cudnn_wheel=nvidia-cudnn-cu13==9.28.1.4
cudnn_stamp="$tc/.cudnn-$(echo "$cudnn_wheel" | cksum | cut -d' ' -f1)"
if [ ! -e "$cudnn_stamp" ] || [ ! -e "$cu/include/cudnn.h" ]; then
  log "fetching $cudnn_wheel (517 MB download, once; keeps its headers and export list)"
  wtmp="$(mktemp -d "${TMPDIR:-/tmp}/sr-cudnn.XXXXXX")"
  "$py" -m pip download --quiet --disable-pip-version-check --no-deps --no-cache-dir \
    --dest "$wtmp" "$cudnn_wheel" >&2
  "$py" - "$wtmp" "$cu/include" <<'PY'
import glob, os, sys, zipfile
tmp, include = sys.argv[1], sys.argv[2]
(wheel,) = glob.glob(os.path.join(tmp, "*.whl"))
with zipfile.ZipFile(wheel) as z:
    for name in z.namelist():
        base = os.path.basename(name)
        if name.startswith("nvidia/cudnn/include/") and base.endswith(".h"):
            with open(os.path.join(include, base), "wb") as f:
                f.write(z.read(name))
        elif name == "nvidia/cudnn/lib/libcudnn.so.9":
            with open(os.path.join(tmp, base), "wb") as f:
                f.write(z.read(name))
PY
  nm -D --defined-only "$wtmp/libcudnn.so.9" | awk '$2 == "T" { sub(/@.*/, "", $3); print $3 }' | sort -u \
    >"$tc/cudnn-exports.txt"
  rm -rf "$wtmp"
  [ -s "$tc/cudnn-exports.txt" ] && grep -qx cudnnConvolutionForward "$tc/cudnn-exports.txt" ||
    { log "no cuDNN export list from $cudnn_wheel"; exit 1; }
  rm -f "$cu/lib64/stubs/libcudnn.so"
  touch "$cudnn_stamp"
fi

# Link stubs: every function cudarc's bindings declare for each library.
stubs="$cu/lib64/stubs"
if [ ! -e "$stubs/.done" ]; then
  cudarc="$(ls -d "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/cudarc-0.9.15 2>/dev/null | head -1)"
  if [ -z "$cudarc" ]; then
    (cd "$repo" && cargo fetch --quiet >&2)
    cudarc="$(ls -d "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/cudarc-0.9.15 | head -1)"
  fi
  mkdir -p "$stubs"
  build_stub() { # module soname libname prefix-regex
    local src="$stubs/$3.c"
    echo "/* Link-only stub generated by scripts/cuda-toolchain.sh from cudarc's $1 bindings. */" >"$src"
    grep -ohE '^\s*pub fn [A-Za-z0-9_]+' "$cudarc/src/$1/sys.rs" | awk '{print $3}' |
      grep -E "$4" | grep -vxE 'cuGetError(String|Name)' | sort -u |
      sed 's/.*/int &(void) { return 100; }/' >>"$src"
    if [ "$1" = driver ]; then
      # Loaded at run time (LD_LIBRARY_PATH, for the no-GPU test only) the stub acts as a driver
      # that sees no device: every call returns CUDA_ERROR_NO_DEVICE (100), and the two calls
      # cudarc makes to print an error succeed, as the real ones do.
      cat >>"$src" <<'C'
int cuGetErrorString(int e, const char **s) { (void)e; *s = "no CUDA-capable device is detected (link stub)"; return 0; }
int cuGetErrorName(int e, const char **s) { (void)e; *s = "CUDA_ERROR_NO_DEVICE"; return 0; }
C
    fi
    gcc -shared -fPIC -nostdlib -Wl,-soname,"$2" -o "$stubs/$3.so" "$src"
    ln -sfn "$3.so" "$stubs/$2" # the soname, for LD_LIBRARY_PATH
    log "stub $3.so ($2): $(grep -c '^int' "$src") symbols"
  }
  build_stub driver libcuda.so.1 libcuda '^cu'
  build_stub nvrtc libnvrtc.so.13 libnvrtc '^nvrtc'
  build_stub cublas libcublas.so.13 libcublas '^cublas'
  build_stub cublaslt libcublasLt.so.13 libcublasLt '^cublasLt'
  touch "$stubs/.done"
fi
# libcudnn: exactly the functions the real libcudnn.so.9 exports (cudnnGetErrorString returns a
# string, cudnnGetVersion a size; every other one CUDNN_STATUS_NOT_INITIALIZED).
if [ ! -e "$stubs/libcudnn.so" ]; then
  src="$stubs/libcudnn.c"
  {
    echo "/* Link-only stub generated by scripts/cuda-toolchain.sh from $cudnn_wheel's exports. */"
    grep -vxE 'cudnnGetErrorString|cudnnGetVersion' "$tc/cudnn-exports.txt" |
      sed 's/.*/int &(void) { return 1001; }/'
    echo 'const char *cudnnGetErrorString(int s) { (void)s; return "cuDNN link stub"; }'
    echo 'unsigned long cudnnGetVersion(void) { return 0; }'
  } >"$src"
  gcc -shared -fPIC -nostdlib -Wl,-soname,libcudnn.so.9 -o "$stubs/libcudnn.so" "$src"
  ln -sfn libcudnn.so "$stubs/libcudnn.so.9"
  log "stub libcudnn.so (libcudnn.so.9): $(grep -c '^[a-z]' "$src") symbols"
fi

# CUDA_PATH and CUDA_TOOLKIT_ROOT_DIR come before CUDA_ROOT in the build scripts' search order.
cat <<EOF
unset CUDA_PATH CUDA_TOOLKIT_ROOT_DIR
export CUDA_ROOT='$link'
export PATH='$tc/bin:$link/bin':"\$PATH"
export SR_CUDA_COMPUTE_CAP='$cap'
EOF
