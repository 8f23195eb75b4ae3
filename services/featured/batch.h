/* batch.h: building taca.v1.Batch messages from the store: which fields a request asks for (checked
 * against the store), then the samples' data gathered in request order. Pixels are referenced
 * straight from the LMDB map (copied once, when the message is packed), so the view must stay open
 * until then. */
#ifndef TACA_FEATURED_BATCH_H
#define TACA_FEATURED_BATCH_H

#include <stddef.h>
#include <stdint.h>

#include "services/featured/featured.h"
#include "services/featured/reply.h"
#include "taca/v1/feature_cache.pb-c.h"

#define FIELDS_MAX_EMB 16

typedef struct field_emb {
  int model;             /* store model id */
  store_modality mod;
  int dim;
  taca_dtype dtype;      /* stored */
  char name[STORE_NAME_MAX];
} field_emb;

typedef struct field_sel {
  int pixels, tokens, labels, keys, as_f32;
  int captions, metadata;
  int n_emb;
  field_emb emb[FIELDS_MAX_EMB];
} field_sel;

/* Checks a request's Fields (NULL = indices only) against the snapshot: unknown model → NOT_FOUND
 * listing the known ones; a modality the model does not store → NOT_FOUND; pixels from a store
 * without pixels → FAILED_PRECONDITION. */
int fields_resolve(const featured_snapshot *s, const Taca__V1__Fields *in, field_sel *out, reply *r);

/* The "model 'x' is not in this store (it has: ...)" NOT_FOUND reply. */
int reply_unknown_model(reply *r, const featured_snapshot *s, const char *name);
/* A store failure: DATA_LOSS when the store is damaged (store_error_is_corrupt), INTERNAL otherwise. */
int reply_store_fail(reply *r, const taca_error *e);

/* Fills out (initialised here) for idx[0..n), every index inside the served range. A sample that
 * is not stored → NOT_FOUND naming it (when sample fields are asked for). Allocations come from a.
 * With tail non-NULL, pixels are not put in out but listed in tail (Batch field 2, pointing into the
 * view's map: the caller hands the view to tail->owner); with tail NULL they are in out. */
int batch_fill(store_view *v, const featured_snapshot *s, const field_sel *fs, const uint64_t *idx, size_t n,
               arena *a, Taca__V1__Batch *out, reply_tail *tail, reply *r);

/* The captions and/or metadata of idx[0..n) as NUL-terminated strings ("" where none is stored),
 * from a; NULL arrays for what is not asked for. */
int batch_annotations(store_view *v, const uint64_t *idx, size_t n, int captions, int metadata, arena *a,
                      char ***caps_out, char ***meta_out, reply *r);

/* INVALID_ARGUMENT naming the served range when an index lies outside it. */
int check_indices(const featured_snapshot *s, const uint64_t *idx, size_t n, reply *r);

#endif
