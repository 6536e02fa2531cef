#!/usr/bin/env python3
"""OpenCLIP's own trainer (`python -m open_clip_train.main ARGS`) with the project's tiny test
model registered, for side-by-side runs (scripts/bench-train.sh)."""
import sys
from pathlib import Path


ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
import openclip_tiny  # noqa: E402,F401  (the tiny test models)

from open_clip_train.main import main  # noqa: E402

main(sys.argv[1:])
