#!/usr/bin/env python3
"""Writes OpenCLIP parity goldens for OpenCLIP's own VisionTransformer tower
(crates/clip-model/tests/it/vit.rs), in the layout of make-model-goldens.py (weights, inputs,
eval-mode features, ClipLoss gradients; see its docstring).

    make-vit-goldens.py OUT_DIR                 # the tiny variants below, batch 4
    make-vit-goldens.py OUT_DIR --model NAME    # a built-in ViT config at full size, batch 2
    make-vit-goldens.py OUT_DIR --lock-groups   # OUT_DIR/lock_groups.json: for vit_tiny_test and
        # clip_tiny_test, and unlocked_groups in LOCK_GROUPS, the keys that still require grad after
        # model.lock_image_tower(unlocked_groups) (OpenCLIP's --lock-image-unlocked-groups)
    make-vit-goldens.py OUT_DIR --resize        # OUT_DIR/resize.safetensors: a random vit_tiny_test
        # state dict's positional embeddings (`in.visual`, `in.text`) after open_clip's
        # resize_pos_embed / resize_text_pos_embed for the image sizes and context length in RESIZE

Tiny variants: configs/vit_tiny_test.json as is and edited to cover the tower's options, each
written next to its golden as NAME.json (the Rust test loads that same file):
  vit_tiny_test         class-token pooling, exact GELU
  vit_tiny_quickgelu    quick_gelu
  vit_tiny_ls           ls_init_value (0.1, so LayerScale visibly scales the blocks)
  vit_tiny_clipa        CLIPA's tower options (pool_type avg, final_ln_after_pool, no_ln_pre) on a
                        32x48 image, and its text options (no_causal_mask, pool_type last)
  vit_tiny_patchdrop    patch_dropout 0.5: the eval features have none; NAME.train.safetensors holds
                        `image_features_train`, encode_image in train mode right after
                        torch.manual_seed(TRAIN_SEED) (PatchDropout draws from the CPU generator)
  vit_tiny_siglip_text  the SigLIP configs' text tower: CustomTextCLIP (`custom_text`, keys under
                        `text.`), `init_logit_bias` (the gradients are SigLipLoss's), no causal
                        mask, last-token pooling, an nn.Linear text_projection (`proj_bias`),
                        LayerNorm eps 1e-6 and tanh GELU (`norm_kwargs`, `act_kwargs`)
  vit_tiny_siglip_both  the same, with the image tower's `norm_kwargs` (eps 0.1) / `act_kwargs` too
"""
import argparse
import copy
import importlib.util
import json
import os
import sys
from pathlib import Path

import torch
import open_clip
from safetensors.torch import save_file

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / 'scripts'))
import openclip_tiny  # noqa: E402,F401  (registers vit_tiny_test)

_spec = importlib.util.spec_from_file_location('make_model_goldens', ROOT / 'scripts/make-model-goldens.py')
mmg = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(mmg)

TRAIN_SEED = 1234
LOCK_GROUPS = [0, 1, 2, 3, 5, 100]
RESIZE = {'48': (48, 32), '24x40': ([24, 40], 32)}   # name: (image_size, context_length)

# The text tower of OpenCLIP's ViT-*-SigLIP2 configs (SigLIP's have no act_kwargs).
BLOCK_KWARGS = {'norm_kwargs': {'eps': 1e-6}, 'act_kwargs': {'approximate': 'tanh'}}
SIGLIP_TOP = {'custom_text': True, 'init_logit_bias': -10}
# The image tower's: an eps large enough that a LayerNorm ignoring it misses the 1e-4 tolerance
# (1e-6 against the default 1e-5 moves the tiny model's features by less).
VISION_KWARGS = {'norm_kwargs': {'eps': 0.1}, 'act_kwargs': {'approximate': 'tanh'}}
SIGLIP_TEXT = {'no_causal_mask': True, 'pool_type': 'last', 'proj_bias': True, **BLOCK_KWARGS}

VARIANTS = {
    'vit_tiny_test': ({}, {}, {}),
    'vit_tiny_quickgelu': ({'quick_gelu': True}, {}, {}),
    'vit_tiny_ls': ({}, {'ls_init_value': 0.1}, {}),
    'vit_tiny_clipa': ({}, {'pool_type': 'avg', 'final_ln_after_pool': True, 'no_ln_pre': True,
                            'image_size': [32, 48]},
                       {'no_causal_mask': True, 'pool_type': 'last'}),
    'vit_tiny_patchdrop': ({}, {'patch_dropout': 0.5}, {}),
    'vit_tiny_siglip_text': (SIGLIP_TOP, {}, SIGLIP_TEXT),
    'vit_tiny_siglip_both': (SIGLIP_TOP, VISION_KWARGS, SIGLIP_TEXT),
}


def tiny_variants(out_dir):
    base = json.loads((ROOT / 'configs/vit_tiny_test.json').read_text())
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, (top, vision, text) in VARIANTS.items():
        cfg = copy.deepcopy(base)
        cfg.update(top)
        cfg['vision_cfg'].update(vision)
        cfg['text_cfg'].update(text)
        path = out_dir / f'{name}.json'
        path.write_text(json.dumps(cfg, indent=4))
        open_clip.add_model_config(path)
        mmg.make(name, out_dir / f'{name}.safetensors', batch=4)
        if vision.get('patch_dropout'):
            train_features(name, out_dir)


def train_features(name, out_dir):
    """encode_image in train mode (patch dropout on) on the golden's weights and images."""
    from safetensors.torch import load_file
    g = load_file(out_dir / f'{name}.safetensors')
    model = open_clip.create_model(name, pretrained=None, precision='fp32', device='cpu')
    model.load_state_dict({k: g[k] for k in model.state_dict()}, strict=True)
    model.train()
    torch.manual_seed(TRAIN_SEED)
    with torch.no_grad():
        feats = model.encode_image(g['image'])
    save_file({'image_features_train': feats.contiguous()}, str(out_dir / f'{name}.train.safetensors'),
              metadata={'seed': str(TRAIN_SEED)})


def lock_groups(out_dir):
    out = {}
    for name in ('vit_tiny_test', 'clip_tiny_test'):
        for n in LOCK_GROUPS:
            model = open_clip.create_model(name, pretrained=None, precision='fp32', device='cpu')
            model.lock_image_tower(unlocked_groups=n)
            out[f'{name}:{n}'] = [k for k, p in model.named_parameters() if p.requires_grad]
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / 'lock_groups.json').write_text(json.dumps(out, indent=1))


def resize(out_dir):
    from open_clip.model import resize_pos_embed, resize_text_pos_embed
    torch.manual_seed(0)
    src = open_clip.create_model('vit_tiny_test', pretrained=None, precision='fp32', device='cpu').state_dict()
    out = {'in.visual': src['visual.positional_embedding'], 'in.text': src['positional_embedding']}
    for name, (size, ctx) in RESIZE.items():
        model = open_clip.create_model('vit_tiny_test', pretrained=None, force_image_size=size,
                                       force_context_length=ctx)
        sd = dict(src)
        resize_pos_embed(sd, model)
        resize_text_pos_embed(sd, model)
        out[f'{name}.visual'] = sd['visual.positional_embedding']
        out[f'{name}.text'] = sd['positional_embedding']
        model.load_state_dict(sd, strict=True)
    out_dir.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in out.items()}, str(out_dir / 'resize.safetensors'))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('out_dir', type=Path)
    ap.add_argument('--model', help='a built-in ViT config at full size (batch 2)')
    ap.add_argument('--lock-groups', action='store_true', help='lock_image_tower groups')
    ap.add_argument('--resize', action='store_true', help='positional embedding resizing')
    args = ap.parse_args()
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    if args.resize:
        resize(args.out_dir)
    elif args.lock_groups:
        lock_groups(args.out_dir)
    elif args.model:
        open_clip.add_model_config(ROOT / 'configs' / f'{args.model}.json')
        mmg.make(args.model, args.out_dir / f'{args.model}.safetensors', batch=2)
    else:
        tiny_variants(args.out_dir)


if __name__ == '__main__':
    sys.exit(main())
