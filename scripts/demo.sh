#!/usr/bin/env bash
# The demo: installs what it lacks, builds clip-train, and trains a tiny CLIP on CPU on
# deterministic synthetic data. Halfway through it sends the preemption signal slurm sends
# (SIGUSR1): the run checkpoints and exits 75; `--resume latest` then finishes it.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cargo build --release -p clip-train --bins
LOGS=${LOGS:-logs}
NAME=${NAME:-demo-$(date +%Y%m%d-%H%M%S)}
ARGS=(--model clip_tiny_test --dataset-type synthetic --train-num-samples 512 --batch-size 32
      --epochs 12 --lr 2e-3 --warmup 20 --wd 0.1 --grad-clip-norm 5.0 --precision fp32 --device cpu
      --log-every-n-steps 8 --save-every-n-steps 40 --logs "$LOGS" --name "$NAME")

echo "== training $NAME (tiny CLIP, CPU); a preemption signal arrives after step 80"
target/release/clip-train "${ARGS[@]}" &
pid=$!
while [ ! -e "$LOGS/$NAME/checkpoints/step_80.safetensors" ]; do
    kill -0 $pid 2>/dev/null || break
    sleep 0.2
done
kill -USR1 $pid 2>/dev/null || true
status=0; wait $pid || status=$?
echo "== clip-train exited with status $status (75: checkpointed, requeue me)"

echo "== resuming with --resume latest"
target/release/clip-train "${ARGS[@]}" --resume latest

echo
echo "== loss over the run (first and last log lines):"
grep "Train Epoch" "$LOGS/$NAME/out.log" | sed -n '1p;$p' | sed 's/.*Contrastive_loss/Contrastive_loss/'
echo "== checkpoints (safetensors; weights under OpenCLIP keys):"
ls -1 "$LOGS/$NAME/checkpoints"
echo "== export for OpenCLIP: target/release/clip-tool convert $LOGS/$NAME/checkpoints/epoch_12.safetensors out.safetensors"
