#!/usr/bin/env bash
# bench-data.sh - input pipeline throughput: clip-train's loader next to OpenCLIP's own
# (webdataset + PIL + its timm train transform), same LAION-like shards, same --aug-cfg, same
# worker count, same batch size, in the same run. Prints both images/s and the ratio.
#
# env: WORKERS [2] BATCH [64] IMAGE_SIZE [320] BATCHES [30] SHARDS [16] PER_SHARD [500]
#      BENCH_DIR [/tmp/clip-bench-shards] PYTHON [.venv/bin/python] CLIP_TOOL [built here]
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
WORKERS="${WORKERS:-2}"
BATCH="${BATCH:-64}"
IMAGE_SIZE="${IMAGE_SIZE:-320}"
BATCHES="${BATCHES:-30}"
SHARDS="${SHARDS:-16}"
PER_SHARD="${PER_SHARD:-500}"
BENCH_DIR="${BENCH_DIR:-/tmp/clip-bench-shards}"
PYTHON="${PYTHON:-$ROOT/.venv/bin/python}"
AUG=(scale='(0.5,1.0)' re_prob=0.4 use_timm=True)

log() { echo "[bench-data] $*" >&2; }

# 1. LAION-like shards (JPEG, longest side 384, ~40 KB, natural photographs)
if [ ! -s "$BENCH_DIR/sizes.json" ] || [ "$(ls "$BENCH_DIR"/*.tar 2>/dev/null | wc -l)" -ne "$SHARDS" ]; then
  "$PYTHON" -c 'import skimage' 2>/dev/null || "$PYTHON" -m pip install -q scikit-image
  rm -rf "$BENCH_DIR"
  "$PYTHON" scripts/make-test-shards.py "$BENCH_DIR" --shards "$SHARDS" --samples-per-shard "$PER_SHARD" >&2
fi
LAST=$(printf '%05d' $((SHARDS - 1)))
URLS="$BENCH_DIR/{00000..$LAST}.tar"

# 2. clip-tool (release)
if [ -z "${CLIP_TOOL:-}" ]; then
  log "building clip-tool (release)"
  cargo build --release -q -p clip-train --bin clip-tool
  CLIP_TOOL="${CARGO_TARGET_DIR:-$ROOT/target}/release/clip-tool"
fi
export LD_LIBRARY_PATH="$("$PYTHON" -c 'import torch, os; print(os.path.join(os.path.dirname(torch.__file__), "lib"))'):${LD_LIBRARY_PATH:-}"

# 3. clip-train's pipeline
log "clip-train: $WORKERS workers, batch $BATCH, $IMAGE_SIZE px, $BATCHES batches"
"$CLIP_TOOL" bench-data --train-data "$URLS" --workers "$WORKERS" --batch-size "$BATCH" \
  --image-size "$IMAGE_SIZE" --batches "$BATCHES" --aug-cfg "${AUG[@]}" >"$BENCH_DIR/ours.out" 2>"$BENCH_DIR/ours.err"
cat "$BENCH_DIR/ours.err" >&2
OURS=$(tail -n 1 "$BENCH_DIR/ours.out" | awk '{print $1}')
OURS_CPU=$(sed -n 's/.*(\([0-9.]*\) images per CPU-second).*/\1/p' "$BENCH_DIR/ours.err" | tail -n 1)
log "clip-train: $OURS images/s, $OURS_CPU images per CPU-second"

# 4. OpenCLIP's pipeline (get_wds_dataset with its own transform and tokenizer)
log "OpenCLIP: $WORKERS workers, batch $BATCH, $IMAGE_SIZE px, $BATCHES batches"
THEIRS_BOTH=$("$PYTHON" - "$URLS" "$WORKERS" "$BATCH" "$IMAGE_SIZE" "$BATCHES" <<'EOF'
import sys, time, argparse, logging
import torch
from open_clip import image_transform, get_tokenizer
from open_clip_train.data import get_wds_dataset
urls, workers, batch, size, batches = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
torch.set_num_threads(1)
aug = dict(scale=(0.5, 1.0), re_prob=0.4, use_timm=True)
pre = image_transform(size, is_train=True, aug_cfg=aug)
tok = get_tokenizer("ViT-B-32")
args = argparse.Namespace(train_data=urls, val_data=None, train_data_upsampling_factors=None,
    dataset_resampled=False, train_num_samples=(batches + 1) * batch, batch_size=batch,
    world_size=1, rank=0, workers=workers, seed=0, distributed=False)
dl = get_wds_dataset(args, pre, is_train=True, epoch=0, tokenizer=tok).dataloader
import os
def tree_cpu(pid=os.getpid()):
    """user+system seconds of a process and all its descendants (the dataloader workers)."""
    total = 0.0
    try:
        f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
        total += (int(f[11]) + int(f[12])) / 100.0
        for tid in os.listdir(f"/proc/{pid}/task"):
            for c in open(f"/proc/{pid}/task/{tid}/children").read().split():
                total += tree_cpu(int(c))
    except OSError:
        pass
    return total
it = iter(dl)
img, txt = next(it)  # warm-up: worker start, shuffle buffers
assert img.shape == (batch, 3, size, size), img.shape
t, n, c0 = time.time(), 0, tree_cpu()
for _ in range(batches):
    img, txt = next(it)
    n += img.shape[0]
dt, cpu = time.time() - t, tree_cpu() - c0
print(f"OpenCLIP: {n} images in {dt:.2f} s using {cpu:.2f} CPU-s ({n / cpu:.1f} images per CPU-second)", file=sys.stderr)
print(f"{n / dt:.1f} {n / cpu:.1f}")
EOF
)
THEIRS=${THEIRS_BOTH% *}
THEIRS_CPU=${THEIRS_BOTH#* }
log "OpenCLIP: $THEIRS images/s, $THEIRS_CPU images per CPU-second"

RATIO=$(awk -v a="$OURS" -v b="$THEIRS" 'BEGIN { printf "%.2f", a / b }')
RATIO_CPU=$(awk -v a="$OURS_CPU" -v b="$THEIRS_CPU" 'BEGIN { printf "%.2f", a / b }')
echo "cores: $(nproc), load before: $(cut -d' ' -f1-3 /proc/loadavg), workers: $WORKERS, batch: $BATCH, image size: $IMAGE_SIZE, aug-cfg: ${AUG[*]}"
echo "clip-train: $OURS images/s ($OURS_CPU images per CPU-second)"
echo "OpenCLIP:   $THEIRS images/s ($THEIRS_CPU images per CPU-second)"
echo "ratio (wall): ${RATIO}x, ratio (per CPU-second, i.e. per core): ${RATIO_CPU}x"
