/* ann_faiss.h: the thin C interface to faiss (C++) that search/ann.c builds on: make an index from an
 * index-factory string, train, add vectors with ids, write, read (memory-mapped where faiss can),
 * search with a per-call nprobe / efSearch. Debian's libfaiss ships no C API library, so this is the
 * one C++ file of the project (ann_faiss.cpp); every call catches faiss's exceptions and returns -1
 * with faiss's message in err. An index may be searched from several threads at once. */
#ifndef TACA_SEARCH_ANN_FAISS_H
#define TACA_SEARCH_ANN_FAISS_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#include "base/error.h" /* a C header: declared with C linkage for ann_faiss.cpp */

typedef struct ann_faiss ann_faiss;

/* inner_product: 1 = METRIC_INNER_PRODUCT (also cosine over normalised vectors), 0 = L2. */
int ann_faiss_create(ann_faiss **out, const char *factory, int dim, int inner_product, taca_error *err);
int ann_faiss_train(ann_faiss *ix, int64_t n, const float *x, taca_error *err);
int ann_faiss_add(ann_faiss *ix, int64_t n, const float *x, const int64_t *ids, taca_error *err);
int ann_faiss_write(const ann_faiss *ix, const char *path, taca_error *err);
/* mmap: map the inverted lists / codes from the file instead of reading them (falls back to a read
 * for index types faiss cannot map; *mapped says which happened). */
int ann_faiss_read(ann_faiss **out, const char *path, int mmap, int *mapped, taca_error *err);
/* nprobe: IVF lists to visit (0 = the index's default); for HNSW the efSearch (0 = default).
 * labels of missing results are -1. */
int ann_faiss_search(const ann_faiss *ix, int64_t nq, const float *q, int64_t k, int nprobe, float *dist,
                     int64_t *labels, taca_error *err);
int64_t ann_faiss_ntotal(const ann_faiss *ix);
int ann_faiss_dim(const ann_faiss *ix);
int ann_faiss_nlist(const ann_faiss *ix); /* IVF lists; 0 for other kinds */
void ann_faiss_free(ann_faiss *ix);

#ifdef __cplusplus
}
#endif

#endif
