/* textenc.c: loads the CLIP text towers named on the command line and encodes Search captions. */
#include "services/featured/textenc.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "nn/clip.h"
#include "text/tokenizer.h"
#include "services/featured/log.h"

typedef struct tower {
  char name[STORE_NAME_MAX];
  clip_model *model;
  int dim;
} tower;

struct text_towers {
  nn_backend *be;
  clip_tokenizer *tok;
  pthread_mutex_t mu;
  int n;
  tower t[FEATURED_MAX_MODEL_OPTS];
};

void text_towers_free(text_towers *t) {
  if (!t) return;
  for (int i = 0; i < t->n; i++) clip_model_free(t->t[i].model);
  clip_tokenizer_free(t->tok);
  nn_backend_destroy(t->be);
  pthread_mutex_destroy(&t->mu);
  free(t);
}

static const store_model *find_model(const store_info *info, const char *name) {
  for (int i = 0; i < info->n_models; i++)
    if (!strcmp(info->models[i].name, name)) return &info->models[i];
  return NULL;
}

static int load_one(text_towers *tt, const featured_model_opt *o, const featured_config *cfg,
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
  if (sm->weights_xxh[0]) {
    char weights[4096], hex[33];
    struct stat sb;
    if (stat(o->path, &sb) == 0 && S_ISDIR(sb.st_mode))
      snprintf(weights, sizeof weights, "%s/model.safetensors", o->path);
    else
      snprintf(weights, sizeof weights, "%s", o->path);
    if (store_file_checksum(weights, hex, err)) return taca_error_prefix(err, "--model %s", o->name);
    if (strcmp(hex, sm->weights_xxh))
      return taca_fail(err, "--model %s: %s is not the checkpoint the store's embeddings came from (xxh3 %s, store "
                       "records %s)", o->name, weights, hex, sm->weights_xxh);
  }
  clip_model *m = clip_model_load(o->path, o->arch, tt->be, err);
  if (!m) return taca_error_prefix(err, "--model %s", o->name);
  const nn_precision precision = cfg->precision_set          ? cfg->precision
                                 : !strcmp(sm->precision, "bf16") ? NN_PRECISION_BF16
                                                                  : NN_PRECISION_F32;
  if (clip_model_set_precision(m, precision, err)) {
    clip_model_free(m);
    return taca_error_prefix(err, "--model %s", o->name);
  }
  if (sm->precision[0] && strcmp(sm->precision, nn_precision_name(precision)))
    log_msg(LOG_WARN, "text tower of '%s' runs in %s, the store's embeddings were computed in %s "
            "(--precision %s matches them)", o->name, nn_precision_name(precision), sm->precision,
            sm->precision);
  int dim = m->cfg.embed_dim;
  const char *why = NULL;
  if (!m->cfg.has_text) why = "has no text tower";
  else if (sm->image_dim && sm->image_dim != dim) why = "embeds to a width other than the stored image embeddings";
  else if (sm->text_dim && sm->text_dim != dim) why = "embeds to a width other than the stored text embeddings";
  if (why) {
    clip_model_free(m);
    return taca_fail(err, "--model %s: %s %s (embed dim %d; store: image %d, text %d)", o->name, o->path, why, dim,
                     sm->image_dim, sm->text_dim);
  }
  tower *t = &tt->t[tt->n++];
  snprintf(t->name, sizeof t->name, "%s", o->name);
  t->model = m;
  t->dim = dim;
  log_msg(LOG_INFO, "text tower of '%s' loaded from %s (embed dim %d, %s)", o->name, o->path, dim,
          nn_precision_name(precision));
  return 0;
}

int text_towers_load(text_towers **out, const featured_config *cfg, const store_info *info, taca_error *err) {
  *out = NULL;
  if (cfg->n_models == 0) return 0;
  text_towers *tt = calloc(1, sizeof *tt);
  if (!tt) return taca_fail(err, "out of memory");
  pthread_mutex_init(&tt->mu, NULL);
  tt->be = nn_backend_cpu_create(0);
  if (!tt->be) {
    text_towers_free(tt);
    return taca_fail(err, "cannot create the CPU backend for the text towers");
  }
  tt->tok = clip_tokenizer_load(NULL, err);
  if (!tt->tok) {
    text_towers_free(tt);
    return -1;
  }
  for (int i = 0; i < cfg->n_models; i++)
    if (load_one(tt, &cfg->models[i], cfg, info, err)) {
      text_towers_free(tt);
      return -1;
    }
  *out = tt;
  return 0;
}

static const tower *find(const text_towers *t, const char *name) {
  if (!t) return NULL;
  for (int i = 0; i < t->n; i++)
    if (!strcmp(t->t[i].name, name)) return &t->t[i];
  return NULL;
}

int text_towers_has(const text_towers *t, const char *name) { return find(t, name) != NULL; }

void text_towers_list(const text_towers *t, char *buf, size_t cap) {
  snprintf(buf, cap, "none");
  if (!t || t->n == 0) return;
  buf[0] = '\0';
  for (int i = 0; i < t->n; i++) {
    size_t l = strlen(buf);
    snprintf(buf + l, cap - l, "%s%s", i ? ", " : "", t->t[i].name);
  }
}

int text_towers_encode(text_towers *t, const char *name, const char *const *captions, int n, float *out, int dim,
                       taca_error *err) {
  const tower *tw = find(t, name);
  if (!tw) return taca_fail(err, "no text tower loaded for model '%s'", name);
  if (dim != tw->dim) return taca_fail(err, "model '%s': text tower embeds to %d, not %d", name, tw->dim, dim);
  if (n <= 0) return 0;
  int ctx = tw->model->cfg.context_len;
  int32_t *tokens = malloc((size_t)n * (size_t)ctx * sizeof *tokens);
  if (!tokens) return taca_fail(err, "out of memory");
  for (int i = 0; i < n; i++)
    if (clip_tokenize(t->tok, captions[i], tokens + (size_t)i * ctx, ctx, err)) {
      free(tokens);
      return taca_error_prefix(err, "caption %d", i);
    }
  pthread_mutex_lock(&t->mu);
  int rc = clip_encode_text(tw->model, tokens, n, out, err);
  pthread_mutex_unlock(&t->mu);
  free(tokens);
  return rc;
}
