#!/usr/bin/env bash
# One AdamW step over convnext_large_d_320's parameters (or MODEL's) on CPU, gradients set:
# the per-tensor loop clip-train used to run (`clip-tool bench-optimizer --impl loop`), the fused
# step it runs now (`--impl fused`) and torch.optim.AdamW(fused=True) (scripts/bench-optimizer.py),
# same machine, one run, each in its own process. Prints one JSON line per run, then a table.
#   MODEL=clip_tiny_test STEPS=5 bash scripts/bench-optimizer.sh
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cargo build -p clip-train --bin clip-tool
PY=.venv/bin/python
MODEL=${MODEL:-convnext_large_d_320}
STEPS=${STEPS:-3}
out=$(mktemp)
trap 'rm -f "$out"' EXIT
for impl in loop fused; do
    "${CARGO_TARGET_DIR:-target}"/debug/clip-tool bench-optimizer --model "$MODEL" --impl $impl --steps "$STEPS" | tail -1 | tee -a "$out"
done
$PY scripts/bench-optimizer.py --model "$MODEL" --steps "$STEPS" 2>/dev/null | tail -1 | tee -a "$out"
$PY - "$out" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
print(f"\n{'model':22} {'tensors':>7} {'elements':>11} {'impl':>18} {'s/step':>8}")
for r in rows:
    print(f"{r['model']:22} {r['tensors']:>7} {r['elements']:>11} {r['impl']:>18} {r['step_s']:8.3f}")
PY
