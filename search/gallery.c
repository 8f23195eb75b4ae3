/* gallery.c: exact search over a mixed gallery, several models of one space with each sample scored by
 * its most preferred stored vector (see search.h). One exact search per model, each leaving out the
 * rows a more preferred model stores, then a merge. */
#include <stdlib.h>
#include <string.h>

#include "search/search.h"

typedef struct mark_ctx {
  uint8_t *bits;
  uint64_t base, len;
} mark_ctx;

static int mark_block(const store_block *b, void *ctx) {
  mark_ctx *c = ctx;
  for (int r = 0; r < b->size; r++) {
    if (!((b->bitmap[r >> 3] >> (r & 7)) & 1)) continue;
    uint64_t i = b->first_index + (uint64_t)r;
    if (i < c->base || i - c->base >= c->len) continue;
    uint64_t o = i - c->base;
    c->bits[o >> 3] |= (uint8_t)(1u << (o & 7));
  }
  return 0;
}

typedef struct cand {
  float s;
  int64_t i;
  int model;
} cand;

static int cand_cmp(const void *a, const void *b) {
  const cand *x = a, *y = b;
  if (x->i < 0 || y->i < 0) return (x->i < 0) - (y->i < 0); /* empty slots last */
  if (x->s != y->s) return x->s > y->s ? -1 : 1;
  return x->i < y->i ? -1 : x->i > y->i;
}

int store_search_gallery(store_view *v, const int *models, int n, store_modality mod, const float *queries, int nq,
                         int k, store_metric metric, int64_t *out_index, float *out_score, int *out_model,
                         taca_error *err) {
  if (n < 1) return taca_fail(err, "search: an empty gallery");
  if (n == 1) {
    if (store_search(v, models[0], mod, queries, nq, k, metric, out_index, out_score, err)) return -1;
    for (size_t i = 0; i < (size_t)nq * k; i++) out_model[i] = out_index[i] >= 0 ? models[0] : -1;
    return 0;
  }
  store_info *info = malloc(sizeof *info);
  if (!info) return taca_fail(err, "out of memory");
  if (store_get_info(v, info, err)) {
    free(info);
    return -1;
  }
  int dim = -1;
  for (int j = 0; j < n; j++) {
    if (models[j] < 0 || models[j] >= info->n_models) {
      free(info);
      return taca_fail(err, "search: model id %d is not in the store", models[j]);
    }
    const store_model *m = &info->models[models[j]];
    int d = mod == STORE_IMAGE ? m->image_dim : m->text_dim;
    if (j == 0) dim = d;
    if (d != dim || d <= 0) {
      int d0 = dim;
      free(info);
      return taca_fail(err, "search: gallery model %d stores %s embeddings of width %d, the first one %d", j,
                       store_modality_name(mod), d, d0);
    }
  }
  uint64_t base = info->n_samples ? info->first_index : 0, len = info->n_samples ? info->last_index - base + 1 : 0;
  /* embeddings may exist past the stored samples' range (add-features): widen to the range if declared */
  if (info->has_range) {
    base = info->range.begin;
    len = info->range.end - info->range.begin;
  }
  free(info);
  mark_ctx mc = {calloc(len / 8 + 1, 1), base, len};
  size_t per = (size_t)nq * k;
  cand *all = malloc(per * (size_t)n * sizeof *all);
  int64_t *idx = malloc(per * sizeof *idx);
  float *sc = malloc(per * sizeof *sc);
  int rc = -1;
  if (!mc.bits || !all || !idx || !sc) {
    taca_fail(err, "out of memory for a gallery of %d models", n);
    goto out;
  }
  for (int j = 0; j < n; j++) {
    search_skip sk = {mc.bits, base, len};
    if (store_search_skip(v, models[j], mod, queries, nq, k, metric, j ? &sk : NULL, idx, sc, err)) goto out;
    for (int q = 0; q < nq; q++)
      for (int t = 0; t < k; t++) {
        size_t at = ((size_t)q * n + j) * k + t;
        all[at] = (cand){sc[(size_t)q * k + t], idx[(size_t)q * k + t], models[j]};
      }
    if (j + 1 < n && store_scan_blocks(v, models[j], mod, mark_block, &mc, err)) goto out;
  }
  for (int q = 0; q < nq; q++) {
    cand *c = all + (size_t)q * n * k;
    qsort(c, (size_t)n * k, sizeof *c, cand_cmp);
    for (int t = 0; t < k; t++) {
      int hit = c[t].i >= 0;
      out_index[(size_t)q * k + t] = hit ? c[t].i : -1;
      out_score[(size_t)q * k + t] = hit ? c[t].s : -__builtin_inff();
      out_model[(size_t)q * k + t] = hit ? c[t].model : -1;
    }
  }
  rc = 0;
out:
  free(mc.bits);
  free(all);
  free(idx);
  free(sc);
  return rc;
}
