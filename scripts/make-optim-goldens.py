#!/usr/bin/env python3
"""OpenCLIP 3.3.0's own trainer (`open_clip_train.main.main`) with `--opt timm/NAME`: three
training steps of each optimizer below, from the same weights, on the same three batches, for
crates/clip-train/tests/it/optim_golden.rs.

    make-optim-goldens.py OUT_DIR MODEL WEIGHTS

MODEL is a tiny model (scripts/openclip_tiny.py), WEIGHTS a golden of its layout (the model's
state dict plus a batch `image` / `text`). The trainer runs unchanged but for two things it has
no flag for: its data (`get_data` returns the three batches: the golden batch with the images
rolled by 0, 1 and 2 against the captions) and drop path (set to 0 after the model is made, so
the Rust side's forward is the same without drawing masks). The weights go in as --pretrained.
Every optimizer step is recorded by global step hooks: the gradients it steps on
(`CASE.grad{i}.<key>`, clipped), the weights after it (`CASE.step{i}.<key>`, before the
logit-scale clamp) and, after the last, the optimizer's state tensors
(`CASE.state.<state>.<key>`). OUT_DIR/optim.safetensors holds them all and
OUT_DIR/cases.json, per case, the flags clip-train is run with: OpenCLIP's, less the `--eps`
that only OpenCLIP needs (it crashes without one for these optimizers, clip-train uses timm's
default, which is the value given).
"""
import json
import logging
import sys
import tempfile
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
import openclip_tiny  # noqa: E402,F401  (the tiny test models)
import open_clip  # noqa: E402
import open_clip_train.main as ocm  # noqa: E402
from open_clip_train.data import DataInfo  # noqa: E402

# (case, OpenCLIP's flags, the timm default eps OpenCLIP must be given where it crashes without)
CASES = [
    ("timm-adamw", [], 1e-8),
    ("timm-nadamw", [], 1e-8),
    ("timm-lamb", [], 1e-6),
    ("timm-lambw", [], 1e-6),
    ("timm-lion", [], None),
    ("timm-adafactor", ["--beta1", "0.9", "--beta2", "0.99"], 1e-30),
    ("timm-adafactorbv", [], None),
    ("timm-adoptw", [], 1e-6),
    ("timm-sgd", [], None),
    ("timm-momentum", ["--momentum", "0.8"], None),
    ("timm-muon", [], 1e-7),
    ("timm-adamuon", [], 1e-7),
    ("timm-nadamuon", ["--beta1", "0.85", "--beta2", "0.98"], 1e-7),
]
COMMON = ["--lr", "1e-3", "--warmup", "2", "--lr-scheduler", "cosine", "--wd", "0.1",
          "--grad-clip-norm", "1.0", "--precision", "fp32", "--device", "cpu", "--epochs", "1",
          "--workers", "0", "--log-every-n-steps", "1", "--seed", "0"]
STEPS = 3

out_dir, model_name, weights = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
golden = load_file(weights)
image, text = golden["image"], golden["text"]
batches = [(torch.roll(image, i, 0), text) for i in range(STEPS)]


class Batches:
    """What train_one_epoch reads of a DataLoader."""
    num_batches = STEPS
    num_samples = STEPS * image.shape[0]

    def __iter__(self):
        return iter(batches)


ocm.get_data = lambda args, preprocess_fns, epoch=0, tokenizer=None: {
    "train": DataInfo(dataloader=Batches())}
made = {}
create = ocm.create_model_and_transforms


def create_without_drop_path(*args, **kwargs):
    model, *rest = create(*args, **kwargs)
    for m in model.modules():
        if hasattr(m, "drop_prob"):
            m.drop_prob = 0.0
    made["model"] = model
    return (model, *rest)


ocm.create_model_and_transforms = create_without_drop_path
record = {}
current = {}


def before_step(optimizer, args, kwargs):
    model = made["model"]
    i, case = current["step"] + 1, current["case"]
    for n, p in model.named_parameters():
        if p.grad is not None:
            record[f"{case}.grad{i}.{n}"] = p.grad.detach().clone()


def after_step(optimizer, args, kwargs):
    model = made["model"]
    current["step"] += 1
    i, case = current["step"], current["case"]
    for k, v in model.state_dict().items():
        record[f"{case}.step{i}.{k}"] = v.detach().clone().contiguous()
    if i == STEPS:
        name_of = {id(p): n for n, p in model.named_parameters()}
        for group in optimizer.param_groups:
            for p in group["params"]:
                for key, value in optimizer.state[p].items():
                    if torch.is_tensor(value) and value.dim() > 0:
                        record[f"{case}.state.{key}.{name_of[id(p)]}"] = value.detach().clone()


from torch.optim.optimizer import (  # noqa: E402
    register_optimizer_step_post_hook, register_optimizer_step_pre_hook)

register_optimizer_step_pre_hook(before_step)
register_optimizer_step_post_hook(after_step)
ours = {}
with tempfile.TemporaryDirectory() as tmp:
    keys = open_clip.create_model(model_name).state_dict().keys()
    state = {k: golden[k] for k in keys}
    pretrained = Path(tmp) / "weights.pt"
    torch.save(state, pretrained)
    for case, flags, eps in CASES:
        opt = ["--opt", "timm/" + case.removeprefix("timm-")]
        current.update(case=case, step=0)
        logging.root.handlers.clear()  # main() adds its own each time
        openclip = opt + flags + (["--eps", str(eps)] if eps is not None else [])
        ocm.main(COMMON + openclip + [
            "--model", model_name, "--pretrained", str(pretrained), "--dataset-type", "synthetic",
            "--batch-size", str(image.shape[0]), "--logs", tmp, "--name", case])
        assert current["step"] == STEPS, f"{case}: {current['step']} steps"
        ours[case] = COMMON + opt + flags
out_dir.mkdir(parents=True, exist_ok=True)
save_file(record, out_dir / "optim.safetensors")
(out_dir / "cases.json").write_text(json.dumps(ours, indent=1))
