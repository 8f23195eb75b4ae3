/* backend_cuda_impl.h: the CUDA module's private state and the helpers its translation units share:
 * backend_cuda.cu (create/destroy, caching allocator, streams and copies, cuBLAS GEMMs, the GEMM
 * halves of linear and attention, the module's function table), backend_cuda_kernels.cu (forward
 * kernels), backend_cuda_backward.cu (backward kernels, AdamW) and backend_cuda_nccl.cu (NCCL).
 * Compiled by nvcc only (C++); not part of the backend interface. */
#ifndef TACA_NN_BACKEND_CUDA_IMPL_H
#define TACA_NN_BACKEND_CUDA_IMPL_H

#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <stddef.h>
#include <stdint.h>

#include "nn/backend.h"
#include "nn/backend_cuda.h"

#define CUDA_STAGE_SLOTS 4                     /* pinned staging slots for pageable uploads */
#define CUDA_STAGE_BYTES ((size_t)1 << 20)     /* bytes per slot; larger uploads copy synchronously */
#define CUDA_SIZE_CLASSES 256                  /* allocator size classes: 4 per power of two */

/* One cudaMalloc'd block of the caching allocator. */
typedef struct cuda_block {
  void *ptr;      /* NULL: a dead record (its memory returned to the driver), reusable */
  int cls;        /* size class; the block holds cuda_class_bytes(cls) bytes */
  int in_use;
  int next_free;  /* next record of the same class's free list, -1 at the end */
} cuda_block;

typedef struct cuda_impl {
  int device;
  nn_cuda_math math;
  int sm_count;             /* multiprocessors: sizes the grids of grid-stride kernels */
  cudaStream_t compute;     /* every op */
  cudaStream_t copy;        /* uploads from page-locked memory */
  cudaEvent_t copy_done;    /* recorded on copy after an upload; compute waits on it */
  cudaEvent_t compute_mark; /* recorded on compute when copy must wait for it */
  cublasHandle_t blas;

  /* Caching allocator: records, and a free list (record indices) per size class. */
  cuda_block *blocks;
  int n_blocks, cap_blocks;
  int free_head[CUDA_SIZE_CLASSES];
  size_t held, in_use;       /* bytes from cudaMalloc; the part handed out */
  int freed_since_sync;      /* a block went back to a free list since the last host sync */

  /* Pinned staging ring for pageable uploads (each slot reusable once its event completed). */
  unsigned char *staging;
  cudaEvent_t stage_done[CUDA_STAGE_SLOTS];
  int stage_next;

  /* Device scratch owned by the backend (allocator blocks, grown on demand). */
  void *rows;                /* int64 gather_rows / scatter_rows_add indices */
  size_t rows_cap;           /* bytes */
  void *att_scratch;         /* F32: one head's attention scores [B, T, T] when att is NULL */
  size_t att_scratch_cap;    /* bytes */

  int sync_each_op;          /* TACA_CUDA_SYNC=1: both streams synchronised before every op */
  int failed;                /* sticky: a CUDA/cuBLAS call failed; ops are no-ops from then on */
  char error[480];
} cuda_impl;

/* taca_fail's twin: formats into err (may be NULL), returns -1. */
int cuda_fail(taca_error *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Records the first failure (formatted) and prints it once to stderr. */
void cuda_record_failure(cuda_impl *im, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* 1 if e is cudaSuccess, else records "what: name (description)" and returns 0. */
int cuda_ok(cuda_impl *im, cudaError_t e, const char *what);
int cublas_ok(cuda_impl *im, cublasStatus_t s, const char *what);
#define CUDA_OK(im, call) cuda_ok((im), (call), #call)
#define CUBLAS_OK(im, call) cublas_ok((im), (call), #call)
/* After a kernel launch: records a launch failure (bad configuration, no image for this GPU). */
#define CUDA_LAUNCHED(im, name) cuda_ok((im), cudaGetLastError(), "launch of " name)

/* The backend's state for an op: NULL (do nothing) after a failure; makes the backend's GPU
 * current on the calling thread. */
cuda_impl *cuda_enter(nn_backend *be);

/* Device scratch of at least `bytes` in *buf (capacity *cap_bytes, in bytes), reallocated through
 * the caching allocator. 0 on success; -1 with the failure recorded. */
int cuda_scratch(nn_backend *be, void **buf, size_t *cap_bytes, size_t bytes);

/* Copies n host indices to the device scratch im->rows (through the staging ring); NULL on failure. */
const int64_t *cuda_upload_rows(nn_backend *be, const int64_t *rows, int n);

/* Grid size for a grid-stride loop over n items with `threads` threads per block. */
unsigned cuda_grid(const cuda_impl *im, size_t n, unsigned threads);

/* Row-major C = alpha op(A) op(B) + beta C on the compute stream, in the backend's math mode.
 * op(A) is [M, K]: A stored [M, K] (ta = 0) or [K, M] (ta = 1), row stride lda; op(B) is [K, N]:
 * B stored [K, N] (tb = 0) or [N, K] (tb = 1), row stride ldb; C [M, N], row stride ldc. batch > 1
 * repeats it over matrices sA, sB, sC floats apart (cuBLAS strided-batched). */
void cuda_gemm(cuda_impl *im, int ta, int tb, int M, int N, int K, float alpha, const float *A,
               int lda, long long sA, const float *B, int ldb, long long sB, float beta, float *C,
               int ldc, long long sC, int batch);

/* ---- Kernels (launchers on the compute stream; each records its launch failure). */
/* backend_cuda_kernels.cu */
void cuda_bias_add(cuda_impl *im, float *out, int ldo, const float *bias, int N, int OC);
void cuda_softmax_rows(cuda_impl *im, float *S, long long bstride, int B, int T, float scale,
                       int causal);
/* The ops of these two files, in backend_cuda.cu's ops table. */
void cu_layernorm_forward(nn_backend *be, float *out, float *mean, float *rstd, const float *inp,
                          const float *w, const float *b, int N, int C);
void cu_bias_act_forward(nn_backend *be, float *x, const float *bias, size_t N, int C, nn_act act);
void cu_im2col_patches(nn_backend *be, float *out, const float *pixels, int B, int S, int P);
void cu_vit_embed(nn_backend *be, float *x, const float *patch_emb, const float *cls,
                  const float *pos, int B, int G2, int C);
void cu_text_embed(nn_backend *be, float *x, const int32_t *tokens, int ctx, const float *tok_emb,
                   const float *pos, int B, int T, int C);
void cu_gather_rows(nn_backend *be, float *out, const float *inp, const int64_t *rows, int n, int C);
void cu_scale(nn_backend *be, float *x, size_t n, float alpha);
/* backend_cuda_backward.cu */
void cuda_column_sums(cuda_impl *im, float *db, const float *x, int ld, int N, int OC);
void cuda_softmax_rows_backward(cuda_impl *im, float *dS, const float *P, long long bstride, int B,
                                int T, int causal);
void cu_layernorm_backward(nn_backend *be, float *dinp, float *dw, float *db, const float *dout,
                           const float *inp, const float *mean, const float *rstd, const float *w,
                           int N, int C);
void cu_bias_act_forward_pre(nn_backend *be, float *out, float *pre, const float *bias, size_t N,
                             int C, nn_act act);
void cu_act_backward(nn_backend *be, float *dinp, const float *dout, const float *pre, size_t n,
                     nn_act act);
void cu_scatter_rows_add(nn_backend *be, float *out, const float *inp, const int64_t *rows, int n,
                         int C);
void cu_adamw_update(nn_backend *be, float *p, const float *g, float *m, float *v, size_t n,
                     double lr, double beta1, double beta2, double eps, double weight_decay,
                     long t);
/* A kernel of this build, to test that the GPU can run it (cudaFuncGetAttributes). */
const void *cuda_probe_kernel(void);

/* backend_cuda_nccl.cu (built where nccl.h is found: TACA_HAVE_NCCL; libnccl loaded lazily);
 * see nn/backend_cuda.h. */
#define CUDA_NCCL_ID_BYTES ((size_t)128) /* NCCL_UNIQUE_ID_BYTES, checked there */
size_t cuda_nccl_id_bytes(taca_error *err); /* 0 with the reason when libnccl cannot be loaded */
int cuda_nccl_unique_id(void *id, taca_error *err);
int cuda_nccl_init(void **comm, nn_backend *be, int nranks, const void *id, int rank,
                   taca_error *err);
int cuda_nccl_allreduce_sum(void *comm, nn_backend *be, float *buf, size_t n, taca_error *err);
void cuda_nccl_destroy(void *comm);
void cuda_nccl_abort(void *comm);

#endif
