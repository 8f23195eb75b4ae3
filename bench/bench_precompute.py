#!/usr/bin/env python3
"""PyTorch + PIL side of bench/run-precompute.sh: the same work as `taca precompute` on the same tar
shard — read members, PIL decode, CLIP preprocessing (Resize bicubic, CenterCrop, ToTensor,
Normalize), CLIP tokenisation (OpenAI's simple_tokenizer, as in tests/fixtures/gen_tokenizer.py),
image and text embeddings of a ViT-B/16 CLIP (the reference modules of tests/fixtures/gen_clip.py,
loaded from the same open_clip safetensors) — timed end to end.

  bench_precompute.py write --out W.safetensors         random ViT-B/16 CLIP weights (open_clip layout)
  bench_precompute.py time --weights W --tar T [--batch 32] [--threads 2]
"""
import argparse
import io
import json
import os
import sys
import tarfile
import time

import numpy as np
import torch
from PIL import Image

here = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(here, "..", "tests", "fixtures"))
import gen_clip  # noqa: E402
import gen_tokenizer  # noqa: E402

CFG = {"embed_dim": 512,
       "vision_cfg": {"image_size": 224, "patch_size": 16, "width": 768, "layers": 12, "head_width": 64},
       "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 512, "heads": 8, "layers": 12}}
MEAN = torch.tensor([0.48145466, 0.4578275, 0.40821073]).view(3, 1, 1)
STD = torch.tensor([0.26862954, 0.26130258, 0.27577711]).view(3, 1, 1)


def preprocess(data, size=224):
    im = Image.open(io.BytesIO(data))
    w, h = im.size
    s = size / min(w, h)
    im = im.resize((max(size, int(w * s)), max(size, int(h * s))), Image.BICUBIC)
    w, h = im.size
    left, top = int(round((w - size) / 2.0)), int(round((h - size) / 2.0))
    im = im.crop((left, top, left + size, top + size)).convert("RGB")
    x = torch.from_numpy(np.asarray(im).copy()).permute(2, 0, 1).float() / 255
    return (x - MEAN) / STD


def main():
    p = argparse.ArgumentParser()
    p.add_argument("mode", choices=["write", "time"])
    p.add_argument("--out")
    p.add_argument("--weights")
    p.add_argument("--tar")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--threads", type=int, default=os.cpu_count())
    a = p.parse_args()
    torch.manual_seed(0)
    if a.mode == "write":
        m = gen_clip.CLIP(CFG, torch.nn.GELU)
        gen_clip.save_safetensors(a.out, gen_clip.open_clip_state(m))
        return
    torch.set_num_threads(a.threads)
    m = gen_clip.CLIP(CFG, torch.nn.GELU).eval()
    sd = {}
    import struct
    b = open(a.weights, "rb").read()
    n = struct.unpack("<Q", b[:8])[0]
    hdr = json.loads(b[8:8 + n])
    for k, v in hdr.items():
        if k == "__metadata__":
            continue
        s, e = v["data_offsets"]
        sd[k] = torch.from_numpy(np.frombuffer(b[8 + n + s:8 + n + e], np.float32).copy().reshape(v["shape"]))
    m.load_state_dict(sd, strict=False)
    tok = gen_tokenizer.SimpleTokenizer()
    t0 = time.perf_counter()
    samples, cur = [], {}
    with tarfile.open(a.tar) as tf:
        for mem in tf:
            key, ext = mem.name.split(".", 1)
            if cur and cur["key"] != key:
                samples.append(cur)
                cur = {}
            cur["key"] = key
            cur[ext] = tf.extractfile(mem).read()
    if cur:
        samples.append(cur)
    done = 0
    with torch.no_grad():
        for i in range(0, len(samples), a.batch):
            chunk = samples[i:i + a.batch]
            px = torch.stack([preprocess(s.get("jpg") or s["png"]) for s in chunk])
            ids = torch.tensor([gen_tokenizer.tokenize(tok, s["txt"].decode()) for s in chunk], dtype=torch.long)
            m.visual(px)
            m.encode_text(ids)
            done += len(chunk)
    dt = time.perf_counter() - t0
    print(json.dumps({"impl": "pytorch-" + torch.__version__ + "+PIL", "samples": done,
                      "seconds": round(dt, 2), "samples_per_s": round(done / dt, 3)}))


if __name__ == "__main__":
    main()
