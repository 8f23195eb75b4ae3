#!/usr/bin/env bash
# The ops topology: deploy/stack runs precompute -> taca-featured (waited on until healthy) -> two
# trainer ranks as local processes on 127.0.0.1, and stops what it started; `taca health` speaks the
# gRPC health protocol; docker-compose.yml validates with `docker-compose config` when that tool is
# installed (it is not a dependency: no container engine runs on these machines).
. "${TACA_SOURCE_DIR:?}/tests/integration/lib/common.sh"

"$bin/taca" synth --out "$tmp/data" --n 96 --size 40
cat > "$tmp/stack.env" <<ENV
TACA_BIN_DIR=$bin
TACA_STATE_DIR=$tmp/state
TACA_OLD_MODEL=$fix/clip/hf_gelu_f16
TACA_DATA=$tmp/data/00000.tar
TACA_DB=$tmp/db
TACA_NEW_MODEL=$fix/clip/hf_gelu_f16
TACA_TRAINERS=2
TACA_OUT=$tmp/ckpt
TACA_PRECOMPUTE_ARGS=--quiet
TACA_TRAIN_ARGS="--steps 4 --batch-size 16 --projector-hidden 32 --quiet"
ENV
"$src/deploy/stack" run "$tmp/stack.env"
[ -f "$tmp/ckpt/step-000004.safetensors" ] || fail "the trainers did not write their last checkpoint"
pid=$(pgrep -f "taca-featured --db $tmp/db" || true)
[ -z "$pid" ] || fail "deploy/stack left taca-featured running"

# taca health against a live server, then against nothing.
"$bin/taca-featured" --db "$tmp/db" --listen 127.0.0.1:0 --port-file "$tmp/ports" 2>/dev/null & srv=$!
for _ in $(seq 100); do [ -s "$tmp/ports" ] && break; sleep 0.05; done
port=$(sed -n 's/^grpc=//p' "$tmp/ports")
"$bin/taca" health "127.0.0.1:$port" | grep -qx SERVING || fail "taca health did not report SERVING"
kill -TERM "$srv"; wait "$srv" || fail "taca-featured did not exit 0 on SIGTERM"
if "$bin/taca" health "127.0.0.1:$port" --timeout 500 2>/dev/null; then fail "taca health succeeded with no server"; fi

if command -v docker-compose >/dev/null; then
  (cd "$src" && docker-compose config >/dev/null) || fail "docker-compose.yml does not validate"
  echo "  docker-compose config: valid"
else
  echo "  docker-compose not installed: compose file validation skipped"
fi
echo "test_stack: all checks passed"
