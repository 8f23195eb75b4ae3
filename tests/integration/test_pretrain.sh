#!/usr/bin/env bash
# test_pretrain.sh: `taca pretrain` end to end on a tiny architecture: usage errors (exit 2) with
# one-line reasons, a short training run whose per-step JSON log has one line per step and whose
# loss falls, the summary line on stdout, the saved HuggingFace directory loading in `taca embed`
# (images and captions), replacing an existing model directory atomically (no DIR.tmp left), --init
# from the saved model, and an architecture mismatch on --init.
set -uo pipefail
BIN=${TACA_BIN_DIR:?}
T="$BIN/taca"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail() { echo "FAIL: $*"; exit 1; }

expect() { # expect STATUS PATTERN CMD...: runs CMD, checks its exit status and that its output matches
  local want=$1 pat=$2
  shift 2
  local out st=0
  out=$("$@" 2>&1) || st=$?
  [ "$st" -eq "$want" ] || fail "$* -> exit $st, want $want: $out"
  echo "$out" | grep -qE -- "$pat" || fail "$* -> output lacks /$pat/: $out"
}

cat > "$tmp/tiny.json" <<'EOF'
{"embed_dim": 16, "quick_gelu": true,
 "vision_cfg": {"image_size": 16, "patch_size": 8, "width": 32, "layers": 1, "head_width": 16},
 "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}}
EOF
cat > "$tmp/other.json" <<'EOF'
{"embed_dim": 8, "vision_cfg": {"image_size": 16, "patch_size": 8, "width": 16, "layers": 1, "head_width": 16},
 "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 16, "heads": 1, "layers": 1}}
EOF
cat > "$tmp/smallvocab.json" <<'EOF'
{"embed_dim": 8, "vision_cfg": {"image_size": 16, "patch_size": 8, "width": 16, "layers": 1, "head_width": 16},
 "text_cfg": {"context_length": 77, "vocab_size": 512, "width": 16, "heads": 1, "layers": 1}}
EOF

expect 0 "--arch CONFIG.json" "$T" pretrain --help
expect 2 "--arch and --out are required" "$T" pretrain --out "$tmp/m"
expect 2 "unknown or incomplete option '--bogus'" "$T" pretrain --arch ViT-B-32 --out y --bogus
expect 2 "--steps expects a positive integer, got '0'" "$T" pretrain --arch "$tmp/tiny.json" --out "$tmp/m" --steps 0
expect 2 "--lr expects a number >= 0, got 'abc'" "$T" pretrain --arch "$tmp/tiny.json" --out "$tmp/m" --lr abc
expect 2 "unknown architecture 'ViT-X'" "$T" pretrain --arch ViT-X --out "$tmp/m"
expect 2 "vocab_size is 512; the CLIP tokenizer needs 49408" "$T" pretrain --arch "$tmp/smallvocab.json" --out "$tmp/m"
expect 2 "missing.json: " "$T" pretrain --arch "$tmp/missing.json" --out "$tmp/m"

# A short run: 60 steps of 32 samples rendered at 32 px (resized to the model's 16).
"$T" pretrain --arch "$tmp/tiny.json" --out "$tmp/m" --steps 60 --batch-size 32 --lr 2e-3 --size 32 \
  --synth 5000 --eval 256 --log-json "$tmp/log.json" --threads 2 > "$tmp/summary.json" 2> "$tmp/err" ||
  fail "pretrain: $(cat "$tmp/err")"
[ "$(wc -l < "$tmp/log.json")" -eq 60 ] || fail "log has $(wc -l < "$tmp/log.json") lines, want 60"
grep -q '"step": 59, "loss": ' "$tmp/log.json" || fail "log lacks step 59"
# The loss falls: mean of the last 10 steps below the first step's.
awk -F'"loss": ' '{split($2, a, ","); l[NR] = a[1]} END {
  s = 0; for (i = NR - 9; i <= NR; i++) s += l[i]; s /= 10;
  if (!(s < l[1] - 0.1)) { print "loss " l[1] " -> " s; exit 1 } }' "$tmp/log.json" ||
  fail "the loss did not fall"
grep -q '"eval":{"start":5000,"n":256,"batch":32' "$tmp/summary.json" || fail "summary: $(cat "$tmp/summary.json")"
grep -q 'held-out 256 samples from 5000' "$tmp/err" || fail "no evaluation line: $(cat "$tmp/err")"
[ -f "$tmp/m/config.json" ] && [ -f "$tmp/m/model.safetensors" ] || fail "model directory incomplete"
[ -e "$tmp/m.tmp" ] && fail "m.tmp left behind"

# The directory is a HF CLIP model for the rest of the pipeline.
printf 'a small red circle in the top left\na large blue square in the center\n' > "$tmp/caps.txt"
"$T" embed --model "$tmp/m" --text "$tmp/caps.txt" --out "$tmp/t.npy" || fail "embed --text"
"$T" synth --out "$tmp/imgs" --n 3 --size 32 --format folder > /dev/null || fail "synth"
"$T" embed --model "$tmp/m" --images "$tmp/imgs/images/"*.png --out "$tmp/i.npy" || fail "embed --images"
python3 - "$tmp" <<'EOF' || fail "embeddings"
import struct, sys
def shape(p):
    b = open(p, "rb").read()
    hl = struct.unpack("<H", b[8:10])[0]
    return b[10:10 + hl].decode()
t, i = shape(sys.argv[1] + "/t.npy"), shape(sys.argv[1] + "/i.npy")
assert "(2, 16)" in t and "(3, 16)" in i, (t, i)
EOF

# Training again into the same directory replaces it; --init continues from the saved model.
cp "$tmp/m/model.safetensors" "$tmp/before.safetensors"
"$T" pretrain --arch "$tmp/tiny.json" --out "$tmp/m" --init "$tmp/m" --steps 3 --batch-size 8 --eval 0 \
  --threads 2 > /dev/null 2> "$tmp/err" || fail "pretrain --init: $(cat "$tmp/err")"
cmp -s "$tmp/m/model.safetensors" "$tmp/before.safetensors" && fail "model not replaced"
[ -e "$tmp/m.tmp" ] && fail "m.tmp left behind after replacing"
expect 1 "--init: .*architecture" "$T" pretrain --arch "$tmp/other.json" --out "$tmp/m2" --init "$tmp/m" --steps 1
[ -e "$tmp/m2" ] && fail "m2 created by a failed run"
echo "test_pretrain: ok"
