/* bench_util.h: timing helpers the CPU training benchmarks share (bench_train.c, bench_aft.c): a
 * monotonic clock, the median of repeated timings, and the sgemm roofline, i.e. the seconds the
 * step's own GEMM shapes take in OpenBLAS alone, with their FLOPs summed into a bench_roofline.
 * Header-only (static inline): bench/CMakeLists.txt builds one executable per *.c file.
 * BENCH_VERBOSE=1 in the environment prints each shape's time and GFLOP/s on stderr. */
#ifndef TACA_BENCH_UTIL_H
#define TACA_BENCH_UTIL_H

#include <cblas.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

void openblas_set_num_threads(int num_threads);
int openblas_get_num_threads(void);

static inline double bench_now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static inline int bench_cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

/* Median of v[0..n) (sorts v). */
static inline double bench_median(double *v, int n) {
  qsort(v, n, sizeof *v, bench_cmp_double);
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

/* The FLOPs of the GEMMs timed so far (2 M N K each, times their count). */
typedef struct bench_roofline {
  double flops;
} bench_roofline;

/* Median seconds of one row-major sgemm C[M,N] = op(A) op(B) (ta/tb: transposed operands) as the
 * step issues it, on all cores: the faster of OpenBLAS's own threading and a split over OpenMP
 * threads (by rows of C, or columns for few rows; one single-threaded sgemm each, as the backend
 * does), so the roofline is the best this BLAS does on the shape. Adds its FLOPs times count to
 * r->flops and returns count x seconds. Leaves OpenBLAS at one thread (as the CPU backend runs). */
static inline double bench_gemm(bench_roofline *r, int ta, int tb, int M, int N, int K, int count) {
  if (count <= 0 || M <= 0 || N <= 0 || K <= 0) return 0;
  float *a = malloc(sizeof(float) * M * K), *b = malloc(sizeof(float) * N * K),
        *c = calloc((size_t)M * N, sizeof(float));
  if (!a || !b || !c) {
    fprintf(stderr, "bench: out of memory for a %d x %d x %d sgemm\n", M, N, K);
    exit(1);
  }
  for (long i = 0; i < (long)M * K; i++) a[i] = (float)((i * 7 % 13) - 6) * 0.01f;
  for (long i = 0; i < (long)N * K; i++) b[i] = (float)((i * 5 % 11) - 5) * 0.01f;
  const int lda = ta ? M : K, ldb = tb ? K : N, nt = omp_get_max_threads();
  const CBLAS_TRANSPOSE opa = ta ? CblasTrans : CblasNoTrans, opb = tb ? CblasTrans : CblasNoTrans;
  double best = 1e30;
  for (int mode = 0; mode < 2; mode++) {
    openblas_set_num_threads(mode == 0 ? nt : 1);
    double t[5];
    for (int rep = -1; rep < 5; rep++) {
      double t0 = bench_now();
      if (mode == 0) {
        cblas_sgemm(CblasRowMajor, opa, opb, M, N, K, 1, a, lda, b, ldb, 0, c, N);
      } else {
        const int by_rows = M >= 16 * nt;
#pragma omp parallel num_threads(nt)
        {
          int i = omp_get_thread_num(), n = omp_get_num_threads(), len = by_rows ? M : N;
          int i0 = (int)((long)len * i / n), i1 = (int)((long)len * (i + 1) / n);
          if (by_rows)
            cblas_sgemm(CblasRowMajor, opa, opb, i1 - i0, N, K, 1, ta ? a + i0 : a + (size_t)i0 * lda,
                        lda, b, ldb, 0, c + (size_t)i0 * N, N);
          else
            cblas_sgemm(CblasRowMajor, opa, opb, M, i1 - i0, K, 1, a, lda,
                        tb ? b + (size_t)i0 * ldb : b + i0, ldb, 0, c + i0, N);
        }
      }
      if (rep >= 0) t[rep] = bench_now() - t0;
    }
    double m = bench_median(t, 5);
    if (m < best) best = m;
  }
  openblas_set_num_threads(1);
  free(a), free(b), free(c);
  r->flops += 2.0 * M * N * K * count;
  if (getenv("BENCH_VERBOSE"))
    fprintf(stderr, "  sgemm %c%c M %5d N %5d K %5d x%-2d %8.2f ms  %6.1f GFLOP/s\n", ta ? 'T' : 'N',
            tb ? 'T' : 'N', M, N, K, count, best * 1e3, 2.0 * M * N * K / best * 1e-9);
  return count * best;
}

/* Median seconds of one layer's attention GEMMs (forward: 2 per head; backward: 4 per head),
 * heads in parallel on OpenMP threads with one BLAS thread each, as the backend runs them. Adds
 * their FLOPs times count (layers) to r->flops and returns count x seconds. */
static inline double bench_attention_gemms(bench_roofline *r, int B, int H, int T, int hd, int bwd, int count) {
  if (count <= 0) return 0;
  const int threads = omp_get_max_threads();
  float *q = calloc((size_t)T * hd, sizeof(float)), *s = calloc((size_t)T * T * threads, sizeof(float));
  float *o = calloc((size_t)T * hd * threads, sizeof(float));
  if (!q || !s || !o) {
    fprintf(stderr, "bench: out of memory for the attention GEMMs\n");
    exit(1);
  }
  for (int i = 0; i < T * hd; i++) q[i] = (float)(i % 17) * 0.01f;
  double t[5];
  const int bt = openblas_get_num_threads();
  for (int rep = -1; rep < 5; rep++) {
    openblas_set_num_threads(1);
    double t0 = bench_now();
#pragma omp parallel for schedule(dynamic, 1)
    for (int p = 0; p < B * H; p++) {
      float *S = s + (size_t)omp_get_thread_num() * T * T, *O = o + (size_t)omp_get_thread_num() * T * hd;
      if (!bwd) {
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, T, T, hd, 1, q, hd, q, hd, 0, S, T);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, T, hd, T, 1, S, T, q, hd, 0, O, hd);
      } else {
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, T, hd, T, 1, S, T, q, hd, 0, O, hd);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, T, T, hd, 1, q, hd, q, hd, 0, S, T);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, T, hd, T, 1, S, T, q, hd, 0, O, hd);
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, T, hd, T, 1, S, T, q, hd, 0, O, hd);
      }
    }
    if (rep >= 0) t[rep] = bench_now() - t0;
    openblas_set_num_threads(bt);
  }
  free(q), free(s), free(o);
  const double flops = (bwd ? 4.0 : 2.0) * 2.0 * B * H * (double)T * T * hd;
  r->flops += flops * count;
  double med = bench_median(t, 5);
  if (getenv("BENCH_VERBOSE"))
    fprintf(stderr, "  attention %s x%-2d %8.2f ms  %6.1f GFLOP/s\n", bwd ? "backward" : "forward ", count,
            med * 1e3, flops / med * 1e-9);
  return count * med;
}

#endif
