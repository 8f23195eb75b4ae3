/* featured_synth.c: writes the synthetic store of featured_synth.h through the storage API. */
#include "tests/integration/featured_synth.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "storage/store.h"

void synth_key(uint64_t i, char *buf, size_t cap) { snprintf(buf, cap, "s%07llu", (unsigned long long)i); }

int32_t synth_label(uint64_t i) { return i % 13 == 5 ? -1 : (int32_t)(i % 10); }

void synth_tokens(uint64_t i, int32_t out[77]) {
  memset(out, 0, 77 * sizeof *out);
  out[0] = 49406;
  out[1] = 320 + (int32_t)(i % 1000);
  out[2] = 1000 + (int32_t)(i % 7);
  out[3] = 49407;
}

uint8_t synth_pixel(uint64_t i, size_t j) { return (uint8_t)(i * 31 + j * 7); }

float synth_value(uint64_t i, int j, int model, int modality) {
  uint64_t v = (i * 7 + (uint64_t)j * 3 + (uint64_t)model * 11 + (uint64_t)modality * 5) % 97;
  return ((float)v - 48.0f) / 64.0f;
}

int synth_has_text(uint64_t i) { return i % 17 != 3; }

#define CHUNK 512

int synth_store_create(const char *dir, const synth_opts *o, taca_error *err) {
  int dim = o->dim > 0 ? o->dim : 32;
  taca_store *s;
  store_options so = {.create = 1, .no_sync = 1, .map_size = 64ull << 30};
  if (store_open(&s, dir, &so, err)) return -1;
  store_txn *t = NULL;
  float *vec = malloc((size_t)CHUNK * (size_t)(dim > 64 ? dim : 64) * sizeof *vec);
  size_t plen = o->pixel_size > 0 ? 3 * (size_t)o->pixel_size * (size_t)o->pixel_size : 0;
  uint8_t *pix = plen ? malloc(plen) : NULL;
  int ids[3] = {-1, -1, -1};
  if (!vec || (plen && !pix)) {
    taca_fail(err, "out of memory");
    goto fail;
  }
  if (store_txn_begin(s, &t, err)) goto fail;
  store_range r = {o->begin, o->begin + o->n, o->shard, o->nshards > 0 ? o->nshards : 1};
  if (store_set_range(t, &r, err)) goto fail;
  if (plen) {
    store_pixel_format pf = {o->pixel_size, 3, "raw", 0};
    if (store_set_pixel_format(t, &pf, err)) goto fail;
  }
  store_model old = {.image_dim = dim, .text_dim = dim, .dtype = TACA_DT_F16, .logit_scale = logf(100.0f),
                     .image_size = o->pixel_size > 0 ? o->pixel_size : 224};
  snprintf(old.name, sizeof old.name, "old");
  snprintf(old.arch, sizeof old.arch, "synthetic");
  store_model wide = {.image_dim = 64, .text_dim = 0, .dtype = TACA_DT_F32, .logit_scale = 2.0f, .image_size = 224};
  snprintf(wide.name, sizeof wide.name, "wide");
  snprintf(wide.arch, sizeof wide.arch, "synthetic-wide");
  if (store_register_model(t, &old, &ids[0], err) || store_register_model(t, &wide, &ids[1], err)) goto fail;
  if (o->tiny_model) {
    store_model tiny = {.image_dim = 16, .text_dim = 16, .dtype = TACA_DT_F32, .logit_scale = logf(100.0f),
                        .image_size = 40};
    snprintf(tiny.name, sizeof tiny.name, "tiny");
    snprintf(tiny.arch, sizeof tiny.arch, "hf");
    char path[4096];
    snprintf(path, sizeof path, "%s/model.safetensors", o->tiny_model);
    if (store_file_checksum(path, tiny.weights_xxh, err) || store_register_model(t, &tiny, &ids[2], err)) goto fail;
  }
  for (uint64_t c0 = o->begin; c0 < o->begin + o->n; c0 += CHUNK) {
    size_t cn = (size_t)((o->begin + o->n - c0) < CHUNK ? (o->begin + o->n - c0) : CHUNK);
    for (size_t k = 0; k < cn; k++) {
      uint64_t i = c0 + k;
      char key[32];
      int32_t tok[77];
      synth_key(i, key, sizeof key);
      synth_tokens(i, tok);
      for (size_t j = 0; j < plen; j++) pix[j] = synth_pixel(i, j);
      if (store_put_sample(t, i, key, strlen(key), synth_label(i), tok, pix, plen, err)) goto fail;
    }
    /* old image (contiguous), old text (with holes), wide image, tiny image + text */
    for (size_t k = 0; k < cn; k++)
      for (int j = 0; j < dim; j++) vec[k * dim + j] = synth_value(c0 + k, j, 0, 0);
    if (store_put_embeddings(t, ids[0], STORE_IMAGE, c0, cn, vec, err)) goto fail;
    for (size_t k = 0; k < cn; k++) {
      if (!synth_has_text(c0 + k)) continue;
      for (int j = 0; j < dim; j++) vec[j] = synth_value(c0 + k, j, 0, 1);
      if (store_put_embedding(t, ids[0], STORE_TEXT, c0 + k, vec, err)) goto fail;
    }
    for (size_t k = 0; k < cn; k++)
      for (int j = 0; j < 64; j++) vec[k * 64 + j] = synth_value(c0 + k, j, 1, 0);
    if (store_put_embeddings(t, ids[1], STORE_IMAGE, c0, cn, vec, err)) goto fail;
    if (ids[2] >= 0)
      for (int mod = 0; mod < 2; mod++) {
        for (size_t k = 0; k < cn; k++)
          for (int j = 0; j < 16; j++) vec[k * 16 + j] = synth_value(c0 + k, j, 2, mod);
        if (store_put_embeddings(t, ids[2], mod ? STORE_TEXT : STORE_IMAGE, c0, cn, vec, err)) goto fail;
      }
    if ((c0 - o->begin) / CHUNK % 8 == 7) { /* keep transactions moderate for big stores */
      if (store_txn_commit(t, err)) {
        t = NULL;
        goto fail;
      }
      if (store_txn_begin(s, &t, err)) goto fail;
      if (!o->quiet) fprintf(stderr, "\rsynth: %llu / %llu", (unsigned long long)(c0 + cn - o->begin),
                             (unsigned long long)o->n);
    }
  }
  if (store_txn_commit(t, err)) {
    t = NULL;
    goto fail;
  }
  if (!o->quiet && o->n > CHUNK * 8) fputc('\n', stderr);
  free(vec);
  free(pix);
  store_close(s);
  return 0;
fail:
  if (t) store_txn_abort(t);
  free(vec);
  free(pix);
  store_close(s);
  return -1;
}
