#!/usr/bin/env python3
"""PyTorch twin of `spatial-reasoning bench`: the same backbone (SPEC §1), the same step and the
same options and output, so the two can be compared on one machine.

Train step: forward with batch statistics, loss = mean(features**2), backward, Adam(lr 1e-3)
update. Infer step: eval-mode forward under torch.no_grad(). Images are N(0, 1), fixed.

    /work/venv/bin/python benches/torch_twin.py --backbone resnet32 --batch 64 --steps 10 \
        --threads 2 --mode train --size 32 --json
"""
import argparse
import json
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


class ConvBn(nn.Sequential):
    def __init__(self, cin, cout, k, stride):
        super().__init__(nn.Conv2d(cin, cout, k, stride, k // 2, bias=False), nn.BatchNorm2d(cout))


class Conv4(nn.Module):
    def __init__(self):
        super().__init__()
        w = [3, 8, 16, 32, 64]
        self.blocks = nn.ModuleList(ConvBn(w[i], w[i + 1], 3, 1) for i in range(4))

    def forward(self, x):
        for i, b in enumerate(self.blocks):
            x = F.relu(b(x))
            x = F.avg_pool2d(x, 2) if i < 3 else x.mean((2, 3))
        return x


class Basic(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = ConvBn(cin, cout, 1, stride) if stride != 1 or cin != cout else None

    def forward(self, x):
        y = F.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return F.relu(y + (x if self.shortcut is None else self.shortcut(x)))


class ResNet(nn.Module):
    def __init__(self, n):
        super().__init__()
        self.stem = ConvBn(3, 16, 3, 1)
        layers, cin = [], 16
        for i, w in enumerate([16, 32, 64]):
            for j in range(n):
                layers.append(Basic(cin, w, 2 if (i > 0 and j == 0) else 1))
                cin = w
        self.layers = nn.Sequential(*layers)

    def forward(self, x):
        return self.layers(F.relu(self.stem(x))).mean((2, 3))


def build(name):
    m = {"conv4": Conv4, "resnet8": lambda: ResNet(1), "resnet32": lambda: ResNet(5), "resnet56": lambda: ResNet(9)}[name]()
    for mod in m.modules():
        if isinstance(mod, nn.Conv2d):
            nn.init.kaiming_normal_(mod.weight, mode="fan_out", nonlinearity="relu")
    return m


def profile_rows(prof, steps, top=25):
    """The top CUDA kernels of a torch.profiler run: milliseconds and launches per step."""
    def dev_us(e):  # device_time_total in torch >= 2.4, cuda_time_total before
        return getattr(e, "device_time_total", None) or getattr(e, "cuda_time_total", 0)
    events = sorted(prof.key_averages(), key=lambda e: -dev_us(e))[:top]
    return [{"op": e.key, "ms_per_step": dev_us(e) / 1e3 / steps, "calls_per_step": e.count / steps}
            for e in events if dev_us(e) > 0]


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--backbone", default="resnet32", choices=["conv4", "resnet8", "resnet32", "resnet56"])
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--mode", default="train", choices=["train", "infer"])
    p.add_argument("--size", type=int, default=32)
    p.add_argument("--json", action="store_true")
    # cuda: the twin of `spatial-reasoning bench` built with `--features cuda`.
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    # cuda math: fp32 = TF32 off everywhere (the twin of our default); default = PyTorch's defaults
    # as users run them (cuDNN convolutions may use TF32, matmuls not: the twin of our --tf32).
    p.add_argument("--math", default="fp32", choices=["fp32", "default"])
    # cuda: cudnn.benchmark = True (autotuned convolutions; PyTorch's default is False).
    p.add_argument("--cudnn-benchmark", action="store_true")
    # cuda: print where the timed steps' GPU time goes (torch.profiler, top CUDA kernels).
    p.add_argument("--profile", action="store_true")
    # bf16: autocast to bfloat16 (oneDNN's bf16 convolutions, f32 weights and optimiser), the
    # PyTorch counterpart of `spatial-reasoning bench --bf16`.
    p.add_argument("--bf16", action="store_true")
    a = p.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    if a.device == "cuda":
        if a.math == "fp32":
            torch.backends.cuda.matmul.allow_tf32 = False
            torch.backends.cudnn.allow_tf32 = False
        torch.backends.cudnn.benchmark = a.cudnn_benchmark
    model = build(a.backbone).to(a.device)
    n_params = sum(p.numel() for p in model.parameters())
    x = torch.randn(a.batch, 3, a.size, a.size).to(a.device)
    sync = torch.cuda.synchronize if a.device == "cuda" else (lambda: None)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    elapsed = 0.0
    prof = None
    for step in range(a.warmup + a.steps):
        if step == a.warmup and a.profile and a.device == "cuda":
            prof = torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA])
            prof.__enter__()
        t = time.perf_counter()
        if a.mode == "train":
            model.train()
            with torch.autocast(a.device, dtype=torch.bfloat16, enabled=a.bf16):
                loss = model(x).float().square().mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        else:
            model.eval()
            with torch.no_grad(), torch.autocast(a.device, dtype=torch.bfloat16, enabled=a.bf16):
                model(x)
        sync()  # CUDA runs the step asynchronously
        if step >= a.warmup:
            elapsed += time.perf_counter() - t
    ips = a.batch * a.steps / elapsed
    extra = {}
    if a.device == "cuda":
        extra = {"math": "fp32" if a.math == "fp32" else "tf32", "cudnn_benchmark": a.cudnn_benchmark,
                 "peak_gpu_mib": torch.cuda.max_memory_allocated() / 2**20,
                 "peak_gpu_reserved_mib": torch.cuda.max_memory_reserved() / 2**20,
                 "torch": torch.__version__, "cudnn": torch.backends.cudnn.version()}
    if prof is not None:
        prof.__exit__(None, None, None)
        extra["profile"] = profile_rows(prof, a.steps)
    if a.json:
        print(json.dumps({"impl": "torch", "device": a.device, "backbone": a.backbone, "batch": a.batch, "mode": a.mode,
                          "threads": torch.get_num_threads(), "size": a.size, "steps": a.steps,
                          "img_per_s": ips, "params": n_params,
                          "precision": "bf16" if a.bf16 else "f32", **extra}))
    else:
        print(f"{a.backbone} {a.mode} batch {a.batch} size {a.size} threads {torch.get_num_threads()}"
              f"{' bf16' if a.bf16 else ''}: {ips:.1f} img/s (torch {torch.__version__}, {n_params} params)")


if __name__ == "__main__":
    main()
