#!/usr/bin/env bash
# Operations tests on 127.0.0.1 (ephemeral ports):
#  1. taca-featured takes every option from TACA_FEATURED_<OPTION>; the command line wins;
#  2. disk full (file-size limit, EFBIG) while writing a checkpoint: a one-line error naming the
#     file, a non-zero exit, the previous checkpoint intact and no temporary file left behind;
#  3. one of two MPI ranks killed with kill -9: mpirun exits non-zero within a bounded time, and
#     --resume with the same arguments completes every step, the loss curve continuing;
#  4. backup of a store with mdb_copy -c while the server reads it: same content hash.
. "${TACA_SOURCE_DIR:?}/tests/integration/lib/common.sh"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_btl=self,vader
srv=""
mp=""
cleanup() { [ -n "$mp" ] && kill -9 "$mp" 2>/dev/null; [ -n "$srv" ] && kill -9 "$srv" 2>/dev/null; rm -rf "$tmp"; }
trap cleanup EXIT
model=$fix/clip/hf_gelu_f16   # old and new tower (image 40 px, embeddings 16)

wait_ports() { # wait_ports PID FILE: the daemon wrote its port file; sets port
  for _ in $(seq 200); do [ -s "$2" ] && break; kill -0 "$1" 2>/dev/null || break; sleep 0.05; done
  port=$(sed -n 's/^grpc=//p' "$2" 2>/dev/null)
  [ -n "$port" ] || { cat "$tmp/featured.log"; fail "taca-featured did not start"; }
}

"$bin/taca" synth --out "$tmp/data" --n 160 --size 40 --shards 1
"$bin/taca" precompute --model "$model" --name old --data "$tmp/data/00000.tar" --db "$tmp/db" --quiet

# --- 1. taca-featured configured from the environment ---
TACA_FEATURED_DB=$tmp/db TACA_FEATURED_LISTEN=127.0.0.1:0 TACA_FEATURED_PORT_FILE=$tmp/ports \
  TACA_FEATURED_MAX_BATCH=12 TACA_FEATURED_MAX_K=5000 \
  "$bin/taca-featured" --max-k 77 >> "$tmp/featured.log" 2>&1 &
srv=$!
wait_ports "$srv" "$tmp/ports"
info=$("$bin/taca" query --server "127.0.0.1:$port" --json info)
echo "$info" | grep -q '"max_batch": *12' || fail "TACA_FEATURED_MAX_BATCH not applied: $info"
echo "$info" | grep -q '"max_k": *77' || fail "--max-k on the command line did not win over TACA_FEATURED_MAX_K: $info"
kill -TERM "$srv"; wait "$srv" || fail "taca-featured did not stop cleanly on SIGTERM"; srv=""
set +e
out=$(TACA_FEATURED_MAX_BATCH=lots "$bin/taca-featured" --db "$tmp/db" --listen 127.0.0.1:0 2>&1); rc=$?
set -e
[ "$rc" -eq 2 ] || fail "a bad TACA_FEATURED_MAX_BATCH gave exit $rc: $out"
[ "$(echo "$out" | wc -l)" -eq 1 ] && echo "$out" | grep -q "TACA_FEATURED_MAX_BATCH" || fail "unclear error: $out"
echo "  environment: TACA_FEATURED_* applied, the command line wins; a bad value: $out"

# the server for the rest, with its token from TACA_FEATURED_TOKEN (the existing behaviour)
rm -f "$tmp/ports"
TACA_FEATURED_TOKEN=s3cret "$bin/taca-featured" --db "$tmp/db" --listen 127.0.0.1:0 --port-file "$tmp/ports" \
  >> "$tmp/featured.log" 2>&1 &
srv=$!
wait_ports "$srv" "$tmp/ports"
if "$bin/taca" query --server "127.0.0.1:$port" info > /dev/null 2>&1; then fail "TACA_FEATURED_TOKEN not required"; fi
# the health check (compose, deploy/stack) works without the token: it calls only grpc.health.v1
"$bin/taca" health "127.0.0.1:$port" | grep -qx SERVING || fail "taca health fails on a token-protected server"
export TACA_TOKEN=s3cret
"$bin/taca" query --server "127.0.0.1:$port" info > /dev/null || fail "the token from TACA_FEATURED_TOKEN is not accepted"

# --- 4. backup of the store while the server serves it (README, Operations) ---
mkdir "$tmp/backup"
mdb_copy -c "$tmp/db" "$tmp/backup" || fail "mdb_copy (lmdb-utils) failed"
h1=$("$bin/taca" query --db "$tmp/db" --json info --hash | grep -o '"content_hash":"[0-9a-f]*"')
h2=$("$bin/taca" query --db "$tmp/backup" --json info --hash | grep -o '"content_hash":"[0-9a-f]*"')
[ -n "$h1" ] && [ "$h1" = "$h2" ] || fail "the backup differs: $h1 vs $h2"
echo "  backup with mdb_copy -c while serving: $h2 (same as the store)"

common=(--server "127.0.0.1:$port" --token s3cret --new-model "$model" --projector-hidden 64 --quiet --threads 1
        --batch-size 8 --save-every 4)

# --- 2. disk full while writing a checkpoint ---
"$bin/taca-train" "${common[@]}" --steps 8 --out "$tmp/full" --log-json "$tmp/full.json"
before=$(cd "$tmp/full" && ls | sort | tr '\n' ' ')
sha_before=$(cd "$tmp/full" && sha256sum step-000008*.safetensors)
size=$(stat -c %s "$tmp/full/step-000008.safetensors")
limit=$(( size / 1024 / 2 ))   # 1024-byte blocks: half a parameter file
[ "$limit" -ge 4 ] || fail "checkpoint too small for the test ($size bytes)"
set +e
( trap '' XFSZ; ulimit -f "$limit"; export PMIX_MCA_gds=hash OMPI_MCA_btl=self
  exec "$bin/taca-train" "${common[@]}" --steps 16 --out "$tmp/full" --log-json "$tmp/full.json" --resume ) \
  2> "$tmp/full.err"
rc=$?
set -e
[ "$rc" -ne 0 ] || fail "taca-train succeeded although its checkpoint could not be written"
[ "$rc" -lt 128 ] || fail "taca-train died of signal $((rc - 128)) instead of reporting the error"
errline=$(grep -v '^taca-train: resuming\|^taca-train: [0-9]* rank(s) x' "$tmp/full.err" || true)
[ "$(echo "$errline" | wc -l)" -eq 1 ] || { cat "$tmp/full.err"; fail "expected one error line"; }
echo "$errline" | grep -q "$tmp/full/step-000012" || fail "the error does not name the checkpoint file: $errline"
echo "$errline" | grep -qi "too large\|space\|EFBIG" || fail "the error does not say why: $errline"
after=$(cd "$tmp/full" && ls | sort | tr '\n' ' ')
[ "$after" = "$before" ] || fail "files changed: before [$before] after [$after]"
(cd "$tmp/full" && echo "$sha_before" | sha256sum --quiet -c -) || fail "the previous checkpoint changed"
"$bin/taca-train" "${common[@]}" --steps 8 --out "$tmp/full" --resume 2> "$tmp/full2.err" ||
  { cat "$tmp/full2.err"; fail "the previous checkpoint does not load"; }
echo "  disk full (ulimit -f $limit KiB, checkpoint $size bytes): exit $rc with: $errline"
echo "  previous checkpoint step-000008 intact (same bytes, loads), no temporary file left"

# --- 3. a trainer rank killed: the run stops, --resume completes it ---
args=("${common[@]}" --batch-size 16 --steps 40)
mpirun --oversubscribe -np 2 "$bin/taca-train" "${args[@]}" --out "$tmp/ref" --log-json "$tmp/ref.json"
mpirun --oversubscribe -np 2 "$bin/taca-train" "${args[@]}" --out "$tmp/rank" --log-json "$tmp/rank.json" \
  2> "$tmp/rank.err" & mp=$!
for _ in $(seq 1000); do [ -f "$tmp/rank.json" ] && [ "$(wc -l < "$tmp/rank.json")" -ge 10 ] && break; sleep 0.01; done
ranks=$(pgrep -P "$mp" -x taca-train || true)
[ "$(echo "$ranks" | wc -w)" -eq 2 ] || fail "expected two rank processes under mpirun, found '$ranks'"
victim=$(echo "$ranks" | tail -1)
kill -9 "$victim"
t0=$(date +%s)
for _ in $(seq 300); do kill -0 "$mp" 2>/dev/null || break; sleep 0.1; done
if kill -0 "$mp" 2>/dev/null; then fail "mpirun still runs 30 s after a rank was killed"; fi
set +e; wait "$mp"; rc=$?; set -e; mp=""
elapsed=$(( $(date +%s) - t0 ))
[ "$rc" -ne 0 ] || fail "mpirun exited 0 although a rank was killed"
killed_at=$(wc -l < "$tmp/rank.json")
[ "$killed_at" -lt 40 ] || fail "the run finished before the kill took effect"
mpirun --oversubscribe -np 2 "$bin/taca-train" "${args[@]}" --out "$tmp/rank" --log-json "$tmp/rank.json" --resume \
  2> "$tmp/resume.err" || { cat "$tmp/resume.err"; fail "--resume after a killed rank failed"; }
"$py" - "$tmp" <<'PY' || fail "the resumed loss curve does not continue the interrupted one"
import json, sys
t = sys.argv[1]
a, b = [[json.loads(l) for l in open(f'{t}/{x}.json')] for x in ('ref', 'rank')]
assert [r['step'] for r in b] == list(range(40)), [r['step'] for r in b]
d = max(abs(x['loss'] - y['loss']) / abs(x['loss']) for x, y in zip(a, b))
print(f"  max relative loss difference to an uninterrupted 2-rank run over 40 steps: {d:.3g}")
sys.exit(0 if d == 0 else 1)  # measured: 0 (2-rank reductions are deterministic)
PY
echo "  rank $victim killed after $killed_at logged steps: mpirun exited $rc after ${elapsed}s;" \
  "resumed from $(sed -n 's/.*resuming from .*\(step-[0-9]*\).*/\1/p' "$tmp/resume.err"), all 40 steps logged once"

kill -TERM "$srv"; wait "$srv" || fail "taca-featured did not stop cleanly"; srv=""
echo "test_ops: all checks passed"
