#!/usr/bin/env python3
"""OpenCLIP's `--val-data` evaluation (open_clip_train.train.evaluate over get_wds_dataset's
validation loader) of given weights, for crates/clip-train/tests/it/val.rs: prints the metrics
dict as JSON (the line OpenCLIP appends to results.jsonl), then a second line: for every rank
metric, the [low, high] it could take if candidates whose logits lie within TIE (1e-4) of the
true pair's were ordered either way. Two implementations' float rounding (the loss agrees to
1e-7) can swap such near-ties, and only those.

    val-goldens.py MODEL WEIGHTS.safetensors SHARDS VAL_NUM_SAMPLES BATCH [WORKERS]

MODEL: a model name, or a config .json (added with open_clip.add_model_config; its tokenizer,
CLIP's or the Hugging Face one it names, is get_tokenizer's).

WORKERS (default 1): the val loader's workers, each reading its own shards (split_by_worker)
and making its own batches.
"""
import json
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import open_clip
import open_clip_train.train as train
from open_clip_train.data import get_wds_dataset
from safetensors.torch import load_file

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
import openclip_tiny  # noqa: E402,F401  (the tiny test models)

TIE = 1e-4
bounds = {}


def tie_bounds(logits):
    """Per direction, the range of each metric over every order of the near-tied candidates:
    a pair's 0-based rank is at least the candidates clearly above it and at most those not
    clearly below it; the metrics are monotone in each rank, so the ends of the range are the
    metrics of those two rank vectors."""
    for name, logit in logits.items():
        truth = logit.diagonal().view(-1, 1)
        low = (logit > truth + TIE).sum(1).numpy()
        high = (logit >= truth - TIE).sum(1).numpy() - 1  # not the pair itself
        ends = {
            "mean_rank": lambda p: p.mean() + 1,
            "median_rank": lambda p: np.floor(np.median(p)) + 1,
            **{f"R@{k}": (lambda k: lambda p: np.mean(p < k))(k) for k in [1, 5, 10]},
        }
        for metric, f in ends.items():
            a, b = float(f(low)), float(f(high))
            bounds[f"{name}_{metric}"] = [min(a, b), max(a, b)]


def get_clip_metrics(image_features, text_features, logit_scale):
    per_image = (logit_scale * image_features @ text_features.t()).detach().cpu()
    tie_bounds({"image_to_text": per_image, "text_to_image": per_image.t()})
    return openclip_get_clip_metrics(image_features, text_features, logit_scale)


openclip_get_clip_metrics = train.get_clip_metrics
train.get_clip_metrics = get_clip_metrics  # what train.evaluate calls

model_name, weights, shards, num_samples, batch = sys.argv[1:6]
if model_name.endswith(".json"):
    open_clip.add_model_config(model_name)
    model_name = Path(model_name).stem
workers = int(sys.argv[6]) if len(sys.argv) > 6 else 1
model, _, preprocess_val = open_clip.create_model_and_transforms(model_name, output_dict=True)
sd = {k: v for k, v in load_file(weights).items() if not k.startswith("optimizer.")}
model.load_state_dict(sd, strict=True)
tokenizer = open_clip.get_tokenizer(model_name)
args = SimpleNamespace(
    val_data=shards, val_num_samples=int(num_samples), batch_size=int(batch), workers=workers,
    world_size=1, rank=0, local_rank=0, seed=0, distributed=False, horovod=False, device="cpu",
    precision="fp32", val_frequency=1, epochs=1, zeroshot_frequency=0, save_logs=False,
    wandb=False, train_data=None, dataset_resampled=False, train_data_upsampling_factors=None,
)
data = {"val": get_wds_dataset(args, preprocess_val, is_train=False, tokenizer=tokenizer)}
metrics = train.evaluate(model, data, 1, args, tb_writer=None, tokenizer=tokenizer)
print(json.dumps({k: float(v) if k not in ("epoch", "num_samples") else v for k, v in metrics.items()}))
print(json.dumps(bounds))
