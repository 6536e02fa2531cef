#!/usr/bin/env python3
"""OpenCLIP's zero-shot ImageNet evaluation (open_clip_train.zero_shot) of given weights on an
ImageFolder, for crates/clip-train/tests/it/zeroshot.rs: writes OUT.safetensors with the classifier
`[D, 1000]`, every image's logits `[N, 1000]` (ImageFolder order) and `top1` / `top5` as
`zero_shot_eval` returns them.

    zeroshot-goldens.py MODEL WEIGHTS.safetensors FOLDER OUT.safetensors
"""
import sys
from pathlib import Path
from types import SimpleNamespace

import torch
import open_clip
from open_clip import IMAGENET_CLASSNAMES, OPENAI_IMAGENET_TEMPLATES, build_zero_shot_classifier
import open_clip_train.zero_shot as zs
from safetensors.torch import load_file, save_file
from torchvision import datasets

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
import openclip_tiny  # noqa: E402,F401  (the tiny test models)

model_name, weights, folder, out = sys.argv[1:5]
model, _, preprocess_val = open_clip.create_model_and_transforms(model_name)
sd = {k: v for k, v in load_file(weights).items() if not k.startswith("optimizer.")}
model.load_state_dict(sd, strict=True)
model.eval()
tokenizer = open_clip.get_tokenizer(model_name)

# OpenCLIP 3.3.0's `accuracy` calls float() on a 1-element numpy array, which numpy >= 2 refuses
# ("only 0-dimensional arrays can be converted"); the same count, as a 0-d value.
def accuracy(output, target, topk=(1,)):
    pred = output.topk(max(topk), 1, True, True)[1].t()
    correct = pred.eq(target.view(1, -1).expand_as(pred))
    return [float(correct[:k].reshape(-1).float().sum()) for k in topk]


zs.accuracy = accuracy

dataset = datasets.ImageFolder(folder, transform=preprocess_val)
loader = torch.utils.data.DataLoader(dataset, batch_size=4, num_workers=0)
args = SimpleNamespace(device="cpu", precision="fp32", batch_size=4)
with torch.no_grad():
    # zero_shot_eval's two halves: the classifier (built once here), then `run` over the folder.
    classifier = build_zero_shot_classifier(model, tokenizer, IMAGENET_CLASSNAMES,
                                            OPENAI_IMAGENET_TEMPLATES, num_classes_per_batch=10)
    top1, top5 = zs.run(model, classifier, loader, args)
    metrics = {"imagenet-zeroshot-val-top1": top1, "imagenet-zeroshot-val-top5": top5}
    images = torch.stack([dataset[i][0] for i in range(len(dataset))])
    logits = 100.0 * model.encode_image(images, normalize=True) @ classifier
save_file({
    "classifier": classifier.contiguous(),
    "logits": logits.contiguous(),
    "top1": torch.tensor([metrics["imagenet-zeroshot-val-top1"]], dtype=torch.float64),
    "top5": torch.tensor([metrics["imagenet-zeroshot-val-top5"]], dtype=torch.float64),
}, out)
print(metrics)
