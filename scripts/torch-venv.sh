#!/usr/bin/env bash
# A Python venv with PyTorch for the export test (tests/export_torch.rs), in target/torch-venv.
# A no-op when it exists and imports torch, so CI reuses it across runs while target/ is kept.
#
#   bash scripts/torch-venv.sh
#
# Source: PyPI (`pip install torch==$TORCH_VERSION numpy`). On Linux x86-64 PyPI's wheel is the
# CUDA build and pulls the NVIDIA runtime wheels (the test itself runs on the CPU): measured on the
# 2-core development machine, 78 s when idle and 224 s under a load of 12, 5.3 GB on disk. Where
# download.pytorch.org is reachable, its CPU-only wheel is much smaller (not tried here: the
# development machine cannot reach it):
#   TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu TORCH_VERSION=2.15.0+cpu bash scripts/torch-venv.sh
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=target/torch-venv
TORCH_VERSION=${TORCH_VERSION:-2.15.0}
if [ -x "$VENV/bin/python" ] && "$VENV/bin/python" -c "import torch" 2>/dev/null; then
  echo "torch-venv: $("$VENV/bin/python" -c 'import torch; print(torch.__version__)') in $VENV (reused)"
  exit 0
fi
command -v python3 >/dev/null || { echo "torch-venv: python3 not found" >&2; exit 1; }
started=$(date +%s)
rm -rf "$VENV"
python3 -m venv "$VENV"
index=()
if [ -n "${TORCH_INDEX_URL:-}" ]; then
  index=(--extra-index-url "$TORCH_INDEX_URL")  # PyPI stays the source of numpy and the rest
fi
# numpy only silences torch's "Failed to initialize NumPy" warning at import.
"$VENV/bin/pip" install --quiet --no-cache-dir ${index[@]+"${index[@]}"} "torch==$TORCH_VERSION" numpy
"$VENV/bin/python" -c "import torch; print('torch-venv: torch', torch.__version__, 'installed')"
echo "torch-venv: took $(( $(date +%s) - started )) s, $(du -sh "$VENV" | cut -f1) in $VENV"
