#!/usr/bin/env python3
"""OpenCLIP's development branch (4.2.0.dev0, from its source tarball) building its optimizer
for the flags it alone has: layer-wise LR decay per tower, --wd-exclude, --opt nadamw,
--opt-kwargs, --opt-fallback-list. For each case below, on a tiny model from the branch's own
factory: every parameter's group (learning-rate scale, weight decay, Muon fallback flag) as
`open_clip_train.optim.create_optimizer` makes them, and two optimizer steps on seeded
gradients at the learning rates the branch's scheduler gives the groups
(`assign_learning_rate`), for crates/clip-train/tests/it/optim_golden.rs.

    make-optim-dev-goldens.py OUT_DIR SOURCE_TARBALL

OUT_DIR/dev.safetensors: `CASE.init.<key>` (the model's initial weights), `CASE.grad{i}.<key>`,
`CASE.step{i}.<key>` (weights after step i), `CASE.lr_scale.<key>` / `CASE.weight_decay.<key>`
/ `CASE.fallback.<key>` (f64 scalars); OUT_DIR/cases.json: per case, the model, the
command-line flags clip-train is given (the flags the branch's main.py maps onto its
OptimizerCfg) and the values the branch's own parser reads from them.
"""
import json
import os
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LRS = (1e-3, 5e-4)
# The branch's optimizer flags, by their argparse dest.
DEV_DESTS = ("opt", "opt_kwargs", "opt_fallback_list", "text_layer_decay", "image_layer_decay",
             "wd_exclude_patterns", "text_pooler_in_head")
BASE = {"lr": 1e-3, "weight_decay": 0.1}

# (case, model, clip-train flags, the OptimizerCfg fields main.py sets from them)
LAYER_DECAY = dict(image_layer_decay=0.75, text_layer_decay=0.65, wd_exclude_patterns=["*pos_embed*"])
LAYER_DECAY_FLAGS = ["--image-layer-decay", "0.75", "--text-layer-decay", "0.65",
                     "--wd-exclude", "*pos_embed*"]
CASES = [
    ("convnext-layer-decay", "clip_tiny_test", LAYER_DECAY_FLAGS,
     dict(opt="adamw", beta1=0.9, beta2=0.999, eps=1e-8, **LAYER_DECAY)),
    ("vit-layer-decay", "vit_tiny_test", LAYER_DECAY_FLAGS,
     dict(opt="adamw", beta1=0.9, beta2=0.98, eps=1e-6, **LAYER_DECAY)),
    ("vit-wd-exclude-nadamw", "vit_tiny_test",
     ["--opt", "nadamw", "--visual-layer-decay", "0.8", "--wd-exclude", "*token_embedding*",
      "visual.conv1.*", "--text-pooler-own-group"],
     dict(opt="nadamw", beta1=0.9, beta2=0.98, eps=1e-6, image_layer_decay=0.8,
          wd_exclude_patterns=["*token_embedding*", "visual.conv1.*"], pooler_in_head=False)),
    ("convnext-nadamuon-fallback", "clip_tiny_test",
     ["--opt", "timm/nadamuon", "--opt-kwargs", "fallback_lr_scale=0.5", "ns_steps=4",
      "--opt-fallback-list", "*positional_embedding*", "visual.head.*", "--text-layer-decay", "0.7"],
     dict(opt="timm/nadamuon", opt_kwargs=dict(fallback_lr_scale=0.5, ns_steps=4),
          fallback_list=["*positional_embedding*", "visual.head.*"], text_layer_decay=0.7)),
]


def make(out_dir):
    sys.path.insert(0, str(ROOT / "scripts"))
    import torch
    from safetensors.torch import save_file
    import open_clip
    import openclip_tiny  # noqa: F401  (the tiny test models)
    from open_clip_train.optim import OptimizerCfg, create_optimizer
    from open_clip_train.params import parse_args
    from open_clip_train.scheduler import assign_learning_rate
    assert open_clip.__version__.startswith("4.2.0.dev"), open_clip.__version__

    out, flags = {}, {}
    for n, (case, model_name, cli, cfg) in enumerate(CASES):
        torch.manual_seed(n)
        model = open_clip.create_model(model_name)
        named = dict(model.named_parameters())
        for k, v in model.state_dict().items():
            out[f"{case}.init.{k}"] = v.detach().clone().contiguous()
        opt = create_optimizer(model, OptimizerCfg(**BASE, **cfg))
        for g in opt.param_groups:
            for p in g["params"]:
                k = next(k for k, q in named.items() if q is p)
                out[f"{case}.lr_scale.{k}"] = torch.tensor(g.get("lr_scale", 1.0), dtype=torch.float64)
                out[f"{case}.weight_decay.{k}"] = torch.tensor(g["weight_decay"], dtype=torch.float64)
                out[f"{case}.fallback.{k}"] = torch.tensor(float(g.get("use_fallback", False)), dtype=torch.float64)
        gen = torch.Generator().manual_seed(100 + n)
        for i, lr in enumerate(LRS, 1):
            opt.zero_grad()
            for k, p in named.items():
                p.grad = torch.randn(p.shape, generator=gen) * 1e-2
                out[f"{case}.grad{i}.{k}"] = p.grad.clone()
            assign_learning_rate(opt, lr)
            opt.step()
            for k, p in named.items():
                out[f"{case}.step{i}.{k}"] = p.detach().clone().contiguous()
        # The branch's parser on the same flags (what clip-train --print-params must show).
        args = vars(parse_args(cli + ["--model", model_name]))
        parsed = {k: args[k] for k in DEV_DESTS}
        flags[case] = {"model": model_name, "flags": cli, "parsed": parsed}
    out_dir.mkdir(parents=True, exist_ok=True)
    save_file(out, out_dir / "dev.safetensors")
    (out_dir / "cases.json").write_text(json.dumps(flags, indent=1))


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[3] == "--in-source":
        make(Path(sys.argv[1]))
    else:
        # The branch's source goes first on the path, ahead of the installed OpenCLIP 3.3.0.
        with tempfile.TemporaryDirectory() as tmp:
            with tarfile.open(sys.argv[2]) as t:
                t.extractall(tmp, filter="data")
            env = {"PYTHONPATH": str(Path(tmp) / "src")}
            subprocess.run([sys.executable, __file__, sys.argv[1], sys.argv[2], "--in-source"],
                           check=True, env={**os.environ, **env})
