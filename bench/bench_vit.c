/* bench_vit.c: CPU forward throughput of a CLIP vision tower (ViT-B/16 by default), beside the
 * OpenBLAS sgemm roofline measured on the model's own GEMM shapes in the same process.
 *
 *   bench_vit --model WEIGHTS.safetensors --arch ViT-B-16 [--batch 8] [--iters 5]
 *             [--precision f32|bf16]
 *
 * Prints one JSON line: images/s (of the median forward; best_images_per_s of the fastest), GFLOP/image, the sgemm-only time for one batch's GEMMs, the
 * roofline images/s that implies, and the fraction of it reached. bench/run-vit.sh runs this beside
 * PyTorch (bench/bench_vit.py) on the same weights. With --precision bf16 (bench/run-bf16.sh) the
 * model's GEMMs run in BF16 (nn/backend.h bf16_register), the JSON names what runs them
 * ("gemm_impl": the oneDNN kernel), and the GEMM-only time is that of the same BF16 GEMMs through
 * the backend (the linear layers on registered weights; attention stays F32 sgemm as in the model). */
#include <cblas.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "nn/clip.h"
#include "nn/backend.h"

void openblas_set_num_threads(int num_threads);
int openblas_get_num_threads(void);

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

static double median(double *v, int n) {
  qsort(v, n, sizeof *v, cmp_double);
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

/* Median seconds of one C[M,N] = A[M,K] . B[N,K]^T sgemm on all cores, taking the faster of
 * OpenBLAS's own threading and a row split over OpenMP threads (one single-threaded sgemm each),
 * so the roofline is the best this BLAS does on the shape. */
static double time_gemm(int M, int N, int K, int reps) {
  float *a = malloc(sizeof(float) * M * K), *b = malloc(sizeof(float) * N * K),
        *c = malloc(sizeof(float) * M * N);
  for (long i = 0; i < (long)M * K; i++) a[i] = (float)((i * 7 % 13) - 6) * 0.01f;
  for (long i = 0; i < (long)N * K; i++) b[i] = (float)((i * 5 % 11) - 5) * 0.01f;
  double best = 1e30;
  for (int mode = 0; mode < 2; mode++) {
    int nt = omp_get_max_threads();
    openblas_set_num_threads(mode == 0 ? nt : 1);
    double t[32];
    for (int r = -1; r < reps; r++) {
      double t0 = now();
      if (mode == 0) {
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, M, N, K, 1, a, K, b, K, 0, c, N);
      } else {
#pragma omp parallel num_threads(nt)
        {
          int i = omp_get_thread_num(), n = omp_get_num_threads();
          int r0 = (int)((long)M * i / n), r1 = (int)((long)M * (i + 1) / n);
          cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, r1 - r0, N, K, 1, a + (size_t)r0 * K,
                      K, b, K, 0, c + (size_t)r0 * N, N);
        }
      }
      if (r >= 0) t[r] = now() - t0;
    }
    double m = median(t, reps);
    if (m < best) best = m;
  }
  openblas_set_num_threads(1);
  free(a), free(b), free(c);
  return best;
}

/* Median seconds of the attention GEMMs of one layer (B*H pairs of [T,T,hd] and [T,hd,T]), run the
 * way the backend runs them: heads in parallel on OpenMP threads, one BLAS thread each. */
static double time_attention_gemms(int B, int H, int T, int hd, int reps) {
  int threads = omp_get_max_threads();
  float *q = calloc((size_t)T * hd, sizeof(float)), *s = calloc((size_t)T * T * threads, sizeof(float));
  float *o = calloc((size_t)T * hd * threads, sizeof(float));
  for (int i = 0; i < T * hd; i++) q[i] = (float)(i % 17) * 0.01f;
  double t[32];
  int bt = openblas_get_num_threads();
  for (int r = 0; r < reps; r++) {
    openblas_set_num_threads(1);
    double t0 = now();
#pragma omp parallel for schedule(dynamic, 1)
    for (int p = 0; p < B * H; p++) {
      float *S = s + (size_t)omp_get_thread_num() * T * T, *O = o + (size_t)omp_get_thread_num() * T * hd;
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, T, T, hd, 1, q, hd, q, hd, 0, S, T);
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, T, hd, T, 1, S, T, q, hd, 0, O, hd);
    }
    t[r] = now() - t0;
    openblas_set_num_threads(bt);
  }
  free(q), free(s), free(o);
  return median(t, reps);
}

/* Median seconds of one BF16 linear layer out[M, N] = inp[M, K] . W[N, K]^T through the backend,
 * W registered for BF16 (the activation rounding included, as in the model). */
static double time_bf16_linear(nn_backend *be, int M, int N, int K, int reps) {
  float *a = malloc(sizeof(float) * M * K), *w = malloc(sizeof(float) * N * K),
        *c = malloc(sizeof(float) * M * N);
  for (long i = 0; i < (long)M * K; i++) a[i] = (float)((i * 7 % 13) - 6) * 0.01f;
  for (long i = 0; i < (long)N * K; i++) w[i] = (float)((i * 5 % 11) - 5) * 0.01f;
  taca_error err;
  double t[32];
  if (be->bf16_register(be, w, (size_t)N * K, &err)) {
    fprintf(stderr, "bench_vit: %s\n", err.msg);
    exit(1);
  }
  for (int r = -1; r < reps; r++) {
    double t0 = now();
    be->linear_forward(be, c, N, a, K, w, NULL, M, K, N, 0);
    if (r >= 0) t[r] = now() - t0;
  }
  be->bf16_unregister(be, w);
  free(a), free(w), free(c);
  return median(t, reps);
}

int main(int argc, char **argv) {
  const char *model = NULL, *arch = "ViT-B-16";
  int batch = 8, iters = 5, roofline = 1;
  nn_precision precision = NN_PRECISION_F32;
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "--model") && i + 1 < argc) model = argv[++i];
    else if (!strcmp(argv[i], "--arch") && i + 1 < argc) arch = argv[++i];
    else if (!strcmp(argv[i], "--batch") && i + 1 < argc) batch = atoi(argv[++i]);
    else if (!strcmp(argv[i], "--iters") && i + 1 < argc) iters = atoi(argv[++i]);
    else if (!strcmp(argv[i], "--no-roofline")) roofline = 0; /* for profiling the forward alone */
    else if (!strcmp(argv[i], "--precision") && i + 1 < argc) {
      taca_error e;
      if (nn_precision_parse(argv[++i], &precision, &e)) {
        fprintf(stderr, "bench_vit: --%s\n", e.msg);
        return 2;
      }
    }
    else {
      fprintf(stderr, "usage: bench_vit --model W.safetensors [--arch ViT-B-16] [--batch 8] [--iters 5]\n");
      return 2;
    }
  }
  if (!model || batch <= 0 || iters <= 0 || iters > 32) {
    fprintf(stderr, "bench_vit: --model is required; batch > 0; 1 <= iters <= 32\n");
    return 2;
  }
  taca_error err;
  nn_backend *be = nn_backend_cpu_create(0);
  clip_model *m = clip_model_load(model, arch, be, &err);
  if (!m) {
    fprintf(stderr, "bench_vit: %s\n", err.msg);
    return 1;
  }
  if (clip_model_set_precision(m, precision, &err)) {
    fprintf(stderr, "bench_vit: %s\n", err.msg);
    return 1;
  }
  const int bf16 = precision == NN_PRECISION_BF16;
  const clip_config *c = &m->cfg;
  const int S = c->image_size, P = c->patch_size, G = S / P, T = G * G + 1, W = c->vision.width;
  const int Mw = c->vision.mlp, L = c->vision.layers, H = c->vision.heads, E = c->embed_dim;
  size_t npix = (size_t)batch * 3 * S * S;
  float *pix = malloc(sizeof(float) * npix), *out = malloc(sizeof(float) * batch * E);
  srand(1);
  for (size_t i = 0; i < npix; i++) pix[i] = (float)rand() / RAND_MAX * 2 - 1;

  /* Model forward. */
  clip_encode_image(m, pix, batch, out, &err); /* warm-up: workspace, page faults */
  double t[32];
  for (int r = 0; r < iters; r++) {
    double t0 = now();
    if (clip_encode_image(m, pix, batch, out, &err)) {
      fprintf(stderr, "bench_vit: %s\n", err.msg);
      return 1;
    }
    t[r] = now() - t0;
  }
  double fwd_best = t[0];
  for (int r = 1; r < iters; r++) fwd_best = t[r] < fwd_best ? t[r] : fwd_best;
  double fwd = median(t, iters);

  /* FLOPs and the sgemm-only time of the same GEMMs. */
  const double N = (double)batch * T;
  double flops = 2.0 * batch * G * G * 3 * P * P * W +
                 L * (2.0 * N * W * W * 4 + 2.0 * N * W * Mw * 2 + 2.0 * 2 * batch * T * T * W) +
                 2.0 * batch * W * E;
  int reps = roofline ? 5 : 0;
  double gemm = 1e30;
  if (roofline && !bf16) {
    gemm = time_gemm(batch * G * G, W, 3 * P * P, reps);
    double g_qkvo = time_gemm(batch * T, W, W, reps), g_fc1 = time_gemm(batch * T, Mw, W, reps);
    double g_fc2 = time_gemm(batch * T, W, Mw, reps);
    double g_att = time_attention_gemms(batch, H, T, W / H, reps);
    gemm += L * (4 * g_qkvo + g_fc1 + g_fc2 + g_att) + time_gemm(batch, E, W, reps);
  } else if (roofline) { /* the model's own BF16 GEMMs (q, k, v, out separately as it runs them) */
    gemm = time_bf16_linear(be, batch * G * G, W, 3 * P * P, reps);
    double g_qkvo = time_bf16_linear(be, batch * T, W, W, reps);
    double g_fc1 = time_bf16_linear(be, batch * T, Mw, W, reps);
    double g_fc2 = time_bf16_linear(be, batch * T, W, Mw, reps);
    double g_att = time_attention_gemms(batch, H, T, W / H, reps);
    gemm += L * (4 * g_qkvo + g_fc1 + g_fc2 + g_att) + time_bf16_linear(be, batch, E, W, reps);
  }

  printf("{\"impl\": \"taca-c\", \"arch\": \"%s\", \"batch\": %d, \"threads\": %d, "
         "\"precision\": \"%s\", \"gemm_impl\": \"%s\", \"cpu_isa\": \"%s\", "
         "\"images_per_s\": %.3f, \"best_images_per_s\": %.3f, \"gflop_per_image\": %.2f, \"gflops\": %.1f, "
         "\"sgemm_s_per_batch\": %.4f, \"roofline_images_per_s\": %.3f, \"fraction_of_roofline\": %.3f}\n",
         arch, batch, omp_get_max_threads(), nn_precision_name(precision),
         bf16 ? nn_backend_cpu_bf16_impl() : "OpenBLAS sgemm", nn_backend_cpu_isa(), batch / fwd, batch / fwd_best,
         flops / batch * 1e-9, flops / fwd * 1e-9, gemm, batch / gemm, gemm / fwd);
  free(pix);
  free(out);
  clip_model_free(m);
  nn_backend_destroy(be);
  return 0;
}
