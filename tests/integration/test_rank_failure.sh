#!/usr/bin/env bash
# One failing rank ends the whole MPI run, fast, with its own message (issue 20): two CPU ranks of
# taca-train against a real taca-featured on 127.0.0.1, one rank broken at each phase:
#  - setup: rank 0's --out under a regular file (a real mkdir failure), and an injected fault on
#    rank 1 before the first collective;
#  - step: an injected fault in rank 1's forward (the ranks agree, rank 1 aborts the run);
#  - all-reduce: rank 1 fails after the agreement, while rank 0 waits in the all-reduce (the case
#    only MPI_Abort ends), and rank 1 killed there with SIGKILL;
#  - checkpoint: rank 0's checkpoint write fails;
#  - the same all-reduce fault in the AFT objective.
# Faults come from TACA_TRAIN_FAULT=RANK:PHASE[:kill] (trainer/train_util.h, test-only). Each run
# must end non-zero within 30 s (a hang was the old behaviour) and show the failing rank's message.
. "${TACA_SOURCE_DIR:?}/tests/integration/lib/common.sh"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_btl=self,vader
srv=""
cleanup() { [ -n "$srv" ] && kill -9 "$srv" 2>/dev/null; [ -n "${KEEP:-}" ] || rm -rf "$tmp"; }
trap cleanup EXIT
model=$fix/clip/hf_gelu_f16   # 40 px images, embeddings 16
bound=30

"$bin/taca" synth --out "$tmp/data" --n 64 --size 40
"$bin/taca" precompute --model "$model" --name old --data "$tmp/data/00000.tar" --db "$tmp/db" --quiet
"$bin/taca-featured" --db "$tmp/db" --listen 127.0.0.1:0 --port-file "$tmp/ports" > "$tmp/featured.log" 2>&1 &
srv=$!
for _ in $(seq 100); do [ -s "$tmp/ports" ] && break; sleep 0.05; done
port=$(sed -n 's/^grpc=//p' "$tmp/ports")
[ -n "$port" ] || { cat "$tmp/featured.log"; fail "taca-featured did not start"; }
taca=(--server "127.0.0.1:$port" --new-model "$model" --projector-hidden 32 --quiet --threads 1 --batch-size 8
      --steps 6 --save-every 2)
aft=(--objective aft --server "127.0.0.1:$port" --features old --downstream linear:8 --methods aft --num-classes 100 --quiet
     --threads 1 --batch-size 8 --steps 6 --save-every 2)

# expect_failure NAME FAULT EXPECTED_MESSAGE_REGEX ARGS...: runs 2 ranks, checks exit, time, message.
expect_failure() {
  local name=$1 fault=$2 want=$3
  shift 3
  local t0 t1 rc
  t0=$(date +%s.%N)
  set +e
  TACA_TRAIN_FAULT=$fault timeout $((bound * 3)) mpirun --oversubscribe -np 2 -x TACA_TRAIN_FAULT \
    "$bin/taca-train" "$@" > "$tmp/$name.out" 2> "$tmp/$name.err"
  rc=$?
  set -e
  t1=$(date +%s.%N)
  local dt
  dt=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", b - a }')
  [ "$rc" -ne 124 ] || { cat "$tmp/$name.err"; fail "$name: still running after $((bound * 3)) s (hang)"; }
  [ "$rc" -ne 0 ] || { cat "$tmp/$name.err"; fail "$name: exit 0 although a rank failed"; }
  awk -v d="$dt" -v b="$bound" 'BEGIN { exit !(d < b) }' || fail "$name: took ${dt}s (bound ${bound}s)"
  grep -Eq "$want" "$tmp/$name.err" || { cat "$tmp/$name.err"; fail "$name: no '$want' in the output"; }
  echo "  $name: exit $rc after ${dt}s: $(grep -Em1 "$want" "$tmp/$name.err")"
}

touch "$tmp/file"
expect_failure out-under-file "" "taca-train: rank 0: --out $tmp/file/ck: Not a directory" "${taca[@]}" --out "$tmp/file/ck"
expect_failure setup 1:setup "taca-train: rank 1: injected fault at setup" "${taca[@]}" --out "$tmp/o1"
expect_failure step 1:step "taca-train: rank 1: injected fault at step" "${taca[@]}" --out "$tmp/o2"
expect_failure allreduce 1:allreduce "taca-train: rank 1: injected fault at allreduce" "${taca[@]}" --out "$tmp/o3"
expect_failure allreduce-kill 1:allreduce:kill "(killed|signal 9|exited on signal)" "${taca[@]}" --out "$tmp/o4"
expect_failure checkpoint 0:checkpoint "taca-train: rank 0: injected fault at checkpoint" "${taca[@]}" --out "$tmp/o5"
expect_failure aft-allreduce 1:allreduce "taca-train: rank 1: injected fault at allreduce" "${aft[@]}" --out "$tmp/o6"
expect_failure aft-out-under-file "" "taca-train: rank 0: --out $tmp/file/ck: Not a directory" "${aft[@]}" --out "$tmp/file/ck"
# The message is the failing rank's: the other rank does not report a failure of its own.
! grep -q "rank 0: injected" "$tmp/step.err" || fail "rank 0 claims rank 1's fault"

# Without the fault the same command succeeds (the faults, not the setup, broke the runs above).
mpirun --oversubscribe -np 2 "$bin/taca-train" "${taca[@]}" --out "$tmp/ok" 2> "$tmp/ok.err" ||
  { cat "$tmp/ok.err"; fail "the unbroken 2-rank run failed"; }
kill -TERM "$srv"; wait "$srv" || fail "taca-featured did not stop cleanly"; srv=""
echo "test_rank_failure: all checks passed"
