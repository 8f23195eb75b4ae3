/* handlers.c: Info, GetBatch, Lookup, Search, StreamEpoch and Health.Check (see handlers.h). */
#include "services/featured/handlers.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/fastmath.h"
#include "grpc/health/v1/health.pb-c.h"
#include "services/featured/batch.h"
#include "services/featured/epoch.h"
#include "services/featured/log.h"
#include "services/featured/wire.h"
#include "services/featured/encoders.h"
#include "search/search.h"
#include "storage/gather.h"
#include "taca/v1/feature_cache.pb-c.h"

/* Decoding is bounded before any check of the decoded request can run: protobuf-c allocates every
 * element of a repeated field, so a small request of empty elements could otherwise decode to
 * gigabytes. The allocator below refuses past len + UNPACK_SLACK bytes in all (every legitimate
 * request decodes to about its own size: packed floats and bytes 1:1, index lists of --max-batch
 * entries well inside the slack); the messages are freed with the system allocator as usual. */
#define UNPACK_SLACK ((size_t)16 << 20)
typedef struct unpack_budget {
  size_t left;
} unpack_budget;
static _Thread_local int unpack_over_budget;

static void *budget_alloc(void *data, size_t n) {
  unpack_budget *b = data;
  if (n > b->left) {
    unpack_over_budget = 1;
    return NULL;
  }
  b->left -= n;
  return malloc(n);
}

static void budget_free(void *data, void *p) {
  (void)data;
  free(p);
}

static ProtobufCMessage *unpack_bounded(const ProtobufCMessageDescriptor *d, const uint8_t *req, size_t len) {
  unpack_budget b = {len + UNPACK_SLACK};
  ProtobufCAllocator a = {budget_alloc, budget_free, &b};
  unpack_over_budget = 0;
  return protobuf_c_message_unpack(d, &a, len, req);
}
#define UNPACK(type, desc, req, len) ((type *)unpack_bounded(&(desc), (req), (len)))

static int malformed(reply *r, const char *what, size_t len) {
  if (unpack_over_budget)
    return reply_fail(r, GRPC_STATUS_RESOURCE_EXHAUSTED,
                      "%s of %zu bytes would take more than %zu MiB to decode (too many repeated elements)", what, len,
                      (len + UNPACK_SLACK) >> 20);
  return reply_fail(r, GRPC_STATUS_INVALID_ARGUMENT, "malformed %s (%zu bytes): not a valid protobuf message", what,
                    len);
}

static void release_view(void *v) { store_view_end(v); }

/* A batch whose pixels go out zero-copy keeps its view open until the message is sent. */
static void hand_view_to_tail(reply *r, store_view **v) {
  if (!r->tail.n) return;
  r->tail.owner = *v;
  r->tail.release = release_view;
  *v = NULL;
}

static int view_begin(featured *f, store_view **v, reply *r) {
  taca_error err;
  if (store_view_begin(f->store, v, &err)) return reply_fail(r, GRPC_STATUS_UNAVAILABLE, "%s", err.msg);
  return 0;
}

/* ---------- Info ---------- */

void handle_info(featured *f, const uint8_t *req, size_t len, reply *r) {
  Taca__V1__InfoRequest *in = UNPACK(Taca__V1__InfoRequest, taca__v1__info_request__descriptor, req, len);
  if (!in) {
    malformed(r, "InfoRequest", len);
    return;
  }
  protobuf_c_message_free_unpacked(&in->base, NULL);
  featured_snapshot *s = malloc(sizeof *s);
  if (!s) {
    reply_fail(r, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
    return;
  }
  featured_snapshot_get(f, s);
  const store_info *si = &s->info;
  arena a = {0};
  store_view *v = NULL;
  taca_error verr;
  if (store_view_begin(f->store, &v, &verr)) v = NULL; /* provenance left out; the rest answers */
  Taca__V1__InfoResponse out = TACA__V1__INFO_RESPONSE__INIT;
  Taca__V1__Alias al[FEATURED_MAX_ALIASES], *alp[FEATURED_MAX_ALIASES];
  for (int i = 0; i < s->aliases.n; i++) {
    taca__v1__alias__init(&al[i]);
    al[i].name = s->aliases.a[i].name;
    al[i].target = s->aliases.a[i].target;
    al[i].version = s->aliases.a[i].version;
    alp[i] = &al[i];
  }
  out.n_aliases = (size_t)s->aliases.n;
  out.aliases = alp;
  Taca__V1__ModelInfo mi[STORE_MAX_MODELS], *mp[STORE_MAX_MODELS];
  Taca__V1__PixelFormat pf = TACA__V1__PIXEL_FORMAT__INIT;
  out.sample_count = si->n_samples;
  out.index_begin = s->begin;
  out.index_end = s->end;
  out.shard = si->has_range ? (uint32_t)si->range.shard : 0;
  out.shard_count = si->has_range ? (uint32_t)si->range.nshards : 1;
  for (int i = 0; i < si->n_models; i++) {
    const store_model *m = &si->models[i];
    taca__v1__model_info__init(&mi[i]);
    mi[i].name = (char *)m->name;
    mi[i].arch = (char *)m->arch;
    mi[i].image_dim = (uint32_t)m->image_dim;
    mi[i].text_dim = (uint32_t)m->text_dim;
    mi[i].dtype = m->dtype == TACA_DT_F16 ? TACA__V1__DTYPE__DTYPE_F16 : TACA__V1__DTYPE__DTYPE_F32;
    mi[i].logit_scale = m->logit_scale;
    mi[i].image_size = (uint32_t)m->image_size;
    mi[i].image_count = si->n_embeddings[i][STORE_IMAGE];
    mi[i].text_count = si->n_embeddings[i][STORE_TEXT];
    mi[i].caption_search = featured_encoders_has_texts(f->encoders, m->name);
    mi[i].embed_texts = mi[i].caption_search;
    mi[i].embed_images = featured_encoders_has_images(f->encoders, m->name);
    mi[i].kind = s->kind[i];
    mi[i].space = s->space[i];
    mi[i].provenance = (char *)"";
    if (v) {
      char key[96];
      const void *val = NULL;
      size_t vl = 0;
      taca_error e;
      snprintf(key, sizeof key, "provenance/%s", m->name);
      if (store_get_meta(v, key, &val, &vl, &e) == 0 && val) {
        char *pj = arena_alloc(&a, vl + 1);
        if (pj) {
          memcpy(pj, val, vl);
          pj[vl] = '\0';
          mi[i].provenance = pj;
        }
      }
    }
    mi[i].weights_xxh = (char *)m->weights_xxh;
    mi[i].image_ann = f->ann[i][STORE_IMAGE] != NULL;
    mi[i].text_ann = f->ann[i][STORE_TEXT] != NULL;
    mp[i] = &mi[i];
  }
  out.n_models = (size_t)si->n_models;
  out.models = mp;
  if (si->has_pixel_format) {
    pf.size = (uint32_t)si->pixel.size;
    pf.channels = (uint32_t)si->pixel.channels;
    pf.codec = s->info.pixel.codec;
    pf.quality = (uint32_t)si->pixel.quality;
    out.pixel_format = &pf;
  }
  out.context_length = STORE_CONTEXT_LEN;
  out.server_version = (char *)FEATURED_VERSION;
  out.max_batch = (uint32_t)f->cfg.max_batch;
  out.max_message_bytes = f->cfg.max_message;
  out.max_request_bytes = f->cfg.max_request;
  out.max_streams = (uint32_t)f->cfg.max_streams;
  out.max_k = (uint32_t)f->cfg.max_k;
  reply_pack(r, &out.base, f->cfg.max_message);
  store_view_end(v);
  arena_free(&a);
  free(s);
}

/* ---------- GetBatch ---------- */

void handle_get_batch(featured *f, const uint8_t *req, size_t len, reply *r) {
  Taca__V1__GetBatchRequest *in = UNPACK(Taca__V1__GetBatchRequest, taca__v1__get_batch_request__descriptor, req, len);
  if (!in) {
    malformed(r, "GetBatchRequest", len);
    return;
  }
  featured_snapshot *s = malloc(sizeof *s);
  field_sel *fs = malloc(sizeof *fs);
  store_view *v = NULL;
  arena a = {0};
  if (!s || !fs) {
    reply_fail(r, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
    goto done;
  }
  featured_snapshot_get(f, s);
  if (in->n_indices > (size_t)f->cfg.max_batch) {
    reply_fail(r, GRPC_STATUS_INVALID_ARGUMENT, "%zu indices asked for; at most %d per request (--max-batch)",
               in->n_indices, f->cfg.max_batch);
    goto done;
  }
  if (check_indices(s, in->indices, in->n_indices, r) || fields_resolve(s, in->fields, fs, r) || view_begin(f, &v, r))
    goto done;
  Taca__V1__Batch b;
  if (batch_fill(v, s, fs, in->indices, in->n_indices, &a, &b, &r->tail, r) == 0) {
    hand_view_to_tail(r, &v);
    reply_pack(r, &b.base, f->cfg.max_message);
  }
done:
  store_view_end(v);
  arena_free(&a);
  free(fs);
  free(s);
  protobuf_c_message_free_unpacked(&in->base, NULL);
}

/* ---------- Lookup ---------- */

/* protobuf-c hands strings over NUL-terminated, so a key with a NUL inside would be looked up as its
 * prefix (another sample). The wire bytes are checked instead: the position of the first top-level
 * length-delimited field number `field` holding a NUL byte, or -1. */
static long wire_string_with_nul(const uint8_t *p, size_t len, uint32_t field) {
  const uint8_t *end = p + len;
  wire_field f;
  long nth = 0;
  while (wire_next_field(&p, end, &f) == 1)
    if (f.num == field && f.wire == 2) {
      if (memchr(f.p, 0, f.n)) return nth;
      nth++;
    }
  return -1;
}

void handle_lookup(featured *f, const uint8_t *req, size_t len, reply *r) {
  Taca__V1__LookupRequest *in = UNPACK(Taca__V1__LookupRequest, taca__v1__lookup_request__descriptor, req, len);
  if (!in) {
    malformed(r, "LookupRequest", len);
    return;
  }
  featured_snapshot *s = malloc(sizeof *s);
  field_sel *fs = malloc(sizeof *fs);
  store_view *v = NULL;
  arena a = {0};
  if (!s || !fs) {
    reply_fail(r, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
    goto done;
  }
  featured_snapshot_get(f, s);
  size_t n = in->n_keys;
  long nul = wire_string_with_nul(req, len, 1);
  if (nul >= 0) {
    reply_fail(r, GRPC_STATUS_INVALID_ARGUMENT, "keys[%ld] holds a NUL byte: keys are UTF-8 text without NUL", nul);
    goto done;
  }
  if (n > (size_t)f->cfg.max_batch) {
    reply_fail(r, GRPC_STATUS_INVALID_ARGUMENT, "%zu keys asked for; at most %d per request (--max-batch)", n,
               f->cfg.max_batch);
    goto done;
  }
  if (fields_resolve(s, in->fields, fs, r) || view_begin(f, &v, r)) goto done;
  uint64_t *idx = arena_alloc(&a, (n ? n : 1) * sizeof *idx);
  char **missing = arena_alloc(&a, (n ? n : 1) * sizeof *missing);
  if (!idx || !missing) {
    reply_fail(r, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
    goto done;
  }
  size_t nf = 0, nm = 0;
  for (size_t i = 0; i < n; i++) {
    const char *key = in->keys[i] ? in->keys[i] : "";
    size_t kl = strlen(key);
    if (kl == 0 || kl > STORE_MAX_KEY) {
      reply_fail(r, GRPC_STATUS_INVALID_ARGUMENT, "keys[%zu] is empty or longer than %d bytes", i, STORE_MAX_KEY);
      goto done;
    }
    taca_error err;
    int rc = store_lookup_key(v, key, kl, &idx[nf], &err);
    if (rc < 0) {
      reply_store_fail(r, &err);
      goto done;
    }
    if (rc == 0) {
      nf++;
    } else if (in->allow_missing) {
      missing[nm++] = (char *)key;
    } else {
      reply_fail(r, GRPC_STATUS_NOT_FOUND, "key '%.200s' is not in this store (set allow_missing to skip unknown keys)",
                 key);
      goto done;
    }
  }
  Taca__V1__LookupResponse out = TACA__V1__LOOKUP_RESPONSE__INIT;
  Taca__V1__Batch b;
  if (batch_fill(v, s, fs, idx, nf, &a, &b, NULL, r)) goto done;
  out.batch = &b;
  out.n_missing_keys = nm;
  out.missing_keys = missing;
  reply_pack(r, &out.base, f->cfg.max_message);
done:
  store_view_end(v);
  arena_free(&a);
  free(fs);
  free(s);
  protobuf_c_message_free_unpacked(&in->base, NULL);
}

/* ---------- Search ---------- */

/* The captions or images of a Search embedded by the query model's encoder: nq x dim floats from a,
 * or NULL with the reply set (an empty caption, an image that does not decode: INVALID_ARGUMENT). */
static const float *search_encode(featured *f, const Taca__V1__SearchRequest *in, const char *qmodel, size_t nq, int dim,
                                  arena *a, reply *r) {
  taca_error err;
  float *enc = arena_alloc(a, nq * (size_t)dim * sizeof *enc);
  if (!enc) {
    reply_fail(r, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
    return NULL;
  }
  if (in->n_captions) {
    for (size_t i = 0; i < nq; i++)
      if (!in->captions[i] || !in->captions[i][0]) {
        reply_fail(r, GRPC_STATUS_INVALID_ARGUMENT, "captions[%zu] is empty", i);
        return NULL;
      }
    if (featured_encoders_embed_captions(f->encoders, qmodel, (const char *const *)in->captions, (int)nq, enc, dim,
                                         &err)) {
      reply_fail(r, GRPC_STATUS_INVALID_ARGUMENT, "%s", err.msg);
      return NULL;
    }
  } else {
    const uint8_t **bufs = arena_alloc(a, nq * sizeof *bufs);
    size_t *lens = arena_alloc(a, nq * sizeof *lens);
    uint8_t *ok = arena_alloc(a, nq);
    taca_error *ierr = arena_alloc(a, nq * sizeof *ierr);
    if (!bufs || !lens || !ok || !ierr) {
      reply_fail(r, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
      return NULL;
    }
    for (size_t i = 0; i < nq; i++) {
      bufs[i] = in->images[i].data;
      lens[i] = in->images[i].len;
    }
    if (featured_encoders_embed_images(f->encoders, qmodel, bufs, lens, (int)nq, enc, dim, ok, ierr, &err)) {
      reply_fail(r, GRPC_STATUS_INTERNAL, "%s", err.msg);
      return NULL;
    }
    for (size_t i = 0; i < nq; i++)
      if (!ok[i]) {
        reply_fail(r, GRPC_STATUS_INVALID_ARGUMENT, "images[%zu]: %s", i, ierr[i].msg);
        return NULL;
      }
  }
  return enc;
}

/* One query's hits into h: the finite ones of hit/score (k slots, -1 past the last), with the
 * scoring models (mixed galleries), keys, captions and metadata as asked. */
static int search_hits_fill(Taca__V1__SearchHits *h, const Taca__V1__SearchRequest *in, store_view *v,
                            const featured_snapshot *s, const int64_t *hit, float *score, int *hit_model, uint64_t *ids,
                            size_t k, arena *a, reply *r) {
  taca_error err;
  taca__v1__search_hits__init(h);
  size_t cnt = 0; /* the hits, in order; a score that over- or underflowed to +-inf/NaN is no hit */
  for (size_t j = 0; j < k && hit[j] >= 0; j++) {
    if (!isfinite(score[j])) continue;
    ids[cnt] = (uint64_t)hit[j];
    score[cnt] = score[j];
    if (hit_model) hit_model[cnt] = hit_model[j];
    cnt++;
  }
  h->n_indices = h->n_scores = cnt;
  h->indices = ids;
  h->scores = score;
  if (hit_model && cnt) {
    h->hit_models = arena_alloc(a, cnt * sizeof *h->hit_models);
    if (!h->hit_models) {
      reply_fail(r, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
      return -1;
    }
    for (size_t j = 0; j < cnt; j++) h->hit_models[j] = (char *)s->info.models[hit_model[j]].name;
    h->n_hit_models = cnt;
  }
  if (in->with_keys && cnt) {
    h->keys = arena_alloc(a, cnt * sizeof *h->keys);
    if (!h->keys) {
      reply_fail(r, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
      return -1;
    }
    for (size_t j = 0; j < cnt; j++) {
      store_sample smp;
      int rc = store_get_sample(v, h->indices[j], &smp, &err);
      if (rc == STORE_NOT_STORED) {
        h->keys[j] = (char *)"";  /* an embedding without its sample record: no key to give */
        continue;
      }
      if (rc) {
        reply_store_fail(r, &err);
        return -1;
      }
      char *kc = arena_alloc(a, smp.key_len + 1);
      if (!kc) {
        reply_fail(r, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
        return -1;
      }
      memcpy(kc, smp.key, smp.key_len);
      kc[smp.key_len] = '\0';
      h->keys[j] = kc;
    }
    h->n_keys = cnt;
  }
  if ((in->with_captions || in->with_metadata) && cnt) {
    if (batch_annotations(v, h->indices, cnt, in->with_captions, in->with_metadata, a, &h->captions, &h->metadata,
                          r))
      return -1;
    if (in->with_captions) h->n_captions = cnt;
    if (in->with_metadata) h->n_metadata = cnt;
  }
  return 0;
}

/* Search, step 1: the gallery model (and its fallbacks) and the query model, resolved through the
 * snapshot's aliases and checked to share one embedding space. 0, or -1 with the reply failed. */
static int search_models(const featured_snapshot *s, const Taca__V1__SearchRequest *in, int *id, int *qid, int *gal,
                         int *ngal, reply *r) {
  const char *name = in->model ? in->model : "";
  if ((*id = snapshot_resolve(s, name)) < 0) return reply_unknown_model(r, s, name), -1;
  const store_model *m = &s->info.models[*id];
  const char *qname = in->query_model && in->query_model[0] ? in->query_model : name;
  if ((*qid = snapshot_resolve(s, qname)) < 0) return reply_unknown_model(r, s, qname), -1;
  if (strcmp(s->space[*qid], s->space[*id])) {
    reply_fail(r, GRPC_STATUS_INVALID_ARGUMENT,
               "query model '%s' (space %s) and gallery model '%s' (space %s) live in different embedding spaces: "
               "their vectors do not compare (search an adapted model's queries against its old model's gallery)",
               s->info.models[*qid].name, s->space[*qid], m->name, s->space[*id]);
    return -1;
  }
  gal[0] = *id, *ngal = 1;
  if (in->n_gallery_fallback > FIELDS_MAX_EMB) {
    reply_fail(r, GRPC_STATUS_INVALID_ARGUMENT, "%zu gallery_fallback models; at most %d", in->n_gallery_fallback,
               FIELDS_MAX_EMB);
    return -1;
  }
  for (size_t j = 0; j < in->n_gallery_fallback; j++) {
    const char *gn = in->gallery_fallback[j] ? in->gallery_fallback[j] : "";
    int g = snapshot_resolve(s, gn);
    if (g < 0) return reply_unknown_model(r, s, gn), -1;
    if (strcmp(s->space[g], s->space[*id])) {
      reply_fail(r, GRPC_STATUS_INVALID_ARGUMENT,
                 "gallery_fallback[%zu] '%s' (space %s) is not in the space of '%s' (%s): a gallery is one space", j,
                 s->info.models[g].name, s->space[g], m->name, s->space[*id]);
      return -1;
    }
    for (int t = 0; t < *ngal; t++)
      if (gal[t] == g) {
        reply_fail(r, GRPC_STATUS_INVALID_ARGUMENT, "gallery model '%s' given twice", s->info.models[g].name);
        return -1;
      }
    gal[(*ngal)++] = g;
  }
  if (*ngal > 1 && in->ann) {
    reply_fail(r, GRPC_STATUS_INVALID_ARGUMENT, "ann with gallery_fallback: a mixed gallery is searched exactly only");
    return -1;
  }
  return 0;
}

/* Search, step 2: modality, width (the same in every gallery model), k and metric. */
static int search_shape(const featured *f, const featured_snapshot *s, const Taca__V1__SearchRequest *in,
                        const int *gal, int ngal, store_modality *mod, int *dim, reply *r) {
  const store_model *m = &s->info.models[gal[0]];
  if (in->modality != TACA__V1__MODALITY__MODALITY_IMAGE && in->modality != TACA__V1__MODALITY__MODALITY_TEXT) {
    reply_fail(r, GRPC_STATUS_INVALID_ARGUMENT, "modality %d is not IMAGE (0) or TEXT (1)", (int)in->modality);
    return -1;
  }
  *mod = in->modality == TACA__V1__MODALITY__MODALITY_TEXT ? STORE_TEXT : STORE_IMAGE;
  *dim = *mod == STORE_IMAGE ? m->image_dim : m->text_dim;
  if (*dim <= 0) {
    reply_fail(r, GRPC_STATUS_NOT_FOUND, "model '%s' stores no %s embeddings to search", m->name,
               store_modality_name(*mod));
    return -1;
  }
  for (int t = 1; t < ngal; t++) {
    const store_model *gm = &s->info.models[gal[t]];
    if ((*mod == STORE_IMAGE ? gm->image_dim : gm->text_dim) != *dim) {
      reply_fail(r, GRPC_STATUS_INVALID_ARGUMENT, "gallery model '%s' stores no %s embeddings of width %d", gm->name,
                 store_modality_name(*mod), *dim);
      return -1;
    }
  }
  if (in->k == 0 || in->k > (uint32_t)f->cfg.max_k) {
    reply_fail(r, GRPC_STATUS_INVALID_ARGUMENT, "k = %u: it must be in [1, %d] (--max-k)", in->k, f->cfg.max_k);
    return -1;
  }
  if (in->metric != TACA__V1__METRIC__METRIC_INNER_PRODUCT && in->metric != TACA__V1__METRIC__METRIC_COSINE) {
    reply_fail(r, GRPC_STATUS_INVALID_ARGUMENT, "metric %d is not INNER_PRODUCT (0) or COSINE (1)", (int)in->metric);
    return -1;
  }
  return 0;
}

/* Search, step 3: the nq query vectors: given (finite, nq x dim), or the query model's encoding of
 * the captions or images (its encoder must be loaded). */
static const float *search_queries(featured *f, const Taca__V1__SearchRequest *in, const store_model *qm,
                                   const store_model *m, store_modality mod, int dim, size_t *nq, arena *a, reply *r) {
  if ((in->n_queries > 0) + (in->n_captions > 0) + (in->n_images > 0) != 1) {
    reply_fail(r, GRPC_STATUS_INVALID_ARGUMENT, "give one of queries (nq x %d floats), captions or images, %s", dim,
               in->n_queries || in->n_captions || in->n_images ? "not both" : "got neither");
    return NULL;
  }
  if (in->n_queries) {
    if (in->n_queries % (size_t)dim) {
      reply_fail(r, GRPC_STATUS_INVALID_ARGUMENT,
                 "queries has %zu floats, not a multiple of model '%s' %s embedding width %d", in->n_queries, m->name,
                 store_modality_name(mod), dim);
      return NULL;
    }
    *nq = in->n_queries / (size_t)dim;
    for (size_t i = 0; i < in->n_queries; i++)
      if (!isfinite(in->queries[i])) {
        reply_fail(r, GRPC_STATUS_INVALID_ARGUMENT, "queries[%zu] (query %zu) is not finite", i, i / (size_t)dim);
        return NULL;
      }
  } else {
    *nq = in->n_captions ? in->n_captions : in->n_images;
    int have = in->n_captions ? featured_encoders_has_texts(f->encoders, qm->name)
                              : featured_encoders_has_images(f->encoders, qm->name);
    if (!have && featured_encoders_loaded(f->encoders, qm->name)) {
      reply_fail(r, GRPC_STATUS_FAILED_PRECONDITION, "model '%s' has no %s (its encoder is loaded, without one)",
                 qm->name, in->n_captions ? "text tower" : "image tower");
      return NULL;
    }
    if (!have) {
      char list[512];
      featured_encoders_list(f->encoders, list, sizeof list);
      reply_fail(r, GRPC_STATUS_FAILED_PRECONDITION,
                 "Search by %s needs the %s of model '%s': start taca-featured with --model %s=PATH[:ARCH]"
                 " (encoders loaded: %s)",
                 in->n_captions ? "caption" : "image", in->n_captions ? "text tower" : "image encoder", qm->name,
                 qm->name, list);
      return NULL;
    }
  }
  if (*nq > (size_t)f->cfg.max_batch) {
    reply_fail(r, GRPC_STATUS_INVALID_ARGUMENT, "%zu queries; at most %d per request (--max-batch)", *nq,
               f->cfg.max_batch);
    return NULL;
  }
  if (in->n_queries) return in->queries;
  return search_encode(f, in, qm->name, *nq, dim, a, r);
}

/* Search, step 4: the top k of each query through the ANN index, the mixed gallery or the exact scan. */
static int search_top_k(featured *f, const Taca__V1__SearchRequest *in, store_view *v, const store_model *m,
                        const int *gal, int ngal, store_modality mod, const float *q, size_t nq, size_t k,
                        int64_t *hit, float *score, int *hit_model, reply *r) {
  taca_error err;
  const int id = gal[0];
  store_metric metric = in->metric == TACA__V1__METRIC__METRIC_COSINE ? STORE_METRIC_COSINE : STORE_METRIC_IP;
  if (in->ann) {
    const ann_index *ix = f->ann[id][mod];
    if (!ix) {
      reply_fail(r, GRPC_STATUS_FAILED_PRECONDITION, "%s", f->ann_error[id][mod]);
      return -1;
    }
    if (strcmp(ann_index_info(ix)->metric, metric == STORE_METRIC_COSINE ? "cosine" : "ip")) {
      reply_fail(r, GRPC_STATUS_INVALID_ARGUMENT, "the ANN index of model '%s' serves %s, the request asks for %s",
                 m->name, ann_index_info(ix)->metric, metric == STORE_METRIC_COSINE ? "COSINE" : "INNER_PRODUCT");
      return -1;
    }
    if (ann_check_refine((int64_t)k, in->refine, &err)) {
      reply_fail(r, GRPC_STATUS_INVALID_ARGUMENT, "%s", err.msg);
      return -1;
    }
    if (ann_search(ix, v, q, (int)nq, (int)k, metric, (int)(in->nprobe > 1u << 20 ? 1u << 20 : in->nprobe),
                   (int)in->refine, hit, score, &err))
      return reply_store_fail(r, &err), -1;
  } else if (ngal > 1) {
    if (store_search_gallery(v, gal, ngal, mod, q, (int)nq, (int)k, metric, hit, score, hit_model, &err))
      return reply_store_fail(r, &err), -1;
  } else if (store_search(v, id, mod, q, (int)nq, (int)k, metric, hit, score, &err)) {
    return reply_store_fail(r, &err), -1;
  }
  return 0;
}

void handle_search(featured *f, const uint8_t *req, size_t len, reply *r) {
  Taca__V1__SearchRequest *in = UNPACK(Taca__V1__SearchRequest, taca__v1__search_request__descriptor, req, len);
  if (!in) {
    malformed(r, "SearchRequest", len);
    return;
  }
  featured_snapshot *s = malloc(sizeof *s);
  store_view *v = NULL;
  arena a = {0};
  if (!s) {
    reply_fail(r, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
    goto done;
  }
  featured_snapshot_get(f, s);
  int id, qid, gal[1 + FIELDS_MAX_EMB], ngal, dim;
  store_modality mod;
  if (search_models(s, in, &id, &qid, gal, &ngal, r) || search_shape(f, s, in, gal, ngal, &mod, &dim, r)) goto done;
  const store_model *m = &s->info.models[id], *qm = &s->info.models[qid];
  size_t nq = 0;
  const float *q = search_queries(f, in, qm, m, mod, dim, &nq, &a, r);
  if (!q) goto done;
  /* buffers by what can come back: k past the stored vectors returns them all */
  uint64_t stored = 0;
  for (int t = 0; t < ngal; t++) stored += s->info.n_embeddings[gal[t]][mod];
  size_t k = in->k < stored ? in->k : (stored ? (size_t)stored : 1);
  if ((double)nq * (double)k > (double)(64u << 20)) { /* the search's heaps: nq x k entries per thread */
    reply_fail(r, GRPC_STATUS_RESOURCE_EXHAUSTED, "%zu queries x k = %zu results are too many for one call: lower k or "
               "split the queries", nq, k);
    goto done;
  }
  int64_t *hit = arena_alloc(&a, nq * k * sizeof *hit);
  float *score = arena_alloc(&a, nq * k * sizeof *score);
  int *hit_model = ngal > 1 ? arena_alloc(&a, nq * k * sizeof *hit_model) : NULL;
  if (!hit || !score || (ngal > 1 && !hit_model)) {
    reply_fail(r, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory for %zu x %zu results", nq, k);
    goto done;
  }
  if (view_begin(f, &v, r) || search_top_k(f, in, v, m, gal, ngal, mod, q, nq, k, hit, score, hit_model, r)) goto done;
  Taca__V1__SearchResponse out = TACA__V1__SEARCH_RESPONSE__INIT;
  Taca__V1__SearchHits *hits = arena_alloc(&a, (nq ? nq : 1) * sizeof *hits);
  Taca__V1__SearchHits **hp = arena_alloc(&a, (nq ? nq : 1) * sizeof *hp);
  uint64_t *ids = arena_alloc(&a, (nq * k > 0 ? nq * k : 1) * sizeof *ids);
  if (!hits || !hp || !ids) {
    reply_fail(r, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
    goto done;
  }
  for (size_t i = 0; i < nq; i++) {
    Taca__V1__SearchHits *h = &hits[i];
    if (search_hits_fill(h, in, v, s, hit + i * k, score + i * k, hit_model ? hit_model + i * k : NULL, ids + i * k, k,
                         &a, r))
      goto done;
    hp[i] = h;
  }
  out.n_results = nq;
  out.results = hp;
  out.resolved_model = (char *)m->name;
  out.resolved_query_model = (char *)qm->name;
  reply_pack(r, &out.base, f->cfg.max_message);
done:
  store_view_end(v);
  arena_free(&a);
  free(s);
  protobuf_c_message_free_unpacked(&in->base, NULL);
}

/* ---------- Health ---------- */

int health_status(featured *f, const char *service) {
  if (strcmp(service, "") && strcmp(service, "taca.v1.FeatureCache")) return -1;
  return featured_draining(f) ? 2 : 1;
}

int health_parse_request(const uint8_t *req, size_t len, char *buf, size_t cap, reply *r) {
  Grpc__Health__V1__HealthCheckRequest *in =
      UNPACK(Grpc__Health__V1__HealthCheckRequest, grpc__health__v1__health_check_request__descriptor, req, len);
  if (!in) return malformed(r, "HealthCheckRequest", len);
  snprintf(buf, cap, "%s", in->service ? in->service : "");
  int toolong = in->service && strlen(in->service) >= cap;
  protobuf_c_message_free_unpacked(&in->base, NULL);
  if (toolong) return reply_fail(r, GRPC_STATUS_NOT_FOUND, "unknown service (name of %zu+ bytes)", cap);
  return 0;
}

int health_pack_status(int status, reply *r) {
  Grpc__Health__V1__HealthCheckResponse out = GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__INIT;
  out.status = (Grpc__Health__V1__HealthCheckResponse__ServingStatus)status;
  return reply_pack(r, &out.base, SIZE_MAX);
}

void handle_health_check(featured *f, const uint8_t *req, size_t len, reply *r) {
  char service[256];
  if (health_parse_request(req, len, service, sizeof service, r)) return;
  int st = health_status(f, service);
  if (st < 0) {
    reply_fail(r, GRPC_STATUS_NOT_FOUND, "unknown service '%s' (known: \"\" and \"taca.v1.FeatureCache\")", service);
    return;
  }
  health_pack_status(st, r);
}

/* ---------- StreamEpoch ---------- */

struct epoch_stream {
  featured *f;
  featured_snapshot *snap;
  field_sel fs;
  const epoch_perm *perm;
  uint64_t begin, share, count, pos;
  uint32_t rank, world, batch_size;
  uint64_t *idx;
};

void epoch_stream_close(epoch_stream *s) {
  if (!s) return;
  epoch_cache_release(s->f->epochs, s->perm);
  free(s->idx);
  free(s->snap);
  free(s);
}

uint64_t epoch_stream_position(const epoch_stream *s) { return s->pos; }
uint64_t epoch_stream_count(const epoch_stream *s) { return s->count; }

int epoch_stream_open(featured *f, const uint8_t *req, size_t len, epoch_stream **out, reply *r) {
  *out = NULL;
  Taca__V1__StreamEpochRequest *in =
      UNPACK(Taca__V1__StreamEpochRequest, taca__v1__stream_epoch_request__descriptor, req, len);
  if (!in) return malformed(r, "StreamEpochRequest", len);
  int rc = -1;
  epoch_stream *s = calloc(1, sizeof *s);
  if (!s || !(s->snap = malloc(sizeof *s->snap))) {
    reply_fail(r, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
    goto done;
  }
  s->f = f;
  featured_snapshot_get(f, s->snap);
  const featured_snapshot *sn = s->snap;
  if (in->world_size == 0) {
    reply_fail(r, GRPC_STATUS_INVALID_ARGUMENT, "world_size must be at least 1");
    goto done;
  }
  if (in->rank >= in->world_size) {
    reply_fail(r, GRPC_STATUS_INVALID_ARGUMENT, "rank %u is not below world_size %u", in->rank, in->world_size);
    goto done;
  }
  if (in->batch_size == 0 || in->batch_size > (uint32_t)f->cfg.max_batch) {
    reply_fail(r, GRPC_STATUS_INVALID_ARGUMENT, "batch_size %u: it must be in [1, %d] (--max-batch)", in->batch_size,
               f->cfg.max_batch);
    goto done;
  }
  if (fields_resolve(sn, in->fields, &s->fs, r)) goto done;
  uint64_t n = sn->end - sn->begin;
  if (sn->info.n_samples < n) {
    reply_fail(r, GRPC_STATUS_FAILED_PRECONDITION,
               "the store holds %llu samples of its range [%llu, %llu): an epoch needs all of them (is the "
               "precompute still running?)",
               (unsigned long long)sn->info.n_samples, (unsigned long long)sn->begin, (unsigned long long)sn->end);
    goto done;
  }
  s->begin = sn->begin;
  s->rank = in->rank;
  s->world = in->world_size;
  s->batch_size = in->batch_size;
  s->share = epoch_share_size(n, in->rank, in->world_size);
  s->count = epoch_batch_count(s->share, in->batch_size, in->drop_last);
  if (in->start_batch > s->count) {
    reply_fail(r, GRPC_STATUS_INVALID_ARGUMENT, "start_batch %llu is beyond the %llu batches of rank %u's share",
               (unsigned long long)in->start_batch, (unsigned long long)s->count, in->rank);
    goto done;
  }
  s->pos = in->start_batch;
  taca_error err;
  if (!(s->perm = epoch_cache_get(f->epochs, in->seed, in->epoch, n, &err))) {
    reply_fail(r, GRPC_STATUS_RESOURCE_EXHAUSTED, "%s", err.msg);
    goto done;
  }
  if (!(s->idx = malloc((size_t)in->batch_size * sizeof *s->idx))) {
    reply_fail(r, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
    goto done;
  }
  *out = s;
  s = NULL;
  rc = 0;
done:
  epoch_stream_close(s);
  protobuf_c_message_free_unpacked(&in->base, NULL);
  return rc;
}

int epoch_stream_next(epoch_stream *s, reply *r) {
  if (s->pos >= s->count) return 0;
  uint64_t j0 = s->pos * s->batch_size, j1 = j0 + s->batch_size;
  if (j1 > s->share) j1 = s->share;
  size_t n = (size_t)(j1 - j0);
  for (size_t i = 0; i < n; i++) s->idx[i] = s->begin + s->perm->perm[s->rank + (j0 + i) * s->world];
  store_view *v;
  if (view_begin(s->f, &v, r)) return -1;
  arena a = {0};
  Taca__V1__Batch b;
  int rc = batch_fill(v, s->snap, &s->fs, s->idx, n, &a, &b, &r->tail, r);
  if (rc == 0) {
    b.sequence = s->pos;
    b.batch_count = s->count;
    hand_view_to_tail(r, &v);
    rc = reply_pack(r, &b.base, s->f->cfg.max_message);
  }
  store_view_end(v);
  arena_free(&a);
  if (rc) return -1;
  s->pos++;
  return 1;
}

/* ---------- Embed ---------- */

void handle_embed(featured *f, const uint8_t *req, size_t len, reply *r) {
  Taca__V1__EmbedRequest *in = UNPACK(Taca__V1__EmbedRequest, taca__v1__embed_request__descriptor, req, len);
  if (!in) {
    malformed(r, "EmbedRequest", len);
    return;
  }
  featured_snapshot *s = malloc(sizeof *s);
  arena a = {0};
  if (!s) {
    reply_fail(r, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
    goto done;
  }
  featured_snapshot_get(f, s);
  const char *name = in->model ? in->model : "";
  int id = snapshot_resolve(s, name);
  if (id < 0) {
    reply_unknown_model(r, s, name);
    goto done;
  }
  const store_model *m = &s->info.models[id];
  if ((in->n_images > 0) == (in->n_captions > 0)) {
    reply_fail(r, GRPC_STATUS_INVALID_ARGUMENT, "give either images (encoded JPEG/PNG/WebP bytes) or captions, %s",
               in->n_images ? "not both" : "got neither");
    goto done;
  }
  size_t n = in->n_images ? in->n_images : in->n_captions;
  if (n > (size_t)f->cfg.max_batch) {
    reply_fail(r, GRPC_STATUS_INVALID_ARGUMENT, "%zu items; at most %d per Embed call (--max-batch)", n,
               f->cfg.max_batch);
    goto done;
  }
  int images = in->n_images > 0;
  if ((images ? !featured_encoders_has_images(f->encoders, m->name) : !featured_encoders_has_texts(f->encoders, m->name)) &&
      featured_encoders_loaded(f->encoders, m->name)) {
    reply_fail(r, GRPC_STATUS_FAILED_PRECONDITION, "model '%s' has no %s (its encoder is loaded, without one)", m->name,
               images ? "image tower" : "text tower");
    goto done;
  }
  if (images ? !featured_encoders_has_images(f->encoders, m->name) : !featured_encoders_has_texts(f->encoders, m->name)) {
    char list[512];
    featured_encoders_list(f->encoders, list, sizeof list);
    reply_fail(r, GRPC_STATUS_FAILED_PRECONDITION,
               "Embed of %s needs the %s of model '%s' loaded: start taca-featured with --model %s=PATH[:ARCH] "
               "(encoders loaded: %s)",
               images ? "images" : "captions", images ? "image encoder" : "text tower", m->name, m->name, list);
    goto done;
  }
  int dim = images ? m->image_dim : m->text_dim;
  if (dim <= 0) { /* the model stores no vectors of this modality: the encoder's own width */
    reply_fail(r, GRPC_STATUS_FAILED_PRECONDITION, "model '%s' stores no %s embeddings: its space has no %s width here",
               m->name, images ? "image" : "text", images ? "image" : "text");
    goto done;
  }
  float *out = arena_alloc(&a, n * (size_t)dim * sizeof *out);
  uint8_t *ok = arena_alloc(&a, n);
  taca_error *ierr = arena_alloc(&a, n * sizeof *ierr);
  if (!out || !ok || !ierr) {
    reply_fail(r, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory for %zu x %d features", n, dim);
    goto done;
  }
  taca_error err;
  if (images) {
    const uint8_t **bufs = arena_alloc(&a, n * sizeof *bufs);
    size_t *lens = arena_alloc(&a, n * sizeof *lens);
    if (!bufs || !lens) {
      reply_fail(r, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
      goto done;
    }
    for (size_t i = 0; i < n; i++) {
      bufs[i] = in->images[i].data;
      lens[i] = in->images[i].len;
    }
    if (featured_encoders_embed_images(f->encoders, m->name, bufs, lens, (int)n, out, dim, ok, ierr, &err)) {
      reply_fail(r, GRPC_STATUS_INTERNAL, "%s", err.msg);
      goto done;
    }
  } else {
    /* good captions are embedded together; empty ones get their own error */
    const char **caps = arena_alloc(&a, n * sizeof *caps);
    size_t *pos = arena_alloc(&a, n * sizeof *pos);
    float *emb = arena_alloc(&a, n * (size_t)dim * sizeof *emb);
    if (!caps || !pos || !emb) {
      reply_fail(r, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
      goto done;
    }
    size_t good = 0;
    for (size_t i = 0; i < n; i++) {
      ok[i] = in->captions[i] && in->captions[i][0];
      if (!ok[i]) {
        taca_fail(&ierr[i], "caption is empty");
        continue;
      }
      pos[good] = i;
      caps[good++] = in->captions[i];
    }
    memset(out, 0, n * (size_t)dim * sizeof *out);
    if (good && featured_encoders_embed_captions(f->encoders, m->name, caps, (int)good, emb, dim, &err)) {
      reply_fail(r, GRPC_STATUS_INVALID_ARGUMENT, "%s", err.msg);
      goto done;
    }
    for (size_t j = 0; j < good; j++) memcpy(out + pos[j] * dim, emb + j * dim, sizeof *out * (size_t)dim);
  }
  size_t nerr = 0;
  for (size_t i = 0; i < n; i++) nerr += !ok[i];
  if (in->normalize) taca_l2_normalize_rows(out, n, dim); /* failed rows are zero and stay zero */
  Taca__V1__EmbedResponse resp = TACA__V1__EMBED_RESPONSE__INIT;
  Taca__V1__EmbedError *ev = arena_alloc(&a, (nerr ? nerr : 1) * sizeof *ev);
  Taca__V1__EmbedError **ep = arena_alloc(&a, (nerr ? nerr : 1) * sizeof *ep);
  if (!ev || !ep) {
    reply_fail(r, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
    goto done;
  }
  size_t e = 0;
  for (size_t i = 0; i < n; i++)
    if (!ok[i]) {
      taca__v1__embed_error__init(&ev[e]);
      ev[e].item = (uint32_t)i;
      ev[e].message = ierr[i].msg;
      ep[e] = &ev[e];
      e++;
    }
  resp.model = (char *)m->name;
  resp.dim = (uint32_t)dim;
  resp.data.data = (uint8_t *)out;
  resp.data.len = n * (size_t)dim * sizeof *out;
  resp.ok.data = ok;
  resp.ok.len = n;
  resp.n_errors = nerr;
  resp.errors = ep;
  resp.space = s->space[id];
  reply_pack(r, &resp.base, f->cfg.max_message);
done:
  arena_free(&a);
  free(s);
  protobuf_c_message_free_unpacked(&in->base, NULL);
}

/* ---------- SetAlias ---------- */

void handle_set_alias(featured *f, const uint8_t *req, size_t len, reply *r) {
  Taca__V1__SetAliasRequest *in = UNPACK(Taca__V1__SetAliasRequest, taca__v1__set_alias_request__descriptor, req, len);
  if (!in) {
    malformed(r, "SetAliasRequest", len);
    return;
  }
  featured_alias now;
  char prev[STORE_NAME_MAX];
  int code;
  taca_error err;
  if (featured_set_alias(f, in->name ? in->name : "", in->target ? in->target : "", in->allow_space_change,
                         in->if_version, &now, prev, &code, &err)) {
    reply_fail(r, (grpc_status_code)code, "%s", err.msg);
  } else {
    log_msg(LOG_INFO, "alias '%s': '%s' -> '%s' (version %llu)", now.name, prev[0] ? prev : "(new)",
            now.target[0] ? now.target : "(removed)", (unsigned long long)now.version);
    Taca__V1__SetAliasResponse resp = TACA__V1__SET_ALIAS_RESPONSE__INIT;
    Taca__V1__Alias al = TACA__V1__ALIAS__INIT;
    al.name = now.name;
    al.target = now.target;
    al.version = now.version;
    resp.alias = &al;
    resp.previous_target = prev;
    reply_pack(r, &resp.base, f->cfg.max_message);
  }
  protobuf_c_message_free_unpacked(&in->base, NULL);
}
