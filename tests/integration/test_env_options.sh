#!/usr/bin/env bash
# test_env_options.sh: the taca subcommands take every option also from TACA_<OPTION>
# (services/cli/cli_util.c: cli_env_options), the command line winning:
#  1. `taca precompute` configured only through the environment writes the same store (content hash,
#     model name, dtype) as the same run configured with flags;
#  2. `taca eval` from the environment gives the same report as with flags;
#  3. a flag on the command line overrides a bad TACA_ value; a bad value alone is a usage error (exit 2)
#     that names the variable; a flag variable takes 1/true/yes and rejects other values;
#  4. `taca synth` and `taca tokenize` from the environment equal their flag runs;
#  5. TACA_LOG_FORMAT=json makes precompute's progress lines (off a terminal) JSON objects.
. "${TACA_SOURCE_DIR:?}/tests/integration/lib/common.sh"
model=$fix/clip/hf_gelu_f16
# nothing from the caller's environment may leak into the runs below
for v in $(env | sed -n 's/^\(TACA_[A-Z0-9_]*\)=.*/\1/p'); do
  case $v in TACA_BIN_DIR | TACA_FIXTURES_DIR | TACA_SOURCE_DIR) ;; *) unset "$v" ;; esac
done
export OMP_NUM_THREADS=2

# --- 4a. synth: flags vs environment ---
"$bin/taca" synth --out "$tmp/data" --n 12 --size 40 --shards 1 --seed 5
TACA_OUT="$tmp/data_env" TACA_N=12 TACA_SIZE=40 TACA_SHARDS=1 TACA_SEED=5 "$bin/taca" synth
cmp "$tmp/data/00000.tar" "$tmp/data_env/00000.tar" || fail "synth from TACA_* differs from the flag run"

# --- 1. precompute: flags vs environment ---
"$bin/taca" precompute --model "$model" --name m --data "$tmp/data/00000.tar" --db "$tmp/db_flags" \
  --batch-size 4 --dtype f32 --threads 1 --workers 1 --quiet
TACA_MODEL="$model" TACA_NAME=m TACA_DATA="$tmp/data/00000.tar" TACA_DB="$tmp/db_env" TACA_BATCH_SIZE=4 \
  TACA_DTYPE=f32 TACA_THREADS=1 TACA_WORKERS=1 TACA_QUIET=1 "$bin/taca" precompute 2> "$tmp/pre.log"
[ -s "$tmp/pre.log" ] && { cat "$tmp/pre.log"; fail "TACA_QUIET=1 did not silence precompute"; }
i1=$("$bin/taca" query --db "$tmp/db_flags" info --hash)
i2=$("$bin/taca" query --db "$tmp/db_env" info --hash)
h1=$(echo "$i1" | grep '^content')
h2=$(echo "$i2" | grep '^content')
[ -n "$h1" ] && [ "$h1" = "$h2" ] || fail "precompute from TACA_* differs from the flag run: '$h1' vs '$h2'"
echo "$i2" | grep -qE "^ *\[0\] m +arch hf +f32 " || fail "TACA_NAME/TACA_DTYPE not applied: $i2"
echo "  precompute: same store from flags and from TACA_* ($h2)"

# TACA_LOG_FORMAT=json: precompute's progress lines (not on a terminal) are JSON objects
TACA_LOG_FORMAT=json "$bin/taca" precompute --model "$model" --data "$tmp/data/00000.tar" --db "$tmp/db_json" \
  --batch-size 4 --threads 1 2> "$tmp/json.log"
"$py" - "$tmp/json.log" <<'PY' || { cat "$tmp/json.log"; fail "TACA_LOG_FORMAT=json progress lines"; }
import json, sys
objs = [json.loads(l) for l in open(sys.argv[1]) if l.startswith('{')]
assert objs, "no JSON progress line"
for o in objs:
    assert {'ts', 'level', 'msg', 'what', 'done', 'total', 'rejected', 'rate', 'eta_s'} <= o.keys(), o
assert objs[-1]['done'] == objs[-1]['total'] == 12, objs[-1]
print(f"  TACA_LOG_FORMAT=json: {len(objs)} JSON progress line(s), last {objs[-1]['msg']!r}")
PY

# --- 2. eval: flags vs environment ---
"$bin/featured-mkstore" --db "$tmp/mk" --n 120 --pixels 40 --dim 16 --quiet
"$bin/taca" eval --db "$tmp/mk" --old old --new-model "$model" --threads 1 --quiet --seed 3 --json "$tmp/e1.json" \
  > "$tmp/t1.txt"
TACA_DB="$tmp/mk" TACA_OLD=old TACA_NEW_MODEL="$model" TACA_THREADS=1 TACA_QUIET=yes TACA_SEED=3 \
  TACA_JSON="$tmp/e2.json" "$bin/taca" eval > "$tmp/t2.txt"
"$py" - "$tmp/e1.json" "$tmp/e2.json" <<'PY' || fail "eval from TACA_* differs from the flag run"
import json, sys
def strip(o):  # timings differ from run to run
    if isinstance(o, dict):
        return {k: strip(v) for k, v in o.items() if k not in ('seconds', 'images_per_s')}
    if isinstance(o, list):
        return [strip(v) for v in o]
    return o
a, b = (strip(json.load(open(p))) for p in sys.argv[1:])
assert a == b, "reports differ"
print("  eval: same report from flags and from TACA_*")
PY

# --- 3. precedence and errors ---
TACA_BATCH_SIZE=zero "$bin/taca" precompute --model "$model" --data "$tmp/data/00000.tar" --db "$tmp/db_prec" \
  --batch-size 4 --quiet || fail "--batch-size on the command line must win over TACA_BATCH_SIZE"
st=0
out=$(TACA_BATCH_SIZE=zero "$bin/taca" precompute --model "$model" --db "$tmp/db_bad" 2>&1) || st=$?
[ "$st" -eq 2 ] || fail "bad TACA_BATCH_SIZE: exit $st, want 2 ($out)"
echo "$out" | grep -q "batch-size.*'zero'.*environment variable TACA_BATCH_SIZE" || fail "error does not name the variable: $out"
st=0
out=$(TACA_NORMALIZE=maybe "$bin/taca" embed --model "$model" --text "$tmp/x" --out "$tmp/y.npy" 2>&1) || st=$?
[ "$st" -eq 2 ] && echo "$out" | grep -q "TACA_NORMALIZE" || fail "TACA_NORMALIZE=maybe: exit $st: $out"
TACA_NORMALIZE=0 TACA_BATCH_SIZE= "$bin/taca" tokenize --help > /dev/null || fail "--help with TACA_* set"

# --- 4b. tokenize: flags vs environment ---
printf 'a red circle\na blue square on the left\n' > "$tmp/caps.txt"
"$bin/taca" tokenize --text "$tmp/caps.txt" --out "$tmp/tok1.npy"
TACA_TEXT="$tmp/caps.txt" TACA_OUT="$tmp/tok2.npy" "$bin/taca" tokenize
cmp "$tmp/tok1.npy" "$tmp/tok2.npy" || fail "tokenize from TACA_* differs"
echo "test_env_options: all checks passed"
