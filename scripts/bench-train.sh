#!/usr/bin/env bash
# bench-train.sh - training steps/s: clip-train next to OpenCLIP's open_clip_train.main, the same
# flags on the same webdataset shards (JPEGs both decode and augment: data that costs both the
# same, not --dataset-type synthetic, whose generator would be measured instead of the step),
# same machine, same run. Then a --profile-steps run of clip-train, summarised by
# `clip-tool profile`: ops, host syncs and milliseconds per phase of steps that do not log.
#
# env: MODEL [clip_tiny] STEPS [60] BATCH [32] WORKERS [2] DEVICE [cpu] PRECISION [fp32]
#      LOG_EVERY [20] PROFILE [5:7] SHARDS [4] PER_SHARD [500] BENCH_DIR [/tmp/clip-bench-train]
#      PYTHON [.venv/bin/python]
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
MODEL="${MODEL:-clip_tiny}"
STEPS="${STEPS:-60}"
BATCH="${BATCH:-32}"
WORKERS="${WORKERS:-2}"
DEVICE="${DEVICE:-cpu}"
PRECISION="${PRECISION:-fp32}"
LOG_EVERY="${LOG_EVERY:-20}"
PROFILE="${PROFILE:-5:7}"
SHARDS="${SHARDS:-4}"
PER_SHARD="${PER_SHARD:-500}"
BENCH_DIR="${BENCH_DIR:-/tmp/clip-bench-train}"
PYTHON="${PYTHON:-$ROOT/.venv/bin/python}"
log() { echo "[bench-train] $*" >&2; }

if [ ! -s "$BENCH_DIR/sizes.json" ] || [ "$(ls "$BENCH_DIR"/*.tar 2>/dev/null | wc -l)" -ne "$SHARDS" ]; then
  "$PYTHON" -c 'import skimage' 2>/dev/null || "$PYTHON" -m pip install -q scikit-image
  rm -rf "$BENCH_DIR"
  "$PYTHON" scripts/make-test-shards.py "$BENCH_DIR" --shards "$SHARDS" --samples-per-shard "$PER_SHARD" >&2
fi
LAST=$(printf '%05d' $((SHARDS - 1)))
URLS="$BENCH_DIR/{00000..$LAST}.tar"

log "building clip-train and clip-tool (release)"
cargo build --release -q -p clip-train --bin clip-train --bin clip-tool
BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release"
out=$(mktemp -d)
ARGS=(--model "$MODEL" --train-data "$URLS" --dataset-type webdataset
      --train-num-samples $((STEPS * BATCH)) --batch-size "$BATCH" --epochs 1 --lr 1e-3
      --warmup 10 --precision "$PRECISION" --device "$DEVICE" --workers "$WORKERS"
      --log-every-n-steps "$LOG_EVERY" --save-frequency 0 --logs "$out")
secs() {
    "$PYTHON" -c 'import subprocess, sys, time
t = time.time(); subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
print(time.time() - t)' "$@"
}
log "clip-train: $MODEL, $STEPS steps of $BATCH on $DEVICE ($PRECISION)"
ours=$(secs "$BIN/clip-train" "${ARGS[@]}" --name ours)
log "OpenCLIP: the same flags"
theirs=$(secs "$PYTHON" scripts/openclip-train.py "${ARGS[@]}" --name theirs)
echo "clip-train: $(grep "Train Epoch" "$out/ours/out.log" | tail -1)"
echo "OpenCLIP:   $(grep "Train Epoch" "$out/theirs/out.log" | tail -1)"
"$PYTHON" - "$ours" "$theirs" "$STEPS" <<'PY'
import sys
ours, theirs, steps = float(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3])
print(f"clip-train: {steps/ours:.2f} steps/s ({ours:.1f} s whole run, start-up included)")
print(f"OpenCLIP:   {steps/theirs:.2f} steps/s ({theirs:.1f} s whole run, start-up included)")
print(f"ratio: {theirs/ours:.2f}x")
PY
log "clip-train --profile-steps $PROFILE"
"$BIN/clip-train" "${ARGS[@]}" --name profiled --profile-steps "$PROFILE" >/dev/null 2>&1
"$BIN/clip-tool" profile "$out"/profiled/profile/rank0_*.pt.trace.json
rm -rf "$out"
