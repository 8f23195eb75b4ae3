#!/usr/bin/env bash
# test_export.sh: the adapted encoder as one model (`taca export`, methods/encoder.h):
#  1. adapter and LoRA checkpoints over an open_clip NEW tower (fixtures of gen_export.py): `taca
#     embed` of the export matches the independent PyTorch reference and the docs/export.md snippet
#     (run verbatim on the exported directory) within 1e-4 x max|ref|; text features equal OLD's
#     bit for bit (and the snippet's within the tolerance); config.json records the sources;
#  2. on a store: `taca eval` of the export equals eval of NEW + CKPT bit for bit; `taca embed
#     --images` of the test images and `taca precompute` of the export into the store both equal
#     the adapted features eval scored, bit for bit (batch size 1 everywhere: features depend on
#     the rows of a batch); the store records the export's weights hash, and its space is OLD's;
#  3. the gate: exit 0 when thresholds hold, 3 when one fails or cannot be measured, 2 for a bad spec;
#  4. errors: a checkpoint for another tower, --arch with an export, non-finite features.
. "${TACA_SOURCE_DIR:?}/tests/integration/lib/common.sh"
new=$fix/taca/tower_gelu.safetensors
arch=$fix/taca/tower_gelu.json
old=$fix/clip/hf_gelu_f16

# ---- 1. export, embed, reference, snippet
for c in adapter lora; do
  "$bin/taca" export --new-model "$new" --arch "$arch" --checkpoint "$fix/export/$c.safetensors" --text-model "$old" \
    --out "$tmp/x_$c" 2> /dev/null
  "$bin/taca" embed --model "$tmp/x_$c" --pixels "$fix/export/pixels.npy" --out "$tmp/y_$c.npy"
  "$bin/taca" embed --model "$tmp/x_$c" --tokens "$old/tokens.npy" --out "$tmp/t_$c.npy"
done
"$bin/taca" embed --model "$old" --tokens "$old/tokens.npy" --out "$tmp/t_old.npy"
sed -n '/^```python$/,/^```$/p' "$src/docs/export.md" | sed '1d;$d' > "$tmp/snippet.py"
[ -s "$tmp/snippet.py" ] || fail "no python snippet in docs/export.md"
"$py" - "$tmp" "$fix" <<'PY' || fail "exported features"
import json, sys
import numpy as np, torch
t, fix = sys.argv[1], sys.argv[2]
sys.path.insert(0, t)
from snippet import image_features, text_features
pix = torch.from_numpy(np.load(f'{fix}/export/pixels.npy'))
tok = torch.from_numpy(np.load(f'{fix}/clip/hf_gelu_f16/tokens.npy')).long()
t_old = np.load(f'{t}/t_old.npy')
for c in ('adapter', 'lora'):
    y = np.load(f'{t}/y_{c}.npy'); ref = np.load(f'{fix}/export/{c}_features.npy')
    with torch.no_grad():
        snip = image_features(f'{t}/x_{c}', pix).numpy(); snip_t = text_features(f'{t}/x_{c}', tok).numpy()
    assert y.shape == ref.shape == snip.shape == (5, 16), (y.shape, ref.shape, snip.shape)
    e_ref = np.abs(y - ref).max() / np.abs(ref).max(); e_snip = np.abs(y - snip).max() / np.abs(snip).max()
    assert e_ref < 1e-4 and e_snip < 1e-4, (c, e_ref, e_snip)
    tc = np.load(f'{t}/t_{c}.npy')
    assert np.array_equal(tc, t_old), f"{c}: text features are not OLD's"
    e_txt = np.abs(tc - snip_t).max() / np.abs(snip_t).max()
    assert e_txt < 1e-4, (c, e_txt)
    cfg = json.load(open(f'{t}/x_{c}/config.json')); tc_ = cfg['taca']
    assert cfg['projection_dim'] == 16 and tc_['vision_projection_dim'] == 20 and tc_['format'] == 1
    assert tc_['peft']['kind'] == c and tc_['space'] == tc_['sources']['old']['xxh'] != ''
    assert tc_['sources']['new']['xxh'] != tc_['sources']['old']['xxh'] and tc_['sources']['checkpoint']['step'] == 7
    print(f"  {c}: C vs PyTorch reference {e_ref:.1e}, vs docs snippet {e_snip:.1e} (text {e_txt:.1e}); text = OLD's")
PY

# ---- 2. a store at the new tower's size: eval, embed, precompute agree bit for bit
"$bin/taca" synth --out "$tmp/data" --n 48 --size 40 --format folder > /dev/null
"$bin/taca" precompute --model "$old" --name old --data "$tmp/data" --db "$tmp/db" --pixel-size 16 --quiet
ev=(--db "$tmp/db" --old old --threads 1 --quiet --split 0.5 --seed 3 --batch-size 1 --no-new-head)
"$bin/taca" eval "${ev[@]}" --new-model "$tmp/x_adapter" --save-features "$tmp/fe" --json "$tmp/e.json" > /dev/null
"$bin/taca" eval "${ev[@]}" --new-model "$new" --arch "$arch" --checkpoint "$fix/export/adapter.safetensors" \
  --save-features "$tmp/fc" > /dev/null
for f in test_index test_new test_adapted test_old_image; do
  cmp -s "$tmp/fe/$f.npy" "$tmp/fc/$f.npy" || fail "eval of the export differs from eval of NEW + CKPT ($f)"
done
# the test images, in split order (folder entries are stored in captions.tsv order)
mapfile -t files < <("$py" -c "
import numpy as np, sys
rows = [l.split('\t')[0] for l in open(sys.argv[1] + '/captions.tsv')]
print('\n'.join(sys.argv[1] + '/' + rows[i] for i in np.load(sys.argv[2])))" "$tmp/data" "$tmp/fe/test_index.npy")
"$bin/taca" query --db "$tmp/db" lookup "${files[0]#"$tmp/data/"}" | grep -q "index $("$py" -c "import numpy as np; print(np.load('$tmp/fe/test_index.npy')[0])")" \
  || fail "store indices do not follow captions.tsv"
"$bin/taca" embed --model "$tmp/x_adapter" --batch-size 1 --threads 1 --out "$tmp/emb.npy" --images "${files[@]}"
"$bin/taca" precompute --model "$tmp/x_adapter" --name adapted --db "$tmp/db" --dtype f32 --batch-size 1 --threads 1 --quiet
"$bin/taca" query --db "$tmp/db" export --model adapted --modality image --out "$tmp/pre.npy"
"$bin/taca" query --db "$tmp/db" export --model adapted --modality text --out "$tmp/pre_t.npy"
"$bin/taca" query --db "$tmp/db" export --model old --modality text --dtype stored --out "$tmp/old_t.npy"
"$bin/taca" query --db "$tmp/db" info > "$tmp/info.txt"
"$py" - "$tmp" <<'PY' || fail "eval / embed / precompute"
import json, re, sys
import numpy as np
t = sys.argv[1]
idx = np.load(f'{t}/fe/test_index.npy'); ad = np.load(f'{t}/fe/test_adapted.npy')
emb = np.load(f'{t}/emb.npy'); pre = np.load(f'{t}/pre.npy')
assert np.array_equal(emb, ad), "embed --images != eval's adapted features"
assert np.array_equal(pre[idx], ad), "precompute != eval's adapted features"
# the adapted text tower is OLD's: its F32 rows round to OLD's stored F16 rows
assert np.array_equal(np.load(f'{t}/pre_t.npy').astype(np.float16), np.load(f'{t}/old_t.npy')), "text rows"
info = open(f'{t}/info.txt').read()
xxh = dict(re.findall(r'\[\d+\] (\w+) .*?\n.*?weights xxh3 (\w+)', info))
cfg = json.load(open(f'{t}/x_adapter/config.json'))
assert xxh['old'] == cfg['taca']['space'], (xxh, cfg['taca']['space'])
assert xxh['adapted'] not in ('', xxh['old'])
print(f"  store: eval(export) = eval(NEW + CKPT); embed --images and precompute = eval's adapted features "
      f"({len(idx)} test images, bit for bit); space = old's weights {xxh['old'][:8]}...")
PY

# ---- 3. the gate
g=(--db "$tmp/db" --old old --threads 1 --quiet --split 0.5 --seed 3 --no-new-head --new-model "$tmp/x_adapter")
"$bin/taca" eval "${g[@]}" --gate min-gain=-100,max-flip=100 > /dev/null || fail "a gate that holds must exit 0"
set +e
"$bin/taca" eval "${g[@]}" --gate min-gain=100.5 --json "$tmp/g1.json" > /dev/null 2> "$tmp/g1"; r1=$?
"$bin/taca" eval "${g[@]}" --gate max-flip=-1 > /dev/null 2> "$tmp/g2"; r2=$?
"$bin/taca" eval "${g[@]}" --new-model "$new" --arch "$arch" --gate max-flip=50 > /dev/null 2> "$tmp/g3"; r3=$?
"$bin/taca" eval "${g[@]}" --gate min-gain > /dev/null 2> "$tmp/g4"; r4=$?
"$bin/taca" eval "${g[@]}" --gate speed=1 > /dev/null 2> "$tmp/g5"; r5=$?
set -e
[ "$r1" = 3 ] && grep -q "min-gain" "$tmp/g1" || fail "min-gain gate: exit $r1, $(cat "$tmp/g1")"
[ "$r2" = 3 ] && grep -q "max-flip: negative-flip rate" "$tmp/g2" || fail "max-flip gate: exit $r2, $(cat "$tmp/g2")"
[ "$r3" = 3 ] && grep -q "not measurable" "$tmp/g3" || fail "gate without an adapted model: exit $r3, $(cat "$tmp/g3")"
[ "$r4" = 2 ] && [ "$r5" = 2 ] || fail "bad gate specs: exits $r4, $r5"
[ "$(wc -l < "$tmp/g1")" = 1 ] || fail "gate failure is not one line"
"$py" -c "
import json, sys; g = json.load(open(sys.argv[1]))['gate']
assert g['passed'] is False and g['min_gain'] == 100.5 and g['reason'].startswith('min-gain'), g" "$tmp/g1.json" \
  || fail "the JSON does not report the failed gate"
echo "  gate: exit 0 when it holds, 3 when it fails ($(cut -c1-60 "$tmp/g1")...), 2 for a bad spec"

# ---- 4. errors
expect() { # expect EXIT PATTERN CMD...
  local want=$1 pat=$2; shift 2
  set +e; "$@" > /dev/null 2> "$tmp/err"; local got=$?; set -e
  [ "$got" = "$want" ] && grep -q -- "$pat" "$tmp/err" && [ "$(wc -l < "$tmp/err")" = 1 ] \
    || fail "$* -> exit $got (want $want), stderr: $(cat "$tmp/err")"
}
expect 1 "projector takes 20-d input" "$bin/taca" export --new-model "$old" --checkpoint "$fix/export/adapter.safetensors" --out "$tmp/bad"
expect 1 "drop --arch" "$bin/taca" embed --model "$tmp/x_lora" --arch ViT-B-16 --pixels "$fix/export/pixels.npy" --out "$tmp/z.npy"
expect 2 "required" "$bin/taca" export --new-model "$new" --out "$tmp/bad"
"$py" - "$fix/export/adapter.safetensors" "$tmp/nan.safetensors" <<'PY'
import json, struct, sys
import numpy as np
b = open(sys.argv[1], 'rb').read(); n = struct.unpack('<Q', b[:8])[0]; h = json.loads(b[8:8 + n])
body = bytearray(b[8 + n:]); a, _ = h['projector.fc2.bias']['data_offsets']
body[a:a + 4] = np.float32(np.nan).tobytes()
open(sys.argv[2], 'wb').write(b[:8 + n] + bytes(body))
PY
"$bin/taca" export --new-model "$new" --arch "$arch" --checkpoint "$tmp/nan.safetensors" --out "$tmp/x_nan" 2> /dev/null
expect 1 "x_nan: the image features of row 0 are not finite" "$bin/taca" embed --model "$tmp/x_nan" --pixels "$fix/export/pixels.npy" --out "$tmp/z.npy"
echo "  errors: one-line messages naming the model or file, exit 1 (2 for usage)"
echo "test_export: all checks passed"
