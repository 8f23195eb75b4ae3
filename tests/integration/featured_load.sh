#!/usr/bin/env bash
# featured_load.sh: a bounded load test of taca-featured (the CTest form of bench/run-featured.sh, with
# the same client, bench/featured/bench_featured.c, in its check mode): a small synthetic store, 16
# concurrent clients, each its own connection, mixing StreamEpoch, GetBatch, Lookup and Search for
# LOAD_SECONDS (default 10). Passes when no call failed, every RPC ran at least 20 times, each RPC's
# p99 latency is under a generous bound (LOAD_MAX_P99_MS, default 250 ms; 1500 ms in sanitizer builds,
# whose server is several times slower on the same 2 cores), and the server's peak RSS stays under
# LOAD_MAX_RSS_MB (default 384 MB, of which ~170 MB are the libraries and buffers mapped at start;
# 2048 MB in sanitizer builds: shadow memory and quarantine). Then SIGTERM must stop the server with
# exit 0. Prints the figures (a table and one JSON line).
set -euo pipefail
BIN=${TACA_BIN_DIR:?}
for b in taca-featured featured-mkstore bench_featured; do
  [ -x "$BIN/$b" ] || { echo "skip: $BIN/$b not built"; exit 77; }
done
if grep -q __asan_init "$BIN/taca-featured"; then sanitized=1; else sanitized=0; fi
secs=${LOAD_SECONDS:-10}
p99=${LOAD_MAX_P99_MS:-$([ $sanitized = 1 ] && echo 1500 || echo 250)}
rss=${LOAD_MAX_RSS_MB:-$([ $sanitized = 1 ] && echo 2048 || echo 384)}

tmp=$(mktemp -d)
pid=""
cleanup() {
  [ -n "$pid" ] && kill -9 "$pid" 2>/dev/null || true
  rm -rf "$tmp"
}
trap cleanup EXIT

# 2000 samples, 3x32x32 pixels, 64-d F16 embeddings (two models): ~7 MB
"$BIN/featured-mkstore" --db "$tmp/db" --n 2000 --pixels 32 --dim 64 --quiet
"$BIN/taca-featured" --db "$tmp/db" --listen 127.0.0.1:0 --port-file "$tmp/ports" --log "$tmp/log" \
  --threads 2 --max-streams 64 &
pid=$!
for _ in $(seq 400); do [ -s "$tmp/ports" ] && break; sleep 0.05; done
port=$(sed -n 's/^grpc=//p' "$tmp/ports")
[ -n "$port" ] || { echo "taca-featured did not start"; cat "$tmp/log"; exit 1; }

echo "== mixed load: 16 clients x ${secs}s, batches of 16; bounds: p99 <= $p99 ms, server RSS <= $rss MB"
st=0
"$BIN/bench_featured" --server "127.0.0.1:$port" --mode mixed --clients 16 --seconds "$secs" --batch 16 \
  --pid "$pid" --max-p99-ms "$p99" --max-rss-mb "$rss" --min-ops 20 || st=$?

kill -TERM "$pid"
status=0
wait "$pid" || status=$?
pid=""
[ "$status" -eq 0 ] || { echo "FAIL: taca-featured exited $status after SIGTERM"; tail -20 "$tmp/log"; exit 1; }
[ "$st" -eq 0 ] || { echo "FAIL: the load checks failed (above)"; grep -v " info " "$tmp/log" | tail -20; exit 1; }
echo "ok"
