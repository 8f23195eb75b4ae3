/* exact.c: exact top-k search over one model's stored embeddings. The blocks are scanned in
 * parallel (OpenMP over blocks). For up to 4 queries on F16 (x86 with AVX2/F16C/FMA, detected at
 * run time: the kernels are compiled for that target alone and named *_avx2, the rest of the file
 * for the portable baseline) each thread scores a block straight from the map with a fused
 * widen-and-dot kernel (the scan is memory-bound);
 * otherwise it widens the block to F32 in its own scratch buffer and scores it against all queries
 * with one OpenBLAS call (sgemv for one query, sgemm for several; compute-bound). Each thread keeps
 * a bounded heap per query; the heaps are merged at the end. Ordering is total (score descending,
 * then index ascending), so results do not depend on the thread count. */
#include "search/search.h"

#include <string.h>

#include <cblas.h>
#include <math.h>
#include <omp.h>
#include <pthread.h>
#include <stdlib.h>
#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define HAVE_F16_DOT 1
#define SMALL_NQ 4
#define AVX2_TARGET __attribute__((target("avx2,fma,f16c")))

/* 1 where the CPU runs the *_avx2 kernels below. */
static int cpu_has_avx2_f16c(void) {
  static int have = -1;
  if (have < 0) {
    __builtin_cpu_init();
    have = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c");
  }
  return have;
}
#endif

#define MAX_QUERIES 65536
#define MAX_HEAP_BYTES ((size_t)2 << 30)

/* Row r of a block is stored iff bit r of its bitmap is set (store.h, store_block). */
static inline int block_row_valid(const uint8_t *bitmap, int r) { return (bitmap[r >> 3] >> (r & 7)) & 1; }

typedef struct hit {
  float s;
  int64_t i;
} hit;

/* a is a better result than b */
static inline int better(float as, int64_t ai, float bs, int64_t bi) { return as > bs || (as == bs && ai < bi); }

/* Heaps keep their worst entry at the root (h[0]). */
static void sift_up(hit *h, int c) {
  while (c > 0) {
    int p = (c - 1) / 2;
    if (!better(h[p].s, h[p].i, h[c].s, h[c].i)) break;
    hit tmp = h[p];
    h[p] = h[c];
    h[c] = tmp;
    c = p;
  }
}

static void sift_down(hit *h, int n, int p) {
  for (;;) {
    int l = 2 * p + 1, r = l + 1, w = p;
    if (l < n && better(h[w].s, h[w].i, h[l].s, h[l].i)) w = l;
    if (r < n && better(h[w].s, h[w].i, h[r].s, h[r].i)) w = r;
    if (w == p) return;
    hit tmp = h[p];
    h[p] = h[w];
    h[w] = tmp;
    p = w;
  }
}

static inline void heap_offer(hit *h, int *n, int cap, float s, int64_t i) {
  if (*n < cap) {
    h[*n] = (hit){s, i};
    sift_up(h, (*n)++);
  } else if (better(s, i, h[0].s, h[0].i)) {
    h[0] = (hit){s, i};
    sift_down(h, *n, 0);
  }
}

/* OpenBLAS must not start its own threads inside our OpenMP threads; the setting is process-wide,
 * so concurrent searches share one "single-threaded" period. */
static pthread_mutex_t blas_mu = PTHREAD_MUTEX_INITIALIZER;
static int blas_users, blas_saved;

static void blas_single_begin(void) {
  pthread_mutex_lock(&blas_mu);
  if (blas_users++ == 0) {
    blas_saved = openblas_get_num_threads();
    openblas_set_num_threads(1);
  }
  pthread_mutex_unlock(&blas_mu);
}

static void blas_single_end(void) {
  pthread_mutex_lock(&blas_mu);
  if (--blas_users == 0) openblas_set_num_threads(blas_saved);
  pthread_mutex_unlock(&blas_mu);
}

#ifdef HAVE_F16_DOT
/* F16 -> F32 with F16C, 8 at a time (exact, as taca_convert_to_f32). Returns how many it did. */
AVX2_TARGET static size_t f16_to_f32_avx2(float *dst, const uint8_t *src, size_t n) {
  size_t i = 0;
  for (; i + 8 <= n; i += 8)
    _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(src + 2 * i))));
  return i;
}
#endif

static void f16_to_f32(float *dst, const uint8_t *src, size_t n) {
  size_t i = 0;
#ifdef HAVE_F16_DOT
  if (cpu_has_avx2_f16c()) i = f16_to_f32_avx2(dst, src, n);
#endif
  if (i < n) taca_convert_to_f32(dst + i, src + 2 * i, TACA_DT_F16, n - i);
}

#ifdef HAVE_F16_DOT
AVX2_TARGET static inline float hsum_avx2(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

/* For a few queries the block is scored straight from F16 (no F32 copy of the block): s[qi*B + r] =
 * q_qi . x_r, and inv[r] = 1/|x_r| (0 for a zero row) when inv is not NULL. */
AVX2_TARGET static void f16_scores_small_avx2(const uint8_t *x, int B, int dim, const float *q, int nq, float *s,
                                               float *inv) {
  for (int r = 0; r < B; r++) {
    const uint8_t *row = x + (size_t)r * dim * 2;
    float dot[SMALL_NQ] = {0}, nn = 0;
    int j = 0;
    if (nq == 1) {  /* four independent chains hide the FMA latency */
      __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0, n0 = a0, n1 = a0;
      for (; j + 32 <= dim; j += 32) {
        __m256 x0 = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(row + 2 * j)));
        __m256 x1 = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(row + 2 * j + 16)));
        __m256 x2 = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(row + 2 * j + 32)));
        __m256 x3 = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(row + 2 * j + 48)));
        a0 = _mm256_fmadd_ps(x0, _mm256_loadu_ps(q + j), a0);
        a1 = _mm256_fmadd_ps(x1, _mm256_loadu_ps(q + j + 8), a1);
        a2 = _mm256_fmadd_ps(x2, _mm256_loadu_ps(q + j + 16), a2);
        a3 = _mm256_fmadd_ps(x3, _mm256_loadu_ps(q + j + 24), a3);
        if (inv) {
          n0 = _mm256_fmadd_ps(x0, x0, _mm256_fmadd_ps(x1, x1, n0));
          n1 = _mm256_fmadd_ps(x2, x2, _mm256_fmadd_ps(x3, x3, n1));
        }
      }
      dot[0] = hsum_avx2(_mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3)));
      nn = hsum_avx2(_mm256_add_ps(n0, n1));
    }
    __m256 acc[SMALL_NQ], n8 = _mm256_setzero_ps();
    for (int qi = 0; qi < nq; qi++) acc[qi] = _mm256_setzero_ps();
    for (; j + 8 <= dim; j += 8) {
      __m256 xv = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(row + 2 * j)));
      for (int qi = 0; qi < nq; qi++) acc[qi] = _mm256_fmadd_ps(xv, _mm256_loadu_ps(q + (size_t)qi * dim + j), acc[qi]);
      if (inv) n8 = _mm256_fmadd_ps(xv, xv, n8);
    }
    for (int qi = 0; qi < nq; qi++) dot[qi] += hsum_avx2(acc[qi]);
    nn += hsum_avx2(n8);
    for (; j < dim; j++) {
      uint16_t h;
      memcpy(&h, row + 2 * j, 2);
      float xv = taca_f16_to_f32(h);
      for (int qi = 0; qi < nq; qi++) dot[qi] += xv * q[(size_t)qi * dim + j];
      nn += xv * xv;
    }
    for (int qi = 0; qi < nq; qi++) s[(size_t)qi * B + r] = dot[qi];
    if (inv) inv[r] = nn > 0.0f ? 1.0f / sqrtf(nn) : 0.0f;
  }
}
#endif

typedef struct blk {
  uint64_t first;
  uint32_t count;
  const uint8_t *bitmap;
  const uint8_t *data;
} blk;

typedef struct collect {
  blk *b;
  size_t n, cap;
  uint64_t total;
  int oom;
} collect;

static int collect_block(const store_block *b, void *ctx) {
  collect *c = ctx;
  uint32_t count = 0;
  for (int r = 0; r < (b->size + 7) / 8; r++) count += (uint32_t)__builtin_popcount(b->bitmap[r]);
  if (count == 0) return 0;
  if (c->n == c->cap) {
    size_t cap = c->cap ? 2 * c->cap : 1024;
    blk *nb = realloc(c->b, cap * sizeof *nb);
    if (!nb) {
      c->oom = 1;
      return 1;
    }
    c->b = nb;
    c->cap = cap;
  }
  c->b[c->n++] = (blk){b->first_index, count, b->bitmap, b->data};
  c->total += count;
  return 0;
}

typedef struct scratch {
  float *x;     /* B x dim */
  float *s;     /* nq x B */
  float *inv;   /* B: 1/|row| for cosine */
  hit *h;       /* nq x kk */
  int *hn;      /* nq */
} scratch;

static void scratch_free(scratch *sc) {
  free(sc->x);
  free(sc->s);
  free(sc->inv);
  free(sc->h);
  free(sc->hn);
}

static inline int skipped(const search_skip *sk, uint64_t i) {
  if (!sk || i < sk->base || i - sk->base >= sk->len) return 0;
  uint64_t o = i - sk->base;
  return (sk->bits[o >> 3] >> (o & 7)) & 1;
}

static void score_block(const blk *b, const store_model *m, int dim, const float *q, int nq, int kk, int cosine,
                        const search_skip *sk, scratch *sc) {
  int B = m->block_size;
  size_t n = (size_t)B * dim;
  int full = b->count == (uint32_t)B;
#ifdef HAVE_F16_DOT
  if (m->dtype == TACA_DT_F16 && nq <= SMALL_NQ && cpu_has_avx2_f16c()) {
    f16_scores_small_avx2(b->data, B, dim, q, nq, sc->s, cosine ? sc->inv : NULL);
  } else
#endif
  {
    const float *x = sc->x;
    if (m->dtype == TACA_DT_F16) f16_to_f32(sc->x, b->data, n);
    else if (((uintptr_t)b->data & 3) == 0) x = (const float *)b->data;
    else memcpy(sc->x, b->data, n * sizeof(float));
    if (nq == 1) cblas_sgemv(CblasRowMajor, CblasNoTrans, B, dim, 1.0f, x, dim, q, 1, 0.0f, sc->s, 1);
    else cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, nq, B, dim, 1.0f, q, dim, x, dim, 0.0f, sc->s, B);
    if (cosine)
      for (int r = 0; r < B; r++) {
        const float *row = x + (size_t)r * dim;
        float ss = 0.0f;
        for (int j = 0; j < dim; j++) ss += row[j] * row[j];
        sc->inv[r] = ss > 0.0f ? 1.0f / sqrtf(ss) : 0.0f;
      }
  }
  if (cosine) {
    for (int qi = 0; qi < nq; qi++) {
      float *s = sc->s + (size_t)qi * B;
      for (int r = 0; r < B; r++) s[r] *= sc->inv[r];
    }
  }
  for (int qi = 0; qi < nq; qi++) {
    hit *h = sc->h + (size_t)qi * kk;
    int n = sc->hn[qi];
    const float *s = sc->s + (size_t)qi * B;
    float thr = n == kk ? h[0].s : -INFINITY;  /* scores below the heap's worst cannot enter */
    for (int r = 0; r < B; r++) {
      float v = s[r];
      if (v < thr) continue;
      if (!full && !block_row_valid(b->bitmap, r)) continue;
      if (sk && skipped(sk, b->first + (uint64_t)r)) continue;
      if (v != v) v = -INFINITY;  /* NaN ranks last */
      heap_offer(h, &n, kk, v, (int64_t)(b->first + (uint64_t)r));
      if (n == kk) thr = h[0].s;
    }
    sc->hn[qi] = n;
  }
}

int store_search(store_view *v, int model, store_modality mod, const float *queries, int nq, int k, store_metric metric,
                 int64_t *out_index, float *out_score, taca_error *err) {
  return store_search_skip(v, model, mod, queries, nq, k, metric, NULL, out_index, out_score, err);
}

int store_search_skip(store_view *v, int model, store_modality mod, const float *queries, int nq, int k,
                      store_metric metric, const search_skip *skip, int64_t *out_index, float *out_score,
                      taca_error *err) {
  store_model mrec;
  if (store_get_model(v, model, &mrec, err)) return -1;
  if (mod != STORE_IMAGE && mod != STORE_TEXT) return taca_fail(err, "modality %d is not image (0) or text (1)", (int)mod);
  const store_model *m = &mrec;
  int dim = mod == STORE_IMAGE ? m->image_dim : m->text_dim;
  if (dim <= 0) return taca_fail(err, "model '%s' stores no %s embeddings", m->name, store_modality_name(mod));
  if (nq < 1 || nq > MAX_QUERIES) return taca_fail(err, "search: %d queries (need 1..%d)", nq, MAX_QUERIES);
  if (k < 1) return taca_fail(err, "search: k = %d (need k >= 1)", k);
  if (metric != STORE_METRIC_IP && metric != STORE_METRIC_COSINE)
    return taca_fail(err, "search: unknown metric %d", (int)metric);
  if (!queries || !out_index || !out_score) return taca_fail(err, "search: NULL buffer");
  for (size_t i = 0; i < (size_t)nq * dim; i++)
    if (!isfinite(queries[i]))
      return taca_fail(err, "search: query %zu has a non-finite value at element %zu", i / dim, i % dim);
  for (size_t i = 0; i < (size_t)nq * k; i++) {
    out_index[i] = -1;
    out_score[i] = -INFINITY;
  }

  collect c = {0};
  if (store_scan_blocks(v, model, mod, collect_block, &c, err)) {
    free(c.b);
    return -1;
  }
  if (c.oom) {
    free(c.b);
    return taca_fail(err, "search: out of memory listing blocks");
  }
  if (c.total == 0) {
    free(c.b);
    return 0;
  }
  int kk = (uint64_t)k < c.total ? k : (int)c.total;
  int T = omp_get_max_threads();
  if ((size_t)T > c.n) T = (int)c.n;
  if (T < 1) T = 1;
  if ((size_t)nq * kk * sizeof(hit) * T > MAX_HEAP_BYTES) {
    free(c.b);
    return taca_fail(err, "search: %d queries x k = %d need too much memory; lower k or split the queries", nq, kk);
  }

  int B = m->block_size, cosine = metric == STORE_METRIC_COSINE;
  float *q = malloc((size_t)nq * dim * sizeof(float));
  scratch *sc = calloc((size_t)T, sizeof *sc);
  int oom = !q || !sc;
  for (int t = 0; !oom && t < T; t++) {
    sc[t].x = malloc((size_t)B * dim * sizeof(float));
    sc[t].s = malloc((size_t)nq * B * sizeof(float));
    sc[t].inv = malloc((size_t)B * sizeof(float));
    sc[t].h = malloc((size_t)nq * kk * sizeof(hit));
    sc[t].hn = calloc((size_t)nq, sizeof(int));
    oom = !sc[t].x || !sc[t].s || !sc[t].inv || !sc[t].h || !sc[t].hn;
  }
  if (oom) {
    for (int t = 0; sc && t < T; t++) scratch_free(&sc[t]);
    free(sc);
    free(q);
    free(c.b);
    return taca_fail(err, "search: out of memory for %d queries x k = %d", nq, kk);
  }
  memcpy(q, queries, (size_t)nq * dim * sizeof(float));
  if (cosine)
    for (int i = 0; i < nq; i++) {
      float *row = q + (size_t)i * dim;
      double ss = 0;
      for (int j = 0; j < dim; j++) ss += (double)row[j] * row[j];
      double inv = ss > 0 ? 1.0 / sqrt(ss) : 0.0; /* in double: a tiny query's 1/|q| overflows a float */
      for (int j = 0; j < dim; j++) row[j] = (float)(row[j] * inv);
    }

  if (T > 1) blas_single_begin();
  size_t nblk = c.n;
#pragma omp parallel num_threads(T)
  {
    scratch *mine = &sc[omp_get_thread_num()];
#pragma omp for schedule(dynamic, 4)
    for (size_t b = 0; b < nblk; b++) score_block(&c.b[b], m, dim, q, nq, kk, cosine, skip, mine);
  }
  if (T > 1) blas_single_end();

  /* Merge every thread's heap into thread 0's, then pop worst-first into the output from the back. */
#pragma omp parallel for num_threads(T) schedule(static)
  for (int qi = 0; qi < nq; qi++) {
    hit *h = sc[0].h + (size_t)qi * kk;
    int n = sc[0].hn[qi];
    for (int t = 1; t < T; t++) {
      const hit *o = sc[t].h + (size_t)qi * kk;
      for (int j = 0; j < sc[t].hn[qi]; j++) heap_offer(h, &n, kk, o[j].s, o[j].i);
    }
    int64_t *oi = out_index + (size_t)qi * k;
    float *os = out_score + (size_t)qi * k;
    for (int pos = n - 1; pos >= 0; pos--) {
      oi[pos] = h[0].i;
      os[pos] = h[0].s;
      h[0] = h[pos];
      sift_down(h, pos, 0);
    }
  }

  for (int t = 0; t < T; t++) scratch_free(&sc[t]);
  free(sc);
  free(q);
  free(c.b);
  return 0;
}
