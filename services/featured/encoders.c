/* encoders.c: the --model encoders of taca-featured and their embedding of new captions and images
 * (see encoders.h). */
#include "services/featured/encoders.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "image/image.h"
#include "methods/encoder.h"
#include "services/featured/log.h"
#include "text/tokenizer.h"

#define ENCODER_CHUNK 32 /* rows per forward */

typedef struct loaded {
  char name[STORE_NAME_MAX];
  taca_encoder *enc;
  int image_dim, text_dim;
  encoder_preprocess pp;
} loaded;

struct featured_encoders {
  nn_backend *be;
  clip_tokenizer *tok;
  pthread_mutex_t mu;
  int n;
  loaded m[FEATURED_MAX_MODEL_OPTS];
};

void featured_encoders_free(featured_encoders *e) {
  if (!e) return;
  for (int i = 0; i < e->n; i++) encoder_close(e->m[i].enc);
  clip_tokenizer_free(e->tok);
  nn_backend_destroy(e->be);
  pthread_mutex_destroy(&e->mu);
  free(e);
}

static const store_model *find_model(const store_info *info, const char *name) {
  for (int i = 0; i < info->n_models; i++)
    if (!strcmp(info->models[i].name, name)) return &info->models[i];
  return NULL;
}

static int load_one(featured_encoders *fe, const featured_model_opt *o, const featured_config *cfg,
                    const store_info *info, taca_error *err) {
  const store_model *sm = find_model(info, o->name);
  if (!sm) {
    char list[512] = "";
    for (int i = 0; i < info->n_models; i++) {
      size_t l = strlen(list);
      snprintf(list + l, sizeof list - l, "%s%s", i ? ", " : "", info->models[i].name);
    }
    return taca_fail(err, "--model %s: the store has no model of that name (it has: %s)", o->name,
                     info->n_models ? list : "none");
  }
  taca_encoder *enc = encoder_open(o->path, o->arch, fe->be, ENCODER_CHUNK, err);
  if (!enc) return taca_error_prefix(err, "--model %s", o->name);
  if (sm->weights_xxh[0]) { /* the encoder hashes its own weights file (methods/encoder.h, provenance) */
    const encoder_provenance *pv = encoder_provenance_get(enc, err);
    const char *why = pv && strcmp(pv->weights_xxh, sm->weights_xxh) ? pv->weights_xxh : NULL;
    if (!pv || why) {
      if (why)
        taca_fail(err, "--model %s: %s is not the checkpoint the store's embeddings came from (xxh3 %s, store "
                  "records %s)", o->name, o->path, why, sm->weights_xxh);
      else
        taca_error_prefix(err, "--model %s", o->name);
      encoder_close(enc);
      return -1;
    }
  }
  /* --precision, else the one the store's embeddings were computed in */
  const nn_precision precision = cfg->precision_set          ? cfg->precision
                                 : !strcmp(sm->precision, "bf16") ? NN_PRECISION_BF16
                                                                  : NN_PRECISION_F32;
  if (encoder_set_precision(enc, precision, err)) {
    encoder_close(enc);
    return taca_error_prefix(err, "--model %s", o->name);
  }
  if (sm->precision[0] && strcmp(sm->precision, nn_precision_name(precision)))
    log_msg(LOG_WARN, "encoder of '%s' runs in %s, the store's embeddings were computed in %s "
            "(--precision %s matches them)", o->name, nn_precision_name(precision), sm->precision,
            sm->precision);
  int idim = encoder_image_dim(enc), tdim = encoder_text_dim(enc);
  const char *why = NULL;
  if (sm->image_dim && sm->image_dim != idim) why = "embeds images to a width other than the stored image embeddings";
  else if (sm->text_dim && sm->text_dim != tdim) why = "embeds text to a width other than the stored text embeddings";
  if (why) {
    encoder_close(enc);
    return taca_fail(err, "--model %s: %s %s (image %d, text %d; store: image %d, text %d)", o->name, o->path, why,
                     idim, tdim, sm->image_dim, sm->text_dim);
  }
  loaded *l = &fe->m[fe->n++];
  snprintf(l->name, sizeof l->name, "%s", o->name);
  l->enc = enc;
  l->image_dim = idim;
  l->text_dim = tdim;
  encoder_get_preprocess(enc, &l->pp);
  log_msg(LOG_INFO, "encoder of '%s' loaded from %s (%s; image dim %d, text dim %d; %s)", o->name, o->path,
          encoder_get_kind(enc) == ENCODER_ADAPTED ? "adapted" : "clip", idim, tdim, nn_precision_name(precision));
  return 0;
}

int featured_encoders_load(featured_encoders **out, const featured_config *cfg, const store_info *info,
                           taca_error *err) {
  *out = NULL;
  if (cfg->n_models == 0) return 0;
  featured_encoders *fe = calloc(1, sizeof *fe);
  if (!fe) return taca_fail(err, "out of memory");
  pthread_mutex_init(&fe->mu, NULL);
  fe->be = nn_backend_cpu_create(0);
  if (!fe->be) {
    featured_encoders_free(fe);
    return taca_fail(err, "cannot create the CPU backend for the encoders");
  }
  fe->tok = clip_tokenizer_load(NULL, err);
  if (!fe->tok) {
    featured_encoders_free(fe);
    return -1;
  }
  for (int i = 0; i < cfg->n_models; i++)
    if (load_one(fe, &cfg->models[i], cfg, info, err)) {
      featured_encoders_free(fe);
      return -1;
    }
  *out = fe;
  return 0;
}

static loaded *find(const featured_encoders *e, const char *name) {
  if (!e) return NULL;
  for (int i = 0; i < e->n; i++)
    if (!strcmp(e->m[i].name, name)) return (loaded *)&e->m[i];
  return NULL;
}

int featured_encoders_has_images(const featured_encoders *e, const char *name) {
  const loaded *l = find(e, name);
  return l && l->image_dim > 0;
}

int featured_encoders_has_texts(const featured_encoders *e, const char *name) {
  const loaded *l = find(e, name);
  return l && l->text_dim > 0;
}

int featured_encoders_loaded(const featured_encoders *e, const char *name) { return find(e, name) != NULL; }

void featured_encoders_list(const featured_encoders *e, char *buf, size_t cap) {
  snprintf(buf, cap, "none");
  if (!e || e->n == 0) return;
  buf[0] = '\0';
  for (int i = 0; i < e->n; i++) {
    size_t l = strlen(buf);
    snprintf(buf + l, cap - l, "%s%s", i ? ", " : "", e->m[i].name);
  }
}

int featured_encoders_embed_captions(featured_encoders *e, const char *name, const char *const *captions, int n,
                                     float *out, int dim, taca_error *err) {
  loaded *l = find(e, name);
  if (!l || l->text_dim <= 0) return taca_fail(err, "no text tower loaded for model '%s'", name);
  if (dim != l->text_dim) return taca_fail(err, "model '%s': text tower embeds to %d, not %d", name, l->text_dim, dim);
  if (n <= 0) return 0;
  int ctx = encoder_context_len(l->enc);
  int32_t *tokens = malloc((size_t)n * (size_t)ctx * sizeof *tokens);
  if (!tokens) return taca_fail(err, "out of memory");
  for (int i = 0; i < n; i++)
    if (clip_tokenize(e->tok, captions[i], tokens + (size_t)i * ctx, ctx, err)) {
      free(tokens);
      return taca_error_prefix(err, "caption %d", i);
    }
  pthread_mutex_lock(&e->mu);
  int rc = encoder_embed_texts(l->enc, tokens, n, out, err);
  pthread_mutex_unlock(&e->mu);
  free(tokens);
  return rc;
}

int featured_encoders_embed_images(featured_encoders *e, const char *name, const uint8_t *const *bufs,
                                   const size_t *lens, int n, float *out, int dim, uint8_t *ok, taca_error *item_err,
                                   taca_error *err) {
  loaded *l = find(e, name);
  if (!l || l->image_dim <= 0) return taca_fail(err, "no image encoder loaded for model '%s'", name);
  if (dim != l->image_dim) return taca_fail(err, "model '%s': embeds images to %d, not %d", name, l->image_dim, dim);
  if (n <= 0) return 0;
  const int S = l->pp.image_size;
  const size_t per = (size_t)3 * S * S;
  /* Decoded in groups of ENCODER_CHUNK good images, each embedded before the next is decoded: the
   * memory is one group's pixels whatever n is, and the forwards see the same rows as one
   * encoder_embed_images call over all good images would (it splits into chunks of the same size). */
  uint8_t *u8 = malloc(per);
  float *pix = malloc(per * ENCODER_CHUNK * sizeof *pix);
  float *emb = malloc((size_t)ENCODER_CHUNK * (size_t)dim * sizeof *emb);
  int pos[ENCODER_CHUNK];
  if (!u8 || !pix || !emb) {
    free(u8);
    free(pix);
    free(emb);
    return taca_fail(err, "out of memory for images of %dx%d", S, S);
  }
  memset(out, 0, (size_t)n * (size_t)dim * sizeof *out);
  int rc = 0, good = 0;
  for (int i = 0; rc == 0 && i <= n; i++) {
    if (i < n) {
      rgb_image img = {0};
      ok[i] = 0;
      item_err[i].msg[0] = '\0';
      int bad = image_decode(bufs[i], lens[i], &img, &item_err[i]) || clip_resize_crop_u8(&img, S, u8, &item_err[i]);
      rgb_image_free(&img);
      if (!bad) {
        clip_normalize_u8(u8, S, l->pp.mean, l->pp.std, pix + per * (size_t)good);
        pos[good++] = i;
        ok[i] = 1;
      }
    }
    if (good == ENCODER_CHUNK || (i == n && good > 0)) {
      pthread_mutex_lock(&e->mu);
      rc = encoder_embed_images(l->enc, pix, good, emb, err);
      pthread_mutex_unlock(&e->mu);
      for (int j = 0; rc == 0 && j < good; j++)
        memcpy(out + (size_t)pos[j] * dim, emb + (size_t)j * dim, sizeof *out * dim);
      good = 0;
    }
  }
  free(u8);
  free(pix);
  free(emb);
  return rc;
}
