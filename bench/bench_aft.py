#!/usr/bin/env python3
"""PyTorch side of bench/run-aft.sh: writes the inputs of one AFT training step and times the same
step with autograd, as bench_aft.c times taca's.

  bench_aft.py write --arch NAME|JSON --out DIR [--batch 16] [--classes 100] [--dims 1024,512]
  bench_aft.py time  --arch NAME|JSON --dir DIR [--iters 5] [--threads 2]

write: DIR/tower.safetensors, a random CLIP vision tower (tests/fixtures/gen_clip.py Visual, open_clip
"visual.*" names), and DIR/inputs.safetensors: pixels [B, 3, S, S], P [B, dP] (the concatenated
pre-trained features of len(dims) "models" with shared structure, so that the kernels correlate),
labels (I32) [B] in [0, classes), classifier.weight [C, E] and classifier.bias [C] (nn.Linear's
initialisation) and aft.s [dP] (0, AFT's start). NAME is one of bench_vit.ARCHS; JSON an open_clip
model config (vision_cfg; text_cfg is ignored).

time: the downstream model is the tower + nn.Linear(E, C); loss = CE + 10 R, R prior.py's
KernelPrior (tests/fixtures/gen_aft.py aft_r); torch.optim.AdamW (lr 1e-3, weight decay 0.01 on
tensors with ndim >= 2, 0 on the others, as taca-train groups them) on the model and Adam (AdamW,
weight decay 0) at lr 1e-2 on s. One warm-up step, then --iters timed steps, each on the parameters
the previous step left (median). Prints one JSON line with the losses of every step, the warm-up's
first ("loss_ce", "loss_reg": the warm-up's, on the starting parameters).
"""
import argparse
import json
import os
import statistics
import struct
import sys
import time
from collections import OrderedDict

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "tests", "fixtures"))
import bench_vit  # noqa: E402  (built-in architectures)
import gen_clip  # noqa: E402  (the reference vision tower and the safetensors writer)

BETA, LR, WEIGHT_DECAY, PRIOR_LR = 10.0, 1e-3, 0.01, 1e-2


def arch_config(arch):
    """The vision tower of a bench_vit.ARCHS name or an open_clip JSON, with clip_config.c's defaults."""
    if arch.endswith(".json"):
        with open(arch) as f:
            cfg = json.load(f)
        v = cfg["vision_cfg"]
        width, head_width = v.get("width", 768), v.get("head_width", 64)
        return dict(image=v.get("image_size", 224), patch=v.get("patch_size", 16), width=width,
                    layers=v.get("layers", 12), heads=width // head_width, mlp=int(width * v.get("mlp_ratio", 4.0)),
                    embed=cfg.get("embed_dim", 512), act=gen_clip.QuickGELU if cfg.get("quick_gelu") else nn.GELU)
    if arch not in bench_vit.ARCHS:
        sys.exit(f"bench_aft.py: --arch {arch}: expected an open_clip JSON or one of {', '.join(sorted(bench_vit.ARCHS))}")
    a = bench_vit.ARCHS[arch]
    return dict(image=a["image"], patch=a["patch"], width=a["width"], layers=a["layers"],
                heads=a["width"] // a["head_width"], mlp=4 * a["width"], embed=a["embed"], act=nn.GELU)


def build(c):
    return gen_clip.Visual(c["image"], c["patch"], c["width"], c["layers"], c["heads"], c["mlp"], c["embed"], c["act"])


def read_safetensors(path):
    dt = {"F32": np.float32, "I32": np.int32}
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        buf = f.read()
    out = {}
    for k, v in header.items():
        if k == "__metadata__":
            continue
        b, e = v["data_offsets"]
        out[k] = torch.from_numpy(np.frombuffer(buf[b:e], dtype=dt[v["dtype"]]).copy().reshape(v["shape"]))
    return out


def aft_r(feat, pre, s):
    """prior.py KernelPrior.log_prob as rmse (tests/fixtures/gen_aft.py aft_r)."""
    t = pre * s.sigmoid()
    feat = feat - feat.mean(0, keepdim=True)
    t = t - t.mean(0, keepdim=True)
    feat = feat / (feat.norm(dim=1, keepdim=True) + 1e-8)
    t = t / (t.norm(dim=1, keepdim=True) + 1e-8)
    return (((feat @ feat.t()) - (t @ t.t())) ** 2).mean().add(1e-8) ** 0.5


def write(a, c):
    os.makedirs(a.out, exist_ok=True)
    torch.manual_seed(0)
    vis = build(c)
    gen_clip.save_safetensors(os.path.join(a.out, "tower.safetensors"),
                              OrderedDict(("visual." + k, t) for k, t in vis.state_dict().items()))
    gen = torch.Generator().manual_seed(1)
    dims = [int(d) for d in a.dims.split(",")]
    dP, B, S = sum(dims), a.batch, c["image"]
    pixels = torch.randn(B, 3, S, S, generator=gen)
    scales = torch.cat([torch.full((d,), 1.0 + k) for k, d in enumerate(dims)])
    P = (torch.randn(B, 8, generator=gen) @ torch.randn(8, dP, generator=gen)
         + 0.5 * torch.randn(B, dP, generator=gen)) * scales + torch.randn(dP, generator=gen)
    labels = torch.randint(0, a.classes, (B,), generator=gen).to(torch.int32)
    head = nn.Linear(c["embed"], a.classes)
    gen_clip.DTYPES.setdefault(torch.int32, "I32")
    gen_clip.save_safetensors(os.path.join(a.out, "inputs.safetensors"), OrderedDict([
        ("pixels", pixels), ("P", P), ("labels", labels), ("classifier.weight", head.weight.detach()),
        ("classifier.bias", head.bias.detach()), ("aft.s", torch.zeros(dP))]), {"dims": a.dims})


def time_step(a, c):
    torch.set_num_threads(a.threads)
    vis = build(c)
    sd = read_safetensors(os.path.join(a.dir, "tower.safetensors"))
    vis.load_state_dict(OrderedDict((k[len("visual."):], t) for k, t in sd.items()))
    inp = read_safetensors(os.path.join(a.dir, "inputs.safetensors"))
    x, P, labels = inp["pixels"], inp["P"], inp["labels"].long()
    B, classes = x.shape[0], inp["classifier.weight"].shape[0]
    head = nn.Linear(c["embed"], classes)
    with torch.no_grad():
        head.weight.copy_(inp["classifier.weight"])
        head.bias.copy_(inp["classifier.bias"])
    s = nn.Parameter(inp["aft.s"].clone())
    params = list(vis.parameters()) + list(head.parameters())
    opt = torch.optim.AdamW([{"params": [p for p in params if p.ndim >= 2], "weight_decay": WEIGHT_DECAY},
                             {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0}],
                            lr=LR, betas=(0.9, 0.999), eps=1e-8)
    popt = torch.optim.AdamW([s], lr=PRIOR_LR, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0)
    tf, tl, tb, ts, losses = [], [], [], [], []
    for r in range(a.iters + 1):  # r = 0: warm-up
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        popt.zero_grad(set_to_none=True)
        feat = vis(x)
        logits = head(feat)
        t1 = time.perf_counter()
        ce = F.cross_entropy(logits, labels)
        reg = aft_r(feat, P, s)
        loss = ce + BETA * reg
        t2 = time.perf_counter()
        loss.backward()
        opt.step()
        popt.step()
        t3 = time.perf_counter()
        losses.append(loss.item())
        if r == 0:
            ce0, reg0 = ce.item(), reg.item()
        else:
            tf.append(t1 - t0), tl.append(t2 - t1), tb.append(t3 - t2), ts.append(t3 - t0)
    med = statistics.median(ts)
    print(json.dumps({"impl": "pytorch-" + torch.__version__, "arch": a.arch, "batch": B, "classes": classes,
                      "pretrained_dim": P.shape[1], "threads": a.threads, "samples_per_s": round(B / med, 3),
                      "step_s": round(med, 4), "forward_s": round(statistics.median(tf), 4),
                      "loss_s": round(statistics.median(tl), 5), "backward_s": round(statistics.median(tb), 4),
                      "loss_ce": ce0, "loss_reg": reg0, "loss": losses[0], "losses": losses}))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("mode", choices=["write", "time"])
    p.add_argument("--arch", required=True)
    p.add_argument("--out")
    p.add_argument("--dir")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--classes", type=int, default=100)
    p.add_argument("--dims", default="1024,512")
    p.add_argument("--iters", type=int, default=5)
    p.add_argument("--threads", type=int, default=os.cpu_count())
    a = p.parse_args()
    c = arch_config(a.arch)
    if a.mode == "write":
        if not a.out or a.batch < 2 or a.classes < 2:
            sys.exit("bench_aft.py write: --out is required; --batch and --classes must be >= 2")
        write(a, c)
    else:
        if not a.dir or a.iters < 1:
            sys.exit("bench_aft.py time: --dir is required; --iters must be >= 1")
        time_step(a, c)


if __name__ == "__main__":
    main()
