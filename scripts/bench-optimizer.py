#!/usr/bin/env python3
"""Seconds per torch.optim.AdamW(fused=True) step over an OpenCLIP model's parameters, with
OpenCLIP's two groups (main.py's rule) and gradients equal to the weights, as
`clip-tool bench-optimizer` sets them; the last line is JSON. Run by scripts/bench-optimizer.sh.

    bench-optimizer.py --model convnext_large_d_320 [--steps 3]
"""
import argparse
import json
import sys
import time
from pathlib import Path

import torch
import open_clip

sys.path.insert(0, str(Path(__file__).resolve().parent))
import openclip_tiny  # noqa: E402,F401  (the tiny test models)

ap = argparse.ArgumentParser()
ap.add_argument("--model", required=True)
ap.add_argument("--steps", type=int, default=3)
args = ap.parse_args()
torch.manual_seed(0)
model = open_clip.create_model(args.model)
named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
exclude = lambda n, p: p.ndim < 2 or "bn" in n or "ln" in n or "bias" in n or "logit_scale" in n
opt = torch.optim.AdamW([{"params": [p for n, p in named if exclude(n, p)], "weight_decay": 0.0},
                         {"params": [p for n, p in named if not exclude(n, p)], "weight_decay": 0.2}],
                        lr=1e-4, betas=(0.9, 0.98), eps=1e-6, fused=True)
for _, p in named:
    p.grad = p.detach().clone()
opt.step()
t0 = time.perf_counter()
for _ in range(args.steps):
    opt.step()
step_s = (time.perf_counter() - t0) / args.steps
print(json.dumps({"impl": "torch fused", "model": args.model, "tensors": len(named),
                  "elements": sum(p.numel() for _, p in named), "device": "cpu", "step_s": step_s}))
