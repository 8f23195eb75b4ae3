/* backend_cuda.h: the CUDA compute backend (cuBLAS GEMMs, our own kernels, a caching allocator over
 * cudaMalloc, a compute stream and a copy stream) and NCCL, reached through nn/backend.h like the
 * CPU backend: nn_backend_create("cuda:N") calls nn_backend_cuda_create. The functions below are
 * what callers beyond the vtable need: the stream and device, the math mode, the sticky error, the
 * NCCL calls the trainer's collectives make.
 *
 * The CUDA code is a module, lib/libtaca_cuda.so in the build tree (nn/backend_cuda*.cu, built where
 * the CUDA toolkit is found: TACA_HAVE_CUDA), loaded with dlopen on first use, so that programs that
 * never ask for a GPU (every CPU run, the CLI, the feature server) neither load nor need cuBLAS,
 * the CUDA runtime or NCCL (together ~0.8 GB of libraries: ~80 ms and ~220 MB RSS per process when
 * linked directly). The module is looked for at $TACA_CUDA_MODULE, then next to the binaries
 * (BIN/../lib/libtaca_cuda.so), then where this build wrote it, then by the dynamic loader's
 * search. In a build without CUDA every function here fails with that reason.
 *
 * Semantics beyond nn/backend.h:
 *  - Every op is asynchronous on the backend's compute stream; download() and synchronize() wait.
 *  - upload() from pageable host memory copies the source before it returns (through a pinned
 *    staging ring, or synchronously when large), so the caller may reuse it at once. upload() from
 *    page-locked memory (be->host_alloc, i.e. nn_host_alloc) runs on the copy stream and may
 *    overlap the compute work enqueued since the last download()/synchronize(): the source must
 *    stay unchanged until the next download()/synchronize(), and the destination must not be in use
 *    by work enqueued since then (true of the models' input buffers: pixels, tokens; AFT's linear
 *    model, whose backward reads its input, alternates two buffers). The ops that follow wait for
 *    the copy. TACA_CUDA_SYNC=1 (below) checks a caller against this contract.
 *  - Errors: a failing CUDA or cuBLAS call is recorded once (the first reason) and printed to
 *    stderr; afterwards the ops do nothing, alloc returns NULL and download() fills its destination
 *    with 0xFF bytes (NaN as F32), so no result computed after a failure passes for a valid one.
 *    nn_backend_cuda_check returns the recorded failure.
 *
 * Debug mode (TACA_CUDA_SYNC=1 in the environment, read at create): every op waits for all earlier
 * work of both streams first, so nothing overlaps; a result that differs from its TACA_CUDA_SYNC=1
 * twin is a stream race (test_cuda_parity compares them).
 *
 * Math (TACA_CUDA_MATH in the environment, read at create): "f32" (default: IEEE F32 GEMMs),
 * "tf32" (tensor-core TF32 GEMMs, F32 accumulation) or "bf16" (BF16 products, F32 accumulation).
 * Only GEMMs change; every other kernel computes in F32. */
#ifndef TACA_NN_BACKEND_CUDA_H
#define TACA_NN_BACKEND_CUDA_H

#include <stddef.h>

#include "nn/backend.h"
#include "base/error.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum nn_cuda_math {
  NN_CUDA_MATH_F32 = 0,
  NN_CUDA_MATH_TF32 = 1,
  NN_CUDA_MATH_BF16 = 2,
} nn_cuda_math;

/* The backend on GPU `ordinal` with the math of TACA_CUDA_MATH (default f32). Fails with a reason
 * when the module cannot be loaded, there is no usable GPU of that number, or TACA_CUDA_MATH names
 * no mode. */
nn_backend *nn_backend_cuda_create(int ordinal, taca_error *err);
/* The same with the math mode given. */
nn_backend *nn_backend_cuda_create_math(int ordinal, nn_cuda_math math, taca_error *err);

/* Number of GPUs the CUDA runtime sees; 0 with a reason in err (no module, driver or device). */
int nn_cuda_device_count(taca_error *err);

/* Parses "f32", "tf32", "bf16" (NULL or "": f32). -1 with a reason for anything else. */
int nn_cuda_math_parse(const char *s, nn_cuda_math *out, taca_error *err);
const char *nn_cuda_math_name(nn_cuda_math m);

/* For a CUDA backend: its compute stream (a cudaStream_t), GPU ordinal and math mode. NULL / -1 /
 * f32 for any other backend. */
void *nn_backend_cuda_stream(nn_backend *be);
int nn_backend_cuda_device(nn_backend *be);
nn_cuda_math nn_backend_cuda_math(nn_backend *be);

/* 0 if no CUDA or cuBLAS call of this backend has failed; else -1 with the first failure's reason
 * (the backend is unusable from then on). Also 0 for a non-CUDA backend. */
int nn_backend_cuda_check(nn_backend *be, taca_error *err);

/* Device bytes the caching allocator holds from cudaMalloc (in use + cached free blocks), and the
 * part of it in use (0 for a non-CUDA backend). */
void nn_backend_cuda_memory(nn_backend *be, size_t *held, size_t *in_use);

/* ---- NCCL, for trainer/collectives_nccl.c (one GPU per rank; the caller does the bootstrap). */

/* Size of an NCCL unique id, or 0 when the module has no NCCL (or cannot be loaded; reason in err). */
size_t nn_cuda_nccl_id_bytes(taca_error *err);
/* Rank 0: a new unique id into id[0:nn_cuda_nccl_id_bytes()]. */
int nn_cuda_nccl_unique_id(void *id, taca_error *err);
/* Collective over the nranks ranks: *comm = this rank's communicator on be's GPU and stream. */
int nn_cuda_nccl_init(void **comm, nn_backend *be, int nranks, const void *id, int rank,
                      taca_error *err);
/* In place: buf[0:n] = sum over ranks, enqueued on be's compute stream (asynchronous; ordered
 * before be's next ops, complete at its next download/synchronize). */
int nn_cuda_nccl_allreduce_sum(void *comm, nn_backend *be, float *buf, size_t n, taca_error *err);
void nn_cuda_nccl_destroy(void *comm); /* NULL is a no-op */
/* On a failure: ncclCommAbort (frees the communicator without waiting for peers). NULL: no-op. */
void nn_cuda_nccl_abort(void *comm);

#ifdef __cplusplus
}
#endif

#endif
