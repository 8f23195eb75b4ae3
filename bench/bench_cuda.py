#!/usr/bin/env python3
"""PyTorch side of bench/run-cuda.sh, on the same GPU as bench_cuda.c and the same weights (written
by bench_vit.py write): the CLIP vision tower's forward (images/s) and one TaCA training step
(samples/s: frozen tower with an adapter after every block, projector, TaCA loss, backward,
torch.optim.AdamW), as bench_train.py does on the CPU.

  bench_cuda.py --arch ViT-L-14 --weights W.safetensors [--device cuda:0] [--math f32|tf32|bf16]
                [--batch 64] [--train-batch 32] [--iters 10] [--e-old 512] [--hidden 4096]
                [--bottleneck 128]

As on the C side, the inputs sit in page-locked host memory and their copy to the GPU is inside the
timed region; each figure is the median of --iters runs after one warm-up, timed between
torch.cuda.synchronize() calls. Math: f32 (TF32 off for matmuls and cuDNN), tf32 (on for both), bf16
(torch.autocast to bfloat16: the usual PyTorch practice; it also keeps activations in BF16, where
taca's bf16 mode only rounds the GEMM inputs). Needs a CUDA build of PyTorch.
"""
import argparse
import contextlib
import json
import math
import os
import statistics
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "tests", "fixtures"))
import bench_vit  # noqa: E402  (architectures, weight reader)
from bench_train import AdaptedBlock  # noqa: E402


def taca_loss(f, txt, img, scale, lam):
    fn, tn = F.normalize(f, dim=-1), F.normalize(txt, dim=-1)
    logits = scale * fn @ tn.t()
    labels = torch.arange(f.shape[0], device=f.device)
    contra = 0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits.t(), labels))
    return contra + lam * (f - img).norm(dim=-1).mean()


def timed(fn, iters, device):
    times = []
    for r in range(iters + 1):
        torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        out = fn()
        torch.cuda.synchronize(device)
        if r:
            times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--arch", default="ViT-L-14", choices=sorted(bench_vit.ARCHS))
    p.add_argument("--weights", required=True)
    p.add_argument("--device", default="cuda:0")
    p.add_argument("--math", default="f32", choices=["f32", "tf32", "bf16"])
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--train-batch", type=int, default=32)
    p.add_argument("--iters", type=int, default=10)
    p.add_argument("--e-old", type=int, default=512)
    p.add_argument("--hidden", type=int, default=4096)
    p.add_argument("--bottleneck", type=int, default=128)
    a = p.parse_args()
    if not torch.cuda.is_available():
        sys.exit("bench_cuda.py: this PyTorch has no usable CUDA (install a CUDA build of torch)")
    dev = torch.device(a.device)
    tf32 = a.math == "tf32"
    torch.backends.cuda.matmul.allow_tf32 = tf32
    torch.backends.cudnn.allow_tf32 = tf32
    autocast = (lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if a.math == "bf16" \
        else contextlib.nullcontext
    torch.manual_seed(0)
    vis = bench_vit.build(a.arch)
    sd = bench_vit.read_safetensors(a.weights)
    vis.load_state_dict({k[len("visual."):]: t for k, t in sd.items()})
    vis = vis.to(dev)
    S = bench_vit.ARCHS[a.arch]["image"]
    result = {"impl": "pytorch-" + torch.__version__, "arch": a.arch, "device": a.device,
              "gpu": torch.cuda.get_device_name(dev), "math": a.math}

    if a.batch > 0:
        x_host = (torch.rand(a.batch, 3, S, S) * 2 - 1).pin_memory()

        def forward():
            with torch.no_grad(), autocast():
                return vis(x_host.to(dev, non_blocking=True)).float().cpu()
        med, _ = timed(forward, a.iters, dev)
        result.update(batch=a.batch, images_per_s=round(a.batch / med, 2))

    if a.train_batch > 0:
        for q in vis.parameters():
            q.requires_grad_(False)
        width, embed = bench_vit.ARCHS[a.arch]["width"], bench_vit.ARCHS[a.arch]["embed"]
        blocks = vis.transformer.resblocks
        for i in range(len(blocks)):
            blocks[i] = AdaptedBlock(blocks[i], width, a.bottleneck).to(dev)
        proj = nn.Sequential(nn.Linear(embed, a.hidden), nn.GELU(), nn.Linear(a.hidden, a.e_old)).to(dev)
        trainable = [q for q in list(vis.parameters()) + list(proj.parameters()) if q.requires_grad]
        opt = torch.optim.AdamW(trainable, lr=2e-4, weight_decay=0.01)
        x_host = (torch.rand(a.train_batch, 3, S, S) * 2 - 1).pin_memory()
        img = (torch.rand(a.train_batch, a.e_old) - 0.5).to(dev)
        txt = (torch.rand(a.train_batch, a.e_old) - 0.5).to(dev)
        scale = min(math.exp(4.6052), 100.0)

        def step():
            opt.zero_grad(set_to_none=True)
            with autocast():
                f = proj(vis(x_host.to(dev, non_blocking=True)))
            loss = taca_loss(f.float(), txt, img, scale, 2.0)
            loss.backward()
            opt.step()
            return loss
        med, loss = timed(step, a.iters, dev)
        result.update(train_batch=a.train_batch, samples_per_s=round(a.train_batch / med, 2),
                      loss=round(loss.item(), 4),
                      max_memory_mib=round(torch.cuda.max_memory_allocated(dev) / 2 ** 20))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
