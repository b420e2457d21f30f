#!/usr/bin/env python3
"""PyTorch twin of one spatial-reasoning (SR) pretraining step, written from ../shared/SPEC.md, to
time against `spatial-reasoning bench --pretrain` (the crate's whole training step).

Per step (SPEC §2-3): B source images, K views and P patches each, all B·(K+P) items through the
backbone in ONE pass (shared BatchNorm statistics); pairs of view slots and of patch slots with
roll-shifted negatives (B·K(K−1) + B·P(P−1) pairs, half positive); the relation head
Linear(2F → 256) → BatchNorm1d(256) → LeakyReLU(0.01) → Linear(256 → 3) on every pair;
loss = BCE(logit, same image) + α·MSE((Δrow, Δcol), target) with the `reference` target policy
(positive patch pairs: their normalised offset; positive view pairs (0, 0); negatives (1, 1); every
pair weighted 1); Adam lr 1e-3 over backbone and head. The loss is read back every step (as the
crate's loop does for its metrics).

Inputs are N(0, 1) items made once on the host and copied to the device every step (the crate
copies its host-augmented batch every step); `--data device` keeps them on the device instead.
There is no augmentation here: the crate's augmentation runs on host threads ahead of the GPU and
is measured by its data-wait fraction. Patch positions (for the distance targets) are fixed random
non-overlapping-in-expectation draws; they only change target values.

    python benches/sr_twin.py --device cuda --batch 128 --views 4 --patches 3 --patch-size 24 \\
        --size 64 --steps 10 --warmup 3 --json
"""
import argparse
import json
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

from torch_twin import build, profile_rows

FEATURES = 64
HIDDEN = 256


class RelationHead(nn.Module):
    def __init__(self, out=3):
        super().__init__()
        self.l1 = nn.Linear(2 * FEATURES, HIDDEN)
        self.bn = nn.BatchNorm1d(HIDDEN)
        self.l2 = nn.Linear(HIDDEN, out)

    def forward(self, x):
        return self.l2(F.leaky_relu(self.bn(self.l1(x)), 0.01))


def pair_index(batch, slots, base):
    """Slot-major items; positives (i·B+b, j·B+b), then negatives shifted by s (src/method/pairs.rs)."""
    left, right, pos, slot = [], [], [], []
    nl, nr, ns = [], [], []
    shift = 1
    for i in range(slots):
        for j in range(i + 1, slots):
            for b in range(batch):
                left.append(base + i * batch + b)
                right.append(base + j * batch + b)
                slot.append((i, j))
                nl.append(base + i * batch + b)
                nr.append(base + j * batch + (b + batch - shift) % batch)
                ns.append((i, j))
            shift += 1
            if shift >= batch:
                shift = 1
    n = len(left)
    return left + nl, right + nr, [1.0] * n + [0.0] * n, slot + ns


def targets(batch, views, patches, size, patch, gen):
    """Pair indices, same/different targets and (Δrow, Δcol) targets with weights (reference)."""
    vl, vr, vs, _ = pair_index(batch, views, 0)
    pl, pr, ps, pslots = pair_index(batch, patches, views * batch)
    rows = torch.randint(0, size - patch + 1, (patches, batch), generator=gen).tolist()
    cols = torch.randint(0, size - patch + 1, (patches, batch), generator=gen).tolist()
    denom = float(max(size - patch, 1))
    offsets = []
    for same in vs:
        offsets.append((0.0, 0.0) if same else (1.0, 1.0))
    for k, same in enumerate(ps):
        if same:
            b = pl[k] % batch
            qi, qj = pslots[k]
            offsets.append(((rows[qi][b] - rows[qj][b]) / denom, (cols[qi][b] - cols[qj][b]) / denom))
        else:
            offsets.append((1.0, 1.0))
    return vl + pl, vr + pr, vs + ps, offsets


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--backbone", default="resnet32", choices=["conv4", "resnet8", "resnet32", "resnet56"])
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--views", type=int, default=4)
    p.add_argument("--patches", type=int, default=3)
    p.add_argument("--patch-size", type=int, default=24)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--alpha", type=float, default=1.0)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--math", default="fp32", choices=["fp32", "default"])
    p.add_argument("--data", default="host", choices=["host", "device"])
    p.add_argument("--profile", action="store_true")
    p.add_argument("--json", action="store_true")
    a = p.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    dev = torch.device(a.device)
    if a.device == "cuda" and a.math == "fp32":
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    backbone = build(a.backbone).to(dev)
    head = RelationHead().to(dev)
    params = list(backbone.parameters()) + list(head.parameters())
    opt = torch.optim.Adam(params, lr=1e-3)
    items = a.batch * (a.views + a.patches)
    gen = torch.Generator().manual_seed(0)
    left, right, same, offsets = targets(a.batch, a.views, a.patches, a.size, a.patch_size, gen)
    left = torch.tensor(left, device=dev)
    right = torch.tensor(right, device=dev)
    same = torch.tensor(same, device=dev)
    offsets = torch.tensor(offsets, device=dev)
    weight = torch.ones_like(offsets)
    x_host = torch.randn(items, 3, a.size, a.size)
    x_dev = x_host.to(dev) if a.data == "device" else None
    sync = torch.cuda.synchronize if a.device == "cuda" else (lambda: None)
    elapsed, losses = 0.0, []
    prof = None
    for step in range(a.warmup + a.steps):
        if step == a.warmup and a.profile and a.device == "cuda":
            prof = torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA])
            prof.__enter__()
        t = time.perf_counter()
        x = x_dev if x_dev is not None else x_host.to(dev)
        backbone.train()
        head.train()
        z = backbone(x)
        out = head(torch.cat([z[left], z[right]], dim=1))
        relation = F.binary_cross_entropy_with_logits(out[:, 2], same)
        distance = ((out[:, :2] - offsets) ** 2 * weight).sum() / weight.sum().clamp(min=1.0)
        loss = relation + a.alpha * distance
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.item())
        sync()
        if step >= a.warmup:
            elapsed += time.perf_counter() - t
    ips = a.batch * a.steps / elapsed
    out = {"impl": "torch", "bench": "pretrain", "device": a.device, "backbone": a.backbone,
           "batch": a.batch, "views": a.views, "patches": a.patches, "patch_size": a.patch_size,
           "size": a.size, "steps": a.steps, "img_per_s": ips, "pairs": int(left.numel()),
           "data": a.data, "first_loss": losses[0], "last_loss": losses[-1],
           "threads": torch.get_num_threads(), "torch": torch.__version__}
    if a.device == "cuda":
        out.update({"math": "fp32" if a.math == "fp32" else "tf32",
                    "peak_gpu_mib": torch.cuda.max_memory_allocated() / 2**20,
                    "peak_gpu_reserved_mib": torch.cuda.max_memory_reserved() / 2**20,
                    "cudnn": torch.backends.cudnn.version()})
    if prof is not None:
        prof.__exit__(None, None, None)
        out["profile"] = profile_rows(prof, a.steps)
    if a.json:
        print(json.dumps(out))
    else:
        print(f"SR step {a.backbone} B {a.batch} K {a.views} P {a.patches} p {a.patch_size} size {a.size} "
              f"{a.device}: {ips:.1f} source img/s, loss {losses[0]:.4f} -> {losses[-1]:.4f}"
              + (f", peak {out['peak_gpu_mib']:.0f} MiB" if a.device == "cuda" else ""))


if __name__ == "__main__":
    main()
