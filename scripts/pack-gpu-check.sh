#!/usr/bin/env bash
# Assembles the one folder scripts/gpu-check.sh takes (on the CPU machine, where the binaries
# are built): the binaries, gpu-check.sh and the Python helpers it runs, the tiny model configs
# those register, and the wheels OpenCLIP's side installs from (../shared/gpu/wheels, when
# present: the GPU host has no network).
#
#     scripts/pack-gpu-check.sh OUT [BIN_DIR]
#
# BIN_DIR: where clip-train, clip-tool and dist-selftest are (default target/release; for the
# GPU host, a build linked against PyPI's torch as ../shared/gpu/README.md says). A binary that
# is missing is left out and gpu-check.sh reports the parts that need it as skipped.
# GPU_CHECK_LINK=1 links the binaries instead of copying them (a check on this machine, as the
# test suite runs it: debug binaries are hundreds of MiB).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
out=${1:?usage: pack-gpu-check.sh OUT [BIN_DIR]}
bins=${2:-$root/target/release}
wheels=${GPU_WHEELS:-$root/../shared/gpu/wheels}
[ -d "$wheels" ] || wheels=/work/shared/gpu/wheels
mkdir -p "$out/bin" "$out/scripts" "$out/configs" "$out/wheels"
for b in clip-train clip-tool dist-selftest; do
    if [ -x "$bins/$b" ]; then
        if [ "${GPU_CHECK_LINK:-0}" = 1 ]; then
            ln -sf "$(cd "$bins" && pwd)/$b" "$out/bin/$b"
        else
            cp "$bins/$b" "$out/bin/$b"
        fi
    else
        echo "pack-gpu-check: no $bins/$b (left out)" >&2
    fi
done
cp "$root/scripts/gpu-check.sh" "$root/scripts/bench-model.py" "$root/scripts/openclip-train.py" \
    "$root/scripts/openclip_tiny.py" "$root/scripts/gpu-check-parity.py" "$out/scripts/"
cp "$root"/configs/clip_tiny*.json "$root/configs/vit_tiny_test.json" "$out/configs/"
if [ -d "$wheels" ]; then
    cp "$wheels"/*.whl "$out/wheels/" 2>/dev/null || true
fi
echo "pack-gpu-check: $out ($(du -sh "$out" | cut -f1)); on the host: bash $out/scripts/gpu-check.sh $out REPORT_DIR"
