#!/usr/bin/env bash
# run-growth.sh [BUILD_DIR]: how the store's costs grow with its size (bench/bench_growth.py): stores of
# SIZES (default 100000,1000000,10000000) 512-wide F16 clustered embeddings without pixels; import,
# bytes per sample, index build, taca-featured start time and RSS, Lookup p50/p99 at 1000/s, exact and
# ANN Search latency with recall@10, StreamEpoch GB/s, the same ANN search over two shards.
# Needs ~3 x 10 GB of free disk in WORK (default a temporary folder) for 10^7, and a quiet machine.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build=${1:-$root/build}
for b in taca taca-featured bench_featured; do
  [ -x "$build/bin/$b" ] || { echo "run-growth: $build/bin/$b missing: make build" >&2; exit 2; }
done
[ -f "$build/clients/python/taca_client/feature_cache_pb2.py" ] || { echo "run-growth: the Python client is not built" >&2; exit 2; }
echo "== machine: $(nproc) cores, $(free -g | awk '/Mem:/{print $2}') GiB, $(lscpu | sed -n 's/^Model name: *//p'), load $(cut -d' ' -f1-3 /proc/loadavg)"
echo "== ISA: $(grep -o -w -E 'avx512f|avx512_bf16|amx_tile|avx2|fma|f16c' /proc/cpuinfo | sort -u | tr '\n' ' ')"
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-$(nproc)}
exec /usr/bin/python3 "$root/bench/bench_growth.py" --bin "$build/bin" --pyclient "$build/clients/python" \
  --sizes "${SIZES:-100000,1000000,10000000}" ${WORK:+--work "$WORK"} --json "${JSON:-growth.jsonl}"
