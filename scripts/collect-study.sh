#!/usr/bin/env bash
# Copy a study's results (not its checkpoints or feature caches) into the repository and rebuild
# its table and plots from the collected CSV.
#
#   scripts/collect-study.sh RUNS_DIR results/cifar10-cpu
#
# RUNS_DIR is the `--out` of `spatial-reasoning run --config configs/study/cifar10-cpu.toml`.
# Copied: results.csv, report.md + plots/ when the job finished, and per run config.toml,
# meta.json, metrics.jsonl, eval/*.json and the diagnostics (a random-init run's diagnostics.json,
# an SR run's diagnostics/offsets.json). The table is regenerated from the CSV alone with
# `spatial-reasoning report --csv DEST/results.csv --out DEST` (writes DEST/results.md, plots/).
set -euo pipefail
src=${1:?usage: collect-study.sh RUNS_DIR DEST}
dest=${2:?usage: collect-study.sh RUNS_DIR DEST}
bin=${SPATIAL_REASONING_BIN:-target/release/spatial-reasoning}
mkdir -p "$dest/runs"
cp "$src/results.csv" "$dest/results.csv"
if [ -f "$src/report.md" ]; then
  cp "$src/report.md" "$dest/report.md"
  mkdir -p "$dest/plots" && cp -r "$src/plots/." "$dest/plots/"
fi
( cd "$src" && find . -path '*/seed-*' -type d -prune -print ) | while read -r run; do
  mkdir -p "$dest/runs/$run"
  for f in config.toml meta.json metrics.jsonl diagnostics.json; do
    [ -f "$src/$run/$f" ] && cp "$src/$run/$f" "$dest/runs/$run/$f"
  done
  if [ -f "$src/$run/diagnostics/offsets.json" ]; then
    mkdir -p "$dest/runs/$run/diagnostics"
    cp "$src/$run/diagnostics/offsets.json" "$dest/runs/$run/diagnostics/"
  fi
  if [ -d "$src/$run/eval" ]; then
    mkdir -p "$dest/runs/$run/eval"
    find "$src/$run/eval" -maxdepth 1 -name '*.json' -exec cp {} "$dest/runs/$run/eval/" \;
  fi
done
"$bin" report --csv "$dest/results.csv" --out "$dest"
