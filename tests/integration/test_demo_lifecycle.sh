#!/usr/bin/env bash
# test_demo_lifecycle.sh: deploy/demo.sh (what `make demo` runs), in a tiny configuration (a few
# steps and samples: seconds, not minutes), stops every process it started:
#  1. after a full run (exit 0): no process of it survives (taca-featured, deploy/stack, mpirun,
#     taca-train ranks), found by a tag in their environment, which every descendant inherits;
#  2. after Ctrl-C (SIGINT to its whole process group) while deploy/stack's trainers run;
#  3. after SIGTERM to the script alone while its own taca-featured daemons serve the AFT step;
#  4. it reuses a folder it made (marker file) but refuses any other (test_usage_exits.sh).
. "${TACA_SOURCE_DIR:?}/tests/integration/lib/common.sh"
export DEMO_TRAIN=64 DEMO_EVAL=96 DEMO_STEPS=2 DEMO_BATCH=16 DEMO_AFT_STEPS=2 DEMO_PRETRAIN_STEPS=2 \
  DEMO_PRETRAIN_SYNTH=128 DEMO_PRETRAIN_EVAL=32 DEMO_PRETRAIN_BATCH=32 TACA_BIN_DIR=$bin OMP_NUM_THREADS=1
out=$tmp/demo
tagged() { # the PIDs whose environment holds TACA_LIFECYCLE_TAG=$1
  local f
  for f in /proc/[0-9]*/environ; do
    { tr '\0' '\n' < "$f"; } 2>/dev/null | grep -qx "TACA_LIFECYCLE_TAG=$1" && { f=${f#/proc/}; echo "${f%/environ}"; }
  done
  return 0
}
survivors() { # survivors TAG WHAT: fails naming what still runs (a few seconds' grace for exits under way)
  local left=""
  for _ in $(seq 50); do left=$(tagged "$1"); [ -z "$left" ] && return 0; sleep 0.1; done
  ps -o pid=,args= -p $(echo $left | tr ' ' ,) >&2 || true
  fail "$2: processes of deploy/demo.sh survive: $left"
}
wait_for() { # wait_for FILE PID: until FILE exists (or the demo ended)
  for _ in $(seq 1200); do [ -e "$1" ] && return 0; kill -0 "$2" 2>/dev/null || return 1; sleep 0.1; done
  return 1
}

# 1. a full run
TACA_LIFECYCLE_TAG=full "$src/deploy/demo.sh" "$out" > "$tmp/full.log" 2>&1 || { tail -20 "$tmp/full.log"; fail "the tiny demo failed"; }
[ -f "$out/report.json" ] && [ -f "$out/aft/report.json" ] && [ -f "$out/.taca-demo" ] || fail "the demo's outputs are missing"
survivors full "after a successful run"
echo "  full run: exit 0, nothing left running"

# 2. Ctrl-C while the stack's trainer ranks run (job control: the demo gets its own process group)
set -m
DEMO_STEPS=100000 TACA_LIFECYCLE_TAG=int "$src/deploy/demo.sh" "$out" > "$tmp/int.log" 2>&1 &
demo=$!
set +m
wait_for "$out/stack-state/server" "$demo" || { tail -20 "$tmp/int.log"; fail "the stack did not start"; }
for _ in $(seq 100); do tagged int | xargs -r ps -o args= -p 2>/dev/null | grep -q taca-train && break; sleep 0.1; done
tagged int | xargs -r ps -o args= -p 2>/dev/null | grep -q taca-train || fail "no trainer rank found while the stack trains"
kill -INT -- "-$demo"
rc=0; wait "$demo" || rc=$?
[ "$rc" -ne 0 ] || fail "an interrupted demo exited 0"
survivors int "after Ctrl-C during training"
echo "  Ctrl-C during the stack's training: exit $rc, nothing left running"

# 3. SIGTERM to the script alone while its own taca-featured daemons serve the AFT step
DEMO_AFT_STEPS=100000 TACA_LIFECYCLE_TAG=term "$src/deploy/demo.sh" "$out" > "$tmp/term.log" 2>&1 &
demo=$!
wait_for "$out/aft-test.ports" "$demo" || { tail -20 "$tmp/term.log"; fail "the AFT servers did not start"; }
[ -n "$(tagged term)" ] || fail "no tagged process found while the demo runs (the check would prove nothing)"
kill -TERM "$demo"
rc=0; wait "$demo" || rc=$?
[ "$rc" -ne 0 ] || fail "a terminated demo exited 0"
survivors term "after SIGTERM during AFT"
echo "  SIGTERM during AFT: exit $rc, nothing left running"
echo "test_demo_lifecycle: all checks passed"
