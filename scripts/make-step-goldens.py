#!/usr/bin/env python3
"""OpenCLIP's training step, as open_clip_train.main / train.py assemble it, on the tiny test
model: two optimizer steps from the weights and batch of tests/golden/model/clip_tiny_test.safetensors
with logit_scale set above ln(100) (so the clamp acts) and a small --grad-clip-norm (so clipping
acts). Writes OUT.safetensors with the weights after each step (`step1.<key>`, `step2.<key>`)
and the total grad norms, for crates/clip-train/tests/it/step.rs.

    make-step-goldens.py OUT.safetensors [PRECISION [siglip] [MODEL WEIGHTS]]

MODEL and WEIGHTS (a golden of the same layout) default to clip_tiny_test and its committed
golden; scripts/make-vit-goldens.py's vit_tiny_test.safetensors gives the same steps on the tiny
ViT.

PRECISION (fp32 by default) is OpenCLIP's `--precision`: `bf16` / `pure_bf16` build the model in
bf16 (`create_model(precision=…)`, text LayerNorms kept fp32 for `bf16`) and feed bf16 images,
as `--precision bf16` training does; `amp` runs forward and loss under fp16 autocast with
OpenCLIP's GradScaler (scale, unscale before clipping, step, update; the scale after each step is
saved as `scale{i}`).

`siglip` trains as `--siglip` does: the model made as main.py asks the factory for it
(`init_logit_scale=ln 10`, `init_logit_bias=-10`, which keep their initial values here), the loss
from OpenCLIP's `create_loss` (SigLipLoss) called as train.py calls it, on `output_dict` features;
logit_scale is not raised (ln 10 is far from the clamp).
"""
import argparse
import contextlib
import math
import sys
from pathlib import Path

import numpy as np
import torch
import open_clip
from open_clip.factory import create_loss
from open_clip.loss import ClipLoss
from safetensors.torch import load_file, save_file

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
import openclip_tiny  # noqa: E402,F401  (the tiny test models)

LR = (1e-2, 5e-3)          # two scheduler values
WD, BETAS, EPS, CLIP = 0.2, (0.9, 0.98), 1e-6, 0.5
LOGIT_SCALE = 5.0           # above ln(100): the clamp after the step must bring it back

PRECISION = sys.argv[2] if len(sys.argv) > 2 else "fp32"
REST = sys.argv[3:]
SIGLIP = "siglip" in REST
REST = [a for a in REST if a != "siglip"]
MODEL = REST[0] if REST else "clip_tiny_test"
WEIGHTS = REST[1] if len(REST) > 1 else ROOT / "tests/golden/model/clip_tiny_test.safetensors"
g = load_file(WEIGHTS)
# main.py's model_kwargs under --siglip.
siglip_kwargs = dict(init_logit_scale=np.log(10), init_logit_bias=-10, output_dict=True) if SIGLIP else {}
model = open_clip.create_model(MODEL, precision=PRECISION, **siglip_kwargs)
input_dtype = open_clip.get_input_dtype(PRECISION)
scaler = torch.amp.GradScaler("cpu") if PRECISION == "amp" else None
autocast = (lambda: torch.amp.autocast("cpu", dtype=torch.float16)) if PRECISION == "amp" \
    else contextlib.nullcontext
sd = {k: g[k] if k in g else v for k, v in model.state_dict().items()}
if SIGLIP:  # SigLIP's own initial scale and bias
    sd["logit_scale"] = model.logit_scale.detach().clone()
elif PRECISION != "amp":  # under fp16 autocast a scale of e^5 overflows the backward at any loss scale
    sd["logit_scale"] = torch.tensor(LOGIT_SCALE)
# load_state_dict copies into the parameters' own dtypes.
model.load_state_dict(sd, strict=True)
model.train()  # drop path is on in train mode; the golden uses timm_drop_path, so the Rust
               # test gets the same masks only if it draws none: set drop path off here.
for m in model.modules():
    if hasattr(m, "drop_prob"):
        m.drop_prob = 0.0

# OpenCLIP main.py's parameter groups and optimizer.
named = list(model.named_parameters())
exclude = lambda n, p: p.ndim < 2 or "bn" in n or "ln" in n or "bias" in n or "logit_scale" in n
gain_or_bias = [p for n, p in named if exclude(n, p) and p.requires_grad]
rest = [p for n, p in named if not exclude(n, p) and p.requires_grad]
opt = torch.optim.AdamW([{"params": gain_or_bias, "weight_decay": 0.0},
                         {"params": rest, "weight_decay": WD}], lr=LR[0], betas=BETAS, eps=EPS)
if SIGLIP:
    loss_fn = create_loss(argparse.Namespace(
        distill=False, model=MODEL, siglip=True, horovod=False, rank=0, world_size=1,
        loss_dist_impl=None, local_loss=False, gather_with_grad=False))
else:
    loss_fn = ClipLoss()
out = {}
# amp: GradScaler starts at 2^16, which overflows this model's fp16 backward; it skips steps and
# halves the scale until one fits. Six steps show the skips and two real updates.
steps = LR if PRECISION != "amp" else (LR[0],) * 4 + (LR[1],) * 2
for i, lr in enumerate(steps, 1):
    for group in opt.param_groups:
        group["lr"] = lr
    opt.zero_grad()
    with autocast():
        if SIGLIP:  # train.py: loss(**model_out, output_dict=True), summed
            losses = loss_fn(**model(g["image"].to(dtype=input_dtype), g["text"]), output_dict=True)
            loss = sum(losses.values())
        else:
            img, txt, scale = model(g["image"].to(dtype=input_dtype), g["text"])
            loss = loss_fn(img, txt, scale)
    if scaler is None:
        loss.backward()
        norm = torch.nn.utils.clip_grad_norm_(model.parameters(), CLIP, norm_type=2.0)
        opt.step()
    else:  # train.py's order
        scaler.scale(loss).backward()
        scaler.unscale_(opt)
        norm = torch.nn.utils.clip_grad_norm_(model.parameters(), CLIP, norm_type=2.0)
        scaler.step(opt)
        scaler.update()
        out[f"scale{i}"] = torch.tensor([scaler.get_scale()], dtype=torch.float64)
    assert norm > CLIP or (scaler is not None and not norm.isfinite()), f"clipping must act ({norm})"
    with torch.no_grad():
        model.logit_scale.clamp_(0, math.log(100))
    if i == 1 and scaler is None and not SIGLIP:
        assert abs(model.logit_scale.item() - math.log(100)) < 2e-2, "the clamp acted"
    out[f"loss{i}"] = loss.detach().float().reshape(1)
    out[f"grad_norm{i}"] = norm.detach().float().reshape(1)
    for k, v in model.state_dict().items():
        out[f"step{i}.{k}"] = v.detach().clone().contiguous()
save_file(out, sys.argv[1])
