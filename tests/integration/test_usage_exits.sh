#!/usr/bin/env bash
# test_usage_exits.sh: every command's bad-usage paths exit 2 with one line on stderr that names the
# problem, --help exits 0, and run-time failures exit 1 (README: "2 for bad usage, 1 for failures at
# run time"). Walks taca (each subcommand), taca-train, taca-featured, deploy/stack, deploy/demo.sh.
set -uo pipefail
bin=${TACA_BIN_DIR:?}
fix=${TACA_FIXTURES_DIR:?}
src=${TACA_SOURCE_DIR:?}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
for v in $(env | sed -n 's/^\(TACA_[A-Z0-9_]*\)=.*/\1/p'); do
  case $v in TACA_BIN_DIR | TACA_FIXTURES_DIR | TACA_SOURCE_DIR) ;; *) unset "$v" ;; esac
done
fails=0 n=0
model=$fix/clip/hf_gelu_f16
expect() { # expect STATUS PATTERN COMMAND...: exit STATUS, (for STATUS != 0) one stderr line matching
  local want=$1 pat=$2; shift 2
  n=$((n + 1))
  "$@" > "$tmp/out" 2> "$tmp/err" < /dev/null; local rc=$?
  local lines; lines=$(wc -l < "$tmp/err")
  if [ "$rc" -ne "$want" ] || { [ "$want" -ne 0 ] && { [ "$lines" -ne 1 ] || ! grep -qi -- "$pat" "$tmp/err"; }; } ||
     { [ "$want" -eq 0 ] && [ ! -s "$tmp/out" ]; }; then
    echo "FAIL: $* -> rc=$rc (want $want), $lines line(s): $(head -c 600 "$tmp/err")"; fails=$((fails + 1))
  fi
}
T="$bin/taca"

# --help of everything: exit 0, usage on stdout
expect 0 "" "$T" --help
for c in embed tokenize query health synth pretrain add-features precompute eval; do
  expect 0 "" "$T" "$c" --help
  expect 2 "unknown\|unexpected\|unrecognized" "$T" "$c" --no-such-option
done
expect 0 "" "$bin/taca-train" --help
expect 0 "" "$bin/taca-featured" --help
expect 0 "" "$src/deploy/stack" --help
expect 0 "" "$src/deploy/demo.sh" --help
expect 2 "unknown command" "$T" nope
expect 2 "COMMAND" "$T"

# missing required options
expect 2 "required" "$T" embed --out "$tmp/x.npy"
expect 2 "required\|give" "$T" precompute --db "$tmp/db"
expect 2 "required\|give" "$T" eval
expect 2 "required\|give" "$T" pretrain
expect 2 "give\|address" "$T" health
expect 2 "required" "$bin/taca-train" --steps 3
expect 2 "required" "$bin/taca-featured"

# bad values: numbers, choices, architectures, addresses
expect 2 "batch-size" "$T" embed --model "$model" --text /dev/null --out "$tmp/x.npy" --batch-size 0
expect 2 "steps" "$T" pretrain --arch ViT-B-32 --out "$tmp/m" --steps 0
expect 2 "arch.*unknown architecture" "$T" embed --model "$model" --arch ViT-Q-99 --text /dev/null --out "$tmp/x.npy"
expect 2 "arch.*no such file" "$T" pretrain --arch "$tmp/missing.json" --out "$tmp/m"
expect 2 "arch.*unknown architecture" "$T" precompute --model "$model" --arch nope --db "$tmp/db" --data "$tmp/x.tar"
expect 2 "arch.*unknown architecture" "$bin/taca-train" --server 127.0.0.1:5 --new-model "$model" --arch nope --out "$tmp/o"
expect 2 "steps.*>= 1" "$bin/taca-train" --server 127.0.0.1:5 --new-model "$model" --out "$tmp/o" --steps 0
expect 2 "lr" "$bin/taca-train" --server 127.0.0.1:5 --new-model "$model" --out "$tmp/o" --lr 0
expect 2 "objective" "$bin/taca-train" --objective other
for a in 127.0.0.1:99999 127.0.0.1:0 127.0.0.1: 127.0.0.1:-5 :5 127.0.0.1 "127.0.0.1:5,,127.0.0.1:6" ::1:5; do
  expect 2 "server" "$bin/taca-train" --server "$a" --new-model "$model" --out "$tmp/o"
  expect 2 "server" "$T" query --server "$a" info
  expect 2 "ADDR" "$T" health "$a"
done
expect 2 "test-server" "$bin/taca-train" --objective aft --server 127.0.0.1:5 --test-server 127.0.0.1:70000 \
  --features a --downstream linear --out "$tmp/o"
for a in 127.0.0.1:99999 127.0.0.1: 127.0.0.1:x 127.0.0.1 "[::1:5"; do
  expect 2 "listen" "$bin/taca-featured" --db "$tmp/db" --listen "$a"
  expect 2 "metrics" "$bin/taca-featured" --db "$tmp/db" --metrics "$a"
done
expect 2 "max-batch" "$bin/taca-featured" --db "$tmp/db" --max-batch 0

# the environment: the same rules, the variable named
expect 2 "TACA_FEATURED_LISTEN" env TACA_FEATURED_LISTEN=127.0.0.1:70000 "$bin/taca-featured" --db "$tmp/db"
expect 2 "TACA_SERVER" env TACA_SERVER=127.0.0.1:0 "$bin/taca-train" --new-model "$model" --out "$tmp/o"
expect 2 "TACA_RESUME" env TACA_RESUME=maybe "$bin/taca-train" --server 127.0.0.1:5 --new-model "$model" --out "$tmp/o"
expect 2 "TACA_QUIET" env TACA_QUIET=maybe "$T" precompute --model "$model" --db "$tmp/db" --data "$tmp/x.tar"
expect 2 "TACA_STEPS" env TACA_STEPS=0 "$bin/taca-train" --server 127.0.0.1:5 --new-model "$model" --out "$tmp/o"

# scripts: no output folder, unknown command, a folder they did not make
expect 2 "output folder" "$src/deploy/demo.sh"
mkdir -p "$tmp/precious"; echo keep > "$tmp/precious/file"
expect 2 "not made by deploy/demo.sh" "$src/deploy/demo.sh" "$tmp/precious"
[ -f "$tmp/precious/file" ] || { echo "FAIL: deploy/demo.sh deleted a folder it did not make"; fails=$((fails + 1)); }
(cd "$tmp" && "$src/deploy/stack" --help > /dev/null)
[ ! -e "$tmp/stack-state" ] || { echo "FAIL: deploy/stack --help created ./stack-state"; fails=$((fails + 1)); }
expect 2 "unknown command" "$src/deploy/stack" nope
expect 2 "env file" "$src/deploy/stack" run "$tmp/no-such.env"

# run-time failures: exit 1
expect 1 "no such\|cannot\|open" "$T" embed --model "$tmp/nope" --text /dev/null --out "$tmp/x.npy"
head -c 4096 /dev/urandom > "$tmp/random.safetensors"
printf 'PK\003\004 a zip, not safetensors' > "$tmp/zip.safetensors"
expect 1 "not a safetensors file" "$T" embed --model "$tmp/zip.safetensors" --arch ViT-B-32 --text /dev/null --out "$tmp/x.npy"
expect 1 "health\|unavailable\|connect" "$T" health 127.0.0.1:1 --timeout 500
expect 1 "store\|no such\|mdb\|open" "$bin/taca-featured" --db "$tmp/no-store" --listen 127.0.0.1:0
expect 1 "gave up\|unavailable" "$bin/taca-train" --server 127.0.0.1:1 --new-model "$model" --out "$tmp/o" \
  --retry-budget-ms 1 --steps 1

echo "test_usage_exits: $n checks, $fails failed"
[ "$fails" -eq 0 ]
