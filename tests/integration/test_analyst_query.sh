#!/usr/bin/env bash
# test_analyst_query.sh: captions and metadata in the store and what `taca query` does with them:
#  1. precompute keeps every sample's caption and its KEY.json (canonical JSON); a malformed KEY.json
#     is counted and reported, never fatal (the sample is stored without metadata);
#  2. keys (paged), lookup --json (caption, metadata, the vectors' values = the exported rows),
#     export --rows .tsv/.jsonl (rows in the .npy's order) with its one-line summary;
#  3. offline caption search (several captions, --text-model checked against the weights hash)
#     equals the server's caption search; taca query --server lookup shows captions too;
#  4. info --json is valid JSON for a long dataset record (40 inputs);
#  5. a store without the annotation databases (written before they existed) stays readable, offline
#     and through taca-featured.
. "${TACA_SOURCE_DIR:?}/tests/integration/lib/common.sh"
pid=""
cleanup() {
  [ -n "$pid" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null || true
  rm -rf "$tmp"
}
trap cleanup EXIT
model=$fix/clip/hf_gelu_f16
q() { "$bin/taca" query --db "$tmp/db" "$@"; }

# --- 1. ingest with captions and metadata ---
"$py" "$src/tests/integration/make_analyst_store.py" "$bin" "$fix" "$tmp/a" 24
rm -rf "$tmp/a/db"
"$bin/taca" precompute --model "$model" --name tiny --data "$tmp/a/meta.tar" --db "$tmp/db" --batch-size 8 \
  2> "$tmp/pre.log" || { cat "$tmp/pre.log"; fail "precompute failed"; }
grep -q "24 samples stored, 0 rejected" "$tmp/pre.log" || fail "a malformed KEY.json rejected its sample"
grep -q "1 samples stored without metadata: metadata (.json) not a valid JSON object" "$tmp/pre.log" ||
  fail "the malformed KEY.json is not reported"
q --json info > "$tmp/info.json"
"$py" - "$tmp/info.json" <<'PY' || fail "info --json: counts"
import json, sys
i = json.load(open(sys.argv[1]))
assert i["captions"] == 24 and i["metadata"] == 23, (i["captions"], i["metadata"])
assert i["dataset"]["metadata_problems"] == {"metadata (.json) not a valid JSON object": 1}, i["dataset"]
PY

# --- 2. keys, lookup, export --rows ---
q keys --limit 10 > "$tmp/keys1" 2> "$tmp/keys1.err"
[ "$(wc -l < "$tmp/keys1")" = 10 ] || fail "keys --limit 10 printed $(wc -l < "$tmp/keys1") lines"
grep -q "next page: --from 10" "$tmp/keys1.err" || fail "keys: no next-page hint"
q keys --from 20 --limit 10 > "$tmp/keys3" 2>/dev/null
[ "$(cat "$tmp/keys3" | tr '\t' ' ' | tr '\n' ',')" = "20 000000020,21 000000021,22 000000022,23 000000023," ] ||
  fail "keys --from 20: $(cat "$tmp/keys3")"
out=$(q export --model tiny --modality image --out "$tmp/img.npy" --rows "$tmp/rows.tsv")
[ "$out" = "exported 24 x 16 f32 image embeddings of model 'tiny' (indices 0..23) to $tmp/img.npy, rows to $tmp/rows.tsv" ] ||
  fail "export summary: '$out'"
q export --model tiny --modality text --out "$tmp/txt.npy" --range 4:9 --rows "$tmp/rows.jsonl" > /dev/null
q --json lookup 000000002 000000003 000000005 > "$tmp/lookup.jsonl"
"$py" - "$tmp" <<'PY' || fail "lookup/export rows differ from the shard"
import csv, json, sys, tarfile
import numpy as np
tmp = sys.argv[1]
cap, meta = {}, {}
for m in tarfile.open(tmp + "/a/meta.tar").getmembers():
    k, ext = m.name.rsplit(".", 1)
    body = tarfile.open(tmp + "/a/meta.tar").extractfile(m.name).read()
    if ext == "txt": cap[k] = body.decode().strip()
    if ext == "json":
        try: meta[k] = json.loads(body)
        except ValueError: meta[k] = None
img, txt = np.load(tmp + "/img.npy"), np.load(tmp + "/txt.npy")
for line in open(tmp + "/lookup.jsonl"):
    o = json.loads(line)
    k = o["key"]
    assert o["caption"] == cap[k] and o["metadata"] == meta[k], o
    np.testing.assert_allclose(o["vectors"]["tiny"]["image"], img[o["index"]], atol=1e-6)
rows = list(csv.reader(open(tmp + "/rows.tsv"), delimiter="\t", quoting=csv.QUOTE_NONE))
assert rows[0] == ["index", "key", "caption", "metadata"] and len(rows) == 25, rows[:2]
for i, r in enumerate(rows[1:]):
    k = "%09d" % i
    assert r[0] == str(i) and r[1] == k and r[2] == cap[k], r
    assert (json.loads(r[3]) if r[3] else None) == meta[k], r
js = [json.loads(l) for l in open(tmp + "/rows.jsonl")]
assert [o["index"] for o in js] == list(range(4, 9)) and len(js) == txt.shape[0], js
assert all(o["caption"] == cap[o["key"]] and o["metadata"] == meta[o["key"]] for o in js)
print("  lookup and export rows match the shard's captions and KEY.json")
PY

# --- 3. caption search offline = online ---
printf 'a small red circle\n\na large blue square\n' > "$tmp/caps.txt"
q --json search --model tiny --modality image --captions "$tmp/caps.txt" --caption "a green cross" \
  --text-model "$model" -k 5 > "$tmp/off.jsonl"
[ "$(wc -l < "$tmp/off.jsonl")" = 3 ] || fail "three captions did not give three result lines"
set +e
q search --model tiny --modality image --caption x --text-model "$fix/clip/oc_quickgelu_f32/model.safetensors:$fix/clip/oc_quickgelu_f32/open_clip_config.json" > /dev/null 2> "$tmp/err"
rc=$?
q search --model tiny --modality image --caption x > /dev/null 2> "$tmp/err2"
rc2=$?
set -e
[ "$rc" = 1 ] && grep -q "is not the checkpoint model 'tiny' was made with" "$tmp/err" || fail "wrong --text-model: rc $rc $(cat "$tmp/err")"
[ "$rc2" = 2 ] && grep -q "need --text-model" "$tmp/err2" || fail "captions without --text-model: rc $rc2"
"$bin/taca-featured" --db "$tmp/db" --listen 127.0.0.1:0 --port-file "$tmp/ports" --log "$tmp/log" --threads 2 \
  --model "tiny=$model" &
pid=$!
for _ in $(seq 400); do grep -q '^grpc=' "$tmp/ports" 2>/dev/null && break; sleep 0.05; done
srv=127.0.0.1:$(sed -n 's/^grpc=//p' "$tmp/ports")
"$bin/taca" query --server "$srv" --json search --model tiny --caption "a green cross" \
  --captions "$tmp/caps.txt" -k 5 > "$tmp/on.jsonl"
"$py" - "$tmp/off.jsonl" "$tmp/on.jsonl" <<'PY' || fail "offline and online caption search differ"
import json, sys
off = [json.loads(l) for l in open(sys.argv[1])]
on = [json.loads(l) for l in open(sys.argv[2])]
assert [o["caption"] for o in off] == [o["caption"] for o in on], (off, on)
for a, b in zip(off, on):
    assert [(h["index"], h["key"], h["caption"]) for h in a["results"]] == \
           [(h["index"], h["key"], h["caption"]) for h in b["results"]], (a, b)
    assert all(abs(x["score"] - y["score"]) < 1e-4 for x, y in zip(a["results"], b["results"]))
PY
"$bin/taca" query --server "$srv" lookup 000000001 | grep -q 'caption   "' || fail "online lookup shows no caption"
"$bin/taca" query --server "$srv" keys --limit 3 2>/dev/null | grep -q "^2	000000002$" || fail "online keys"
kill -TERM "$pid"
status=0
wait "$pid" || status=$?
pid=""
[ "$status" = 0 ] || fail "taca-featured exited $status after SIGTERM"

# --- 4. info --json for a long dataset record ---
"$bin/taca" synth --out "$tmp/many" --n 40 --size 40 --shards 40 > /dev/null
"$bin/taca" precompute --model "$model" --data "$tmp/many/{00000..00039}.tar" --db "$tmp/many_db" --quiet
"$bin/taca" query --db "$tmp/many_db" --json info | "$py" -c 'import json, sys; d = json.load(sys.stdin); assert len(d["dataset"]["inputs"]) == 40' ||
  fail "info --json is not whole JSON for a 40-input dataset"

# --- 5. a store without the annotation databases ---
mkdir "$tmp/old"
for d in meta samples pixels keys emb; do mdb_dump -s "$d" "$tmp/db" | mdb_load -s "$d" "$tmp/old" 2>/dev/null; done
"$bin/taca" query --db "$tmp/old" info | grep -q "annotations  0 captions, 0 metadata" || fail "old store: info"
"$bin/taca" query --db "$tmp/old" lookup 000000001 | grep -q "caption   -" || fail "old store: lookup"
h_old=$("$bin/taca" query --db "$tmp/old" --json info --hash | "$py" -c 'import json,sys; print(json.load(sys.stdin)["content_hash"])')
h_new=$(q --json info --hash | "$py" -c 'import json,sys; print(json.load(sys.stdin)["content_hash"])')
[ "$h_old" != "$h_new" ] || fail "the captions are not in the content hash"
rm -f "$tmp/ports"
"$bin/taca-featured" --db "$tmp/old" --listen 127.0.0.1:0 --port-file "$tmp/ports" --log "$tmp/log2" --threads 2 &
pid=$!
for _ in $(seq 400); do grep -q '^grpc=' "$tmp/ports" 2>/dev/null && break; sleep 0.05; done
"$bin/taca" query --server "127.0.0.1:$(sed -n 's/^grpc=//p' "$tmp/ports")" lookup 000000004 | grep -q "caption   -" ||
  fail "old store through taca-featured"
echo "ok"
