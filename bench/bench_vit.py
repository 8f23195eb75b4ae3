#!/usr/bin/env python3
"""PyTorch side of bench/run-vit.sh: writes random CLIP vision weights (open_clip layout) and times
the reference forward on the same weights.

  bench_vit.py write --arch ViT-B-16 --out W.safetensors
  bench_vit.py time  --arch ViT-B-16 --weights W.safetensors [--batch 8] [--iters 5] [--threads 2]
                     [--autocast]   (under torch.autocast("cpu", dtype=torch.bfloat16), as bench/run-bf16.sh)
"""
import argparse
import contextlib
import json
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures"))
import gen_clip  # noqa: E402  (the reference CLIP modules and the safetensors writer)

ARCHS = {"ViT-B-16": dict(image=224, patch=16, width=768, layers=12, head_width=64, embed=512),
         "ViT-B-32": dict(image=224, patch=32, width=768, layers=12, head_width=64, embed=512),
         "ViT-L-14": dict(image=224, patch=14, width=1024, layers=24, head_width=64, embed=768)}


def build(arch):
    a = ARCHS[arch]
    return gen_clip.Visual(a["image"], a["patch"], a["width"], a["layers"], a["width"] // a["head_width"],
                           4 * a["width"], a["embed"], torch.nn.GELU).eval()


def read_safetensors(path):
    import struct
    import numpy as np
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        buf = f.read()
    out = {}
    for k, v in header.items():
        if k == "__metadata__":
            continue
        b, e = v["data_offsets"]
        out[k] = torch.from_numpy(np.frombuffer(buf[b:e], dtype=np.float32).copy().reshape(v["shape"]))
    return out


def main():
    p = argparse.ArgumentParser()
    p.add_argument("mode", choices=["write", "time"])
    p.add_argument("--arch", default="ViT-B-16", choices=sorted(ARCHS))
    p.add_argument("--out")
    p.add_argument("--weights")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--iters", type=int, default=5)
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--autocast", action="store_true", help="bf16 autocast (CPU)")
    a = p.parse_args()
    torch.manual_seed(0)
    if a.mode == "write":
        v = build(a.arch)
        sd = {"visual." + k: t for k, t in v.state_dict().items()}
        gen_clip.save_safetensors(a.out, sd)
        return
    torch.set_num_threads(a.threads)
    v = build(a.arch)
    sd = read_safetensors(a.weights)
    v.load_state_dict({k[len("visual."):]: t for k, t in sd.items()})
    x = torch.randn(a.batch, 3, ARCHS[a.arch]["image"], ARCHS[a.arch]["image"])
    times = []
    ctx = torch.autocast("cpu", dtype=torch.bfloat16) if a.autocast else contextlib.nullcontext()
    with torch.no_grad(), ctx:
        v(x)
        for _ in range(a.iters):
            t0 = time.perf_counter()
            v(x)
            times.append(time.perf_counter() - t0)
    med = statistics.median(times)
    print(json.dumps({"impl": "pytorch-" + torch.__version__ + ("-autocast-bf16" if a.autocast else ""),
                      "arch": a.arch, "batch": a.batch, "threads": a.threads,
                      "images_per_s": round(a.batch / med, 3), "best_images_per_s": round(a.batch / min(times), 3)}))


if __name__ == "__main__":
    main()
