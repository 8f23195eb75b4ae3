#!/usr/bin/env bash
# featured_malformed.sh: taca-featured under malformed traffic from a raw HTTP/2 client
# (featured_malformed.py: garbage instead of the preface, broken frames, oversized frame lengths, bogus
# paths, broken gRPC length prefixes, huge declared lengths, invalid protobuf payloads), checking after
# every case that the server still answers; then that it stops cleanly on SIGTERM (exit 0) and that its
# --log-format json log is valid JSON lines with the gRPC errors as structured events.
# Skips (77) without python3-h2 (deploy/install-deps.sh installs it).
set -euo pipefail
BIN=${TACA_BIN_DIR:?}
SRC=${TACA_SOURCE_DIR:?}
PY=/usr/bin/python3
"$PY" -c 'import h2' 2>/dev/null || { echo "skip: needs python3-h2 (deploy/install-deps.sh)"; exit 77; }

tmp=$(mktemp -d)
pid=""
cleanup() {
  [ -n "$pid" ] && kill -9 "$pid" 2>/dev/null || true
  rm -rf "$tmp"
}
trap cleanup EXIT

"$BIN/featured-mkstore" --db "$tmp/db" --n 40 --pixels 4 --quiet
"$BIN/taca-featured" --db "$tmp/db" --listen 127.0.0.1:0 --metrics 127.0.0.1:0 --port-file "$tmp/ports" \
  --log "$tmp/log" --log-format json --threads 2 &
pid=$!
for _ in $(seq 400); do [ -s "$tmp/ports" ] && break; sleep 0.05; done
port=$(sed -n 's/^grpc=//p' "$tmp/ports")
[ -n "$port" ] || { echo "taca-featured did not start"; cat "$tmp/log"; exit 1; }

st=0
timeout 600 "$PY" "$SRC/tests/integration/featured_malformed.py" "$port" "$BIN/taca" || st=$?
kill -0 "$pid" 2>/dev/null || { echo "FAIL: taca-featured died"; cat "$tmp/log"; exit 1; }
kill -TERM "$pid"
status=0
wait "$pid" || status=$?
pid=""
[ "$status" -eq 0 ] || { echo "FAIL: taca-featured exited $status after SIGTERM"; tail -20 "$tmp/log"; exit 1; }
[ "$st" -eq 0 ] || { echo "FAIL: malformed-traffic checks failed (log: $(wc -l < "$tmp/log") lines)"; exit 1; }

# The JSON log: every line one object with ts, level, msg; the INVALID_ARGUMENT replies as rpc_error events.
"$PY" - "$tmp/log" <<'PY'
import json, sys
events = []
with open(sys.argv[1], 'rb') as f:
    for n, raw in enumerate(f, 1):
        o = json.loads(raw.decode('utf-8'))  # strict: invalid UTF-8 or JSON fails the test
        assert isinstance(o, dict) and {'ts', 'level', 'msg'} <= o.keys(), (n, o)
        events.append(o)
errs = [o for o in events if o.get('event') == 'rpc_error']
assert any(o['code'] == 'INVALID_ARGUMENT' and o['method'] == 'GetBatch' and 'malformed' in o['detail']
           for o in errs), 'no INVALID_ARGUMENT rpc_error event for GetBatch'
assert any(o.get('event') == 'serving' and isinstance(o.get('port'), int) for o in events), 'no serving event'
assert events[-1].get('event') == 'stopped' and events[-1].get('exit_status') == 0, events[-1]
grpc = [o for o in events if o.get('event') == 'grpc']  # gRPC core's own messages (a bad content-type)
assert grpc and all(isinstance(o.get('line'), int) for o in grpc), 'no gRPC core message in the log'
print(f"json log: {len(events)} lines, {len(errs)} rpc_error events, {len(grpc)} from gRPC core, all valid")
PY
echo "ok"
