#!/usr/bin/env python3
"""Feature parity for scripts/gpu-check.sh: OpenCLIP's model and clip-train's on the same loaded
weights and inputs (`clip-tool embed`), on one device, TF32 off.

    gpu-check-parity.py prepare MODEL DIR          writes DIR/weights.safetensors (OpenCLIP's
                                                   init, seed 0) and DIR/inputs.safetensors
    gpu-check-parity.py compare MODEL DIR DEVICE OURS.safetensors
                                                   prints one JSON line: max |ours - OpenCLIP| /
                                                   max |OpenCLIP| per tower (fp32)
"""
import json
import sys
from pathlib import Path

import torch
import open_clip
from safetensors.torch import load_file, save_file

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
import openclip_tiny  # noqa: E402,F401  (the tiny test models)

torch.backends.cuda.matmul.allow_tf32 = False
torch.backends.cudnn.allow_tf32 = False
mode, model_name, out = sys.argv[1], sys.argv[2], Path(sys.argv[3])
torch.manual_seed(0)
model = open_clip.create_model(model_name)
model.eval()
if mode == "prepare":
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, out / "weights.safetensors")
    size = model.visual.image_size
    size = size if isinstance(size, (tuple, list)) else (size, size)
    g = torch.Generator().manual_seed(1)
    save_file({"image": torch.randn(4, 3, *size, generator=g),
               "text": torch.randint(1, model.vocab_size - 1, (4, model.context_length), generator=g)},
              out / "inputs.safetensors")
    sys.exit(0)
device, ours = sys.argv[4], load_file(sys.argv[5])
inputs = load_file(out / "inputs.safetensors")
model.load_state_dict(load_file(out / "weights.safetensors"))
model.to(device)
with torch.no_grad():
    ref = {"image_features": model.encode_image(inputs["image"].to(device)),
           "text_features": model.encode_text(inputs["text"].to(device))}
rel = {k: float((ours[k].to(device).float() - r.float()).abs().max() / r.float().abs().max())
       for k, r in ref.items()}
print(json.dumps(rel))
