/* backend_cpu.c: the CPU compute backend: OpenBLAS sgemm for every matrix product (BF16 ones on
 * registered weights: backend_cpu_bf16.c), OpenMP-parallel vectorised loops for the elementwise ops.
 *
 * Threading (one owner, DESIGN.md "Known pitfalls"): OpenMP owns the cores. OpenBLAS is set to one
 * thread; GEMMs are split across the OpenMP threads (each part one single-threaded sgemm),
 * attention parallelises over (batch, head), elementwise loops over rows. Measured on the 2-core
 * machine, this removes the spinning of two thread pools against each other (perf showed ~20% of
 * the time in sched_yield and libgomp spin loops with OpenBLAS's own threads). */
#include "nn/backend.h"

#include <cblas.h>
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "nn/backend_cpu_impl.h"
#include "base/fastmath.h"

/* OpenBLAS extensions (declared in its cblas.h on Debian, repeated here for clarity). */
void openblas_set_num_threads(int num_threads);
int openblas_get_num_threads(void);

static void *cpu_alloc(nn_backend *be, size_t bytes) {
  (void)be;
  void *p = NULL;
  if (bytes == 0) bytes = 64;
  if (posix_memalign(&p, 64, (bytes + 63) & ~(size_t)63) != 0) return NULL;
  return p;
}

static void cpu_free(nn_backend *be, void *p) {
  (void)be;
  free(p);
}

static void cpu_copy(nn_backend *be, void *dst, const void *src, size_t bytes) {
  (void)be;
  if (dst != src && bytes) memcpy(dst, src, bytes);
}

static void cpu_synchronize(nn_backend *be) { (void)be; }

/* One thread's share of a linear layer: rows [r0, r1) and output columns [c0, c1). */
static void linear_part(float *out, int ldo, const float *inp, int ldi, const float *w,
                        const float *bias, int C, int r0, int r1, int c0, int c1, int accumulate) {
  if (r1 <= r0 || c1 <= c0) return;
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, r1 - r0, c1 - c0, C, 1.0f,
              inp + (size_t)r0 * ldi, ldi, w + (size_t)c0 * C, C, accumulate ? 1.0f : 0.0f,
              out + (size_t)r0 * ldo + c0, ldo);
  if (!bias) return;
  for (int n = r0; n < r1; n++) {
    float *o = out + (size_t)n * ldo;
#pragma omp simd
    for (int j = c0; j < c1; j++) o[j] += bias[j];
  }
}

/* GEMMs are split across the OpenMP threads by rows (or, for few rows, by output columns), each
 * part a single-threaded sgemm: one thread pool owns the cores, so OpenBLAS's own threads never
 * compete with the OpenMP loops around them. */
void cpu_linear_forward_f32(nn_backend *be, float *out, int ldo, const float *inp, int ldi,
                            const float *w, const float *bias, int N, int C, int OC,
                            int accumulate) {
  const int nt = ((cpu_impl *)be->impl)->threads;
  if (N <= 0 || OC <= 0) return;
  if (nt == 1 || (size_t)N * OC * C < (1u << 18)) {
    linear_part(out, ldo, inp, ldi, w, bias, C, 0, N, 0, OC, accumulate);
    return;
  }
  const int by_rows = N >= 16 * nt;
#pragma omp parallel num_threads(nt)
  {
    const int t = omp_get_thread_num(), T = omp_get_num_threads();
    if (by_rows) {
      /* Row blocks in multiples of 16 keep the sgemm kernels' panels full. */
      int blocks = (N + 15) / 16;
      int r0 = (int)((long)blocks * t / T) * 16, r1 = (int)((long)blocks * (t + 1) / T) * 16;
      linear_part(out, ldo, inp, ldi, w, bias, C, r0, r1 < N ? r1 : N, 0, OC, accumulate);
    } else {
      int blocks = (OC + 15) / 16;
      int c0 = (int)((long)blocks * t / T) * 16, c1 = (int)((long)blocks * (t + 1) / T) * 16;
      linear_part(out, ldo, inp, ldi, w, bias, C, 0, N, c0, c1 < OC ? c1 : OC, accumulate);
    }
  }
}

/* W inside a region registered for BF16 (bf16_register): the BF16 GEMM; else the F32 one. */
static void cpu_linear_forward(nn_backend *be, float *out, int ldo, const float *inp, int ldi,
                               const float *w, const float *bias, int N, int C, int OC,
                               int accumulate) {
  const uint16_t *h = cpu_bf16_find(be, w, (size_t)OC, (size_t)C);
  if (h && N > 0 && OC > 0)
    cpu_bf16_linear_forward(be, out, ldo, inp, ldi, h, bias, N, C, OC, accumulate);
  else
    cpu_linear_forward_f32(be, out, ldo, inp, ldi, w, bias, N, C, OC, accumulate);
}

static void cpu_layernorm_forward(nn_backend *be, float *out, float *mean, float *rstd,
                                  const float *inp, const float *w, const float *b, int N, int C) {
  (void)be;
#pragma omp parallel for schedule(static) num_threads(CPU_NT(be))
  for (int n = 0; n < N; n++) {
    const float *x = inp + (size_t)n * C;
    float *o = out + (size_t)n * C;
    float s = 0.f;
#pragma omp simd reduction(+ : s)
    for (int i = 0; i < C; i++) s += x[i];
    float m = s / C;
    float v = 0.f;
#pragma omp simd reduction(+ : v)
    for (int i = 0; i < C; i++) {
      float d = x[i] - m;
      v += d * d;
    }
    float r = 1.0f / sqrtf(v / C + 1e-5f);
#pragma omp simd
    for (int i = 0; i < C; i++) o[i] = (x[i] - m) * r * w[i] + b[i];
    if (mean) mean[n] = m;
    if (rstd) rstd[n] = r;
  }
}

static void cpu_bias_act_forward(nn_backend *be, float *x, const float *bias, size_t N, int C,
                                 nn_act act) {
  (void)be;
#pragma omp parallel for schedule(static) num_threads(CPU_NT(be))
  for (size_t n = 0; n < N; n++) {
    float *restrict r = x + n * C;
    if (bias) {
#pragma omp simd
      for (int i = 0; i < C; i++) r[i] += bias[i];
    }
    if (act == NN_ACT_GELU) {
#pragma omp simd
      for (int i = 0; i < C; i++) r[i] = gelu_f(r[i]);
    } else {
#pragma omp simd
      for (int i = 0; i < C; i++) r[i] = quick_gelu_f(r[i]);
    }
  }
}

/* softmax over row[0:len] in place, entries at and beyond len (causal) set to 0 up to T. */
static void softmax_row(float *row, int len, int T) {
  float mx = row[0];
#pragma omp simd reduction(max : mx)
  for (int j = 1; j < len; j++) mx = row[j] > mx ? row[j] : mx;
  /* exp vectorised (elementwise), then the sum in index order: the same bits as one scalar loop
   * (which is what the fused loop compiled to before -fno-trapping-math, nn/CMakeLists.txt). */
#pragma omp simd
  for (int j = 0; j < len; j++) row[j] = fast_expf(row[j] - mx);
  float s = 0.f;
  for (int j = 0; j < len; j++) s += row[j];
  float inv = 1.f / s;
#pragma omp simd
  for (int j = 0; j < len; j++) row[j] *= inv;
  for (int j = len; j < T; j++) row[j] = 0.f;
}

static void cpu_attention_forward(nn_backend *be, float *out, float *att, const float *qkv, int B,
                                  int T, int C, int NH, int causal) {
  cpu_impl *impl = be->impl;
  const int hd = C / NH;
  const float scale = 1.0f / sqrtf((float)hd);
  const size_t need = (size_t)T * T;
  if (!att && need > impl->scratch_per) {
    free(impl->scratch);
    impl->scratch_per = need;
    impl->scratch = cpu_alloc(be, sizeof(float) * need * impl->threads);
  }
#pragma omp parallel for collapse(2) schedule(dynamic, 1) num_threads(impl->threads)
  for (int b = 0; b < B; b++) {
    for (int h = 0; h < NH; h++) {
      float *S = att ? att + ((size_t)b * NH + h) * need
                     : impl->scratch + (size_t)omp_get_thread_num() * impl->scratch_per;
      const float *q = qkv + (size_t)b * T * 3 * C + h * hd;
      const float *k = q + C;
      const float *v = q + 2 * C;
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, T, T, hd, scale, q, 3 * C, k, 3 * C,
                  0.0f, S, T);
      for (int i = 0; i < T; i++) softmax_row(S + (size_t)i * T, causal ? i + 1 : T, T);
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, T, hd, T, 1.0f, S, T, v, 3 * C, 0.0f,
                  out + (size_t)b * T * C + h * hd, C);
    }
  }
}

static void cpu_im2col_patches(nn_backend *be, float *out, const float *pixels, int B, int S,
                               int P) {
  (void)be;
  const int G = S / P, K = 3 * P * P;
#pragma omp parallel for collapse(2) schedule(static) num_threads(CPU_NT(be))
  for (int b = 0; b < B; b++) {
    for (int gy = 0; gy < G; gy++) {
      for (int gx = 0; gx < G; gx++) {
        float *o = out + (((size_t)b * G + gy) * G + gx) * K;
        for (int c = 0; c < 3; c++) {
          const float *img = pixels + ((size_t)b * 3 + c) * S * S;
          for (int ky = 0; ky < P; ky++) {
            memcpy(o + (c * P + ky) * P, img + (size_t)(gy * P + ky) * S + gx * P,
                   sizeof(float) * P);
          }
        }
      }
    }
  }
}

static void cpu_vit_embed(nn_backend *be, float *x, const float *patch_emb, const float *cls,
                          const float *pos, int B, int G2, int C) {
  (void)be;
  const int T = G2 + 1;
#pragma omp parallel for collapse(2) schedule(static) num_threads(CPU_NT(be))
  for (int b = 0; b < B; b++) {
    for (int t = 0; t < T; t++) {
      float *o = x + ((size_t)b * T + t) * C;
      const float *src = t == 0 ? cls : patch_emb + ((size_t)b * G2 + t - 1) * C;
      const float *p = pos + (size_t)t * C;
#pragma omp simd
      for (int i = 0; i < C; i++) o[i] = src[i] + p[i];
    }
  }
}

static void cpu_text_embed(nn_backend *be, float *x, const int32_t *tokens, int ctx,
                           const float *tok_emb, const float *pos, int B, int T, int C) {
  (void)be;
#pragma omp parallel for collapse(2) schedule(static) num_threads(CPU_NT(be))
  for (int b = 0; b < B; b++) {
    for (int t = 0; t < T; t++) {
      float *o = x + ((size_t)b * T + t) * C;
      const float *e = tok_emb + (size_t)tokens[(size_t)b * ctx + t] * C;
      const float *p = pos + (size_t)t * C;
#pragma omp simd
      for (int i = 0; i < C; i++) o[i] = e[i] + p[i];
    }
  }
}

static void cpu_gather_rows(nn_backend *be, float *out, const float *inp, const int64_t *rows,
                            int n, int C) {
  (void)be;
  for (int i = 0; i < n; i++) memcpy(out + (size_t)i * C, inp + rows[i] * C, sizeof(float) * C);
}

static void cpu_destroy(nn_backend *be) {
  cpu_impl *impl = be->impl;
  cpu_bf16_destroy(be);
  free(impl->scratch);
  free(impl);
  free(be);
}

static void *cpu_host_alloc(nn_backend *be, size_t bytes) { return cpu_alloc(be, bytes); }

static void cpu_host_free(nn_backend *be, void *p) { cpu_free(be, p); }

/* Every slot set (test_backend_ops checks that none is NULL). */
static const nn_backend cpu_ops = {
    .name = "cpu",
    .host_memory = 1,
    .alloc = cpu_alloc,
    .free = cpu_free,
    .upload = cpu_copy,
    .download = cpu_copy,
    .synchronize = cpu_synchronize,
    .linear_forward = cpu_linear_forward,
    .layernorm_forward = cpu_layernorm_forward,
    .bias_act_forward = cpu_bias_act_forward,
    .attention_forward = cpu_attention_forward,
    .im2col_patches = cpu_im2col_patches,
    .vit_embed = cpu_vit_embed,
    .text_embed = cpu_text_embed,
    .gather_rows = cpu_gather_rows,
    .zero = cpu_zero,
    .copy = cpu_copy_dev,
    .scale = cpu_scale,
    .linear_backward = cpu_linear_backward,
    .layernorm_backward = cpu_layernorm_backward,
    .bias_act_forward_pre = cpu_bias_act_forward_pre,
    .act_backward = cpu_act_backward,
    .attention_backward = cpu_attention_backward,
    .scatter_rows_add = cpu_scatter_rows_add,
    .adamw_update = cpu_adamw_update,
    .host_alloc = cpu_host_alloc,
    .host_free = cpu_host_free,
    .destroy = cpu_destroy,
    .bf16_register = cpu_bf16_register,
    .bf16_unregister = cpu_bf16_unregister,
};

nn_backend *nn_backend_cpu_create_isa(int threads) {
  nn_backend *be = malloc(sizeof *be);
  cpu_impl *impl = calloc(1, sizeof *impl);
  if (!be || !impl) {
    free(be);
    free(impl);
    return NULL;
  }
  impl->threads = threads > 0 ? threads : omp_get_max_threads();
  /* OpenMP owns the threads; every sgemm call runs on the calling thread (see linear_forward). */
  openblas_set_num_threads(1);
  *be = cpu_ops;
  be->impl = impl;
  return be;
}
