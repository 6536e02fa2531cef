#!/usr/bin/env python3
"""Writes OpenCLIP + timm parity goldens for clip-model's timm ViT trunk
(crates/clip-model/tests/it/timm_vit.rs), in make-model-goldens.py's layout (weights, inputs,
eval-mode features, loss gradients), one NAME.safetensors and NAME.json (the config) per case:

    make-timm-vit-goldens.py OUT_DIR [CASE ...]      # default: the cases without a HF text tower
    make-timm-vit-goldens.py OUT_DIR --resample      # OUT_DIR/resample.safetensors (below)

A case is an OpenCLIP config (a built-in name, or a dict written to NAME.json) and, for a
shallow copy, how many blocks to keep in each tower: OpenCLIP builds the model, the blocks past
that are dropped before anything runs (same widths, fewer blocks), and the metadata says so
(`trunk_depth`, `text_layers`) for the Rust side to build the same. The loss is OpenCLIP's
SigLipLoss when the model has `logit_bias`, else ClipLoss, so every parameter gets a gradient.

--resample: timm's `resample_abs_pos_embed` on random position embeddings (`in.NAME`,
`out.NAME`), for prefix tokens kept or not and grids grown, shrunk and made non-square.
"""
import argparse
import copy
import importlib.util
import json
import os
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
import open_clip
import timm
from open_clip.loss import ClipLoss, SigLipLoss
from timm.layers import resample_abs_pos_embed
from safetensors.torch import save_file

ROOT = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location('make_model_goldens', ROOT / 'scripts/make-model-goldens.py')
mmg = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(mmg)

TINY_TEXT = json.loads((ROOT / 'configs/vit_tiny_test.json').read_text())['text_cfg']


def tiny_text_config(vision):
    return {'embed_dim': 64, 'vision_cfg': vision, 'text_cfg': copy.deepcopy(TINY_TEXT)}


# name: (config: a built-in name or a dict, image size, trunk blocks kept, text blocks kept, batch)
CASES = {
    # Register tokens (4), no_embed_class, average pooling with fc_norm, OpenCLIP's linear head
    # over a reset classifier.
    'timm_vit_reg4_gap': (tiny_text_config({
        'image_size': 256, 'timm_model_name': 'vit_medium_patch16_reg4_gap_256',
        'timm_pool': '', 'timm_proj': 'linear'}), 2, None, 4),
    # OpenCLIP's own config: average pooling with the final norm before it, LayerScale, no qkv
    # bias (3 of its blocks, 1 text block).
    'vit_medium_patch16_gap_256': ('vit_medium_patch16_gap_256', 3, 1, 2),
    # Class token, pre-norm, QuickGELU, token pooling, the trunk's classifier as the projection.
    'timm_vit_clip_token': (tiny_text_config({
        'image_size': 224, 'timm_model_name': 'vit_base_patch32_clip_quickgelu_224',
        'timm_pool': 'token', 'timm_proj': None}), 2, None, 4),
    # SigLIP 2's SO400M/16 trunk (gelu_tanh, the MAP head kept through reset_classifier) under a
    # linear head, 2 of its blocks.
    'timm_vit_so400m16_map': (tiny_text_config({
        'image_size': 256, 'timm_model_name': 'vit_so400m_patch16_siglip_256',
        'timm_pool': 'map', 'timm_proj': 'linear'}), 2, None, 2),
}
# The SigLIP models (their text tower is OpenCLIP's own with SigLIP's options, under `text.`).
SIGLIP_CASES = {
    'ViT-B-16-SigLIP2': ('ViT-B-16-SigLIP2', None, None, 2),
    'ViT-SO400M-14-SigLIP-384-shallow': ('ViT-SO400M-14-SigLIP-384', 2, 2, 2),
}


def truncate(model, trunk_depth, text_layers):
    if trunk_depth is not None:
        model.visual.trunk.blocks = model.visual.trunk.blocks[:trunk_depth]
    if text_layers is not None:
        text = model.text if hasattr(model, 'text') else model
        text.transformer.resblocks = text.transformer.resblocks[:text_layers]


def make(name, cfg, trunk_depth, text_layers, batch, out_dir, seed=0):
    t0 = time.time()
    if isinstance(cfg, dict):
        path = out_dir / f'{name}.json'
        path.write_text(json.dumps(cfg, indent=4))
        open_clip.add_model_config(path)
        model_name = name
    else:
        model_name = cfg
        cfg = open_clip.get_model_config(cfg)
        (out_dir / f'{name}.json').write_text(json.dumps(cfg, indent=4))
    torch.manual_seed(seed)
    model = open_clip.create_model(model_name, pretrained=None, precision='fp32', device='cpu')
    truncate(model, trunk_depth, text_layers)
    model.eval()
    sd = model.state_dict()
    order = list(sd.keys())
    named = dict(model.named_parameters())
    assert set(named) == set(order), set(named) ^ set(order)
    size = model.visual.image_size
    gen = torch.Generator().manual_seed(seed + 1)
    image = torch.randn(batch, 3, size[0], size[1], generator=gen)
    text = mmg.make_text(batch, model.context_length, model.vocab_size, gen)
    img = model.encode_image(image)
    txt = model.encode_text(text)
    fi, ft = F.normalize(img, dim=-1), F.normalize(txt, dim=-1)
    if model.logit_bias is not None:
        loss = SigLipLoss()(fi, ft, model.logit_scale.exp(), model.logit_bias)
    else:
        loss = ClipLoss()(fi, ft, model.logit_scale.exp())
    loss.backward()
    tensors = {k: v.detach().contiguous() for k, v in sd.items()}
    for k in order:
        g = named[k].grad
        assert g is not None, k
        tensors['grad.' + k] = g.detach().contiguous()
    tensors.update(image=image, text=text, image_features=img.detach().contiguous(),
                   text_features=txt.detach().contiguous(), loss=loss.detach().reshape(1))
    meta = {
        'model': model_name, 'open_clip': open_clip.__version__, 'timm': timm.__version__,
        'torch': torch.__version__, 'seed': str(seed), 'batch': str(batch),
        'param_count': str(sum(p.numel() for p in model.parameters())),
        'param_order': json.dumps(order),
        'trunk_depth': json.dumps(trunk_depth), 'text_layers': json.dumps(text_layers),
    }
    save_file(tensors, str(out_dir / f'{name}.safetensors'), metadata=meta)
    print(f'{name}: {len(order)} tensors, loss {loss.item():.6f}, {time.time() - t0:.1f}s', flush=True)


RESAMPLE = {
    # name: (prefix tokens, old grid, new grid)
    'grow_prefix5': (5, (24, 24), (32, 32)),
    'shrink_prefix0': (0, (27, 27), (16, 16)),
    'rect_prefix1': (1, (14, 14), (12, 20)),
}


def resample(out_dir):
    torch.manual_seed(7)
    tensors = {}
    for name, (prefix, old, new) in RESAMPLE.items():
        pos = torch.randn(1, prefix + old[0] * old[1], 48)
        tensors[f'in.{name}'] = pos
        tensors[f'out.{name}'] = resample_abs_pos_embed(
            pos, new_size=list(new), old_size=list(old), num_prefix_tokens=prefix).contiguous()
    meta = {'cases': json.dumps({k: [p, list(o), list(n)] for k, (p, o, n) in RESAMPLE.items()})}
    save_file(tensors, str(out_dir / 'resample.safetensors'), metadata=meta)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('out_dir', type=Path)
    ap.add_argument('cases', nargs='*')
    ap.add_argument('--resample', action='store_true')
    args = ap.parse_args()
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    args.out_dir.mkdir(parents=True, exist_ok=True)
    if args.resample:
        resample(args.out_dir)
        return
    every = {**CASES, **SIGLIP_CASES}
    for name in args.cases or list(CASES):
        make(name, *every[name], out_dir=args.out_dir)


if __name__ == '__main__':
    sys.exit(main())
