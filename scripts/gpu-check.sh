#!/usr/bin/env bash
# One run that checks clip-train on a GPU host (one H100/H200, ../shared/gpu/README.md: torch
# 2.11.0+cu130 in a venv, no Rust, no network), from the one folder scripts/pack-gpu-check.sh
# assembles, writing REPORT_DIR/gpu-check.md (format and claims: docs/benchmarks.md).
#
#     scripts/gpu-check.sh FOLDER REPORT_DIR
#
# Every part proves something and can fail:
# - each part that compares bits or values runs once more with a fault planted (an environment
#   variable, crates/clip-train/src/fault.rs: a skipped stream wait behind a long kernel, a sum
#   for an average, TF32 on one side) and must then see FAIL — else the part FAILs: a check
#   that cannot fail proves nothing;
# - both sides of a comparison are measured the same way (N steps by the wall clock between two
#   device syncs, the same flags and workers, data time printed, the caching allocator's peaks);
# - bitwise parts run with CLIP_TRAIN_DETERMINISTIC=1 (no cuDNN autotuner, deterministic
#   algorithms, cuBLAS's fixed workspace);
# - every part has a time budget, and each command runs under `timeout` with what is left of
#   it: on a GPU the budgets add up to 8 minutes, so the run cannot take longer (table at the
#   top of the report). Nothing reaches the network.
# A part that cannot run says `skipped: <why>`; nothing is estimated or made up. Without a GPU
# it runs every part it can on the CPU with tiny models (`clip_tiny`, `clip_tiny_test`: the
# figures then say nothing about a card), negative controls included — CI does so
# (crates/clip-train/tests/it/gpu_check.rs) so the script cannot rot. Exit status 1 when a part
# failed.
#
# PY: the Python with torch (default /opt/torch/.venv/bin/python3, else python3).
set -uo pipefail
folder=$(cd "${1:?usage: gpu-check.sh FOLDER REPORT_DIR}" && pwd)
mkdir -p "${2:?usage: gpu-check.sh FOLDER REPORT_DIR}"
outdir=$(cd "$2" && pwd)
report=$outdir/gpu-check.md
body=$outdir/.gpu-check.parts.md
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
PY=${PY:-/opt/torch/.venv/bin/python3}
[ -x "$PY" ] || PY=$(command -v python3)
BIN=$folder/bin
failed=()
summary=()
budgets=()
cuda=0
aborted=""
# The budgets are the GPU's where nvidia-smi sees a GPU (decided before the first part runs).
gpu_host=0
command -v nvidia-smi >/dev/null && timeout 20 nvidia-smi -L >/dev/null 2>&1 && gpu_host=1

# --- report, parts and their budgets -------------------------------------------------------------
line() { printf '%s\n' "$*" >>"$body"; }
status() {
    line "status: $1"
    summary+=("| $current | $1 |")
    part_status=$1
}
ran() { status ran; }
skip() { status "skipped: $*"; }
fail() {
    local why=$*
    [ -e "$work/timed-out" ] && why="$why (the part's budget of ${budget}s ran out)"
    status "FAILED: $why"
    failed+=("$current")
}
# The last lines of a log, into the report.
tail_of() { line '```'; tail -n "${2:-15}" "$1" >>"$body"; line '```'; }
have_bin() { [ -x "$BIN/$1" ]; }
# A number with an SI prefix: 7.9e14 → "790.0 T".
si() { "$PY" -c 'import sys; v = float(sys.argv[1]); p = max((p for p in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k"), (1, "")) if v >= p[0] or p[0] == 1), key=lambda p: p[0]); print(f"{v / p[0]:.1f} {p[1]}")' "$1"; }

# Runs a command with what is left of the part's budget (killed at the deadline; the part then
# says so).
t() {
    local left=$((deadline - SECONDS))
    [ $left -ge 1 ] || left=1
    timeout --kill-after=5 "$left" "$@"
    local rc=$?
    if [ $rc = 124 ] || [ $rc = 137 ]; then touch "$work/timed-out"; fi
    return $rc
}

# part TITLE GPU_SECONDS CPU_SECONDS FUNCTION: one section of the report. On a GPU the budget is
# the part's share of the 8 minutes; on the CPU a generous timeout (a CI machine is slow and
# shared).
part() {
    current=$1
    budget=$2
    [ "$gpu_host" = 1 ] || budget=$3
    deadline=$((SECONDS + budget))
    rm -f "$work/timed-out"
    part_status=""
    local t0=$SECONDS
    printf '\n## %s\n\n' "$current" >>"$body"
    if [ -n "$aborted" ]; then
        skip "$aborted"
    else
        "$4"
    fi
    [ -n "$part_status" ] || fail "the part ended without a status"
    budgets+=("| $current | $budget | $((SECONDS - t0)) | ${part_status%%:*} |")
}

# Which Python modules import (filled by the environment part): "ok" or the error.
declare -A module
# The modules a part needs that do not import, or nothing.
missing() {
    local m out=()
    for m in "$@"; do [ "${module[$m]:-}" = ok ] || out+=("$m"); done
    echo "${out[*]}"
}

# --- environment --------------------------------------------------------------------------------
# What every part imports, and where: parity (torch, safetensors, timm, open_clip), the bitwise
# comparisons (safetensors), bench-model.py (open_clip, timm), openclip-train.py
# (open_clip_train.main and the data modules it loads).
MODULES="torch safetensors timm open_clip open_clip_train.main open_clip_train.data webdataset braceexpand ftfy"
check_environment() {
    line "- date: $(date -u +%Y-%m-%dT%H:%M:%SZ), host: $(hostname), cores: $(nproc)"
    local gpu_seen=0
    if command -v nvidia-smi >/dev/null && t nvidia-smi -L >/dev/null 2>&1; then
        gpu_seen=1
        line "- GPU: $(t nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null | head -1)"
    else
        line "- GPU: none (no working nvidia-smi)"
    fi
    # OpenCLIP's side from the folder's wheels (the host lacks them; no pip, no network).
    local w
    for w in "$folder"/wheels/*.whl; do
        [ -e "$w" ] || continue
        t "$PY" -m zipfile -e "$w" "$work/site" 2>>"$work/env.err" || { fail "cannot unpack $w"; return; }
        export PYTHONPATH=$work/site:${PYTHONPATH:-}
    done
    # Parsed: stdout only (a warning on stderr must not change what is read).
    local probe
    probe=$(t "$PY" - $MODULES 2>"$work/env.err" <<'PYEOF'
import importlib, sys
for m in sys.argv[1:]:
    try:
        importlib.import_module(m)
        print(f"module {m} ok")
    except Exception as e:
        print(f"module {m} {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
try:
    import torch, os
    print("torch", torch.__version__, torch.version.cuda, int(torch.cuda.is_available()),
          os.path.join(os.path.dirname(torch.__file__), "lib"))
    import nvidia
    print("nvidia", nvidia.__path__[0])
except Exception:
    pass
PYEOF
    )
    local kind rest tv tcuda tl="" nv=""
    while read -r kind rest; do
        case $kind in
            module) module[${rest%% *}]=${rest#* } ;;
            torch) read -r tv tcuda cuda tl <<<"$rest" ;;
            nvidia) nv=$rest ;;
        esac
    done <<<"$probe"
    local imports=() m
    for m in $MODULES; do imports+=("$m ${module[$m]:-not probed}"); done
    line "- Python $PY imports: $(IFS=';'; echo "${imports[*]}" | sed 's/;/; /g')"
    if [ "${module[torch]:-}" != ok ] || [ -z "$tl" ]; then
        tail_of "$work/env.err"
        fail "no usable torch in $PY"
        aborted="the environment part failed"
        return
    fi
    line "- torch $tv (CUDA $tcuda), CUDA device usable by torch: $([ "$cuda" = 1 ] && echo yes || echo no)"
    if [ $gpu_seen = 1 ] && [ "$cuda" != 1 ]; then
        tail_of "$work/env.err"
        fail "nvidia-smi sees a GPU but torch.cuda.is_available() is false: the other parts would silently run the CPU's tiny models"
        aborted="the environment part failed"
        return
    fi
    # The binaries link the host's libtorch, and NCCL from pip's nvidia package.
    if [ -n "$nv" ] && [ -e "$nv/nccl/lib/libnccl.so.2" ]; then
        mkdir -p "$work/nccl" && ln -sf "$nv/nccl/lib/libnccl.so.2" "$work/nccl/libnccl.so"
        export LD_LIBRARY_PATH=$work/nccl:$nv/nccl/lib:${LD_LIBRARY_PATH:-}
        line "- NCCL: $nv/nccl/lib/libnccl.so.2"
    else
        line "- NCCL: not found (pip's nvidia-nccl package is absent)"
    fi
    export LD_LIBRARY_PATH=$tl:${LD_LIBRARY_PATH:-}
    local b libs
    for b in clip-train clip-tool dist-selftest; do
        if ! have_bin $b; then
            fail "$b is not in $BIN (scripts/pack-gpu-check.sh packs it)"
            aborted="the environment part failed"
            return
        fi
        libs=$(ldd "$BIN/$b" | grep -oE 'lib(torch_cuda|torch_cpu|c10_cuda|cudart)[^ ]* => [^ ]+' | tr '\n' ' ')
        line "- $b: ${libs:-no libtorch found}"
        if ldd "$BIN/$b" | grep -q 'not found'; then
            fail "$b: $(ldd "$BIN/$b" | grep 'not found' | head -1 | xargs)"
            aborted="the environment part failed"
            return
        fi
        if [ "$cuda" = 1 ] && ! ldd "$BIN/$b" | grep -q 'libtorch_cuda'; then
            fail "$b does not link libtorch_cuda: CUDA would be silently unavailable to it"
            aborted="the environment part failed"
            return
        fi
    done
    ran
}

# --- the bf16 matmul peak, for MFU ----------------------------------------------------------------
peak_flops=""
check_peak() {
    local dev=cpu what="fp32 1024³ matmuls (this CPU's: MFU below is against it)"
    [ "$cuda" = 1 ] && dev=cuda what="bf16 8192³ matmuls"
    local out
    if ! out=$(t "$PY" - $dev 2>"$work/peak.err" <<'PYEOF'
import sys, time, torch
dev = sys.argv[1]
n, dtype, reps, bound = (8192, torch.bfloat16, 30, 1e-2) if dev == "cuda" else (1024, torch.float32, 5, 1e-5)
g = torch.Generator(device=dev).manual_seed(0)
a = torch.randn(n, n, device=dev, dtype=dtype, generator=g)
b = torch.randn(n, n, device=dev, dtype=dtype, generator=g)
sync = torch.cuda.synchronize if dev == "cuda" else (lambda: None)
for _ in range(3):
    c = a @ b
sync()
t0 = time.perf_counter()
for _ in range(reps):
    c = a @ b
sync()
seconds = time.perf_counter() - t0
# The product is right: a corner against float64.
ref = a[:256].double() @ b[:, :256].double()
err = ((c[:256, :256].double() - ref).abs().max() / ref.abs().max()).item()
print(2 * n**3 * reps / seconds, err, bound)
PYEOF
    ); then
        tail_of "$work/peak.err"
        fail "the matmul failed"
        return
    fi
    local err bound
    read -r peak_flops err bound <<<"$out"
    line "- $what: $(si "$peak_flops")FLOP/s measured (the MFU denominator below); product's max relative error against float64: $err (bound $bound)"
    if "$PY" -c "import sys; sys.exit(not $err <= $bound)"; then
        ran
    else
        fail "the matmul's product is wrong (relative error $err > $bound)"
    fi
}

# --- NCCL collectives at world size 1 ------------------------------------------------------------
# dist-selftest nccl: every collective bitwise like the local reference, a produce → all-reduce →
# consume chain, and out-of-place collectives of a buffer written behind a long kernel; then its
# negative control (the collectives on a stream that does not wait) must report the stale read.
selftest() {
    RANK=0 WORLD_SIZE=1 LOCAL_RANK=0 MASTER_ADDR=127.0.0.1 MASTER_PORT=$((29500 + RANDOM % 300)) \
        t "$BIN/dist-selftest" nccl "$work/nccl-out" >"$work/$1.out" 2>"$work/$1.err"
}
check_nccl() {
    [ "$cuda" = 1 ] || { skip "no CUDA device"; return; }
    if ! selftest nccl; then
        tail_of "$work/nccl.err"
        fail "dist-selftest nccl failed"
        return
    fi
    line '```'
    cat "$work/nccl.out" >>"$body"
    line '```'
    CLIP_TRAIN_FAULT=skip-comm-wait selftest nccl-fault
    local rc=$?
    line "- negative control (CLIP_TRAIN_FAULT=skip-comm-wait: the collectives on a stream that does not wait): exit $rc: $(grep -m1 'error:' "$work/nccl-fault.err" || echo 'no error')"
    if [ $rc != 0 ] && grep -q "read its input before the write" "$work/nccl-fault.err"; then
        line "- sum vs average: not seen here (in a world of one a sum is the average; the overlap part's CPU control and a run on 2 GPUs see it)"
        ran
    else
        tail_of "$work/nccl-fault.err"
        fail "the negative control did not fail: the ordering check cannot see a missing wait"
    fi
}

# --- bitwise comparisons of two runs' final checkpoints --------------------------------------------
# Prints "N of M tensors bitwise equal[; differ: …]"; exit 0 all equal, 1 some differ, 2 error.
compare_runs() {
    t "$PY" - "$1" "$2" 2>>"$work/compare.err" <<'PYEOF'
import sys
try:
    from safetensors.torch import load_file
    a, b = (load_file(f"{d}/checkpoints/epoch_1.safetensors") for d in sys.argv[1:3])
    assert a.keys() == b.keys(), "different tensors"
except Exception as e:
    print(f"cannot compare: {e}")
    sys.exit(2)
diff = [k for k in a if not a[k].equal(b[k])]
print(f"{len(a) - len(diff)} of {len(a)} tensors bitwise equal" + (f"; differ: {diff[:3]}" if diff else ""))
sys.exit(1 if diff else 0)
PYEOF
}

# A negative control's verdict: its run ($1: exit status, $2: stderr, $3: run dir) must have seen
# the fault — its weights differ from the reference ($4), or the planted fault made the loss
# non-finite and the run stopped on it. Prints what it saw; exit 0 when the fault was seen.
control_saw_it() {
    local rc=$1 err=$2 run=$3 reference=$4 same
    if [ "$rc" = 0 ]; then
        same=$(compare_runs "$run" "$reference")
        local crc=$?
        echo "$same"
        [ $crc = 1 ]
    elif grep -q "the run diverged" "$err"; then
        echo "stopped: $(grep -m1 -o 'the loss is .* at step [0-9]*' "$err")"
    else
        echo "the run failed (exit $rc) without showing the fault: $(tail -1 "$err")"
        return 1
    fi
}

# --- overlapped gradient all-reduce vs reduce-after-backward ---------------------------------------
# The buckets reduced during the backward train bitwise like the same buckets reduced after it
# (CLIP_TRAIN_DDP_OVERLAP=0). On CUDA: NCCL at world size 1 (CLIP_DIST_BACKEND_AT_WORLD_1=1), the
# overlapped all-reduces on the communication stream, ordered by events, with the compute stream
# kept busy before the gradients are written (CLIP_TRAIN_DELAY=grads); the control skips the comm
# stream's wait. On CPU: the CPU backend's communication thread at world size 2; the control sums
# the buckets instead of averaging them. Many small buckets, bf16 on the wire, --accum-freq 2 (only
# the last backward launches).
check_overlap() {
    local world=2 dev=cpu model=clip_tiny_test precision=fp32 fault=sum-grads delay=""
    local what="the CPU backend's communication thread"
    if [ "$cuda" = 1 ]; then
        world=1 dev=cuda model=clip_tiny precision=amp_bf16 fault=skip-comm-wait delay=grads
        what="NCCL at world size 1 (CLIP_DIST_BACKEND_AT_WORLD_1=1), on the communication stream, CLIP_TRAIN_DELAY=grads"
    fi
    line "- $model on $dev, world size $world: $what; $precision, 4 steps of --accum-freq 2, --grad-reduce-dtype bf16, CLIP_TRAIN_DDP_BUCKET_CAP_MB=0.02, CLIP_TRAIN_DETERMINISTIC=1"
    overlap_port=$((29600 + RANDOM % 200))
    overlap_run on 1 "" "$delay" && overlap_run off 0 "" "" || return
    local same rc
    same=$(compare_runs "$work/runs/overlap-on" "$work/runs/overlap-off")
    rc=$?
    line "- overlap on vs off: $same"
    overlap_run control 1 "$fault" "$delay"
    local crc=$? seen
    seen=$(control_saw_it $crc "$work/overlap-control.0.err" "$work/runs/overlap-control" "$work/runs/overlap-off")
    local saw=$?
    line "- negative control (CLIP_TRAIN_FAULT=$fault) vs off: $seen"
    if ! grep -q "buckets: \([0-9]*\), all-reduced during the backward: \1\$" "$work/runs/overlap-on/out.log"; then
        fail "not every bucket was all-reduced during the backward"
    elif [ $rc != 0 ]; then
        fail "overlapped training differs from reduce-after-backward"
    elif [ $saw != 0 ]; then
        fail "the negative control did not fail: this comparison cannot see $fault"
    else
        ran
    fi
}

# One training run of check_overlap on `world` ranks: overlap-NAME, CLIP_TRAIN_DDP_OVERLAP=$2,
# CLIP_TRAIN_FAULT=$3, CLIP_TRAIN_DELAY=$4. The control's failure is its verdict's business.
overlap_run() {
    local name=$1 rank pids=() rc=0
    local args=(--dataset-type synthetic --model $model --device $dev --precision $precision
                --batch-size 4 --accum-freq 2 --train-num-samples $((8 * 4 * world)) --epochs 1
                --lr 1e-3 --warmup 1 --workers 1 --seed 3 --save-frequency 1
                --log-every-n-steps 1 --local-loss --gather-with-grad --grad-reduce-dtype bf16
                --logs "$work/runs" --name "overlap-$name")
    for ((rank = 0; rank < world; rank++)); do
        (cd "$folder" && RANK=$rank LOCAL_RANK=$rank WORLD_SIZE=$world MASTER_ADDR=127.0.0.1 \
            MASTER_PORT=$overlap_port OMP_NUM_THREADS=1 CLIP_DIST_BACKEND_AT_WORLD_1=1 \
            CLIP_TRAIN_DDP_OVERLAP=$2 CLIP_TRAIN_DDP_BUCKET_CAP_MB=0.02 CLIP_TRAIN_FAULT=$3 \
            CLIP_TRAIN_DELAY=$4 CLIP_TRAIN_DETERMINISTIC=1 CUBLAS_WORKSPACE_CONFIG=:4096:8 \
            t "$BIN/clip-train" "${args[@]}") >"$work/overlap-$name.$rank.out" 2>"$work/overlap-$name.$rank.err" &
        pids+=($!)
    done
    overlap_port=$((overlap_port + 1))
    for ((rank = 0; rank < world; rank++)); do
        wait "${pids[$rank]}" || rc=$?
    done
    [ "$name" = control ] && return $rc
    if [ $rc != 0 ]; then
        tail_of "$work/overlap-$name.0.err"
        fail "CLIP_TRAIN_DDP_OVERLAP=$2: a rank failed"
        return 1
    fi
    line "- CLIP_TRAIN_DDP_OVERLAP=$2: $(grep -m1 -o 'DDP gradient buckets: .*' "$work/runs/overlap-$name/out.log" || echo 'no bucket report in out.log')"
}

# --- features vs OpenCLIP on the same loaded weights -----------------------------------------------
check_parity() {
    local miss
    miss=$(missing torch safetensors timm open_clip)
    [ -z "$miss" ] || { skip "cannot import $miss"; return; }
    local model=clip_tiny_test device=cpu control="TF32 emulated on the CPU: OpenCLIP's weights and images rounded to TF32's 10-bit mantissa"
    [ "$cuda" = 1 ] && model=ViT-B-32 device=cuda control="torch's TF32 flags on for OpenCLIP"
    line "- model $model (OpenCLIP's init, seed 0), 4 random inputs, device $device; TF32 off on both sides: torch.backends flags for OpenCLIP, CLIP_TRAIN_TF32=0 for clip-tool embed (which applies the trainer's CUDA settings)"
    mkdir -p "$work/parity"
    if ! (cd "$folder" && t "$PY" scripts/gpu-check-parity.py prepare $model "$work/parity") >"$work/parity.out" 2>"$work/parity.err" ||
        ! CLIP_TRAIN_TF32=0 t "$BIN/clip-tool" embed --model $model --pretrained "$work/parity/weights.safetensors" \
            --inputs "$work/parity/inputs.safetensors" --device $device \
            --output "$work/parity/ours.safetensors" >>"$work/parity.out" 2>>"$work/parity.err"; then
        tail_of "$work/parity.err"
        fail "preparing or embedding failed"
        return
    fi
    local both rel rel_fault
    if ! both=$(cd "$folder" && t "$PY" scripts/gpu-check-parity.py compare $model "$work/parity" $device \
            "$work/parity/ours.safetensors" 2>>"$work/parity.err"); then
        tail_of "$work/parity.err"
        fail "comparison failed"
        return
    fi
    rel=$(sed -n 1p <<<"$both")
    rel_fault=$(sed -n 2p <<<"$both")
    line "- fp32 max |ours − OpenCLIP| / max |OpenCLIP|: $rel (bound 1e-4)"
    line "- negative control ($control): $rel_fault (must exceed 1e-4)"
    line "- bf16 autocast: not compared (clip-tool embed has no --precision)"
    local over='import json,sys; r=json.loads(sys.argv[1]); sys.exit(0 if max(r.values()) > 1e-4 else 1)'
    if "$PY" -c "$over" "$rel"; then
        fail "fp32 features differ by more than 1e-4"
    elif ! "$PY" -c "$over" "$rel_fault"; then
        fail "the negative control did not fail: this comparison cannot see TF32 on one side"
    else
        ran
    fi
}

# --- step time and peak memory with and without gradient checkpointing ------------------------------
check_checkpointing() {
    local model=clip_tiny_test batch=8 device=cpu precision=fp32
    [ "$cuda" = 1 ] && model=convnext_large_d_320 batch=32 device=cuda precision=amp_bf16
    local miss
    miss=$(missing torch timm open_clip)
    line "- $model, batch $batch, $precision on $device, 3 steps after one warm-up, timed by the wall clock between two device syncs on both sides (clip-tool bench-model, scripts/bench-model.py); peaks: the CUDA caching allocator's on both sides, and the process's peak RSS"
    line ""
    line "| impl | checkpointing | s/step | samples/s | peak allocated MiB | peak reserved MiB | peak RSS MiB |"
    line "|---|---|---|---|---|---|---|"
    local ok=1 ck impl
    for ck in "" --grad-checkpointing; do
        for impl in ours openclip; do
            local cmd=("$BIN/clip-tool" bench-model)
            if [ $impl = openclip ]; then
                [ -z "$miss" ] || continue
                cmd=("$PY" "$folder/scripts/bench-model.py")
            fi
            if ! t "${cmd[@]}" --model $model --batch-size $batch --steps 3 --device $device \
                --precision $precision $ck >"$work/bench-$impl$ck.out" 2>"$work/bench-$impl$ck.err"; then
                tail_of "$work/bench-$impl$ck.err"
                ok=0
                continue
            fi
            tail -1 "$work/bench-$impl$ck.out" | "$PY" -c 'import json,sys
r=json.loads(sys.stdin.read())
f = lambda v: "n/a" if v is None else "%.0f" % v
print("| %s | %s | %.4f | %.1f | %s | %s | %s |" % (sys.argv[1], bool(sys.argv[2]), r["step_s"],
      r["batch"] / r["step_s"], f(r.get("peak_gpu_allocated_mb")), f(r.get("peak_gpu_reserved_mb")),
      f(r["peak_rss_mb"])))' "$impl" "$ck" >>"$body" 2>>"$work/bench.err" || ok=0
        done
    done
    [ -z "$miss" ] || line "- OpenCLIP's side: skipped (cannot import $miss)"
    [ $ok = 1 ] || { fail "a bench-model run failed"; return; }
    # On a GPU, checkpointing must lower the allocator's peak on both sides (what it is for).
    if [ "$cuda" = 1 ]; then
        for impl in ours openclip; do
            [ -s "$work/bench-$impl--grad-checkpointing.out" ] || continue
            if ! "$PY" -c 'import json,sys
a, b = (json.loads(open(p).read().splitlines()[-1])["peak_gpu_allocated_mb"] for p in sys.argv[1:3])
sys.exit(0 if b < a else 1)' "$work/bench-$impl.out" "$work/bench-$impl--grad-checkpointing.out"; then
                fail "gradient checkpointing did not lower $impl's peak allocated memory"
                return
            fi
        done
    fi
    ran
}

# --- throughput: clip-train (local and the bucketed NCCL path) next to open_clip_train.main --------
# Each side: the same flags and workers, W+N+1 steps of synthetic data, N of them timed after W
# (CLIP_TRAIN_TIME_STEPS=W:N: the wall clock between two device syncs; data time inside the
# window; the caching allocator's peaks), the last step's log (a loss read) after the window.
check_throughput() {
    local w=2 n=3 batch=8 workers=2 model=clip_tiny precision=fp32 dev=cpu extra=()
    if [ "$cuda" = 1 ]; then
        w=5 n=20 batch=${GPU_CHECK_BATCH:-256} workers=8 model=convnext_large_d_320
        precision=amp_bf16 dev=cuda extra=(--grad-checkpointing)
    fi
    local steps=$((w + n + 1))
    local args=(--dataset-type synthetic --epochs 1 --lr 1e-3 --warmup 2 --workers $workers
                --save-frequency 0 --log-every-n-steps 1000 --model $model --precision $precision
                --device $dev "${extra[@]}" --batch-size $batch --train-num-samples $((steps * batch))
                --seed 0 --logs "$work/runs")
    local flops
    if ! flops=$(t "$BIN/clip-tool" flops --model $model 2>"$work/flops.err"); then
        tail_of "$work/flops.err"
        fail "clip-tool flops failed"
        return
    fi
    local per_sample
    per_sample=$("$PY" -c 'import json,sys; print(json.loads(sys.argv[1])["train_flops_per_sample"])' "$flops")
    line "- ${args[*]//$work/TMP}: $steps steps, $n timed after $w (CLIP_TRAIN_TIME_STEPS=$w:$n)"
    line "- ours: the local path; ours-dist: the bucketed path through $([ "$cuda" = 1 ] && echo NCCL || echo "the CPU backend") at world size 1 (CLIP_DIST_BACKEND_AT_WORLD_1=1); openclip: scripts/openclip-train.py, timed the same way"
    line "- FLOPs per trained sample without recompute (clip-tool flops): $(si "$per_sample")FLOP; MFU = that × samples/s ÷ the matmul peak measured above$([ "$cuda" = 1 ] && echo ', and ÷ the nominal 989 TFLOP/s')"
    [ "$cuda" = 1 ] || line "- CPU run: $model instead of convnext_large_d_320 (far too slow on CPU)"
    line ""
    line "| impl | steps run | timed steps | seconds | samples/s/GPU | data s | peak allocated MiB | peak reserved MiB | peak RSS MiB | MFU (measured peak) | MFU (989 TFLOP/s) |"
    line "|---|---|---|---|---|---|---|---|---|---|---|"
    local ok=1 impl miss
    miss=$(missing open_clip_train.main open_clip_train.data)
    for impl in ours ours-dist openclip; do
        local cmd=("$BIN/clip-train") env=(CLIP_TRAIN_TIME_STEPS=$w:$n)
        case $impl in
            ours-dist) env+=(RANK=0 LOCAL_RANK=0 WORLD_SIZE=1 MASTER_ADDR=127.0.0.1
                             MASTER_PORT=$((29900 + RANDOM % 90)) CLIP_DIST_BACKEND_AT_WORLD_1=1) ;;
            openclip)
                if [ -n "$miss" ]; then line "| openclip | skipped: cannot import $miss |||||||||"; continue; fi
                cmd=("$PY" "$folder/scripts/openclip-train.py") ;;
        esac
        if ! (cd "$folder" && t env "${env[@]}" "${cmd[@]}" "${args[@]}" --name $impl) \
            >"$work/$impl.out" 2>"$work/$impl.err"; then
            tail_of "$work/$impl.err"
            ok=0
            continue
        fi
        if ! "$PY" - "$work/runs/$impl/out.log" "$impl" "$steps" "$batch" "$per_sample" "${peak_flops:-0}" "$cuda" \
            >>"$body" 2>>"$work/throughput.err" <<'PYEOF'
import json, math, re, sys
log, impl, steps, batch, per_sample, peak, cuda = sys.argv[1:8]
text = open(log).read()
timed = [l.split("Timed steps: ", 1)[1] for l in text.splitlines() if "Timed steps: " in l]
ran = re.findall(r"Train Epoch: \d+ \[\s*(\d+)/", text)
losses = [float(x) for x in re.findall(r"Loss: ([-+0-9.eEnaif]+)", text)]
problems = []
if len(timed) != 1:
    problems.append(f"{len(timed)} 'Timed steps' lines")
if not ran or int(ran[-1]) // int(batch) != int(steps):
    problems.append(f"ran {int(ran[-1]) // int(batch) if ran else 0} steps, not {steps}")
if not losses or not all(math.isfinite(l) for l in losses):
    problems.append(f"losses {losses}")
if problems:
    print(f"| {impl} | FAILED: {'; '.join(problems)} |||||||||")
    sys.exit(1)
t = json.loads(timed[0])
rate = t["steps_per_s"] * int(batch)
f = lambda v: "n/a" if v is None else f"{v:.0f}"
mfu = lambda p: f"{float(per_sample) * rate / p:.1%}" if p > 0 else "n/a"
print(f"| {impl} | {int(ran[-1]) // int(batch)} | {t['steps']} | {t['seconds']:.2f} | {rate:.1f} | "
      f"{t['data_seconds']:.2f} | {f(t['peak_allocated_mib'])} | {f(t['peak_reserved_mib'])} | "
      f"{f(t['peak_rss_mib'])} | {mfu(float(peak))} | {mfu(989e12) if cuda == '1' else 'n/a'} |")
PYEOF
        then
            ok=0
        fi
    done
    [ $ok = 1 ] && ran || fail "a training run failed, or its log lacks what the table needs"
}

# --- three --precision amp steps ------------------------------------------------------------------
check_amp() {
    local dev=cpu model=clip_tiny
    [ "$cuda" = 1 ] && dev=cuda model=ViT-B-32
    (cd "$folder" && t "$BIN/clip-train" --dataset-type synthetic --model $model --device $dev \
        --precision amp --batch-size 8 --train-num-samples 24 --epochs 1 --lr 1e-3 --warmup 1 \
        --workers 1 --save-frequency 0 --log-every-n-steps 1 --logs "$work/runs" --name amp) \
        >"$work/amp.out" 2>"$work/amp.err"
    local rc=$?
    if [ $rc = 2 ]; then
        skip "refused on $dev: $(tail -1 "$work/amp.err")"
        return
    elif [ $rc != 0 ]; then
        tail_of "$work/amp.err"
        fail "clip-train --precision amp exited $rc"
        return
    fi
    local losses
    losses=$(grep -oE 'Loss: [-+0-9.eEnaif]+' "$work/runs/amp/out.log" | cut -d' ' -f2 | tr '\n' ' ')
    line "- $model on $dev, batch 8, 3 steps: losses $losses"
    if "$PY" -c 'import math,sys; l=[float(x) for x in sys.argv[1:]]; sys.exit(0 if len(l) == 3 and all(map(math.isfinite, l)) else 1)' $losses; then
        ran
    else
        fail "expected 3 finite losses"
    fi
}

# --- a --profile-steps trace ----------------------------------------------------------------------
check_profile() {
    local dev=cpu
    [ "$cuda" = 1 ] && dev=cuda
    if ! (cd "$folder" && t "$BIN/clip-train" --dataset-type synthetic --model clip_tiny --device $dev \
        --precision fp32 --batch-size 8 --train-num-samples 40 --epochs 1 --lr 1e-3 --warmup 1 \
        --workers 1 --save-frequency 0 --profile-steps 2:4 --logs "$work/runs" --name prof) \
        >"$work/prof.out" 2>"$work/prof.err"; then
        tail_of "$work/prof.err"
        fail "clip-train --profile-steps 2:4 failed"
        return
    fi
    local trace
    trace=$(find "$work/runs/prof/profile" -name 'rank0_*.pt.trace.json' 2>/dev/null | head -1)
    [ -n "$trace" ] || { fail "no rank0_*.pt.trace.json under the run's profile/"; return; }
    line "- clip_tiny on $dev, steps 2 to 4: $(basename "$trace") ($(du -k "$trace" | cut -f1) KiB)"
    if t "$BIN/clip-tool" profile "$trace" >"$work/prof-summary.txt" 2>"$work/prof-summary.err"; then
        line '```'
        cat "$work/prof-summary.txt" >>"$body"
        line '```'
        ran
    else
        tail_of "$work/prof-summary.err"
        fail "clip-tool profile failed"
    fi
}

# --- batches ahead of time --------------------------------------------------------------------------
# CSV batches (decoded into the ring of pinned host buffers) taken a step ahead and copied on the
# copy stream with an event, images crossing as bf16 under amp_bf16 — against each step taking
# its own f32 batch (CLIP_TRAIN_PREFETCH=0 CLIP_TRAIN_BF16_IMAGES=0): the same bits. On a GPU the
# copy stream is kept busy before each copy (CLIP_TRAIN_DELAY=copy), and the control skips the
# step's wait for the copy; on the CPU (fp32, no copy) the control's step reads zeros, what a read
# before the copy finds in fresh memory.
check_prefetch() {
    local dev=cpu precision=fp32 delay=""
    [ "$cuda" = 1 ] && dev=cuda precision=amp_bf16 delay=copy
    mkdir -p "$work/prefetch"
    # 48 small PNGs and a table naming them (Python's standard library only).
    t "$PY" - "$work/prefetch" 2>"$work/prefetch-data.err" <<'PYEOF'
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
    line "- clip_tiny, --dataset-type csv (48 PNGs), batch 8, 6 steps, $precision on $dev, CLIP_TRAIN_DETERMINISTIC=1$([ -n "$delay" ] && echo ", CLIP_TRAIN_DELAY=copy")"
    local mode rc=0
    for mode in ahead each control; do
        local env=(CLIP_TRAIN_DETERMINISTIC=1 CUBLAS_WORKSPACE_CONFIG=:4096:8 CLIP_TRAIN_DELAY=$delay)
        [ $mode = each ] && env+=(CLIP_TRAIN_PREFETCH=0 CLIP_TRAIN_BF16_IMAGES=0 CLIP_TRAIN_DELAY=)
        [ $mode = control ] && env+=(CLIP_TRAIN_FAULT=skip-copy-wait)
        (cd "$folder" && t env "${env[@]}" "$BIN/clip-train" --dataset-type csv \
            --train-data "$work/prefetch/train.csv" --model clip_tiny --device $dev \
            --precision $precision --batch-size 8 --epochs 1 --lr 1e-3 --warmup 1 --workers 2 \
            --seed 3 --save-frequency 1 --log-every-n-steps 2 --logs "$work/runs" \
            --name prefetch-$mode) >"$work/prefetch-$mode.out" 2>"$work/prefetch-$mode.err"
        rc=$?
        [ $mode = control ] && break
        if [ $rc != 0 ]; then
            tail_of "$work/prefetch-$mode.err"
            fail "the run with batches taken $mode failed"
            return
        fi
        line "- $mode: $(grep -m1 -o 'Input batches: .*' "$work/runs/prefetch-$mode/out.log" || echo 'no input line in out.log')"
    done
    local same src seen saw
    same=$(compare_runs "$work/runs/prefetch-ahead" "$work/runs/prefetch-each")
    src=$?
    line "- ahead vs each: $same"
    seen=$(control_saw_it $rc "$work/prefetch-control.err" "$work/runs/prefetch-control" "$work/runs/prefetch-each")
    saw=$?
    line "- negative control (CLIP_TRAIN_FAULT=skip-copy-wait) vs each: $seen"
    if [ $src != 0 ]; then
        fail "batches taken ahead train other values"
    elif [ $saw != 0 ]; then
        fail "the negative control did not fail: this comparison cannot see a skipped copy wait"
    else
        ran
    fi
}

: >"$body"
part "Environment" 20 120 check_environment
part "Matmul peak (the MFU denominator)" 15 60 check_peak
part "NCCL collectives at world size 1" 40 60 check_nccl
part "Overlapped gradient all-reduce, bitwise like reduce-after-backward" 60 300 check_overlap
part "Features vs OpenCLIP (same weights, TF32 off)" 45 240 check_parity
part "Gradient checkpointing: step time and peak memory, both sides" 75 240 check_checkpointing
part "Throughput next to open_clip_train.main" 120 300 check_throughput
part "Three --precision amp steps" 25 120 check_amp
part "--profile-steps trace" 25 120 check_profile
part "Batches ahead of time, bitwise like each step taking its own" 45 300 check_prefetch
{
    echo "# gpu-check report"
    echo
    echo "Folder: $folder. Each part says \`status: ran\`, \`status: skipped: <why>\` or"
    echo "\`status: FAILED: <why>\`; skipped parts measured nothing. Every part that compares bits"
    echo "or values ran a negative control too (a planted fault it must see fail)."
    echo
    echo "## Time budget"
    echo
    echo "$([ "$gpu_host" = 1 ] && echo "GPU budgets (8 minutes in all): each part's commands are killed when its budget runs out." || echo "CPU mode: the budgets are generous timeouts, not the GPU's 8 minutes.")"
    echo
    echo "| part | budget s | took s | status |"
    echo "|---|---|---|---|"
    printf '%s\n' "${budgets[@]}"
    total_budget=0 total_took=0
    for row in "${budgets[@]}"; do
        IFS='|' read -r _ _ b took _ <<<"$row"
        total_budget=$((total_budget + b)) total_took=$((total_took + took))
    done
    echo "| total | $total_budget | $total_took | |"
    cat "$body"
    echo
    echo "## Summary"
    echo
    echo "| part | status |"
    echo "|---|---|"
    printf '%s\n' "${summary[@]}"
} >"$report"
rm -f "$body"
cat "$report"
if [ ${#failed[@]} -gt 0 ]; then
    echo "gpu-check: FAILED: ${failed[*]}" >&2
    exit 1
fi
