#!/usr/bin/env python3
"""Writes OpenCLIP parity goldens for crates/clip-model (tests/it/parity.rs).

    make-model-goldens.py OUT_DIR            # tiny config -> OUT_DIR/clip_tiny_test.safetensors (~1.7 MB)
                                             # + OUT_DIR/state_dict_shapes.json (keys/shapes of every
                                             #   built-in config, from meta-device models)
    make-model-goldens.py OUT_DIR --large    # also convnext_large_d_320, batch 2 at 320 px
                                             # -> OUT_DIR/convnext_large_d_320.safetensors (~2.8 GB)

Each file holds, in fp32 on CPU, from open_clip 3.3.0 itself (seeded):
  <param name>        the random-init weights under OpenCLIP state-dict keys
  image, text         inputs ([N,3,H,W] f32, [N,77] i64 with realistic eot positions)
  image_features, text_features   encode_image / encode_text (not normalised), eval mode
  grad.<param name>   d ClipLoss()(normalize(img), normalize(txt), logit_scale.exp()) / d param;
                      for a model with SigLIP's logit_bias (which ClipLoss leaves without a
                      gradient), d SigLipLoss()(…, logit_bias) / d param (a world of one)
  meta.param_order    (i64, the index of each state-dict key in OpenCLIP order; see __metadata__)
The state-dict key order is also stored in the safetensors metadata under "param_order".
"""
import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

import open_clip
import timm
from open_clip.loss import SigLipLoss
from safetensors.torch import save_file

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / 'scripts'))
import openclip_tiny  # noqa: E402,F401  (registers the tiny trunk and configs)


def make_text(n, ctx, vocab, gen):
    """Token rows like the CLIP tokenizer's: sot, random bpe ids, eot (the largest id), zero padding.
    Lengths vary; one row fills the whole context (eot at the last position)."""
    sot, eot = vocab - 2, vocab - 1
    text = torch.zeros(n, ctx, dtype=torch.long)
    lengths = [ctx, 5] + [int(torch.randint(3, ctx, (1,), generator=gen)) for _ in range(max(0, n - 2))]
    for i in range(n):
        length = lengths[i]
        text[i, 0] = sot
        text[i, 1:length - 1] = torch.randint(1, vocab - 2, (length - 2,), generator=gen)
        text[i, length - 1] = eot
    return text


def clip_loss(img, txt, scale):
    logits_per_image = scale * img @ txt.T
    logits_per_text = scale * txt @ img.T
    labels = torch.arange(img.shape[0])
    return (F.cross_entropy(logits_per_image, labels) + F.cross_entropy(logits_per_text, labels)) / 2


def make(name, out_path, batch, seed=0):
    t0 = time.time()
    torch.manual_seed(seed)
    model = open_clip.create_model(name, pretrained=None, precision='fp32', device='cpu')
    model.eval()
    sd = model.state_dict()
    order = list(sd.keys())
    named = dict(model.named_parameters())
    assert set(named) == set(order), (set(named) ^ set(order))
    size = model.visual.image_size
    ctx, vocab = model.context_length, model.vocab_size

    gen = torch.Generator().manual_seed(seed + 1)
    image = torch.randn(batch, 3, size[0], size[1], generator=gen)
    text = make_text(batch, ctx, vocab, gen)
    t1 = time.time()

    img = model.encode_image(image)
    txt = model.encode_text(text)
    img_n, txt_n, scale = F.normalize(img, dim=-1), F.normalize(txt, dim=-1), model.logit_scale.exp()
    if model.logit_bias is None:
        loss = clip_loss(img_n, txt_n, scale)
        # the same as OpenCLIP's own ClipLoss for a world of one
        ref = open_clip.ClipLoss()(img_n, txt_n, scale)
        assert torch.equal(loss, ref)
    else:
        loss = SigLipLoss()(img_n, txt_n, scale, model.logit_bias)
    loss.backward()
    t2 = time.time()

    tensors = {k: v.detach().contiguous() for k, v in sd.items()}
    for k in order:
        g = named[k].grad
        assert g is not None, k
        tensors['grad.' + k] = g.detach().contiguous()
    tensors['image'] = image.contiguous()
    tensors['text'] = text.contiguous()
    tensors['image_features'] = img.detach().contiguous()
    tensors['text_features'] = txt.detach().contiguous()
    tensors['loss'] = loss.detach().reshape(1)
    n_params = sum(p.numel() for p in model.parameters())
    meta = {
        'model': name,
        'open_clip': open_clip.__version__,
        'timm': timm.__version__,
        'torch': torch.__version__,
        'seed': str(seed),
        'batch': str(batch),
        'param_count': str(n_params),
        'param_order': json.dumps(order),
    }
    out_path.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(out_path), metadata=meta)
    t3 = time.time()
    print(f'{name}: {len(order)} tensors, {n_params} parameters, loss {loss.item():.6f}; '
          f'create {t1 - t0:.1f}s, forward+backward {t2 - t1:.1f}s, save {t3 - t2:.1f}s -> {out_path} '
          f'({out_path.stat().st_size / 1e6:.1f} MB)', flush=True)


# Every built-in config: each file in configs/ but the timm ViT preset table.
BUILTIN = sorted(p.stem for p in (ROOT / 'configs').glob('*.json') if p.stem != 'timm_vit_presets')


def write_shapes(out_path):
    """The state-dict keys (in order) and shapes of every built-in config, built on the meta
    device (no memory, no init), with the parameter counts."""
    out = {}
    for name in BUILTIN:
        with torch.device('meta'):
            model = open_clip.create_model(name, pretrained=None, precision='fp32', device='meta')
        sd = model.state_dict()
        out[name] = {
            'param_count': sum(p.numel() for p in model.parameters()),
            'keys': [[k, list(v.shape)] for k, v in sd.items()],
        }
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps(out, separators=(',', ':')))
    print(f'state-dict shapes of {len(out)} configs -> {out_path} ({out_path.stat().st_size / 1e3:.0f} kB)')


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('out_dir', type=Path)
    ap.add_argument('--large', action='store_true', help='also write convnext_large_d_320 (batch 2, 320 px, ~2.8 GB)')
    ap.add_argument('--only-large', action='store_true', help='write only convnext_large_d_320')
    args = ap.parse_args()
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    if not args.only_large:
        write_shapes(args.out_dir / 'state_dict_shapes.json')
        make('clip_tiny_test', args.out_dir / 'clip_tiny_test.safetensors', batch=4)
    if args.large or args.only_large:
        make('convnext_large_d_320', args.out_dir / 'convnext_large_d_320.safetensors', batch=2)


if __name__ == '__main__':
    sys.exit(main())
