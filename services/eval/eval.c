/* eval.c: `taca eval`'s computation (see eval.h): read the store, split it, encode the pixels with
 * the new model (plain and with the TaCA checkpoint), and compute every figure with metrics.h. */
#include "base/clock.h"
#include "services/eval/eval.h"

#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "image/pixel_codec.h"
#include "nn/clip.h"
#include "image/image.h"
#include "base/npy.h"
#include "base/safetensors.h"
#include "storage/gather.h"
#include "storage/store.h"
#include "methods/encoder.h"

void eval_options_default(eval_options *o) {
  memset(o, 0, sizeof *o);
  o->split = 0.8;
  o->split_group = 1;
  o->seed = 0;
  o->batch_size = 32;
  o->new_head = 1;
  o->lora_alpha = 8.0f;
  eval_head_config_default(&o->head);
}

static void na_set(eval_na *na, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void na_set(eval_na *na, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  na->applicable = 0;
  vsnprintf(na->reason, sizeof na->reason, fmt, ap);
  va_end(ap);
}

static void na_ok(eval_na *na) {
  na->applicable = 1;
  na->reason[0] = 0;
}

/* ---------- the training log ---------- */

void eval_loss_log_free(eval_loss_log *log) {
  free(log->step);
  free(log->value);
  memset(log, 0, sizeof *log);
}

/* The trainer prints non-finite losses with printf ("nan", "-inf"), which is not JSON: copies in
 * to out (capacity 2 strlen(in) + 1) with such values written as null (a gap in the curve). */
static void nonfinite_to_null(const char *in, char *out) {
  while (*in) {
    char c = *in++;
    *out++ = c;
    if (c != ':') continue;
    while (*in == ' ') *out++ = *in++;
    const char *q = in + (*in == '-');
    if ((!strncmp(q, "nan", 3) || !strncmp(q, "inf", 3)) && (q[3] == ',' || q[3] == '}' || q[3] == ' ')) {
      memcpy(out, "null", 4);
      out += 4;
      in = q + 3;
    }
  }
  *out = 0;
}

int eval_read_loss_log(const char *path, eval_loss_log *log, taca_error *err) {
  memset(log, 0, sizeof *log);
  FILE *f = fopen(path, "rb");
  if (!f) return taca_fail(err, "--log-json %s: %s", path, strerror(errno));
  char *line = NULL;
  size_t cap = 0, rows_cap = 0;
  ssize_t len;
  long lineno = 0;
  int rc = 0;
  while ((len = getline(&line, &cap, f)) > 0) {
    lineno++;
    size_t i = 0;
    while (line[i] == ' ' || line[i] == '\t' || line[i] == '\r' || line[i] == '\n') i++;
    if (!line[i]) continue;
    char *buf = malloc(2 * (size_t)len + 1);
    if (!buf) {
      rc = taca_fail(err, "out of memory");
      break;
    }
    nonfinite_to_null(line, buf);
    json_error_t je;
    json_t *j = json_loads(buf, 0, &je);
    free(buf);
    json_t *js = j ? json_object_get(j, "step") : NULL;
    if (!j || !json_is_object(j) || !js || !json_is_integer(js)) {
      rc = taca_fail(err, "--log-json %s line %ld: %s", path, lineno,
                     !j ? je.text : "expected an object with an integer \"step\"");
      json_decref(j);
      break;
    }
    /* new series from this line's keys */
    const char *key;
    json_t *val;
    json_object_foreach(j, key, val) {
      if (strncmp(key, "loss", 4) || !(json_is_number(val) || json_is_null(val))) continue;
      int k = 0;
      while (k < log->n_series && strcmp(log->names[k], key)) k++;
      if (k == log->n_series && k < 8 && strlen(key) < sizeof log->names[0]) {
        if (log->n > 0) { /* a series that starts late: earlier rows get NaN (re-layout) */
          double *nv = malloc(sizeof(double) * rows_cap * (k + 1));
          if (!nv) {
            rc = taca_fail(err, "out of memory");
            break;
          }
          for (int r = 0; r < log->n; r++) {
            memcpy(nv + (size_t)r * (k + 1), log->value + (size_t)r * k, sizeof(double) * k);
            nv[(size_t)r * (k + 1) + k] = NAN;
          }
          free(log->value);
          log->value = nv;
        }
        snprintf(log->names[k], sizeof log->names[0], "%s", key);
        log->n_series++;
      }
    }
    if (rc) {
      json_decref(j);
      break;
    }
    if ((size_t)log->n == rows_cap) {
      size_t nc = rows_cap ? rows_cap * 2 : 256;
      long *ns = realloc(log->step, sizeof(long) * nc);
      if (ns) log->step = ns;
      double *nv = ns ? realloc(log->value, sizeof(double) * nc * (log->n_series ? log->n_series : 1)) : NULL;
      if (!ns || !nv) {
        json_decref(j);
        rc = taca_fail(err, "out of memory");
        break;
      }
      log->value = nv;
      rows_cap = nc;
    }
    log->step[log->n] = (long)json_integer_value(js);
    for (int k = 0; k < log->n_series; k++) {
      json_t *v = json_object_get(j, log->names[k]);
      log->value[(size_t)log->n * log->n_series + k] = v && json_is_number(v) ? json_number_value(v) : NAN;
    }
    log->n++;
    json_decref(j);
  }
  free(line);
  fclose(f);
  if (rc) eval_loss_log_free(log);
  return rc;
}

/* ---------- pixels and encoding ---------- */

typedef struct eval_encoder {
  store_view *v;
  store_pixel_format pf;
  clip_model *m;        /* the new tower, unadapted */
  taca_encoder *ad;     /* the adapted encoder; NULL without one */
  encoder_preprocess pp;
  int batch, S;
  float *pix;      /* [batch, 3, S, S] */
  uint8_t *chw;    /* [3, S, S] scratch for the jpeg codec */
  int quiet;
} eval_encoder;

/* The normalised pixels of sample idx into out [3, S, S]. */
static int load_pixels(eval_encoder *e, uint64_t idx, float *out, taca_error *err) {
  const uint8_t *data;
  size_t len;
  const int S = e->S;
  if (store_get_pixels(e->v, idx, &data, &len, err)) return -1;
  if (pixel_decode(e->pf.codec, data, len, S, e->chw, err))
    return taca_error_prefix(err, "sample %llu", (unsigned long long)idx);
  clip_normalize_u8(e->chw, S, e->pp.mean, e->pp.std, out);
  return 0;
}

/* Encodes samples idx[0..n) batch by batch: the new model's image features into out_new [n, E_new]
 * (when non-NULL) and the adapted features into out_ad [n, E_old] (when non-NULL). */
static int encode(eval_encoder *e, const char *what, const uint64_t *idx, int n, float *out_new, float *out_ad,
                  eval_result *r, taca_error *err) {
  const size_t per = (size_t)3 * e->S * e->S;
  const int En = e->m->cfg.embed_dim, Eo = e->ad ? encoder_image_dim(e->ad) : 0;
  double t0 = taca_now_s(), last = t0;
  for (int s = 0; s < n; s += e->batch) {
    int b = n - s < e->batch ? n - s : e->batch;
    for (int i = 0; i < b; i++)
      if (load_pixels(e, idx[s + i], e->pix + per * i, err)) return -1;
    if (out_new && clip_encode_image(e->m, e->pix, b, out_new + (size_t)s * En, err))
      return taca_error_prefix(err, "new model");
    if (out_ad && encoder_embed_images(e->ad, e->pix, b, out_ad + (size_t)s * Eo, err))
      return taca_error_prefix(err, "adapted new model");
    double t = taca_now_s();
    if (!e->quiet && t - last > 10) {
      fprintf(stderr, "taca eval: %s: %d/%d images (%.1f img/s)\n", what, s + b, n, (s + b) / (t - t0));
      last = t;
    }
  }
  double dt = taca_now_s() - t0;
  r->encode_seconds += dt;
  r->encoded_images += n;
  if (!e->quiet && n > 0)
    fprintf(stderr, "taca eval: %s: %d images in %.1f s (%.1f img/s)\n", what, n, dt, dt > 0 ? n / dt : 0.0);
  return 0;
}

/* ---------- --save-features ---------- */

static int save_npy(const char *dir, const char *name, taca_dtype dt, int rows, int cols, const void *data,
                    taca_error *err) {
  char path[1024];
  snprintf(path, sizeof path, "%s/%s", dir, name);
  int64_t shape[2] = {rows, cols};
  return npy_save(path, dt, cols > 0 ? 2 : 1, shape, data, err);
}

typedef struct saved {
  const char *name;
  taca_dtype dt;
  int rows, cols;
  const void *data;
} saved;

static int save_features(const char *dir, const saved *s, int n, taca_error *err) {
  if (mkdir(dir, 0755) && errno != EEXIST) return taca_fail(err, "--save-features %s: %s", dir, strerror(errno));
  for (int i = 0; i < n; i++)
    if (s[i].data && save_npy(dir, s[i].name, s[i].dt, s[i].rows, s[i].cols, s[i].data, err)) return -1;
  return 0;
}

/* ---------- the run ---------- */

void eval_result_free(eval_result *r) {
  free(r->test_index);
  eval_loss_log_free(&r->log);
  memset(r, 0, sizeof *r);
}

/* Rows sel[0..n) of src [*, d] into dst [n, d]. */
static void take_rows(const float *src, const int *sel, int n, int d, float *dst) {
  for (int i = 0; i < n; i++) memcpy(dst + (size_t)i * d, src + (size_t)sel[i] * d, sizeof(float) * d);
}

/* Fits a head on (Xtr, ytr) and returns its accuracy on each of the nt test feature sets. */
static int head_eval(const eval_head_config *cfg, const float *Xtr, const int32_t *ytr, int ntr, int d,
                     const float *const *Xte, double *acc, int nt, const int32_t *yte, int nte, eval_na *ok,
                     eval_linear_head *h, taca_error *err) {
  taca_error herr = {{0}};
  if (eval_head_fit(h, Xtr, ytr, ntr, d, cfg, &herr)) {
    if (strstr(herr.msg, "out of memory")) {
      *err = herr;
      return -1;
    }
    na_set(ok, "%s", herr.msg);
    return 0;
  }
  int32_t *pred = malloc(sizeof(int32_t) * (nte > 0 ? nte : 1));
  if (!pred) return taca_fail(err, "out of memory");
  for (int k = 0; k < nt; k++) {
    if (!Xte[k]) continue;
    if (eval_head_predict(h, Xte[k], nte, pred, err)) {
      free(pred);
      return -1;
    }
    acc[k] = eval_accuracy(pred, yte, nte, NULL);
  }
  free(pred);
  na_ok(ok);
  return 0;
}

/* Everything one run holds, freed by run_free; each section below fills its part. */
typedef struct run {
  const eval_options *o;
  eval_result *r;
  taca_store *st;
  store_view *v;
  store_info info;
  store_model sm;
  int Ei, Et, En;            /* old image/text widths, new width */
  nn_backend *be;
  clip_model *m;             /* the new tower (owned by an encoder) */
  taca_encoder *plain, *tm;  /* the new model; the adapted encoder (NULL: none) */
  size_t ncand;
  uint64_t *cand;            /* every sample with a record and pixels */
  int32_t *cand_label;
  float *old_img, *old_txt;
  uint8_t *has_img, *has_txt;
  int *tr, *te;              /* rows of cand in each split */
  uint64_t *tr_idx;
  int32_t *y_tr, *y_te;
  float *oi_tr, *oi_te, *ot_te, *new_te, *new_tr, *ad_te;
  int want_new_head;
  eval_encoder enc;
  eval_linear_head h_old, h_new;
} run;

static void run_free(run *R) {
  eval_head_free(&R->h_old);
  eval_head_free(&R->h_new);
  free(R->enc.pix), free(R->enc.chw);
  free(R->cand), free(R->cand_label);
  free(R->old_img), free(R->old_txt), free(R->has_img), free(R->has_txt);
  free(R->tr), free(R->te), free(R->tr_idx), free(R->y_tr), free(R->y_te);
  free(R->oi_tr), free(R->oi_te), free(R->ot_te), free(R->new_te), free(R->new_tr), free(R->ad_te);
  encoder_close(R->tm);
  encoder_close(R->plain);
  nn_backend_destroy(R->be);
  if (R->v) store_view_end(R->v);
  store_close(R->st);
}

/* ---- the store: the old model, every sample with a record and pixels, their old embeddings ---- */
static int read_store(run *R, taca_error *err) {
  const eval_options *o = R->o;
  eval_result *r = R->r;
  store_options so = {.readonly = 1};
  if (store_open(&R->st, o->db, &so, err) || store_view_begin(R->st, &R->v, err)) return -1;
  store_info *info = &R->info;
  store_model *sm = &R->sm;
  store_view *v = R->v;
  if (store_get_info(v, info, err) || store_find_model(v, o->old_name, sm, err)) return -1;
  r->old_image_dim = sm->image_dim;
  r->old_text_dim = sm->text_dim;
  snprintf(r->old_arch, sizeof r->old_arch, "%s", sm->arch);
  if (sm->image_dim <= 0) return taca_fail(err, "%s: model '%s' has no image embeddings", o->db, o->old_name);
  if (!info->has_pixel_format || (strcmp(info->pixel.codec, "raw") && strcmp(info->pixel.codec, "jpeg")) ||
      info->pixel.channels != 3)
    return taca_fail(err, "%s: the store holds no pixels (or in an unknown codec '%s'); eval needs them for the new model",
                     o->db, info->has_pixel_format ? info->pixel.codec : "");
  size_t ncand = 0, cap = 0;
  if (info->n_samples > 0) {
    for (uint64_t idx = info->first_index; idx <= info->last_index; idx++) {
      store_sample smp;
      const uint8_t *px;
      size_t plen;
      int got = store_get_sample(v, idx, &smp, err);
      if (got == STORE_NOT_STORED) continue;
      if (got) return -1;
      r->n_records++;
      got = store_get_pixels(v, idx, &px, &plen, err);
      if (got == STORE_NOT_STORED) continue;
      if (got) return -1;
      if (ncand == cap) {
        cap = cap ? cap * 2 : 1024;
        uint64_t *nc = realloc(R->cand, sizeof(uint64_t) * cap);
        if (nc) R->cand = nc;
        int32_t *nl = nc ? realloc(R->cand_label, sizeof(int32_t) * cap) : NULL;
        if (!nc || !nl) return taca_fail(err, "out of memory listing samples");
        R->cand_label = nl;
      }
      R->cand[ncand] = idx;
      R->cand_label[ncand++] = smp.label;
    }
  }
  R->ncand = ncand;
  if (ncand > (size_t)1 << 30) return taca_fail(err, "%s: %zu samples are more than eval handles in one run", o->db, ncand);
  const int Ei = R->Ei = sm->image_dim, Et = R->Et = sm->text_dim;
  R->old_img = malloc(sizeof(float) * (ncand ? ncand : 1) * Ei);
  R->has_img = malloc(ncand ? ncand : 1);
  R->old_txt = Et ? malloc(sizeof(float) * (ncand ? ncand : 1) * Et) : NULL;
  R->has_txt = malloc(ncand ? ncand : 1);
  if (!R->old_img || !R->has_img || (Et && !R->old_txt) || !R->has_txt)
    return taca_fail(err, "out of memory for %zu embeddings", ncand);
  if (ncand && store_gather_embeddings(v, sm->id, STORE_IMAGE, R->cand, ncand, 1, R->old_img, R->has_img, err)) return -1;
  if (ncand && Et && store_gather_embeddings(v, sm->id, STORE_TEXT, R->cand, ncand, 1, R->old_txt, R->has_txt, err))
    return -1;
  if (!Et) memset(R->has_txt, 1, ncand ? ncand : 1);
  return 0;
}

/* ---- the split ---- */
static int split_samples(run *R, taca_error *err) {
  const eval_options *o = R->o;
  eval_result *r = R->r;
  const size_t ncand = R->ncand;
  const int Ei = R->Ei, Et = R->Et;
  R->tr = malloc(sizeof(int) * (ncand ? ncand : 1));
  R->te = malloc(sizeof(int) * (ncand ? ncand : 1));
  if (!R->tr || !R->te) return taca_fail(err, "out of memory");
  for (size_t i = 0; i < ncand; i++) {
    if (!R->has_img[i] || !R->has_txt[i]) continue;
    if (eval_split_is_train(o->seed, R->cand[i] / (uint64_t)o->split_group, o->split)) R->tr[r->n_train++] = (int)i;
    else R->te[r->n_test++] = (int)i;
  }
  r->n_skipped = r->n_records - (uint64_t)(r->n_train + r->n_test);
  if (r->n_test == 0)
    return taca_fail(err, "%s: no test samples (%llu usable sample(s) with pixels and '%s' embeddings; split %g)", o->db,
                     (unsigned long long)(r->n_train), o->old_name, o->split);
  const int ntr = r->n_train, nte = r->n_test;
  r->test_index = malloc(sizeof(uint64_t) * nte);
  R->tr_idx = malloc(sizeof(uint64_t) * (ntr ? ntr : 1));
  R->y_tr = malloc(sizeof(int32_t) * (ntr ? ntr : 1));
  R->y_te = malloc(sizeof(int32_t) * nte);
  R->oi_tr = malloc(sizeof(float) * (ntr ? ntr : 1) * Ei);
  R->oi_te = malloc(sizeof(float) * nte * Ei);
  R->ot_te = Et ? malloc(sizeof(float) * nte * Et) : NULL;
  if (!r->test_index || !R->tr_idx || !R->y_tr || !R->y_te || !R->oi_tr || !R->oi_te || (Et && !R->ot_te))
    return taca_fail(err, "out of memory");
  for (int i = 0; i < ntr; i++) {
    R->tr_idx[i] = R->cand[R->tr[i]];
    R->y_tr[i] = R->cand_label[R->tr[i]];
    r->n_train_labelled += R->y_tr[i] >= 0;
  }
  for (int i = 0; i < nte; i++) {
    r->test_index[i] = R->cand[R->te[i]];
    R->y_te[i] = R->cand_label[R->te[i]];
    r->n_test_labelled += R->y_te[i] >= 0;
  }
  take_rows(R->old_img, R->tr, ntr, Ei, R->oi_tr);
  take_rows(R->old_img, R->te, nte, Ei, R->oi_te);
  if (Et) take_rows(R->old_txt, R->te, nte, Et, R->ot_te);
  free(R->old_img), R->old_img = NULL;
  free(R->old_txt), R->old_txt = NULL;
  return 0;
}

/* ---- the new model and the checkpoint ---- */
static int open_models(run *R, taca_error *err) {
  const eval_options *o = R->o;
  eval_result *r = R->r;
  if (!(R->be = nn_backend_cpu_create(o->threads))) return taca_fail(err, "out of memory");
  /* --checkpoint: NEW + CKPT; otherwise --new-model may itself be an exported adapted model */
  if (o->checkpoint)
    R->tm = encoder_open_adapted(o->new_model, o->arch, o->checkpoint, NULL, NULL, R->Ei, o->lora_alpha, R->be,
                                 o->batch_size, err);
  else
    R->plain = encoder_open(o->new_model, o->arch, R->be, o->batch_size, err);
  if (!R->tm && !R->plain) return -1;
  if (encoder_set_precision(R->tm ? R->tm : R->plain, o->precision, err)) return -1;
  if (R->plain && encoder_get_kind(R->plain) == ENCODER_ADAPTED) R->tm = R->plain, R->plain = NULL;
  R->m = encoder_vision_model(R->tm ? R->tm : R->plain);
  const int S = R->m->cfg.image_size;
  R->En = r->new_dim = R->m->cfg.embed_dim;
  r->image_size = S;
  if (R->info.pixel.size != S)
    return taca_fail(err, "%s: stored pixels are %dx%d but the new model takes %dx%d (precompute at the new model's size)",
                     o->db, R->info.pixel.size, R->info.pixel.size, S, S);
  if (!R->tm) return 0;
  if (encoder_image_dim(R->tm) != R->Ei)
    return taca_fail(err, "%s: the adapted model outputs %d dims but the old model's image embeddings have %d (another "
                     "old model?)", o->new_model, encoder_image_dim(R->tm), R->Ei);
  const taca_checkpoint_info *ci = encoder_checkpoint_info(R->tm);
  snprintf(r->ckpt_layers, sizeof r->ckpt_layers, "%s", ci->layers);
  snprintf(r->ckpt_peft, sizeof r->ckpt_peft, "%s", ci->peft);
  snprintf(r->ckpt_targets, sizeof r->ckpt_targets, "%s", ci->targets);
  r->ckpt_step = ci->step;
  r->ckpt_proj_hidden = ci->proj_hidden;
  r->ckpt_trainable = ci->trainable;
  if (!o->checkpoint) snprintf(r->checkpoint, sizeof r->checkpoint, "%s", o->new_model);
  if (!o->quiet && r->ckpt_targets[0] && strcmp(r->ckpt_targets, o->old_name))
    fprintf(stderr, "taca eval: warning: %s was trained against targets '%s', evaluated against '%s'\n", r->checkpoint,
            r->ckpt_targets, o->old_name);
  return 0;
}

/* ---- encode (and --save-features) ---- */
static int encode_splits(run *R, taca_error *err) {
  const eval_options *o = R->o;
  eval_result *r = R->r;
  const int ntr = r->n_train, nte = r->n_test, Ei = R->Ei, Et = R->Et, En = R->En, S = R->m->cfg.image_size;
  R->new_te = malloc(sizeof(float) * nte * En);
  R->ad_te = R->tm ? malloc(sizeof(float) * nte * Ei) : NULL;
  R->enc = (eval_encoder){.v = R->v, .pf = R->info.pixel, .m = R->m, .ad = R->tm, .batch = o->batch_size, .S = S,
                          .quiet = o->quiet};
  encoder_get_preprocess(R->tm ? R->tm : R->plain, &R->enc.pp);
  R->enc.pix = malloc(sizeof(float) * 3 * S * S * o->batch_size);
  R->enc.chw = malloc((size_t)3 * S * S);
  if (!R->new_te || (R->tm && !R->ad_te) || !R->enc.pix || !R->enc.chw)
    return taca_fail(err, "out of memory for features of %d images", nte);
  if (encode(&R->enc, R->tm ? "test split, new model and adapted" : "test split, new model", r->test_index, nte,
             R->new_te, R->ad_te, r, err))
    return -1;
  R->want_new_head = o->new_head && r->n_train_labelled > 0 && r->n_test_labelled > 0;
  if (R->want_new_head) {
    if (!(R->new_tr = malloc(sizeof(float) * ntr * En))) return taca_fail(err, "out of memory");
    if (encode(&R->enc, "train split, new model (for the upper-reference head)", R->tr_idx, ntr, R->new_tr, NULL, r,
               err))
      return -1;
  }
  store_view_end(R->v), R->v = NULL;
  if (!o->features_dir) return 0;
  const saved files[] = {
      {"test_index.npy", TACA_DT_U64, nte, 0, r->test_index},
      {"test_label.npy", TACA_DT_I32, nte, 0, R->y_te},
      {"test_old_image.npy", TACA_DT_F32, nte, Ei, R->oi_te},
      {"test_old_text.npy", TACA_DT_F32, nte, Et, R->ot_te},
      {"test_new.npy", TACA_DT_F32, nte, En, R->new_te},
      {"test_adapted.npy", TACA_DT_F32, nte, Ei, R->ad_te},
      {"train_index.npy", TACA_DT_U64, ntr, 0, ntr ? R->tr_idx : NULL},
      {"train_label.npy", TACA_DT_I32, ntr, 0, ntr ? R->y_tr : NULL},
      {"train_old_image.npy", TACA_DT_F32, ntr, Ei, ntr ? R->oi_tr : NULL},
      {"train_new.npy", TACA_DT_F32, ntr, En, R->new_tr},
  };
  return save_features(o->features_dir, files, (int)(sizeof files / sizeof files[0]), err);
}

/* ---- retrieval against the old text embeddings ---- */
static int score_retrieval(run *R, taca_error *err) {
  const eval_options *o = R->o;
  eval_result *r = R->r;
  const int nte = r->n_test, Ei = R->Ei, Et = R->Et, En = R->En;
  r->chance_r1 = eval_chance_recall(1, nte);
  r->chance_r5 = eval_chance_recall(5, nte);
  r->chance_r10 = eval_chance_recall(10, nte);
  if (!Et) na_set(&r->ret_ok, "model '%s' has no stored text embeddings", o->old_name);
  else if (Et != Ei) na_set(&r->ret_ok, "old text width %d differs from old image width %d", Et, Ei);
  else na_ok(&r->ret_ok);
  if (R->tm) na_ok(&r->adapted_ok);
  else na_set(&r->adapted_ok, "no --checkpoint given");
  if (!Et) na_set(&r->new_text_ok, "model '%s' has no stored text embeddings", o->old_name);
  else if (En != Et)
    na_set(&r->new_text_ok, "the new model embeds to %d dims, the old text encoder to %d: no common space without a projector", En, Et);
  else na_ok(&r->new_text_ok);
  if (En != Ei)
    na_set(&r->new_image_ok, "the new model embeds to %d dims, the old head takes %d: it cannot be plugged in unadapted", En, Ei);
  else na_ok(&r->new_image_ok);
  if (r->ret_ok.applicable) {
    if (eval_retrieval_run(R->ot_te, R->oi_te, nte, Ei, &r->ret_old, err)) return -1;
    if (R->tm && eval_retrieval_run(R->ot_te, R->ad_te, nte, Ei, &r->ret_adapted, err)) return -1;
  }
  if (r->new_text_ok.applicable && eval_retrieval_run(R->ot_te, R->new_te, nte, En, &r->ret_new, err)) return -1;
  return 0;
}

/* ---- heads (and the old head's negative flips) ---- */
static int score_heads(run *R, taca_error *err) {
  const eval_options *o = R->o;
  eval_result *r = R->r;
  const int ntr = r->n_train, nte = r->n_test, Ei = R->Ei, En = R->En;
  double acc[3] = {0};
  const float *sets[3] = {R->oi_te, R->ad_te, r->new_image_ok.applicable ? R->new_te : NULL};
  if (r->n_test_labelled == 0) {
    na_set(&r->head_ok, "no labelled test samples");
  } else if (head_eval(&o->head, R->oi_tr, R->y_tr, ntr, Ei, sets, acc, 3, R->y_te, nte, &r->head_ok, &R->h_old, err)) {
    return -1;
  }
  if (r->head_ok.applicable) {
    eval_linear_head *h = &R->h_old;
    r->acc_old_old = acc[0];
    r->acc_old_adapted = acc[1];
    r->acc_old_new = acc[2];
    r->head_classes = h->n_classes;
    r->head_iterations = h->iterations;
    r->head_status = h->status;
    r->head_objective = h->objective;
    r->head_grad_norm = h->grad_norm;
    const int np = ntr > nte ? ntr : nte;
    int32_t *pred = malloc(sizeof(int32_t) * (np ? np : 1)), *pred_ad = malloc(sizeof(int32_t) * (nte ? nte : 1));
    int bad = !pred || !pred_ad || eval_head_predict(h, R->oi_tr, ntr, pred, err);
    if (!bad) r->head_train_acc = eval_accuracy(pred, R->y_tr, ntr, NULL);
    if (!bad && R->tm) {
      bad = eval_head_predict(h, R->oi_te, nte, pred, err) || eval_head_predict(h, R->ad_te, nte, pred_ad, err);
      if (!bad)
        r->neg_flip_rate = eval_negative_flip_rate(pred, pred_ad, R->y_te, nte, &r->neg_flips, &r->neg_flip_counted);
    }
    free(pred), free(pred_ad);
    if (bad) return err->msg[0] ? -1 : taca_fail(err, "out of memory");
  }
  if (!o->new_head) {
    na_set(&r->new_head_ok, "--no-new-head");
  } else if (r->n_test_labelled == 0) {
    na_set(&r->new_head_ok, "no labelled test samples");
  } else if (!R->want_new_head) {
    na_set(&r->new_head_ok, "no labelled training samples");
  } else {
    const float *ns[1] = {R->new_te};
    double a1[1] = {0};
    if (head_eval(&o->head, R->new_tr, R->y_tr, ntr, En, ns, a1, 1, R->y_te, nte, &r->new_head_ok, &R->h_new, err))
      return -1;
    if (r->new_head_ok.applicable) {
      r->acc_new_new = a1[0];
      r->new_head_classes = R->h_new.n_classes;
      r->new_head_iterations = R->h_new.iterations;
      r->new_head_status = R->h_new.status;
      r->new_head_objective = R->h_new.objective;
    }
  }
  return 0;
}

/* ---- backward compatibility (BCT) and distances to the old image embeddings ---- */
static int score_compat(run *R, taca_error *err) {
  eval_result *r = R->r;
  const int nte = r->n_test, Ei = R->Ei, En = R->En;
  if (eval_bc_retrieval_run(R->oi_te, R->oi_te, R->y_te, nte, Ei, &r->bc_old_old, err)) return -1;
  if (r->bc_old_old.n == 0) na_set(&r->bc_ok, "no labelled test sample has another test sample of its label");
  else na_ok(&r->bc_ok);
  if (r->bc_ok.applicable) {
    if (R->tm && eval_bc_retrieval_run(R->ad_te, R->oi_te, R->y_te, nte, Ei, &r->bc_new_old, err)) return -1;
    if (eval_bc_retrieval_run(R->new_te, R->new_te, R->y_te, nte, En, &r->bc_new_new, err)) return -1;
    na_ok(&r->bc_new_new_ok);
    r->bc_gain = r->bc_new_old.r1 - r->bc_old_old.r1;
    double up = r->bc_new_new.r1 - r->bc_old_old.r1;
    if (!R->tm) na_set(&r->bc_update_gain_ok, "no adapted model");
    else if (!(up > 0)) na_set(&r->bc_update_gain_ok, "new/new R@1 is not above old/old: no gain to recover");
    else na_ok(&r->bc_update_gain_ok), r->bc_update_gain = r->bc_gain / up;
  } else {
    r->bc_new_new_ok = r->bc_ok;
    r->bc_update_gain_ok = r->bc_ok;
  }
  if (R->tm) eval_pair_stats_run(R->ad_te, R->oi_te, nte, Ei, &r->sim_adapted);
  if (r->new_image_ok.applicable) eval_pair_stats_run(R->new_te, R->oi_te, nte, Ei, &r->sim_new);
  return 0;
}

int eval_run(const eval_options *o, eval_result *r, taca_error *err) {
  memset(r, 0, sizeof *r);
  r->ckpt_step = -1;
  r->split = o->split;
  r->split_group = o->split_group;
  r->seed = o->seed;
  snprintf(r->db, sizeof r->db, "%s", o->db);
  snprintf(r->old_name, sizeof r->old_name, "%s", o->old_name);
  snprintf(r->new_model, sizeof r->new_model, "%s", o->new_model);
  snprintf(r->checkpoint, sizeof r->checkpoint, "%s", o->checkpoint ? o->checkpoint : "");
  if (!(o->split > 0 && o->split < 1)) return taca_fail(err, "--split must be in (0, 1), got %g", o->split);
  if (o->split_group < 1) return taca_fail(err, "--split-group must be positive, got %d", o->split_group);
  if (o->batch_size <= 0) return taca_fail(err, "--batch-size must be positive");
  if (o->log_json && eval_read_loss_log(o->log_json, &r->log, err)) return -1;
  run R = {.o = o, .r = r};
  int rc = read_store(&R, err) || split_samples(&R, err) || open_models(&R, err) || encode_splits(&R, err) ||
                   score_retrieval(&R, err) || score_heads(&R, err) || score_compat(&R, err)
               ? -1
               : 0;
  run_free(&R);
  if (rc) {
    eval_result_free(r);
    return rc;
  }
  if (o->gate) {
    r->gate_checked = 1;
    r->gate_failed = eval_gate_check(o->gate, r, r->gate_why, sizeof r->gate_why);
  }
  return 0;
}

/* ---------- the gate ---------- */

int eval_gate_parse(const char *spec, eval_gate *g, taca_error *err) {
  memset(g, 0, sizeof *g);
  char buf[256];
  snprintf(buf, sizeof buf, "%s", spec);
  char *save = NULL;
  int any = 0;
  for (char *tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
    char *eq = strchr(tok, '='), *end;
    if (!eq) return taca_fail(err, "--gate: '%s' is not KEY=VALUE (keys: min-gain, max-flip, min-update-gain)", tok);
    *eq = 0;
    errno = 0;
    double v = strtod(eq + 1, &end);
    if (end == eq + 1 || *end || errno || !isfinite(v))
      return taca_fail(err, "--gate: %s needs a number, got '%s'", tok, eq + 1);
    if (!strcmp(tok, "min-gain")) g->has_min_gain = 1, g->min_gain = v;
    else if (!strcmp(tok, "max-flip")) g->has_max_flip = 1, g->max_flip = v;
    else if (!strcmp(tok, "min-update-gain")) g->has_min_update_gain = 1, g->min_update_gain = v;
    else return taca_fail(err, "--gate: unknown key '%s' (keys: min-gain, max-flip, min-update-gain)", tok);
    any = 1;
  }
  if (!any) return taca_fail(err, "--gate: no thresholds in '%s'", spec);
  return 0;
}

int eval_gate_check(const eval_gate *g, const eval_result *r, char *why, size_t cap) {
  why[0] = 0;
  int failed = 0;
#define WHY(...) (snprintf(why + strlen(why), cap - strlen(why), "%s", failed++ ? "; " : ""), \
                  snprintf(why + strlen(why), cap - strlen(why), __VA_ARGS__))
  if (g->has_min_gain) {
    if (!r->bc_ok.applicable) WHY("min-gain: not measurable (%s)", r->bc_ok.reason);
    else if (!r->adapted_ok.applicable) WHY("min-gain: not measurable (%s)", r->adapted_ok.reason);
    else if (100 * r->bc_gain < g->min_gain)
      WHY("min-gain: BCT R@1 gain %+.2f points < %g", 100 * r->bc_gain, g->min_gain);
  }
  if (g->has_max_flip) {
    if (!r->head_ok.applicable) WHY("max-flip: not measurable (%s)", r->head_ok.reason);
    else if (!r->adapted_ok.applicable) WHY("max-flip: not measurable (%s)", r->adapted_ok.reason);
    else if (100 * r->neg_flip_rate > g->max_flip)
      WHY("max-flip: negative-flip rate %.2f %% > %g %%", 100 * r->neg_flip_rate, g->max_flip);
  }
  if (g->has_min_update_gain) {
    if (!r->bc_update_gain_ok.applicable) WHY("min-update-gain: not measurable (%s)", r->bc_update_gain_ok.reason);
    else if (r->bc_update_gain < g->min_update_gain)
      WHY("min-update-gain: update gain %.3f < %g", r->bc_update_gain, g->min_update_gain);
  }
#undef WHY
  return failed ? 1 : 0;
}
