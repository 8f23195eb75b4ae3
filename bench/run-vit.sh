#!/usr/bin/env bash
# CPU forward benchmark: taca's C ViT vs PyTorch on the same random weights, side by side in one
# run, with the sgemm roofline measured on the model's GEMM shapes. Run on a quiet machine (no
# build or other benchmark at the same time).
#   bench/run-vit.sh [ARCH] [BATCH]     (defaults: ViT-B-16 8; needs `make build` and --reference deps)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
arch=${1:-ViT-B-16}
batch=${2:-8}
bin=${TACA_BIN_DIR:-$root/build/bin}
py=/usr/bin/python3
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
"$root/deploy/install-deps.sh" --reference
"$py" "$here/bench_vit.py" write --arch "$arch" --out "$tmp/w.safetensors"
torch_json=$("$py" "$here/bench_vit.py" time --arch "$arch" --weights "$tmp/w.safetensors" --batch "$batch")
c_json=$("$bin/bench_vit" --model "$tmp/w.safetensors" --arch "$arch" --batch "$batch")
echo "$torch_json"
echo "$c_json"
"$py" - "$torch_json" "$c_json" <<'PY'
import json, sys
t, c = json.loads(sys.argv[1]), json.loads(sys.argv[2])
print(f"\n{c['arch']} batch {c['batch']}, {c['threads']} threads")
print(f"  PyTorch {t['impl']:>22}: {t['images_per_s']:7.2f} img/s")
print(f"  taca C                        : {c['images_per_s']:7.2f} img/s  ({c['gflops']:.0f} GFLOP/s)")
print(f"  sgemm roofline (same shapes)  : {c['roofline_images_per_s']:7.2f} img/s")
print(f"  C / PyTorch = {c['images_per_s'] / t['images_per_s']:.2f}x, "
      f"C / roofline = {100 * c['fraction_of_roofline']:.0f}%, "
      f"PyTorch / roofline = {100 * t['images_per_s'] / c['roofline_images_per_s']:.0f}%")
PY
