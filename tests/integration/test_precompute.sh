#!/usr/bin/env bash
# Integration test of `taca precompute` on generated WebDataset shards:
#  1. stored embeddings equal `taca embed` on the same inputs: bit for bit when the batches are the
#     same, within 1e-6 of the largest magnitude when rejected samples shift the batches;
#  2. corrupt images, empty captions, bad labels and missing captions are counted, not stored;
#  3. kill -9 at several random moments, then resume: the final content hash equals an
#     uninterrupted run's;
#  4. the JPEG pixel codec: smaller store, crops decode close to the raw ones, and a second model
#     embeds the stored JPEG crops (embed mode) as it embeds the decoded crops.
. "${TACA_SOURCE_DIR:?}/tests/integration/lib/common.sh"
model=$fix/clip/hf_gelu_f16   # image size 40, full CLIP vocabulary

compare() { # compare A.npy B.npy TOL (TOL 0 = exact)
  "$py" - "$1" "$2" "$3" <<'PY'
import sys, numpy as np
a, b, tol = np.load(sys.argv[1]), np.load(sys.argv[2]), float(sys.argv[3])
assert a.shape == b.shape, (a.shape, b.shape)
err = np.abs(a.astype(np.float64) - b).max() / max(np.abs(b).max(), 1e-30)
print(f"  {sys.argv[1].split('/')[-1]}: shape {a.shape}, max rel error {err:.3g} (tolerance {tol:g})")
sys.exit(0 if (err == 0 if tol == 0 else err <= tol) else 1)
PY
}

# --- 1. equality with taca embed, clean data: identical batches -> identical bits ---
"$bin/taca" synth --out "$tmp/clean" --n 24 --size 40 --shards 2
"$bin/taca" precompute --model "$model" --data "$tmp/clean/{00000..00001}.tar" --db "$tmp/db_clean" \
  --batch-size 8 --dtype f32 --quiet
"$bin/taca" query --db "$tmp/db_clean" export --model hf_gelu_f16 --modality image --out "$tmp/img.npy"
"$bin/taca" query --db "$tmp/db_clean" export --model hf_gelu_f16 --modality text --out "$tmp/txt.npy"
mkdir "$tmp/x"
for t in "$tmp"/clean/*.tar; do tar -xf "$t" -C "$tmp/x"; done
keys=$(ls "$tmp/x" | sed -n 's/\.png$//p' | sort)
files=(); : > "$tmp/captions.txt"
for k in $keys; do files+=("$tmp/x/$k.png"); cat "$tmp/x/$k.txt" >> "$tmp/captions.txt"; echo >> "$tmp/captions.txt"; done
"$bin/taca" embed --model "$model" --images "${files[@]}" --batch-size 8 --out "$tmp/img_ref.npy"
"$bin/taca" embed --model "$model" --text "$tmp/captions.txt" --batch-size 8 --out "$tmp/txt_ref.npy"
compare "$tmp/img.npy" "$tmp/img_ref.npy" 0 || fail "stored image embeddings differ from taca embed"
compare "$tmp/txt.npy" "$tmp/txt_ref.npy" 0 || fail "stored text embeddings differ from taca embed"

# --- 1b. --pixel-size: crops stored at another size; the embeddings are the model's own-size ones ---
"$bin/taca" precompute --model "$model" --data "$tmp/clean/{00000..00001}.tar" --db "$tmp/db_px" \
  --batch-size 8 --dtype f32 --pixel-size 24 --quiet
"$bin/taca" query --db "$tmp/db_px" info | grep -q "pixels *3x24x24 raw" || fail "--pixel-size 24 not recorded"
"$bin/taca" query --db "$tmp/db_px" export --model hf_gelu_f16 --modality image --out "$tmp/img_px.npy"
compare "$tmp/img_px.npy" "$tmp/img.npy" 0 || fail "--pixel-size changed the embeddings"

# --- 2. broken samples are counted and skipped; batches shift -> 1e-6 ---
"$bin/taca" synth --out "$tmp/dirty" --n 40 --size 40 --shards 2 --corrupt 4
"$bin/taca" precompute --model "$model" --data "$tmp/dirty/{00000..00001}.tar" --db "$tmp/db_dirty" \
  --batch-size 8 --dtype f32 2> "$tmp/log"
grep -q "36 samples stored, 4 rejected" "$tmp/log" || { cat "$tmp/log"; fail "expected 36 stored, 4 rejected"; }
for why in "corrupt or unreadable image: 1" "empty caption: 1" "label (.cls) is not a non-negative integer: 1" "no caption (.txt) for this key: 1"; do
  grep -qF "$why" "$tmp/log" || fail "missing reject reason '$why'"
done
"$bin/taca" query --db "$tmp/db_dirty" export --model hf_gelu_f16 --modality image --out "$tmp/img2.npy"
rm -rf "$tmp/x"; mkdir "$tmp/x"
for t in "$tmp"/dirty/*.tar; do tar -xf "$t" -C "$tmp/x"; done
rejected=$(sed -n "s/^.*rejected '\([0-9]*\)'.*$/\1/p" "$tmp/log" | sort)
files=()
for k in $(ls "$tmp/x" | sed -n 's/\.png$//p' | sort); do
  grep -qx "$k" <<<"$rejected" || files+=("$tmp/x/$k.png")
done
[ ${#files[@]} -eq 36 ] || fail "expected 36 good files, got ${#files[@]}"
"$bin/taca" embed --model "$model" --images "${files[@]}" --batch-size 8 --out "$tmp/img2_ref.npy"
compare "$tmp/img2.npy" "$tmp/img2_ref.npy" 1e-6 || fail "stored image embeddings differ from taca embed"
"$bin/taca" query --db "$tmp/db_dirty" lookup 000000019 >/dev/null 2>&1 && fail "a rejected sample was stored"

# --- 2b. a second model on the finished store embeds the stored samples only (no --data) ---
"$bin/taca" precompute --model "$model" --name second --db "$tmp/db_dirty" --batch-size 8 --dtype f32 2> "$tmp/log2"
grep -q "model 'second' embedded 36 stored samples" "$tmp/log2" || { cat "$tmp/log2"; fail "second model did not embed the 36 stored samples"; }
"$bin/taca" query --db "$tmp/db_dirty" export --model second --modality image --out "$tmp/img2_second.npy"
compare "$tmp/img2_second.npy" "$tmp/img2.npy" 1e-6 || fail "the second model's embeddings differ (same weights)"
"$bin/taca" query --db "$tmp/db_dirty" export --model second --modality text --out "$tmp/txt2_second.npy"
"$bin/taca" query --db "$tmp/db_dirty" export --model hf_gelu_f16 --modality text --out "$tmp/txt2.npy"
compare "$tmp/txt2_second.npy" "$tmp/txt2.npy" 1e-6 || fail "the second model's text embeddings differ"

# --- 3. kill -9 at random moments, resume, same content hash ---
"$bin/taca" synth --out "$tmp/big" --n 400 --size 40 --shards 3 --corrupt 6
args=(precompute --model "$model" --data "$tmp/big/{00000..00002}.tar" --batch-size 4 --quiet)
run() { "$bin/taca" "${args[@]}" --db "$1" 2>/dev/null; }
start=$(date +%s.%N)
run "$tmp/db_ref"
dur=$(echo "$(date +%s.%N) - $start" | bc)
ref=$("$bin/taca" query --db "$tmp/db_ref" --json info --hash | "$py" -c 'import json,sys; print(json.load(sys.stdin)["content_hash"])')
echo "  uninterrupted run: ${dur}s, content hash $ref"
for i in 1 2 3 4 5; do
  db="$tmp/db_kill$i"
  delay=$("$py" -c "import random; random.seed($i); print(round(random.uniform(0.02, max(0.05, $dur * 0.9)), 3))")
  "$bin/taca" "${args[@]}" --db "$db" 2>/dev/null & pid=$!  # the taca process itself, not a subshell
  sleep "$delay"
  kill -9 "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  before=$("$bin/taca" query --db "$db" --json info 2>/dev/null | "$py" -c 'import json,sys; print(json.load(sys.stdin)["samples"])' 2>/dev/null || echo "no store yet")
  run "$db"
  got=$("$bin/taca" query --db "$db" --json info --hash | "$py" -c 'import json,sys; print(json.load(sys.stdin)["content_hash"])')
  echo "  killed after ${delay}s (samples then: $before), resumed: $got"
  [ "$got" = "$ref" ] || fail "content hash after kill -9 + resume differs from the uninterrupted run"
done

# --- 4. the JPEG pixel codec ---
"$bin/taca" precompute --model "$model" --data "$tmp/clean/{00000..00001}.tar" --db "$tmp/db_jpeg" \
  --pixel-codec jpeg --pixel-quality 90 --quiet
"$bin/taca" precompute --model "$model" --name second --db "$tmp/db_jpeg" --quiet   # embed mode over JPEG crops
"$bin/taca" query --db "$tmp/db_jpeg" info | grep -q "pixels *3x40x40 jpeg" || fail "the store does not say jpeg"
"$bin/taca" query --db "$tmp/db_clean" --json lookup $(cd "$tmp/clean" && tar tf 00000.tar | sed -n 's/\.txt$//p' | head -4) > "$tmp/raw.jsonl"
"$bin/taca" query --db "$tmp/db_jpeg" --json lookup $(cd "$tmp/clean" && tar tf 00000.tar | sed -n 's/\.txt$//p' | head -4) > "$tmp/jpeg.jsonl"
"$bin/taca" query --db "$tmp/db_jpeg" export --model second --modality image --out "$tmp/second.npy"
"$bin/taca" query --db "$tmp/db_jpeg" export --model hf_gelu_f16 --modality image --out "$tmp/first_jpeg.npy"
"$py" - "$tmp" <<'PY' || fail "JPEG codec"
import json, sys, numpy as np
t = sys.argv[1]
raw = [json.loads(l) for l in open(f'{t}/raw.jsonl')]
jpg = [json.loads(l) for l in open(f'{t}/jpeg.jsonl')]
assert all(r['pixel_bytes'] == 4800 for r in raw), raw
assert all(0 < j['pixel_bytes'] < 4800 for j in jpg), jpg
# the second model (the same weights) embedded the stored JPEG crops; the first embedded the raw
# crops at ingest: their features differ only by the codec's loss
s, f = np.load(f'{t}/second.npy').astype(float), np.load(f'{t}/first_jpeg.npy').astype(float)
cos = (s * f).sum(1) / np.linalg.norm(s, axis=1) / np.linalg.norm(f, axis=1)
print(f"  jpeg q90: crops of {[j['pixel_bytes'] for j in jpg]} bytes (raw 4800); features of decoded vs raw "
      f"crops: min cosine {cos.min():.4f}")
assert cos.min() > 0.98, cos.min()
PY
echo "test_precompute: all checks passed"
