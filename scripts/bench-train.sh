#!/usr/bin/env bash
# Steps/s of the tiny CLIP on CPU: clip-train next to OpenCLIP's open_clip_train.main with the
# same flags and synthetic data, same machine, same run. Prints both and the ratio.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cargo build --release -p clip-train --bin clip-train
out=$(mktemp -d)
STEPS=${STEPS:-60}
BATCH=${BATCH:-32}
ARGS=(--model clip_tiny --dataset-type synthetic --train-num-samples $((STEPS * BATCH))
      --batch-size $BATCH --epochs 1 --lr 1e-3 --warmup 10 --precision fp32 --device cpu
      --workers 1 --log-every-n-steps 20 --save-frequency 0 --logs "$out")
secs() {
    python3 -c 'import subprocess, sys, time
t = time.time(); subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
print(time.time() - t)' "$@"
}
ours=$(secs target/release/clip-train "${ARGS[@]}" --name ours)
theirs=$(secs .venv/bin/python scripts/openclip-train.py "${ARGS[@]}" --name theirs)
grep "Train Epoch" "$out/ours/out.log" | tail -1
grep "Train Epoch" "$out/theirs/out.log" | tail -1
python3 - "$ours" "$theirs" "$STEPS" <<'PY'
import sys
ours, theirs, steps = float(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3])
print(f"clip-train: {steps/ours:.2f} steps/s ({ours:.1f} s whole run, start-up included)")
print(f"OpenCLIP:   {steps/theirs:.2f} steps/s ({theirs:.1f} s whole run, start-up included)")
print(f"ratio: {theirs/ours:.2f}x")
PY
rm -rf "$out"
