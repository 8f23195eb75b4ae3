#!/usr/bin/env bash
# Malformed inputs to the command-line tools: each gives ONE line on stderr naming the problem and a
# non-zero exit (CI runs this under ASan+UBSan too, so any memory error fails it). Inputs: truncated
# safetensors, header offsets out of range, a wrong dtype, a missing tensor, a shape that does not
# match the architecture, bad .npy files, wrong pixel shapes, unknown options.
set -uo pipefail
bin=${TACA_BIN_DIR:?}
fix=${TACA_FIXTURES_DIR:?}
py=/usr/bin/python3
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fails=0
model=$fix/clip/oc_quickgelu_f32
arch=$model/open_clip_config.json

expect_error() { # expect_error WHAT PATTERN -- COMMAND...
  local what=$1 pat=$2; shift 3
  "$@" > "$tmp/out" 2> "$tmp/err"; local rc=$?
  local lines; lines=$(wc -l < "$tmp/err")
  if [ "$rc" -eq 0 ] || [ "$lines" -ne 1 ] || ! grep -qi -- "$pat" "$tmp/err" || grep -q "Sanitizer" "$tmp/err"; then
    echo "FAIL: $what: rc=$rc, $lines line(s): $(cat "$tmp/err")"; fails=$((fails + 1))
  else
    echo "  ok  $what: $(cat "$tmp/err")"
  fi
}

# Broken copies of a valid open_clip state dict.
"$py" - "$model/model.safetensors" "$tmp" <<'PY'
import json, struct, sys
src, out = sys.argv[1], sys.argv[2]
b = open(src, 'rb').read(); n = struct.unpack('<Q', b[:8])[0]; h = json.loads(b[8:8 + n]); data = b[8 + n:]
def write(name, header, payload):
    hb = json.dumps(header).encode(); hb += b' ' * ((8 - len(hb) % 8) % 8)
    open(f'{out}/{name}', 'wb').write(struct.pack('<Q', len(hb)) + hb + payload)
open(f'{out}/truncated.safetensors', 'wb').write(b[:len(b) // 2])
h1 = json.loads(json.dumps(h)); k = next(k for k in h1 if k != '__metadata__')
h1[k]['data_offsets'][1] += 10 ** 9; write('offsets.safetensors', h1, data)
h2 = json.loads(json.dumps(h)); h2['visual.ln_pre.weight']['dtype'] = 'I32'; write('dtype.safetensors', h2, data)
# missing tensor: drop the last tensor (by offset) and its bytes
h3 = json.loads(json.dumps(h)); last = max((k for k in h3 if k != '__metadata__'), key=lambda k: h3[k]['data_offsets'][1])
cut = h3[last]['data_offsets'][0]; del h3[last]; write('missing.safetensors', h3, data[:cut])
open(f'{out}/notnpy.npy', 'wb').write(b'\x93NUMPY\x01\x00\xff\xffgarbage')
import numpy as np
np.save(f'{out}/pixels_wrong.npy', np.zeros((2, 3, 8, 8), np.float32))
np.save(f'{out}/pixels_ok.npy', np.zeros((1, 3, 32, 32), np.float32))
np.save(f'{out}/tokens_bad.npy', np.full((1, 77), 99999, np.int32))
open(f'{out}/empty.safetensors', 'wb').write(b'')
PY
run_embed() { "$bin/taca" embed --model "$1" --arch "$arch" --pixels "$tmp/pixels_ok.npy" --out "$tmp/y.npy"; }

expect_error "truncated safetensors" "truncat\|shorter\|size" -- run_embed "$tmp/truncated.safetensors"
expect_error "empty safetensors" "truncat\|short\|bytes" -- run_embed "$tmp/empty.safetensors"
expect_error "offsets out of range" "offset\|range\|size" -- run_embed "$tmp/offsets.safetensors"
expect_error "wrong dtype" "dtype" -- run_embed "$tmp/dtype.safetensors"
expect_error "missing tensor" "missing tensor" -- run_embed "$tmp/missing.safetensors"
expect_error "shape not matching the config" "shape" -- "$bin/taca" embed --model "$model/model.safetensors" --arch ViT-B-32 --pixels "$tmp/pixels_ok.npy" --out "$tmp/y.npy"
expect_error "bad .npy" "npy\|header" -- "$bin/taca" embed --model "$model/model.safetensors" --arch "$arch" --pixels "$tmp/notnpy.npy" --out "$tmp/y.npy"
expect_error "pixels of the wrong shape" "shape" -- "$bin/taca" embed --model "$model/model.safetensors" --arch "$arch" --pixels "$tmp/pixels_wrong.npy" --out "$tmp/y.npy"
expect_error "token ids outside the vocabulary" "outside" -- "$bin/taca" embed --model "$model/model.safetensors" --arch "$arch" --tokens "$tmp/tokens_bad.npy" --out "$tmp/y.npy"
expect_error "missing model" "no such" -- "$bin/taca" embed --model "$tmp/nope" --pixels "$tmp/pixels_ok.npy" --out "$tmp/y.npy"
expect_error "unknown option" "unknown" -- "$bin/taca" embed --frobnicate
expect_error "unknown command" "unknown command" -- "$bin/taca" frobnicate
expect_error "tokenize without a file" "No such file\|cannot\|: " -- "$bin/taca" tokenize --text "$tmp/none.txt" --out "$tmp/t.npy"
expect_error "precompute without data" "data" -- "$bin/taca" precompute --model "$model/model.safetensors" --arch "$arch" --db "$tmp/db"
expect_error "precompute, corrupt tar" "tar\|archive\|Unrecognized\|truncat" -- "$bin/taca" precompute --model "$fix/clip/hf_gelu_f16" --data "$tmp/truncated.safetensors" --db "$tmp/db2" --quiet
[ "$fails" -eq 0 ] || { echo "$fails check(s) failed"; exit 1; }
echo "test_cli_errors: all checks passed"
