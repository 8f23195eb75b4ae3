#!/usr/bin/env bash
# run-fuzzers.sh [SECONDS]: builds the libFuzzer targets with clang (ASan + UBSan) in build-fuzz/ and
# runs each for SECONDS (default 60). Exits non-zero if any fuzzer finds a crash, leak, UB or timeout;
# the reproducer is left in build-fuzz/artifacts-TARGET/ (replay it with build/bin/fuzz_replay_TARGET).
# Environment: CC (default clang), TACA_FUZZ_BUILD (default <repo>/build-fuzz), FUZZ_JOBS (default 2),
# FUZZ_TARGETS (default: all of them: safetensors npy tar image clip_config featured client_batch).
set -euo pipefail

secs=${1:-60}
case "$secs" in '' | *[!0-9]*) echo "run-fuzzers: SECONDS must be a positive integer, got '$secs'" >&2; exit 2 ;; esac
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
build=${TACA_FUZZ_BUILD:-$root/build-fuzz}
cc=${CC:-clang}
if ! "$cc" --version 2>/dev/null | grep -q clang; then
  echo "run-fuzzers: needs clang (CC=$cc is not clang); install clang and libclang-rt-dev" >&2
  exit 2
fi

cmake -S "$root" -B "$build" -DCMAKE_C_COMPILER="$cc" -DCMAKE_BUILD_TYPE=Debug -DTACA_FUZZ=ON -DTACA_NATIVE=OFF >/dev/null
targets=(${FUZZ_TARGETS:-safetensors npy tar image clip_config featured client_batch})
cmake --build "$build" -j"${FUZZ_JOBS:-2}" --target "${targets[@]/#/fuzz_}"

status=0
for t in "${targets[@]}"; do
  work=$build/corpus-$t
  art=$build/artifacts-$t
  mkdir -p "$work" "$art"
  log=$build/fuzz-$t.log
  echo "run-fuzzers: fuzz_$t for ${secs}s (log: $log)"
  # the first corpus dir receives new inputs; the committed seeds are only read
  dict=()
  [ -f "$root/tests/fuzz/$t.dict" ] && dict=(-dict="$root/tests/fuzz/$t.dict")
  if "$build/bin/fuzz_$t" -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
      "${dict[@]}" -artifact_prefix="$art/" "$work" "$root/tests/fuzz/corpus/$t" >"$log" 2>&1; then
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
    echo "run-fuzzers: fuzz_$t clean: ${execs:-?} executions, corpus $(find "$work" -type f | wc -l) + seeds"
  else
    status=1
    echo "run-fuzzers: fuzz_$t FOUND A PROBLEM; reproducer in $art/:" >&2
    ls "$art" >&2
    grep -m1 -E 'ERROR|runtime error|deadly signal' "$log" >&2 || tail -20 "$log" >&2
  fi
done
exit $status
