#!/usr/bin/env bash
# One run that checks clip-train on a GPU host (one H100/H200, ../shared/gpu/README.md: torch
# 2.11.0+cu130 in a venv, no Rust, no network; about 8 minutes), from the one folder
# scripts/pack-gpu-check.sh assembles, writing REPORT_DIR/gpu-check.md. Each part is a
# function that runs when what it needs exists (a CUDA device, a binary, a flag, OpenCLIP)
# and otherwise reports `skipped: <why>`; nothing is estimated or made up. Without a GPU it
# runs every part it can on the CPU with tiny models (`clip_tiny`, `clip_tiny_test`: the
# figures then say nothing about a card) — CI does so (crates/clip-train/tests/it/gpu_check.rs) so the script
# cannot rot. Exit status 1 when a part that ran failed.
#
#     scripts/gpu-check.sh FOLDER REPORT_DIR
#
# PY: the Python with torch (default /opt/torch/.venv/bin/python3, else python3).
set -uo pipefail
folder=$(cd "${1:?usage: gpu-check.sh FOLDER REPORT_DIR}" && pwd)
mkdir -p "${2:?usage: gpu-check.sh FOLDER REPORT_DIR}"
outdir=$(cd "$2" && pwd)
report=$outdir/gpu-check.md
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
PY=${PY:-/opt/torch/.venv/bin/python3}
[ -x "$PY" ] || PY=$(command -v python3)
BIN=$folder/bin
failed=()
summary=()

# --- report helpers ---------------------------------------------------------------------------
section() { current=$1; printf '\n## %s\n\n' "$1" >>"$report"; }
line() { printf '%s\n' "$*" >>"$report"; }
ran() { line "status: ran"; summary+=("| $current | ran |"); }
skip() { line "status: skipped: $*"; summary+=("| $current | skipped: $* |"); }
fail() {
    line "status: FAILED: $*"
    summary+=("| $current | FAILED: $* |")
    failed+=("$current")
}
# The last lines of a failed command's output, into the report.
tail_of() { line '```'; tail -n "${2:-15}" "$1" >>"$report"; line '```'; }
have_bin() { [ -x "$BIN/$1" ]; }

# --- environment --------------------------------------------------------------------------------
cuda=0
check_environment() {
    section "Environment"
    line "- date: $(date -u +%Y-%m-%dT%H:%M:%SZ), host: $(hostname), cores: $(nproc)"
    if command -v nvidia-smi >/dev/null && nvidia-smi -L >/dev/null 2>&1; then
        line "- GPU: $(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | head -1)"
    else
        line "- GPU: none (no working nvidia-smi)"
    fi
    local torch_info
    if ! torch_info=$("$PY" -c 'import torch; print(torch.__version__, torch.version.cuda, int(torch.cuda.is_available()))' 2>&1); then
        line "- Python $PY: no torch"
        fail "no torch in $PY"
        return
    fi
    read -r tv tcuda cuda <<<"$torch_info"
    line "- Python: $PY, torch $tv (CUDA $tcuda), CUDA device usable: $([ "$cuda" = 1 ] && echo yes || echo no)"
    # The binaries link the host's libtorch (and NCCL from pip's nvidia package), as the GPU
    # host's README does.
    local tl nv
    tl=$("$PY" -c 'import torch,os;print(os.path.join(os.path.dirname(torch.__file__),"lib"))')
    nv=$("$PY" -c 'import nvidia,os;print(nvidia.__path__[0])' 2>/dev/null || true)
    if [ -n "$nv" ] && [ -e "$nv/nccl/lib/libnccl.so.2" ]; then
        mkdir -p "$work/nccl" && ln -sf "$nv/nccl/lib/libnccl.so.2" "$work/nccl/libnccl.so"
        export LD_LIBRARY_PATH=$work/nccl:$nv/nccl/lib:${LD_LIBRARY_PATH:-}
        line "- NCCL: $nv/nccl/lib/libnccl.so.2"
    else
        line "- NCCL: not found (pip's nvidia-nccl package is absent)"
    fi
    for b in clip-train clip-tool dist-selftest; do
        if ! have_bin "$b"; then
            line "- $b: absent from $BIN"
        elif ldd "$BIN/$b" | grep -q 'libtorch.*not found'; then
            export LD_LIBRARY_PATH=$tl:${LD_LIBRARY_PATH:-}
        fi
    done
    for b in clip-train clip-tool dist-selftest; do
        have_bin "$b" || continue
        local libs
        libs=$(ldd "$BIN/$b" | grep -oE 'lib(torch_cuda|torch_cpu|c10_cuda|cudart)[^ ]* => [^ ]+' | tr '\n' ' ')
        line "- $b: ${libs:-no libtorch found}"
        if ldd "$BIN/$b" | grep -q 'not found'; then
            fail "$b: $(ldd "$BIN/$b" | grep 'not found' | head -1 | xargs)"
            return
        fi
    done
    # OpenCLIP for the side-by-side parts: installed, or from the folder's wheels.
    if ! "$PY" -c 'import open_clip_train' 2>/dev/null && ls "$folder"/wheels/*.whl >/dev/null 2>&1; then
        "$PY" -m pip install -q --no-index --no-deps --target "$work/site" "$folder"/wheels/*.whl \
            >"$work/pip.log" 2>&1 && export PYTHONPATH=$work/site:${PYTHONPATH:-}
    fi
    if "$PY" -c 'import open_clip_train' 2>/dev/null; then
        openclip=1
        line "- OpenCLIP: $("$PY" -c 'import open_clip; print(open_clip.__version__, open_clip.__file__)')"
    else
        openclip=0
        line "- OpenCLIP: not importable and no wheels in $folder/wheels"
    fi
    ran
}
openclip=0

# --- NCCL collectives at world size 1 ---------------------------------------------------------
check_nccl() {
    section "NCCL collectives at world size 1"
    [ "$cuda" = 1 ] || { skip "no CUDA device"; return; }
    have_bin dist-selftest || { skip "no dist-selftest binary"; return; }
    local mode=${NCCL_SELFTEST_MODE:-nccl}
    RANK=0 WORLD_SIZE=1 MASTER_ADDR=127.0.0.1 MASTER_PORT=29517 \
        timeout 120 "$BIN/dist-selftest" "$mode" "$work/nccl-out" >"$work/nccl.log" 2>&1
    local rc=$?
    if grep -q "unknown mode" "$work/nccl.log"; then
        skip "this dist-selftest has no \`$mode\` mode"
    elif [ $rc = 0 ]; then
        tail_of "$work/nccl.log" 10
        ran
    else
        tail_of "$work/nccl.log"
        fail "dist-selftest $mode exited $rc"
    fi
}

# --- overlapped gradient all-reduce vs reduce-after-backward ----------------------------------
# The buckets reduced during the backward train bitwise like the same buckets reduced after it
# (CLIP_TRAIN_DDP_OVERLAP=0). On CUDA: NCCL at world size 1 (CLIP_DIST_BACKEND_AT_WORLD_1=1),
# the overlapped all-reduces on the communication stream, ordered by events; on CPU: the CPU
# backend's communication thread at world size 2. Many small buckets, bf16 on the wire (the casts
# run on the comm stream too), --accum-freq 2 (only the last backward launches).
check_overlap() {
    section "Overlapped gradient all-reduce, bitwise like reduce-after-backward"
    have_bin clip-train || { skip "no clip-train binary"; return; }
    local world=2 dev=cpu model=clip_tiny_test precision=fp32 what="the CPU backend's communication thread"
    if [ "$cuda" = 1 ]; then
        world=1 dev=cuda model=clip_tiny precision=amp_bf16
        what="NCCL at world size 1 (CLIP_DIST_BACKEND_AT_WORLD_1=1), on the communication stream"
    fi
    line "- $model on $dev, world size $world: $what; $precision, 4 steps of --accum-freq 2, --grad-reduce-dtype bf16, CLIP_TRAIN_DDP_BUCKET_CAP_MB=0.02"
    overlap_port=$((29600 + RANDOM % 200))
    overlap_run $world $dev $model $precision 1 && overlap_run $world $dev $model $precision 0 || return
    local same
    same=$(overlap_compare 1 0)
    local rc=$?
    line "- overlap on vs off: $same"
    if ! grep -q "buckets: \([0-9]*\), all-reduced during the backward: \1\$" "$work/runs/overlap-1/out.log"; then
        fail "not every bucket was all-reduced during the backward"
    elif [ $rc = 0 ]; then
        ran
    elif [ "$cuda" = 1 ]; then
        # Whether the card repeats its bits at all: a second run without overlap.
        overlap_run $world $dev $model $precision 0b || return
        if same=$(overlap_compare 0 0b); then
            line "- two runs with overlap off: $same"
            fail "overlapped training differs from reduce-after-backward"
        else
            line "- two runs with overlap off: $same"
            skip "this card does not give the same bits twice without overlap (cuDNN's autotuner?), so bitwise says nothing"
        fi
    else
        fail "overlapped training differs from reduce-after-backward"
    fi
}

# One training run of check_overlap on `world` ranks (CLIP_TRAIN_DDP_OVERLAP = the mode's first
# character), named overlap-MODE; its bucket report into the report.
overlap_run() {
    local world=$1 dev=$2 model=$3 precision=$4 mode=$5 rank pids=()
    local args=(--dataset-type synthetic --model $model --device $dev --precision $precision
                --batch-size 4 --accum-freq 2 --train-num-samples $((8 * 4 * world)) --epochs 1
                --lr 1e-3 --warmup 1 --workers 1 --seed 3 --save-frequency 1
                --log-every-n-steps 1 --local-loss --gather-with-grad --grad-reduce-dtype bf16
                --logs "$work/runs" --name "overlap-$mode")
    for ((rank = 0; rank < world; rank++)); do
        (cd "$folder" && RANK=$rank LOCAL_RANK=$rank WORLD_SIZE=$world MASTER_ADDR=127.0.0.1 \
            MASTER_PORT=$overlap_port OMP_NUM_THREADS=1 CLIP_DIST_BACKEND_AT_WORLD_1=1 \
            CLIP_TRAIN_DDP_OVERLAP=${mode:0:1} CLIP_TRAIN_DDP_BUCKET_CAP_MB=0.02 \
            timeout 300 "$BIN/clip-train" "${args[@]}") >"$work/overlap-$mode.$rank.log" 2>&1 &
        pids+=($!)
    done
    overlap_port=$((overlap_port + 1))
    for ((rank = 0; rank < world; rank++)); do
        if ! wait "${pids[$rank]}"; then
            tail_of "$work/overlap-$mode.$rank.log"
            fail "CLIP_TRAIN_DDP_OVERLAP=${mode:0:1}: rank $rank failed"
            return 1
        fi
    done
    line "- CLIP_TRAIN_DDP_OVERLAP=${mode:0:1}: $(grep -m1 -o 'DDP gradient buckets: .*' "$work/runs/overlap-$mode/out.log" || echo 'no bucket report in out.log')"
}

# Every tensor of two overlap runs' final checkpoints (weights and optimizer state), bit for bit.
overlap_compare() {
    "$PY" - "$work/runs" "$1" "$2" 2>&1 <<'PYEOF'
import sys
from safetensors.torch import load_file
a, b = (load_file(f"{sys.argv[1]}/overlap-{m}/checkpoints/epoch_1.safetensors") for m in sys.argv[2:4])
assert a.keys() == b.keys(), "different tensors"
diff = [k for k in a if not a[k].equal(b[k])]
print(f"{len(a) - len(diff)} of {len(a)} tensors bitwise equal" + (f"; differ: {diff[:3]}" if diff else ""))
sys.exit(1 if diff else 0)
PYEOF
}

# --- features vs OpenCLIP on the same loaded weights ------------------------------------------
check_parity() {
    section "Features vs OpenCLIP (same weights, TF32 off)"
    [ "$openclip" = 1 ] || { skip "no OpenCLIP"; return; }
    have_bin clip-tool || { skip "no clip-tool binary"; return; }
    local model=clip_tiny_test device=cpu
    [ "$cuda" = 1 ] && model=ViT-B-32 device=cuda
    line "- model $model (OpenCLIP's init, seed 0), 4 random inputs, device $device; TF32 off: torch.backends flags for OpenCLIP, CLIP_TRAIN_TF32=0 for ours (a build without that switch ignores it)"
    mkdir -p "$work/parity"
    if ! (cd "$folder" && "$PY" scripts/gpu-check-parity.py prepare $model "$work/parity") >"$work/parity.log" 2>&1 ||
        ! CLIP_TRAIN_TF32=0 "$BIN/clip-tool" embed --model $model --pretrained "$work/parity/weights.safetensors" \
            --inputs "$work/parity/inputs.safetensors" --device $device \
            --output "$work/parity/ours.safetensors" >>"$work/parity.log" 2>&1; then
        tail_of "$work/parity.log"
        fail "preparing or embedding failed"
        return
    fi
    local rel
    if ! rel=$(cd "$folder" && "$PY" scripts/gpu-check-parity.py compare $model "$work/parity" $device \
        "$work/parity/ours.safetensors" 2>>"$work/parity.log" | tail -1); then
        tail_of "$work/parity.log"
        fail "comparison failed"
        return
    fi
    line "- fp32 max |ours − OpenCLIP| / max |OpenCLIP|: $rel (bound 1e-4)"
    if "$BIN/clip-tool" embed --help 2>&1 | grep -q -- --precision; then
        line "- bf16 autocast: clip-tool embed has --precision, not compared by this version of the script"
    else
        line "- bf16 autocast cosine: skipped: clip-tool embed has no --precision"
    fi
    if "$PY" -c 'import json,sys; r=json.loads(sys.argv[1]); sys.exit(max(r.values()) > 1e-4)' "$rel"; then
        ran
    else
        fail "fp32 features differ by more than 1e-4"
    fi
}

# --- step time and peak memory with and without gradient checkpointing ------------------------
check_checkpointing() {
    section "Gradient checkpointing: step time and peak memory, both sides"
    have_bin clip-tool || { skip "no clip-tool binary"; return; }
    local model=clip_tiny_test batch=8 device=cpu precision=fp32
    [ "$cuda" = 1 ] && model=convnext_large_d_320 batch=32 device=cuda precision=amp_bf16
    line "- $model, batch $batch, $precision on $device, 3 timed steps after one warm-up"
    line "- gradient values with and without checkpointing: not compared (no tool writes gradients)"
    line ""
    line "| impl | checkpointing | s/step | samples/s | peak memory (host RSS MiB) |"
    line "|---|---|---|---|---|"
    local ok=1 ck impl
    for ck in "" --grad-checkpointing; do
        for impl in ours openclip; do
            if [ $impl = openclip ] && [ "$openclip" = 0 ]; then continue; fi
            local cmd=("$BIN/clip-tool" bench-model)
            [ $impl = openclip ] && cmd=("$PY" "$folder/scripts/bench-model.py")
            local extra=()
            [ $device != cpu ] && extra=(--device $device --precision $precision)
            if ! "${cmd[@]}" --model $model --batch-size $batch --steps 3 "${extra[@]}" $ck \
                >"$work/bench.log" 2>&1; then
                tail_of "$work/bench.log"
                ok=0
                continue
            fi
            tail -1 "$work/bench.log" | "$PY" -c 'import json,sys
r=json.loads(sys.stdin.read())
print("| %s | %s | %.4f | %.1f | %.0f |" % (sys.argv[1], bool(sys.argv[2]), r["step_s"],
      r["batch"] / r["step_s"], r["peak_rss_mb"]))' "$impl" "$ck" >>"$report" || ok=0
        done
    done
    [ "$openclip" = 1 ] || line "- OpenCLIP's side: skipped (no OpenCLIP)"
    [ $ok = 1 ] && ran || fail "a bench-model run failed"
}

# --- throughput: clip-train next to open_clip_train.main --------------------------------------
# The last `Train Epoch` line's per-GPU samples/s of a run's out.log.
rate() { grep "Train Epoch" "$1" | tail -1 | grep -oE '[0-9.]+/s/gpu' | cut -d/ -f1; }
check_throughput() {
    section "Throughput next to open_clip_train.main"
    have_bin clip-train || { skip "no clip-train binary"; return; }
    local args=(--dataset-type synthetic --epochs 1 --lr 1e-3 --warmup 5 --workers 2
                --save-frequency 0 --log-every-n-steps 5 --logs "$work/runs")
    local steps=25 batch=8
    if [ "$cuda" = 1 ]; then
        batch=${GPU_CHECK_BATCH:-256}
        args+=(--model convnext_large_d_320 --precision amp_bf16 --grad-checkpointing --device cuda)
    else
        steps=10
        args+=(--model clip_tiny --precision fp32 --device cpu)
    fi
    args+=(--batch-size $batch --train-num-samples $((steps * batch)))
    line "- ${args[*]//$work/TMP} ($steps steps; the rate is the last logged step's, after warm-up)"
    [ "$cuda" = 1 ] || line "- CPU run: clip_tiny instead of convnext_large_d_320 (far too slow on CPU); no MFU"
    line ""
    line "| impl | samples/s/GPU | peak memory MiB | MFU |"
    line "|---|---|---|---|"
    local ok=1 impl
    for impl in ours openclip; do
        local cmd=("$BIN/clip-train")
        if [ $impl = openclip ]; then
            [ "$openclip" = 1 ] || { line "| openclip | skipped: no OpenCLIP | | |"; continue; }
            cmd=("$PY" "$folder/scripts/openclip-train.py")
        fi
        local mem=""
        if [ "$cuda" = 1 ]; then
            # Peak device memory, sampled by nvidia-smi while the run lasts.
            (while sleep 0.5; do nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits | head -1; done) \
                >"$work/mem.$impl" &
            local sampler=$!
        fi
        # GNU time's peak RSS where the host has it.
        local timed=()
        [ -x /usr/bin/time ] && timed=(/usr/bin/time -f '%M' -o "$work/rss.$impl")
        if ! (cd "$folder" && "${timed[@]}" "${cmd[@]}" "${args[@]}" --name $impl) \
            >"$work/$impl.log" 2>&1; then
            [ "$cuda" = 1 ] && kill $sampler
            tail_of "$work/$impl.log"
            ok=0
            continue
        fi
        if [ "$cuda" = 1 ]; then
            kill $sampler
            mem="$(sort -n "$work/mem.$impl" | tail -1) (device)"
        elif [ -s "$work/rss.$impl" ]; then
            mem="$(($(tail -1 "$work/rss.$impl") / 1024)) (host RSS)"
        else
            mem="n/a (no /usr/bin/time)"
        fi
        local r mfu="n/a (CPU)"
        r=$(rate "$work/runs/$impl/out.log")
        [ -n "$r" ] || { ok=0; line "| $impl | no Train Epoch rate in out.log | | |"; continue; }
        # 632 GFLOP per trained sample with checkpointing; 989 TFLOP/s bf16 dense (H100 SXM, H200).
        [ "$cuda" = 1 ] && mfu=$("$PY" -c "print(f'{632e9 * $r / 989e12:.1%}')")
        line "| $impl | $r | $mem | $mfu |"
    done
    [ $ok = 1 ] && ran || fail "a training run failed"
}

# --- three --precision amp steps ----------------------------------------------------------------
check_amp() {
    section "Three --precision amp steps"
    have_bin clip-train || { skip "no clip-train binary"; return; }
    local dev=cpu model=clip_tiny
    [ "$cuda" = 1 ] && dev=cuda model=ViT-B-32
    (cd "$folder" && "$BIN/clip-train" --dataset-type synthetic --model $model --device $dev \
        --precision amp --batch-size 8 --train-num-samples 24 --epochs 1 --lr 1e-3 --warmup 1 \
        --workers 1 --save-frequency 0 --log-every-n-steps 1 --logs "$work/runs" --name amp) \
        >"$work/amp.log" 2>&1
    local rc=$?
    if [ $rc = 2 ]; then
        skip "refused on $dev: $(grep -m1 -i 'error\|not supported' "$work/amp.log" || tail -1 "$work/amp.log")"
    elif [ $rc = 0 ]; then
        line "- $model on $dev, batch 8, 3 steps: losses $(grep -oE 'Loss: [0-9.e+-]+' "$work/runs/amp/out.log" | cut -d' ' -f2 | tr '\n' ' ')"
        ran
    else
        tail_of "$work/amp.log"
        fail "clip-train --precision amp exited $rc"
    fi
}

# --- a --profile-steps trace --------------------------------------------------------------------
check_profile() {
    section "--profile-steps trace"
    have_bin clip-train || { skip "no clip-train binary"; return; }
    if ! "$BIN/clip-train" --help 2>&1 | grep -q -- --profile-steps; then
        skip "this clip-train has no --profile-steps"
        return
    fi
    local dev=cpu
    [ "$cuda" = 1 ] && dev=cuda
    if ! (cd "$folder" && "$BIN/clip-train" --dataset-type synthetic --model clip_tiny --device $dev \
        --precision fp32 --batch-size 8 --train-num-samples 40 --epochs 1 --lr 1e-3 --warmup 1 \
        --workers 1 --save-frequency 0 --profile-steps 2:4 --logs "$work/runs" --name prof) \
        >"$work/prof.log" 2>&1; then
        tail_of "$work/prof.log"
        fail "clip-train --profile-steps 2:4 failed"
        return
    fi
    local trace
    trace=$(find "$work/runs/prof/profile" -name 'rank0_*.pt.trace.json' 2>/dev/null | head -1)
    [ -n "$trace" ] || { fail "no rank0_*.pt.trace.json under the run's profile/"; return; }
    line "- clip_tiny on $dev, steps 2 to 4: $(basename "$trace") ($(du -k "$trace" | cut -f1) KiB)"
    if ! "$BIN/clip-tool" --help 2>&1 | grep -qw profile; then
        line "- summary: skipped: this clip-tool has no \`profile\` subcommand"
    elif "$BIN/clip-tool" profile "$trace" >"$work/prof-summary.txt" 2>&1; then
        line '```'
        cat "$work/prof-summary.txt" >>"$report"
        line '```'
    else
        tail_of "$work/prof-summary.txt"
        fail "clip-tool profile failed"
        return
    fi
    ran
}

# --- batches ahead of time ------------------------------------------------------------------------
# CSV batches (decoded into the ring of pinned host buffers) taken a step ahead and copied on the
# copy stream with an event, images crossing as bf16 under amp_bf16 — against each step taking
# its own f32 batch (CLIP_TRAIN_PREFETCH=0 CLIP_TRAIN_BF16_IMAGES=0): the same bits. On CPU: the
# same with fp32 (no copy, no bf16).
check_prefetch() {
    section "Batches ahead of time, bitwise like each step taking its own"
    have_bin clip-train || { skip "no clip-train binary"; return; }
    local dev=cpu precision=fp32
    [ "$cuda" = 1 ] && dev=cuda precision=amp_bf16
    mkdir -p "$work/prefetch"
    # 48 small PNGs and a table naming them (Python's standard library only).
    "$PY" - "$work/prefetch" <<'PYEOF'
import os, struct, sys, zlib
d = sys.argv[1]
os.makedirs(f"{d}/imgs", exist_ok=True)
def chunk(t, data):
    return struct.pack(">I", len(data)) + t + data + struct.pack(">I", zlib.crc32(t + data))
with open(f"{d}/train.csv", "w") as table:
    table.write("filepath\ttitle\n")
    for i in range(48):
        w, h = 80, 72
        rows = b"".join(b"\0" + bytes((x * 7 + y * 3 + i * 11 + c * 50) % 256
                                      for x in range(w) for c in range(3)) for y in range(h))
        png = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
               + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))
        path = f"{d}/imgs/{i:03}.png"
        open(path, "wb").write(png)
        table.write(f"{path}\ta picture number {i}\n")
PYEOF
    line "- clip_tiny, --dataset-type csv (48 PNGs), batch 8, 6 steps, $precision on $dev"
    local mode
    for mode in ahead each; do
        local env=()
        [ $mode = each ] && env=(CLIP_TRAIN_PREFETCH=0 CLIP_TRAIN_BF16_IMAGES=0)
        if ! (cd "$folder" && env "${env[@]}" timeout 300 "$BIN/clip-train" --dataset-type csv \
            --train-data "$work/prefetch/train.csv" --model clip_tiny --device $dev \
            --precision $precision --batch-size 8 --epochs 1 --lr 1e-3 --warmup 1 --workers 2 \
            --seed 3 --save-frequency 1 --log-every-n-steps 2 --logs "$work/runs" \
            --name prefetch-$mode) >"$work/prefetch-$mode.log" 2>&1; then
            tail_of "$work/prefetch-$mode.log"
            fail "the run with batches taken $mode failed"
            return
        fi
        line "- $mode: $(grep -m1 -o 'Input batches: .*' "$work/runs/prefetch-$mode/out.log" || echo 'no input line in out.log')"
    done
    local same
    if same=$("$PY" - "$work/runs" 2>&1 <<'PYEOF'
import sys
from safetensors.torch import load_file
a, b = (load_file(f"{sys.argv[1]}/prefetch-{m}/checkpoints/epoch_1.safetensors") for m in ("ahead", "each"))
assert a.keys() == b.keys(), "different tensors"
diff = [k for k in a if not a[k].equal(b[k])]
print(f"{len(a) - len(diff)} of {len(a)} tensors bitwise equal" + (f"; differ: {diff[:3]}" if diff else ""))
sys.exit(1 if diff else 0)
PYEOF
    ); then
        line "- ahead vs each: $same"
        ran
    else
        line "- ahead vs each: $same"
        fail "batches taken ahead train other values"
    fi
}

{
    echo "# gpu-check report"
    echo
    echo "Folder: $folder. Each part says \`status: ran\`, \`status: skipped: <why>\` or"
    echo "\`status: FAILED: <why>\`; skipped parts measured nothing."
} >"$report"
check_environment
check_nccl
check_overlap
check_parity
check_checkpointing
check_throughput
check_amp
check_profile
check_prefetch
{
    echo
    echo "## Summary"
    echo
    echo "| part | status |"
    echo "|---|---|"
    printf '%s\n' "${summary[@]}"
} >>"$report"
cat "$report"
if [ ${#failed[@]} -gt 0 ]; then
    echo "gpu-check: FAILED: ${failed[*]}" >&2
    exit 1
fi
