#!/usr/bin/env python3
"""OpenCLIP's `--val-data` evaluation (open_clip_train.train.evaluate over get_wds_dataset's
validation loader) of given weights, for crates/clip-train/tests/it/val.rs: prints the metrics
dict as JSON (the line OpenCLIP appends to results.jsonl).

    val-goldens.py MODEL WEIGHTS.safetensors SHARDS VAL_NUM_SAMPLES BATCH [WORKERS]

WORKERS (default 1): the val loader's workers, each reading its own shards (split_by_worker)
and making its own batches.
"""
import json
import sys
from pathlib import Path
from types import SimpleNamespace

import open_clip
from open_clip_train.data import get_wds_dataset
from open_clip_train.train import evaluate
from safetensors.torch import load_file

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
import openclip_tiny  # noqa: E402,F401  (the tiny test models)

model_name, weights, shards, num_samples, batch = sys.argv[1:6]
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
metrics = evaluate(model, data, 1, args, tb_writer=None, tokenizer=tokenizer)
print(json.dumps({k: float(v) if k not in ("epoch", "num_samples") else v for k, v in metrics.items()}))
