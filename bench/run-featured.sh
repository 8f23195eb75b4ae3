#!/usr/bin/env bash
# run-featured.sh [BUILD_DIR]: load test of taca-featured on loopback (bench/featured/bench_featured.c).
# Builds a synthetic store (N samples with raw 3x224x224 pixels and 512-d F16 embeddings), starts the
# daemon, and runs: a mixed load (many clients: StreamEpoch, GetBatch, Lookup, Search), one stream as
# fast as it goes, and Lookups paced at 1000/s; then SIGTERM (exit status must be 0).
# Environment: N (default 4000 samples), SECONDS_EACH (default 10), CLIENTS (default 16),
# THREADS (server completion-queue threads, default 2), KEEP_STORE=1 keeps the store.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build=${1:-$root/build}
bin=$build/bin
for b in taca-featured featured-mkstore bench_featured; do
  [ -x "$bin/$b" ] || { echo "run-featured: $bin/$b missing: cmake --build $build --target $b" >&2; exit 2; }
done
n=${N:-4000}
secs=${SECONDS_EACH:-10}
clients=${CLIENTS:-16}
threads=${THREADS:-2}
tmp=$(mktemp -d)
pid=""
cleanup() {
  [ -n "$pid" ] && kill -9 "$pid" 2>/dev/null || true
  [ "${KEEP_STORE:-0}" = 1 ] || rm -rf "$tmp"
}
trap cleanup EXIT

echo "== store: $n samples, raw 3x224x224 pixels, 512-d F16 embeddings ($tmp)"
t0=$(date +%s.%N)
"$bin/featured-mkstore" --db "$tmp/db" --n "$n" --pixels 224 --dim 512 --quiet
echo "   written in $(echo "$(date +%s.%N) - $t0" | bc) s, $(du -sh "$tmp/db" | cut -f1) on disk"

"$bin/taca-featured" --db "$tmp/db" --listen 127.0.0.1:0 --port-file "$tmp/ports" --log "$tmp/log" \
  --threads "$threads" --max-streams 256 &
pid=$!
for _ in $(seq 400); do [ -s "$tmp/ports" ] && break; sleep 0.05; done
port=$(sed -n 's/^grpc=//p' "$tmp/ports")
[ -n "$port" ] || { echo "taca-featured did not start"; cat "$tmp/log"; exit 1; }
addr=127.0.0.1:$port
echo "== machine: $(nproc) cores; server: $threads completion-queue threads"

status=0
echo
echo "== mixed load: $clients clients x ${secs}s, batches of 32 (pixels + tokens + 512-d embeddings)"
"$bin/bench_featured" --server "$addr" --mode mixed --clients "$clients" --seconds "$secs" --batch 32 --pid "$pid" || status=1
echo
echo "== one stream, batches of 64 (~9.7 MB messages)"
"$bin/bench_featured" --server "$addr" --mode stream --seconds "$secs" --batch 64 --pid "$pid" || status=1
echo
echo "== Lookup of one key, paced at 1000/s"
"$bin/bench_featured" --server "$addr" --mode lookup-rate --rate 1000 --seconds "$secs" --pid "$pid" || status=1

kill -TERM "$pid"
st=0
wait "$pid" || st=$?
pid=""
echo
echo "== taca-featured exit status after SIGTERM: $st"
[ "$st" -eq 0 ] || status=1
exit $status
