/* backend_cuda.cu: the CUDA backend's core: creation and destruction, the caching device allocator,
 * the compute and copy streams with uploads, downloads and pinned host buffers, the sticky error,
 * and every matrix product on cuBLAS: linear forward/backward and the GEMMs of attention (strided-
 * batched over the batch, one call per head). The elementwise and reduction kernels are in
 * backend_cuda_kernels.cu (forward) and backend_cuda_backward.cu (backward, AdamW).
 *
 * Allocator: sizes round up to one of four classes per power of two (512 B minimum, at most 25%
 * slack); a freed block goes on its class's free list and the next request of that class takes it.
 * Memory returns to the driver only when cudaMalloc fails (then every cached free block is released
 * and the request retried) and at destroy. Reuse is safe without events because every kernel runs
 * on the one compute stream, in order. Records are found by a linear scan on free: a model holds a
 * few hundred blocks, and frees are rare (workspace growth, teardown). */
#include "nn/backend_cuda_impl.h"
#include "nn/backend_cuda_module.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- Errors. */

static int cuda_vfail(taca_error *err, const char *fmt, va_list ap) {
  if (err) vsnprintf(err->msg, sizeof err->msg, fmt, ap);
  return -1;
}

/* taca_fail's twin (the module does not link base/error.c: it depends on nothing of taca's). */
int cuda_fail(taca_error *err, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  cuda_vfail(err, fmt, ap);
  va_end(ap);
  return -1;
}

void cuda_record_failure(cuda_impl *im, const char *fmt, ...) {
  if (im->failed) return;
  im->failed = 1;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(im->error, sizeof im->error, fmt, ap);
  va_end(ap);
  fprintf(stderr, "taca: CUDA backend (GPU %d): %s\n", im->device, im->error);
}

int cuda_ok(cuda_impl *im, cudaError_t e, const char *what) {
  if (e == cudaSuccess) return 1;
  cuda_record_failure(im, "%s failed: %s (%s)", what, cudaGetErrorName(e), cudaGetErrorString(e));
  return 0;
}

int cublas_ok(cuda_impl *im, cublasStatus_t s, const char *what) {
  if (s == CUBLAS_STATUS_SUCCESS) return 1;
  cuda_record_failure(im, "%s failed: %s (%s)", what, cublasGetStatusName(s),
                      cublasGetStatusString(s));
  return 0;
}

cuda_impl *cuda_enter(nn_backend *be) {
  cuda_impl *im = (cuda_impl *)be->impl;
  if (im->failed) return NULL;
  if (!CUDA_OK(im, cudaSetDevice(im->device))) return NULL;
  /* Debug mode (TACA_CUDA_SYNC=1): every op starts after all earlier work of both streams ended,
   * so results cannot depend on the stream contract (backend_cuda.h); a run that differs from its
   * TACA_CUDA_SYNC=1 twin has a stream race. */
  if (im->sync_each_op && !(CUDA_OK(im, cudaStreamSynchronize(im->compute)) &&
                            CUDA_OK(im, cudaStreamSynchronize(im->copy))))
    return NULL;
  return im;
}

unsigned cuda_grid(const cuda_impl *im, size_t n, unsigned threads) {
  size_t blocks = (n + threads - 1) / threads;
  const size_t cap = (size_t)im->sm_count * 32; /* enough resident blocks; the loop does the rest */
  if (blocks > cap) blocks = cap;
  return blocks ? (unsigned)blocks : 1u;
}

/* ---- Caching allocator. */

/* Class of a request: 4k + j for the size 2^k + j 2^(k-2) (j = 0..3; j = 4 is the next power). */
static int size_class(size_t bytes) {
  if (bytes <= 512) return 4 * 9;
  const int k = 63 - __builtin_clzll((unsigned long long)bytes); /* 2^k <= bytes < 2^(k+1) */
  const size_t base = (size_t)1 << k, quarter = base >> 2;
  const size_t j = (bytes - base + quarter - 1) / quarter;     /* 0..4 */
  return 4 * k + (int)j;
}

static size_t class_bytes(int cls) {
  const size_t base = (size_t)1 << (cls / 4);
  return base + (size_t)(cls % 4) * (base >> 2);
}

/* Returns every cached free block to the driver (after the streams drained). */
static void release_cached(cuda_impl *im) {
  cudaStreamSynchronize(im->compute);
  cudaStreamSynchronize(im->copy);
  for (int c = 0; c < CUDA_SIZE_CLASSES; c++) {
    for (int i = im->free_head[c]; i >= 0;) {
      cuda_block *b = &im->blocks[i];
      const int next = b->next_free;
      CUDA_OK(im, cudaFree(b->ptr));
      im->held -= class_bytes(b->cls);
      b->ptr = NULL, b->next_free = -1;
      i = next;
    }
    im->free_head[c] = -1;
  }
}

static int new_record(cuda_impl *im) {
  for (int i = 0; i < im->n_blocks; i++)
    if (!im->blocks[i].ptr) return i;
  if (im->n_blocks == im->cap_blocks) {
    const int cap = im->cap_blocks ? 2 * im->cap_blocks : 256;
    cuda_block *nb = (cuda_block *)realloc(im->blocks, sizeof *nb * (size_t)cap);
    if (!nb) return -1;
    im->blocks = nb, im->cap_blocks = cap;
  }
  return im->n_blocks++;
}

static void *cu_alloc(nn_backend *be, size_t bytes) {
  cuda_impl *im = cuda_enter(be);
  if (!im) return NULL;
  const int cls = size_class(bytes);
  if (cls >= CUDA_SIZE_CLASSES) return NULL;
  int i = im->free_head[cls];
  if (i >= 0) {
    im->free_head[cls] = im->blocks[i].next_free;
  } else {
    const size_t size = class_bytes(cls);
    void *p = NULL;
    cudaError_t e = cudaMalloc(&p, size);
    if (e == cudaErrorMemoryAllocation) {
      cudaGetLastError(); /* out of memory is not sticky: clear it, release the cache, retry once */
      release_cached(im);
      e = cudaMalloc(&p, size);
    }
    if (e == cudaErrorMemoryAllocation) {
      cudaGetLastError();
      return NULL; /* the caller reports it (models fail with "out of memory") */
    }
    if (!cuda_ok(im, e, "cudaMalloc")) return NULL;
    if ((i = new_record(im)) < 0) {
      cudaFree(p);
      return NULL;
    }
    im->blocks[i].ptr = p, im->blocks[i].cls = cls;
    im->held += size;
  }
  im->blocks[i].in_use = 1, im->blocks[i].next_free = -1;
  im->in_use += class_bytes(cls);
  return im->blocks[i].ptr;
}

static void cu_free(nn_backend *be, void *p) {
  cuda_impl *im = (cuda_impl *)be->impl;
  if (!p) return;
  for (int i = 0; i < im->n_blocks; i++) {
    cuda_block *b = &im->blocks[i];
    if (b->ptr != p) continue;
    if (!b->in_use) {
      cuda_record_failure(im, "free of device pointer %p twice", p);
      return;
    }
    b->in_use = 0;
    b->next_free = im->free_head[b->cls];
    im->free_head[b->cls] = i;
    im->in_use -= class_bytes(b->cls);
    im->freed_since_sync = 1;
    return;
  }
  cuda_record_failure(im, "free of pointer %p that this backend did not allocate", p);
}

int cuda_scratch(nn_backend *be, void **buf, size_t *cap_bytes, size_t bytes) {
  if (*buf && *cap_bytes >= bytes) return 0;
  cuda_impl *im = (cuda_impl *)be->impl;
  if (*buf) cu_free(be, *buf); /* stream order: earlier kernels finish with it before reuse */
  *buf = NULL, *cap_bytes = 0;
  void *p = cu_alloc(be, bytes);
  if (!p) {
    cuda_record_failure(im, "out of device memory for %zu bytes of scratch", bytes);
    return -1;
  }
  *buf = p, *cap_bytes = bytes;
  return 0;
}

/* ---- Copies. */

static int is_page_locked(const void *p) {
  cudaPointerAttributes a;
  if (cudaPointerGetAttributes(&a, p) != cudaSuccess) {
    cudaGetLastError(); /* older runtimes fail for pageable memory: not an error here */
    return 0;
  }
  return a.type == cudaMemoryTypeHost;
}

/* Host-to-device on the compute stream through the next staging slot (bytes <= CUDA_STAGE_BYTES):
 * the source is copied into pinned memory before this returns. */
static void staged_upload(cuda_impl *im, void *dst, const void *src, size_t bytes) {
  const int s = im->stage_next;
  im->stage_next = (s + 1) % CUDA_STAGE_SLOTS;
  unsigned char *slot = im->staging + (size_t)s * CUDA_STAGE_BYTES;
  if (!CUDA_OK(im, cudaEventSynchronize(im->stage_done[s]))) return; /* its last copy is done */
  memcpy(slot, src, bytes);
  if (!CUDA_OK(im, cudaMemcpyAsync(dst, slot, bytes, cudaMemcpyHostToDevice, im->compute))) return;
  CUDA_OK(im, cudaEventRecord(im->stage_done[s], im->compute));
}

static void cu_upload(nn_backend *be, void *dst, const void *src, size_t bytes) {
  cuda_impl *im = cuda_enter(be);
  if (!im || !bytes) return;
  if (is_page_locked(src)) {
    /* Copy stream: overlaps the compute work already enqueued (see backend_cuda.h). If a block
     * was freed since the last host sync, dst may be a recycled block that queued work still
     * uses: then the copy waits for the compute stream first. */
    if (im->freed_since_sync) {
      if (!CUDA_OK(im, cudaEventRecord(im->compute_mark, im->compute)) ||
          !CUDA_OK(im, cudaStreamWaitEvent(im->copy, im->compute_mark, 0)))
        return;
    }
    if (!CUDA_OK(im, cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, im->copy)) ||
        !CUDA_OK(im, cudaEventRecord(im->copy_done, im->copy)))
      return;
    CUDA_OK(im, cudaStreamWaitEvent(im->compute, im->copy_done, 0));
  } else if (bytes <= CUDA_STAGE_BYTES) {
    staged_upload(im, dst, src, bytes);
  } else {
    /* Large pageable source: copy in stream order and wait, so the caller may reuse it. */
    if (CUDA_OK(im, cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, im->compute)))
      CUDA_OK(im, cudaStreamSynchronize(im->compute));
  }
}

static void cu_synchronize(nn_backend *be) {
  cuda_impl *im = cuda_enter(be);
  if (!im) return;
  if (CUDA_OK(im, cudaStreamSynchronize(im->compute)) && CUDA_OK(im, cudaStreamSynchronize(im->copy)))
    im->freed_since_sync = 0;
}

static void cu_download(nn_backend *be, void *dst, const void *src, size_t bytes) {
  cuda_impl *im = cuda_enter(be);
  if (im && bytes &&
      CUDA_OK(im, cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, im->compute)) &&
      CUDA_OK(im, cudaStreamSynchronize(im->compute))) {
    im->freed_since_sync = 0; /* the compute stream is idle; copy-stream work it waited on is done */
    return;
  }
  if (bytes) memset(dst, 0xff, bytes); /* failed: NaN, never stale or plausible numbers */
}

const int64_t *cuda_upload_rows(nn_backend *be, const int64_t *rows, int n) {
  cuda_impl *im = (cuda_impl *)be->impl;
  const size_t bytes = sizeof(int64_t) * (size_t)(n > 0 ? n : 1);
  if (cuda_scratch(be, &im->rows, &im->rows_cap, bytes)) return NULL;
  if (bytes <= CUDA_STAGE_BYTES) {
    staged_upload(im, im->rows, rows, bytes);
  } else if (CUDA_OK(im, cudaMemcpyAsync(im->rows, rows, bytes, cudaMemcpyHostToDevice,
                                         im->compute))) {
    CUDA_OK(im, cudaStreamSynchronize(im->compute));
  }
  return im->failed ? NULL : (const int64_t *)im->rows;
}

static void cu_zero(nn_backend *be, void *p, size_t bytes) {
  cuda_impl *im = cuda_enter(be);
  if (im && bytes) CUDA_OK(im, cudaMemsetAsync(p, 0, bytes, im->compute));
}

static void cu_copy(nn_backend *be, void *dst, const void *src, size_t bytes) {
  cuda_impl *im = cuda_enter(be);
  if (im && bytes && dst != src)
    CUDA_OK(im, cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, im->compute));
}

static void *cu_host_alloc(nn_backend *be, size_t bytes) {
  cuda_impl *im = cuda_enter(be);
  if (!im) return NULL;
  void *p = NULL;
  if (cudaHostAlloc(&p, bytes ? bytes : 64, cudaHostAllocPortable) != cudaSuccess) {
    cudaGetLastError(); /* not sticky: the caller reports the shortage */
    return NULL;
  }
  return p;
}

static void cu_host_free(nn_backend *be, void *p) {
  cuda_impl *im = (cuda_impl *)be->impl;
  if (p) cuda_ok(im, cudaFreeHost(p), "cudaFreeHost");
}

/* ---- GEMMs. */

void cuda_gemm(cuda_impl *im, int ta, int tb, int M, int N, int K, float alpha, const float *A,
               int lda, long long sA, const float *B, int ldb, long long sB, float beta, float *C,
               int ldc, long long sC, int batch) {
  if (M <= 0 || N <= 0 || batch <= 0) return;
  /* Row-major C[M, N] is column-major C^T[N, M] = op(B)^T op(A)^T: cuBLAS gets B first, with the
   * dimensions swapped; a row-major matrix read column-major is its transpose, so the transpose
   * flags carry over unchanged. */
  const cublasOperation_t opA = ta ? CUBLAS_OP_T : CUBLAS_OP_N, opB = tb ? CUBLAS_OP_T : CUBLAS_OP_N;
  const cublasComputeType_t ct = im->math == NN_CUDA_MATH_TF32   ? CUBLAS_COMPUTE_32F_FAST_TF32
                                 : im->math == NN_CUDA_MATH_BF16 ? CUBLAS_COMPUTE_32F_FAST_16BF
                                                                 : CUBLAS_COMPUTE_32F;
  if (batch == 1) {
    CUBLAS_OK(im, cublasGemmEx(im->blas, opB, opA, N, M, K, &alpha, B, CUDA_R_32F, ldb, A,
                               CUDA_R_32F, lda, &beta, C, CUDA_R_32F, ldc, ct, CUBLAS_GEMM_DEFAULT));
  } else {
    CUBLAS_OK(im, cublasGemmStridedBatchedEx(im->blas, opB, opA, N, M, K, &alpha, B, CUDA_R_32F,
                                             ldb, sB, A, CUDA_R_32F, lda, sA, &beta, C, CUDA_R_32F,
                                             ldc, sC, batch, ct, CUBLAS_GEMM_DEFAULT));
  }
}

static void cu_linear_forward(nn_backend *be, float *out, int ldo, const float *inp, int ldi,
                              const float *w, const float *bias, int N, int C, int OC,
                              int accumulate) {
  cuda_impl *im = cuda_enter(be);
  if (!im || N <= 0 || OC <= 0) return;
  /* out[N, OC] (+)= inp[N, C] . W[OC, C]^T, then + bias per column. */
  cuda_gemm(im, 0, 1, N, OC, C, 1.0f, inp, ldi, 0, w, C, 0, accumulate ? 1.0f : 0.0f, out, ldo, 0, 1);
  if (bias) cuda_bias_add(im, out, ldo, bias, N, OC);
}

static void cu_linear_backward(nn_backend *be, float *dinp, int lddi, float *dw, float *db,
                               const float *dout, int ldd, const float *inp, int ldi,
                               const float *w, int N, int C, int OC, int accumulate) {
  cuda_impl *im = cuda_enter(be);
  if (!im || N <= 0 || C <= 0 || OC <= 0) return;
  /* dinp[N, C] (+)= dout[N, OC] . W[OC, C]; dW[OC, C] += dout^T . inp[N, C]; db += column sums. */
  if (dinp)
    cuda_gemm(im, 0, 0, N, C, OC, 1.0f, dout, ldd, 0, w, C, 0, accumulate ? 1.0f : 0.0f, dinp, lddi,
              0, 1);
  if (dw) cuda_gemm(im, 1, 0, OC, C, N, 1.0f, dout, ldd, 0, inp, ldi, 0, 1.0f, dw, C, 0, 1);
  if (db) cuda_column_sums(im, db, dout, ldd, N, OC);
}

/* ---- Attention: per head h, the batch's B matrices in one strided-batched GEMM. Head h of batch
 * element b: q at qkv + b T 3C + h hd (row stride 3C), k = q + C, v = q + 2C; its output at
 * out + b T C + h hd (row stride C); its scores at att + (b NH + h) T T (or the scratch). */

static void cu_attention_forward(nn_backend *be, float *out, float *att, const float *qkv, int B,
                                 int T, int C, int NH, int causal) {
  cuda_impl *im = cuda_enter(be);
  if (!im || B <= 0 || T <= 0) return;
  const int hd = C / NH;
  const float scale = 1.0f / sqrtf((float)hd);
  const long long TT = (long long)T * T, sq = (long long)T * 3 * C, so = (long long)T * C;
  long long sS = NH * TT; /* between batch elements of one head's scores */
  if (!att) {
    if (cuda_scratch(be, &im->att_scratch, &im->att_scratch_cap,
                     sizeof(float) * (size_t)B * (size_t)TT))
      return;
    sS = TT;
  }
  for (int h = 0; h < NH; h++) {
    const float *q = qkv + (size_t)h * hd, *k = q + C, *v = q + 2 * C;
    float *S = att ? att + (size_t)h * TT : (float *)im->att_scratch;
    /* S = Q K^T (raw), then P = softmax(scale S) with the causal mask, in place. */
    cuda_gemm(im, 0, 1, T, T, hd, 1.0f, q, 3 * C, sq, k, 3 * C, sq, 0.0f, S, T, sS, B);
    cuda_softmax_rows(im, S, sS, B, T, scale, causal);
    /* O = P V. */
    cuda_gemm(im, 0, 0, T, hd, T, 1.0f, S, T, sS, v, 3 * C, sq, 0.0f, out + (size_t)h * hd, C, so, B);
  }
}

static void cu_attention_backward(nn_backend *be, float *dqkv, float *datt, const float *dout,
                                  const float *qkv, const float *att, int B, int T, int C, int NH,
                                  int causal) {
  cuda_impl *im = cuda_enter(be);
  if (!im || B <= 0 || T <= 0) return;
  const int hd = C / NH;
  const float scale = 1.0f / sqrtf((float)hd);
  const long long TT = (long long)T * T, sq = (long long)T * 3 * C, so = (long long)T * C;
  const long long sS = NH * TT;
  for (int h = 0; h < NH; h++) {
    const float *q = qkv + (size_t)h * hd, *k = q + C, *v = q + 2 * C;
    const float *P = att + (size_t)h * TT, *dO = dout + (size_t)h * hd;
    float *dS = datt + (size_t)h * TT;
    float *dq = dqkv + (size_t)h * hd, *dk = dq + C, *dv = dq + 2 * C;
    /* dV = P^T dO; dP = dO V^T. */
    cuda_gemm(im, 1, 0, T, hd, T, 1.0f, P, T, sS, dO, C, so, 0.0f, dv, 3 * C, sq, B);
    cuda_gemm(im, 0, 1, T, T, hd, 1.0f, dO, C, so, v, 3 * C, sq, 0.0f, dS, T, sS, B);
    /* dS = P * (dP - rowsum(P * dP)), zero above the diagonal when causal. */
    cuda_softmax_rows_backward(im, dS, P, sS, B, T, causal);
    /* S = scale Q K^T: dQ = scale dS K; dK = scale dS^T Q. */
    cuda_gemm(im, 0, 0, T, hd, T, scale, dS, T, sS, k, 3 * C, sq, 0.0f, dq, 3 * C, sq, B);
    cuda_gemm(im, 1, 0, T, hd, T, scale, dS, T, sS, q, 3 * C, sq, 0.0f, dk, 3 * C, sq, B);
  }
}

/* ---- Creation and destruction. */

static void cu_destroy(nn_backend *be) {
  cuda_impl *im = (cuda_impl *)be->impl;
  cudaSetDevice(im->device);
  if (im->compute) cudaStreamSynchronize(im->compute);
  if (im->copy) cudaStreamSynchronize(im->copy);
  if (im->blas) cublasDestroy(im->blas);
  for (int i = 0; i < im->n_blocks; i++)
    if (im->blocks[i].ptr) cudaFree(im->blocks[i].ptr);
  free(im->blocks);
  if (im->staging) cudaFreeHost(im->staging);
  for (int s = 0; s < CUDA_STAGE_SLOTS; s++)
    if (im->stage_done[s]) cudaEventDestroy(im->stage_done[s]);
  if (im->copy_done) cudaEventDestroy(im->copy_done);
  if (im->compute_mark) cudaEventDestroy(im->compute_mark);
  if (im->copy) cudaStreamDestroy(im->copy);
  if (im->compute) cudaStreamDestroy(im->compute);
  free(im);
  free(be);
}

static int mod_device_count(taca_error *err) {
  int n = 0;
  const cudaError_t e = cudaGetDeviceCount(&n);
  if (e != cudaSuccess) {
    cudaGetLastError();
    cuda_fail(err, "no usable CUDA GPU: %s (%s)", cudaGetErrorName(e), cudaGetErrorString(e));
    return 0;
  }
  if (n <= 0) cuda_fail(err, "no CUDA GPU found");
  return n;
}

/* Fails with err set from the failure the setup recorded in im. */
static nn_backend *create_failed(nn_backend *be, taca_error *err) {
  cuda_fail(err, "CUDA backend on GPU %d: %s", ((cuda_impl *)be->impl)->device,
            ((cuda_impl *)be->impl)->error);
  cu_destroy(be);
  return NULL;
}

/* The ops table: every slot of nn_backend.h, in its order (test_cuda_parity checks none is NULL). */
static const nn_backend cuda_ops = {
    "cuda",                  /* name */
    0,                       /* host_memory */
    cu_alloc,                cu_free, cu_upload, cu_download, cu_synchronize,
    cu_linear_forward,       cu_layernorm_forward, cu_bias_act_forward, cu_attention_forward,
    cu_im2col_patches,       cu_vit_embed, cu_text_embed, cu_gather_rows,
    cu_zero,                 cu_copy, cu_scale, cu_linear_backward, cu_layernorm_backward,
    cu_bias_act_forward_pre, cu_act_backward, cu_attention_backward, cu_scatter_rows_add,
    cu_adamw_update,         cu_host_alloc, cu_host_free, cu_destroy,
    NULL,                    /* impl */
    NULL,                    /* bf16_register: none on the GPU yet (optional slot) */
    NULL,                    /* bf16_unregister */
};

static nn_backend *mod_create(int ordinal, nn_cuda_math math, taca_error *err) {
  taca_error why;
  const int count = mod_device_count(&why);
  if (count <= 0) {
    cuda_fail(err, "device cuda:%d: %s", ordinal, why.msg);
    return NULL;
  }
  if (ordinal < 0 || ordinal >= count) {
    cuda_fail(err, "device cuda:%d: no such GPU (this machine has %d, cuda:0 to cuda:%d)", ordinal,
              count, count - 1);
    return NULL;
  }
  nn_backend *be = (nn_backend *)malloc(sizeof *be);
  cuda_impl *im = (cuda_impl *)calloc(1, sizeof *im);
  if (!be || !im) {
    free(be), free(im);
    cuda_fail(err, "out of memory creating the CUDA backend");
    return NULL;
  }
  *be = cuda_ops;
  be->impl = im;
  im->device = ordinal;
  im->math = math;
  const char *sync = getenv("TACA_CUDA_SYNC");
  im->sync_each_op = sync && !strcmp(sync, "1");
  for (int c = 0; c < CUDA_SIZE_CLASSES; c++) im->free_head[c] = -1;
  cudaDeviceProp prop;
  if (!CUDA_OK(im, cudaSetDevice(ordinal)) ||
      !CUDA_OK(im, cudaGetDeviceProperties(&prop, ordinal)))
    return create_failed(be, err);
  im->sm_count = prop.multiProcessorCount > 0 ? prop.multiProcessorCount : 1;
  /* A GPU this build has no kernel image for fails here, with a reason, not at the first op. */
  cudaFuncAttributes fa;
  const cudaError_t fe = cudaFuncGetAttributes(&fa, cuda_probe_kernel());
  if (fe != cudaSuccess) {
    cudaGetLastError();
    cuda_fail(err, "device cuda:%d (%s, compute capability %d.%d): this build has no kernels for it "
                   "(%s; rebuild with its architecture in CMAKE_CUDA_ARCHITECTURES)",
              ordinal, prop.name, prop.major, prop.minor, cudaGetErrorString(fe));
    cu_destroy(be);
    return NULL;
  }
  if (!CUDA_OK(im, cudaStreamCreateWithFlags(&im->compute, cudaStreamNonBlocking)) ||
      !CUDA_OK(im, cudaStreamCreateWithFlags(&im->copy, cudaStreamNonBlocking)) ||
      !CUDA_OK(im, cudaEventCreateWithFlags(&im->copy_done, cudaEventDisableTiming)) ||
      !CUDA_OK(im, cudaEventCreateWithFlags(&im->compute_mark, cudaEventDisableTiming)))
    return create_failed(be, err);
  for (int s = 0; s < CUDA_STAGE_SLOTS; s++)
    if (!CUDA_OK(im, cudaEventCreateWithFlags(&im->stage_done[s], cudaEventDisableTiming)))
      return create_failed(be, err);
  if (!CUDA_OK(im, cudaHostAlloc((void **)&im->staging, CUDA_STAGE_SLOTS * CUDA_STAGE_BYTES,
                                 cudaHostAllocPortable)) ||
      !CUBLAS_OK(im, cublasCreate(&im->blas)) ||
      !CUBLAS_OK(im, cublasSetStream(im->blas, im->compute)) ||
      !CUBLAS_OK(im, cublasSetMathMode(im->blas, math == NN_CUDA_MATH_TF32
                                                     ? CUBLAS_TF32_TENSOR_OP_MATH
                                                     : CUBLAS_DEFAULT_MATH)))
    return create_failed(be, err);
  return be;
}

static int mod_is_ours(nn_backend *be) { return be && be->destroy == cu_destroy; }

static void *mod_stream(nn_backend *be) { return (void *)((cuda_impl *)be->impl)->compute; }
static int mod_device(nn_backend *be) { return ((cuda_impl *)be->impl)->device; }
static nn_cuda_math mod_math(nn_backend *be) { return ((cuda_impl *)be->impl)->math; }

static int mod_check(nn_backend *be, taca_error *err) {
  cuda_impl *im = (cuda_impl *)be->impl;
  if (!im->failed) return 0;
  return cuda_fail(err, "CUDA backend on GPU %d: %s", im->device, im->error);
}

static void mod_memory(nn_backend *be, size_t *held, size_t *in_use) {
  cuda_impl *im = (cuda_impl *)be->impl;
  if (held) *held = im->held;
  if (in_use) *in_use = im->in_use;
}

static const nn_cuda_module the_module = {
    NN_CUDA_MODULE_ABI, mod_device_count, mod_create,  mod_stream, mod_device,
    mod_math,           mod_check,        mod_memory,  mod_is_ours,
#ifdef TACA_HAVE_NCCL
    cuda_nccl_id_bytes, cuda_nccl_unique_id, cuda_nccl_init, cuda_nccl_allreduce_sum,
    cuda_nccl_destroy,  cuda_nccl_abort,
#else
    NULL, NULL, NULL, NULL, NULL, NULL,
#endif
};

/* The module's one exported symbol (every other is hidden: CUDA_VISIBILITY_PRESET). */
extern "C" __attribute__((visibility("default"))) const nn_cuda_module *taca_cuda_module(void) {
  return &the_module;
}
