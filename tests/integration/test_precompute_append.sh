#!/usr/bin/env bash
# taca precompute --append (issue 19): new inputs ingested after the samples of a store.
#  1. a finished store of two shards + a second model; --append of a third shard continues the
#     indices, records the new input with the old ones, and gives the same keys and embeddings as
#     one ingest of all three shards; the second model is named with the command that embeds the
#     new samples, which then completes it; the new samples are served (offline and by taca-featured);
#  2. refused, each with a message naming the cause: a shard already ingested (again, or a copy
#     under another path), an ingested shard changed on disk (given again or not), another model
#     than the ingesting one, other pixel settings, --append without --data;
#  3. a partial store (its ingest not finished) takes an --append too;
#  4. kill -9 at random moments of an append, then the same command again: the content hash equals
#     the uninterrupted append's, which equals one ingest of all the inputs.
. "${TACA_SOURCE_DIR:?}/tests/integration/lib/common.sh"
pid=
cleanup() {
  [ -n "$pid" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null || true
  rm -rf "$tmp"
}
trap cleanup EXIT
model=$fix/clip/hf_gelu_f16   # image size 40
expect_fail() { # expect_fail WHAT CODE PATTERN -- COMMAND...: exit CODE, last stderr line matches
  local what=$1 code=$2 pat=$3 st=0; shift 4
  "$@" > "$tmp/out" 2> "$tmp/err" || st=$?
  [ "$st" = "$code" ] || { cat "$tmp/err"; fail "$what: exit $st, expected $code"; }
  tail -n 1 "$tmp/err" | grep -qi -- "$pat" || { cat "$tmp/err"; fail "$what: message does not match '$pat'"; }
  echo "  ok  $what: $(tail -n 1 "$tmp/err")"
}
samples() { "$bin/taca" query --db "$1" --json info | "$py" -c 'import json,sys; print(json.load(sys.stdin)["samples"])'; }

"$bin/taca" synth --out "$tmp/d" --n 36 --size 40 --shards 3 --seed 5
pre=(--model "$model" --batch-size 12 --quiet)
"$bin/taca" precompute "${pre[@]}" --data "$tmp/d/00000.tar" "$tmp/d/00001.tar" --db "$tmp/db"
"$bin/taca" precompute "${pre[@]}" --data "$tmp/d/"{00000..00002}.tar --db "$tmp/all"   # the reference
cp -r "$model" "$tmp/m2"   # a second model: other weights, same architecture
"$py" - "$tmp/m2/model.safetensors" <<'PY'
import sys
b = bytearray(open(sys.argv[1], 'rb').read()); b[-1] ^= 1; open(sys.argv[1], 'wb').write(b)
PY
"$bin/taca" precompute --model "$tmp/m2" --name second --batch-size 12 --quiet --db "$tmp/db"
[ "$(samples "$tmp/db")" = 24 ] || fail "the first ingest stored $(samples "$tmp/db") samples, not 24"

# --- 1. append a shard ---
"$bin/taca" precompute --model "$model" --batch-size 12 --append --data "$tmp/d/00002.tar" --db "$tmp/db" \
  2> "$tmp/append.err" || { cat "$tmp/append.err"; fail "--append of a new shard"; }
grep -q "appending 1 inputs (12 entries) after sample 24" "$tmp/append.err" || { cat "$tmp/append.err"; fail "no append line"; }
grep -q "model 'second' has no embeddings of 12 samples.*taca precompute --db $tmp/db --model PATH --name second" \
  "$tmp/append.err" || { cat "$tmp/append.err"; fail "the second model is not named with what to run"; }
[ "$(samples "$tmp/db")" = 36 ] || fail "after the append: $(samples "$tmp/db") samples, not 36"
"$bin/taca" query --db "$tmp/db" --json info > "$tmp/info.json"
"$py" - "$tmp/info.json" "$tmp/d" <<'PY' || fail "the store's record after the append"
import json, sys
d = json.load(open(sys.argv[1])); base = sys.argv[2]
ins = d["dataset"]["inputs"]
assert [i["path"] for i in ins] == [f"{base}/{n:05d}.tar" for n in range(3)], ins
assert all(i["fingerprint"] and i["entries"] == 12 for i in ins), ins
assert d["dataset"]["stored"] == 36 and d["dataset"]["entries"] == 36, d["dataset"]
assert d["range"]["begin"] == 0 and d["range"]["end"] == 36, d["range"]
assert d["dataset"]["preprocessing_order"].startswith("pil-mode"), d["dataset"]
print("  ok  the dataset record lists the three inputs, range [0, 36)")
PY
"$bin/taca" query --db "$tmp/db" keys --limit 0 > "$tmp/keys_db" 2> /dev/null
"$bin/taca" query --db "$tmp/all" keys --limit 0 > "$tmp/keys_all" 2> /dev/null
cmp -s "$tmp/keys_db" "$tmp/keys_all" || fail "keys and indices differ from one ingest of all three shards"
"$bin/taca" query --db "$tmp/db" export --model hf_gelu_f16 --modality image --out "$tmp/a.npy" > /dev/null
"$bin/taca" query --db "$tmp/all" export --model hf_gelu_f16 --modality image --out "$tmp/b.npy" > /dev/null
cmp -s "$tmp/a.npy" "$tmp/b.npy" || fail "the appended store's embeddings differ from one ingest of all shards"
echo "  ok  keys, indices and embeddings equal one ingest of all three shards"
! "$bin/taca" query --db "$tmp/db" export --model second --modality image --out "$tmp/s.npy" > /dev/null 2>&1 ||
  fail "the second model exports rows it does not have"
"$bin/taca" precompute --model "$tmp/m2" --name second --batch-size 12 --db "$tmp/db" 2> "$tmp/second.err" ||
  { cat "$tmp/second.err"; fail "embedding the appended samples with the second model"; }
grep -q "model 'second' embedded 12 stored samples" "$tmp/second.err" || { cat "$tmp/second.err"; fail "second: not 12 embedded"; }
"$bin/taca" query --db "$tmp/db" export --model second --modality image --out "$tmp/s.npy" > /dev/null ||
  fail "the second model lacks rows after its run"
"$bin/taca" verify --db "$tmp/db" > "$tmp/verify.txt" || { cat "$tmp/verify.txt"; fail "verify after the append"; }
"$bin/taca" query --db "$tmp/db" lookup 000000030 | grep -q "	index 30	" || {
  "$bin/taca" query --db "$tmp/db" lookup 000000030; fail "offline lookup of an appended sample"; }
"$bin/taca-featured" --db "$tmp/db" --listen 127.0.0.1:0 --port-file "$tmp/ports" --log "$tmp/log" --threads 2 \
  2> "$tmp/featured.err" &
pid=$!
for _ in $(seq 400); do grep -q '^grpc=' "$tmp/ports" 2>/dev/null && break; sleep 0.05; done
srv=127.0.0.1:$(sed -n 's/^grpc=//p' "$tmp/ports")
"$bin/taca" query --server "$srv" lookup 000000035 > "$tmp/online.txt" || { cat "$tmp/online.txt"; fail "online lookup"; }
grep -q "35" "$tmp/online.txt" || { cat "$tmp/online.txt"; fail "online lookup of an appended sample"; }
kill -TERM "$pid"; wait "$pid" || true; pid=
echo "  ok  the appended samples are served (offline and by taca-featured)"

# --- 2. refused ---
expect_fail "a shard already ingested" 1 "nothing to append.*already ingested" -- \
  "$bin/taca" precompute "${pre[@]}" --append --data "$tmp/d/00001.tar" --db "$tmp/db"
cp "$tmp/d/00001.tar" "$tmp/copy.tar"
expect_fail "a copy of an ingested shard" 1 "'$tmp/copy.tar' is already ingested.*of '$tmp/d/00001.tar'" -- \
  "$bin/taca" precompute "${pre[@]}" --append --data "$tmp/copy.tar" --db "$tmp/db"
"$bin/taca" synth --out "$tmp/more" --n 48 --size 40 --shards 4 --seed 6
expect_fail "another model than the ingesting one" 1 "append with the model that ingested the store ('hf_gelu_f16'" -- \
  "$bin/taca" precompute --model "$tmp/m2" --name second --quiet --append --data "$tmp/more/00003.tar" --db "$tmp/db"
expect_fail "other pixel settings" 1 "crops of 40 pixels, this run would store jpeg" -- \
  "$bin/taca" precompute "${pre[@]}" --pixel-codec jpeg --append --data "$tmp/more/00003.tar" --db "$tmp/db"
expect_fail "--append without --data" 2 "--append needs --data" -- \
  "$bin/taca" precompute "${pre[@]}" --append --db "$tmp/db"
expect_fail "a finished store given a new shard without --append" 1 "not among.*--append" -- \
  "$bin/taca" precompute "${pre[@]}" --data "$tmp/d/"{00000..00002}.tar "$tmp/more/00003.tar" --db "$tmp/all"
cp "$tmp/more/00001.tar" "$tmp/d/00001.tar"   # an ingested shard changed on disk (same entry count)
expect_fail "a changed ingested shard, not given" 1 "an ingested input changed: '$tmp/d/00001.tar' changed" -- \
  "$bin/taca" precompute "${pre[@]}" --append --data "$tmp/more/00003.tar" --db "$tmp/db"
expect_fail "a changed ingested shard, given again" 1 "an ingested input changed: '$tmp/d/00001.tar' changed" -- \
  "$bin/taca" precompute "${pre[@]}" --append --data "$tmp/d/"{00000..00002}.tar "$tmp/more/00003.tar" --db "$tmp/db"
[ "$(samples "$tmp/db")" = 36 ] || fail "a refused append changed the store"
"$bin/taca" verify --db "$tmp/db" > /dev/null || fail "verify after the refused appends"

# --- 3. a partial store ---
"$py" - "$tmp/bad.tar" <<'PY'
import io, sys, tarfile
with tarfile.open(sys.argv[1], 'w') as t:
    for i in range(3):
        for ext, data in (('png', b'not an image'), ('txt', b'a caption')):
            ti = tarfile.TarInfo(f'bad{i}.{ext}'); ti.size = len(data); t.addfile(ti, io.BytesIO(data))
PY
expect_fail "every sample rejected (the ingest stays unfinished)" 1 "no sample was stored" -- \
  "$bin/taca" precompute "${pre[@]}" --batch-size 1 --data "$tmp/bad.tar" --db "$tmp/part"
"$bin/taca" precompute "${pre[@]}" --append --data "$tmp/more/00000.tar" --db "$tmp/part" 2> "$tmp/part.err" ||
  { cat "$tmp/part.err"; fail "--append onto a partial store"; }
[ "$(samples "$tmp/part")" = 12 ] || fail "the partial store holds $(samples "$tmp/part") samples after the append, not 12"
"$bin/taca" query --db "$tmp/part" --json info | "$py" -c '
import json, sys
d = json.load(sys.stdin)["dataset"]
assert len(d["inputs"]) == 2 and d["rejected"] == 3 and d["stored"] == 12, d' || fail "the partial store's record"
echo "  ok  a partial store takes an --append"

# --- 4. kill -9 during an append ---
"$bin/taca" synth --out "$tmp/big" --n 800 --size 40 --shards 2 --corrupt 6 --seed 7   # 400 a shard: whole batches
hash() { "$bin/taca" query --db "$1" --json info --hash | "$py" -c 'import json,sys; print(json.load(sys.stdin)["content_hash"])'; }
kp=(--model "$model" --batch-size 2 --quiet)
"$bin/taca" precompute "${kp[@]}" --data "$tmp/big/00000.tar" "$tmp/big/00001.tar" --db "$tmp/k_all"
"$bin/taca" precompute "${kp[@]}" --data "$tmp/big/00000.tar" --db "$tmp/k_first"
cp -r "$tmp/k_first" "$tmp/k_ref"
start=$(date +%s.%N)
"$bin/taca" precompute "${kp[@]}" --append --data "$tmp/big/00001.tar" --db "$tmp/k_ref"
dur=$(echo "$(date +%s.%N) - $start" | bc)
ref=$(hash "$tmp/k_ref")
[ "$ref" = "$(hash "$tmp/k_all")" ] || fail "the appended store's content hash differs from one ingest of both shards"
echo "  uninterrupted append: ${dur}s, content hash $ref = one ingest of both shards"
for i in 1 2 3 4; do
  db="$tmp/k$i"
  cp -r "$tmp/k_first" "$db"
  delay=$("$py" -c "import random; random.seed($i); print(round(random.uniform(0.25, 0.95) * $dur, 3))")
  "$bin/taca" precompute "${kp[@]}" --append --data "$tmp/big/00001.tar" --db "$db" 2>/dev/null & pid=$!
  sleep "$delay"
  kill -9 "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  pid=
  before=$(samples "$db")
  st=0
  "$bin/taca" precompute "${kp[@]}" --append --data "$tmp/big/00001.tar" --db "$db" 2> "$tmp/k.err" || st=$?
  [ "$st" = 0 ] || grep -q "nothing to append" "$tmp/k.err" || { cat "$tmp/k.err"; fail "resuming the append"; }
  got=$(hash "$db")
  echo "  killed after ${delay}s (samples then: $before), run again (exit $st): $got"
  [ "$got" = "$ref" ] || fail "content hash after kill -9 + the append again differs from the uninterrupted append"
done
echo "test_precompute_append: all checks passed"
