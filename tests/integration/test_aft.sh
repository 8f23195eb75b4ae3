#!/usr/bin/env bash
# Integration test of AFT (taca-train --objective aft) against real taca-featured servers on
# 127.0.0.1 (ephemeral ports), with `taca add-features` filling the store:
#  1. add-features: a .npy in index order, the same rows matched by key (reversed order), and a
#     random noise set (deterministic: a rerun writes the same content hash);
#  2. aft, stl and kd in one command on the linear downstream model: the report (test accuracy per
#     method, rho per source model), checkpoints with the documented tensors, log lines;
#  3. two MPI ranks of batch B/2 reproduce one rank of batch B (the term on the all-gathered batch);
#  4. a ViT downstream model (a CLIP vision config) runs and checkpoints under its HF names;
#  5. kill -9 in the middle of the second method, then --resume: the log, the checkpoints and the
#     report equal an uninterrupted run's;
#  6. bad options and inputs: one-line errors.
. "${TACA_SOURCE_DIR:?}/tests/integration/lib/common.sh"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_btl=self,vader
pids=()
cleanup() { for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done; rm -rf "$tmp"; }
trap cleanup EXIT
model=$fix/clip/hf_gelu_f16   # 40 px images, embeddings 16

start_server() { # start_server DB VAR: starts taca-featured on DB, sets VAR to its port
  rm -f "$tmp/$1.ports"
  "$bin/taca-featured" --db "$tmp/$1" --listen 127.0.0.1:0 --port-file "$tmp/$1.ports" >> "$tmp/$1.log" 2>&1 &
  pids+=($!)
  for _ in $(seq 100); do [ -s "$tmp/$1.ports" ] && break; sleep 0.05; done
  printf -v "$2" '%s' "$(sed -n 's/^grpc=//p' "$tmp/$1.ports")"
}

"$bin/taca" synth --out "$tmp/data" --n 256 --size 40 --shards 2
"$bin/taca" synth --out "$tmp/tdata" --n 96 --start 5000 --size 40
"$bin/taca" precompute --model "$model" --name clipA --data "$tmp/data/{00000..00001}.tar" --db "$tmp/db" --quiet \
  --pixel-codec jpeg   # the feed and the test set decode JPEG crops here (raw: test_train.sh)
"$bin/taca" precompute --model "$model" --name clipA --data "$tmp/tdata/00000.tar" --db "$tmp/tdb" --quiet \
  --pixel-codec jpeg

# --- 1. add-features ---
"$bin/taca" query --db "$tmp/db" export --model clipA --modality image --out "$tmp/a.npy"
"$py" - "$tmp" <<'PY'
import json, numpy as np, subprocess, sys, os
t = sys.argv[1]
a = np.load(f'{t}/a.npy')
rng = np.random.default_rng(0)
b = np.tanh(a @ rng.standard_normal((16, 12))).astype(np.float32)   # a second "model", 12 wide
np.save(f'{t}/b.npy', b)
np.save(f'{t}/b_rev.npy', b[::-1].copy())
PY
"$bin/taca" add-features --db "$tmp/db" --name clipB --npy "$tmp/b.npy" --dtype f32 --quiet
# the same rows by key, in reverse order, into a second model
"$py" - "$tmp" "$bin" <<'PY'
import json, subprocess, sys
t, b = sys.argv[1], sys.argv[2]
# keys of indices 0..N-1 via export's order: lookup every key from the tar shards' names
import tarfile, glob
keys = []
for f in sorted(glob.glob(f'{t}/data/*.tar')):
    for m in tarfile.open(f).getmembers():
        k = m.name.rsplit('.', 1)[0]
        if not keys or keys[-1] != k: keys.append(k)
open(f'{t}/keys_rev.txt', 'w').write('\n'.join(reversed(keys)) + '\n')
PY
"$bin/taca" add-features --db "$tmp/db" --name clipB2 --npy "$tmp/b_rev.npy" --keys "$tmp/keys_rev.txt" --dtype f32 --quiet
"$bin/taca" query --db "$tmp/db" export --model clipB2 --modality image --out "$tmp/b2.npy"
"$py" -c "import numpy as np,sys; a,b=np.load('$tmp/b.npy'),np.load('$tmp/b2.npy'); sys.exit(0 if np.array_equal(a,b) else 1)" \
  || fail "rows matched by key differ from rows in index order"
"$bin/taca" add-features --db "$tmp/db" --name noise --random 16 --seed 7 --quiet
h1=$("$bin/taca" query --db "$tmp/db" info --hash | sed -n "s/^content *xxh3-128 //p")
TACA_DB="$tmp/db" TACA_NAME=noise TACA_RANDOM=16 TACA_SEED=7 "$bin/taca" add-features --quiet  # the same, from TACA_*
h2=$("$bin/taca" query --db "$tmp/db" info --hash | sed -n "s/^content *xxh3-128 //p")
[ -n "$h1" ] && [ "$h1" = "$h2" ] || fail "rerunning add-features changed the store ($h1 vs $h2)"
"$bin/taca" add-features --db "$tmp/db" --name bad --npy "$tmp/b.npy" --keys /dev/null 2>"$tmp/err" && fail "a keys file of the wrong length was accepted"
grep -q "has 0 lines" "$tmp/err" || fail "unclear error: $(cat "$tmp/err")"
"$bin/taca" add-features --db "$tmp/db" --name noise --random 8 2>"$tmp/err" && fail "a model re-registered with another width"
grep -q "already registered" "$tmp/err" || fail "unclear error: $(cat "$tmp/err")"
echo "  add-features: .npy rows by index and by key identical; noise rerun keeps content hash $h1"

start_server db p1
start_server tdb p2
[ -n "$p1" ] && [ -n "$p2" ] || fail "taca-featured did not start"
common=(--objective aft --server "127.0.0.1:$p1" --test-server "127.0.0.1:$p2" --features clipA,clipB,noise
        --quiet --threads 1)

# --- 2. three methods in one command ---
"$bin/taca-train" "${common[@]}" --downstream linear:16 --methods aft,stl,kd --steps 40 --batch-size 32 \
  --out "$tmp/cmp" --log-json "$tmp/cmp.json" > "$tmp/cmp.txt"
grep -q "AFT comparison" "$tmp/cmp.txt" || fail "no comparison table"
"$py" - "$tmp" <<'PY' || fail "report, log or checkpoints are wrong"
import json, struct, sys, numpy as np
t = sys.argv[1]
r = json.load(open(f'{t}/cmp/report.json'))
assert [m['method'] for m in r['methods']] == ['aft', 'stl', 'kd'], r['methods']
assert r['test_samples'] == 96 and r['classes'] >= 2
for m in r['methods']:
    assert 0 <= m['test_acc'] <= 1 and m['train_ce'] > 0, m
f = {x['model']: x for x in r['features']}
assert [x['dim'] for x in r['features']] == [16, 12, 16]
for x in r['features']:
    assert 0 < x['rho_min'] <= x['rho_mean'] <= x['rho_max'] < 1, x
log = [json.loads(l) for l in open(f'{t}/cmp.json')]
assert [l['step'] for l in log if l['method'] == 'kd'] == list(range(40))
assert all(len(l['rho_mean']) == 3 for l in log if l['method'] == 'aft')
def load(p):
    b = open(p, 'rb').read(); n = struct.unpack('<Q', b[:8])[0]; h = json.loads(b[8:8 + n])
    return h.pop('__metadata__'), {k: (v['shape'], v['dtype']) for k, v in h.items()}
meta, ts = load(f'{t}/cmp/aft/step-000040.safetensors')
assert ts['aft.s'] == ([44], 'F32') and ts['features.weight'] == ([16, 4800], 'F32'), ts
assert ts['classifier.weight'][0] == [r['classes'], 16]
assert meta['taca.method'] == 'aft' and meta['taca.feature_dims'] == '16,12,16', meta
_, ts = load(f'{t}/cmp/kd/step-000040.safetensors')
assert ts['kd.proj.weight'] == ([44, 16], 'F32') and ts['kd.proj.bias'] == ([44], 'F32')
_, ts = load(f'{t}/cmp/stl/step-000040.safetensors')
assert not any(k.startswith(('aft.', 'kd.')) for k in ts)
# the noise features: AFT gives them the lowest weight
print('  ' + ', '.join(f"{m['method']} test acc {100 * m['test_acc']:.1f}%" for m in r['methods']) +
      '; rho ' + ', '.join(f"{x['model']} {x['rho_mean']:.3f}" for x in r['features']))
assert f['noise']['rho_mean'] < min(f['clipA']['rho_mean'], f['clipB']['rho_mean']), f
PY

# --- 3. two ranks of batch 16 == one rank of batch 32 ---
args=("${common[@]}" --downstream linear:16 --methods aft,kd --steps 8 --batch-size 32)
"$bin/taca-train" "${args[@]}" --out "$tmp/one" --log-json "$tmp/one.json" > /dev/null
mpirun --oversubscribe -np 2 "$bin/taca-train" "${args[@]}" --out "$tmp/two" --log-json "$tmp/two.json" > /dev/null
"$py" - "$tmp" <<'PY' || fail "two ranks differ from one rank"
import json, struct, sys, numpy as np
t = sys.argv[1]
def load(p):
    b = open(p, 'rb').read(); n = struct.unpack('<Q', b[:8])[0]; h = json.loads(b[8:8 + n])
    return {k: np.frombuffer(b[8 + n + v['data_offsets'][0]:8 + n + v['data_offsets'][1]], np.float32)
            for k, v in h.items() if k != '__metadata__'}
a, b = [[json.loads(l) for l in open(f'{t}/{x}.json')] for x in ('one', 'two')]
le = max(abs(x[k] - y[k]) / max(abs(x[k]), 1e-9) for x, y in zip(a, b) for k in ('loss', 'loss_ce'))
# Parameters: relative error 1e-4 per tensor, except for elements whose gradient is ~0 up to float
# noise: Adam moves those by up to lr per step in either direction (lr g / (|g| + eps)), so the
# summation order of two ranks may move them differently; at most 0.01% of the elements may differ
# by up to 2 x 8 steps x lr = 0.016.
pe, outliers, total = 0, 0, 0
for m in ('aft', 'kd'):
    pa, pb = load(f'{t}/one/{m}/step-000008.safetensors'), load(f'{t}/two/{m}/step-000008.safetensors')
    assert pa.keys() == pb.keys()
    for k in pa:
        d, scale = np.abs(pa[k] - pb[k]), max(np.abs(pa[k]).max(), 1e-12)
        far = d > 1e-4 * scale
        assert (d[far] <= 2 * 8 * 1e-3).all(), (m, k, d.max())
        outliers += int(far.sum()); total += d.size
        pe = max(pe, (d[~far].max() if (~far).any() else 0) / scale)
print(f"  1 rank x 32 vs 2 ranks x 16: loss rel. diff {le:.2g}, parameter rel. diff after 8 updates {pe:.2g} "
      f"({outliers} of {total} elements with ~0 gradient moved apart by Adam)")
sys.exit(0 if le < 3e-5 and outliers <= total * 1e-4 else 1)
PY

# --- 4. a ViT downstream model ---
"$bin/taca-train" "${common[@]}" --downstream "$model/config.json" --methods aft --steps 3 --batch-size 8 \
  --out "$tmp/vit" > /dev/null
"$py" - "$tmp" <<'PY' || fail "ViT checkpoint"
import json, struct, sys
b = open(sys.argv[1] + '/vit/aft/step-000003.safetensors', 'rb').read()
h = json.loads(b[8:8 + struct.unpack('<Q', b[:8])[0]])
assert 'vision_model.encoder.layers.1.mlp.fc2.weight' in h and h['visual_projection.weight']['shape'] == [16, 40]
assert h['classifier.weight']['shape'][1] == 16 and 'aft.s' in h
PY

# --- 5. kill -9 and --resume ---
args=("${common[@]}" --downstream linear:16 --methods aft,kd,stl --steps 150 --batch-size 32 --save-every 10)
"$bin/taca-train" "${args[@]}" --out "$tmp/ref" --log-json "$tmp/ref.json" > /dev/null
"$bin/taca-train" "${args[@]}" --out "$tmp/res" --log-json "$tmp/res.json" > /dev/null & pid=$!
for _ in $(seq 2000); do [ -f "$tmp/res.json" ] && [ "$(wc -l < "$tmp/res.json")" -ge 190 ] && break; sleep 0.005; done
kill -9 "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true
killed_at=$(wc -l < "$tmp/res.json")
[ ! -f "$tmp/res/report.json" ] || fail "the run finished before it was killed (no resume to test)"
"$bin/taca-train" "${args[@]}" --out "$tmp/res" --log-json "$tmp/res.json" --resume > /dev/null
"$py" - "$tmp" "$killed_at" <<'PY' || fail "the resumed AFT run differs from the uninterrupted one"
import json, sys
t = sys.argv[1]
a, b = [[json.loads(l) for l in open(f'{t}/{x}.json')] for x in ('ref', 'res')]
key = lambda r: (r['method'], r['step'])
assert [key(r) for r in a] == [key(r) for r in b], 'the resumed log has other steps'
d = max(abs(x['loss'] - y['loss']) for x, y in zip(a, b))
ra, rb = [json.load(open(f'{t}/{x}/report.json')) for x in ('ref', 'res')]
strip = lambda r: [{k: v for k, v in m.items() if k != 'seconds'} for m in r['methods']]
assert strip(ra) == strip(rb), (strip(ra), strip(rb))
assert ra['features'] == rb['features']
print(f"  killed after {sys.argv[2]} logged steps, resumed: loss curves differ by {d:.3g}; reports equal")
sys.exit(0 if d == 0 else 1)
PY
for m in aft kd stl; do
  cmp "$tmp/ref/$m/step-000150.safetensors" "$tmp/res/$m/step-000150.safetensors" || fail "$m: final tensors differ"
done

# --- 6. errors ---
expect_error() { # expect_error STATUS PATTERN ARGS...
  local want=$1 pat=$2; shift 2
  set +e; "$@" > /dev/null 2> "$tmp/err"; local rc=$?; set -e
  [ "$rc" = "$want" ] || fail "exit $rc (want $want): $*"
  grep -q -- "$pat" "$tmp/err" || fail "no '$pat' in: $(cat "$tmp/err")"
  [ "$(wc -l < "$tmp/err")" = 1 ] || fail "more than one line: $(cat "$tmp/err")"
}
expect_error 2 "needs --server, --features" "$bin/taca-train" --objective aft --server 127.0.0.1:1 --out "$tmp/e"
expect_error 2 "aft, stl, kd" "$bin/taca-train" "${common[@]}" --downstream linear --methods aft,foo --out "$tmp/e"
expect_error 1 "'nope' is not stored" "$bin/taca-train" --objective aft --server "127.0.0.1:$p1" --features clipA,nope \
  --num-classes 30 --downstream linear --out "$tmp/e" --quiet
expect_error 1 "takes 224 px images" "$bin/taca-train" "${common[@]}" --downstream ViT-B-16 --out "$tmp/e"
expect_error 1 "linear:D" "$bin/taca-train" "${common[@]}" --downstream linear:x --out "$tmp/e"
expect_error 1 "outside --num-classes 2" "$bin/taca-train" "${common[@]}" --downstream linear --num-classes 2 \
  --steps 50 --out "$tmp/e"
echo "OK"
