#!/usr/bin/env bash
# Execute every notebook in notebooks/ headlessly with the Rust (evcxr) Jupyter kernel.
#
#   bash scripts/notebooks.sh [notebooks/NN-name.ipynb ...]
#
# Installs what is missing first (each step is a no-op when present):
#   - rustup component rust-src (evcxr needs it);
#   - evcxr_jupyter 0.22.0 (`cargo install --locked`; 7-17 minutes to compile the first time);
#   - a Python venv in target/notebooks/venv with pinned nbclient, nbformat, jupyter-client;
#   - the `rust` kernel spec (`evcxr_jupyter --install`).
# Then runs each notebook with its own folder as working directory, writes the executed copies
# (outputs and plots) to target/notebooks/executed/, and prints `N passed, N failed`. A notebook
# fails on a compile error, an error output, or a panic. Exit status 1 on any failure.
#
# evcxr's build cache lives in target/notebooks/evcxr (EVCXR_TMPDIR): the first run compiles the
# crate and its dependencies there (minutes); later runs reuse it.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$(pwd)"
OUT="$ROOT/target/notebooks"
mkdir -p "$OUT"

EVCXR_VERSION=0.22.0
export PATH="$HOME/.cargo/bin:$PATH"

echo "== rust-src"
rustup component add rust-src >/dev/null 2>&1 || true

echo "== evcxr_jupyter $EVCXR_VERSION"
if ! cargo install --list | grep -q "^evcxr_jupyter v$EVCXR_VERSION:"; then
  cargo install evcxr_jupyter --version "$EVCXR_VERSION" --locked
fi

echo "== python venv (nbclient)"
VENV="$OUT/venv"
if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c "import nbclient" 2>/dev/null; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet "nbclient==0.11.0" "nbformat==5.11.1" "jupyter-client==8.10.0"
fi

echo "== rust kernel spec"
if ! "$VENV/bin/python" -c "from jupyter_client.kernelspec import KernelSpecManager as K; K().get_kernel_spec('rust')" 2>/dev/null; then
  evcxr_jupyter --install
fi

# evcxr settings for these runs: a panicking cell is an error (by default evcxr keeps going and
# reports success), and a persistent build cache.
export EVCXR_CONFIG_DIR="$OUT/evcxr-config"
mkdir -p "$EVCXR_CONFIG_DIR"
printf ':preserve_vars_on_panic 0\n' > "$EVCXR_CONFIG_DIR/init.evcxr"
export EVCXR_TMPDIR="$OUT/evcxr"
mkdir -p "$EVCXR_TMPDIR"

if [ "$#" -gt 0 ]; then
  notebooks=("$@")
else
  notebooks=(notebooks/[0-9]*.ipynb)
fi
echo "== executing ${#notebooks[@]} notebooks -> $OUT/executed"
started=$(date +%s)
status=0
"$VENV/bin/python" notebooks/run_notebooks.py "$OUT/executed" "${notebooks[@]}" || status=$?
echo "notebooks took $(( $(date +%s) - started )) s"
exit "$status"
