#!/usr/bin/env python3
"""OpenCLIP's side of scripts/bench-model.sh and gpu-check.sh: seconds per forward+backward step
(ClipLoss, train mode) on random inputs and peak memory, printed as one JSON line like
`clip-tool bench-model` and measured as it does: the wall clock over the steps after one
warm-up, from a device sync to a device sync; on CUDA the caching allocator's peaks
(`torch.cuda.max_memory_allocated` / `max_memory_reserved`, from the warm-up on).

    bench-model.py --model NAME [--batch-size 2] [--steps 3] [--grad-checkpointing] [--precision fp32|amp_bf16] [--device cpu]
"""
import argparse
import json
import resource
import sys
import time
from pathlib import Path

import torch
import open_clip
from open_clip.loss import ClipLoss

ROOT = Path(__file__).resolve().parent.parent

ap = argparse.ArgumentParser()
ap.add_argument("--model", required=True)
ap.add_argument("--batch-size", type=int, default=2)
ap.add_argument("--steps", type=int, default=3)
ap.add_argument("--device", default="cpu")
ap.add_argument("--grad-checkpointing", action="store_true")
ap.add_argument("--precision", default="fp32", choices=["fp32", "amp_bf16"])
a = ap.parse_args()

if a.model.startswith("clip_tiny"):
    sys.path.insert(0, str(ROOT / "scripts"))
    import openclip_tiny  # noqa: F401  (the tiny test models)

torch.manual_seed(0)
model = open_clip.create_model(a.model, device=a.device)
model.set_grad_checkpointing(a.grad_checkpointing)
model.train()
size = model.visual.image_size if hasattr(model.visual, "image_size") else 224
size = size if isinstance(size, (tuple, list)) else (size, size)
ctx = model.context_length
b = a.batch_size
images = torch.randn(b, 3, *size, device=a.device)
tokens = torch.randint(1, model.vocab_size - 1, (b, ctx), device=a.device)
loss_fn = ClipLoss()


def step():
    model.zero_grad(set_to_none=False)
    with torch.autocast(device_type=a.device.split(":")[0], dtype=torch.bfloat16, enabled=a.precision == "amp_bf16"):
        # A SigLIP model also returns its logit_bias; both sides time ClipLoss alike.
        img, txt, scale = model(images, tokens)[:3]
        loss = loss_fn(img, txt, scale)
    loss.backward()


cuda = a.device.startswith("cuda")
sync = torch.cuda.synchronize if cuda else (lambda: None)
if cuda:
    # OpenCLIP main.py's flags, as clip-tool applies them (cuDNN TF32 is on by default)
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.benchmark = True
    torch.cuda.reset_peak_memory_stats()
step()
sync()
t0 = time.perf_counter()
for _ in range(a.steps):
    step()
sync()
per = (time.perf_counter() - t0) / a.steps
mib = 1024 * 1024
print(json.dumps({"impl": "openclip", "model": a.model, "batch": b, "precision": a.precision,
                  "grad_checkpointing": a.grad_checkpointing, "device": a.device, "step_s": per,
                  "samples_per_s": b / per,
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "peak_gpu_allocated_mb": torch.cuda.max_memory_allocated() / mib if cuda else None,
                  "peak_gpu_reserved_mb": torch.cuda.max_memory_reserved() / mib if cuda else None}))
