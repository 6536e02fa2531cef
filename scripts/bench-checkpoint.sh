#!/usr/bin/env bash
# The training stall of a checkpoint: convnext_large_d_320 (350M parameters, 4.2 GB checkpoint
# with AdamW's moments) on CPU, batch 1, synthetic data, a checkpoint after step 3. The stall is
# step 4's data time (the time from the end of step 3 to step 4's batch, which holds the save)
# minus step 5's. Runs the current build and, side by side, BEFORE_BIN (an older clip-train,
# e.g. one that wrote checkpoints on the training thread) when given.
#   BEFORE_BIN=/path/to/old/clip-train bash scripts/bench-checkpoint.sh
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cargo build -p clip-train --bin clip-train
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
ARGS=(--model convnext_large_d_320 --dataset-type synthetic --train-num-samples 6 --batch-size 1
      --epochs 1 --save-every-n-steps 3 --save-frequency 0 --log-every-n-steps 1 --lr 1e-5
      --warmup 1 --precision fp32 --device cpu --workers 1 --logs "$out")
bench() {
    local name=$1 bin=$2
    "$bin" "${ARGS[@]}" --name "$name" >/dev/null 2>&1
    python3 - "$out/$name/out.log" "$name" <<'PY'
import re, sys
lines = [l for l in open(sys.argv[1]) if "Train Epoch" in l]
data = [float(re.search(r"Data \(t\): ([0-9.]+)", l).group(1)) for l in lines]
batch = [float(re.search(r"Batch \(t\): ([0-9.]+)", l).group(1)) for l in lines]
# 1-based steps: the save follows step 3, so step 4 carries it.
stall = data[3] - data[4]
print(f"{sys.argv[2]:>7}: stall {stall:6.2f} s | step time (s) 2..6: "
      + " ".join(f"{b:.2f}" for b in batch[1:6]) + " | data time 4: " + f"{data[3]:.2f}")
PY
    rm -rf "${out:?}/$name"
}
if [ -n "${BEFORE_BIN:-}" ]; then bench before "$BEFORE_BIN"; fi
bench after target/debug/clip-train
