#!/usr/bin/env bash
# Precompute throughput, taca vs PyTorch + PIL, on the same tar shard of 500x375 JPEGs with captions
# and the same random ViT-B/16 CLIP weights (image and text embeddings, decode included). Run on a
# quiet machine.   bench/run-precompute.sh [SAMPLES] [BATCH]    (defaults 96 32)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
n=${1:-96}
batch=${2:-32}
bin=${TACA_BIN_DIR:-$root/build/bin}
py=/usr/bin/python3
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
"$root/deploy/install-deps.sh" --reference
"$bin/taca" synth --out "$tmp/data" --n "$n" --size 375 --image jpg
# synth draws squares; make them 500x375 like typical photos by re-encoding with PIL.
"$py" - "$tmp/data/00000.tar" <<'PY'
import io, sys, tarfile
from PIL import Image
src = sys.argv[1]; out = src + ".wide"
with tarfile.open(src) as tf, tarfile.open(out, "w") as to:
    for m in tf:
        data = tf.extractfile(m).read()
        if m.name.endswith(".jpg"):
            im = Image.open(io.BytesIO(data)).resize((500, 375), Image.BICUBIC)
            b = io.BytesIO(); im.save(b, "JPEG", quality=90); data = b.getvalue()
        ti = tarfile.TarInfo(m.name); ti.size = len(data); to.addfile(ti, io.BytesIO(data))
PY
mv "$tmp/data/00000.tar.wide" "$tmp/data/00000.tar"
"$py" "$here/bench_precompute.py" write --out "$tmp/w.safetensors"
torch_json=$("$py" "$here/bench_precompute.py" time --weights "$tmp/w.safetensors" --tar "$tmp/data/00000.tar" --batch "$batch")
start=$(date +%s.%N)
"$bin/taca" precompute --model "$tmp/w.safetensors" --arch ViT-B-16 --data "$tmp/data/00000.tar" --db "$tmp/db" \
  --batch-size "$batch" --quiet
secs=$(echo "$(date +%s.%N) - $start" | bc)
echo "$torch_json"
"$py" - "$torch_json" "$secs" "$n" <<'PY'
import json, sys
t = json.loads(sys.argv[1]); secs = float(sys.argv[2]); n = int(sys.argv[3])
c = n / secs
print(f"precompute, ViT-B/16 image+text embeddings incl. JPEG decode, {n} samples of 500x375")
print(f"  PyTorch+PIL: {t['samples_per_s']:.2f} samples/s   taca: {c:.2f} samples/s   ratio {c / t['samples_per_s']:.2f}x")
PY
