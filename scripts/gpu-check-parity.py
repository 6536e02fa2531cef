#!/usr/bin/env python3
"""Feature parity for scripts/gpu-check.sh: OpenCLIP's model and clip-train's on the same loaded
weights and inputs (`clip-tool embed`), on one device, TF32 off.

    gpu-check-parity.py prepare MODEL DIR          writes DIR/weights.safetensors (OpenCLIP's
                                                   init, seed 0) and DIR/inputs.safetensors
    gpu-check-parity.py compare MODEL DIR DEVICE OURS.safetensors
                                                   prints two JSON lines: max |ours - OpenCLIP| /
                                                   max |OpenCLIP| per tower (fp32), then the same
                                                   with TF32 on for OpenCLIP's side only

The second line is the negative control's: the comparison must then exceed its bound. On a GPU
torch's TF32 flags; on the CPU, which has no TF32, an emulation: OpenCLIP's weights and images
rounded to TF32's 10 explicit mantissa bits (what TF32 does to a matmul's inputs).
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


def tf32(t):
    """`t` (f32) rounded to nearest even at TF32's precision: 10 explicit mantissa bits."""
    bits = t.contiguous().view(torch.int32).to(torch.int64) & 0xFFFFFFFF
    bits = (bits + 0xFFF + ((bits >> 13) & 1)) & 0xFFFFE000
    return torch.where(bits >= 2**31, bits - 2**32, bits).to(torch.int32).view(torch.float32)


def relative_errors():
    with torch.no_grad():
        ref = {"image_features": model.encode_image(inputs["image"].to(device)),
               "text_features": model.encode_text(inputs["text"].to(device))}
    return {k: float((ours[k].to(device).float() - r.float()).abs().max() / r.float().abs().max())
            for k, r in ref.items()}


model.to(device)
print(json.dumps(relative_errors()))
# The negative control: TF32 on OpenCLIP's side only.
if device.startswith("cuda"):
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
else:
    with torch.no_grad():
        for v in model.state_dict().values():
            if v.dtype == torch.float32:
                v.copy_(tf32(v))
    inputs["image"] = tf32(inputs["image"])
print(json.dumps(relative_errors()))
