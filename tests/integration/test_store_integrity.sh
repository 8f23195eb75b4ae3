#!/usr/bin/env bash
# Integrity end to end (issue 19):
#  1. a seeded sweep of bit flips and truncations of a small store: every CLI answer is the clean
#     store's or a one-line error that is not "not found"; taca-featured on damaged copies answers
#     DATA_LOSS or a clean error and never dies (store_sweep.py);
#  2. precompute and add-features refuse work they did not do, each with a message naming the
#     cause: new or changed inputs on a finished store, an existing name with other weights, every
#     sample rejected, duplicate --keys, non-finite rows (no empty model left behind);
#  3. bad samples do not abort a run: over-long and non-UTF-8 keys are rejected per sample, a
#     truncated shard is named and the run goes on; --data takes several paths;
#  4. taca verify on a clean store, taca drop-model.
. "${TACA_SOURCE_DIR:?}/tests/integration/lib/common.sh"
model=$fix/clip/hf_gelu_f16   # image size 40
expect_fail() { # expect_fail WHAT PATTERN -- COMMAND...: non-zero exit, last stderr line matches
  local what=$1 pat=$2; shift 3
  if "$@" > "$tmp/out" 2> "$tmp/err"; then fail "$what: exit 0"; fi
  tail -n 1 "$tmp/err" | grep -qi -- "$pat" || { cat "$tmp/err"; fail "$what: message does not match '$pat'"; }
  echo "  ok  $what: $(tail -n 1 "$tmp/err")"
}

"$bin/taca" synth --out "$tmp/d" --n 24 --size 40 --shards 2 --seed 3
pre=(--model "$model" --batch-size 8 --quiet)
"$bin/taca" precompute "${pre[@]}" --data "$tmp/d/00000.tar" "$tmp/d/00001.tar" --db "$tmp/db"
"$bin/taca" verify --db "$tmp/db" > "$tmp/verify.txt" || { cat "$tmp/verify.txt"; fail "verify of a clean store"; }
grep -q "as recorded by precompute ingest hf_gelu_f16" "$tmp/verify.txt" || { cat "$tmp/verify.txt"; fail "no recorded hash"; }

# --- 1. the sweep ---
mkdir "$tmp/sweep"
cp "$tmp/d/00000.tar" "$tmp/sweep/data.tar"
"$py" "$src/tests/integration/store_sweep.py" "$bin" "$tmp/db" "$tmp/sweep" 19 48 6 3 || fail "corruption sweep"

# --- 2. refused work ---
"$bin/taca" synth --out "$tmp/more" --n 36 --size 40 --shards 3 --seed 3
expect_fail "a finished store given a new shard" "not among" -- \
  "$bin/taca" precompute "${pre[@]}" --data "$tmp/d/{00000..00001}.tar" "$tmp/more/00002.tar" --db "$tmp/db"
"$bin/taca" synth --out "$tmp/other" --n 24 --size 40 --shards 2 --seed 4
cp "$tmp/other/00001.tar" "$tmp/d/00001.tar"   # the same entry count, other content
expect_fail "a finished store given a changed shard" "changed" -- \
  "$bin/taca" precompute "${pre[@]}" --data "$tmp/d/{00000..00001}.tar" --db "$tmp/db"
cp -r "$model" "$tmp/m2"
"$py" - "$tmp/m2/model.safetensors" <<'PY'
import sys
b = bytearray(open(sys.argv[1], 'rb').read()); b[-1] ^= 1; open(sys.argv[1], 'wb').write(b)
PY
expect_fail "an existing --name with other weights" "weights" -- \
  "$bin/taca" precompute "${pre[@]}" --model "$tmp/m2" --name hf_gelu_f16 --db "$tmp/db"
"$py" - "$tmp/bad.tar" <<'PY'
import io, sys, tarfile
with tarfile.open(sys.argv[1], 'w') as t:
    for i in range(3):
        for ext, data in (('png', b'not an image'), ('txt', b'a caption')):
            ti = tarfile.TarInfo(f's{i}.{ext}'); ti.size = len(data); t.addfile(ti, io.BytesIO(data))
PY
expect_fail "every sample rejected" "no sample was stored" -- \
  "$bin/taca" precompute "${pre[@]}" --batch-size 1 --data "$tmp/bad.tar" --db "$tmp/db_bad"  # 2 batches committed
expect_fail "an unfinished ingest given other data" "unfinished ingest.*read other data: '$tmp/more/00000.tar' is not among" -- \
  "$bin/taca" precompute "${pre[@]}" --data "$tmp/more/00000.tar" --db "$tmp/db_bad"
"$bin/taca" query --db "$tmp/db" export --model hf_gelu_f16 --modality image --out "$tmp/img.npy"
"$py" - "$tmp" <<'PY'
import sys, numpy as np
t = sys.argv[1]
x = np.load(f'{t}/img.npy')
keys = [f'{i:09d}' for i in range(len(x))]
keys[3] = keys[1]
open(f'{t}/dup.txt', 'w').write('\n'.join(keys) + '\n')
y = x.copy(); y[2, 0] = np.nan
np.save(f'{t}/nan.npy', y)
PY
grep -q "^000000001$" "$tmp/dup.txt" || fail "sample keys are not 000000.. (synth changed?)"
expect_fail "add-features --keys with a duplicate" "lines 2 and 4 both name" -- \
  "$bin/taca" add-features --db "$tmp/db" --name dup --npy "$tmp/img.npy" --keys "$tmp/dup.txt" --quiet
expect_fail "add-features with a non-finite row" "non-finite" -- \
  "$bin/taca" add-features --db "$tmp/db" --name nan --npy "$tmp/nan.npy" --quiet
"$bin/taca" query --db "$tmp/db" info > "$tmp/info.txt"
! grep -qE "\b(dup|nan)\b" "$tmp/info.txt" || { cat "$tmp/info.txt"; fail "a failed add-features left a model behind"; }

# --- 3. bad samples, damaged shards, several paths after --data ---
"$py" - "$tmp/d/00000.tar" "$tmp/keys.tar" <<'PY'
import io, sys, tarfile
src, out = sys.argv[1], sys.argv[2]
with tarfile.open(src) as s, tarfile.open(out, 'w', format=tarfile.GNU_FORMAT, encoding='latin-1') as t:
    members = [(m, s.extractfile(m).read()) for m in s.getmembers()]
    for m, data in members:          # the good samples
        t.addfile(m, io.BytesIO(data))
    png = next(d for m, d in members if m.name.endswith('.png'))
    for key in ('k' * 600, 'caf\xe9'):  # over-long; latin-1 bytes (not UTF-8)
        for ext, data in (('png', png), ('txt', b'a caption')):
            ti = tarfile.TarInfo(f'{key}.{ext}'); ti.size = len(data); t.addfile(ti, io.BytesIO(data))
PY
"$bin/taca" precompute --model "$model" --batch-size 8 --data "$tmp/keys.tar" --db "$tmp/db_keys" 2> "$tmp/log" \
  || { cat "$tmp/log"; fail "bad keys aborted the run"; }
grep -q "12 samples stored, 2 rejected" "$tmp/log" || { cat "$tmp/log"; fail "expected 12 stored, 2 rejected"; }
grep -q "key too long: 1" "$tmp/log" && grep -q "key not UTF-8: 1" "$tmp/log" || { cat "$tmp/log"; fail "key reasons"; }
size=$(stat -c %s "$tmp/more/00001.tar")
head -c $((size / 2)) "$tmp/more/00001.tar" > "$tmp/half.tar"
"$bin/taca" precompute --model "$model" --batch-size 8 --data "$tmp/more/00000.tar" "$tmp/half.tar" \
  "$tmp/more/00002.tar" --db "$tmp/db_half" 2> "$tmp/log" || { cat "$tmp/log"; fail "a truncated shard aborted the run"; }
grep -q "input '$tmp/half.tar' is damaged after [0-9]* entries" "$tmp/log" || { cat "$tmp/log"; fail "truncated shard not named"; }
n=$("$bin/taca" query --db "$tmp/db_half" --json info | "$py" -c 'import json,sys; print(json.load(sys.stdin)["samples"])')
[ "$n" -ge 24 ] && [ "$n" -lt 36 ] || fail "expected 24..35 samples from 2.5 shards, got $n"
"$bin/taca" verify --db "$tmp/db_half" > /dev/null || fail "verify of the store from a truncated shard"

# --- 4. drop-model ---
"$bin/taca" add-features --db "$tmp/db_half" --name noise --random 8 --quiet
"$bin/taca" add-features --db "$tmp/db_half" --name later --random 6 --seed 2 --quiet
"$bin/taca" query --db "$tmp/db_half" export --model later --modality image --out "$tmp/later1.npy"
"$bin/taca" drop-model --db "$tmp/db_half" --name noise 2> /dev/null
! "$bin/taca" query --db "$tmp/db_half" info | grep -qw "noise" || fail "drop-model left the model"
"$bin/taca" query --db "$tmp/db_half" info | grep -q "\[1\] later" || fail "the later model did not move to id 1"
"$bin/taca" query --db "$tmp/db_half" export --model later --modality image --out "$tmp/later2.npy"
cmp -s "$tmp/later1.npy" "$tmp/later2.npy" || fail "drop-model changed another model's embeddings"
"$bin/taca" verify --db "$tmp/db_half" > "$tmp/v.txt" || { cat "$tmp/v.txt"; fail "verify after drop-model"; }
grep -q "as recorded by drop-model noise" "$tmp/v.txt" || { cat "$tmp/v.txt"; fail "drop-model recorded no hash"; }
expect_fail "drop-model of an unknown model" "not in this store" -- "$bin/taca" drop-model --db "$tmp/db_half" --name nope

# --- 5. numerics: non-finite outputs and unsupported config values are refused ---
printf 'a red square\n' > "$tmp/cap.txt"
cp -r "$model" "$tmp/inf"
"$py" - "$tmp/inf/model.safetensors" <<'PY'
import json, struct, sys
p = sys.argv[1]; b = bytearray(open(p, 'rb').read()); n = struct.unpack('<Q', b[:8])[0]; h = json.loads(b[8:8 + n])
name = next(k for k in h if k.startswith('text_model') and k.endswith('final_layer_norm.weight'))
at = 8 + n + h[name]['data_offsets'][0]
inf = {'F16': b'\x00\x7c', 'BF16': b'\x80\x7f', 'F32': b'\x00\x00\x80\x7f'}[h[name]['dtype']]
b[at:at + len(inf)] = inf; open(p, 'wb').write(b)
PY
expect_fail "taca embed with an Inf weight" "not finite" -- \
  "$bin/taca" embed --model "$tmp/inf" --text "$tmp/cap.txt" --out "$tmp/e.npy"
expect_fail "precompute with an Inf weight" "not finite\|non-finite" -- \
  "$bin/taca" precompute "${pre[@]}" --model "$tmp/inf" --data "$tmp/more/00000.tar" --db "$tmp/db_inf"
for edit in "layer_norm_eps=1e-6" "num_channels=4"; do
  cp -r "$model" "$tmp/cfg"
  "$py" - "$tmp/cfg/config.json" "$edit" <<'PY'
import json, sys
p, (k, v) = sys.argv[1], sys.argv[2].split('=')
c = json.load(open(p)); c['vision_config'][k] = float(v) if 'e' in v else int(v); json.dump(c, open(p, 'w'))
PY
  expect_fail "config.json $edit" "${edit%%=*}.*not supported" -- \
    "$bin/taca" embed --model "$tmp/cfg" --text "$tmp/cap.txt" --out "$tmp/e.npy"
  rm -rf "$tmp/cfg"
done
echo "test_store_integrity: all checks passed"
