#!/usr/bin/env python3
"""Writes configs/timm_vit_presets.json: every timm model name whose architecture is timm's plain
`VisionTransformer` with options clip-model builds (crates/clip-model/src/timm_vit.rs), with those
options read off the model timm itself constructs, and every other ViT-like name with the reason
it is not built.

    make-timm-vit-presets.py [OUT]     # default: configs/timm_vit_presets.json

Each model is created on the meta device (no memory, no weights) with timm's defaults, as
OpenCLIP's TimmModel creates it before its own arguments (`num_classes`, `global_pool`,
`drop_path_rate`) are applied; clip-model applies those the same way. timm's version is
recorded: the table is timm's registry at that version, and rerunning this script against a
newer timm is how the table follows it.
"""
import json
import sys
from pathlib import Path

import torch
import torch.nn as nn
import timm
from timm.layers import Mlp, PatchEmbed, LayerScale, AttentionPoolLatent
from timm.layers.activations import QuickGELU, GELUTanh, GELU
from timm.models.vision_transformer import VisionTransformer, Block
from timm.layers.attention import Attention

ROOT = Path(__file__).resolve().parent.parent


class Unsupported(Exception):
    pass


def need(cond, why):
    if not cond:
        raise Unsupported(why)


def identity(m):
    return isinstance(m, nn.Identity)


def layer_norm_eps(m, where):
    need(isinstance(m, nn.LayerNorm) and m.elementwise_affine and m.bias is not None,
         f'{where} is {type(m).__name__}, not a LayerNorm with weight and bias')
    return m.eps


def activation(m, where):
    if isinstance(m, QuickGELU):
        return 'quick_gelu'
    if isinstance(m, GELUTanh):
        return 'gelu_tanh'
    if isinstance(m, (nn.GELU, GELU)):
        approx = getattr(m, 'approximate', 'none')
        return 'gelu' if approx == 'none' else 'gelu_tanh'
    raise Unsupported(f'{where} activation {type(m).__name__}')


def mlp(m, where):
    need(type(m) is Mlp, f'{where} is {type(m).__name__}, not timm Mlp')
    need(identity(m.norm), f'{where} has a norm inside')
    need(m.fc1.bias is not None and m.fc2.bias is not None, f'{where} without biases')
    return m.fc1.out_features, activation(m.act, where)


def describe(m, kwargs):
    need(type(m) is VisionTransformer, f'architecture {type(m).__name__}')
    pe = m.patch_embed
    need(type(pe) is PatchEmbed, f'patch embedding {type(pe).__name__}')
    need(identity(pe.norm), 'a norm in the patch embedding')
    need(not pe.dynamic_img_pad, 'dynamic_img_pad')
    need(pe.proj.kernel_size == pe.proj.stride and pe.proj.padding == (0, 0), 'overlapping patches')
    need(m.pos_embed is not None, 'no position embedding')
    need(not m.pool_include_prefix, 'pool_include_prefix')
    need(m.global_pool in ('', 'token', 'avg', 'max', 'avgmax', 'map'), f'global_pool {m.global_pool!r}')
    need(m.num_reg_tokens == 0 or m.reg_token is not None, 'register tokens without parameters')
    b0 = m.blocks[0]
    width = m.embed_dim
    eps = layer_norm_eps(b0.norm1, 'blocks.0.norm1')
    for i, b in enumerate(m.blocks):
        need(type(b) is Block, f'block {type(b).__name__}')
        a = b.attn
        need(type(a) is Attention, f'attention {type(a).__name__}')
        need(identity(a.q_norm) and identity(a.k_norm), 'qk_norm')
        need(identity(a.norm), 'scale_attn_norm')
        need(a.gate is None, 'gated attention')
        need(a.head_dim * a.num_heads == width, 'attention width differs from the embedding')
        need(a.proj.bias is not None, 'attention projection without bias')
        need(a.num_heads == b0.attn.num_heads, 'heads differ between blocks')
        need((a.qkv.bias is None) == (b0.attn.qkv.bias is None), 'qkv bias differs between blocks')
        need(isinstance(b.ls1, LayerScale) == isinstance(b0.ls1, LayerScale), 'layer scale differs')
        for n in ('norm1', 'norm2'):
            need(layer_norm_eps(getattr(b, n), f'blocks.{i}.{n}') == eps, 'norm eps differs')
        need(mlp(b.mlp, f'blocks.{i}.mlp') == mlp(b0.mlp, 'blocks.0.mlp'), 'MLPs differ between blocks')
    hidden, act = mlp(b0.mlp, 'blocks.0.mlp')
    init_values = b0.ls1.init_values if isinstance(b0.ls1, LayerScale) else None
    for n in ('norm_pre', 'norm', 'fc_norm'):
        if not identity(getattr(m, n)):
            need(layer_norm_eps(getattr(m, n), n) == eps, f'{n} eps differs')
    need(identity(m.norm_pre) == (pe.proj.bias is not None), 'patch bias and pre-norm disagree')
    out = dict(
        img_size=list(pe.img_size),
        patch_size=list(pe.patch_size),
        embed_dim=width,
        depth=len(m.blocks),
        num_heads=b0.attn.num_heads,
        mlp_hidden=hidden,
        qkv_bias=b0.attn.qkv.bias is not None,
        init_values=init_values,
        class_token=m.cls_token is not None,
        reg_tokens=m.num_reg_tokens,
        no_embed_class=m.no_embed_class,
        pre_norm=not identity(m.norm_pre),
        # The constructor's arguments, not the modules they made: OpenCLIP may pass another
        # global_pool, and timm then places the final norm by these (`use_fc_norm`).
        final_norm=kwargs.get('final_norm', True),
        fc_norm=kwargs.get('fc_norm'),
        global_pool=m.global_pool,
        dynamic_img_size=m.dynamic_img_size,
        act=act,
        norm_eps=eps,
        num_classes=m.num_classes,
    )
    if m.attn_pool is not None:
        p = m.attn_pool
        need(type(p) is AttentionPoolLatent, f'attention pool {type(p).__name__}')
        need(p.latent_len == 1 and p.latent_dim == width and p.pool == 'token', 'latent query shape')
        need(p.pos_embed is None and identity(p.q_norm), 'attention pool options')
        need(not identity(p.q) and p.q.bias is not None and p.kv.bias is not None, 'attention pool q/kv')
        need(p.mlp is not None, 'attention pool without its MLP')
        pool_hidden, pool_act = mlp(p.mlp, 'attn_pool.mlp')
        # timm builds the pool from the blocks' settings (AttentionPoolLatent(embed_dim,
        # num_heads, mlp_ratio, norm_layer, act_layer)): clip-model derives it the same way.
        need(p.num_heads == b0.attn.num_heads and (pool_hidden, pool_act) == (hidden, act)
             and layer_norm_eps(p.norm, 'attn_pool.norm') == eps, 'attention pool differs from the blocks')
    return out


def main():
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / 'configs/timm_vit_presets.json'
    # What each entry point passes VisionTransformer (its model_args), seen from inside.
    seen = {}
    init = VisionTransformer.__init__

    def recording_init(self, *args, **kwargs):
        seen['kwargs'] = dict(kwargs)
        init(self, *args, **kwargs)

    VisionTransformer.__init__ = recording_init
    models, refused = {}, {}
    names = sorted(set(timm.list_models('vit_*') + timm.list_models('deit*')
                       + timm.list_models('*siglip*') + timm.list_models('vitamin*')
                       + timm.list_models('eva*') + timm.list_models('*_clip_*')))
    for name in names:
        try:
            seen.clear()
            with torch.device('meta'):
                m = timm.create_model(name)
            models[name] = describe(m, seen.get('kwargs', {}))
        except Unsupported as e:
            refused[name] = str(e)
        except Exception as e:  # noqa: BLE001 (a model timm cannot build here is refused too)
            refused[name] = f'timm cannot create it here: {type(e).__name__}'
    table = dict(
        generated_by='scripts/make-timm-vit-presets.py',
        timm_version=timm.__version__,
        models=models,
        refused=refused,
    )
    with open(out, 'w') as f:
        f.write('{\n')
        f.write(f'  "generated_by": {json.dumps(table["generated_by"])},\n')
        f.write(f'  "timm_version": {json.dumps(table["timm_version"])},\n')
        for key in ('models', 'refused'):
            f.write(f'  "{key}": {{\n')
            items = list(table[key].items())
            for i, (k, v) in enumerate(items):
                comma = ',' if i + 1 < len(items) else ''
                f.write(f'    {json.dumps(k)}: {json.dumps(v)}{comma}\n')
            f.write('  }' + (',\n' if key == 'models' else '\n'))
        f.write('}\n')
    print(f'{out}: {len(models)} models built, {len(refused)} refused (timm {timm.__version__})')


if __name__ == '__main__':
    main()
