/* batch.c: field selection and Batch message assembly (see batch.h). */
#include "services/featured/batch.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "storage/gather.h"

int reply_unknown_model(reply *r, const featured_snapshot *s, const char *name) {
  char list[1024] = "";
  for (int i = 0; i < s->info.n_models; i++) {
    size_t l = strlen(list);
    snprintf(list + l, sizeof list - l, "%s%s", i ? ", " : "", s->info.models[i].name);
  }
  const featured_alias *al = alias_find(&s->aliases, name);
  if (al)
    return reply_fail(r, GRPC_STATUS_NOT_FOUND, "alias '%.64s' points at '%s', which is not in this store (it has: %s)",
                      name, al->target, s->info.n_models ? list : "none");
  for (int i = 0; i < s->aliases.n; i++) {
    size_t l = strlen(list);
    snprintf(list + l, sizeof list - l, "%s%s -> %s", l ? ", " : "", s->aliases.a[i].name, s->aliases.a[i].target);
  }
  return reply_fail(r, GRPC_STATUS_NOT_FOUND, "model '%.64s' is not in this store (it has: %s)", name,
                    list[0] ? list : "none");
}

int fields_resolve(const featured_snapshot *s, const Taca__V1__Fields *in, field_sel *out, reply *r) {
  memset(out, 0, sizeof *out);
  if (!in) return 0;
  out->pixels = in->pixels;
  out->tokens = in->tokens;
  out->labels = in->labels;
  out->keys = in->keys;
  out->as_f32 = in->embeddings_as_f32;
  out->captions = in->captions;
  out->metadata = in->metadata;
  if (out->pixels && !s->info.has_pixel_format)
    return reply_fail(r, GRPC_STATUS_FAILED_PRECONDITION, "this store holds no pixels: do not ask for fields.pixels");
  if (in->n_embeddings > FIELDS_MAX_EMB)
    return reply_fail(r, GRPC_STATUS_INVALID_ARGUMENT, "%zu embedding sets asked for; at most %d per request",
                      in->n_embeddings, FIELDS_MAX_EMB);
  for (size_t i = 0; i < in->n_embeddings; i++) {
    const Taca__V1__EmbeddingRef *e = in->embeddings[i];
    const char *name = e->model ? e->model : "";
    int id = snapshot_resolve(s, name);
    if (id < 0) return reply_unknown_model(r, s, name);
    if (e->modality != TACA__V1__MODALITY__MODALITY_IMAGE && e->modality != TACA__V1__MODALITY__MODALITY_TEXT)
      return reply_fail(r, GRPC_STATUS_INVALID_ARGUMENT, "embeddings[%zu]: modality %d is not IMAGE (0) or TEXT (1)",
                        i, (int)e->modality);
    const store_model *m = &s->info.models[id];
    store_modality mod = e->modality == TACA__V1__MODALITY__MODALITY_TEXT ? STORE_TEXT : STORE_IMAGE;
    int dim = mod == STORE_IMAGE ? m->image_dim : m->text_dim;
    if (dim <= 0)
      return reply_fail(r, GRPC_STATUS_NOT_FOUND, "model '%s' stores no %s embeddings", m->name,
                        store_modality_name(mod));
    field_emb *fe = &out->emb[out->n_emb++];
    fe->model = id;
    fe->mod = mod;
    fe->dim = dim;
    fe->dtype = m->dtype;
    snprintf(fe->name, sizeof fe->name, "%s", name); /* as asked (an alias stays an alias) */
  }
  return 0;
}

int check_indices(const featured_snapshot *s, const uint64_t *idx, size_t n, reply *r) {
  for (size_t i = 0; i < n; i++)
    if (idx[i] < s->begin || idx[i] >= s->end)
      return reply_fail(r, GRPC_STATUS_INVALID_ARGUMENT,
                        "indices[%zu] = %llu is outside the range this server serves, [%llu, %llu)", i,
                        (unsigned long long)idx[i], (unsigned long long)s->begin, (unsigned long long)s->end);
  return 0;
}

static int oom(reply *r) { return reply_fail(r, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory building a batch"); }

int reply_store_fail(reply *r, const taca_error *e) {
  return reply_fail(r, store_error_is_corrupt(e) ? GRPC_STATUS_DATA_LOSS : GRPC_STATUS_INTERNAL, "%s", e->msg);
}

/* rc is a store getter's answer: STORE_NOT_STORED or a failure. */
static int missing_sample(const featured_snapshot *s, uint64_t index, int rc, const taca_error *e, reply *r) {
  if (rc == STORE_NOT_STORED)
    return reply_fail(r, GRPC_STATUS_NOT_FOUND,
                      "sample %llu is not stored (the store holds %llu samples of its range [%llu, %llu))",
                      (unsigned long long)index, (unsigned long long)s->info.n_samples,
                      (unsigned long long)s->begin, (unsigned long long)s->end);
  return reply_store_fail(r, e);
}

/* A sample's pixels, or none (len 0) when it has none stored. */
static int get_pixels(store_view *v, uint64_t index, const uint8_t **d, size_t *len, reply *r) {
  taca_error err;
  int rc = store_get_pixels(v, index, d, len, &err);
  if (rc == STORE_NOT_STORED) {
    *d = NULL;
    *len = 0;
    return 0;
  }
  return rc ? reply_store_fail(r, &err) : 0;
}

int batch_annotations(store_view *v, const uint64_t *idx, size_t n, int captions, int metadata, arena *a,
                      char ***caps_out, char ***meta_out, reply *r) {
  char **caps = captions ? arena_alloc(a, (n ? n : 1) * sizeof *caps) : NULL;
  char **meta = metadata ? arena_alloc(a, (n ? n : 1) * sizeof *meta) : NULL;
  if ((captions && !caps) || (metadata && !meta)) return oom(r);
  taca_error err;
  for (size_t i = 0; i < n; i++)
    for (int which = 0; which < 2; which++) {
      char **dst = which ? meta : caps;
      if (!dst) continue;
      const char *t;
      size_t len;
      int found;
      int rc = which ? store_get_metadata(v, idx[i], &t, &len, &found, &err)
                     : store_get_caption(v, idx[i], &t, &len, &found, &err);
      if (rc) return reply_store_fail(r, &err);
      char *c = arena_alloc(a, found ? len + 1 : 1);
      if (!c) return oom(r);
      if (found) memcpy(c, t, len);
      c[found ? len : 0] = '\0';
      dst[i] = c;
    }
  *caps_out = caps;
  *meta_out = meta;
  return 0;
}

int batch_fill(store_view *v, const featured_snapshot *s, const field_sel *fs, const uint64_t *idx, size_t n,
               arena *a, Taca__V1__Batch *out, reply_tail *tail, reply *r) {
  taca__v1__batch__init(out);
  out->n_indices = n;
  out->indices = (uint64_t *)idx;
  taca_error err;
  if (fs->tokens || fs->labels || fs->keys) {
    int32_t *tokens = NULL, *labels = NULL;
    char **keys = NULL;
    if (fs->tokens && !(tokens = arena_alloc(a, n * STORE_CONTEXT_LEN * sizeof *tokens))) return oom(r);
    if (fs->labels && !(labels = arena_alloc(a, n * sizeof *labels))) return oom(r);
    if (fs->keys && !(keys = arena_alloc(a, n * sizeof *keys))) return oom(r);
    for (size_t i = 0; i < n; i++) {
      store_sample smp;
      int rc = store_get_sample(v, idx[i], &smp, &err);
      if (rc) return missing_sample(s, idx[i], rc, &err, r);
      if (tokens) memcpy(tokens + i * STORE_CONTEXT_LEN, smp.tokens, sizeof smp.tokens);
      if (labels) labels[i] = smp.label;
      if (keys) {
        char *k = arena_alloc(a, smp.key_len + 1);
        if (!k) return oom(r);
        memcpy(k, smp.key, smp.key_len);
        k[smp.key_len] = '\0';
        keys[i] = k;
      }
    }
    if (tokens) {
      out->tokens.data = (uint8_t *)tokens;
      out->tokens.len = n * STORE_CONTEXT_LEN * sizeof *tokens;
    }
    if (labels) {
      out->n_labels = n;
      out->labels = labels;
    }
    if (keys) {
      out->n_keys = n;
      out->keys = keys;
    }
  }
  if ((fs->captions || fs->metadata) && batch_annotations(v, idx, n, fs->captions, fs->metadata, a, &out->captions,
                                                          &out->metadata, r))
    return -1;
  if (fs->captions) out->n_captions = n;
  if (fs->metadata) out->n_metadata = n;
  if (fs->pixels && tail) {
    tail->field = 2; /* Batch.pixels */
    tail->data = malloc((n ? n : 1) * sizeof *tail->data);
    tail->len = malloc((n ? n : 1) * sizeof *tail->len);
    if (!tail->data || !tail->len) return oom(r);
    for (size_t i = 0; i < n; i++)
      if (get_pixels(v, idx[i], &tail->data[i], &tail->len[i], r)) return -1;
    tail->n = n;
  } else if (fs->pixels) {
    ProtobufCBinaryData *px = arena_alloc(a, n * sizeof *px);
    if (!px) return oom(r);
    for (size_t i = 0; i < n; i++) {
      const uint8_t *d;
      size_t len;
      if (get_pixels(v, idx[i], &d, &len, r)) return -1;
      px[i].data = (uint8_t *)d;
      px[i].len = len;
    }
    out->n_pixels = n;
    out->pixels = px;
  }
  if (fs->n_emb) {
    Taca__V1__EmbeddingData **eds = arena_alloc(a, (size_t)fs->n_emb * sizeof *eds);
    if (!eds) return oom(r);
    for (int e = 0; e < fs->n_emb; e++) {
      const field_emb *fe = &fs->emb[e];
      Taca__V1__EmbeddingData *ed = arena_alloc(a, sizeof *ed);
      if (!ed) return oom(r);
      taca__v1__embedding_data__init(ed);
      size_t esz = fs->as_f32 ? sizeof(float) : taca_dtype_size(fe->dtype);
      size_t bytes = n * (size_t)fe->dim * esz;
      uint8_t *data = arena_alloc(a, bytes), *present = arena_alloc(a, n);
      if (!data || !present) return oom(r);
      if (store_gather_embeddings(v, fe->model, fe->mod, idx, n, fs->as_f32, data, present, &err))
        return reply_store_fail(r, &err);
      ed->model = (char *)fe->name;
      ed->resolved_model = (char *)s->info.models[fe->model].name;
      ed->modality = fe->mod == STORE_TEXT ? TACA__V1__MODALITY__MODALITY_TEXT : TACA__V1__MODALITY__MODALITY_IMAGE;
      ed->dtype = (fs->as_f32 || fe->dtype == TACA_DT_F32) ? TACA__V1__DTYPE__DTYPE_F32 : TACA__V1__DTYPE__DTYPE_F16;
      ed->dim = (uint32_t)fe->dim;
      ed->data.data = data;
      ed->data.len = bytes;
      ed->present.data = present;
      ed->present.len = n;
      eds[e] = ed;
    }
    out->n_embeddings = (size_t)fs->n_emb;
    out->embeddings = eds;
  }
  return 0;
}
