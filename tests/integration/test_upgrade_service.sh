#!/usr/bin/env bash
# test_upgrade_service.sh: the upgrade in service (issue 14) on a real taca-featured on 127.0.0.1:
#  1. provenance: Info gives each model's kind and space; the exported adapted model lives in its
#     OLD model's space, a plain NEW model in a space of its own;
#  2. online Embed of new images and captions equals offline `taca embed` of the same model, bit for
#     bit (one forward of the same rows on both sides); an undecodable image is a per-item error;
#  3. Search by image bytes with query model "adapted" against the old gallery (the backfill-free
#     case) works; mixing spaces (query "new" against the old gallery, a gallery of two spaces) is
#     INVALID_ARGUMENT; a mixed gallery of a partial re-embedding (`precompute --range`) scores each
#     sample by its preferred model;
#  4. aliases: `taca alias` points "current" at old, then adapted (the hot swap) and back; a flip into
#     another space is refused unless --allow-space-change; a token-protected server refuses a flip
#     without the token; the table survives a restart;
#  5. the flip under load: 16 client threads for 10 s (GetBatch and Search through "current") while
#     the alias flips every 20 ms: no call fails, and every batch is entirely old's or entirely
#     adapted's vectors (the side its resolved_model names).
. "${TACA_SOURCE_DIR:?}/tests/integration/lib/common.sh"
export PYTHONPATH=$bin/../clients/python${PYTHONPATH:+:$PYTHONPATH}
"$py" -c "import grpc, taca_client" 2> /dev/null || { echo "skip: python3-grpcio or the built Python client is missing"; exit 77; }
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2> /dev/null || true; done
  wait 2> /dev/null || true
  rm -rf "$tmp"
}
trap cleanup EXIT
fail() { echo "FAIL: $*" >&2; for f in "$tmp"/*.log; do [ -f "$f" ] && tail -5 "$f" >&2; done; exit 1; }
new=$fix/taca/tower_gelu.safetensors
arch=$fix/taca/tower_gelu.json
old=$fix/clip/hf_gelu_f16

serve() { # serve NAME ARGS...: taca-featured on an ephemeral port; sets port_NAME and pid_NAME
  local name=$1
  shift
  rm -f "$tmp/$name.ports"
  "$bin/taca-featured" --listen 127.0.0.1:0 --port-file "$tmp/$name.ports" "$@" >> "$tmp/$name.log" 2>&1 &
  pids+=($!)
  printf -v "pid_$name" '%s' "$!"
  for _ in $(seq 400); do [ -s "$tmp/$name.ports" ] && break; sleep 0.05; done
  local p; p=$(sed -n 's/^grpc=//p' "$tmp/$name.ports")
  [ -n "$p" ] || fail "taca-featured $name did not start"
  printf -v "port_$name" '%s' "$p"
}
expect() { # expect EXIT PATTERN CMD...: exit code and a one-line message
  local want=$1 pat=$2; shift 2
  set +e; "$@" > /dev/null 2> "$tmp/err"; local got=$?; set -e
  [ "$got" = "$want" ] && grep -q -- "$pat" "$tmp/err" && [ "$(wc -l < "$tmp/err")" = 1 ] \
    || fail "$* -> exit $got (want $want, /$pat/), stderr: $(cat "$tmp/err")"
}

# ---- a store with old, the exported adapted model, a plain new model, and a partial re-embedding
"$bin/taca" synth --out "$tmp/data" --n 48 --size 40 --format folder > /dev/null
"$bin/taca" precompute --model "$old" --name old --data "$tmp/data" --db "$tmp/db" --pixel-size 16 --quiet
"$bin/taca" export --new-model "$new" --arch "$arch" --checkpoint "$fix/export/adapter.safetensors" --text-model "$old" \
  --out "$tmp/x" 2> /dev/null
"$bin/taca" precompute --model "$tmp/x" --name adapted --db "$tmp/db" --dtype f32 --quiet
"$bin/taca" precompute --model "$tmp/x" --name adapted_part --db "$tmp/db" --dtype f32 --range 8:20 --quiet
"$bin/taca" precompute --model "$new" --arch "$arch" --name new --db "$tmp/db" --dtype f32 --quiet
serve a --db "$tmp/db" --model "old=$old" --model "adapted=$tmp/x" --model "new=$new:$arch"
A=127.0.0.1:$port_a

# ---- 1. provenance
"$bin/taca" query --server "$A" --json info > "$tmp/info.json"
"$py" - "$tmp/info.json" "$tmp/x/config.json" <<'PY' || fail "provenance in Info"
import json, sys
info = json.load(open(sys.argv[1])); cfg = json.load(open(sys.argv[2]))
m = {x['name']: x for x in info['models']}
assert m['old']['kind'] == 'clip' and m['adapted']['kind'] == 'adapted' and m['new']['kind'] == 'clip', m
assert m['adapted']['space'] == m['old']['space'] == cfg['taca']['space'] != '', (m['adapted']['space'], m['old']['space'])
assert m['new']['space'] not in ('', m['old']['space'])
assert m['adapted']['embed_images'] and m['adapted']['caption_search'] and not m['new']['caption_search']
print(f"  Info: adapted (kind adapted) lives in old's space {m['old']['space'][:8]}..., new in {m['new']['space'][:8]}...")
PY

# ---- 2. online Embed = offline embed
imgs=("$tmp"/data/images/*.png)
imgs=("${imgs[@]:0:6}")
head -5 "$tmp/data/captions.tsv" | cut -f2 > "$tmp/caps.txt"
"$bin/taca" embed --model "$tmp/x" --images "${imgs[@]}" --out "$tmp/off_img.npy"
"$bin/taca" embed --model "$tmp/x" --text "$tmp/caps.txt" --out "$tmp/off_txt.npy"
"$bin/taca" query --server "$A" embed --model adapted --images "${imgs[@]}" --out "$tmp/on_img.npy" 2> /dev/null
"$bin/taca" query --server "$A" embed --model adapted --text "$tmp/caps.txt" --out "$tmp/on_txt.npy" 2> /dev/null
cmp -s "$tmp/off_img.npy" "$tmp/on_img.npy" || fail "online Embed of images differs from taca embed"
cmp -s "$tmp/off_txt.npy" "$tmp/on_txt.npy" || fail "online Embed of captions differs from taca embed"
printf 'not an image' > "$tmp/bad.png"
expect 1 "bad.png" "$bin/taca" query --server "$A" embed --model adapted --images "${imgs[0]}" "$tmp/bad.png" --out "$tmp/z.npy"
expect 1 "has no text tower" "$bin/taca" query --server "$A" embed --model new --text "$tmp/caps.txt" --out "$tmp/z.npy"
echo "  Embed: online = offline bit for bit (6 images, 5 captions); a bad image is named; a model without text tower refused"

# ---- 3. search by image, spaces, mixed gallery
"$bin/taca" query --server "$A" --json search --model old --query-model adapted --image "${imgs[0]}" -k 3 > "$tmp/s1.json" \
  || fail "search by image, adapted query against the old gallery"
expect 1 "different embedding spaces" "$bin/taca" query --server "$A" search --model old --query-model new --image "${imgs[0]}"
expect 1 "a gallery is one space" "$bin/taca" query --server "$A" search --model old --fallback new --vectors "$tmp/off_img.npy"
"$py" - "$A" "$tmp" <<'PY' || fail "mixed gallery"
import sys, numpy as np, taca_client
c = taca_client.Client(sys.argv[1]); t = sys.argv[2]
n = int(c.info()['sample_count'])
ad = c.get(range(n), fields=("adapted:image",), as_f32=True)["embeddings"]["adapted:image"]
od = c.get(range(n), fields=("old:image",), as_f32=True)["embeddings"]["old:image"]
q = np.load(f'{t}/off_img.npy')
import grpc
from taca_client import feature_cache_pb2 as pb
r = c._call("Search", pb.SearchRequest(model="adapted_part", gallery_fallback=["old"], k=int(n), queries=q.reshape(-1).tolist()))
for qi, h in enumerate(r.results):
    assert len(h.indices) == n and len(set(h.indices)) == n, "each sample once"
    for i, s, mname in zip(h.indices, h.scores, h.hit_models):
        want = "adapted_part" if 8 <= i < 20 else "old"
        assert mname == want, (i, mname)
        ref = float(np.dot((ad if want == "adapted_part" else od)[i], q[qi]))
        assert abs(ref - s) <= 1e-4 * max(1.0, abs(ref)), (i, ref, s)
print(f"  mixed gallery: {n} samples, 12 scored by adapted_part, the rest by old; scores = dot products")
hits = c.search(vector=q[0], model="old", query_model="adapted", k=2)
assert len(hits) == 2
PY
echo "  Search: by image (adapted -> old gallery) works; spaces mixed -> INVALID_ARGUMENT"

# ---- 4. aliases
"$bin/taca" alias --server "$A" current old > /dev/null
"$bin/taca" alias --server "$A" current adapted | grep -q "current -> adapted (was old)" || fail "flip to adapted"
expect 1 "different embedding spaces" "$bin/taca" alias --server "$A" current new
expect 1 "is a stored model's name" "$bin/taca" alias --server "$A" old adapted
expect 1 "not a model in this store" "$bin/taca" alias --server "$A" current nosuch
expect 2 "give NAME TARGET" "$bin/taca" alias --server "$A" current
"$bin/taca" alias --server "$A" current old > /dev/null
grep -q '"target": "old"' "$tmp/db/aliases.json" || fail "the alias table is not persisted: $(cat "$tmp/db/aliases.json")"
kill "$pid_a"; wait "$pid_a" 2> /dev/null || true
serve b --db "$tmp/db" --token s3cret
"$bin/taca" alias --server 127.0.0.1:$port_b --token s3cret --list | grep -q "current -> old" || fail "alias lost over a restart"
expect 1 "UNAUTHENTICATED" "$bin/taca" alias --server 127.0.0.1:$port_b current adapted
TACA_TOKEN=s3cret "$bin/taca" alias --server 127.0.0.1:$port_b --allow-space-change tmp new > /dev/null
TACA_TOKEN=s3cret "$bin/taca" alias --server 127.0.0.1:$port_b --remove tmp > /dev/null
kill "$pid_b"; wait "$pid_b" 2> /dev/null || true
echo "  aliases: flips, refusals (space, names, unknown target, token), persisted across a restart"

# ---- 5. the flip under 16 concurrent clients
serve c --db "$tmp/db"
"$py" - "127.0.0.1:$port_c" <<'PY' || fail "flip under load"
import random, sys, threading, time
import numpy as np, taca_client
addr = sys.argv[1]
c0 = taca_client.Client(addr)
n = int(c0.info()['sample_count'])
side = {m: c0.get(range(n), fields=(m + ":image",), as_f32=True)["embeddings"][m + ":image"] for m in ("old", "adapted")}
assert not np.array_equal(side["old"], side["adapted"])
stop = time.time() + 10.0
calls, errors, seen = [0] * 16, [], {"old": 0, "adapted": 0}
lock = threading.Lock()
def client(t):
    c = taca_client.Client(addr, timeout=10)
    rng = random.Random(t)
    while time.time() < stop:
        idx = [rng.randrange(n) for _ in range(8)]
        try:
            if t % 4 == 3:
                c.search(vector=side["old"][idx[0]], model="current", k=3)
            else:
                b = c.get(idx, fields=("current:image",), as_f32=True)
                got, who = b["embeddings"]["current:image"], b["resolved"]["current:image"]
                if not np.array_equal(got, side[who][idx]):
                    raise AssertionError(f"batch not entirely {who}'s vectors")
                with lock:
                    seen[who] += 1
            calls[t] += 1
        except Exception as e:  # noqa: BLE001 - every failure counts
            with lock:
                errors.append(repr(e))
            return
def flipper():
    c = taca_client.Client(addr)
    k = 0
    while time.time() < stop:
        c.set_alias("current", "adapted" if k % 2 == 0 else "old")
        k += 1
        time.sleep(0.02)
    flips.append(k)
flips = []
th = [threading.Thread(target=client, args=(i,)) for i in range(16)] + [threading.Thread(target=flipper)]
for x in th: x.start()
for x in th: x.join()
assert not errors, errors[:3]
assert flips and flips[0] > 50 and seen["old"] > 0 and seen["adapted"] > 0, (flips, seen)
print(f"  flip under load: {flips[0]} flips, {sum(calls)} calls by 16 clients in 10 s, 0 failed; "
      f"batches {seen['old']} old / {seen['adapted']} adapted, none mixed")
PY
echo "test_upgrade_service: all checks passed"
