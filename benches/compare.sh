#!/usr/bin/env bash
# Run `spatial-reasoning bench` and its PyTorch twin with the same options, alternating
# (dfdx, torch) REPEAT times so both see the same machine load, and print each result and the
# ratio of medians (dfdx / torch; > 1 means this crate is faster).
#
#   benches/compare.sh --backbone resnet32 --batch 64 --steps 10 --threads 2 --mode train
#
# Env: PYTHON (default /work/venv/bin/python, else python3), BIN (default target/release/spatial-reasoning),
#      REPEAT (default 3), OURS / TORCH: extra arguments for one side only (e.g. OURS=--bf16 times
#      our bf16 option against PyTorch's f32; `--bf16` in the arguments gives both sides bf16),
#      BASE: a second build of this crate (e.g. the previous commit's binary) timed in the same
#      alternation (base, ours, torch), reported as ours/base beside ours/torch.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-$( [ -x /work/venv/bin/python ] && echo /work/venv/bin/python || echo python3 )}
BIN=${BIN:-target/release/spatial-reasoning}
REPEAT=${REPEAT:-3}
[ -x "$BIN" ] || cargo build --release --quiet
echo "# $(date -u +%FT%TZ) load: $(cut -d' ' -f1-3 /proc/loadavg) args: $*"
# PyTorch's OpenMP workers spin-wait by default; on 2 cores that steals the other thread's core.
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE}
out=$(mktemp)
base_out=$(mktemp)
for _ in $(seq "$REPEAT"); do
  if [ -n "${BASE:-}" ]; then
    # shellcheck disable=SC2086
    "$BASE" bench "$@" ${OURS:-} --json | tee -a "$base_out"
  fi
  # shellcheck disable=SC2086 # OURS/TORCH are word lists
  "$BIN" bench "$@" ${OURS:-} --json | tee -a "$out"
  # shellcheck disable=SC2086
  "$PYTHON" benches/torch_twin.py "$@" ${TORCH:-} --json | tee -a "$out"
done
"$PYTHON" - "$out" "$base_out" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
base = [json.loads(l)["img_per_s"] for l in open(sys.argv[2]) if l.strip()]
runs = {k: [r["img_per_s"] for r in rows if r["impl"] == k] for k in ("dfdx", "torch")}
med = {k: statistics.median(v) for k, v in runs.items()}
r = rows[0]
prec = {k: next(x.get("precision", "f32") for x in rows if x["impl"] == k) for k in ("dfdx", "torch")}
per_run = ", ".join(f"{a / b:.2f}" for a, b in zip(runs["dfdx"], runs["torch"]))
line = (f"{r['backbone']} {r['mode']} batch {r['batch']} size {r['size']} threads {r['threads']}: "
        f"dfdx {prec['dfdx']} {med['dfdx']:.1f} img/s, torch {prec['torch']} {med['torch']:.1f} img/s, "
        f"ratio {med['dfdx'] / med['torch']:.2f} (per run {per_run})")
if base:
    line += f"; base {statistics.median(base):.1f} img/s, dfdx/base {med['dfdx'] / statistics.median(base):.2f}"
print(line)
PY
rm -f "$out" "$base_out"
