#!/usr/bin/python3
"""bench_preprocess.py: CLIP preprocessing images/s on one core, PIL + torch versus taca's C, side by side.

The reference pipeline is what CLIP's _transform does through torchvision 0.14 (not installed here, so its
steps are written out): PIL decodes the file from memory, Resize(size, BICUBIC) (short side to size, long
side int(size * long / short)), CenterCrop(size) (offsets int(round((H - size) / 2.0))), convert('RGB'),
ToTensor (uint8 HWC -> float CHW / 255) and Normalize(mean, std) with torch on one thread.
The C side is build/bin/bench_preprocess (bench/bench_preprocess.c) on the same file; both are pinned to
the same single CPU, and the C output (--dump) is compared with torch's numbers.

  /usr/bin/python3 bench/bench_preprocess.py [--image FILE] [--size 224] [--seconds 10] [--rounds 5]
                                             [--c-bench build/bin/bench_preprocess]
"""
import argparse
import io
import json
import os
import statistics
import subprocess
import tempfile
import time

import numpy as np
import torch
from PIL import Image

MEAN = (0.48145466, 0.4578275, 0.40821073)
STD = (0.26862954, 0.26130258, 0.27577711)
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def clip_preprocess(data, size, mean, std):
    im = Image.open(io.BytesIO(data))
    w, h = im.size
    short, long = (w, h) if w <= h else (h, w)
    nw, nh = (size, int(size * long / short)) if w <= h else (int(size * long / short), size)
    if (nw, nh) != (w, h):
        im = im.resize((nw, nh), Image.BICUBIC)
    left, top = int(round((nw - size) / 2.0)), int(round((nh - size) / 2.0))
    im = im.crop((left, top, left + size, top + size)).convert("RGB")
    t = torch.from_numpy(np.array(im, np.uint8, copy=True)).view(size, size, 3).permute(2, 0, 1).contiguous()
    t = t.to(dtype=torch.float32).div(255)
    return t.clone().sub_(mean).div_(std)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--image", default=os.path.join(ROOT, "tests/fixtures/images/photo_500x375.jpg"))
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--seconds", type=float, default=10.0, help="per implementation, split over the rounds")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--c-bench", default=os.path.join(ROOT, "build/bin/bench_preprocess"))
    args = ap.parse_args()

    cpu = sorted(os.sched_getaffinity(0))[0]
    os.sched_setaffinity(0, {cpu})
    torch.set_num_threads(1)
    with open(args.image, "rb") as f:
        data = f.read()
    mean = torch.as_tensor(MEAN, dtype=torch.float32).view(-1, 1, 1)
    std = torch.as_tensor(STD, dtype=torch.float32).view(-1, 1, 1)

    ref = clip_preprocess(data, args.size, mean, std)  # warm-up and reference output
    w, h = Image.open(io.BytesIO(data)).size
    print(f"image {args.image} ({w}x{h}) -> {args.size}, decode+resize+crop+normalize, one core (CPU {cpu}),"
          f" {args.rounds} alternating rounds")
    have_c = os.path.exists(args.c_bench)
    if not have_c:
        print(f"  C: {args.c_bench} not built (cmake --build build --target bench_preprocess)")
    # PIL and C alternate in short rounds so that both see the same machine load; medians are reported.
    pil, cres, diff, same = [], [], None, None
    per = args.seconds / args.rounds
    with tempfile.TemporaryDirectory() as tmp:
        dump = os.path.join(tmp, "c.f32")
        for _ in range(args.rounds):
            n, t0 = 0, time.perf_counter()
            while time.perf_counter() - t0 < per:
                clip_preprocess(data, args.size, mean, std)
                n += 1
            pil.append(n / (time.perf_counter() - t0))
            if have_c:
                out = subprocess.run([args.c_bench, "--image", args.image, "--size", str(args.size), "--seconds",
                                      str(2 * per), "--dump", dump], check=True, capture_output=True, text=True).stdout
                cres.append(json.loads(out.strip().splitlines()[-1]))
        if have_c:
            got = np.fromfile(dump, dtype="<f4").reshape(ref.shape)
            diff, same = float(np.abs(got - ref.numpy()).max()), bool(np.array_equal(got, ref.numpy()))
    med = statistics.median
    print(f"  PIL {Image.__version__} + torch {torch.__version__}: {med(pil):8.1f} images/s"
          f"   (rounds: {', '.join(f'{x:.0f}' for x in pil)})")
    if not have_c:
        return
    ips = [c["images_per_s"] for c in cres]
    print(f"  C (taca image/image):        {med(ips):8.1f} images/s   (rounds: {', '.join(f'{x:.0f}' for x in ips)})")
    print(f"     decode {med([c['decode_ms'] for c in cres]):.3f} ms, resize+crop "
          f"{med([c['resize_crop_ms'] for c in cres]):.3f} ms, normalize {med([c['normalize_ms'] for c in cres]):.3f} ms")
    print(f"  speed-up C / PIL: {med([c / p for c, p in zip(ips, pil)]):.2f}x (median of rounds);"
          f"  max |C - torch| = {diff:g}{' (bit-identical)' if same else ''}")

if __name__ == "__main__":
    main()
