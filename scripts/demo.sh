#!/usr/bin/env bash
# The demo: installs what it lacks, builds clip-train, generates a small image+caption dataset
# (coloured shapes, captions naming colour and shape), packs it into webdataset shards with
# `clip-tool make-shards`, and trains a tiny CLIP on CPU on them. Halfway through it sends the
# preemption signal slurm sends (SIGUSR1): the run checkpoints (weights, optimizer and the data
# loader's position) and exits 75; `--resume latest` then finishes it on exactly the samples the
# uninterrupted run would have seen.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cargo build --release -p clip-train --bins
LOGS=${LOGS:-logs}
NAME=${NAME:-demo-$(date +%Y%m%d-%H%M%S)}
DATA=${DATA:-$LOGS/demo-data}
PY=${CLIP_PYTHON:-.venv/bin/python}

if [ ! -e "$DATA/shards/sizes.json" ]; then
    echo "== generating 512 coloured-shape images with captions in $DATA/images"
    mkdir -p "$DATA/images"
    "$PY" - "$DATA/images" <<'EOF'
import random, sys
from PIL import Image, ImageDraw
out = sys.argv[1]
colours = {"red": (220, 40, 40), "green": (40, 190, 60), "blue": (40, 70, 220),
           "yellow": (235, 215, 40), "purple": (150, 50, 190), "orange": (245, 140, 30)}
shapes = ["square", "circle", "triangle", "cross"]
rng = random.Random(0)
for i in range(512):
    cname, shape = rng.choice(sorted(colours)), rng.choice(shapes)
    bg = tuple(rng.randint(90, 170) for _ in range(3))
    img = Image.new("RGB", (96, 96), bg)
    d = ImageDraw.Draw(img)
    r = rng.randint(18, 34)
    cx, cy = rng.randint(r + 4, 92 - r), rng.randint(r + 4, 92 - r)
    c = colours[cname]
    if shape == "square":
        d.rectangle([cx - r, cy - r, cx + r, cy + r], fill=c)
    elif shape == "circle":
        d.ellipse([cx - r, cy - r, cx + r, cy + r], fill=c)
    elif shape == "triangle":
        d.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=c)
    else:
        w = r // 3
        d.rectangle([cx - r, cy - w, cx + r, cy + w], fill=c)
        d.rectangle([cx - w, cy - r, cx + w, cy + r], fill=c)
    img.save(f"{out}/{i:05}.png")
    with open(f"{out}/{i:05}.txt", "w") as f:
        f.write(f"a photo of a {cname} {shape}")
EOF
    echo "== packing them into webdataset shards (8 x 64 samples) in $DATA/shards"
    target/release/clip-tool make-shards --input "$DATA/images" --output "$DATA/shards" \
        --samples-per-shard 64 --max-size 96 > /dev/null
fi

# The tiny test model with the CLIP tokenizer's vocabulary (real captions use ids up to 49407).
MODEL="$DATA/clip_tiny_demo.json"
"$PY" -c '
import json, sys
c = json.load(open("configs/clip_tiny_test.json"))
c["text_cfg"]["vocab_size"] = 49408
json.dump(c, open(sys.argv[1], "w"), indent=2)' "$MODEL"

# 512 samples (sizes.json), batch 32, 2 workers: 16 steps per epoch, 192 in all.
ARGS=(--model "$MODEL" --train-data "$DATA/shards/{00000..00007}.tar" --dataset-type webdataset
      --workers 2 --batch-size 32 --epochs 12 --lr 2e-3 --warmup 20 --wd 0.1 --grad-clip-norm 5.0
      --aug-cfg "scale=(0.8, 1.0)" --precision fp32 --device cpu
      --log-every-n-steps 8 --save-every-n-steps 40 --logs "$LOGS" --name "$NAME")

echo "== training $NAME (tiny CLIP, CPU, webdataset shards); a preemption signal arrives after step 80"
target/release/clip-train "${ARGS[@]}" &
pid=$!
while [ ! -e "$LOGS/$NAME/checkpoints/step_80.safetensors" ]; do
    kill -0 $pid 2>/dev/null || break
    sleep 0.2
done
kill -USR1 $pid 2>/dev/null || true
status=0; wait $pid || status=$?
echo "== clip-train exited with status $status (75: checkpointed, requeue me)"

echo "== resuming with --resume latest (weights, optimizer and data position)"
target/release/clip-train "${ARGS[@]}" --resume latest

echo
echo "== loss over the run (first and last log lines):"
grep "Train Epoch" "$LOGS/$NAME/out.log" | sed -n '1p;$p' | sed 's/.*Contrastive_loss/Contrastive_loss/'
echo "== checkpoints (safetensors; weights under OpenCLIP keys):"
ls -1 "$LOGS/$NAME/checkpoints"
echo "== export for OpenCLIP: target/release/clip-tool convert $LOGS/$NAME/checkpoints/epoch_12.safetensors out.safetensors"
