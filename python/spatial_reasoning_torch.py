"""PyTorch twins of the spatial-reasoning backbones, for weights written by

    spatial-reasoning export --run runs/my-run --out backbone.safetensors

Usage (only `torch` is needed; copy this file next to your code):

    import spatial_reasoning_torch as srt
    model = srt.load("backbone.safetensors")   # the right backbone, strict loading, eval mode
    x = srt.preprocess(images, model)           # uint8 (N, H, W, 3) -> normalised (N, 3, H, W)
    with torch.no_grad():
        features = model(x)                     # (N, 64)

The layouts follow SPEC section 1 and the crate's `src/models/`:
- conv4: four blocks of conv3x3 (no bias, padding 1) -> BatchNorm -> ReLU -> 2x2 average pool,
  widths 8-16-32-64; the last block ends in global average pooling instead of the 2x2 pool.
- resnet8 / resnet32 / resnet56: conv3x3 3->16 -> BN -> ReLU; three stages of 1 / 5 / 9 basic
  blocks at widths 16 / 32 / 64; the first block of stages 2 and 3 has stride 2 and a projection
  shortcut conv1x1 (stride 2, no bias) -> BN; global average pooling.
BatchNorm: epsilon 1e-5, momentum 0.1 (PyTorch's defaults, as the crate). Parameter names are the
crate's (`stem.conv.weight`, `stage2.0.shortcut.bn.running_mean`, `block1.bn.bias`, ...).

`load` reads the metadata the export stored: the backbone name, the input normalisation
(`model.normalize_mean`, `model.normalize_std`, per RGB channel, for inputs in [0, 1]) and the
image side the backbone was trained at (`model.image_size`; any side works thanks to the global
pool). `safetensors.torch.load_file` reads the same file; a reader is included here so that torch
is the only dependency.
"""

import json
import struct

import torch
import torch.nn as nn
import torch.nn.functional as F

FORMAT_TAG = "spatial-reasoning-backbone/1"


class ConvBn(nn.Module):
    """Convolution without bias (padding k // 2), then BatchNorm2d."""

    def __init__(self, cin, cout, k, stride):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, k, stride, k // 2, bias=False)
        self.bn = nn.BatchNorm2d(cout)

    def forward(self, x):
        return self.bn(self.conv(x))


class Conv4(nn.Module):
    def __init__(self):
        super().__init__()
        self.block1 = ConvBn(3, 8, 3, 1)
        self.block2 = ConvBn(8, 16, 3, 1)
        self.block3 = ConvBn(16, 32, 3, 1)
        self.block4 = ConvBn(32, 64, 3, 1)

    def forward(self, x):
        """(N, 3, H, W) -> (N, 64)"""
        for block in (self.block1, self.block2, self.block3):
            x = F.avg_pool2d(F.relu(block(x)), 2)
        return F.relu(self.block4(x)).mean((2, 3))


class BasicBlock(nn.Module):
    """relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x)); the shortcut is the identity, or
    conv1x1 stride 2 -> BN when the block changes the width (then conv1 has stride 2)."""

    def __init__(self, cin, cout):
        super().__init__()
        stride = 1 if cin == cout else 2
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        if cin != cout:
            self.shortcut = ConvBn(cin, cout, 1, 2)

    def forward(self, x):
        y = F.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        s = self.shortcut(x) if hasattr(self, "shortcut") else x
        return F.relu(y + s)


class ResNet(nn.Module):
    """CIFAR ResNet with `n` basic blocks per stage (6n + 2 layers)."""

    def __init__(self, n):
        super().__init__()
        self.stem = ConvBn(3, 16, 3, 1)
        self.stage1 = nn.Sequential(*[BasicBlock(16, 16) for _ in range(n)])
        self.stage2 = nn.Sequential(BasicBlock(16, 32), *[BasicBlock(32, 32) for _ in range(n - 1)])
        self.stage3 = nn.Sequential(BasicBlock(32, 64), *[BasicBlock(64, 64) for _ in range(n - 1)])

    def forward(self, x):
        """(N, 3, H, W) -> (N, 64)"""
        x = F.relu(self.stem(x))
        return self.stage3(self.stage2(self.stage1(x))).mean((2, 3))


BACKBONES = {
    "conv4": Conv4,
    "resnet8": lambda: ResNet(1),
    "resnet32": lambda: ResNet(5),
    "resnet56": lambda: ResNet(9),
}


def build(name):
    """An untrained backbone by name (conv4, resnet8, resnet32, resnet56)."""
    if name not in BACKBONES:
        raise ValueError(f"unknown backbone {name!r} (expected one of {', '.join(BACKBONES)})")
    return BACKBONES[name]()


_DTYPES = {"F32": torch.float32, "F64": torch.float64, "I64": torch.int64, "F16": torch.float16,
           "BF16": torch.bfloat16, "I32": torch.int32}


def read_safetensors(path):
    """All tensors of a safetensors file and its `__metadata__`: (dict name -> tensor, dict)."""
    with open(path, "rb") as f:
        data = f.read()
    if len(data) < 8:
        raise ValueError(f"{path}: not a safetensors file (shorter than 8 bytes)")
    (n,) = struct.unpack("<Q", data[:8])
    if 8 + n > len(data):
        raise ValueError(f"{path}: truncated header ({n} bytes announced, {len(data) - 8} present)")
    header = json.loads(data[8:8 + n])
    meta = header.pop("__metadata__", {}) or {}
    body = memoryview(data)[8 + n:]
    tensors = {}
    for name, info in header.items():
        dtype = _DTYPES.get(info["dtype"])
        if dtype is None:
            raise ValueError(f"{path}: tensor {name} has unsupported dtype {info['dtype']}")
        start, end = info["data_offsets"]
        if not 0 <= start <= end <= len(body):
            raise ValueError(f"{path}: tensor {name} lies outside the file")
        t = torch.frombuffer(bytearray(body[start:end]), dtype=dtype) if end > start \
            else torch.empty(0, dtype=dtype)
        tensors[name] = t.reshape(info["shape"]).clone()
    return tensors, meta


def load(path, map_location="cpu"):
    """The backbone stored in `path` (written by `spatial-reasoning export`), loaded with
    `strict=True`, in eval mode, with `metadata`, `normalize_mean`, `normalize_std` and
    `image_size` attributes."""
    state, meta = read_safetensors(path)
    if meta.get("format") != FORMAT_TAG:
        raise ValueError(f"{path}: not a spatial-reasoning backbone export "
                         f"(format {meta.get('format')!r}, expected {FORMAT_TAG!r})")
    model = build(meta["backbone"])
    model.load_state_dict(state, strict=True)
    model.metadata = dict(meta)
    model.normalize_mean = tuple(json.loads(meta["normalize_mean"]))
    model.normalize_std = tuple(json.loads(meta["normalize_std"]))
    model.image_size = int(meta["image_size"])
    return model.to(map_location).eval()


def preprocess(images, model):
    """uint8 images (N, H, W, 3), RGB -> float (N, 3, H, W), normalised as the backbone was
    trained: (x / 255 - mean) / std per channel."""
    x = torch.as_tensor(images).permute(0, 3, 1, 2).float().div(255.0)
    mean = torch.tensor(model.normalize_mean).view(1, 3, 1, 1)
    std = torch.tensor(model.normalize_std).view(1, 3, 1, 1)
    return (x - mean) / std


if __name__ == "__main__":
    import sys

    for p in sys.argv[1:] or ["backbone.safetensors"]:
        m = load(p)
        n = sum(t.numel() for t in m.parameters())
        print(f"{p}: {m.metadata['backbone']} ({n} parameters), trained {m.metadata['step']} steps on "
              f"{m.metadata['dataset']} at {m.image_size} px; mean {m.normalize_mean} std {m.normalize_std}")
