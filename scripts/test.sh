#!/usr/bin/env bash
# The whole test suite, from a fresh machine with Rust and Python: installs what it lacks
# (idempotently), starts the real services the tests use, generates the large OpenCLIP goldens,
# runs every test, and stops the services again. `.ci/run` calls exactly this.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

bash scripts/setup.sh
export CLIP_PYTHON="$root/.venv/bin/python"

# A real S3-compatible server (s3s-fs) for the data tests; stopped on exit.
if [ -x scripts/start-s3.sh ]; then
    trap 'bash scripts/stop-s3.sh >/dev/null 2>&1 || true' EXIT
    bash scripts/start-s3.sh
fi

# OpenCLIP's own outputs for convnext_large_d_320 (≈2.8 GB): generated, never committed.
golden="$root/.deps/golden"
if [ ! -s "$golden/convnext_large_d_320.safetensors" ]; then
    "$CLIP_PYTHON" scripts/make-model-goldens.py "$golden" --large
fi
export CLIP_LARGE_GOLDEN="$golden/convnext_large_d_320.safetensors"

cargo build --workspace --all-targets
cargo test --workspace -- --test-threads=2
