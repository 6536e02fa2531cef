#!/usr/bin/env bash
# What overlapping the gradient all-reduce with the backward hides, on CPU: the tiny CLIP on 2
# ranks (CPU backend, one thread each), the buckets all-reduced during the backward
# (CLIP_TRAIN_DDP_OVERLAP=1, the default) or after it (=0), next to one rank with the same
# per-rank batch (no gradient communication). Step time: the log lines' "Batch (t)" window
# averages after the first window (start-up and the first step, which learns the bucket counts,
# left out). Exposed communication = step time on 2 ranks − step time on 1.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cargo build -p clip-train --bin clip-train
bin=${CARGO_TARGET_DIR:-target}/debug/clip-train
out=$(mktemp -d)
STEPS=${STEPS:-40}
BATCH=${BATCH:-16}
MODEL=${MODEL:-clip_tiny}
CAP_MB=${CAP_MB:-1}
args() {  # name, world
    echo --model "$MODEL" --dataset-type synthetic --train-num-samples $((STEPS * BATCH * $2)) \
        --batch-size "$BATCH" --epochs 1 --lr 1e-3 --warmup 10 --precision fp32 --device cpu \
        --workers 1 --log-every-n-steps 10 --save-frequency 0 --local-loss --gather-with-grad \
        --logs "$out" --name "$1"
}
run() {  # name, world, overlap
    local port=$((29500 + RANDOM % 1000)) pids=()
    for ((r = 0; r < $2; r++)); do
        RANK=$r LOCAL_RANK=$r WORLD_SIZE=$2 MASTER_ADDR=127.0.0.1 MASTER_PORT=$port \
            OMP_NUM_THREADS=1 CLIP_TRAIN_DDP_OVERLAP=$3 CLIP_TRAIN_DDP_BUCKET_CAP_MB=$CAP_MB \
            "$bin" $(args "$1" "$2") >/dev/null 2>&1 &
        pids+=($!)
    done
    for p in "${pids[@]}"; do wait "$p"; done
}
run w1 1 1
run overlap 2 1
run after 2 0
grep -h "DDP gradient buckets" "$out/overlap/out.log" | tail -1
python3 - "$out" <<'PY'
import re, sys
def step(name):
    ts = [float(m) for m in re.findall(r"Batch \(t\): ([0-9.]+)", open(f"{sys.argv[1]}/{name}/out.log").read())]
    return sum(ts[1:]) / len(ts[1:])
w1, ov, af = step("w1"), step("overlap"), step("after")
print(f"1 rank (no gradient all-reduce):      {w1*1e3:7.1f} ms/step")
print(f"2 ranks, all-reduce after backward:   {af*1e3:7.1f} ms/step (exposed comm {1e3*(af-w1):6.1f} ms)")
print(f"2 ranks, all-reduce during backward:  {ov*1e3:7.1f} ms/step (exposed comm {1e3*(ov-w1):6.1f} ms)")
print(f"hidden by the overlap: {1e3*(af-ov):.1f} ms/step")
PY
rm -rf "$out"
