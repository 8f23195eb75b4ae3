/* ann.h: approximate top-k search over one model's stored embeddings, through a faiss index kept in
 * the store's directory beside data.mdb.
 *
 *   building:  ann_build(store, model, modality, params)  ->  DIR/index-MODEL-MODALITY.faiss, written
 *              to a temporary file and renamed (atomic: a crash leaves the old index or none), then
 *              recorded in the store's meta "index/MODEL/MODALITY" (JSON: kind, factory, nlist, pq, metric,
 *              vectors, dim, the content hash of the store it was built from, the LMDB transaction
 *              that recorded it). "index/..." records are left out of the content hash.
 *   serving:   ann_open(store, model, modality) maps the index (where faiss can) and refuses a stale
 *              one: the store must be unchanged since (same last transaction, or else the same
 *              content hash). ann_search then takes k x refine candidates from faiss and rescores
 *              them exactly from the stored vectors, so scores are exact inner products / cosines of
 *              the stored rows and ordered as store_search orders them (score descending, then
 *              index ascending). Candidates are read without their blocks' checksums
 *              (store_peek_embedding); the k hits kept are read again verified, so a corrupt block
 *              among the hits fails the search (one outside them can still drop a row from the hits,
 *              as an approximate index may anyway). A handle is read-only and may be searched from
 *              several threads.
 *
 * Kinds: "ivfflat" (IVF lists of the vectors; default), "ivfpq" (IVF + product quantisation, M
 * sub-quantisers of 8 bits: 2*dim/M times smaller than F16; the rescoring restores exact scores), "hnsw"
 * (a graph; no training; nprobe is then efSearch). Metric: the index is built for one metric;
 * cosine indexes hold normalised vectors. */
#ifndef TACA_SEARCH_ANN_H
#define TACA_SEARCH_ANN_H

#include <stdint.h>

#include "base/error.h"
#include "storage/store.h"

typedef enum ann_kind { ANN_IVFFLAT = 0, ANN_IVFPQ = 1, ANN_HNSW = 2 } ann_kind;

/* How an IVF index assigns a vector to its lists: by an exact scan of the nlist centroids (flat;
 * nlist x dim per vector: at 10^7 vectors and 4096 lists, most of the build) or through an HNSW graph
 * over them (IVFn_HNSW32, as autofaiss builds large indexes; searched with efSearch >= 2 x nprobe). */
enum { ANN_COARSE_AUTO = 0, ANN_COARSE_FLAT = 1, ANN_COARSE_HNSW = 2 };
#define ANN_COARSE_HNSW_FROM 4096

typedef struct ann_params {
  ann_kind kind;
  store_metric metric;     /* the metric the index serves */
  int nlist;               /* IVF lists; 0 = the power of two nearest sqrt(n), at most n/39 */
  int pq_m;                /* ivfpq sub-quantisers of 8 bits; 0 = dim/4 (it must divide dim) */
  int hnsw_m;              /* hnsw neighbours per node; 0 = 32 */
  int coarse;              /* IVF's coarse quantiser: ANN_COARSE_AUTO (HNSW from 4096 lists on), _FLAT, _HNSW */
  int64_t train_samples;   /* vectors to train on, spread evenly over the store; 0 = min(n, 50 x nlist) */
  int default_nprobe;      /* recorded for ann_search's nprobe 0; 0 = nlist/16 (at least 8) */
  int default_refine;      /* recorded for ann_search's refine 0; 0 = ANN_REFINE_PQ for ivfpq, 4 otherwise */
  int quiet;               /* no progress bar on stderr */
} ann_params;

typedef struct ann_info {
  char kind[16], factory[64], metric[8], content_hash[33];
  int nlist, pq_m, dim, default_nprobe, default_refine, mapped;
  int64_t vectors;
} ann_info;

typedef struct ann_index ann_index;

const char *ann_kind_name(ann_kind k);
int ann_kind_parse(const char *s, ann_kind *out);

/* The index file of (model, modality) in the store's directory. */
void ann_index_path(const taca_store *s, const char *model, store_modality m, char *out, size_t cap);

int ann_build(taca_store *s, const char *model, store_modality m, const ann_params *p, ann_info *out,
              taca_error *err);
/* *out = NULL and 0 when the model has no index of that modality; -1 for a stale or unreadable one. */
int ann_open(taca_store *s, const char *model, store_modality m, ann_index **out, taca_error *err);
void ann_close(ann_index *ix);
const ann_info *ann_index_info(const ann_index *ix);

/* How many candidates per requested hit faiss returns for exact rescoring. PQ codes rank coarsely: on
 * the growth benchmark's clustered 512-wide vectors (10^3 rows per cluster, bench/run-growth.sh),
 * IVF1024,PQ128 over 10^6 rows gave recall@10 0.86 / 0.97 / 1.00 at refine 10 / 30 / 100 (and 10
 * gave 0.60 at 10^7), so ivfpq rescores k x 100 by default; flat lists and graphs rank exactly and
 * need only a margin. At most ANN_MAX_REFINE, and
 * k x refine candidates at most ANN_MAX_CANDIDATES per query (a bound on one request's work). */
#define ANN_REFINE_PQ 100
#define ANN_REFINE_EXACT 4
#define ANN_MAX_REFINE 1000
#define ANN_MAX_CANDIDATES 100000

/* 0, or -1 with the reason when refine (asked for by a caller) exceeds ANN_MAX_REFINE or k x refine
 * exceeds ANN_MAX_CANDIDATES: the one check of both bounds, for ann_search, servers and builders. */
int ann_check_refine(int64_t k, int64_t refine, taca_error *err);

/* Top-k of nq queries (nq x dim F32) for `metric` (must be the index's). nprobe 0 = the recorded
 * default; refine 0 = the recorded default (candidates = k x refine, capped at the index's size,
 * rescored exactly from the stored rows). A refine asked for above ANN_MAX_REFINE, or with k x refine
 * above ANN_MAX_CANDIDATES, is refused; the default is held to ANN_MAX_CANDIDATES (or k). Output as store_search. */
int ann_search(const ann_index *ix, store_view *v, const float *queries, int nq, int k, store_metric metric,
               int nprobe, int refine, int64_t *out_index, float *out_score, taca_error *err);

#endif
