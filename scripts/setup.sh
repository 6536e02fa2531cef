#!/usr/bin/env bash
# Installs what building and testing clip-train needs, idempotently: the project venv (.venv)
# with the pinned torch / OpenCLIP from scripts/requirements.txt and the tools of
# scripts/requirements-tools.txt, and .deps/libtorch pointing at the venv's torch/ folder, which
# .cargo/config.toml names as LIBTORCH.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
stamp=.venv/.requirements
wanted=$(cat scripts/requirements.txt scripts/requirements-tools.txt)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$wanted" ]; then
    [ -x .venv/bin/python ] || "$PY" -m venv .venv
    .venv/bin/pip install --quiet --disable-pip-version-check -r scripts/requirements.txt \
        -r scripts/requirements-tools.txt
    printf '%s' "$wanted" > "$stamp"
fi
torch_dir=$(.venv/bin/python -c 'import os, torch; print(os.path.dirname(torch.__file__))')
mkdir -p .deps
ln -sfn "$torch_dir" .deps/libtorch
