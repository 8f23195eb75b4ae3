#!/usr/bin/env bash
# BF16 on the CPU (issue 15), side by side in one run on the same random weights: taca F32, taca BF16
# (--precision bf16), PyTorch F32 and PyTorch under torch.autocast("cpu", dtype=torch.bfloat16),
# ViT-B/16 image embeddings at each batch size given; then the kernels each one's BF16 matrix
# multiplies run on, from oneDNN's own ONEDNN_VERBOSE=1 log (one batch-1 forward each), and the ISA
# oneDNN reports for this CPU. The four run interleaved in rounds (BF16_ROUNDS, default 3 at batch
# <= 16 and 1 above) and the best round of each is reported with the range. Run on a quiet machine
# (no build or other benchmark at the same time); on a shared one, say so beside the figures (the
# script prints the load and how idle the CPU was before and after).
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

# --- throughput: rounds of the four, interleaved, so that other load on the machine hits them alike;
# the best round of each is reported (with the spread over rounds) ---
for b in "${batches[@]}"; do
  iters=5 rounds=${BF16_ROUNDS:-3}
  [ "$b" -le 16 ] || { iters=2; rounds=${BF16_ROUNDS:-1}; }
  : > "$tmp/c_f32.jsonl"; : > "$tmp/c_bf16.jsonl"; : > "$tmp/t_f32.jsonl"; : > "$tmp/t_bf16.jsonl"
  for r in $(seq "$rounds"); do
    "$bin/bench_vit" --model "$tmp/w.safetensors" --arch "$arch" --batch "$b" --iters "$iters" >> "$tmp/c_f32.jsonl"
    "$bin/bench_vit" --model "$tmp/w.safetensors" --arch "$arch" --batch "$b" --iters "$iters" --precision bf16 >> "$tmp/c_bf16.jsonl"
    "$py" "$here/bench_vit.py" time --arch "$arch" --weights "$tmp/w.safetensors" --batch "$b" --iters "$iters" >> "$tmp/t_f32.jsonl"
    "$py" "$here/bench_vit.py" time --arch "$arch" --weights "$tmp/w.safetensors" --batch "$b" --iters "$iters" --autocast >> "$tmp/t_bf16.jsonl"
  done
  cat "$tmp"/c_f32.jsonl "$tmp"/c_bf16.jsonl "$tmp"/t_f32.jsonl "$tmp"/t_bf16.jsonl
  "$py" - "$tmp" <<'PY'
import json, sys
t = sys.argv[1]
runs = {n: [json.loads(l) for l in open(f"{t}/{n}.jsonl")] for n in ("c_f32", "c_bf16", "t_f32", "t_bf16")}
# the fastest forward of every round and iteration (other load only ever slows a forward down)
K = "best_images_per_s"
best = {n: max(r, key=lambda x: x[K]) for n, r in runs.items()}
spread = {n: f"medians {min(x['images_per_s'] for x in r):.2f}-{max(x['images_per_s'] for x in r):.2f}" for n, r in runs.items()}
c32, c16, t32, t16 = (best[n] for n in ("c_f32", "c_bf16", "t_f32", "t_bf16"))
print(f"\n{c32['arch']} image embeddings, batch {c32['batch']}, {c32['threads']} threads; fastest forward over "
      f"{len(runs['c_f32'])} interleaved round(s) (range of the rounds' medians)")
rows = [("taca F32", "c_f32", f"OpenBLAS sgemm; {100 * c32['fraction_of_roofline']:.0f}% of its sgemm roofline"),
        ("taca BF16", "c_bf16", f"{c16['gemm_impl']}; {100 * c16['fraction_of_roofline']:.0f}% of its GEMM-only time"),
        ("PyTorch F32", "t_f32", t32["impl"]), ("PyTorch bf16 autocast", "t_bf16", t16["impl"])]
for name, n, note in rows:
    print(f"  {name:<22} {best[n][K]:7.2f} img/s ({spread[n]})  {note}")
print(f"  taca BF16 / PyTorch autocast = {c16[K] / t16[K]:.2f}x, taca BF16 / taca F32 = {c16[K] / c32[K]:.2f}x, "
      f"taca F32 / PyTorch F32 = {c32[K] / t32[K]:.2f}x, PyTorch autocast / PyTorch F32 = {t16[K] / t32[K]:.2f}x")
PY
done
echo "after: load average $(cut -d' ' -f1-3 /proc/loadavg), CPU idle $(idle)%"
