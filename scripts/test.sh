#!/usr/bin/env bash
# The whole test suite, from a fresh machine with Rust and Python: installs what it lacks
# (idempotently: the pinned venv, the s3s-fs server the S3 tests start themselves, a local slurm),
# and runs every test. The OpenCLIP goldens the tests compare with are made by Python on the first
# run and cached in .deps/golden/ by the hash of what makes them (tests/support/golden.rs), the
# large convnext_large_d_320 one (≈2.8 GB) included. `.ci/run` calls exactly this.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

bash scripts/setup.sh
export CLIP_PYTHON="$root/.venv/bin/python"

# The real S3-compatible server (s3s-fs 0.14.1) the data tests start and stop themselves.
bash scripts/start-s3.sh --install-only

# A real single-node slurm (Debian's slurm-wlm, munge; needs root) for the srun/sbatch tests.
bash scripts/start-slurm.sh

# No function in crates/*/src over 120 lines (the unpickler's opcode loop excepted).
python3 scripts/check-fn-length.py

cargo build --workspace --all-targets
# Every process the tests start carries CLIP_TEST_RUN (inherited, down to the servers and ranks
# they start); whatever still holds it after the tests outlived its test: listed, killed, and
# the suite fails (scripts/check-leftovers.py). The shared slurm and S3 started above lack it.
run_id="$$-$(date +%s)"
status=0
CLIP_TEST_RUN=$run_id cargo test --workspace --no-fail-fast -- --test-threads=2 || status=$?
python3 scripts/check-leftovers.py "$run_id" || status=1
exit $status
