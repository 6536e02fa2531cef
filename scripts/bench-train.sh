#!/usr/bin/env bash
# bench-train.sh - training steps/s: clip-train next to OpenCLIP's open_clip_train.main, the same
# flags on the same webdataset shards (JPEGs both decode and augment: data that costs both the
# same, not --dataset-type synthetic, whose generator would be measured instead of the step),
# same machine, same run. Then a --profile-steps run of clip-train, summarised by
# `clip-tool profile`: ops, host syncs and milliseconds per phase of steps that do not log.
#
# Both sides run the same STEPS steps on samples of the same shards, none twice: OpenCLIP rounds
# its steps up to a multiple of --workers and repeats its shards when they run short
# (`with_epoch`), clip-train ends the epoch when they run out — so STEPS is rounded up to a
# multiple of WORKERS here, and the shards are made with enough samples per shard for every
# worker's share (PER_SHARD is raised when STEPS × BATCH needs it). Each side's steps are timed
# the same way (CLIP_TRAIN_TIME_STEPS: the wall clock between two device syncs, after WARM
# steps, the last step's log after the window; crates/clip-train/src/timing.rs,
# scripts/openclip-train.py), and the steps each ran are printed; unequal counts fail.
#
# env: MODEL [clip_tiny] STEPS [60] BATCH [32] WORKERS [2] DEVICE [cpu] PRECISION [fp32]
#      WARM [10] PROFILE [5:7] SHARDS [4] PER_SHARD [500] BENCH_DIR [/tmp/clip-bench-train]
#      PYTHON [.venv/bin/python] BIN_DIR [built here: target/release]
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
MODEL="${MODEL:-clip_tiny}"
STEPS="${STEPS:-60}"
BATCH="${BATCH:-32}"
WORKERS="${WORKERS:-2}"
DEVICE="${DEVICE:-cpu}"
PRECISION="${PRECISION:-fp32}"
WARM="${WARM:-10}"
PROFILE="${PROFILE:-5:7}"
SHARDS="${SHARDS:-4}"
PER_SHARD="${PER_SHARD:-500}"
BENCH_DIR="${BENCH_DIR:-/tmp/clip-bench-train}"
PYTHON="${PYTHON:-$ROOT/.venv/bin/python}"
log() { echo "[bench-train] $*" >&2; }

STEPS=$(( (STEPS + WORKERS - 1) / WORKERS * WORKERS ))
[ "$STEPS" -ge $((WARM + 2)) ] || { log "STEPS ($STEPS) must exceed WARM + 1 ($((WARM + 1)))"; exit 2; }
# Every shard holds enough for its worker's share of STEPS × BATCH, plus a batch.
need=$(( (STEPS * BATCH + SHARDS - 1) / SHARDS + BATCH ))
[ "$PER_SHARD" -ge "$need" ] || PER_SHARD=$need
if [ "$(cat "$BENCH_DIR/made" 2>/dev/null)" != "$SHARDS x $PER_SHARD" ]; then
  "$PYTHON" -c 'import skimage' 2>/dev/null || "$PYTHON" -m pip install -q scikit-image
  rm -rf "$BENCH_DIR"
  "$PYTHON" scripts/make-test-shards.py "$BENCH_DIR" --shards "$SHARDS" --samples-per-shard "$PER_SHARD" >&2
  echo "$SHARDS x $PER_SHARD" >"$BENCH_DIR/made"
fi
LAST=$(printf '%05d' $((SHARDS - 1)))
URLS="$BENCH_DIR/{00000..$LAST}.tar"

if [ -n "${BIN_DIR:-}" ]; then
  BIN=$BIN_DIR
else
  log "building clip-train and clip-tool (release)"
  cargo build --release -q -p clip-train --bin clip-train --bin clip-tool
  BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release"
fi
out=$(mktemp -d)
ARGS=(--model "$MODEL" --train-data "$URLS" --dataset-type webdataset
      --train-num-samples $((STEPS * BATCH)) --batch-size "$BATCH" --epochs 1 --lr 1e-3
      --warmup 10 --precision "$PRECISION" --device "$DEVICE" --workers "$WORKERS"
      --log-every-n-steps 1000 --save-frequency 0 --logs "$out")
export CLIP_TRAIN_TIME_STEPS="$WARM:$((STEPS - WARM - 1))"
secs() {
    "$PYTHON" -c 'import subprocess, sys, time
t = time.time(); subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
print(time.time() - t)' "$@"
}
log "clip-train: $MODEL, $STEPS steps of $BATCH on $DEVICE ($PRECISION), $SHARDS shards of $PER_SHARD"
ours=$(secs "$BIN/clip-train" "${ARGS[@]}" --name ours)
log "OpenCLIP: the same flags"
theirs=$(secs "$PYTHON" scripts/openclip-train.py "${ARGS[@]}" --name theirs)
echo "clip-train: $(grep "Train Epoch" "$out/ours/out.log" | tail -1)"
echo "OpenCLIP:   $(grep "Train Epoch" "$out/theirs/out.log" | tail -1)"
"$PYTHON" - "$out" "$ours" "$theirs" "$STEPS" "$BATCH" <<'PY'
import json, re, sys
out, whole, steps, batch = sys.argv[1], dict(ours=float(sys.argv[2]), theirs=float(sys.argv[3])), int(sys.argv[4]), int(sys.argv[5])
rate, ran = {}, {}
for side, name in (("ours", "clip-train"), ("theirs", "OpenCLIP")):
    text = open(f"{out}/{side}/out.log").read()
    ran[side] = int(re.findall(r"Train Epoch: \d+ \[\s*(\d+)/", text)[-1]) // batch
    t = json.loads(re.findall(r"Timed steps: (\{.*\})", text)[0])
    rate[side] = t["steps_per_s"]
    print(f"{name + ':':11} ran {ran[side]} steps; {t['steps']} timed after {t['after']}: "
          f"{t['steps_per_s']:.2f} steps/s, {t['data_seconds']:.2f} s of it waiting for data "
          f"({whole[side]:.1f} s whole run, start-up included)")
if ran["ours"] != ran["theirs"] or ran["ours"] != steps:
    sys.exit(f"unequal steps: clip-train ran {ran['ours']}, OpenCLIP {ran['theirs']}, planned {steps}")
print(f"ratio: {rate['ours'] / rate['theirs']:.2f}x (timed steps/s, clip-train over OpenCLIP)")
PY
log "clip-train --profile-steps $PROFILE"
CLIP_TRAIN_TIME_STEPS= "$BIN/clip-train" "${ARGS[@]}" --name profiled --profile-steps "$PROFILE" >/dev/null 2>&1
"$BIN/clip-tool" profile "$out"/profiled/profile/rank0_*.pt.trace.json
rm -rf "$out"
