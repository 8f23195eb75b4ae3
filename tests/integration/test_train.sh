#!/usr/bin/env bash
# Integration test of taca-train against a real taca-featured on 127.0.0.1 (ephemeral port):
#  1. two MPI ranks with batch B/2 each reproduce one rank with batch B (losses and parameters);
#  2. kill -9 mid-run, then --resume: the loss curve continues exactly where it was;
#  3. the feature server killed with kill -9 and restarted mid-run: training carries on;
#  4. a server that never comes back: a clear error after the retry budget, last checkpoint intact;
#  5. bad options: one-line errors, exit 2.
. "${TACA_SOURCE_DIR:?}/tests/integration/lib/common.sh"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_btl=self,vader
srv=""
cleanup() { [ -n "$srv" ] && kill -9 "$srv" 2>/dev/null; rm -rf "$tmp"; }
trap cleanup EXIT
model=$fix/clip/hf_gelu_f16   # old and new tower in this test (image 40 px, embeddings 16)

start_server() { # start_server PORT (0 = ephemeral); sets srv and port
  rm -f "$tmp/ports"
  "$bin/taca-featured" --db "$tmp/db" --listen "127.0.0.1:$1" --port-file "$tmp/ports" >> "$tmp/featured.log" 2>&1 &
  srv=$!
  for _ in $(seq 100); do [ -s "$tmp/ports" ] && break; sleep 0.05; done
  port=$(sed -n 's/^grpc=//p' "$tmp/ports")
  [ -n "$port" ] || { cat "$tmp/featured.log"; fail "taca-featured did not start"; }
}

"$bin/taca" synth --out "$tmp/data" --n 240 --size 40 --shards 2
"$bin/taca" precompute --model "$model" --name old --data "$tmp/data/{00000..00001}.tar" --db "$tmp/db" --quiet
start_server 0
common=(--server "127.0.0.1:$port" --new-model "$model" --projector-hidden 64 --quiet --threads 1)

# --- 1. two ranks of batch 8 == one rank of batch 16 ---
"$bin/taca-train" "${common[@]}" --batch-size 16 --steps 8 --out "$tmp/one" --log-json "$tmp/one.json"
mpirun --oversubscribe -np 2 "$bin/taca-train" "${common[@]}" --batch-size 16 --steps 8 --out "$tmp/two" --log-json "$tmp/two.json"
"$py" - "$tmp" <<'PY' || fail "two ranks differ from one rank"
import json, struct, sys, numpy as np
t = sys.argv[1]
def load(p):
    b = open(p, 'rb').read(); n = struct.unpack('<Q', b[:8])[0]; h = json.loads(b[8:8 + n])
    return {k: np.frombuffer(b[8 + n + v['data_offsets'][0]:8 + n + v['data_offsets'][1]], np.float32)
            for k, v in h.items() if k != '__metadata__'}
a, b = [[json.loads(l) for l in open(f'{t}/{x}.json')] for x in ('one', 'two')]
assert [r['step'] for r in a] == list(range(8)) == [r['step'] for r in b]
le = max(abs(x[k] - y[k]) / abs(x[k]) for x, y in zip(a, b) for k in ('loss', 'loss_contra', 'loss_distill'))
pa, pb = load(f'{t}/one/step-000008.safetensors'), load(f'{t}/two/step-000008.safetensors')
assert pa.keys() == pb.keys()
# Parameters agree to 1e-4 of each tensor's max, except where Adam amplifies float noise: an element
# whose gradient is ~0 moves by lr*g/(|g|+eps), up to lr per step whatever the size of the noise. At
# most 0.01% of all elements (at least 1) may take such a move, bounded by 2*steps*lr (lr 2e-4).
rel = {k: np.abs(pa[k] - pb[k]) / max(np.abs(pa[k]).max(), 1e-12) for k in pa}
noisy = sum(int((r > 1e-4).sum()) for r in rel.values())
total = sum(r.size for r in rel.values())
bound = max(float(np.abs(pa[k] - pb[k]).max()) for k in pa)
pe = max(float(np.sort(r)[-noisy - 1]) if noisy < r.size else 0.0 for r in rel.values())
print(f"  1 rank x 16 vs 2 ranks x 8: loss rel. diff {le:.2g}, parameter rel. diff after 8 updates {pe:.2g} "
      f"({noisy} of {total} elements beyond 1e-4, largest move {bound:.2g})")
sys.exit(0 if le < 1e-5 and noisy <= max(1, total // 10000) and bound <= 2 * 8 * 2e-4 else 1)
PY

# --- 2. kill -9 and resume: the loss curve continues ---
args=("${common[@]}" --batch-size 16 --steps 30 --save-every 4)
"$bin/taca-train" "${args[@]}" --out "$tmp/ref" --log-json "$tmp/ref.json"
"$bin/taca-train" "${args[@]}" --out "$tmp/res" --log-json "$tmp/res.json" & pid=$!
for _ in $(seq 400); do [ -f "$tmp/res.json" ] && [ "$(wc -l < "$tmp/res.json")" -ge 10 ] && break; sleep 0.01; done
kill -9 "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true
killed_at=$(wc -l < "$tmp/res.json")
"$bin/taca-train" "${args[@]}" --out "$tmp/res" --log-json "$tmp/res.json" --resume
"$py" - "$tmp" "$killed_at" <<'PY' || fail "the resumed loss curve differs from the uninterrupted one"
import json, sys
t = sys.argv[1]
a, b = [[json.loads(l) for l in open(f'{t}/{x}.json')] for x in ('ref', 'res')]
assert [r['step'] for r in b] == list(range(30)), [r['step'] for r in b]
d = max(abs(x['loss'] - y['loss']) for x, y in zip(a, b))
print(f"  killed after {sys.argv[2]} logged steps, resumed: max |loss difference| over 30 steps {d:.3g}")
sys.exit(0 if d == 0 else 1)
PY
cmp "$tmp/ref/step-000030.safetensors" "$tmp/res/step-000030.safetensors" || fail "final parameters differ after resume"

# --- 3. the server restarts mid-run: training carries on ---
"$bin/taca-train" "${common[@]}" --batch-size 16 --steps 60 --out "$tmp/restart" --log-json "$tmp/restart.json" \
  --retry-budget-ms 20000 & pid=$!
for _ in $(seq 400); do [ -f "$tmp/restart.json" ] && [ "$(wc -l < "$tmp/restart.json")" -ge 3 ] && break; sleep 0.01; done
kill -9 "$srv"; wait "$srv" 2>/dev/null || true
sleep 0.5
start_server "$port"
wait "$pid" || fail "training did not survive a server restart"
[ "$(wc -l < "$tmp/restart.json")" -eq 60 ] || fail "expected 60 logged steps after the restart"
echo "  feature server killed and restarted mid-run: training finished its 60 steps"

# --- 4. the server never comes back: bounded, clear error, checkpoint intact ---
"$bin/taca-train" "${common[@]}" --batch-size 16 --steps 100000 --save-every 5 --out "$tmp/gone" \
  --log-json "$tmp/gone.json" --retry-budget-ms 2000 --timeout-ms 2000 2> "$tmp/gone.err" & pid=$!
for _ in $(seq 400); do [ -f "$tmp/gone.json" ] && [ "$(wc -l < "$tmp/gone.json")" -ge 12 ] && break; sleep 0.01; done
kill -9 "$srv"; wait "$srv" 2>/dev/null || true; srv=""
t0=$(date +%s)
if wait "$pid"; then fail "training succeeded without a server"; fi
elapsed=$(( $(date +%s) - t0 ))
[ "$elapsed" -le 30 ] || fail "giving up took ${elapsed}s"
grep -q "UNAVAILABLE\|unavailable\|connect" "$tmp/gone.err" || { cat "$tmp/gone.err"; fail "no clear error"; }
# not silent while it retries: one line per backoff step, naming the server and the error
grep -q "^taca-train: rank [01]: 127.0.0.1:[0-9]*: StreamEpoch: UNAVAILABLE: .*; retrying in " "$tmp/gone.err" ||
  { cat "$tmp/gone.err"; fail "no line per backoff step while the server is gone"; }
last=$(ls "$tmp/gone" | sed -n 's/^step-\([0-9]*\)\.safetensors$/\1/p' | sort | tail -1)
"$py" - "$tmp/gone/step-$last.safetensors" <<'PY' || fail "last checkpoint unreadable"
import json, struct, sys
b = open(sys.argv[1], 'rb').read(); n = struct.unpack('<Q', b[:8])[0]; h = json.loads(b[8:8 + n])
assert 8 + n + max(v['data_offsets'][1] for k, v in h.items() if k != '__metadata__') == len(b)
PY
echo "  server gone for good: stopped after ${elapsed}s with: $(tail -1 "$tmp/gone.err")"
echo "  last checkpoint step-$last intact"

# --- 5. bad options ---
for bad in "--batch-size 0" "--steps -1" "--loss nope" "--adapter-layers 5-99" "--objective other"; do
  set +e; out=$("$bin/taca-train" "${common[@]}" --out "$tmp/bad" $bad 2>&1); rc=$?; set -e
  [ "$rc" -ne 0 ] || fail "'$bad' was accepted"
  [ "$(echo "$out" | wc -l)" -eq 1 ] || fail "'$bad' gave more than one line: $out"
done
echo "test_train: all checks passed"
