#!/usr/bin/env bash
# CPU training-step benchmark: taca's C TaCA step vs PyTorch autograd on the same random weights,
# side by side in one run, with the sgemm roofline measured on the step's GEMM shapes. Run on a
# quiet machine (no build or other benchmark at the same time).
#   bench/run-train.sh [ARCH] [BATCH]     (defaults: ViT-B-16 8; needs `make build` and --reference deps)
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
torch_json=$("$py" "$here/bench_train.py" --arch "$arch" --weights "$tmp/w.safetensors" --batch "$batch")
c_json=$("$bin/bench_train" --model "$tmp/w.safetensors" --arch "$arch" --batch "$batch")
echo "$torch_json"
echo "$c_json"
"$py" - "$torch_json" "$c_json" <<'PY'
import json, sys
t, c = json.loads(sys.argv[1]), json.loads(sys.argv[2])
print(f"\nTaCA step, {c['arch']} + adapters in every block, batch {c['batch']}, {c['threads']} threads")
print(f"  PyTorch {t['impl']:>22}: {t['samples_per_s']:7.2f} samples/s")
print(f"  taca C                        : {c['samples_per_s']:7.2f} samples/s  ({c['gflops']:.0f} GFLOP/s; "
      f"forward {c['forward_s']:.2f} s, backward+update {c['backward_s']:.2f} s)")
print(f"  sgemm roofline (same shapes)  : {c['roofline_samples_per_s']:7.2f} samples/s")
print(f"  C / PyTorch = {c['samples_per_s'] / t['samples_per_s']:.2f}x, "
      f"C / roofline = {100 * c['fraction_of_roofline']:.0f}%, "
      f"PyTorch / roofline = {100 * t['samples_per_s'] / c['roofline_samples_per_s']:.0f}%")
PY
