/* encoder.c: the one encoder behind every --model (see encoder.h): dispatch between a plain CLIP
 * model (nn/clip.h) and an adapted one (methods/taca_adapted.h), chunking, the non-finite check and
 * provenance. */
#include "methods/encoder.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/file_hash.h"
#include "methods/taca_adapted.h"

#define DEFAULT_CONTEXT_LEN 77 /* text/tokenizer.h CLIP_CONTEXT_LEN (a layer methods may not use) */

struct taca_encoder {
  encoder_kind kind;
  char path[4096];
  char arch[64];
  int max_batch;
  clip_model *clip;  /* ENCODER_CLIP */
  taca_adapted *ad;  /* ENCODER_ADAPTED */
  encoder_provenance prov;
  int have_prov;
  nn_precision precision;
};

/* OpenAI's CLIP normalisation (image/image.h CLIP_MEAN/CLIP_STD hold the same literals). */
static const float OPENAI_MEAN[3] = {0.48145466f, 0.4578275f, 0.40821073f};
static const float OPENAI_STD[3] = {0.26862954f, 0.26130258f, 0.27577711f};

static taca_encoder *encoder_new(const char *path, const char *arch, int max_batch, taca_error *err) {
  taca_encoder *e = calloc(1, sizeof *e);
  if (!e) {
    taca_fail(err, "out of memory");
    return NULL;
  }
  snprintf(e->path, sizeof e->path, "%s", path);
  snprintf(e->arch, sizeof e->arch, "%s", arch ? arch : "");
  e->max_batch = max_batch > 0 ? max_batch : 32;
  return e;
}

taca_encoder *encoder_open(const char *path, const char *arch, nn_backend *be, int max_batch,
                           taca_error *err) {
  taca_encoder *e = encoder_new(path, arch, max_batch, err);
  if (!e) return NULL;
  int exported = taca_adapted_is_export(path);
  if (exported < 0) {
    taca_fail(err, "%s: config.json is not valid JSON", path);
    encoder_close(e);
    return NULL;
  }
  if (exported) {
    if (arch) {
      taca_fail(err, "%s: an exported adapted model carries its own architecture; drop --arch", path);
      encoder_close(e);
      return NULL;
    }
    e->kind = ENCODER_ADAPTED;
    e->ad = taca_adapted_open_export(path, be, e->max_batch, err);
  } else {
    e->kind = ENCODER_CLIP;
    e->clip = clip_model_load(path, arch, be, err);
  }
  if (!e->clip && !e->ad) {
    encoder_close(e);
    return NULL;
  }
  if (!arch) snprintf(e->arch, sizeof e->arch, "%s", e->clip ? e->clip->cfg.name : "hf");
  return e;
}

taca_encoder *encoder_open_adapted(const char *new_path, const char *arch, const char *checkpoint,
                                   const char *old_path, const char *old_arch, int e_old,
                                   float lora_alpha, nn_backend *be, int max_batch, taca_error *err) {
  taca_encoder *e = encoder_new(new_path, arch, max_batch, err);
  if (!e) return NULL;
  e->kind = ENCODER_ADAPTED;
  e->ad = taca_adapted_open_sources(new_path, arch, checkpoint, old_path, old_arch, e_old, lora_alpha, be,
                                    e->max_batch, err);
  if (!e->ad) {
    encoder_close(e);
    return NULL;
  }
  if (!arch) snprintf(e->arch, sizeof e->arch, "%s", taca_adapted_new_model(e->ad)->cfg.name);
  return e;
}

int encoder_set_precision(taca_encoder *e, nn_precision p, taca_error *err) {
  clip_model *ms[2] = {e->clip, NULL};
  if (e->ad) ms[0] = taca_adapted_new_model(e->ad), ms[1] = taca_adapted_text_model(e->ad);
  for (int i = 0; i < 2; i++) {
    if (ms[i] && clip_model_set_precision(ms[i], p, err)) {
      for (int k = 0; k < i; k++)
        if (ms[k]) clip_model_set_precision(ms[k], NN_PRECISION_F32, err);
      return -1;
    }
  }
  e->precision = p;
  return 0;
}

nn_precision encoder_precision(const taca_encoder *e) { return e->precision; }

void encoder_close(taca_encoder *e) {
  if (!e) return;
  clip_model_free(e->clip);
  taca_adapted_free(e->ad);
  free(e);
}

encoder_kind encoder_get_kind(const taca_encoder *e) { return e->kind; }
const char *encoder_path(const taca_encoder *e) { return e->path; }

int encoder_image_dim(const taca_encoder *e) {
  return e->clip ? e->clip->cfg.embed_dim : taca_adapted_image_dim(e->ad);
}

static const clip_model *text_model(const taca_encoder *e) {
  return e->clip ? (e->clip->cfg.has_text ? e->clip : NULL) : taca_adapted_text_model(e->ad);
}

int encoder_text_dim(const taca_encoder *e) {
  const clip_model *t = text_model(e);
  return t ? t->cfg.embed_dim : 0;
}

int encoder_context_len(const taca_encoder *e) {
  const clip_model *t = text_model(e);
  return t ? t->cfg.context_len : DEFAULT_CONTEXT_LEN;
}

int encoder_vocab_size(const taca_encoder *e) {
  const clip_model *t = text_model(e);
  return t ? t->cfg.vocab_size : 0;
}

float encoder_logit_scale(const taca_encoder *e) {
  return e->clip ? e->clip->logit_scale : taca_adapted_logit_scale(e->ad);
}

const taca_checkpoint_info *encoder_checkpoint_info(const taca_encoder *e) {
  return e->ad ? taca_adapted_checkpoint_info(e->ad) : NULL;
}

clip_model *encoder_vision_model(taca_encoder *e) { return e->clip ? e->clip : taca_adapted_new_model(e->ad); }

void encoder_default_preprocess(encoder_preprocess *p) {
  snprintf(p->resize, sizeof p->resize, "%s", ENCODER_RESIZE_CLIP);
  memcpy(p->mean, OPENAI_MEAN, sizeof p->mean);
  memcpy(p->std, OPENAI_STD, sizeof p->std);
}

void encoder_get_preprocess(const taca_encoder *e, encoder_preprocess *p) {
  memset(p, 0, sizeof *p);
  p->image_size = e->clip ? e->clip->cfg.image_size : taca_adapted_new_model(e->ad)->cfg.image_size;
  encoder_default_preprocess(p);
}

const encoder_provenance *encoder_provenance_get(taca_encoder *e, taca_error *err) {
  if (e->have_prov) return &e->prov;
  encoder_provenance *p = &e->prov;
  memset(p, 0, sizeof *p);
  p->kind = e->kind;
  snprintf(p->kind_name, sizeof p->kind_name, "%s", e->kind == ENCODER_CLIP ? "clip" : "adapted");
  snprintf(p->arch, sizeof p->arch, "%s", e->arch);
  if (e->clip) {
    char w[4096];
    taca_model_weights_path(e->path, w, sizeof w);
    if (taca_file_xxh3(w, p->weights_xxh, err)) return NULL;
    snprintf(p->space, sizeof p->space, "%s", p->weights_xxh);
  } else if (taca_adapted_provenance(e->ad, p, err)) {
    return NULL;
  }
  e->have_prov = 1;
  return p;
}

/* Fails on the first non-finite value of rows [0, n) of out [n, d]. */
static int check_finite(const taca_encoder *e, const char *what, const float *out, int n, int d, int row0,
                        taca_error *err) {
  for (size_t i = 0; i < (size_t)n * d; i++)
    if (!isfinite(out[i]))
      return taca_fail(err, "%s: the %s features of row %zu are not finite (%g): refusing them", e->path, what,
                       row0 + i / d, out[i]);
  return 0;
}

int encoder_embed_images(taca_encoder *e, const float *pixels, int n, float *out, taca_error *err) {
  const int S = encoder_vision_model(e)->cfg.image_size, D = encoder_image_dim(e);
  const size_t per = (size_t)3 * S * S;
  for (int s = 0; s < n; s += e->max_batch) {
    int b = n - s < e->max_batch ? n - s : e->max_batch;
    const float *px = pixels + per * s;
    float *o = out + (size_t)s * D;
    int rc = e->clip ? clip_encode_image(e->clip, px, b, o, err) : taca_adapted_forward(e->ad, px, b, o, err);
    if (rc) return taca_error_prefix(err, "%s", e->path);
    if (check_finite(e, "image", o, b, D, s, err)) return -1;
  }
  return 0;
}

int encoder_embed_texts(taca_encoder *e, const int32_t *tokens, int n, float *out, taca_error *err) {
  clip_model *t = (clip_model *)text_model(e);
  if (!t) return taca_fail(err, "%s: this model has no text tower", e->path);
  const int ctx = t->cfg.context_len, D = t->cfg.embed_dim;
  for (int s = 0; s < n; s += e->max_batch) {
    int b = n - s < e->max_batch ? n - s : e->max_batch;
    float *o = out + (size_t)s * D;
    if (clip_encode_text(t, tokens + (size_t)s * ctx, b, o, err)) return taca_error_prefix(err, "%s", e->path);
    if (check_finite(e, "text", o, b, D, s, err)) return -1;
  }
  return 0;
}
