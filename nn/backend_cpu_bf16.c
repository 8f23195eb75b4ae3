/* backend_cpu_bf16.c: the CPU backend's BF16 matrix multiplies (backend.h, bf16_register): the
 * registry of weight regions converted once to BF16, and the GEMMs on them with F32 accumulation,
 * through oneDNN's matmul (the engine PyTorch's autocast uses on the CPU; it picks AMX, AVX512-BF16
 * or AVX-512 kernels by the CPU at run time) or, where oneDNN has no BF16 matmul (no AVX-512, or a
 * build without libdnnl), a portable path with the same arithmetic: the activation operand rounded
 * to BF16, the weights expanded from BF16 to F32, the product by the F32 sgemm of backend_cpu.c
 * (a product of two BF16 numbers is exact in F32, so only the order of the F32 sums differs).
 *
 * Compiled twice with backend_cpu.c (backend_cpu_impl.h): the conversion loops vectorise for each
 * ISA; the oneDNN calls are the same in both. oneDNN uses the same OpenMP runtime (libgomp) as the
 * rest of the backend, with the backend's thread count set around each call; it runs on the calling
 * thread's team, never beside another parallel region of ours. */
#include <omp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifdef TACA_HAVE_DNNL
#include <oneapi/dnnl/dnnl.h>
#endif

#include "nn/backend.h"
#include "nn/backend_cpu_impl.h"

#define MM_CACHE 64 /* matmul primitives kept per backend (shapes of one or two models) */

typedef struct bf16_region {
  uintptr_t w; /* the F32 region's address */
  size_t n;    /* floats */
  uint16_t *h; /* its BF16 copy */
} bf16_region;

#ifdef TACA_HAVE_DNNL
typedef struct mm_key {
  int M, K, N, wt, ldc, bias, acc; /* wt: weights stored [N, K] (forward) rather than [K, N] */
} mm_key;

typedef struct mm_entry {
  mm_key key;
  dnnl_primitive_t prim;
  dnnl_memory_t src, wei, bias, dst;
} mm_entry;
#endif

struct cpu_bf16 {
  bf16_region *r; /* sorted by address, disjoint */
  int nr, cap;
  uint16_t *act;  /* the activation operand in BF16 */
  size_t cap_act;
  float *fa, *fw; /* portable path: rounded activations, expanded weights; oneDNN: a strided
                   * output's dense product */
  size_t cap_fa, cap_fw;
  int dnnl; /* 1: oneDNN matmul in use, -1: portable, 0: not decided yet */
#ifdef TACA_HAVE_DNNL
  dnnl_engine_t eng;
  dnnl_stream_t st;
  mm_entry cache[MM_CACHE];
  int ncache, next_evict;
#endif
};

static struct cpu_bf16 *bf16_state(nn_backend *be, int create) {
  cpu_impl *impl = be->impl;
  if (!impl->bf16 && create) impl->bf16 = calloc(1, sizeof *impl->bf16);
  return impl->bf16;
}

/* Round to nearest even; NaN stays NaN (quiet). Branch-free so that the loops vectorise. */
static inline uint16_t bf16_round(float f) {
  uint32_t u;
  memcpy(&u, &f, sizeof u);
  uint32_t r = (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
  uint32_t q = (u >> 16) | 0x40u;
  return (uint16_t)((u & 0x7fffffffu) > 0x7f800000u ? q : r);
}

static inline float bf16_widen(uint16_t h) {
  uint32_t u = (uint32_t)h << 16;
  float f;
  memcpy(&f, &u, sizeof f);
  return f;
}

int cpu_bf16_register(nn_backend *be, const float *w, size_t n, taca_error *err) {
  struct cpu_bf16 *s = bf16_state(be, 1);
  if (!s) return taca_fail(err, "out of memory for the BF16 weight registry");
  const uintptr_t a = (uintptr_t)w;
  int lo = 0, hi = s->nr;
  while (lo < hi) { /* first region at or after a */
    int mid = (lo + hi) / 2;
    if (s->r[mid].w < a) lo = mid + 1;
    else hi = mid;
  }
  if (lo < s->nr && s->r[lo].w == a && s->r[lo].n == n) return 0;
  if ((lo < s->nr && s->r[lo].w < a + n * sizeof(float)) ||
      (lo > 0 && s->r[lo - 1].w + s->r[lo - 1].n * sizeof(float) > a))
    return taca_fail(err, "BF16 weight region at %p overlaps one registered before", (void *)w);
  if (s->nr == s->cap) {
    int cap = s->cap ? 2 * s->cap : 64;
    bf16_region *r = realloc(s->r, sizeof *r * cap);
    if (!r) return taca_fail(err, "out of memory for the BF16 weight registry");
    s->r = r;
    s->cap = cap;
  }
  void *hp = NULL;
  if (posix_memalign(&hp, 64, sizeof(uint16_t) * (n ? n : 1))) hp = NULL;
  uint16_t *h = hp;
  if (!h) return taca_fail(err, "out of memory converting %zu weights to BF16", n);
#pragma omp parallel for simd schedule(static) num_threads(((cpu_impl *)be->impl)->threads)
  for (size_t i = 0; i < n; i++) h[i] = bf16_round(w[i]);
  memmove(s->r + lo + 1, s->r + lo, sizeof *s->r * (s->nr - lo));
  s->r[lo] = (bf16_region){a, n, h};
  s->nr++;
  return 0;
}

void cpu_bf16_unregister(nn_backend *be, const float *w) {
  struct cpu_bf16 *s = bf16_state(be, 0);
  if (!s) return;
  for (int i = 0; i < s->nr; i++) {
    if (s->r[i].w != (uintptr_t)w) continue;
    free(s->r[i].h);
    memmove(s->r + i, s->r + i + 1, sizeof *s->r * (s->nr - i - 1));
    s->nr--;
    return;
  }
}

/* The BF16 copy of W[rows, cols] when it lies wholly inside a registered region, else NULL. */
const uint16_t *cpu_bf16_find(nn_backend *be, const float *w, size_t rows, size_t cols) {
  struct cpu_bf16 *s = ((cpu_impl *)be->impl)->bf16;
  if (!s || !s->nr) return NULL;
  const uintptr_t a = (uintptr_t)w;
  int lo = 0, hi = s->nr;
  while (lo < hi) { /* last region starting at or before a */
    int mid = (lo + hi) / 2;
    if (s->r[mid].w <= a) lo = mid + 1;
    else hi = mid;
  }
  if (lo == 0) return NULL;
  const bf16_region *r = &s->r[lo - 1];
  const size_t off = (a - r->w) / sizeof(float);
  if (off + rows * cols > r->n) return NULL;
  return r->h + off;
}

static int bf16_grow(nn_backend *be, void **p, size_t *cap, size_t bytes) {
  if (bytes <= *cap) return 0;
  (void)be;
  free(*p);
  if (posix_memalign(p, 64, bytes)) *p = NULL;
  *cap = *p ? bytes : 0;
  return *p ? 0 : -1;
}

/* dst[M, K] (contiguous BF16) = src[M, K] (row stride lds) rounded. */
static void bf16_rows(int nt, uint16_t *dst, const float *src, int lds, int M, int K) {
#pragma omp parallel for schedule(static) num_threads(nt) if ((size_t)M * K >= 65536)
  for (int m = 0; m < M; m++) {
    const float *restrict x = src + (size_t)m * lds;
    uint16_t *restrict o = dst + (size_t)m * K;
#pragma omp simd
    for (int k = 0; k < K; k++) o[k] = bf16_round(x[k]);
  }
}

/* ---- oneDNN ---- */
#ifdef TACA_HAVE_DNNL
static void bf16_mm_free(mm_entry *e) {
  if (e->prim) dnnl_primitive_destroy(e->prim);
  if (e->src) dnnl_memory_destroy(e->src);
  if (e->wei) dnnl_memory_destroy(e->wei);
  if (e->bias) dnnl_memory_destroy(e->bias);
  if (e->dst) dnnl_memory_destroy(e->dst);
  memset(e, 0, sizeof *e);
}

/* Creates the primitive of k (src [M, K] bf16 dense; weights [K, N] bf16, stored [N, K] when wt;
 * bias [1, N] f32; dst [M, N] f32 row stride ldc, += when acc). 0, or -1 when oneDNN has none. */
static int bf16_mm_create(struct cpu_bf16 *s, const mm_key *k, mm_entry *e, char *impl, size_t impl_n) {
  dnnl_memory_desc_t sd, wd, bd, dd;
  dnnl_dims_t sdim = {k->M, k->K}, sstr = {k->K, 1};
  dnnl_dims_t wdim = {k->K, k->N}, wstr_t = {1, k->K}, wstr = {k->N, 1};
  dnnl_dims_t bdim = {1, k->N}, bstr = {k->N, 1};
  dnnl_dims_t ddim = {k->M, k->N}, dstr = {k->ldc, 1};
  if (dnnl_memory_desc_init_by_strides(&sd, 2, sdim, dnnl_bf16, sstr) ||
      dnnl_memory_desc_init_by_strides(&wd, 2, wdim, dnnl_bf16, k->wt ? wstr_t : wstr) ||
      dnnl_memory_desc_init_by_strides(&bd, 2, bdim, dnnl_f32, bstr) ||
      dnnl_memory_desc_init_by_strides(&dd, 2, ddim, dnnl_f32, dstr))
    return -1;
  dnnl_matmul_desc_t md;
  if (dnnl_matmul_desc_init(&md, &sd, &wd, k->bias ? &bd : NULL, &dd)) return -1;
  dnnl_primitive_attr_t attr = NULL;
  dnnl_post_ops_t po = NULL;
  if (dnnl_primitive_attr_create(&attr)) return -1;
  if (k->acc && (dnnl_post_ops_create(&po) || dnnl_post_ops_append_sum(po, 1.0f) ||
                 dnnl_primitive_attr_set_post_ops(attr, po))) {
    if (po) dnnl_post_ops_destroy(po);
    dnnl_primitive_attr_destroy(attr);
    return -1;
  }
  dnnl_primitive_desc_t pd = NULL;
  dnnl_status_t st = dnnl_primitive_desc_create(&pd, &md, attr, s->eng, NULL);
  if (po) dnnl_post_ops_destroy(po);
  dnnl_primitive_attr_destroy(attr);
  if (st != dnnl_success) return -1;
  int rc = -1;
  memset(e, 0, sizeof *e);
  e->key = *k;
  /* oneDNN's reference matmul (its answer where no JIT kernel fits) is far slower than sgemm:
   * the portable path is used instead. */
  const char *name = NULL;
  dnnl_primitive_desc_query(pd, dnnl_query_impl_info_str, 0, &name);
  if (impl && name) snprintf(impl, impl_n, "%s", name);
  if (name && strncmp(name, "ref", 3) != 0 && dnnl_primitive_create(&e->prim, pd) == dnnl_success &&
      !dnnl_memory_create(&e->src, &sd, s->eng, DNNL_MEMORY_NONE) &&
      !dnnl_memory_create(&e->wei, &wd, s->eng, DNNL_MEMORY_NONE) &&
      !dnnl_memory_create(&e->dst, &dd, s->eng, DNNL_MEMORY_NONE) &&
      (!k->bias || !dnnl_memory_create(&e->bias, &bd, s->eng, DNNL_MEMORY_NONE)))
    rc = 0;
  dnnl_primitive_desc_destroy(pd);
  if (rc) bf16_mm_free(e);
  return rc;
}

static mm_entry *bf16_mm_get(struct cpu_bf16 *s, const mm_key *k) {
  for (int i = 0; i < s->ncache; i++)
    if (!memcmp(&s->cache[i].key, k, sizeof *k)) return &s->cache[i];
  mm_entry *e;
  if (s->ncache < MM_CACHE) {
    e = &s->cache[s->ncache++];
  } else {
    e = &s->cache[s->next_evict];
    s->next_evict = (s->next_evict + 1) % MM_CACHE;
    bf16_mm_free(e);
  }
  if (bf16_mm_create(s, k, e, NULL, 0)) {
    /* keep the slot empty (a key no call has: M = 0) */
    memset(e, 0, sizeof *e);
    return NULL;
  }
  return e;
}

/* dst (+)= src . op(wei) (+ bias) through oneDNN; 0, or -1 when oneDNN cannot (the caller falls
 * back to the portable path, for this and every later call on this backend). */
static int bf16_mm_run(nn_backend *be, struct cpu_bf16 *s, const mm_key *k, const uint16_t *src,
                  const uint16_t *wei, const float *bias, float *dst) {
  if (s->dnnl < 0) return -1;
  const int nt = ((cpu_impl *)be->impl)->threads, saved = omp_get_max_threads();
  if (nt != saved) omp_set_num_threads(nt);
  int rc = -1;
  if (!s->eng) {
    if (dnnl_engine_create(&s->eng, dnnl_cpu, 0) ||
        dnnl_stream_create(&s->st, s->eng, dnnl_stream_default_flags))
      goto out;
  }
  mm_entry *e = bf16_mm_get(s, k);
  if (!e) goto out;
  dnnl_memory_set_data_handle(e->src, (void *)src);
  dnnl_memory_set_data_handle(e->wei, (void *)wei);
  dnnl_memory_set_data_handle(e->dst, dst);
  dnnl_exec_arg_t args[4] = {{DNNL_ARG_SRC, e->src}, {DNNL_ARG_WEIGHTS, e->wei},
                             {DNNL_ARG_DST, e->dst}, {DNNL_ARG_BIAS, e->bias}};
  if (k->bias) dnnl_memory_set_data_handle(e->bias, (void *)bias);
  if (dnnl_primitive_execute(e->prim, s->st, k->bias ? 4 : 3, args) || dnnl_stream_wait(s->st))
    goto out;
  rc = 0;
out:
  if (nt != saved) omp_set_num_threads(saved);
  if (rc) s->dnnl = -1;
  else s->dnnl = 1;
  return rc;
}

static void bf16_dnnl_free(struct cpu_bf16 *s) {
  for (int i = 0; i < s->ncache; i++) bf16_mm_free(&s->cache[i]);
  if (s->st) dnnl_stream_destroy(s->st);
  if (s->eng) dnnl_engine_destroy(s->eng);
}
#endif

static int bf16_portable_forced(void) {
  const char *f = getenv("TACA_BF16_GEMM");
  return f && !strcmp(f, "portable");
}

/* out (+)= round(inp) . W^T + bias on W's BF16 copy h. */
void cpu_bf16_linear_forward(nn_backend *be, float *out, int ldo, const float *inp, int ldi,
                             const uint16_t *h, const float *bias, int N, int C, int OC,
                             int accumulate) {
  struct cpu_bf16 *s = ((cpu_impl *)be->impl)->bf16;
  const int nt = ((cpu_impl *)be->impl)->threads;
  if (!s->dnnl && bf16_portable_forced()) s->dnnl = -1;
#ifdef TACA_HAVE_DNNL
  if (s->dnnl >= 0 && !bf16_grow(be, (void **)&s->act, &s->cap_act, sizeof(uint16_t) * N * C)) {
    bf16_rows(nt, s->act, inp, ldi, N, C);
    if (ldo == OC) {
      mm_key k = {N, C, OC, 1, ldo, bias != NULL, accumulate != 0};
      if (!bf16_mm_run(be, s, &k, s->act, h, bias, out)) return;
    } else if (!bf16_grow(be, (void **)&s->fa, &s->cap_fa, sizeof(float) * N * OC)) {
      /* A strided output (one of q | k | v): oneDNN 2.6 runs those on its slower gemm:jit
       * (measured 64 against 91 GFLOP/s for ViT-B/16's [1576, 768] x [768, 768]), so the product
       * goes to a dense buffer through brgemm and is copied (and added) into place. */
      mm_key k = {N, C, OC, 1, OC, bias != NULL, 0};
      if (!bf16_mm_run(be, s, &k, s->act, h, bias, s->fa)) {
        const float *tmp = s->fa;
#pragma omp parallel for schedule(static) num_threads(nt) if ((size_t)N * OC >= 65536)
        for (int n = 0; n < N; n++) {
          float *restrict o = out + (size_t)n * ldo;
          const float *restrict x = tmp + (size_t)n * OC;
          if (accumulate) {
#pragma omp simd
            for (int j = 0; j < OC; j++) o[j] += x[j];
          } else {
            memcpy(o, x, sizeof(float) * OC);
          }
        }
        return;
      }
    }
  }
#endif
  s->dnnl = -1;
  /* Portable: the same products in F32 (exact), summed by sgemm. */
  if (bf16_grow(be, (void **)&s->fa, &s->cap_fa, sizeof(float) * N * C) ||
      bf16_grow(be, (void **)&s->fw, &s->cap_fw, sizeof(float) * OC * C)) {
    fprintf(stderr, "taca: out of memory for a BF16 GEMM of %d x %d x %d\n", N, C, OC);
    abort();
  }
#pragma omp parallel for schedule(static) num_threads(nt)
  for (int n = 0; n < N; n++) {
    const float *restrict x = inp + (size_t)n * ldi;
    float *restrict o = s->fa + (size_t)n * C;
#pragma omp simd
    for (int c = 0; c < C; c++) o[c] = bf16_widen(bf16_round(x[c]));
  }
  const size_t nw = (size_t)OC * C;
#pragma omp parallel for simd schedule(static) num_threads(nt)
  for (size_t i = 0; i < nw; i++) s->fw[i] = bf16_widen(h[i]);
  cpu_linear_forward_f32(be, out, ldo, s->fa, C, s->fw, bias, N, C, OC, accumulate);
}

/* dinp[N, C] (+)= round(dout[N, OC]) . W[OC, C] on W's BF16 copy h. */
void cpu_bf16_linear_dinp(nn_backend *be, float *dinp, int lddi, const float *dout, int ldd,
                          const uint16_t *h, int N, int C, int OC, int accumulate) {
  struct cpu_bf16 *s = ((cpu_impl *)be->impl)->bf16;
  const int nt = ((cpu_impl *)be->impl)->threads;
  if (!s->dnnl && bf16_portable_forced()) s->dnnl = -1;
#ifdef TACA_HAVE_DNNL
  if (s->dnnl >= 0 && !bf16_grow(be, (void **)&s->act, &s->cap_act, sizeof(uint16_t) * N * OC)) {
    bf16_rows(nt, s->act, dout, ldd, N, OC);
    mm_key k = {N, OC, C, 0, lddi, 0, accumulate != 0};
    if (!bf16_mm_run(be, s, &k, s->act, h, NULL, dinp)) return;
  }
#endif
  s->dnnl = -1;
  if (bf16_grow(be, (void **)&s->fa, &s->cap_fa, sizeof(float) * N * OC) ||
      bf16_grow(be, (void **)&s->fw, &s->cap_fw, sizeof(float) * OC * C)) {
    fprintf(stderr, "taca: out of memory for a BF16 GEMM of %d x %d x %d\n", N, OC, C);
    abort();
  }
#pragma omp parallel for schedule(static) num_threads(nt)
  for (int n = 0; n < N; n++) {
    const float *restrict x = dout + (size_t)n * ldd;
    float *restrict o = s->fa + (size_t)n * OC;
#pragma omp simd
    for (int c = 0; c < OC; c++) o[c] = bf16_widen(bf16_round(x[c]));
  }
  const size_t nw = (size_t)OC * C;
#pragma omp parallel for simd schedule(static) num_threads(nt)
  for (size_t i = 0; i < nw; i++) s->fw[i] = bf16_widen(h[i]);
  cpu_linear_backward(be, dinp, lddi, NULL, NULL, s->fa, OC, NULL, 0, s->fw, N, C, OC, accumulate);
}

void cpu_bf16_destroy(nn_backend *be) {
  struct cpu_bf16 *s = ((cpu_impl *)be->impl)->bf16;
  if (!s) return;
  for (int i = 0; i < s->nr; i++) free(s->r[i].h);
  free(s->r);
  free(s->act);
  free(s->fa);
  free(s->fw);
#ifdef TACA_HAVE_DNNL
  bf16_dnnl_free(s);
#endif
  free(s);
  ((cpu_impl *)be->impl)->bf16 = NULL;
}

/* What a BF16 GEMM runs on here (backend.h, nn_backend_cpu_bf16_impl): a probe primitive. */
void cpu_bf16_probe(char *buf, size_t n) {
  snprintf(buf, n, "portable");
  if (bf16_portable_forced()) return;
#ifdef TACA_HAVE_DNNL
  struct cpu_bf16 s = {0};
  if (dnnl_engine_create(&s.eng, dnnl_cpu, 0)) return;
  mm_key k = {64, 768, 768, 1, 768, 1, 0};
  mm_entry e = {0};
  char impl[64];
  if (!bf16_mm_create(&s, &k, &e, impl, sizeof impl)) snprintf(buf, n, "oneDNN %s", impl);
  bf16_mm_free(&e);
  dnnl_engine_destroy(s.eng);
#endif
}
