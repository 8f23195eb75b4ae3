#!/usr/bin/env bash
# The first run on a GPU machine, as one short script (README "GPU"): checks, then figures, into one
# report file.
#   1. the machine: nvidia-smi, the build's CUDA module and NCCL;
#   2. the parity tests: test_cuda_parity (every op, CLIP/TaCA/AFT steps, large shapes, the stream
#      contract against TACA_CUDA_SYNC=1, an injected CUDA error, cuda:1 where two GPUs exist) and
#      test_nccl (2 GPUs); a GPU that the backend cannot use FAILS here, it never skips;
#   3. two GPU ranks of taca-train, one of them broken (TACA_TRAIN_FAULT) at the all-reduce: the
#      run must end within 60 s (2 GPUs only);
#   4. the benchmark beside PyTorch (bench/run-cuda.sh: ViT-L/14 forward, TaCA step; f32, tf32, bf16).
#   bench/gpu-first-run.sh [REPORT]        (default gpu-first-run-HOST-DATE.txt)
#   env: TACA_BUILD_DIR (build), PYTHON (a python3 whose torch has CUDA, for the PyTorch column),
#        ARCH (ViT-L-14), BATCH (64), TRAIN_BATCH (32), ITERS (10), SKIP_BENCH=1 (checks only)
# Exit status: 0 when every check passed (the benchmark's figures are reported, not judged).
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
build=${TACA_BUILD_DIR:-$root/build}
report=${1:-gpu-first-run-$(hostname -s 2>/dev/null || echo host)-$(date -u +%Y%m%dT%H%M%SZ).txt}
failed=0
log() { echo "$*" | tee -a "$report"; }
section() { log ""; log "=== $* ($(date -u +%H:%M:%S))"; }
run() { # run NAME CMD...: runs and logs, records a failure (exit 77 = skip is a failure here)
  local name=$1
  shift
  "$@" >> "$report" 2>&1
  local rc=$?
  if [ $rc -eq 0 ]; then log "PASS $name"; else log "FAIL $name (exit $rc)"; failed=1; fi
}
: > "$report"
section "machine"
log "taca $(git -C "$root" describe --always --dirty 2>/dev/null || echo '?'), build $build"
nvidia-smi >> "$report" 2>&1 || { log "FAIL nvidia-smi: no NVIDIA driver or GPU here"; failed=1; }
[ -f "$build/lib/libtaca_cuda.so" ] ||
  { log "FAIL $build/lib/libtaca_cuda.so missing: configure with the CUDA toolkit (cmake -DTACA_CUDA=ON)"; exit 1; }
gpus=$("$build/bin/nccl-allreduce" --count 2>/dev/null || echo "?")
log "GPUs the CUDA runtime sees: $gpus"

section "parity tests"
# test_cuda_parity directly (not through ctest): a skip (77) must not look like a pass here.
run test_cuda_parity "$build/bin/test_cuda_parity"
if [ "$gpus" != "?" ] && [ "$gpus" -ge 2 ]; then
  run test_nccl env TACA_BIN_DIR="$build/bin" TACA_FIXTURES_DIR="$root/tests/fixtures" TACA_SOURCE_DIR="$root" \
    bash "$root/tests/integration/test_nccl.sh"
else
  log "(test_nccl and the rank-failure check need 2 GPUs: not run)"
fi
run test_rank_failure_cpu env TACA_BIN_DIR="$build/bin" TACA_FIXTURES_DIR="$root/tests/fixtures" TACA_SOURCE_DIR="$root" \
  bash "$root/tests/integration/test_rank_failure.sh"

if [ "$gpus" != "?" ] && [ "$gpus" -ge 2 ]; then
  section "a broken GPU rank ends the run"
  tmp=$(mktemp -d)
  fix=$root/tests/fixtures
  export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
  "$build/bin/taca" synth --out "$tmp/data" --n 64 --size 40 > /dev/null 2>&1
  "$build/bin/taca" precompute --model "$fix/clip/hf_gelu_f16" --name old --data "$tmp/data/00000.tar" \
    --db "$tmp/db" --quiet >> "$report" 2>&1
  "$build/bin/taca-featured" --db "$tmp/db" --listen 127.0.0.1:0 --port-file "$tmp/ports" > /dev/null 2>&1 &
  srv=$!
  for _ in $(seq 100); do [ -s "$tmp/ports" ] && break; sleep 0.05; done
  port=$(sed -n 's/^grpc=//p' "$tmp/ports")
  t0=$(date +%s)
  TACA_TRAIN_FAULT=1:allreduce timeout 120 mpirun --oversubscribe -np 2 -x TACA_TRAIN_FAULT \
    "$build/bin/taca-train" --device cuda --server "127.0.0.1:$port" --new-model "$fix/clip/hf_gelu_f16" \
    --projector-hidden 32 --batch-size 8 --steps 6 --quiet --out "$tmp/out" > "$tmp/err" 2>&1
  rc=$?
  dt=$(( $(date +%s) - t0 ))
  cat "$tmp/err" >> "$report"
  if [ $rc -ne 0 ] && [ $rc -ne 124 ] && [ $dt -lt 60 ] && grep -q "rank 1: injected fault at allreduce" "$tmp/err"; then
    log "PASS gpu_rank_failure (exit $rc after ${dt}s)"
  else
    log "FAIL gpu_rank_failure (exit $rc after ${dt}s)"; failed=1
  fi
  kill "$srv" 2>/dev/null
  rm -rf "$tmp"
fi

if [ "${SKIP_BENCH:-0}" != 1 ]; then
  section "benchmark beside PyTorch"
  MATHS="f32 tf32 bf16" ITERS=${ITERS:-10} TACA_BIN_DIR="$build/bin" PYTHON=${PYTHON:-python3} \
    bash "$here/run-cuda.sh" "${ARCH:-ViT-L-14}" "${BATCH:-64}" "${TRAIN_BATCH:-32}" 2>&1 | tee -a "$report"
  [ "${PIPESTATUS[0]}" -eq 0 ] || { log "FAIL run-cuda.sh"; failed=1; }
fi
section "summary"
summary=$(grep -E '^(PASS|FAIL) ' "$report")
log "$summary"
log "report: $report; $([ $failed = 0 ] && echo 'all checks passed' || echo 'SOME CHECKS FAILED')"
exit $failed
