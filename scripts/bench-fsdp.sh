#!/usr/bin/env bash
# `--fsdp` against DDP on CPU (CPU backend, one thread per rank), ViT-B-32 fp32 by default:
# peak resident memory per rank (GNU time's maximum RSS; DDP's rank 0 also holds a host copy of
# the whole state while it writes the final checkpoint, so ranks > 0 are what training takes) and
# the step time ("Batch (t)" of the
# log lines after the first step). DDP's state per rank does not depend on the world size, so
# DDP runs on DDP_WORLD ranks (default 2) and FSDP on FSDP_WORLD (default 4) to keep the
# machine's memory in bounds; step times are compared at the same world size (STEP_WORLD,
# default 2: both modes). Step times mean something only on a quiet machine: the script prints
# the load average first.
#
#   scripts/bench-fsdp.sh                 # memory and step time
#   WHAT=memory scripts/bench-fsdp.sh     # memory only (any load)
#   WHAT=time scripts/bench-fsdp.sh       # step time only
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build -p clip-train --bin clip-train
bin=${CARGO_TARGET_DIR:-target}/debug/clip-train
out=$(mktemp -d)
MODEL=${MODEL:-ViT-B-32}
STEPS=${STEPS:-4}
BATCH=${BATCH:-2}
WHAT=${WHAT:-all}
echo "load average: $(cut -d' ' -f1-3 /proc/loadavg); $(nproc) cores"
run() {  # name, world, extra flags...
    local name=$1 world=$2 port=$((29500 + RANDOM % 1000)) pids=()
    shift 2
    for ((r = 0; r < world; r++)); do
        RANK=$r LOCAL_RANK=$r WORLD_SIZE=$world MASTER_ADDR=127.0.0.1 MASTER_PORT=$port \
            OMP_NUM_THREADS=1 /usr/bin/time -f "%M" -o "$out/$name.rss$r" \
            "$bin" --model "$MODEL" --dataset-type synthetic \
            --train-num-samples $((STEPS * BATCH * world)) --batch-size "$BATCH" --epochs 1 \
            --lr 1e-4 --warmup 1 --precision fp32 --device cpu --workers 1 --log-every-n-steps 1 \
            --save-frequency 0 --local-loss --gather-with-grad --logs "$out" --name "$name" "$@" \
            >/dev/null 2>"$out/$name.err$r" &
        pids+=($!)
    done
    for p in "${pids[@]}"; do wait "$p"; done
}
report() {  # name, world
    python3 - "$out" "$1" "$2" <<'PY'
import re, sys
out, name, world = sys.argv[1], sys.argv[2], int(sys.argv[3])
rss = [int(open(f"{out}/{name}.rss{r}").read().split()[-1]) / 1e6 for r in range(world)]
log = open(f"{out}/{name}/out.log").read()
ts = [float(t) for t in re.findall(r"Batch \(t\): ([0-9.]+)", log)][1:]
state = [l.split("| INFO | ")[1] for l in log.splitlines() if "Training state per rank" in l]
print(f"{name}: {world} ranks, peak RSS: rank 0 {rss[0]:.2f} GB, ranks > 0 at most {max(rss[1:] or rss):.2f} GB"
      + (f", {sum(ts) / len(ts):.2f} s/step" if ts else ""))
for s in state:
    print("    " + s)
PY
}
if [ "$WHAT" != time ]; then
    run ddp-mem "${DDP_WORLD:-2}"
    report ddp-mem "${DDP_WORLD:-2}"
    # Sharded checkpoints: rank 0 does not gather the whole state for a full one at the end.
    run fsdp-mem "${FSDP_WORLD:-4}" --fsdp --fsdp-checkpoint sharded
    report fsdp-mem "${FSDP_WORLD:-4}"
fi
if [ "$WHAT" != memory ]; then
    run ddp-time "${STEP_WORLD:-2}"
    report ddp-time "${STEP_WORLD:-2}"
    run fsdp-time "${STEP_WORLD:-2}" --fsdp
    report fsdp-time "${STEP_WORLD:-2}"
fi
rm -rf "$out"
