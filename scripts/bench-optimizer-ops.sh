#!/usr/bin/env bash
# The optimizer phase of a training step for every --opt clip-train builds: its top-level
# libtorch ops (and ms) per step, from `--profile-steps 2:4` (steps that do not log) summarised by
# `clip-tool profile`, on MODEL (clip_tiny_test by default), CPU, fp32 (no found_inf: updates in
# place) and amp (the loss scaler's found_inf: the fused kernels take it, the other rules update
# copies and write them back with torch.where). One JSON line per run, then a table.
#   MODEL=clip_tiny_test BATCH=8 [OPTS="timm/lion timm/sgd"] bash scripts/bench-optimizer-ops.sh
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build -p clip-train --bins
BIN=${CARGO_TARGET_DIR:-target}/debug
MODEL=${MODEL:-clip_tiny_test}
BATCH=${BATCH:-8}
OPTS=${OPTS:-"adamw nadamw timm/adamw timm/nadamw timm/lamb timm/lambw timm/lion timm/adafactor
timm/adafactorbv timm/adoptw timm/sgd timm/momentum timm/muon timm/adamuon timm/nadamuon"}
logs=$(mktemp -d)
trap 'rm -rf "$logs"' EXIT
out=$logs/rows.jsonl
for precision in fp32 amp; do
    for opt in $OPTS; do
        name=$(echo "$opt-$precision" | tr / -)
        "$BIN"/clip-train --device cpu --precision $precision --dataset-type synthetic \
            --train-num-samples $((5 * BATCH)) --batch-size "$BATCH" --epochs 1 --model "$MODEL" \
            --lr 1e-3 --warmup 1 --grad-clip-norm 1.0 --log-every-n-steps 5 --profile-steps 2:4 \
            --opt "$opt" --logs "$logs" --name "$name" >/dev/null 2>&1
        "$BIN"/clip-tool profile --json "$logs/$name/profile/rank0_steps2-4.pt.trace.json" |
            python3 -c "
import json, sys
s = json.load(sys.stdin)
o = s['phases']['optimizer']
print(json.dumps({'opt': '$opt', 'precision': '$precision', 'ops': o['ops'] / o['count'],
                  'ms': o['ms'] / o['count'], 'syncs': o.get('syncs', 0)}))" | tee -a "$out"
    done
done
python3 - "$out" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
by = {(r['opt'], r['precision']): r for r in rows}
print(f"\n{'--opt':18} {'ops fp32':>9} {'ops amp':>8} {'ms fp32':>8} {'ms amp':>8}")
for opt in dict.fromkeys(r['opt'] for r in rows):
    a, b = by[(opt, 'fp32')], by[(opt, 'amp')]
    print(f"{opt:18} {a['ops']:9.0f} {b['ops']:8.0f} {a['ms']:8.1f} {b['ms']:8.1f}")
PY
