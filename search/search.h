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

#endif
