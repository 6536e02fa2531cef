#!/usr/bin/env python3
"""LAION-like webdataset shards for benchmarks: natural photographs (scikit-image's bundled
sample images), each sample randomly cropped, rotated, colour-jittered and scaled so the longest
side is 384 px, saved as JPEG (~40 KB), with a random caption.

usage: make-test-shards.py OUT_DIR [--shards 8] [--samples-per-shard 500] [--seed 0] [--max-size 384]
needs: pillow, numpy, scikit-image (pip install scikit-image)
"""
import argparse
import io
import json
import os
import random
import tarfile

import numpy as np
from PIL import Image, ImageEnhance

PHOTOS = ["astronaut", "coffee", "chelsea", "rocket", "camera", "coins", "moon", "hubble_deep_field",
          "immunohistochemistry", "horse", "brick", "grass", "gravel", "clock", "text", "page", "cell"]
WORDS = ("a photo of the small large red green blue old new bright dark cat dog astronaut rocket cup "
         "coffee table street city river mountain sky night day close-up view with and on in at").split()


def photos():
    from skimage import data
    out = []
    for name in PHOTOS:
        try:
            a = getattr(data, name)()
        except Exception:  # some need a download; skip them
            continue
        if a.dtype != np.uint8:
            a = (255 * (a.astype(np.float64) / max(1, a.max()))).astype(np.uint8)
        if a.ndim == 2:
            a = np.stack([a] * 3, -1)
        out.append(Image.fromarray(a[..., :3]).convert("RGB"))
    if not out:
        raise SystemExit("no scikit-image sample photographs available")
    return out


def sample(rng, srcs, max_size):
    img = rng.choice(srcs)
    w, h = img.size
    area = w * h * rng.uniform(0.25, 1.0)
    ar = np.exp(rng.uniform(np.log(0.6), np.log(1.7)))
    cw, ch = min(w, int(round((area * ar) ** 0.5))), min(h, int(round((area / ar) ** 0.5)))
    x, y = rng.randint(0, w - cw), rng.randint(0, h - ch)
    img = img.crop((x, y, x + cw, y + ch))
    if rng.random() < 0.5:
        img = img.transpose(Image.FLIP_LEFT_RIGHT)
    img = img.rotate(rng.uniform(-12, 12), resample=Image.BICUBIC, expand=False)
    img = ImageEnhance.Color(img).enhance(rng.uniform(0.6, 1.4))
    img = ImageEnhance.Brightness(img).enhance(rng.uniform(0.8, 1.2))
    s = max_size / max(img.size)
    img = img.resize((max(1, round(img.width * s)), max(1, round(img.height * s))), Image.LANCZOS)
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=rng.randint(93, 97))
    caption = " ".join(rng.choice(WORDS) for _ in range(rng.randint(5, 20)))
    return buf.getvalue(), caption, img.size


def add(tf, name, data):
    ti = tarfile.TarInfo(name)
    ti.size = len(data)
    ti.mtime = 0
    tf.addfile(ti, io.BytesIO(data))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--shards", type=int, default=8)
    ap.add_argument("--samples-per-shard", type=int, default=500)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--max-size", type=int, default=384)
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    rng = random.Random(a.seed)
    srcs = photos()
    sizes, total_bytes, n = {}, 0, 0
    for s in range(a.shards):
        name = f"{s:05d}.tar"
        with tarfile.open(os.path.join(a.out, name + ".tmp"), "w", format=tarfile.GNU_FORMAT) as tf:
            for i in range(a.samples_per_shard):
                key = f"{s * a.samples_per_shard + i:09d}"
                jpg, cap, (w, h) = sample(rng, srcs, a.max_size)
                add(tf, key + ".jpg", jpg)
                add(tf, key + ".txt", cap.encode())
                add(tf, key + ".json", json.dumps({"key": key, "caption": cap, "width": w, "height": h}).encode())
                total_bytes += len(jpg)
                n += 1
        os.replace(os.path.join(a.out, name + ".tmp"), os.path.join(a.out, name))
        sizes[name] = a.samples_per_shard
    with open(os.path.join(a.out, "sizes.json"), "w") as f:
        json.dump(sizes, f)
    print(f"{a.shards} shards, {n} samples, mean JPEG {total_bytes / max(1, n) / 1024:.1f} KiB, in {a.out}")


if __name__ == "__main__":
    main()
