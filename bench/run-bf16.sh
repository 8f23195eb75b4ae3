#!/usr/bin/env bash
# BF16 on the CPU (issue 15), side by side in one run on the same random weights: taca F32, taca BF16
# (--precision bf16), PyTorch F32 and PyTorch under torch.autocast("cpu", dtype=torch.bfloat16),
# ViT-B/16 image embeddings at each batch size given; then the kernels each one's BF16 matrix
# multiplies run on, from oneDNN's own ONEDNN_VERBOSE=1 log (one batch-1 forward each), and the ISA
# oneDNN reports for this CPU. Run on a quiet machine (no build or other benchmark at the same time);
# on a shared one, say so beside the figures.
#   bench/run-bf16.sh [BATCH...]     (default: 8 64; needs `make build` and the --reference deps)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
arch=ViT-B-16
batches=("$@")
[ ${#batches[@]} -gt 0 ] || batches=(8 64)
bin=${TACA_BIN_DIR:-$root/build/bin}
py=/usr/bin/python3
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
"$root/deploy/install-deps.sh" --reference
"$py" "$here/bench_vit.py" write --arch "$arch" --out "$tmp/w.safetensors"
idle() { # percent of CPU time idle over the next 2 s (other work on the machine shows here)
  local a b
  read -r -a a < /proc/stat
  sleep 2
  read -r -a b < /proc/stat
  local t=0 i
  for i in 1 2 3 4 5 6 7 8; do t=$((t + b[i] - a[i])); done
  echo $((100 * (b[4] + b[5] - a[4] - a[5]) / (t > 0 ? t : 1)))
}
flags=$(grep -m1 '^flags' /proc/cpuinfo)
isa=$(for f in avx512f avx512_bf16 amx_bf16 amx_tile; do if [[ " $flags " == *" $f "* ]]; then printf '%s ' "$f"; fi; done)
echo "machine: $(lscpu | sed -n 's/^Model name: *//p'), $(nproc) cores; CPU flags: ${isa:-no AVX-512}"
echo "before: load average $(cut -d' ' -f1-3 /proc/loadavg), CPU idle $(idle)% (near 100% on a quiet machine)"

# --- the kernels in use (oneDNN's verbose log of one batch-1 forward) ---
kernels() { "$py" "$here/onednn_kernels.py" "$1"; } # kernels LABEL < verbose log
echo "BF16 kernels (ONEDNN_VERBOSE=1, one batch-1 forward):"
ONEDNN_VERBOSE=1 "$bin/bench_vit" --model "$tmp/w.safetensors" --arch "$arch" --batch 1 --iters 1 --no-roofline \
  --precision bf16 2>&1 | kernels "taca --precision bf16"
ONEDNN_VERBOSE=1 "$py" "$here/bench_vit.py" time --arch "$arch" --weights "$tmp/w.safetensors" --batch 1 --iters 1 \
  --autocast 2>&1 | kernels "PyTorch autocast bf16"

# --- throughput ---
for b in "${batches[@]}"; do
  iters=5
  [ "$b" -le 16 ] || iters=3
  "$bin/bench_vit" --model "$tmp/w.safetensors" --arch "$arch" --batch "$b" --iters "$iters" > "$tmp/c_f32.json"
  "$bin/bench_vit" --model "$tmp/w.safetensors" --arch "$arch" --batch "$b" --iters "$iters" --precision bf16 > "$tmp/c_bf16.json"
  "$py" "$here/bench_vit.py" time --arch "$arch" --weights "$tmp/w.safetensors" --batch "$b" --iters "$iters" > "$tmp/t_f32.json"
  "$py" "$here/bench_vit.py" time --arch "$arch" --weights "$tmp/w.safetensors" --batch "$b" --iters "$iters" --autocast > "$tmp/t_bf16.json"
  cat "$tmp"/c_f32.json "$tmp"/c_bf16.json "$tmp"/t_f32.json "$tmp"/t_bf16.json
  "$py" - "$tmp" <<'PY'
import json, sys
t = sys.argv[1]
c32, c16, t32, t16 = (json.load(open(f"{t}/{n}.json")) for n in ("c_f32", "c_bf16", "t_f32", "t_bf16"))
print(f"\n{c32['arch']} image embeddings, batch {c32['batch']}, {c32['threads']} threads")
rows = [("taca F32", c32, f"OpenBLAS sgemm; {100 * c32['fraction_of_roofline']:.0f}% of its sgemm roofline"),
        ("taca BF16", c16, f"{c16['gemm_impl']}; {100 * c16['fraction_of_roofline']:.0f}% of its GEMM-only time"),
        ("PyTorch F32", t32, t32["impl"]), ("PyTorch bf16 autocast", t16, t16["impl"])]
for name, r, note in rows:
    print(f"  {name:<22} {r['images_per_s']:7.2f} img/s   {note}")
print(f"  taca BF16 / PyTorch autocast = {c16['images_per_s'] / t16['images_per_s']:.2f}x, "
      f"taca BF16 / taca F32 = {c16['images_per_s'] / c32['images_per_s']:.2f}x, "
      f"taca F32 / PyTorch F32 = {c32['images_per_s'] / t32['images_per_s']:.2f}x")
PY
done
echo "after: load average $(cut -d' ' -f1-3 /proc/loadavg), CPU idle $(idle)%"
