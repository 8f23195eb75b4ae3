#!/usr/bin/env bash
# Scale features on 127.0.0.1 (ephemeral ports), on clustered synthetic vectors (so recall means
# something) and the small fixture CLIP model:
#  1. taca import: an embeddings-only store from F16 + F32 .npy files with keys; rerun = nothing to
#     do; an appended file extends it; a changed input is refused naming it; export returns the rows;
#  2. taca index (ivfflat, the default): recall@10 >= 0.95 against exact search at the default
#     nprobe, offline; so do ivfpq (k x 100 candidates rescored) and hnsw, and IVF over an HNSW coarse
#     quantiser; --refine is passed on (refine 1 loses recall) and bounded offline and online;
#  3. a stale index (the store changed since) is refused, offline and by taca-featured;
#  4. two shards, each with its own index, behind two servers: the client's merged top-k equals one
#     store with an index (exhaustive nprobe), and equals the exact top-k;
#  5. precompute --shard auto under mpirun -np 2 (and a Kubernetes Indexed Job's environment) writes
#     the same stores as explicit --shard 0/2 and 1/2.
. "${TACA_SOURCE_DIR:?}/tests/integration/lib/common.sh"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_btl=self,vader
# one OpenMP thread: faiss builds are deterministic then, and do not spin against the other tests
export OMP_NUM_THREADS=1
pids=()
cleanup() { # servers drain on SIGTERM and exit 0
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$tmp"
}
trap cleanup EXIT
model=$fix/clip/hf_gelu_f16

serve() { # serve DB NAME: starts taca-featured on an ephemeral port; sets port_NAME
  "$bin/taca-featured" --db "$1" --listen 127.0.0.1:0 --port-file "$tmp/$2.ports" >> "$tmp/$2.log" 2>&1 &
  pids+=($!)
  for _ in $(seq 200); do [ -s "$tmp/$2.ports" ] && break; sleep 0.05; done
  local p; p=$(sed -n 's/^grpc=//p' "$tmp/$2.ports")
  [ -n "$p" ] || { cat "$tmp/$2.log"; fail "taca-featured on $1 did not start"; }
  printf -v "port_$2" '%s' "$p"
}

# ---- data: 24000 vectors in 96 clusters, width 64; 200 queries near the centres ----
"$py" - "$tmp" <<'PY'
import sys, numpy as np
t = sys.argv[1]; rng = np.random.default_rng(7)
n, d, c = 24000, 64, 96
cent = rng.normal(size=(c, d)).astype(np.float32)
x = cent[rng.integers(0, c, n)] + 0.35 * rng.normal(size=(n, d)).astype(np.float32)
np.save(f'{t}/a.npy', x[:10000].astype(np.float16))
np.save(f'{t}/b.npy', x[10000:20000])
np.save(f'{t}/c.npy', x[20000:].astype(np.float16))
np.save(f'{t}/q.npy', cent[rng.integers(0, c, 200)] + 0.35 * rng.normal(size=(200, d)).astype(np.float32))
open(f'{t}/keys.txt', 'w').write(''.join(f'img/{i:06d}.jpg\n' for i in range(20000)))
PY

# ---- 1. import ----
"$bin/taca" import --db "$tmp/one" --name clip --npy "$tmp/a.npy" "$tmp/b.npy" --keys "$tmp/keys.txt" --quiet
again=$("$bin/taca" import --db "$tmp/one" --name clip --npy "$tmp/a.npy" "$tmp/b.npy" --keys "$tmp/keys.txt" 2>&1)
echo "$again" | grep -q "(0 new, 20000 from before" || fail "a rerun imported again: $again"
"$bin/taca" query --db "$tmp/one" lookup img/000123.jpg | grep -q "123" || fail "lookup by an imported key"
"$bin/taca" query --db "$tmp/one" export --model clip --modality image --out "$tmp/x.npy"
"$py" - "$tmp" <<'PY' || fail "export does not return the imported rows"
import sys, numpy as np
t = sys.argv[1]
x = np.load(f'{t}/x.npy'); want = np.concatenate([np.load(f'{t}/a.npy').astype(np.float32),
                                                  np.load(f'{t}/b.npy').astype(np.float16).astype(np.float32)])
assert x.shape == want.shape and np.array_equal(x, want), (x.shape, want.shape)
PY
cp "$tmp/b.npy" "$tmp/b2.npy"
"$py" -c "import numpy as np,sys; x=np.load(sys.argv[1]); x[5,3]+=1; np.save(sys.argv[1], x)" "$tmp/b2.npy"
if out=$("$bin/taca" import --db "$tmp/one" --name clip --npy "$tmp/a.npy" "$tmp/b2.npy" --keys "$tmp/keys.txt" 2>&1); then
  fail "a changed input was accepted"
fi
echo "$out" | grep -q "b2.npy (input 2) differs" || fail "the changed input is not named: $out"
echo "  import: 20000 rows, rerun idempotent, changed input refused"

# ---- 2. index + recall at the defaults ----
"$bin/taca" index --db "$tmp/one" --model clip --quiet > "$tmp/index.out"
grep -q "ivfflat IVF" "$tmp/index.out" || fail "index: $(cat "$tmp/index.out")"
q() { "$bin/taca" query --db "$1" --json search --model clip --modality image --vectors "$tmp/q.npy" --metric cosine -k 10 "${@:2}"; }
q "$tmp/one" > "$tmp/exact.jl"
q "$tmp/one" --ann > "$tmp/ann.jl"
recall() { "$py" - "$1" "$2" <<'PY'
import json, sys
a = [json.loads(l) for l in open(sys.argv[1])]; b = [json.loads(l) for l in open(sys.argv[2])]
assert len(a) == len(b) == 200
print(sum(len({h['index'] for h in x['results']} & {h['index'] for h in y['results']}) for x, y in zip(a, b)) / 2000)
PY
}
r=$(recall "$tmp/exact.jl" "$tmp/ann.jl")
echo "  ivfflat at default nprobe: recall@10 = $r"
"$py" -c "import sys; sys.exit(0 if float(sys.argv[1]) >= 0.95 else 1)" "$r" || fail "recall@10 $r < 0.95"
for kind in ivfpq hnsw; do
  cp -r "$tmp/one" "$tmp/$kind"
  "$bin/taca" index --db "$tmp/$kind" --model clip --kind $kind --quiet > "$tmp/$kind.out"
  q "$tmp/$kind" --ann > "$tmp/$kind.jl"
  r=$(recall "$tmp/exact.jl" "$tmp/$kind.jl")
  echo "  $kind at default settings: recall@10 = $r"
  "$py" -c "import sys; sys.exit(0 if float(sys.argv[1]) >= 0.95 else 1)" "$r" || fail "$kind recall@10 $r < 0.95"
done
# ivfpq rescores k x 100 candidates by default (recorded in the store); fewer candidates, less recall
grep -q "refine 100" "$tmp/ivfpq.out" || fail "ivfpq's default refine: $(cat "$tmp/ivfpq.out")"
grep -q "refine 4" "$tmp/hnsw.out" || fail "hnsw's default refine: $(cat "$tmp/hnsw.out")"
q "$tmp/ivfpq" --ann --refine 1 > "$tmp/ivfpq1.jl"
r1=$(recall "$tmp/exact.jl" "$tmp/ivfpq1.jl")
echo "  ivfpq with refine 1 (no margin to rescore): recall@10 = $r1"
"$py" -c "import sys; sys.exit(0 if float(sys.argv[1]) < 0.8 else 1)" "$r1" || fail "refine 1 gave recall $r1: was it passed on?"
# candidates are read without their blocks' checksums, the hits kept with them: a flipped bit in the
# top hit of query 0 (the low mantissa bit of its first element, so that it stays a hit) fails the search
cp -r "$tmp/ivfpq" "$tmp/flip"
top=$(head -n 1 "$tmp/ivfpq.jl" | "$py" -c "import json,sys; print(json.loads(sys.stdin.read())['results'][0]['index'])")
"$py" - "$tmp" "$top" <<'PY' || fail "could not find the top hit's row in data.mdb"
import sys, numpy as np
t, i = sys.argv[1], int(sys.argv[2])
x = np.concatenate([np.load(f'{t}/a.npy'), np.load(f'{t}/b.npy').astype(np.float16)])
row = x[i].tobytes()
with open(f'{t}/flip/data.mdb', 'r+b') as f:
    buf = f.read()
    at = buf.find(row)
    assert at >= 0 and buf.find(row, at + 1) < 0, at
    f.seek(at); f.write(bytes([buf[at] ^ 1]))
PY
set +e; msg=$(q "$tmp/flip" --ann 2>&1); rc=$?; set -e
[ "$rc" = 1 ] && echo "$msg" | grep -q "checksum" || fail "a corrupt block among the ANN hits: exit $rc, '$msg'"
echo "  a corrupt block among the ANN hits fails the search: $(echo "$msg" | tail -n 1)"
set +e; msg=$(q "$tmp/ivfpq" --refine 10 2>&1); rc=$?; set -e
[ "$rc" = 2 ] && echo "$msg" | grep -q -- "--refine go with --ann" || fail "--refine without --ann: exit $rc, '$msg'"
set +e; msg=$(q "$tmp/ivfpq" --ann --refine 1001 2>&1); rc=$?; set -e
[ "$rc" = 1 ] && echo "$msg" | grep -q "refine 1001: at most 1000" || fail "--refine 1001: exit $rc, '$msg'"
set +e; msg=$("$bin/taca" index --db "$tmp/ivfpq" --model clip --kind ivfpq --refine 5000 2>&1); rc=$?; set -e
[ "$rc" = 2 ] && echo "$msg" | grep -q "at most 1000" || fail "index --refine 5000: exit $rc, '$msg'"
# an HNSW coarse quantiser (the large-index form, auto from 4096 lists) searches like the flat one
cp -r "$tmp/one" "$tmp/coarse"
"$bin/taca" index --db "$tmp/coarse" --model clip --coarse hnsw --quiet > "$tmp/coarse.out"
grep -q "_HNSW32,Flat" "$tmp/coarse.out" || fail "--coarse hnsw: $(cat "$tmp/coarse.out")"
q "$tmp/coarse" --ann > "$tmp/coarse.jl"
r=$(recall "$tmp/exact.jl" "$tmp/coarse.jl")
echo "  ivfflat with an HNSW coarse quantiser at default nprobe: recall@10 = $r"
"$py" -c "import sys; sys.exit(0 if float(sys.argv[1]) >= 0.95 else 1)" "$r" || fail "--coarse hnsw recall@10 $r < 0.95"
set +e; msg=$("$bin/taca" index --db "$tmp/coarse" --model clip --coarse tree 2>&1); rc=$?; set -e
[ "$rc" = 2 ] && echo "$msg" | grep -q -- "--coarse" || fail "--coarse tree: exit $rc, '$msg'"

# ---- 3. stale index ----
cp -r "$tmp/one" "$tmp/stale"
"$bin/taca" import --db "$tmp/stale" --name clip --npy "$tmp/a.npy" "$tmp/b.npy" "$tmp/c.npy" --quiet 2>/dev/null &&
  fail "an import without the keys file that named the first rows was accepted"
"$bin/taca" import --db "$tmp/stale" --name more --npy "$tmp/c.npy" --first-index 20000 --quiet
if out=$(q "$tmp/stale" --ann 2>&1); then fail "a stale index was used"; fi
echo "$out" | grep -q "stale" || fail "no stale-index message: $out"
serve "$tmp/stale" stale
if out=$("$bin/taca" query --server "127.0.0.1:$port_stale" search --model clip --vectors "$tmp/q.npy" --metric cosine --ann 2>&1); then
  fail "taca-featured searched a stale index"
fi
echo "$out" | grep -q "stale" || fail "taca-featured: no stale-index message: $out"
"$bin/taca" query --server "127.0.0.1:$port_stale" search --model clip --vectors "$tmp/q.npy" --metric cosine > /dev/null ||
  fail "exact search stopped working beside a stale index"
echo "  stale index refused offline and online; exact search still served"

# ---- 4. two shards with indexes == one store with an index ----
"$py" -c "
import numpy as np, sys; t=sys.argv[1]
x=np.concatenate([np.load(f'{t}/a.npy').astype(np.float32), np.load(f'{t}/b.npy')])
np.save(f'{t}/h0.npy', x[:12000]); np.save(f'{t}/h1.npy', x[12000:])" "$tmp"
"$bin/taca" import --db "$tmp/s0" --name clip --npy "$tmp/h0.npy" --shard 0/2 --quiet
"$bin/taca" import --db "$tmp/s1" --name clip --npy "$tmp/h1.npy" --first-index 12000 --shard 1/2 --quiet
for s in s0 s1; do "$bin/taca" index --db "$tmp/$s" --model clip --nlist 64 --quiet > /dev/null; done
cp -r "$tmp/one" "$tmp/one64"
"$bin/taca" index --db "$tmp/one64" --model clip --nlist 64 --quiet > /dev/null
serve "$tmp/s0" s0; serve "$tmp/s1" s1; serve "$tmp/one64" one
qs() { "$bin/taca" query --server "$1" --json search --model clip --vectors "$tmp/q.npy" --metric cosine -k 10 "${@:2}"; }
qs "127.0.0.1:$port_s0,127.0.0.1:$port_s1" --ann --nprobe 64 > "$tmp/shards.jl"
qs "127.0.0.1:$port_one" --ann --nprobe 64 > "$tmp/onesrv.jl"
"$py" - "$tmp" <<'PY' || fail "two shards' merged ANN top-k differs from one store's"
import json, sys
t = sys.argv[1]
ld = lambda f: [[h['index'] for h in json.loads(l)['results']] for l in open(f'{t}/{f}')]
a, b, e = ld('shards.jl'), ld('onesrv.jl'), ld('exact.jl')
assert a == b, next((i, x, y) for i, (x, y) in enumerate(zip(a, b)) if x != y)
assert a == e, next((i, x, y) for i, (x, y) in enumerate(zip(a, e)) if x != y)
PY
echo "  two shards with indexes: merged top-k == one store == exact (nprobe = nlist)"
qs "127.0.0.1:$port_one" --ann --refine 3 > "$tmp/onesrv3.jl" || fail "Search with refine 3"
set +e; msg=$(qs "127.0.0.1:$port_one" --ann --refine 20000 -k 10 2>&1); rc=$?; set -e
[ "$rc" != 0 ] && echo "$msg" | grep -q "INVALID_ARGUMENT.*refine 20000" || fail "Search refine 20000: exit $rc, '$msg'"
qs "127.0.0.1:$port_one" --ann > /dev/null || fail "the server stopped serving after a refused refine"
echo "  refine on the wire: taken, bounded (INVALID_ARGUMENT), the server still serves"

# ---- 5. precompute --shard auto ----
"$bin/taca" synth --out "$tmp/data" --n 120 --size 40 --shards 4
data="$tmp/data/{00000..00003}.tar"
# --threads 1 everywhere: the float results of a model depend on its thread count (mpirun binds
# each rank to one core), and the stores are to be compared bit for bit
mpirun --oversubscribe -np 2 "$bin/taca" precompute --model "$model" --name old --data "$data" \
  --db "$tmp/auto-{shard}" --shard auto --threads 1 --quiet
for i in 0 1; do
  "$bin/taca" precompute --model "$model" --name old --data "$data" --db "$tmp/explicit-$i" --shard $i/2 --threads 1 --quiet
  a=$("$bin/taca" query --db "$tmp/auto-$i" info --hash | awk '/^content/{print $3}')
  b=$("$bin/taca" query --db "$tmp/explicit-$i" info --hash | awk '/^content/{print $3}')
  [ -n "$a" ] && [ "$a" = "$b" ] || fail "shard $i: --shard auto under mpirun ($a) differs from --shard $i/2 ($b)"
done
out=$(JOB_COMPLETION_INDEX=1 "$bin/taca" precompute --model "$model" --name old --data "$data" \
  --db "$tmp/k8s-{shard}" --shard auto --shard-count 2 --threads 1 2>&1)
echo "$out" | grep -q "shard 1/2 (from Kubernetes Indexed Job)" || fail "Kubernetes Indexed Job: $out"
c=$("$bin/taca" query --db "$tmp/k8s-1" info --hash | awk '/^content/{print $3}')
[ "$c" = "$b" ] || fail "JOB_COMPLETION_INDEX=1 wrote another store than --shard 1/2"
set +e
JOB_COMPLETION_INDEX=1 "$bin/taca" precompute --model "$model" --data "$data" --db "$tmp/x" --shard auto 2> "$tmp/err"
rc=$?
set -e
[ $rc -eq 2 ] && grep -q "needs the shard count" "$tmp/err" || fail "JOB_COMPLETION_INDEX without --shard-count: rc $rc, $(cat "$tmp/err")"
echo "  --shard auto: mpirun -np 2 and a Kubernetes Indexed Job == explicit --shard I/2"
echo "test_scale: ok"
