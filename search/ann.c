/* ann.c: building, checking and searching a store's approximate indexes (see ann.h). */
#include "search/ann.h"

#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/clock.h"
#include "base/dtype.h"
#include "search/ann_faiss.h"

#define ADD_CHUNK 65536

struct ann_index {
  ann_faiss *fx;
  ann_info info;
  int model;
  store_modality mod;
};

const char *ann_kind_name(ann_kind k) { return k == ANN_IVFPQ ? "ivfpq" : k == ANN_HNSW ? "hnsw" : "ivfflat"; }

int ann_kind_parse(const char *s, ann_kind *out) {
  if (!strcmp(s, "ivfflat")) *out = ANN_IVFFLAT;
  else if (!strcmp(s, "ivfpq")) *out = ANN_IVFPQ;
  else if (!strcmp(s, "hnsw")) *out = ANN_HNSW;
  else return -1;
  return 0;
}

void ann_index_path(const taca_store *s, const char *model, store_modality m, char *out, size_t cap) {
  snprintf(out, cap, "%s/index-%s-%s.faiss", store_dir(s), model, store_modality_name(m));
}

static void meta_key(const char *model, store_modality m, char *out, size_t cap) {
  snprintf(out, cap, "index/%s/%s", model, store_modality_name(m));
}

static void normalise(float *x, int dim) {
  double s = 0;
  for (int i = 0; i < dim; i++) s += (double)x[i] * x[i];
  if (s > 0) {
    float inv = (float)(1.0 / sqrt(s));
    for (int i = 0; i < dim; i++) x[i] *= inv;
  }
}

/* ---- building ---- */

typedef struct scan_ctx {
  int dim, cosine, quiet;
  uint64_t n, seen;            /* stored rows in total, rows visited */
  /* training pass */
  int64_t ntrain, taken;
  float *train;
  /* adding pass */
  ann_faiss *fx;
  float *buf;
  int64_t *ids;
  int64_t nbuf;
  double t0, last;
  taca_error *err;
  int failed;
} scan_ctx;

static void row_f32(const store_block *b, int r, float *out) {
  size_t es = taca_dtype_size(b->dtype);
  taca_convert_to_f32(out, (const uint8_t *)b->data + (size_t)r * b->dim * es, b->dtype, (size_t)b->dim);
}

static int row_stored(const store_block *b, int r) { return (b->bitmap[r >> 3] >> (r & 7)) & 1; }

static int take_train(const store_block *b, void *p) {
  scan_ctx *c = p;
  for (int r = 0; r < b->size && c->taken < c->ntrain; r++) {
    if (!row_stored(b, r)) continue;
    /* row number `seen` is taken when it starts a new 1/ntrain slice of the n rows */
    uint64_t slice = (uint64_t)((__uint128_t)c->seen * (uint64_t)c->ntrain / c->n);
    uint64_t next = (uint64_t)((__uint128_t)(c->seen + 1) * (uint64_t)c->ntrain / c->n);
    c->seen++;
    if (next == slice && c->taken > 0) continue;
    float *x = c->train + (size_t)c->taken * c->dim;
    row_f32(b, r, x);
    if (c->cosine) normalise(x, c->dim);
    c->taken++;
  }
  return 0;
}

static int flush_add(scan_ctx *c) {
  if (c->nbuf && ann_faiss_add(c->fx, c->nbuf, c->buf, c->ids, c->err)) return c->failed = 1, -1;
  c->nbuf = 0;
  double now = taca_now_s();
  if (!c->quiet && (now - c->last > 2 || c->seen == c->n)) {
    int tty = isatty(2);
    fprintf(stderr, "%sindex: added %" PRIu64 "/%" PRIu64 " vectors (%.0f%%, %.0f/s)%s", tty ? "\r" : "", c->seen,
            c->n, 100.0 * (double)c->seen / (double)c->n, (double)c->seen / (now - c->t0 > 1e-9 ? now - c->t0 : 1e-9),
            tty && c->seen < c->n ? "" : "\n");
    c->last = now;
  }
  return 0;
}

static int add_block(const store_block *b, void *p) {
  scan_ctx *c = p;
  for (int r = 0; r < b->size; r++) {
    if (!row_stored(b, r)) continue;
    float *x = c->buf + (size_t)c->nbuf * c->dim;
    row_f32(b, r, x);
    for (int i = 0; i < c->dim; i++)
      if (!isfinite(x[i])) {
        taca_fail(c->err, "vector of sample %" PRIu64 " holds a non-finite value", b->first_index + (uint64_t)r);
        return c->failed = 1, 1;
      }
    if (c->cosine) normalise(x, c->dim);
    c->ids[c->nbuf++] = (int64_t)(b->first_index + (uint64_t)r);
    c->seen++;
    if (c->nbuf == ADD_CHUNK && flush_add(c)) return 1;
  }
  return 0;
}

/* candidates per hit an index of this kind rescores unless told otherwise (see ann.h) */
static int kind_refine(ann_kind k) { return k == ANN_IVFPQ ? ANN_REFINE_PQ : ANN_REFINE_EXACT; }

static int pow2_near(double x) {
  int p = 1;
  while (p < 65536 && p * 2 <= x * 1.41421356) p *= 2;
  return p;
}

/* Writes the index record into the store in one transaction, after checking that nothing was
 * written since the view the index was built from (built_txn). */
static int record_index(taca_store *s, const char *model, store_modality m, const ann_info *info, uint64_t built_txn,
                        taca_error *err) {
  store_txn *t;
  if (store_txn_begin(s, &t, err)) return -1;
  uint64_t id = store_txn_id(t);
  if (id != built_txn + 1) {
    store_txn_abort(t);
    return taca_fail(err, "the store was written while the index was built (transaction %" PRIu64 " -> %" PRIu64
                     "): build it again", built_txn, id - 1);
  }
  json_t *j = json_pack("{s:s, s:s, s:s, s:i, s:i, s:i, s:i, s:i, s:I, s:s, s:I}", "kind", info->kind, "factory",
                        info->factory, "metric", info->metric, "nlist", info->nlist, "pq", info->pq_m, "dim",
                        info->dim, "nprobe", info->default_nprobe, "refine", info->default_refine,
                        "vectors", (json_int_t)info->vectors,
                        "content_hash", info->content_hash, "txn", (json_int_t)id);
  char *js = j ? json_dumps(j, JSON_COMPACT | JSON_SORT_KEYS) : NULL;
  json_decref(j);
  char key[STORE_NAME_MAX + 32];
  meta_key(model, m, key, sizeof key);
  int rc = js ? store_put_meta(t, key, js, strlen(js), err) : taca_fail(err, "out of memory");
  free(js);
  if (rc) {
    store_txn_abort(t);
    return -1;
  }
  return store_txn_commit(t, err);
}

int ann_build(taca_store *s, const char *model, store_modality m, const ann_params *p, ann_info *out,
              taca_error *err) {
  memset(out, 0, sizeof *out);
  store_view *v;
  if (store_view_begin(s, &v, err)) return -1;
  uint64_t built_txn = store_view_txn_id(v);
  store_model sm;
  store_info info;
  scan_ctx c = {0};
  ann_faiss *fx = NULL;
  int rc = -1;
  char path[4200], tmp[4300];
  if (store_find_model(v, model, &sm, err) || store_get_info(v, &info, err)) goto done;
  int dim = m == STORE_IMAGE ? sm.image_dim : sm.text_dim;
  if (dim <= 0) {
    taca_fail(err, "model '%s' stores no %s embeddings", model, store_modality_name(m));
    goto done;
  }
  uint64_t n = info.n_embeddings[sm.id][m];
  if (n < 2) {
    taca_fail(err, "model '%s' has %" PRIu64 " %s vectors: too few to index", model, n, store_modality_name(m));
    goto done;
  }
  int nlist = 0, pq_m = 0;
  char factory[64];
  if (p->kind == ANN_HNSW) {
    snprintf(factory, sizeof factory, "IDMap,HNSW%d", p->hnsw_m > 0 ? p->hnsw_m : 32);
  } else {
    nlist = p->nlist > 0 ? p->nlist : pow2_near(sqrt((double)n));
    if (p->nlist <= 0)
      while (nlist > 1 && (uint64_t)nlist * 39 > n) nlist /= 2;
    if ((uint64_t)nlist > n) {
      taca_fail(err, "--nlist %d is more than the %" PRIu64 " vectors to index", nlist, n);
      goto done;
    }
    if (p->kind == ANN_IVFPQ) {
      pq_m = p->pq_m > 0 ? p->pq_m : dim / 4;
      if (pq_m < 1 || dim % pq_m) {
        taca_fail(err, "--pq %d must divide the width %d", pq_m, dim);
        goto done;
      }
    }
    const int hnsw_coarse = p->coarse == ANN_COARSE_HNSW || (p->coarse == ANN_COARSE_AUTO && nlist >= ANN_COARSE_HNSW_FROM);
    char ivf[32];
    snprintf(ivf, sizeof ivf, "IVF%d%s", nlist, hnsw_coarse ? "_HNSW32" : "");
    if (p->kind == ANN_IVFPQ)
      snprintf(factory, sizeof factory, "%s,PQ%dx8np", ivf, pq_m); /* np: no polysemous training (slow, unused) */
    else
      snprintf(factory, sizeof factory, "%s,Flat", ivf);
  }
  c.dim = dim;
  c.cosine = p->metric == STORE_METRIC_COSINE;
  c.quiet = p->quiet;
  c.n = n;
  c.err = err;
  if (ann_faiss_create(&fx, factory, dim, 1, err)) goto done;
  c.fx = fx;
  double t0 = taca_now_s();
  if (p->kind != ANN_HNSW) {
    int64_t nt = p->train_samples > 0 ? p->train_samples : (int64_t)nlist * 50;
    if (pq_m && nt < 256 * 39) nt = 256 * 39; /* the PQ codebooks have 256 centroids each */
    if ((uint64_t)nt > n) nt = (int64_t)n;
    c.ntrain = nt;
    if (!(c.train = malloc(sizeof(float) * (size_t)nt * dim))) {
      taca_fail(err, "out of memory for %" PRId64 " training vectors", nt);
      goto done;
    }
    if (store_scan_blocks(v, sm.id, m, take_train, &c, err)) goto done;
    if (!p->quiet)
      fprintf(stderr, "index: training %s on %" PRId64 " of %" PRIu64 " vectors\n", factory, c.taken, n);
    if (ann_faiss_train(fx, c.taken, c.train, err)) goto done;
    free(c.train);
    c.train = NULL;
  }
  c.seen = 0;
  c.t0 = c.last = taca_now_s();
  if (!(c.buf = malloc(sizeof(float) * (size_t)ADD_CHUNK * dim)) || !(c.ids = malloc(sizeof(int64_t) * ADD_CHUNK))) {
    taca_fail(err, "out of memory");
    goto done;
  }
  if (store_scan_blocks(v, sm.id, m, add_block, &c, err) || c.failed || flush_add(&c)) goto done;

  snprintf(out->kind, sizeof out->kind, "%s", ann_kind_name(p->kind));
  snprintf(out->factory, sizeof out->factory, "%s", factory);
  snprintf(out->metric, sizeof out->metric, "%s", c.cosine ? "cosine" : "ip");
  out->nlist = nlist;
  out->pq_m = pq_m;
  out->dim = dim;
  out->vectors = ann_faiss_ntotal(fx);
  out->default_nprobe = p->default_nprobe > 0 ? p->default_nprobe
                        : p->kind == ANN_HNSW ? 64 : (nlist / 16 > 8 ? nlist / 16 : (nlist < 8 ? nlist : 8));
  out->default_refine = p->default_refine > 0 ? p->default_refine : kind_refine(p->kind);
  if (store_content_hash(v, out->content_hash, err)) goto done;
  ann_index_path(s, model, m, path, sizeof path);
  snprintf(tmp, sizeof tmp, "%s.tmp.%d", path, (int)getpid());
  if (ann_faiss_write(fx, tmp, err)) goto done;
  if (rename(tmp, path)) {
    taca_fail(err, "%s: cannot rename the new index into place: %s", path, strerror(errno));
    unlink(tmp);
    goto done;
  }
  store_view_end(v);
  v = NULL;
  if (record_index(s, model, m, out, built_txn, err)) goto done;
  if (!p->quiet)
    fprintf(stderr, "index: %s: %" PRId64 " vectors of '%s' (%s) in %.1f s\n", path, out->vectors, model,
            store_modality_name(m), taca_now_s() - t0);
  rc = 0;
done:
  if (v) store_view_end(v);
  free(c.train);
  free(c.buf);
  free(c.ids);
  ann_faiss_free(fx);
  return rc;
}

/* ---- opening ---- */

static int info_from_json(const void *val, size_t len, ann_info *o, uint64_t *txn) {
  json_error_t je;
  json_t *j = json_loadb(val, len, 0, &je);
  if (!j) return -1;
  const char *kind = json_string_value(json_object_get(j, "kind"));
  const char *fac = json_string_value(json_object_get(j, "factory"));
  const char *met = json_string_value(json_object_get(j, "metric"));
  const char *h = json_string_value(json_object_get(j, "content_hash"));
  int ok = kind && fac && met && h;
  if (ok) {
    snprintf(o->kind, sizeof o->kind, "%s", kind);
    snprintf(o->factory, sizeof o->factory, "%s", fac);
    snprintf(o->metric, sizeof o->metric, "%s", met);
    snprintf(o->content_hash, sizeof o->content_hash, "%s", h);
    o->nlist = (int)json_integer_value(json_object_get(j, "nlist"));
    o->pq_m = (int)json_integer_value(json_object_get(j, "pq"));
    o->dim = (int)json_integer_value(json_object_get(j, "dim"));
    o->default_nprobe = (int)json_integer_value(json_object_get(j, "nprobe"));
    /* records from before refine was recorded: the kind's default now */
    o->default_refine = (int)json_integer_value(json_object_get(j, "refine"));
    ann_kind k;
    if (o->default_refine <= 0 || o->default_refine > ANN_MAX_REFINE)
      o->default_refine = ann_kind_parse(kind, &k) ? ANN_REFINE_EXACT : kind_refine(k);
    o->vectors = json_integer_value(json_object_get(j, "vectors"));
    *txn = (uint64_t)json_integer_value(json_object_get(j, "txn"));
  }
  json_decref(j);
  return ok ? 0 : -1;
}

int ann_open(taca_store *s, const char *model, store_modality m, ann_index **out, taca_error *err) {
  *out = NULL;
  store_view *v;
  if (store_view_begin(s, &v, err)) return -1;
  char key[STORE_NAME_MAX + 32], path[4200];
  meta_key(model, m, key, sizeof key);
  const void *val;
  size_t len;
  store_model sm;
  ann_index *ix = NULL;
  int rc = -1;
  if (store_find_model(v, model, &sm, err) || store_get_meta(v, key, &val, &len, err)) goto done;
  if (!val) {
    rc = 0;
    goto done;
  }
  if (!(ix = calloc(1, sizeof *ix))) {
    taca_fail(err, "out of memory");
    goto done;
  }
  uint64_t txn = 0;
  if (info_from_json(val, len, &ix->info, &txn)) {
    taca_fail(err, "meta %s: not a valid index record", key);
    goto done;
  }
  /* Fresh when nothing was committed after the record; otherwise the content must be unchanged. */
  if (store_view_txn_id(v) != txn) {
    char now[33];
    if (store_content_hash(v, now, err)) goto done;
    if (strcmp(now, ix->info.content_hash)) {
      taca_fail(err, "the %s index of model '%s' is stale: it was built from content %s, the store now hashes to %s "
                "(rebuild it with taca index --db %s --model %s)", store_modality_name(m), model,
                ix->info.content_hash, now, store_dir(s), model);
      goto done;
    }
  }
  ann_index_path(s, model, m, path, sizeof path);
  if (ann_faiss_read(&ix->fx, path, 1, &ix->info.mapped, err)) goto done;
  if (ann_faiss_dim(ix->fx) != ix->info.dim || ann_faiss_ntotal(ix->fx) != ix->info.vectors) {
    taca_fail(err, "%s holds %" PRId64 " vectors of width %d, its record says %" PRId64 " of %d: rebuild it", path,
              ann_faiss_ntotal(ix->fx), ann_faiss_dim(ix->fx), ix->info.vectors, ix->info.dim);
    goto done;
  }
  ix->model = sm.id;
  ix->mod = m;
  *out = ix;
  ix = NULL;
  rc = 0;
done:
  store_view_end(v);
  ann_close(ix);
  return rc;
}

void ann_close(ann_index *ix) {
  if (!ix) return;
  ann_faiss_free(ix->fx);
  free(ix);
}

const ann_info *ann_index_info(const ann_index *ix) { return &ix->info; }

/* ---- searching ---- */

typedef struct cand {
  float s;
  int64_t i;
} cand;

static int cand_cmp(const void *a, const void *b) {
  const cand *x = a, *y = b;
  if (x->s != y->s) return x->s > y->s ? -1 : 1;
  return (x->i > y->i) - (x->i < y->i);
}

int ann_check_refine(int64_t k, int64_t refine, taca_error *err) {
  if (refine > ANN_MAX_REFINE) return taca_fail(err, "refine %" PRId64 ": at most %d", refine, ANN_MAX_REFINE);
  if (k * refine > ANN_MAX_CANDIDATES)
    return taca_fail(err, "k %" PRId64 " x refine %" PRId64 " = %" PRId64 " candidates to rescore; at most %d", k,
                     refine, k * refine, ANN_MAX_CANDIDATES);
  return 0;
}

int ann_search(const ann_index *ix, store_view *v, const float *queries, int nq, int k, store_metric metric,
               int nprobe, int refine, int64_t *out_index, float *out_score, taca_error *err) {
  const int dim = ix->info.dim, cosine = metric == STORE_METRIC_COSINE;
  if (cosine != !strcmp(ix->info.metric, "cosine"))
    return taca_fail(err, "the ANN index serves %s, the query asks for %s: search exactly, or build an index for it",
                     ix->info.metric, cosine ? "cosine" : "ip");
  if (nq < 1 || k < 1) return taca_fail(err, "search: %d queries, k = %d", nq, k);
  for (size_t i = 0; i < (size_t)nq * dim; i++)
    if (!isfinite(queries[i]))
      return taca_fail(err, "search: query %zu has a non-finite value at element %zu", i / dim, i % dim);
  if (refine > 0 && ann_check_refine(k, refine, err)) return -1;
  int64_t kk = (int64_t)k * (refine > 0 ? refine : ix->info.default_refine);
  if (kk > ANN_MAX_CANDIDATES) kk = k > ANN_MAX_CANDIDATES ? k : ANN_MAX_CANDIDATES; /* only the default gets here */
  if (kk > ix->info.vectors) kk = ix->info.vectors;
  float *q = malloc(sizeof(float) * (size_t)nq * dim), *row = malloc(sizeof(float) * dim);
  float *dist = malloc(sizeof(float) * (size_t)nq * kk);
  int64_t *lab = malloc(sizeof(int64_t) * (size_t)nq * kk);
  cand *cs = malloc(sizeof(cand) * (size_t)kk);
  int rc = -1;
  if (!q || !row || !dist || !lab || !cs) {
    taca_fail(err, "search: out of memory for %d x %" PRId64 " candidates", nq, kk);
    goto done;
  }
  memcpy(q, queries, sizeof(float) * (size_t)nq * dim);
  if (cosine)
    for (int i = 0; i < nq; i++) normalise(q + (size_t)i * dim, dim);
  if (ann_faiss_search(ix->fx, nq, q, kk, nprobe > 0 ? nprobe : ix->info.default_nprobe, dist, lab, err)) goto done;
  for (int qi = 0; qi < nq; qi++) {
    const float *qq = q + (size_t)qi * dim;
    int nc = 0;
    for (int64_t j = 0; j < kk; j++) {
      int64_t id = lab[(size_t)qi * kk + j];
      if (id < 0) continue;
      if (store_peek_embedding(v, ix->model, ix->mod, (uint64_t)id, row, err))
        goto done; /* the index names a vector the store does not hold: corrupt or stale */
      double dot = 0, nrm = 0;
      for (int d = 0; d < dim; d++) {
        dot += (double)qq[d] * row[d];
        nrm += (double)row[d] * row[d];
      }
      double sc = cosine ? (nrm > 0 ? dot / sqrt(nrm) : 0.0) : dot;
      if (!isfinite(sc) || fabs(sc) > 3.0e38) continue;
      cs[nc].s = (float)sc;
      cs[nc].i = id;
      nc++;
    }
    qsort(cs, (size_t)nc, sizeof *cs, cand_cmp);
    /* the hits kept are read again with their blocks' checksums: a corrupt block among them fails */
    for (int j = 0; j < k && j < nc; j++) {
      const void *verified;
      if (store_get_embedding_raw(v, ix->model, ix->mod, (uint64_t)cs[j].i, &verified, err)) goto done;
    }
    for (int j = 0; j < k; j++) {
      out_index[(size_t)qi * k + j] = j < nc ? cs[j].i : -1;
      out_score[(size_t)qi * k + j] = j < nc ? cs[j].s : -INFINITY;
    }
  }
  rc = 0;
done:
  free(q);
  free(row);
  free(dist);
  free(lab);
  free(cs);
  return rc;
}
