#!/usr/bin/env python3
"""Feeds OpenCLIP's own argparse parser (open_clip_train.params.parse_args, v3.3.0) and
`clip-train --print-params` the same argument lists and compares every parsed value.

    compare-flags.py PATH/TO/clip-train
    compare-flags.py --openclip

Prints one line per case and exits non-zero on any difference. With `--openclip`, prints only
OpenCLIP's side as JSON ({"ours_only": [...], "cases": [{"argv": [...], "openclip": {...}}]}): the
golden crates/clip-train/tests/it/flags.rs caches and compares `clip-train --print-params` with. The model card's command uses
`--clip-grad-norm`, which OpenCLIP does not know: OpenCLIP gets `--grad-clip-norm` there.
"""
import json
import subprocess
import sys

from open_clip_train.params import parse_args

MODEL_CARD = [
    "--save-frequency", "1", "--name", "convnext_large_320",
    "--pretrained", "/runs/convnext_large_256/epoch_128.pt", "--resume", "latest",
    "--train-data=pipe:aws s3 cp s3://bucket/laion2b/{00000..41407}.tar -",
    "--train-num-samples", "203666042", "--dataset-type", "webdataset",
    "--precision", "amp_bfloat16", "--beta2", "0.98", "--warmup", "2000",
    "--batch-size=256", "--epochs=12", "--dataset-resampled",
    "--aug-cfg", "use_timm=True", "scale=(0.5, 1.0)", "re_prob=0.4",
    "--clip-grad-norm", "5.0", "--lr", "5e-5", "--workers=6",
    "--model", "convnext_large_d_320", "--seed", "0", "--ddp-static-graph",
    "--local-loss", "--gather-with-grad", "--grad-checkpointing", "--report-to", "tensorboard",
]

CASES = [
    [],
    MODEL_CARD,
    ["--model", "ViT-B-32", "--lr", "1e-3", "--wd", "0.1", "--epochs", "3"],
    ["--model", "convnext_base_w", "--eps", "1e-6", "--beta1", "0.8"],
    ["--image-mean", "0.5", "0.5", "0.5", "--image-std", "0.25", "0.25", "0.25",
     "--force-image-size", "224", "--image-interpolation", "bilinear"],
    ["--aug-cfg", "scale=(0.08, 1.0)", "ratio=[0.75, 1.3333]", "re_count=2", "color_jitter=0.4",
     "interpolation=bicubic"],
    ["--aug-cfg"],
    ["--precision", "fp32", "--lr-scheduler", "const-cooldown", "--epochs-cooldown", "2",
     "--lr-cooldown-end", "1e-6", "--lr-cooldown-power", "2.0", "--accum-freq", "4"],
    ["--train-data", "a/{000..009}.tar::b/{0..3}.tar", "--train-data-upsampling-factors", "1::2",
     "--val-data", "v.tar", "--val-num-samples", "1000", "--csv-separator", ",",
     "--delete-previous-checkpoint", "--save-most-recent", "--log-every-n-steps", "10"],
    ["--lock-image", "--lock-image-unlocked-groups", "2", "--lock-text",
     "--lock-text-unlocked-layers", "1", "--seed", "-3", "--device", "cpu",
     "--dist-url", "tcp://host:1234", "--remote-sync", "s3://x/y", "--remote-sync-protocol", "fsspec"],
    ["--batch-s", "32", "--grad-clip", "1.0"],  # unique prefixes, as argparse allows
    # A timm optimizer: the model's default lr, betas and eps are not filled in.
    ["--model", "ViT-B-32", "--opt", "timm/lamb", "--momentum", "0.9", "--eps", "1e-6"],
    # A repeated flag: the last value wins (lists too).
    ["--batch-size", "8", "--lr", "1e-3", "--batch-size", "4", "--aug-cfg", "re_prob=0.1",
     "--aug-cfg", "re_count=2", "--image-mean", "0.1", "0.2", "0.3", "--image-mean", "0", "0", "0"],
]

# clip-train's own flags, and those it takes from OpenCLIP's development branch, which 3.3.0's
# parser lacks (the branch's optimizer flags are compared with its parser by
# scripts/make-optim-dev-goldens.py).
OURS_ONLY = {"save_every_n_steps", "grad_reduce_dtype", "profile_steps", "opt_kwargs",
             "opt_fallback_list", "text_layer_decay", "image_layer_decay", "wd_exclude_patterns",
             "text_pooler_in_head", "fsdp", "fsdp_no_reshard_after_forward", "fsdp_offload_cpu",
             "fsdp_checkpoint", "fsdp_shard_size"}


def openclip(argv):
    argv = ["--grad-clip-norm" if a == "--clip-grad-norm" else a for a in argv]
    return json.loads(json.dumps(vars(parse_args(argv))))


def ours(binary, argv):
    out = subprocess.run([binary, *argv, "--print-params"], capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"clip-train rejected {argv}: {out.stderr.strip()}")
    return json.loads(out.stdout)


def main():
    if sys.argv[1] == "--openclip":
        cases = [{"argv": argv, "openclip": openclip(argv)} for argv in CASES]
        print(json.dumps({"ours_only": sorted(OURS_ONLY), "cases": cases}))
        return
    binary = sys.argv[1]
    failures = 0
    for argv in CASES:
        a, b = openclip(argv), ours(binary, argv)
        diffs = [f"{k}: openclip={a.get(k)!r} clip-train={b.get(k)!r}"
                 for k in sorted(set(a) | (set(b) - OURS_ONLY)) if a.get(k) != b.get(k)]
        missing = sorted(set(a) - set(b))
        label = " ".join(argv)[:70] or "(defaults)"
        if diffs or missing:
            failures += 1
            print(f"DIFF  {label}")
            for d in diffs:
                print(f"      {d}")
        else:
            print(f"same  {label}  ({len(a)} values)")
    print(f"{len(CASES) - failures} passed, {failures} failed")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
