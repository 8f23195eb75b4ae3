/* bench_search.c: exact top-k search over a store's F16 embeddings (store_search), the C side of
 * bench/bench_search.py, which runs faiss IndexFlatIP and numpy on the same vectors and prints both.
 *
 *   bench_search --dir DIR [--n 1000000] [--dim 512] [--reps 10] [--k 10] [--search-only]
 *
 * Fills DIR with a store of n random unit vectors (model "bench", F16, image modality), writes the same
 * vectors as DIR/base_f16.npy and 256 query vectors as DIR/queries.npy (F32), then times nq = 1 (reps
 * single queries) and nq = 256 with k results, writes the result indices to DIR/result_idx.npy
 * (nq = 256: int64 [256, k]) and DIR/result_idx_nq1.npy (the single queries: [reps, k]) and prints one JSON line with the figures. --search-only times
 * the search again on what an earlier run left in DIR. */
#include <inttypes.h>
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/npy.h"
#include "search/search.h"
#include "storage/store.h"

#define NQ 256

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static uint64_t rng = 0x9E3779B97F4A7C15ull;
static double uniform(void) {
  rng ^= rng << 13;
  rng ^= rng >> 7;
  rng ^= rng << 17;
  return ((rng >> 11) + 0.5) * (1.0 / 9007199254740992.0);
}

static void random_unit(float *v, int dim) {
  double ss = 0;
  for (int j = 0; j < dim; j += 2) {
    double r = sqrt(-2 * log(uniform())), t = 2 * M_PI * uniform();
    v[j] = (float)(r * cos(t));
    if (j + 1 < dim) v[j + 1] = (float)(r * sin(t));
  }
  for (int j = 0; j < dim; j++) ss += (double)v[j] * v[j];
  for (int j = 0; j < dim; j++) v[j] = (float)(v[j] / sqrt(ss));
}

static int die(const char *what, const taca_error *err) {
  fprintf(stderr, "bench_search: %s: %s\n", what, err->msg);
  return 1;
}

/* Writes the store, DIR/base_f16.npy (the same vectors) and DIR/queries.npy; *q gets the queries. */
static int generate(const char *dir, long n, long dim, float **q, taca_error *err) {
  char path[4200];
  taca_store *s;
  store_options opt = {.create = 1, .no_sync = 1};
  if (store_open(&s, dir, &opt, err)) return -1;
  const long chunk = 65536;
  uint16_t *base = malloc((size_t)n * dim * sizeof(uint16_t));
  float *buf = malloc((size_t)chunk * dim * sizeof(float));
  *q = malloc((size_t)NQ * dim * sizeof(float));
  int rc = base && buf && *q ? 0 : taca_fail(err, "out of memory");
  store_txn *t;
  int id;
  store_model m = {.image_dim = (int)dim, .dtype = TACA_DT_F16};
  strcpy(m.name, "bench");
  strcpy(m.arch, "random unit vectors");
  if (!rc && (store_txn_begin(s, &t, err) || store_register_model(t, &m, &id, err) || store_txn_commit(t, err)))
    rc = -1;
  for (long first = 0; !rc && first < n; first += chunk) {
    long cnt = n - first < chunk ? n - first : chunk;
    for (long i = 0; i < cnt; i++) {
      float *v = buf + (size_t)i * dim;
      random_unit(v, (int)dim);
      for (long j = 0; j < dim; j++) base[(size_t)(first + i) * dim + j] = taca_f32_to_f16(v[j]);
    }
    if (store_txn_begin(s, &t, err)) rc = -1;
    else if (store_put_embeddings(t, id, STORE_IMAGE, (uint64_t)first, (size_t)cnt, buf, err)) {
      store_txn_abort(t);
      rc = -1;
    } else if (store_txn_commit(t, err)) rc = -1;
  }
  int64_t shape[2] = {n, dim}, qshape[2] = {NQ, dim};
  snprintf(path, sizeof path, "%s/base_f16.npy", dir);
  if (!rc && npy_save(path, TACA_DT_F16, 2, shape, base, err)) rc = -1;
  for (int i = 0; !rc && i < NQ; i++) random_unit(*q + (size_t)i * dim, (int)dim);
  snprintf(path, sizeof path, "%s/queries.npy", dir);
  if (!rc && npy_save(path, TACA_DT_F32, 2, qshape, *q, err)) rc = -1;
  free(base);
  free(buf);
  store_close(s);
  return rc;
}

int main(int argc, char **argv) {
  const char *dir = NULL;
  long n = 1000000, dim = 512, reps = 10, k = 10;
  int search_only = 0;
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "--search-only")) search_only = 1;
    else if (!strcmp(argv[i], "--dir") && i + 1 < argc) dir = argv[++i];
    else if (!strcmp(argv[i], "--n") && i + 1 < argc) n = atol(argv[++i]);
    else if (!strcmp(argv[i], "--dim") && i + 1 < argc) dim = atol(argv[++i]);
    else if (!strcmp(argv[i], "--reps") && i + 1 < argc) reps = atol(argv[++i]);
    else if (!strcmp(argv[i], "--k") && i + 1 < argc) k = atol(argv[++i]);
    else {
      fprintf(stderr, "usage: bench_search --dir DIR [--n 1000000] [--dim 512] [--reps 10] [--k 10] [--search-only]\n");
      return 2;
    }
  }
  if (!dir || n < 1 || dim < 2 || dim > 4096 || reps < 1 || reps > NQ || k < 1) {
    fprintf(stderr, "bench_search: --dir is required; n >= 1, 2 <= dim <= 4096, 1 <= reps <= 256, k >= 1\n");
    return 2;
  }
  taca_error err = {{0}};
  char path[4200];

  double t0 = now(), t_gen = 0;
  int id = 0;  /* the only model */
  float *q = NULL;
  if (search_only) {
    npy_array qa;
    snprintf(path, sizeof path, "%s/queries.npy", dir);
    if (npy_load(path, &qa, &err)) return die("queries", &err);
    if (qa.dtype != TACA_DT_F32 || qa.ndim != 2 || qa.shape[0] != NQ || qa.shape[1] != dim)
      return die("queries", &(taca_error){"queries.npy is not F32 [256, dim]"});
    q = qa.data;  /* owned from here on */
  } else {
    if (generate(dir, n, dim, &q, &err)) return die("generate", &err);
    t_gen = now() - t0;
  }

  /* ---- time the search on a read-only reopen (as the server does) ---- */
  taca_store *s;
  store_options ro = {.readonly = 1};
  if (store_open(&s, dir, &ro, &err)) return die("reopen", &err);
  store_view *v;
  if (store_view_begin(s, &v, &err)) return die("view", &err);
  int64_t *idx = malloc((size_t)NQ * k * sizeof(int64_t));
  float *sc = malloc((size_t)NQ * k * sizeof(float));
  if (store_search(v, id, STORE_IMAGE, q, 1, (int)k, STORE_METRIC_IP, idx, sc, &err)) return die("warm-up", &err);
  double best1 = 1e30, sum1 = 0;
  int64_t *idx1 = malloc((size_t)reps * k * sizeof(int64_t));
  for (long r = 0; r < reps; r++) {
    double a = now();
    if (store_search(v, id, STORE_IMAGE, q + (size_t)r * dim, 1, (int)k, STORE_METRIC_IP, idx1 + r * k, sc, &err))
      return die("search nq=1", &err);
    double d = now() - a;
    sum1 += d;
    if (d < best1) best1 = d;
  }
  double best256 = 1e30;
  for (int r = 0; r < 2; r++) {
    double a = now();
    if (store_search(v, id, STORE_IMAGE, q, NQ, (int)k, STORE_METRIC_IP, idx, sc, &err)) return die("search nq=256", &err);
    double d = now() - a;
    if (d < best256) best256 = d;
  }
  snprintf(path, sizeof path, "%s/result_idx.npy", dir);
  int64_t rshape[2] = {NQ, k};
  if (npy_save(path, TACA_DT_I64, 2, rshape, idx, &err)) return die("save results", &err);
  snprintf(path, sizeof path, "%s/result_idx_nq1.npy", dir);
  int64_t r1shape[2] = {reps, k};
  if (npy_save(path, TACA_DT_I64, 2, r1shape, idx1, &err)) return die("save results", &err);
  free(idx1);
  double gb = (double)n * dim * 2 / 1e9;
  printf("taca store_search: n %ld dim %ld F16 (%.2f GB), %d threads", n, dim, gb, omp_get_max_threads());
  if (!search_only) printf("; generation+write %.1f s", t_gen);
  printf("\n");
  printf("  nq=1:   %.1f ms/query mean (best %.1f) = %.2f queries/s, scan %.1f GB/s\n", 1e3 * sum1 / reps, 1e3 * best1,
         reps / sum1, gb / (sum1 / reps));
  printf("  nq=256: %.3f s = %.1f queries/s\n", best256, NQ / best256);
  printf("{\"impl\": \"taca\", \"n\": %ld, \"dim\": %ld, \"threads\": %d, \"nq1_s\": %.6f, \"nq1_best_s\": %.6f, "
         "\"nq256_s\": %.6f}\n",
         n, dim, omp_get_max_threads(), sum1 / reps, best1, best256);
  store_view_end(v);
  store_close(s);
  free(idx);
  free(sc);
  free(q);
  return 0;
}
