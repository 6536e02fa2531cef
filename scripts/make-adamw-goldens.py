#!/usr/bin/env python3
"""torch.optim.AdamW(fused=True) with OpenCLIP's two parameter groups (main.py's rule) on the
tiny test model's parameters: ten steps, each on seeded random gradients clipped as train.py
clips them (`clip_grad_norm_(params, CLIP, norm_type=2.0)`), at a changing learning rate. The
gradients alternate between two sizes so that some steps clip and some do not. Writes
OUT.safetensors with the initial parameters (`init.<name>`), each step's gradients
(`grad{i}.<name>`), the norms clip_grad_norm_ returned (`grad_norm{i}`), the learning rates
(`lr`) and the parameters and moments after the last step (`final.<name>`, `exp_avg.<name>`,
`exp_avg_sq.<name>`), for crates/clip-train/tests/it/optimizer.rs.

    make-adamw-goldens.py OUT.safetensors
"""
import sys
from pathlib import Path

import torch
import open_clip
from safetensors.torch import load_file, save_file

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
import openclip_tiny  # noqa: E402,F401  (the tiny test models)

STEPS = 10
WD, BETAS, EPS, CLIP = 0.2, (0.9, 0.98), 1e-6, 1.0
LR = [1e-3 * (i + 1) / STEPS for i in range(STEPS)]
GRAD_STD = (1e-2, 1e-3)  # total norms ~6 (clipped to 1) and ~0.6 (left alone)

torch.manual_seed(0)
model = open_clip.create_model("clip_tiny_test")
g = load_file(ROOT / "tests/golden/model/clip_tiny_test.safetensors")
model.load_state_dict({k: g[k] if k in g else v for k, v in model.state_dict().items()})
named = list(model.named_parameters())
# main.py's groups.
exclude = lambda n, p: p.ndim < 2 or "bn" in n or "ln" in n or "bias" in n or "logit_scale" in n
gain_or_bias = [p for n, p in named if exclude(n, p) and p.requires_grad]
rest = [p for n, p in named if not exclude(n, p) and p.requires_grad]
opt = torch.optim.AdamW([{"params": gain_or_bias, "weight_decay": 0.0},
                         {"params": rest, "weight_decay": WD}],
                        lr=LR[0], betas=BETAS, eps=EPS, fused=True)
out = {f"init.{n}": p.detach().clone() for n, p in named}
out["lr"] = torch.tensor(LR, dtype=torch.float64)
gen = torch.Generator().manual_seed(1)
for i in range(1, STEPS + 1):
    opt.zero_grad()
    for n, p in named:
        p.grad = torch.randn(p.shape, generator=gen) * GRAD_STD[i % 2]
        out[f"grad{i}.{n}"] = p.grad.clone()
    norm = torch.nn.utils.clip_grad_norm_(model.parameters(), CLIP, norm_type=2.0)
    out[f"grad_norm{i}"] = norm.reshape(1).to(torch.float64)
    for group in opt.param_groups:
        group["lr"] = LR[i - 1]
    opt.step()
for n, p in named:
    out[f"final.{n}"] = p.detach().clone()
    out[f"exp_avg.{n}"] = opt.state[p]["exp_avg"].clone()
    out[f"exp_avg_sq.{n}"] = opt.state[p]["exp_avg_sq"].clone()
    assert opt.state[p]["step"].item() == STEPS
save_file({k: v.contiguous() for k, v in out.items()}, sys.argv[1])
