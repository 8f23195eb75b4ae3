#!/usr/bin/env bash
# GPU benchmark: taca's CUDA backend vs PyTorch on the same GPU and the same random weights, side by
# side: the vision tower's forward (images/s) and one TaCA training step (samples/s), in each math
# mode. Needs a build with the CUDA backend (cmake finds the toolkit: see the README) and, for the
# PyTorch column, a Python whose torch has CUDA (PYTHON=...; without one, only taca's figures).
#   bench/run-cuda.sh [ARCH] [BATCH] [TRAIN_BATCH]     (defaults: ViT-L-14 64 32)
#   env: DEVICE (cuda:0), MATHS ("f32 tf32"; also bf16), ITERS (10), PYTHON (python3),
#        TACA_BIN_DIR (build/bin)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
arch=${1:-ViT-L-14}
batch=${2:-64}
train_batch=${3:-32}
device=${DEVICE:-cuda:0}
maths=${MATHS:-f32 tf32}
iters=${ITERS:-10}
py=${PYTHON:-python3}
bin=${TACA_BIN_DIR:-$root/build/bin}
[ -x "$bin/bench_cuda" ] || { echo "run-cuda.sh: $bin/bench_cuda not found (make build)" >&2; exit 1; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
"$py" "$here/bench_vit.py" write --arch "$arch" --out "$tmp/w.safetensors"
have_torch_cuda=0
"$py" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null && have_torch_cuda=1
[ "$have_torch_cuda" = 1 ] || echo "note: $py has no CUDA-enabled torch: taca's figures only" >&2
for m in $maths; do
  c_json=$("$bin/bench_cuda" --model "$tmp/w.safetensors" --arch "$arch" --device "$device" --math "$m" \
    --batch "$batch" --train-batch "$train_batch" --iters "$iters")
  t_json='{}'
  if [ "$have_torch_cuda" = 1 ]; then
    t_json=$("$py" "$here/bench_cuda.py" --arch "$arch" --weights "$tmp/w.safetensors" --device "$device" \
      --math "$m" --batch "$batch" --train-batch "$train_batch" --iters "$iters")
  fi
  echo "$t_json"
  echo "$c_json"
  "$py" - "$t_json" "$c_json" <<'PY'
import json, sys
t, c = json.loads(sys.argv[1]), json.loads(sys.argv[2])
gpu = t.get("gpu", c["device"])
print(f"\n{c['arch']} on {gpu}, math {c['math']}")
def row(what, key, unit, n):
    tc, tt = c.get(key, 0), t.get(key)
    line = f"  {what:<28} batch {n:>3}: taca {tc:8.1f} {unit}"
    if tt:
        line += f"   PyTorch {tt:8.1f} {unit}   taca / PyTorch = {tc / tt:.2f}x"
    print(line)
if c["batch"]:
    row("forward", "images_per_s", "img/s", c["batch"])
    print(f"  {'':<28}            ({c['forward_tflops']:.1f} TFLOP/s of GEMM work, "
          f"{c['forward_gflop_per_image']:.0f} GFLOP/image)")
if c["train_batch"]:
    row("TaCA step (adapters, all)", "samples_per_s", "samples/s", c["train_batch"])
PY
done
