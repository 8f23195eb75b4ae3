#!/usr/bin/env bash
# The NCCL gradient all-reduce between GPU ranks (trainer/collectives_nccl.c): two MPI ranks, one
# GPU each, sum a device buffer with NCCL and through the MPI fallback (tests/integration/
# nccl_allreduce.c). Skips (77) in a build without NCCL or on a machine with fewer than 2 GPUs.
. "${TACA_SOURCE_DIR:?}/tests/integration/lib/common.sh"
if [ ! -x "$bin/nccl-allreduce" ]; then
  echo "skipped: this build has no NCCL (CUDA toolkit with nccl.h / libnccl not found)"
  exit 77
fi
gpus=$("$bin/nccl-allreduce" --count)
if [ "${gpus:-0}" -lt 2 ]; then
  echo "skipped: needs 2 GPUs, the CUDA runtime sees ${gpus:-0}"
  exit 77
fi
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
mpirun --oversubscribe -np 2 "$bin/nccl-allreduce"
