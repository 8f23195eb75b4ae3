/* eval.c: `taca eval`'s computation (see eval.h): read the store, split it, encode the pixels with
 * the new model (plain and with the TaCA checkpoint), and compute every figure with metrics.h. */
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
#include "methods/taca_params.h"
#include "methods/taca_step.h"

void eval_options_default(eval_options *o) {
  memset(o, 0, sizeof *o);
  o->split = 0.8;
  o->seed = 0;
  o->batch_size = 32;
  o->new_head = 1;
  o->lora_alpha = 8.0f;
  eval_head_config_default(&o->head);
}

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec * 1e-9;
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

/* ---------- the checkpoint ---------- */

/* The PEFT layout and projector sizes of a TaCA checkpoint, read from its tensors (the source of
 * truth) and checked against its taca.layers / taca.peft metadata when present. */
static int checkpoint_config(const char *path, const clip_model *m, int e_old, float lora_alpha,
                             taca_param_config *pc, eval_result *r, taca_error *err) {
  st_file f;
  if (st_open(&f, path, err)) return -1;
  int rc = -1;
  taca_param_config_default(pc, &m->cfg, e_old);
  const st_tensor *fc1 = st_find(&f, "projector.fc1.weight"), *fc2 = st_find(&f, "projector.fc2.weight");
  if (!fc1 || !fc2 || fc1->ndim != 2 || fc2->ndim != 2) {
    taca_fail(err, "%s: not a TaCA checkpoint (no 2-D projector.fc1.weight / projector.fc2.weight)", path);
    goto done;
  }
  if (fc1->shape[1] != m->cfg.embed_dim) {
    taca_fail(err, "%s: the projector takes %lld-d input but the new model embeds to %d (another new model?)", path,
              (long long)fc1->shape[1], m->cfg.embed_dim);
    goto done;
  }
  if (fc2->shape[0] != e_old) {
    taca_fail(err, "%s: the projector outputs %lld dims but the old model's image embeddings have %d (another old model?)",
              path, (long long)fc2->shape[0], e_old);
    goto done;
  }
  pc->proj_hidden = (int)fc1->shape[0];
  int first = -1, last = -1, adapters = 0, loras = 0;
  for (int i = 0; i < f.n; i++) {
    const st_tensor *t = &f.tensors[i];
    int L, used = 0;
    char kind[8];
    if (sscanf(t->name, "adapter.%d.down.weigh%1[t]%n", &L, kind, &used) == 2 && !t->name[used]) {
      adapters++;
      if (t->ndim == 2) pc->peft.bottleneck = (int)t->shape[0];
    } else if (sscanf(t->name, "lora.%d.q.%1[A]%n", &L, kind, &used) == 2 && !t->name[used]) {
      loras++;
      if (t->ndim == 2) pc->peft.lora_rank = (int)t->shape[0];
    } else {
      continue;
    }
    if (L < 0 || L >= m->cfg.vision.layers) {
      taca_fail(err, "%s: tensor '%s' names block %d but the new tower has %d blocks", path, t->name, L,
                m->cfg.vision.layers);
      goto done;
    }
    if (first < 0 || L < first) first = L;
    if (L > last) last = L;
  }
  if (adapters && loras) {
    taca_fail(err, "%s: holds both adapter.* and lora.* tensors", path);
    goto done;
  }
  if (!adapters && !loras) {
    taca_fail(err, "%s: no adapter.L.* or lora.L.* tensors", path);
    goto done;
  }
  pc->peft.kind = loras ? VIT_PEFT_LORA : VIT_PEFT_ADAPTER;
  pc->peft.first = first;
  pc->peft.last = last;
  const char *alpha = st_meta(&f, "taca.lora_alpha");
  pc->peft.lora_alpha = alpha ? strtof(alpha, NULL) : lora_alpha;
  snprintf(r->ckpt_layers, sizeof r->ckpt_layers, "%d-%d", first + 1, last + 1);
  snprintf(r->ckpt_peft, sizeof r->ckpt_peft, "%s/%d", loras ? "lora" : "adapter",
           loras ? pc->peft.lora_rank : pc->peft.bottleneck);
  const char *ml = st_meta(&f, "taca.layers"), *mp = st_meta(&f, "taca.peft"), *ms = st_meta(&f, "step"),
             *mt = st_meta(&f, "taca.targets");
  if (ml && strcmp(ml, r->ckpt_layers)) {
    taca_fail(err, "%s: metadata taca.layers is '%s' but the tensors cover blocks %s", path, ml, r->ckpt_layers);
    goto done;
  }
  if (mp && strcmp(mp, r->ckpt_peft)) {
    taca_fail(err, "%s: metadata taca.peft is '%s' but the tensors are %s", path, mp, r->ckpt_peft);
    goto done;
  }
  r->ckpt_step = ms ? strtol(ms, NULL, 10) : -1;
  snprintf(r->ckpt_targets, sizeof r->ckpt_targets, "%s", mt ? mt : "");
  r->ckpt_proj_hidden = pc->proj_hidden;
  r->ckpt_trainable = (long)taca_param_count(pc);
  rc = 0;
done:
  st_close(&f);
  return rc;
}

/* ---------- pixels and encoding ---------- */

typedef struct encoder {
  store_view *v;
  store_pixel_format pf;
  clip_model *m;
  taca_model *tm;  /* NULL without a checkpoint */
  taca_params *P;
  int batch, S;
  float *pix;      /* [batch, 3, S, S] */
  uint8_t *chw;    /* [3, S, S] scratch for the jpeg codec */
  int quiet;
} encoder;

/* The normalised pixels of sample idx into out [3, S, S]. */
static int load_pixels(encoder *e, uint64_t idx, float *out, taca_error *err) {
  const uint8_t *data;
  size_t len;
  const int S = e->S;
  if (store_get_pixels(e->v, idx, &data, &len, err)) return -1;
  if (pixel_decode(e->pf.codec, data, len, S, e->chw, err))
    return taca_error_prefix(err, "sample %llu", (unsigned long long)idx);
  clip_normalize_u8(e->chw, S, CLIP_MEAN, CLIP_STD, out);
  return 0;
}

/* Encodes samples idx[0..n) batch by batch: the new model's image features into out_new [n, E_new]
 * (when non-NULL) and the adapted features into out_ad [n, E_old] (when non-NULL). */
static int encode(encoder *e, const char *what, const uint64_t *idx, int n, float *out_new, float *out_ad,
                  eval_result *r, taca_error *err) {
  const size_t per = (size_t)3 * e->S * e->S;
  const int En = e->m->cfg.embed_dim, Eo = e->P ? e->P->cfg.e_old : 0;
  double t0 = now_s(), last = t0;
  for (int s = 0; s < n; s += e->batch) {
    int b = n - s < e->batch ? n - s : e->batch;
    for (int i = 0; i < b; i++)
      if (load_pixels(e, idx[s + i], e->pix + per * i, err)) return -1;
    if (out_new && clip_encode_image(e->m, e->pix, b, out_new + (size_t)s * En, err))
      return taca_error_prefix(err, "new model");
    if (out_ad && taca_model_forward(e->tm, e->P, e->pix, b, out_ad + (size_t)s * Eo, err))
      return taca_error_prefix(err, "adapted new model");
    double t = now_s();
    if (!e->quiet && t - last > 10) {
      fprintf(stderr, "taca eval: %s: %d/%d images (%.1f img/s)\n", what, s + b, n, (s + b) / (t - t0));
      last = t;
    }
  }
  double dt = now_s() - t0;
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

int eval_run(const eval_options *o, eval_result *r, taca_error *err) {
  memset(r, 0, sizeof *r);
  r->ckpt_step = -1;
  r->split = o->split;
  r->seed = o->seed;
  snprintf(r->db, sizeof r->db, "%s", o->db);
  snprintf(r->old_name, sizeof r->old_name, "%s", o->old_name);
  snprintf(r->new_model, sizeof r->new_model, "%s", o->new_model);
  snprintf(r->checkpoint, sizeof r->checkpoint, "%s", o->checkpoint ? o->checkpoint : "");
  if (!(o->split > 0 && o->split < 1)) return taca_fail(err, "--split must be in (0, 1), got %g", o->split);
  if (o->batch_size <= 0) return taca_fail(err, "--batch-size must be positive");
  if (o->log_json && eval_read_loss_log(o->log_json, &r->log, err)) return -1;

  int rc = -1;
  taca_store *st = NULL;
  store_view *v = NULL;
  nn_backend *be = NULL;
  clip_model *m = NULL;
  taca_params P = {0};
  int have_P = 0;
  taca_model *tm = NULL;
  uint64_t *cand = NULL;
  int32_t *cand_label = NULL;
  float *old_img = NULL, *old_txt = NULL;
  uint8_t *has_img = NULL, *has_txt = NULL;
  int *tr = NULL, *te = NULL;
  uint64_t *tr_idx = NULL;
  int32_t *y_tr = NULL, *y_te = NULL;
  float *oi_tr = NULL, *oi_te = NULL, *ot_te = NULL, *new_te = NULL, *new_tr = NULL, *ad_te = NULL;
  encoder enc = {0};
  eval_linear_head h_old = {0}, h_new = {0};

  /* ---- the store ---- */
  store_options so = {.readonly = 1};
  if (store_open(&st, o->db, &so, err) || store_view_begin(st, &v, err)) goto done;
  store_info info;
  store_model sm;
  if (store_get_info(v, &info, err) || store_find_model(v, o->old_name, &sm, err)) goto done;
  r->old_image_dim = sm.image_dim;
  r->old_text_dim = sm.text_dim;
  snprintf(r->old_arch, sizeof r->old_arch, "%s", sm.arch);
  if (sm.image_dim <= 0) {
    taca_fail(err, "%s: model '%s' has no image embeddings", o->db, o->old_name);
    goto done;
  }
  if (!info.has_pixel_format || (strcmp(info.pixel.codec, "raw") && strcmp(info.pixel.codec, "jpeg")) ||
      info.pixel.channels != 3) {
    taca_fail(err, "%s: the store holds no pixels (or in an unknown codec '%s'); eval needs them for the new model",
              o->db, info.has_pixel_format ? info.pixel.codec : "");
    goto done;
  }

  /* every sample with a record and pixels, in index order */
  size_t ncand = 0, cap = 0;
  if (info.n_samples > 0) {
    for (uint64_t idx = info.first_index; idx <= info.last_index; idx++) {
      store_sample smp;
      const uint8_t *px;
      size_t plen;
      int rc = store_get_sample(v, idx, &smp, err);
      if (rc == STORE_NOT_STORED) continue;
      if (rc) goto done;
      r->n_records++;
      rc = store_get_pixels(v, idx, &px, &plen, err);
      if (rc == STORE_NOT_STORED) continue;
      if (rc) goto done;
      if (ncand == cap) {
        cap = cap ? cap * 2 : 1024;
        uint64_t *nc = realloc(cand, sizeof(uint64_t) * cap);
        if (nc) cand = nc;
        int32_t *nl = nc ? realloc(cand_label, sizeof(int32_t) * cap) : NULL;
        if (!nc || !nl) {
          taca_fail(err, "out of memory listing samples");
          goto done;
        }
        cand_label = nl;
      }
      cand[ncand] = idx;
      cand_label[ncand++] = smp.label;
    }
  }
  if (ncand > (size_t)1 << 30) {
    taca_fail(err, "%s: %zu samples are more than eval handles in one run", o->db, ncand);
    goto done;
  }
  const int Ei = sm.image_dim, Et = sm.text_dim;
  old_img = malloc(sizeof(float) * (ncand ? ncand : 1) * Ei);
  has_img = malloc(ncand ? ncand : 1);
  old_txt = Et ? malloc(sizeof(float) * (ncand ? ncand : 1) * Et) : NULL;
  has_txt = malloc(ncand ? ncand : 1);
  if (!old_img || !has_img || (Et && !old_txt) || !has_txt) {
    taca_fail(err, "out of memory for %zu embeddings", ncand);
    goto done;
  }
  if (ncand && store_gather_embeddings(v, sm.id, STORE_IMAGE, cand, ncand, 1, old_img, has_img, err)) goto done;
  if (ncand && Et && store_gather_embeddings(v, sm.id, STORE_TEXT, cand, ncand, 1, old_txt, has_txt, err)) goto done;
  if (!Et) memset(has_txt, 1, ncand ? ncand : 1);

  /* the split */
  tr = malloc(sizeof(int) * (ncand ? ncand : 1));
  te = malloc(sizeof(int) * (ncand ? ncand : 1));
  if (!tr || !te) {
    taca_fail(err, "out of memory");
    goto done;
  }
  for (size_t i = 0; i < ncand; i++) {
    if (!has_img[i] || !has_txt[i]) continue;
    if (eval_split_is_train(o->seed, cand[i], o->split)) tr[r->n_train++] = (int)i;
    else te[r->n_test++] = (int)i;
  }
  r->n_skipped = r->n_records - (uint64_t)(r->n_train + r->n_test);
  if (r->n_test == 0) {
    taca_fail(err, "%s: no test samples (%llu usable sample(s) with pixels and '%s' embeddings; split %g)", o->db,
              (unsigned long long)(r->n_train), o->old_name, o->split);
    goto done;
  }
  const int ntr = r->n_train, nte = r->n_test;
  r->test_index = malloc(sizeof(uint64_t) * nte);
  tr_idx = malloc(sizeof(uint64_t) * (ntr ? ntr : 1));
  y_tr = malloc(sizeof(int32_t) * (ntr ? ntr : 1));
  y_te = malloc(sizeof(int32_t) * nte);
  oi_tr = malloc(sizeof(float) * (ntr ? ntr : 1) * Ei);
  oi_te = malloc(sizeof(float) * nte * Ei);
  ot_te = Et ? malloc(sizeof(float) * nte * Et) : NULL;
  if (!r->test_index || !tr_idx || !y_tr || !y_te || !oi_tr || !oi_te || (Et && !ot_te)) {
    taca_fail(err, "out of memory");
    goto done;
  }
  for (int i = 0; i < ntr; i++) {
    tr_idx[i] = cand[tr[i]];
    y_tr[i] = cand_label[tr[i]];
    r->n_train_labelled += y_tr[i] >= 0;
  }
  for (int i = 0; i < nte; i++) {
    r->test_index[i] = cand[te[i]];
    y_te[i] = cand_label[te[i]];
    r->n_test_labelled += y_te[i] >= 0;
  }
  take_rows(old_img, tr, ntr, Ei, oi_tr);
  take_rows(old_img, te, nte, Ei, oi_te);
  if (Et) take_rows(old_txt, te, nte, Et, ot_te);
  free(old_img), old_img = NULL;
  free(old_txt), old_txt = NULL;

  /* ---- the new model and the checkpoint ---- */
  if (!(be = nn_backend_cpu_create(o->threads))) {
    taca_fail(err, "out of memory");
    goto done;
  }
  if (!(m = clip_model_load(o->new_model, o->arch, be, err))) goto done;
  const int En = m->cfg.embed_dim, S = m->cfg.image_size;
  r->new_dim = En;
  r->image_size = S;
  if (info.pixel.size != S) {
    taca_fail(err, "%s: stored pixels are %dx%d but the new model takes %dx%d (precompute at the new model's size)",
              o->db, info.pixel.size, info.pixel.size, S, S);
    goto done;
  }
  if (o->checkpoint) {
    taca_param_config pc;
    if (checkpoint_config(o->checkpoint, m, Ei, o->lora_alpha, &pc, r, err)) goto done;
    have_P = 1;
    if (taca_params_create(&P, &pc, be, 0, err) || taca_params_load(&P, o->checkpoint, err)) goto done;
    if (!(tm = taca_model_create(m, &P, o->batch_size, 1, err))) goto done;
    if (!o->quiet && r->ckpt_targets[0] && strcmp(r->ckpt_targets, o->old_name))
      fprintf(stderr, "taca eval: warning: %s was trained against targets '%s', evaluated against '%s'\n",
              o->checkpoint, r->ckpt_targets, o->old_name);
  }

  /* ---- encode ---- */
  new_te = malloc(sizeof(float) * nte * En);
  ad_te = tm ? malloc(sizeof(float) * nte * Ei) : NULL;
  enc = (encoder){.v = v, .pf = info.pixel, .m = m, .tm = tm, .P = tm ? &P : NULL, .batch = o->batch_size,
                  .S = S, .quiet = o->quiet};
  enc.pix = malloc(sizeof(float) * 3 * S * S * o->batch_size);
  enc.chw = malloc((size_t)3 * S * S);
  if (!new_te || (tm && !ad_te) || !enc.pix || !enc.chw) {
    taca_fail(err, "out of memory for features of %d images", nte);
    goto done;
  }
  if (encode(&enc, tm ? "test split, new model and adapted" : "test split, new model", r->test_index, nte, new_te,
             ad_te, r, err))
    goto done;
  const int want_new_head = o->new_head && r->n_train_labelled > 0 && r->n_test_labelled > 0;
  if (want_new_head) {
    if (!(new_tr = malloc(sizeof(float) * ntr * En))) {
      taca_fail(err, "out of memory");
      goto done;
    }
    if (encode(&enc, "train split, new model (for the upper-reference head)", tr_idx, ntr, new_tr, NULL, r, err))
      goto done;
  }
  store_view_end(v), v = NULL;
  if (o->features_dir) {
    const saved files[] = {
        {"test_index.npy", TACA_DT_U64, nte, 0, r->test_index},
        {"test_label.npy", TACA_DT_I32, nte, 0, y_te},
        {"test_old_image.npy", TACA_DT_F32, nte, Ei, oi_te},
        {"test_old_text.npy", TACA_DT_F32, nte, Et, ot_te},
        {"test_new.npy", TACA_DT_F32, nte, En, new_te},
        {"test_adapted.npy", TACA_DT_F32, nte, Ei, ad_te},
        {"train_index.npy", TACA_DT_U64, ntr, 0, ntr ? tr_idx : NULL},
        {"train_label.npy", TACA_DT_I32, ntr, 0, ntr ? y_tr : NULL},
        {"train_new.npy", TACA_DT_F32, ntr, En, new_tr},
    };
    if (save_features(o->features_dir, files, (int)(sizeof files / sizeof files[0]), err)) goto done;
  }

  /* ---- retrieval ---- */
  r->chance_r1 = eval_chance_recall(1, nte);
  r->chance_r5 = eval_chance_recall(5, nte);
  r->chance_r10 = eval_chance_recall(10, nte);
  if (!Et) na_set(&r->ret_ok, "model '%s' has no stored text embeddings", o->old_name);
  else if (Et != Ei) na_set(&r->ret_ok, "old text width %d differs from old image width %d", Et, Ei);
  else na_ok(&r->ret_ok);
  if (tm) na_ok(&r->adapted_ok);
  else na_set(&r->adapted_ok, "no --checkpoint given");
  if (!Et) na_set(&r->new_text_ok, "model '%s' has no stored text embeddings", o->old_name);
  else if (En != Et)
    na_set(&r->new_text_ok, "the new model embeds to %d dims, the old text encoder to %d: no common space without a projector", En, Et);
  else na_ok(&r->new_text_ok);
  if (En != Ei)
    na_set(&r->new_image_ok, "the new model embeds to %d dims, the old head takes %d: it cannot be plugged in unadapted", En, Ei);
  else na_ok(&r->new_image_ok);
  if (r->ret_ok.applicable) {
    if (eval_retrieval_run(ot_te, oi_te, nte, Ei, &r->ret_old, err)) goto done;
    if (tm && eval_retrieval_run(ot_te, ad_te, nte, Ei, &r->ret_adapted, err)) goto done;
  }
  if (r->new_text_ok.applicable && eval_retrieval_run(ot_te, new_te, nte, En, &r->ret_new, err)) goto done;

  /* ---- heads ---- */
  double acc[3] = {0};
  const float *sets[3] = {oi_te, ad_te, r->new_image_ok.applicable ? new_te : NULL};
  if (r->n_test_labelled == 0) {
    na_set(&r->head_ok, "no labelled test samples");
  } else if (head_eval(&o->head, oi_tr, y_tr, ntr, Ei, sets, acc, 3, y_te, nte, &r->head_ok, &h_old, err)) {
    goto done;
  }
  if (r->head_ok.applicable) {
    r->acc_old_old = acc[0];
    r->acc_old_adapted = acc[1];
    r->acc_old_new = acc[2];
    r->head_classes = h_old.n_classes;
    r->head_iterations = h_old.iterations;
    r->head_status = h_old.status;
    r->head_objective = h_old.objective;
    r->head_grad_norm = h_old.grad_norm;
    int32_t *pred = malloc(sizeof(int32_t) * (ntr ? ntr : 1));
    if (!pred || eval_head_predict(&h_old, oi_tr, ntr, pred, err)) {
      free(pred);
      if (!err->msg[0]) taca_fail(err, "out of memory");
      goto done;
    }
    r->head_train_acc = eval_accuracy(pred, y_tr, ntr, NULL);
    free(pred);
  }
  if (!o->new_head) {
    na_set(&r->new_head_ok, "--no-new-head");
  } else if (r->n_test_labelled == 0) {
    na_set(&r->new_head_ok, "no labelled test samples");
  } else if (!want_new_head) {
    na_set(&r->new_head_ok, "no labelled training samples");
  } else {
    const float *ns[1] = {new_te};
    double a1[1] = {0};
    if (head_eval(&o->head, new_tr, y_tr, ntr, En, ns, a1, 1, y_te, nte, &r->new_head_ok, &h_new, err)) goto done;
    if (r->new_head_ok.applicable) {
      r->acc_new_new = a1[0];
      r->new_head_classes = h_new.n_classes;
      r->new_head_iterations = h_new.iterations;
      r->new_head_status = h_new.status;
      r->new_head_objective = h_new.objective;
    }
  }

  /* ---- distances to the old image embeddings ---- */
  if (tm) eval_pair_stats_run(ad_te, oi_te, nte, Ei, &r->sim_adapted);
  if (r->new_image_ok.applicable) eval_pair_stats_run(new_te, oi_te, nte, Ei, &r->sim_new);
  rc = 0;

done:
  eval_head_free(&h_old);
  eval_head_free(&h_new);
  free(enc.pix);
  free(enc.chw);
  free(cand);
  free(cand_label);
  free(old_img);
  free(old_txt);
  free(has_img);
  free(has_txt);
  free(tr);
  free(te);
  free(tr_idx);
  free(y_tr);
  free(y_te);
  free(oi_tr);
  free(oi_te);
  free(ot_te);
  free(new_te);
  free(new_tr);
  free(ad_te);
  taca_model_free(tm);
  if (have_P) taca_params_free(&P);
  clip_model_free(m);
  nn_backend_destroy(be);
  if (v) store_view_end(v);
  store_close(st);
  if (rc) eval_result_free(r);
  return rc;
}
