/* batch_convert.c: taca_fields -> the request's Fields message, and received Batch messages ->
 * taca_batch (checked against what was asked for, rows scattered to their request positions).
 * Pixels are not copied: a Batch's top-level fields are walked once, the pixel entries referenced in
 * the received bytes and only the rest handed to protobuf-c; tokens and embeddings are copied once
 * into aligned arrays. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "client/client_internal.h"

struct taca_batch_mem {
  void *block;
  rx_batch *rx;
  int n_rx, cap_rx;
};

/* ---------- received batches ---------- */

static int read_varint(const uint8_t **p, const uint8_t *end, uint64_t *v) {
  uint64_t x = 0;
  for (int shift = 0; shift < 64; shift += 7) {
    if (*p >= end) return -1;
    uint8_t b = *(*p)++;
    x |= (uint64_t)(b & 0x7F) << shift;
    if (!(b & 0x80)) {
      *v = x;
      return 0;
    }
  }
  return -1;
}

/* One pass over the top-level fields: field 2 (pixels) entries are recorded as pointers into data
 * (when pix is non-NULL), every other field is copied to rest. Returns the number of pixel entries,
 * or -1 if the encoding is broken. */
static long split_pixels(const uint8_t *data, size_t len, const uint8_t **pix, size_t *pix_len, uint8_t *rest,
                         size_t *rest_len) {
  const uint8_t *p = data, *end = data + len;
  long n = 0;
  size_t rl = 0;
  while (p < end) {
    const uint8_t *start = p;
    uint64_t tag, v;
    if (read_varint(&p, end, &tag)) return -1;
    switch (tag & 7) {
      case 0:
        if (read_varint(&p, end, &v)) return -1;
        break;
      case 1:
        if (end - p < 8) return -1;
        p += 8;
        break;
      case 5:
        if (end - p < 4) return -1;
        p += 4;
        break;
      case 2:
        if (read_varint(&p, end, &v) || v > (uint64_t)(end - p)) return -1;
        if ((tag >> 3) == 2) {
          if (pix) {
            pix[n] = p;
            pix_len[n] = (size_t)v;
          }
          n++;
          p += v;
          continue;
        }
        p += v;
        break;
      default: return -1;
    }
    if (rest) memcpy(rest + rl, start, (size_t)(p - start));
    rl += (size_t)(p - start);
  }
  if (rest_len) *rest_len = rl;
  return n;
}

int rx_batch_parse(grpc_slice s, rx_batch *rx) {
  memset(rx, 0, sizeof *rx);
  if (!s.refcount && GRPC_SLICE_LENGTH(s) > 0) {
    /* An inlined slice keeps its bytes inside the struct, which moves: give them a fixed home. */
    grpc_slice heap = grpc_slice_malloc_large(GRPC_SLICE_LENGTH(s));
    memcpy(GRPC_SLICE_START_PTR(heap), GRPC_SLICE_START_PTR(s), GRPC_SLICE_LENGTH(s));
    grpc_slice_unref(s);
    s = heap;
  }
  rx->raw = s;
  rx->has_raw = 1;
  const uint8_t *data = GRPC_SLICE_START_PTR(rx->raw);
  size_t len = GRPC_SLICE_LENGTH(rx->raw), rest_len = 0;
  long n = split_pixels(data, len, NULL, NULL, NULL, NULL);
  uint8_t *rest = malloc(len ? len : 1);
  if (n < 0 || !rest || !(rx->pix = malloc((size_t)(n ? n : 1) * sizeof *rx->pix)) ||
      !(rx->pix_len = malloc((size_t)(n ? n : 1) * sizeof *rx->pix_len))) {
    free(rest);
    rx_batch_free(rx);
    return -1;
  }
  split_pixels(data, len, rx->pix, rx->pix_len, rest, &rest_len);
  rx->n_pix = (size_t)n;
  rx->b = taca__v1__batch__unpack(NULL, rest_len, rest);
  free(rest);
  if (!rx->b) {
    rx_batch_free(rx);
    return -1;
  }
  rx->owner = &rx->b->base;
  return 0;
}

int rx_batch_wrap(Taca__V1__Batch *b, ProtobufCMessage *owner, rx_batch *rx) {
  memset(rx, 0, sizeof *rx);
  rx->b = b;
  rx->owner = owner;
  size_t n = b->n_pixels;
  rx->pix = malloc((n ? n : 1) * sizeof *rx->pix);
  rx->pix_len = malloc((n ? n : 1) * sizeof *rx->pix_len);
  if (!rx->pix || !rx->pix_len) {
    rx_batch_free(rx);
    return -1;
  }
  for (size_t i = 0; i < n; i++) {
    rx->pix[i] = b->pixels[i].data;
    rx->pix_len[i] = b->pixels[i].len;
  }
  rx->n_pix = n;
  return 0;
}

void rx_batch_free(rx_batch *rx) {
  if (rx->owner) protobuf_c_message_free_unpacked(rx->owner, NULL);
  if (rx->has_raw) grpc_slice_unref(rx->raw);
  free(rx->pix);
  free(rx->pix_len);
  memset(rx, 0, sizeof *rx);
}

void fields_to_proto(const taca_fields *f, Taca__V1__Fields *pf, Taca__V1__EmbeddingRef *refs,
                     Taca__V1__EmbeddingRef **refp) {
  taca__v1__fields__init(pf);
  if (!f) return;
  pf->pixels = f->pixels;
  pf->tokens = f->tokens;
  pf->labels = f->labels;
  pf->keys = f->keys;
  pf->embeddings_as_f32 = f->embeddings_as_f32;
  pf->captions = f->captions;
  pf->metadata = f->metadata;
  int n = f->n_embeddings < 0 ? 0 : f->n_embeddings > TACA_CLIENT_MAX_EMB ? TACA_CLIENT_MAX_EMB : f->n_embeddings;
  for (int i = 0; i < n; i++) {
    taca__v1__embedding_ref__init(&refs[i]);
    refs[i].model = (char *)(f->embeddings[i].model ? f->embeddings[i].model : "");
    refs[i].modality = f->embeddings[i].modality == TACA_TEXT ? TACA__V1__MODALITY__MODALITY_TEXT
                                                              : TACA__V1__MODALITY__MODALITY_IMAGE;
    refp[i] = &refs[i];
  }
  pf->n_embeddings = (size_t)n;
  pf->embeddings = refp;
}

static const taca_model_desc *model_of(const taca_client *c, const char *name) {
  int i = taca_client_find_model(c, name);
  return i < 0 ? NULL : &c->info.models[i];
}

int fields_check(const taca_client *c, const taca_fields *f, taca_error *err) {
  if (!f) return 0;
  if (f->n_embeddings < 0 || f->n_embeddings > TACA_CLIENT_MAX_EMB)
    return taca_fail(err, "fields: %d embedding sets; at most %d", f->n_embeddings, TACA_CLIENT_MAX_EMB);
  if (f->pixels && !c->info.has_pixels) return taca_fail(err, "fields: the data set holds no pixels");
  for (int i = 0; i < f->n_embeddings; i++) {
    const char *name = f->embeddings[i].model ? f->embeddings[i].model : "";
    const taca_model_desc *m = model_of(c, name);
    if (!m) {
      char list[512] = "";
      for (int j = 0; j < c->info.n_models; j++) {
        size_t l = strlen(list);
        snprintf(list + l, sizeof list - l, "%s%s", j ? ", " : "", c->info.models[j].name);
      }
      return taca_fail(err, "fields: model '%.64s' is not in the data set (it has: %s)", name,
                       c->info.n_models ? list : "none");
    }
    int dim = f->embeddings[i].modality == TACA_TEXT ? m->text_dim : m->image_dim;
    if (dim <= 0)
      return taca_fail(err, "fields: model '%s' stores no %s embeddings", m->name,
                       f->embeddings[i].modality == TACA_TEXT ? "text" : "image");
  }
  return 0;
}

int batch_alloc(const taca_client *c, const taca_fields *f, size_t n, taca_batch *out, taca_error *err) {
  memset(out, 0, sizeof *out);
  taca_fields none = {0};
  if (!f) f = &none;
  size_t sz = n * sizeof(uint64_t);
  if (f->tokens) sz += n * TACA_CLIENT_CONTEXT_LEN * sizeof(int32_t);
  if (f->labels) sz += n * sizeof(int32_t);
  sz = (sz + 15) & ~(size_t)15;
  if (f->keys) sz += n * sizeof(char *);
  if (f->captions) sz += n * sizeof(char *);
  if (f->metadata) sz += n * sizeof(char *);
  if (f->pixels) sz += n * (sizeof(uint8_t *) + sizeof(size_t));
  size_t emb_off = sz;
  for (int e = 0; e < f->n_embeddings; e++) {
    const taca_model_desc *m = model_of(c, f->embeddings[e].model);
    if (!m) return taca_fail(err, "fields: model '%.64s' is not in the data set", f->embeddings[e].model);
    int dim = f->embeddings[e].modality == TACA_TEXT ? m->text_dim : m->image_dim;
    size_t esz = f->embeddings_as_f32 || m->dtype == TACA_DT_F32 ? 4 : 2;
    sz += ((n * (size_t)dim * esz + 15) & ~(size_t)15) + ((n + 15) & ~(size_t)15);
  }
  out->mem_ = calloc(1, sizeof *out->mem_);
  void *block = calloc(1, sz ? sz : 1);
  if (!out->mem_ || !block) {
    free(out->mem_);
    free(block);
    out->mem_ = NULL;
    return taca_fail(err, "out of memory for a batch of %zu samples (%zu bytes)", n, sz);
  }
  out->mem_->block = block;
  char *p = block;
  out->n = n;
  out->indices = (uint64_t *)p;
  p += n * sizeof(uint64_t);
  if (f->tokens) {
    out->tokens = (int32_t *)p;
    p += n * TACA_CLIENT_CONTEXT_LEN * sizeof(int32_t);
  }
  if (f->labels) {
    out->labels = (int32_t *)p;
    p += n * sizeof(int32_t);
  }
  p = (char *)block + (((size_t)(p - (char *)block) + 15) & ~(size_t)15);
  if (f->keys) {
    out->keys = (char **)p;
    p += n * sizeof(char *);
  }
  if (f->captions) {
    out->captions = (char **)p;
    p += n * sizeof(char *);
  }
  if (f->metadata) {
    out->metadata = (char **)p;
    p += n * sizeof(char *);
  }
  if (f->pixels) {
    out->pixels = (const uint8_t **)p;
    p += n * sizeof(uint8_t *);
    out->pixel_sizes = (size_t *)p;
    p += n * sizeof(size_t);
  }
  p = (char *)block + emb_off;
  out->n_embeddings = f->n_embeddings;
  for (int e = 0; e < f->n_embeddings; e++) {
    const taca_model_desc *m = model_of(c, f->embeddings[e].model); /* checked above */
    if (!m) break;
    taca_embeddings *te = &out->embeddings[e];
    snprintf(te->model, sizeof te->model, "%s", f->embeddings[e].model); /* as asked: an alias stays one */
    te->modality = f->embeddings[e].modality == TACA_TEXT ? TACA_TEXT : TACA_IMAGE;
    te->dim = te->modality == TACA_TEXT ? m->text_dim : m->image_dim;
    te->dtype = f->embeddings_as_f32 ? TACA_DT_F32 : m->dtype;
    size_t bytes = n * (size_t)te->dim * taca_dtype_size(te->dtype);
    te->data = p;
    p += (bytes + 15) & ~(size_t)15;
    te->present = (uint8_t *)p;
    p += (n + 15) & ~(size_t)15;
  }
  return 0;
}

static int own(taca_batch *out, rx_batch *rx) {
  struct taca_batch_mem *mem = out->mem_;
  if (mem->n_rx == mem->cap_rx) {
    int cap = mem->cap_rx ? mem->cap_rx * 2 : 4;
    rx_batch *nr = realloc(mem->rx, (size_t)cap * sizeof *nr);
    if (!nr) return -1;
    mem->rx = nr;
    mem->cap_rx = cap;
  }
  mem->rx[mem->n_rx++] = *rx;
  memset(rx, 0, sizeof *rx);
  return 0;
}

int batch_scatter(taca_batch *out, const taca_fields *f, rx_batch *rx, size_t rows, const size_t *pos,
                  const char *who, taca_error *err) {
  const Taca__V1__Batch *b = rx->b;
  const uint8_t *const *pix = rx->pix;
  const size_t *pix_len = rx->pix_len;
  size_t n_pix = rx->n_pix;
  if (own(out, rx)) {
    rx_batch_free(rx);
    return taca_fail(err, "out of memory");
  }
  taca_fields none = {0};
  if (!f) f = &none;
#define BAD(...) return taca_fail(err, "%s sent a malformed batch: " __VA_ARGS__)
  if (b->n_indices != rows) BAD("%zu indices for %zu samples", who, b->n_indices, rows);
  if (f->tokens && b->tokens.len != rows * TACA_CLIENT_CONTEXT_LEN * 4)
    BAD("%zu token bytes for %zu samples", who, b->tokens.len, rows);
  if (f->labels && b->n_labels != rows) BAD("%zu labels for %zu samples", who, b->n_labels, rows);
  if (f->keys && b->n_keys != rows) BAD("%zu keys for %zu samples", who, b->n_keys, rows);
  if (f->captions && b->n_captions != rows) BAD("%zu captions for %zu samples", who, b->n_captions, rows);
  if (f->metadata && b->n_metadata != rows) BAD("%zu metadata for %zu samples", who, b->n_metadata, rows);
  if (f->pixels && n_pix != rows) BAD("%zu pixel entries for %zu samples", who, n_pix, rows);
  if (b->n_embeddings != (size_t)out->n_embeddings)
    BAD("%zu embedding sets, %d asked for", who, b->n_embeddings, out->n_embeddings);
  for (int e = 0; e < out->n_embeddings; e++) {
    const Taca__V1__EmbeddingData *ed = b->embeddings[e];
    const taca_embeddings *te = &out->embeddings[e];
    taca_dtype dt = ed->dtype == TACA__V1__DTYPE__DTYPE_F16 ? TACA_DT_F16
                    : ed->dtype == TACA__V1__DTYPE__DTYPE_F32 ? TACA_DT_F32
                                                              : TACA_DT_INVALID;
    int mod = ed->modality == TACA__V1__MODALITY__MODALITY_TEXT ? TACA_TEXT : TACA_IMAGE;
    if (!ed->model || strcmp(ed->model, te->model) || mod != (int)te->modality || dt != te->dtype ||
        ed->dim != (uint32_t)te->dim || ed->data.len != rows * (size_t)te->dim * taca_dtype_size(te->dtype) ||
        ed->present.len != rows)
      BAD("embedding set %d is not %s %s [%zu x %d] %s", who, e, te->model, te->modality == TACA_TEXT ? "text" : "image",
          rows, te->dim, taca_dtype_name(te->dtype));
  }
#undef BAD
  for (size_t i = 0; i < rows; i++) {
    size_t p = pos ? pos[i] : i;
    out->indices[p] = b->indices[i];
    if (f->tokens)
      memcpy(out->tokens + p * TACA_CLIENT_CONTEXT_LEN, b->tokens.data + i * TACA_CLIENT_CONTEXT_LEN * 4,
             TACA_CLIENT_CONTEXT_LEN * 4);
    if (f->labels) out->labels[p] = b->labels[i];
    if (f->keys) out->keys[p] = b->keys[i];
    if (f->captions) out->captions[p] = b->captions[i];
    if (f->metadata) out->metadata[p] = b->metadata[i];
    if (f->pixels) {
      out->pixels[p] = pix[i];
      out->pixel_sizes[p] = pix_len[i];
    }
    for (int e = 0; e < out->n_embeddings; e++) {
      const Taca__V1__EmbeddingData *ed = b->embeddings[e];
      taca_embeddings *te = &out->embeddings[e];
      size_t row = (size_t)te->dim * taca_dtype_size(te->dtype);
      memcpy((uint8_t *)te->data + p * row, ed->data.data + i * row, row);
      te->present[p] = ed->present.data[i];
    }
  }
  return 0;
}

void taca_batch_free(taca_batch *b) {
  if (!b || !b->mem_) return;
  struct taca_batch_mem *mem = b->mem_;
  for (int i = 0; i < mem->n_rx; i++) rx_batch_free(&mem->rx[i]);
  free(mem->rx);
  free(mem->block);
  free(mem);
  memset(b, 0, sizeof *b);
}
