#!/usr/bin/env bash
# CPU forward+backward time (ClipLoss, train mode, fp32) and peak memory of clip-train's model
# next to OpenCLIP's, same machine, same run: the tiny test model (batch 8) and
# convnext_large_d_320 (batch 2), or the built-in configs named in MODELS (batch 2, or BATCH; e.g.
# MODELS=ViT-B-32, or MODELS=ViT-SO400M-14-SigLIP-384 BATCH=4), with and without gradient
# checkpointing. Each configuration runs in its own
# process so peak memory is its own. Prints one JSON line per run, then a table.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cargo build --release -p clip-train --bin clip-tool
PY=.venv/bin/python
STEPS=${STEPS:-3}
out=$(mktemp)
for model in ${MODELS:-clip_tiny_test convnext_large_d_320}; do
    batch=${BATCH:-2}; [ $model = clip_tiny_test ] && batch=8
    for ckpt in "" --grad-checkpointing; do
        target/release/clip-tool bench-model --model $model --batch-size $batch --steps $STEPS $ckpt | tail -1 | tee -a "$out"
        $PY scripts/bench-model.py --model $model --batch-size $batch --steps $STEPS $ckpt | tail -1 | tee -a "$out"
    done
done
$PY - "$out" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
print(f"\n{'model':22} {'batch':>5} {'ckpt':>5} {'impl':>10} {'s/step':>8} {'peak RSS MiB':>13}")
for r in rows:
    print(f"{r['model']:22} {r['batch']:>5} {str(r['grad_checkpointing']):>5} {r['impl']:>10} {r['step_s']:8.3f} {r['peak_rss_mb']:13.0f}")
PY
