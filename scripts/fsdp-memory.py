#!/usr/bin/env python3
"""Training state per rank with `--fsdp`, on paper, for docs/scaling.md: OpenCLIP's model built
on the meta device (no memory), cut into clip-train's FSDP units (every residual block, ViT block
or ConvNeXt block one unit; the rest of each tower its root unit; logit_scale / logit_bias whole
on every rank), each unit's parameters of one dtype a flat vector padded to R * ceil(N / R).

    fsdp-memory.py MODEL [MODEL ...] [--ranks 8,64,512] [--shard-size N]

Per rank: parameters, gradients and AdamW's two moments in fp32 (16 bytes per parameter whole, as
DDP holds them), and the largest unit gathered (fp32; bf16 under amp_bf16).
"""
import argparse
import math
import re
from collections import OrderedDict

import torch
import open_clip

BLOCK = re.compile(r"^(.*\.(?:resblocks|blocks)\.\d+)\.")


def units(model):
    """OrderedDict unit name -> list of numels (the replicated scalars under None)."""
    out = OrderedDict()
    for name, p in model.named_parameters():
        if name in ("logit_scale", "logit_bias"):
            key = None
        else:
            m = BLOCK.match(name)
            key = m.group(1) if m else ("visual" if name.startswith("visual.") else "text")
        out.setdefault(key, []).append(p.numel())
    return out


def per_rank(us, ranks):
    """(whole model params, sharded bytes per rank of params+grads+moments, largest unit fp32
    and bf16 bytes gathered)."""
    total = sum(sum(v) for v in us.values())
    sharded = 0
    largest = 0
    for key, numels in us.items():
        n = sum(numels)
        if key is None:
            sharded += n
            continue
        s = math.ceil(n / ranks)
        sharded += s
        largest = max(largest, s * ranks)
    return total, 16 * sharded, 4 * largest, 2 * largest


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("models", nargs="+")
    ap.add_argument("--ranks", default="8,64,512")
    ap.add_argument("--shard-size", type=int, default=None)
    a = ap.parse_args()
    gb = 1e9
    for name in a.models:
        with torch.device("meta"):
            model = open_clip.create_model(name, device="meta")
        us = units(model)
        blocks = sum(1 for k in us if k and k not in ("visual", "text"))
        total = sum(sum(v) for v in us.values())
        print(f"{name}: {total:,} parameters, {blocks} block units + 2 roots; DDP {16 * total / gb:.2f} GB per rank")
        for r in [int(x) for x in a.ranks.split(",")]:
            shard = a.shard_size or r
            _, state, big32, big16 = per_rank(us, shard)
            print(f"  {r:4d} ranks (shards over {shard}): state {state / gb:.3f} GB + largest unit "
                  f"{big32 / gb:.3f} GB fp32 / {big16 / gb:.3f} GB bf16 = {(state + big32) / gb:.3f} GB")


if __name__ == "__main__":
    main()
