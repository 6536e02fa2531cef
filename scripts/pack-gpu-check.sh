#!/usr/bin/env bash
# Assembles the one folder scripts/gpu-check.sh takes (on the CPU machine, where the binaries
# are built): clip-train, clip-tool and dist-selftest with their symbols stripped, gpu-check.sh
# and the Python helpers it runs, the tiny model configs those register, and the wheels of what
# the GPU host lacks for OpenCLIP's side (open_clip_torch, ftfy, wcwidth, webdataset,
# braceexpand: ../shared/gpu/wheels; the host has torch, timm, numpy, pandas, pyyaml, regex and
# safetensors, and no network). The host takes at most 64 MiB: over 60 MiB this fails.
#
#     scripts/pack-gpu-check.sh OUT [BIN_DIR]
#
# OUT: a new (or empty) folder. BIN_DIR: where the three binaries are (default target/release;
# for the GPU host, a build linked against PyPI's torch 2.11 as ../shared/gpu/README.md says).
# Every one of them must be there. The last line says the folder's size: the bytes of its files.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
out=${1:?usage: pack-gpu-check.sh OUT [BIN_DIR]}
bins=${2:-$root/target/release}
wheels=${GPU_WHEELS:-$root/../shared/gpu/wheels}
limit_mib=60
die() { echo "pack-gpu-check: $*" >&2; exit 1; }
if [ -e "$out" ] && [ -n "$(ls -A "$out")" ]; then die "$out is not empty"; fi
mkdir -p "$out/bin" "$out/scripts" "$out/configs" "$out/wheels"
for b in clip-train clip-tool dist-selftest; do
    [ -x "$bins/$b" ] || die "no $bins/$b"
    # Symbols and debug info are most of an unstripped binary; the host needs neither.
    strip --strip-all -o "$out/bin/$b" "$bins/$b"
done
cp "$root/scripts/gpu-check.sh" "$root/scripts/bench-model.py" "$root/scripts/openclip-train.py" \
    "$root/scripts/openclip_tiny.py" "$root/scripts/gpu-check-parity.py" "$out/scripts/"
cp "$root"/configs/clip_tiny*.json "$root/configs/vit_tiny_test.json" "$out/configs/"
for w in open_clip_torch ftfy wcwidth webdataset braceexpand; do
    found=$(ls "$wheels"/"$w"-*.whl 2>/dev/null | head -1) || true
    [ -n "$found" ] || die "no $w wheel in $wheels"
    cp "$found" "$out/wheels/"
done
bytes=$(find "$out" -type f -printf '%s\n' | awk '{ s += $1 } END { print s }')
[ "$bytes" -le $((limit_mib * 1024 * 1024)) ] ||
    die "$out is $((bytes / 1024 / 1024)) MiB, over the $limit_mib MiB the GPU host allows (64 MiB, with room)"
echo "pack-gpu-check: $out: $bytes bytes ($((bytes / 1024 / 1024)) MiB of $limit_mib); on the host: bash $out/scripts/gpu-check.sh $out REPORT_DIR"
