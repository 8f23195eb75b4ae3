#!/usr/bin/env bash
# --precision f32|bf16 (issue 15) through the programs:
#  1. taca embed: bf16 features within cosine 0.999 of F32 per row (not equal to them); --precision
#     f32 and no flag give the same bytes; TACA_PRECISION=bf16 is --precision bf16; a bad value is
#     one line and exit 2;
#  2. taca precompute --precision bf16: the store records "bf16" for the model (query info, text and
#     JSON), its embeddings are `taca embed --precision bf16` bit for bit (same batches); an F32
#     store records f32 and has the content hash of a run without the flag; resuming the model in
#     another precision fails naming the field;
#  3. caption search: offline (taca query) and through taca-featured (default: the precision the
#     store records) return the same hits on the bf16 store; taca-train --precision bf16 against
#     that server stays within 1% of the F32 run's losses over 20 steps; taca eval --precision bf16 scores BF16
#     features (within cosine 0.999 of the stored F32 ones) and says so in its JSON;
#  4. usage errors of taca-featured, taca-train and taca eval.
. "${TACA_SOURCE_DIR:?}/tests/integration/lib/common.sh"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2> /dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2> /dev/null || true; done
  rm -rf "$tmp"
}
trap cleanup EXIT
expect() { # expect STATUS PATTERN CMD...
  local want=$1 pat=$2 st=0 out
  shift 2
  out=$("$@" 2>&1) || st=$?
  [ "$st" -eq "$want" ] || fail "$* -> exit $st, want $want: $out"
  echo "$out" | grep -Eq -- "$pat" || fail "$* -> '$out' lacks '$pat'"
  [ "$want" -eq 0 ] || [ "$(echo "$out" | wc -l)" -eq 1 ] || fail "$* -> more than one line: $out"
}

# --- 1. taca embed ---
m=$fix/bf16
E=("$bin/taca" embed --model "$m/model.safetensors" --arch "$m/open_clip_config.json")
"${E[@]}" --pixels "$m/pixels.npy" --out "$tmp/f32_default.npy"
"${E[@]}" --pixels "$m/pixels.npy" --out "$tmp/f32.npy" --precision f32
"${E[@]}" --pixels "$m/pixels.npy" --out "$tmp/bf16.npy" --precision bf16
TACA_PRECISION=bf16 "${E[@]}" --pixels "$m/pixels.npy" --out "$tmp/bf16_env.npy"
"${E[@]}" --tokens "$m/tokens.npy" --out "$tmp/txt_bf16.npy" --precision bf16
cmp -s "$tmp/f32_default.npy" "$tmp/f32.npy" || fail "--precision f32 differs from the default"
cmp -s "$tmp/bf16.npy" "$tmp/bf16_env.npy" || fail "TACA_PRECISION=bf16 differs from --precision bf16"
"$py" - "$tmp" "$m" <<'PY' || fail "bf16 features are not within cosine 0.999 of F32"
import sys, numpy as np
t, m = sys.argv[1:]
for got, ref in ((f"{t}/bf16.npy", f"{m}/image_f32.npy"), (f"{t}/txt_bf16.npy", f"{m}/text_f32.npy")):
    a, r = np.load(got).astype(np.float64), np.load(ref).astype(np.float64)
    cos = (a * r).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(r, axis=1)
    print(f"  {got.split('/')[-1]}: min cosine to F32 {cos.min():.6f}")
    assert cos.min() >= 0.999 and not np.array_equal(a, r)
PY
expect 2 "taca embed: --precision 'fp8': expected f32 or bf16" "${E[@]}" --pixels "$m/pixels.npy" --out "$tmp/x.npy" --precision fp8
st=0
out=$(TACA_PRECISION=half "${E[@]}" --pixels "$m/pixels.npy" --out "$tmp/x.npy" 2>&1) || st=$?
[ "$st" -eq 2 ] && echo "$out" | grep -q "'half'" || fail "TACA_PRECISION=half -> exit $st: $out"

# --- 2. taca precompute ---
model=$fix/clip/hf_gelu_f16 # image size 40, full CLIP vocabulary, text tower
"$bin/taca" synth --out "$tmp/data" --n 24 --size 40 --shards 2
P=("$bin/taca" precompute --model "$model" --data "$tmp/data/{00000..00001}.tar" --batch-size 8 --dtype f32 --quiet)
"${P[@]}" --db "$tmp/db_bf16" --precision bf16
"${P[@]}" --db "$tmp/db_f32" --precision f32
"${P[@]}" --db "$tmp/db_plain"
"$bin/taca" query --db "$tmp/db_bf16" info | grep -q "computed with --precision bf16" || fail "query info does not show bf16"
"$bin/taca" query --db "$tmp/db_f32" info | grep -q "precision" && fail "query info mentions a precision for an F32 model"
"$bin/taca" query --db "$tmp/db_bf16" --json info > "$tmp/info_bf16.json"
"$bin/taca" query --db "$tmp/db_f32" --json info > "$tmp/info_f32.json"
"$py" - "$tmp" <<'PY' || fail "query info --json precision"
import json, sys
t = sys.argv[1]
assert json.load(open(f"{t}/info_bf16.json"))["models"][0]["precision"] == "bf16"
assert json.load(open(f"{t}/info_f32.json"))["models"][0]["precision"] == "f32"
PY
h_f32=$("$bin/taca" query --db "$tmp/db_f32" info --hash | sed -n 's/^content *//p')
h_plain=$("$bin/taca" query --db "$tmp/db_plain" info --hash | sed -n 's/^content *//p')
h_bf16=$("$bin/taca" query --db "$tmp/db_bf16" info --hash | sed -n 's/^content *//p')
[ -n "$h_f32" ] && [ "$h_f32" = "$h_plain" ] || fail "--precision f32 changed the store ($h_f32 vs $h_plain)"
[ "$h_bf16" != "$h_f32" ] || fail "the bf16 store has the F32 store's content hash"
"$bin/taca" query --db "$tmp/db_bf16" export --model hf_gelu_f16 --modality image --out "$tmp/pre_img.npy"
"$bin/taca" query --db "$tmp/db_bf16" export --model hf_gelu_f16 --modality text --out "$tmp/pre_txt.npy"
mkdir "$tmp/x"
for t in "$tmp"/data/*.tar; do tar -xf "$t" -C "$tmp/x"; done
files=()
: > "$tmp/captions.txt"
for k in $(ls "$tmp/x" | sed -n 's/\.png$//p' | sort); do
  files+=("$tmp/x/$k.png")
  cat "$tmp/x/$k.txt" >> "$tmp/captions.txt"
  echo >> "$tmp/captions.txt"
done
"$bin/taca" embed --model "$model" --images "${files[@]}" --batch-size 8 --precision bf16 --out "$tmp/emb_img.npy"
"$bin/taca" embed --model "$model" --text "$tmp/captions.txt" --batch-size 8 --precision bf16 --out "$tmp/emb_txt.npy"
"$py" - "$tmp" <<'PY' || fail "stored bf16 embeddings differ from taca embed --precision bf16"
import sys, numpy as np
t = sys.argv[1]
for a, b in (("pre_img", "emb_img"), ("pre_txt", "emb_txt")):
    x, y = np.load(f"{t}/{a}.npy"), np.load(f"{t}/{b}.npy")
    assert x.shape == y.shape and np.array_equal(x, y), (a, x.shape, y.shape)
PY
expect 1 "already registered with a different precision" "${P[@]}" --db "$tmp/db_bf16" --precision f32

# --- 3. caption search in the recorded precision, offline and served ---
"$bin/taca" query --db "$tmp/db_bf16" --json search --model hf_gelu_f16 --modality image \
  --caption "a red circle" --caption "a blue square" --text-model "$model" -k 5 > "$tmp/off.jsonl"
"$bin/taca-featured" --db "$tmp/db_bf16" --listen 127.0.0.1:0 --port-file "$tmp/ports" --threads 2 \
  --model "hf_gelu_f16=$model" --log "$tmp/featured.log" &
pids+=($!)
for _ in $(seq 200); do [ -s "$tmp/ports" ] && break; sleep 0.05; done
port=$(sed -n 's/^grpc=//p' "$tmp/ports")
[ -n "$port" ] || fail "taca-featured did not start: $(cat "$tmp/featured.log")"
grep -q "encoder of 'hf_gelu_f16' loaded from .*; bf16)" "$tmp/featured.log" || fail "featured: $(cat "$tmp/featured.log")"
"$bin/taca" query --server "127.0.0.1:$port" --json search --model hf_gelu_f16 --modality image \
  --caption "a red circle" --caption "a blue square" -k 5 > "$tmp/on.jsonl"
"$py" - "$tmp" <<'PY' || fail "served and offline caption search differ on the bf16 store"
import json, sys
t = sys.argv[1]
def hits(f):
    out = []
    for line in open(f):
        o = json.loads(line)
        out.append([h.get("index", h.get("key")) for h in o.get("hits", o.get("results", []))])
    return out
a, b = hits(f"{t}/off.jsonl"), hits(f"{t}/on.jsonl")
print(f"  offline {a}\n  served  {b}")
assert a == b and len(a) == 2 and all(len(h) == 5 for h in a)
PY

# --- 3a. taca-train --precision bf16 against that server: 20 steps within 1% of the F32 run's losses ---
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_btl=self,vader
T=("$bin/taca-train" --server "127.0.0.1:$port" --new-model "$model" --projector-hidden 64 --threads 2
   --batch-size 16 --steps 20)
"${T[@]}" --out "$tmp/t32" --log-json "$tmp/t32.json" --quiet
"${T[@]}" --out "$tmp/t16" --log-json "$tmp/t16.json" --precision bf16 2> "$tmp/t16.err"
grep -q "frozen tower in bf16 (GEMMs: " "$tmp/t16.err" || fail "taca-train --precision bf16 did not say so: $(cat "$tmp/t16.err")"
"$py" - "$tmp" <<'PY' || fail "taca-train --precision bf16 loss curve"
import json, sys
t = sys.argv[1]
a, b = [[json.loads(l) for l in open(f"{t}/{x}.json")] for x in ("t32", "t16")]
assert [r["step"] for r in a] == list(range(20)) == [r["step"] for r in b]
gap = max(abs(x["loss"] - y["loss"]) / abs(x["loss"]) for x, y in zip(a, b))
print(f"  taca-train 20 steps: loss {a[0]['loss']:.4f} -> {a[-1]['loss']:.4f} (f32), "
      f"{b[0]['loss']:.4f} -> {b[-1]['loss']:.4f} (bf16), largest gap {gap:.2g}")
assert 0 < gap <= 0.01
PY

# --- 3b. taca eval --precision bf16: the new tower (here the old model itself) in BF16 against the
#     F32 store: features within cosine 0.999 of the stored ones, and the report says bf16 ---
"$bin/taca" eval --db "$tmp/db_f32" --old hf_gelu_f16 --new-model "$model" --split 0.5 --precision bf16 \
  --json "$tmp/e16.json" --quiet > /dev/null
"$bin/taca" eval --db "$tmp/db_f32" --old hf_gelu_f16 --new-model "$model" --split 0.5 \
  --json "$tmp/e32.json" --quiet > /dev/null
"$py" - "$tmp" <<'PY' || fail "taca eval --precision bf16"
import json, sys
t = sys.argv[1]
e16, e32 = json.load(open(f"{t}/e16.json")), json.load(open(f"{t}/e32.json"))
d16, d32 = e16["distance"]["new_vs_old"], e32["distance"]["new_vs_old"]
print(f"  eval: new vs stored old, mean cosine {d16['mean_cosine']:.6f} (bf16), {d32['mean_cosine']:.6f} (f32)")
assert e16["precision"] == "bf16" and "precision" not in e32
assert d16["mean_cosine"] >= 0.999 and d16["mean_l2"] > d32["mean_l2"]
PY

# --- 4. usage errors ---
expect 2 "--precision 'x': expected f32 or bf16" "$bin/taca-featured" --db "$tmp/db_bf16" --precision x
expect 2 "--precision expects f32 or bf16, got 'x'" "$bin/taca-train" --server 127.0.0.1:1 --new-model "$model" --out "$tmp/o" --precision x
expect 2 "--precision bf16 is for --objective taca" "$bin/taca-train" --objective aft --precision bf16 \
  --server 127.0.0.1:1 --features a --downstream linear --out "$tmp/o" --num-classes 3
expect 2 "taca eval: --precision 'y'" "$bin/taca" eval --db "$tmp/db_bf16" --old hf_gelu_f16 --new-model "$model" --precision y
expect 2 "taca precompute: --precision 'z'" "$bin/taca" precompute --model "$model" --db "$tmp/db_z" --precision z
echo "test_precision: all checks passed"
