/* backend_cpu_backward.c: the CPU backend's training ops (backward passes, AdamW, memory helpers),
 * in the ops table of backend_cpu.c.
 *
 * Same threading as backend_cpu.c: OpenMP owns the cores and OpenBLAS runs single-threaded; each
 * GEMM is split across the OpenMP threads (by 16-row blocks of its output, or 16-column blocks when
 * the output has few rows), each part one sgemm; attention backward parallelises over (batch,
 * head). Reductions over rows (bias and LayerNorm weight gradients) are split by columns and summed
 * in double, so they are deterministic and accurate. */
#include <cblas.h>
#include <math.h>
#include <omp.h>
#include <string.h>

#include "nn/adamw.h"
#include "nn/backend.h"
#include "nn/backend_cpu_impl.h"
#include "base/fastmath.h"

#define COLS 64 /* columns per task in the column-split reductions */

void cpu_zero(nn_backend *be, void *p, size_t bytes) {
  (void)be;
  if (bytes) memset(p, 0, bytes);
}

void cpu_copy_dev(nn_backend *be, void *dst, const void *src, size_t bytes) {
  (void)be;
  if (dst != src && bytes) memcpy(dst, src, bytes);
}

void cpu_scale(nn_backend *be, float *x, size_t n, float alpha) {
  (void)be;
#pragma omp parallel for simd schedule(static) num_threads(CPU_NT(be))
  for (size_t i = 0; i < n; i++) x[i] *= alpha;
}

/* db[j] += sum_n dout[n, j]: columns split across threads, rows summed in double. */
static void column_sums(int nt, float *db, const float *dout, int ldd, int N, int OC) {
#pragma omp parallel for schedule(static) num_threads(nt)
  for (int j0 = 0; j0 < OC; j0 += COLS) {
    const int w = OC - j0 < COLS ? OC - j0 : COLS;
    double acc[COLS] = {0};
    for (int n = 0; n < N; n++) {
      const float *r = dout + (size_t)n * ldd + j0;
#pragma omp simd
      for (int j = 0; j < w; j++) acc[j] += r[j];
    }
    for (int j = 0; j < w; j++) db[j0 + j] += (float)acc[j];
  }
}

/* Row-major C[M, N] = op(A) op(B) + beta C (ta/tb: A stored [K, M] / B stored [N, K]), split
 * across nt OpenMP threads as described at the top; small products run as one call. */
static void par_sgemm(int nt, int ta, int tb, int M, int N, int K, const float *A, int lda,
                      const float *B, int ldb, float beta, float *C, int ldc) {
  const CBLAS_TRANSPOSE opa = ta ? CblasTrans : CblasNoTrans, opb = tb ? CblasTrans : CblasNoTrans;
  if (nt == 1 || (size_t)M * N * K < (1u << 18)) {
    cblas_sgemm(CblasRowMajor, opa, opb, M, N, K, 1.0f, A, lda, B, ldb, beta, C, ldc);
    return;
  }
  const int by_rows = M >= 16 * nt;
#pragma omp parallel num_threads(nt)
  {
    const int t = omp_get_thread_num(), T = omp_get_num_threads();
    const int blocks = ((by_rows ? M : N) + 15) / 16;
    int i0 = (int)((long)blocks * t / T) * 16, i1 = (int)((long)blocks * (t + 1) / T) * 16;
    if (i1 > (by_rows ? M : N)) i1 = by_rows ? M : N;
    if (i1 > i0) {
      if (by_rows)
        cblas_sgemm(CblasRowMajor, opa, opb, i1 - i0, N, K, 1.0f,
                    ta ? A + i0 : A + (size_t)i0 * lda, lda, B, ldb, beta, C + (size_t)i0 * ldc,
                    ldc);
      else
        cblas_sgemm(CblasRowMajor, opa, opb, M, i1 - i0, K, 1.0f, A, lda,
                    tb ? B + (size_t)i0 * ldb : B + i0, ldb, beta, C + i0, ldc);
    }
  }
}

void cpu_linear_backward(nn_backend *be, float *dinp, int lddi, float *dw, float *db,
                                const float *dout, int ldd, const float *inp, int ldi,
                                const float *w, int N, int C, int OC, int accumulate) {
  const int nt = ((cpu_impl *)be->impl)->threads;
  if (N <= 0 || C <= 0 || OC <= 0) return;
  /* dinp[N, C] = dout[N, OC] . W[OC, C]; dW[OC, C] += dout^T . inp[N, C]. dinp in BF16 when W is
   * registered for it (backend_cpu_bf16.c). */
  const uint16_t *h = dinp ? cpu_bf16_find(be, w, (size_t)OC, (size_t)C) : NULL;
  if (h) cpu_bf16_linear_dinp(be, dinp, lddi, dout, ldd, h, N, C, OC, accumulate);
  else if (dinp) par_sgemm(nt, 0, 0, N, C, OC, dout, ldd, w, C, accumulate ? 1.0f : 0.0f, dinp, lddi);
  if (dw) par_sgemm(nt, 1, 0, OC, C, N, dout, ldd, inp, ldi, 1.0f, dw, C);
  if (db) column_sums(CPU_NT(be), db, dout, ldd, N, OC);
}

void cpu_layernorm_backward(nn_backend *be, float *dinp, float *dw, float *db,
                                   const float *dout, const float *inp, const float *mean,
                                   const float *rstd, const float *w, int N, int C) {
  (void)be;
  if (dinp) {
#pragma omp parallel for schedule(static) num_threads(CPU_NT(be))
    for (int n = 0; n < N; n++) {
      const float *x = inp + (size_t)n * C, *dy = dout + (size_t)n * C;
      float *dx = dinp + (size_t)n * C;
      const float m = mean[n], r = rstd[n];
      float s1 = 0.f, s2 = 0.f;
#pragma omp simd reduction(+ : s1, s2)
      for (int i = 0; i < C; i++) {
        float dn = dy[i] * w[i];
        s1 += dn;
        s2 += dn * (x[i] - m) * r;
      }
      s1 /= C;
      s2 /= C;
#pragma omp simd
      for (int i = 0; i < C; i++) dx[i] += (dy[i] * w[i] - s1 - (x[i] - m) * r * s2) * r;
    }
  }
  if (dw || db) {
#pragma omp parallel for schedule(static) num_threads(CPU_NT(be))
    for (int c0 = 0; c0 < C; c0 += COLS) {
      const int wd = C - c0 < COLS ? C - c0 : COLS;
      double aw[COLS] = {0}, ab[COLS] = {0};
      for (int n = 0; n < N; n++) {
        const float *x = inp + (size_t)n * C + c0, *dy = dout + (size_t)n * C + c0;
        const float m = mean[n], r = rstd[n];
#pragma omp simd
        for (int i = 0; i < wd; i++) {
          aw[i] += dy[i] * ((x[i] - m) * r);
          ab[i] += dy[i];
        }
      }
      for (int i = 0; i < wd; i++) {
        if (dw) dw[c0 + i] += (float)aw[i];
        if (db) db[c0 + i] += (float)ab[i];
      }
    }
  }
}

void cpu_bias_act_forward_pre(nn_backend *be, float *out, float *pre, const float *bias,
                                     size_t N, int C, nn_act act) {
  (void)be;
#pragma omp parallel for schedule(static) num_threads(CPU_NT(be))
  for (size_t n = 0; n < N; n++) {
    float *p = pre + n * C, *o = out + n * C;
    if (bias) {
#pragma omp simd
      for (int i = 0; i < C; i++) p[i] += bias[i];
    }
    if (act == NN_ACT_GELU) {
#pragma omp simd
      for (int i = 0; i < C; i++) o[i] = gelu_f(p[i]);
    } else {
#pragma omp simd
      for (int i = 0; i < C; i++) o[i] = quick_gelu_f(p[i]);
    }
  }
}

static inline float gelu_grad_f(float x) {
  const float cdf = 0.5f * (1.f + fast_erff(x * 0.70710678118654752f));
  const float pdf = 0.39894228040143268f * fast_expf(-0.5f * x * x);
  return cdf + x * pdf;
}

static inline float quick_gelu_grad_f(float x) {
  const float s = 1.f / (1.f + fast_expf(-1.702f * x));
  return s + 1.702f * x * s * (1.f - s);
}

void cpu_act_backward(nn_backend *be, float *dinp, const float *dout, const float *pre,
                             size_t n, nn_act act) {
  (void)be;
  if (act == NN_ACT_GELU) {
#pragma omp parallel for simd schedule(static) num_threads(CPU_NT(be))
    for (size_t i = 0; i < n; i++) dinp[i] = dout[i] * gelu_grad_f(pre[i]);
  } else {
#pragma omp parallel for simd schedule(static) num_threads(CPU_NT(be))
    for (size_t i = 0; i < n; i++) dinp[i] = dout[i] * quick_gelu_grad_f(pre[i]);
  }
}

void cpu_attention_backward(nn_backend *be, float *dqkv, float *datt, const float *dout,
                                   const float *qkv, const float *att, int B, int T, int C, int NH,
                                   int causal) {
  const int nt = ((cpu_impl *)be->impl)->threads;
  const int hd = C / NH;
  const float scale = 1.0f / sqrtf((float)hd);
  const size_t TT = (size_t)T * T;
#pragma omp parallel for collapse(2) schedule(dynamic, 1) num_threads(nt)
  for (int b = 0; b < B; b++) {
    for (int h = 0; h < NH; h++) {
      const float *P = att + ((size_t)b * NH + h) * TT;
      float *dS = datt + ((size_t)b * NH + h) * TT;
      const float *q = qkv + (size_t)b * T * 3 * C + h * hd, *k = q + C, *v = q + 2 * C;
      const float *dO = dout + (size_t)b * T * C + h * hd;
      float *dq = dqkv + (size_t)b * T * 3 * C + h * hd, *dk = dq + C, *dv = dq + 2 * C;
      /* dV = P^T dO; dP = dO V^T. */
      cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, T, hd, T, 1.0f, P, T, dO, C, 0.0f, dv,
                  3 * C);
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, T, T, hd, 1.0f, dO, C, v, 3 * C, 0.0f,
                  dS, T);
      /* Softmax backward, row by row: dS = P * (dP - <P, dP>). */
      for (int i = 0; i < T; i++) {
        const float *p = P + (size_t)i * T;
        float *d = dS + (size_t)i * T;
        const int len = causal ? i + 1 : T;
        float dot = 0.f;
#pragma omp simd reduction(+ : dot)
        for (int j = 0; j < len; j++) dot += p[j] * d[j];
#pragma omp simd
        for (int j = 0; j < len; j++) d[j] = p[j] * (d[j] - dot);
        for (int j = len; j < T; j++) d[j] = 0.f;
      }
      /* S = scale Q K^T: dQ = scale dS K; dK = scale dS^T Q. */
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, T, hd, T, scale, dS, T, k, 3 * C, 0.0f,
                  dq, 3 * C);
      cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, T, hd, T, scale, dS, T, q, 3 * C, 0.0f,
                  dk, 3 * C);
    }
  }
}

void cpu_scatter_rows_add(nn_backend *be, float *out, const float *inp, const int64_t *rows,
                                 int n, int C) {
  (void)be;
#pragma omp parallel for schedule(static) num_threads(CPU_NT(be))
  for (int i = 0; i < n; i++) {
    float *o = out + rows[i] * C;
    const float *x = inp + (size_t)i * C;
#pragma omp simd
    for (int j = 0; j < C; j++) o[j] += x[j];
  }
}

void cpu_adamw_update(nn_backend *be, float *p, const float *g, float *m, float *v, size_t n,
                             double lr, double beta1, double beta2, double eps, double weight_decay,
                             long t) {
  (void)be;
  nn_adamw_host(p, g, m, v, n, lr, beta1, beta2, eps, weight_decay, t, CPU_NT(be));
}
