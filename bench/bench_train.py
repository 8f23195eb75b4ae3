#!/usr/bin/env python3
"""PyTorch side of bench/run-train.sh: one TaCA training step with autograd on the same weights as
bench_train.c: the frozen CLIP vision tower (requires_grad=False) with a bottleneck adapter after
every block (x + up(GELU(down(x))), exact GELU), the projector Linear -> GELU -> Linear, the TaCA
loss (symmetric contrastive against old text embeddings with the old logit scale, + 2 x mean L2
distance to old image embeddings), backward, and torch.optim.AdamW.

  bench_train.py --arch ViT-B-16 --weights W.safetensors [--batch 8] [--iters 5] [--threads 2]
                 [--e-old 512] [--hidden 4096] [--bottleneck 128]
(write the weights with bench_vit.py write.)
"""
import argparse
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


class AdaptedBlock(nn.Module):
    def __init__(self, block, width, k):
        super().__init__()
        self.block, self.down, self.up = block, nn.Linear(width, k), nn.Linear(k, width)

    def forward(self, x, mask=None):
        x = self.block(x, mask)
        return x + self.up(F.gelu(self.down(x)))


def taca_loss(f, txt, img, scale, lam):
    fn, tn = F.normalize(f, dim=-1), F.normalize(txt, dim=-1)
    logits = scale * fn @ tn.t()
    labels = torch.arange(f.shape[0])
    contra = 0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits.t(), labels))
    return contra + lam * (f - img).norm(dim=-1).mean()


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--arch", default="ViT-B-16", choices=sorted(bench_vit.ARCHS))
    p.add_argument("--weights", required=True)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--iters", type=int, default=5)
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--e-old", type=int, default=512)
    p.add_argument("--hidden", type=int, default=4096)
    p.add_argument("--bottleneck", type=int, default=128)
    a = p.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(a.threads)
    vis = bench_vit.build(a.arch)
    sd = bench_vit.read_safetensors(a.weights)
    vis.load_state_dict({k[len("visual."):]: t for k, t in sd.items()})
    for q in vis.parameters():
        q.requires_grad_(False)
    width, embed = bench_vit.ARCHS[a.arch]["width"], bench_vit.ARCHS[a.arch]["embed"]
    blocks = vis.transformer.resblocks
    for i in range(len(blocks)):
        blocks[i] = AdaptedBlock(blocks[i], width, a.bottleneck)
        with torch.no_grad():
            blocks[i].up.weight.copy_(1e-3 * (torch.arange(width * a.bottleneck) % 7 - 3).view(width, a.bottleneck))
    proj = nn.Sequential(nn.Linear(embed, a.hidden), nn.GELU(), nn.Linear(a.hidden, a.e_old))
    trainable = [q for q in list(vis.parameters()) + list(proj.parameters()) if q.requires_grad]
    opt = torch.optim.AdamW(trainable, lr=2e-4, weight_decay=0.01)
    S = bench_vit.ARCHS[a.arch]["image"]
    x = torch.rand(a.batch, 3, S, S) * 2 - 1
    img, txt = torch.rand(a.batch, a.e_old) - 0.5, torch.rand(a.batch, a.e_old) - 0.5
    scale = min(math.exp(4.6052), 100.0)
    times = []
    for r in range(a.iters + 1):
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss = taca_loss(proj(vis(x)), txt, img, scale, 2.0)
        loss.backward()
        opt.step()
        if r:
            times.append(time.perf_counter() - t0)
    med = statistics.median(times)
    print(json.dumps({"impl": "pytorch-" + torch.__version__, "arch": a.arch, "batch": a.batch,
                      "threads": a.threads, "samples_per_s": round(a.batch / med, 3), "step_s": round(med, 3),
                      "loss": round(loss.item(), 4)}))


if __name__ == "__main__":
    main()
