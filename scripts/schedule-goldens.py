#!/usr/bin/env python3
"""Prints OpenCLIP's learning rates (open_clip_train.scheduler) for the cases
crates/clip-train/tests/it/scheduler.rs checks, as JSON: [{name, base, warmup, total,
cooldown, power, end, lrs}]. The reference run's schedule is among them."""
import json
import torch
from open_clip_train.scheduler import cosine_lr, const_lr, const_lr_cooldown

opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.0)
cases = [
    ("cosine", 5e-5, 2000, 18648, None, 1.0, 0.0),   # the model card: 1554 batches x 12 epochs
    ("cosine", 5e-4, 10, 100, None, 1.0, 0.0),
    ("const", 1e-3, 7, 50, None, 1.0, 0.0),
    ("const-cooldown", 1e-3, 5, 60, 20, 2.0, 1e-5),
    ("const-cooldown", 2e-4, 0, 40, 40, 1.0, 0.0),
]
out = []
for name, base, warmup, total, cooldown, power, end in cases:
    if name == "cosine":
        f = cosine_lr(opt, base, warmup, total)
    elif name == "const":
        f = const_lr(opt, base, warmup, total)
    else:
        f = const_lr_cooldown(opt, base, warmup, total, cooldown, power, end)
    out.append(dict(name=name, base=base, warmup=warmup, total=total, cooldown=cooldown,
                    power=power, end=end, lrs=[f(s) for s in range(total)]))
print(json.dumps(out))
