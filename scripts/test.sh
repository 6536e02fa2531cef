#!/usr/bin/env bash
# The whole test suite, from a fresh machine with Rust and Python: installs what it lacks
# (idempotently: the pinned venv, the s3s-fs server the S3 tests start themselves, a local slurm),
# generates the large OpenCLIP goldens, and runs every test. `.ci/run` calls exactly this.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

bash scripts/setup.sh
export CLIP_PYTHON="$root/.venv/bin/python"

# The real S3-compatible server (s3s-fs 0.14.1) the data tests start and stop themselves.
bash scripts/start-s3.sh --install-only

# A real single-node slurm (Debian's slurm-wlm, munge; needs root) for the srun/sbatch tests.
bash scripts/start-slurm.sh

# OpenCLIP's own outputs for convnext_large_d_320 (≈2.8 GB): generated, never committed.
golden="$root/.deps/golden"
if [ ! -s "$golden/convnext_large_d_320.safetensors" ]; then
    "$CLIP_PYTHON" scripts/make-model-goldens.py "$golden" --only-large
fi
export CLIP_LARGE_GOLDEN="$golden/convnext_large_d_320.safetensors"

cargo build --workspace --all-targets
cargo test --workspace --no-fail-fast -- --test-threads=2
