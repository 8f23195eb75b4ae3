/* search.h: top-k search over one model's stored embeddings, on a read view of the store. */
#ifndef TACA_SEARCH_SEARCH_H
#define TACA_SEARCH_SEARCH_H

#include <stdint.h>

#include "base/error.h"
#include "storage/store.h"

/* Exact top-k over every stored vector of (model, modality). queries: nq x dim F32. Results per query
 * are ordered by score descending, ties by lower index; out_index/out_score hold nq x k entries, the
 * ones past the number of stored vectors are -1 / -INFINITY. COSINE normalises queries and rows (a
 * zero vector scores 0). Runs on the OpenMP threads (OpenBLAS kept to one thread meanwhile). */
int store_search(store_view *v, int model, store_modality m, const float *queries, int nq, int k,
                 store_metric metric, int64_t *out_index, float *out_score, taca_error *err);

/* Rows to leave out: index i is skipped when base <= i < base + len and bit (i - base) of bits is
 * set (bits[o / 8] >> (o % 8) & 1). */
typedef struct search_skip {
  const uint8_t *bits;
  uint64_t base, len;
} search_skip;

/* store_search without the rows of `skip` (NULL: none). */
int store_search_skip(store_view *v, int model, store_modality m, const float *queries, int nq, int k,
                      store_metric metric, const search_skip *skip, int64_t *out_index, float *out_score,
                      taca_error *err);

/* A mixed gallery: models[0..n) of one embedding space, in order of preference. Each sample is scored
 * by the first model that stores its vector (a corpus partly re-embedded with a newer model is
 * searched as one gallery, each item by its best available vector). out_model (nq x k) gets the
 * model id that scored each hit (-1 past the hits). Same dims required; same ordering rules as
 * store_search. */
int store_search_gallery(store_view *v, const int *models, int n, store_modality m, const float *queries, int nq,
                         int k, store_metric metric, int64_t *out_index, float *out_score, int *out_model,
                         taca_error *err);

#endif
