#!/usr/bin/env python3
"""torchvision twin of `spatial_reasoning::augment::bench_pipeline`.

The same CPU work per batch, in one process: for each of `batch` random uint8 images of
size×size, `views` SPEC §2 views (RandomResizedCrop → flip p=.5 → ColorJitter(.8,.8,.8,.2) p=.8
→ RandomGrayscale p=.2 → Normalize) and `patches` SPEC §3 zoom patches (non-overlapping p×p
region, p = round(0.375·size), resized bilinear to size×size → ColorJitter p=.8 →
RandomGrayscale p=.2 → Normalize), written into preallocated float32 NCHW tensors in slot-major
order. Prints items (views + patches) per second.

Backends: `tensor` runs torchvision's tensor transforms on float CHW tensors (the semantics the
Rust code reproduces); `pil` runs them on PIL images then ToTensor + Normalize, as the RR and SR
authors did. Threads: torch.set_num_threads(--threads) (intra-op parallelism; the per-image loop
is Python, as in a DataLoader worker).

    /work/venv/bin/python benches/pipeline_twin.py --size 32 --threads 1 --backend tensor
"""
import argparse
import random
import time

import numpy as np
import torch
import torchvision.transforms as T
import torchvision.transforms.functional as F
from PIL import Image

MEAN, STD = [0.49, 0.48, 0.45], [0.25, 0.24, 0.26]


def sample_patches(size, p, count, rng):
    """Non-overlapping top-left corners: |drow| >= p or |dcol| >= p for every pair."""
    while True:
        out = []
        for _ in range(1000):
            r, c = rng.randint(0, size - p), rng.randint(0, size - p)
            if all(abs(r - r2) >= p or abs(c - c2) >= p for r2, c2 in out):
                out.append((r, c))
                if len(out) == count:
                    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=32)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--views", type=int, default=4)
    ap.add_argument("--patches", type=int, default=2)
    ap.add_argument("--secs", type=float, default=5.0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--backend", choices=["tensor", "pil"], default="tensor")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    rng = random.Random(0)
    s, p = a.size, round(0.375 * a.size)
    u8 = [np.random.default_rng(i).integers(0, 256, (s, s, 3), dtype=np.uint8) for i in range(a.batch)]
    if a.backend == "pil":
        src = [Image.fromarray(x) for x in u8]
        tail = [T.ToTensor(), T.Normalize(MEAN, STD)]
    else:
        src = [torch.from_numpy(x).permute(2, 0, 1).float().div(255) for x in u8]
        tail = [T.Normalize(MEAN, STD)]
    colour = [T.RandomApply([T.ColorJitter(0.8, 0.8, 0.8, 0.2)], p=0.8), T.RandomGrayscale(p=0.2)]
    view_tf = T.Compose([T.RandomResizedCrop(s, scale=(0.08, 1.0), antialias=True), T.RandomHorizontalFlip()]
                        + colour + tail)
    patch_tf = T.Compose(colour + tail)
    views = torch.empty(a.views * a.batch, 3, s, s)
    patches = torch.empty(a.patches * a.batch, 3, s, s)

    def zoom(img, r, c):
        if a.backend == "pil":
            return img.crop((c, r, c + p, r + p)).resize((s, s), Image.BILINEAR)
        return F.resized_crop(img, r, c, p, p, [s, s], antialias=True)

    def run():
        for b, img in enumerate(src):
            for k in range(a.views):
                views[k * a.batch + b] = view_tf(img)
            if a.patches:
                for j, (r, c) in enumerate(sample_patches(s, p, a.patches, rng)):
                    patches[j * a.batch + b] = patch_tf(zoom(img, r, c))

    run()  # warm-up
    n, start = 0, time.perf_counter()
    while True:
        run()
        n += 1
        el = time.perf_counter() - start
        if el >= a.secs:
            break
    rate = n * a.batch * (a.views + a.patches) / el
    print(f"torchvision {a.backend} size {s} batch {a.batch} views {a.views} patches {a.patches} "
          f"threads {a.threads}: {rate:.0f} items/s")


if __name__ == "__main__":
    main()
