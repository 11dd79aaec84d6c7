#!/bin/bash
# Per-run wall time of the full-budget no-KD and CLIP-KD runs at 6cb16bd (the commit whose 3-seed clipkd
# grid took 99 min 42 s on 2026-11-23) and at the working tree, alternating one run of each, every run in a
# fresh process and its own empty runs folder. Run from the repository root on a quiet machine:
#   bash benchmarks/before_after.sh        (about 5 min on the 2-core CPU)
# 6cb16bd's API (lab.sweep.train_row(row, seed, runs_dir, fast)) predates lab/experiments/.
set -euo pipefail
root=$(pwd)
py="$root/.venv/bin/python"
work=$(mktemp -d)
trap 'git -C "$root" worktree remove --force "$work/before" >/dev/null 2>&1 || true; rm -rf "$work"' EXIT
git -C "$root" worktree add -q --detach "$work/before" 6cb16bd
export HF_HUB_OFFLINE=1
before() {
  (cd "$work/before" && "$py" -c "
import sys, time; from pathlib import Path
from lab.sweep import CLIPKD, NO_KD, train_row
t = time.perf_counter(); train_row({'nokd': NO_KD, 'clipkd': CLIPKD}[sys.argv[1]], int(sys.argv[2]), Path(sys.argv[3]), fast=False)
print(f'before (6cb16bd)  {sys.argv[1]:6} seed {sys.argv[2]}  {time.perf_counter() - t:6.1f} s')" "$1" "$2" "$work/runs-before" 2>/dev/null | tail -1)
}
after() {
  "$py" -c "
import sys, time; from pathlib import Path
from lab.experiments.grids import GRIDS, NO_KD; from lab.experiments.sweep import train_row
clipkd = next(r for r in GRIDS['clipkd'] if r.loss == 'crd+icl+fd' and not r.settings)
t = time.perf_counter(); train_row({'nokd': NO_KD, 'clipkd': clipkd}[sys.argv[1]], int(sys.argv[2]), Path(sys.argv[3]), 'full')
print(f'after (this tree) {sys.argv[1]:6} seed {sys.argv[2]}  {time.perf_counter() - t:6.1f} s')" "$1" "$2" "$work/runs-after" 2>/dev/null | tail -1
}
uptime
for run in "nokd 0" "clipkd 0" "clipkd 1"; do before $run; after $run; done
for side in before after; do
  for d in "$work/runs-$side"/*/; do
    "$py" -c "import json, sys; print(sys.argv[1], sys.argv[2].rstrip('/').rsplit('/', 1)[-1], 'test HM', round(json.load(open(sys.argv[2] + 'summary.json'))['hm'], 3))" "$side" "$d"
  done
done
