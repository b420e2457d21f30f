#!/usr/bin/env python3
"""Learnability of the synthetic "parts" dataset (PyTorch, CPU): a random-init Conv-4 with a linear
probe, a linear probe on raw pixels, and a supervised Conv-4 (horizontal flips) on the same data.

First write the data (10,000 train / 2,000 test, seed 0):
  SYNTHETIC_DUMP_DIR=/tmp cargo test --release --test data_synthetic dump -- --ignored
then: python3 data-scripts/synthetic_probe.py [/tmp]
"""
import sys
import numpy as np, torch, torch.nn as nn, time
torch.set_num_threads(1); torch.manual_seed(0)
DIR = sys.argv[1] if len(sys.argv) > 1 else "/tmp"
def load(s, n):
    x = np.fromfile(f'{DIR}/syn_{s}_x.bin', np.uint8).reshape(n, 32, 32, 3)
    y = np.fromfile(f'{DIR}/syn_{s}_y.bin', np.uint8).astype(np.int64)
    x = torch.tensor(x).permute(0, 3, 1, 2).float() / 255
    return x, torch.tensor(y)
xtr, ytr = load('train', 10000); xte, yte = load('test', 2000)
m, s = xtr.mean((0, 2, 3), keepdim=True), xtr.std((0, 2, 3), keepdim=True)
xtr, xte = (xtr - m) / s, (xte - m) / s
def conv4():
    layers, c = [], 3
    for i, o in enumerate([8, 16, 32, 64]):
        layers += [nn.Conv2d(c, o, 3, padding=1, bias=False), nn.BatchNorm2d(o), nn.ReLU()]
        layers += [nn.AvgPool2d(2) if i < 3 else nn.AdaptiveAvgPool2d(1)]
        c = o
    return nn.Sequential(*layers, nn.Flatten())
def feats(net, x):
    net.eval()
    with torch.no_grad():
        return torch.cat([net(x[i:i + 500]) for i in range(0, len(x), 500)])
def probe(ftr, fte, epochs=100):
    mu, sd = ftr.mean(0), ftr.std(0) + 1e-6
    ftr, fte = (ftr - mu) / sd, (fte - mu) / sd
    lin = nn.Linear(ftr.shape[1], 10); opt = torch.optim.Adam(lin.parameters(), 1e-3)
    for e in range(epochs):
        perm = torch.randperm(len(ftr))
        for i in range(0, len(ftr), 128):
            b = perm[i:i + 128]; opt.zero_grad()
            nn.functional.cross_entropy(lin(ftr[b]), ytr[b]).backward(); opt.step()
    return (lin(fte).argmax(1) == yte).float().mean().item()
t = time.time()
rnd = conv4()
print('random conv4 + linear probe:', probe(feats(rnd, xtr), feats(rnd, xte)), f'{time.time()-t:.0f}s', flush=True)
print('linear probe on raw pixels:', probe(xtr.flatten(1), xte.flatten(1), epochs=30), flush=True)
net = conv4(); head = nn.Linear(64, 10)
opt = torch.optim.Adam(list(net.parameters()) + list(head.parameters()), 1e-3)
for ep in range(15):
    net.train(); perm = torch.randperm(len(xtr))
    for i in range(0, len(xtr), 128):
        b = perm[i:i + 128]; xb = xtr[b]
        flip = torch.rand(len(b)) < 0.5
        xb = torch.where(flip[:, None, None, None], xb.flip(3), xb)
        opt.zero_grad(); nn.functional.cross_entropy(head(net(xb)), ytr[b]).backward(); opt.step()
    net.eval()
    with torch.no_grad():
        acc = (head(feats(net, xte)).argmax(1) == yte).float().mean().item()
    print(f'supervised conv4 epoch {ep+1}: test acc {acc:.3f}', f'{time.time()-t:.0f}s', flush=True)
