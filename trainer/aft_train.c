/* aft_train.c: the AFT training loop of one rank, its test evaluation and its report (see
 * aft_train.h). Ranks stay in lockstep as in train.c: failures are agreed on with comm_any before
 * each step's collectives, and a rank failing anywhere else ends the run (comm_fail_fast). */
#include "trainer/aft_train.h"

#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "methods/aft_loss.h"
#include "base/atomicfile.h"
#include "nn/backend.h"
#include "nn/backend_cuda.h"
#include "nn/cross_entropy.h"
#include "image/image.h"
#include "image/pixel_codec.h"
#include "base/safetensors.h"
#include "client/taca_client.h"
#include "methods/aft_model.h"
#include "methods/aft_prior.h"
#include "trainer/batch_feed.h"
#include "trainer/checkpoint.h"
#include "trainer/collectives_nccl.h"
#include "trainer/train_util.h"

#define MAX_METHODS 3

/* The labelled test set, held as stored (uint8 crops) and normalised chunk by chunk. */
typedef struct test_set {
  size_t n;
  int S;
  uint8_t *pix;   /* n x 3 S S */
  int *labels;
  int max_label;
} test_set;

static void test_set_free(test_set *t) {
  free(t->pix);
  free(t->labels);
  memset(t, 0, sizeof *t);
}

/* Every sample of the test servers: pixels and labels (GetBatch over the served index range). */
static int test_set_load(test_set *t, const train_options *o, int S, taca_error *err) {
  memset(t, 0, sizeof *t);
  taca_client_options co = {.timeout_ms = o->timeout_ms, .retry_budget_ms = o->retry_budget_ms, .token = o->token,
                            .on_retry = train_log_retry};
  taca_client *c = NULL;
  if (taca_client_connect(&c, o->test_server, &co, err)) return taca_error_prefix(err, "--test-server"), -1;
  const taca_dataset_info *info = taca_client_info(c);
  int rc = -1;
  if (!info->has_pixels || info->pixel_size != S) {
    taca_fail(err, "--test-server holds %s pixels of %d px; training uses %d px crops",
              info->has_pixels ? info->pixel_codec : "no", info->pixel_size, S);
    goto done;
  }
  const size_t per = (size_t)3 * S * S, total = info->end - info->begin;
  if (!info->samples || total != info->samples) {
    taca_fail(err, "--test-server serves %llu samples over the index range [%llu, %llu): expected a dense range",
              (unsigned long long)info->samples, (unsigned long long)info->begin, (unsigned long long)info->end);
    goto done;
  }
  t->S = S;
  t->n = total;
  t->pix = malloc(per * total);
  t->labels = malloc(sizeof(int) * total);
  uint64_t *idx = malloc(sizeof(uint64_t) * 256);
  if (!t->pix || !t->labels || !idx) {
    free(idx);
    taca_fail(err, "out of memory for %zu test samples", total);
    goto done;
  }
  taca_fields f = {.pixels = 1, .labels = 1};
  t->max_label = -1;
  for (size_t i0 = 0; i0 < total; i0 += 256) {
    size_t n = total - i0 < 256 ? total - i0 : 256;
    for (size_t k = 0; k < n; k++) idx[k] = info->begin + i0 + k;
    taca_batch b;
    if (taca_client_get_batch(c, idx, n, &f, &b, err)) {
      free(idx);
      taca_error_prefix(err, "--test-server");
      goto done;
    }
    for (size_t k = 0; k < n; k++) {
      if (b.labels[k] < 0 || pixel_decode(info->pixel_codec, b.pixels[k], b.pixel_sizes[k], S, t->pix + (i0 + k) * per, err)) {
        if (b.labels[k] < 0) taca_fail(err, "sample %llu has no label", (unsigned long long)idx[k]);
        taca_error_prefix(err, "--test-server: sample %llu", (unsigned long long)idx[k]);
        taca_batch_free(&b);
        free(idx);
        goto done;
      }
      t->labels[i0 + k] = b.labels[k];
      if (b.labels[k] > t->max_label) t->max_label = b.labels[k];
    }
    taca_batch_free(&b);
  }
  free(idx);
  rc = 0;
done:
  taca_client_close(c);
  if (rc) test_set_free(t);
  return rc;
}

/* Test accuracy of the model: this rank classifies its contiguous share, the counts are summed. */
static int test_accuracy(aft_model *am, const test_set *t, const taca_comm *comm, float *pix,
                         float *logits, double *acc, taca_error *err) {
  const size_t per = (size_t)3 * t->S * t->S;
  const size_t lo = t->n * comm->rank / comm->size, hi = t->n * (comm->rank + 1) / comm->size;
  long correct = 0;
  int failed = 0;
  for (size_t i0 = lo; i0 < hi && !failed; i0 += am->max_batch) {
    int n = (int)(hi - i0 < (size_t)am->max_batch ? hi - i0 : (size_t)am->max_batch);
    for (int k = 0; k < n; k++) clip_normalize_u8(t->pix + (i0 + k) * per, t->S, CLIP_MEAN, CLIP_STD, pix + per * k);
    if (aft_model_forward(am, pix, n, NULL, logits, err)) {
      failed = 1;
      break;
    }
    for (int k = 0; k < n; k++) correct += argmax_row(logits + (size_t)k * am->classes, am->classes) == t->labels[i0 + k];
  }
  if (comm_any(comm, failed)) return failed ? -1 : comm_fail_elsewhere(err, "another rank failed in the test evaluation");
  *acc = comm_sum(comm, (double)correct) / (double)t->n;
  return 0;
}

/* What one method's run produced, for the report. */
typedef struct method_result {
  aft_method method;
  double test_acc;      /* NAN without a test set */
  double train_ce, train_acc, term; /* means over the last min(steps, 50) updates */
  double seconds;
  float *s;             /* aft: the learned s [dP] (owned) */
} method_result;

/* DIR/METHOD */
static void method_dir(char *buf, size_t n, const train_options *o, aft_method m) {
  snprintf(buf, n, "%s/%s", o->out, aft_method_name(m));
}

/* The running sums of the report's tail means and the training time, kept in the optimizer file so
 * that a resumed run reports what an uninterrupted one does. */
typedef struct run_sums {
  double ce, acc, term, seconds;
} run_sums;

/* Writes DIR/METHOD/step-N.optim.safetensors (the whole state, for --resume) and then
 * DIR/METHOD/step-N.safetensors (the tensors, PyTorch-loadable), each atomically. */
static int save_checkpoint(const train_options *o, const aft_model *am, const aft_prior *pr,
                           const char *const *meta, const run_sums *sums, taca_error *err) {
  char dir[4096], path[4200];
  method_dir(dir, sizeof dir, o, pr->method);
  if (mkdir(dir, 0755) && errno != EEXIST) return taca_fail(err, "%s: %s", dir, strerror(errno));
  int rc = -1;
  float *owned[8] = {0};
  for (int optim = 1; optim >= 0; optim--) {
    st_writer *w = st_writer_new();
    if (!w) return taca_fail(err, "out of memory");
    rc = -1;
    checkpoint_path(path, sizeof path, dir, am->step, optim);
    char sbuf[4][40], pstep[32];
    snprintf(sbuf[0], sizeof sbuf[0], "%.17g", sums->ce);
    snprintf(sbuf[1], sizeof sbuf[1], "%.17g", sums->acc);
    snprintf(sbuf[2], sizeof sbuf[2], "%.17g", sums->term);
    snprintf(sbuf[3], sizeof sbuf[3], "%.17g", sums->seconds);
    if (st_writer_meta(w, "format", "pt", err) || st_writer_meta(w, "taca.method", aft_method_name(pr->method), err))
      goto next;
    for (int i = 0; meta[i]; i += 2)
      if (st_writer_meta(w, meta[i], meta[i + 1], err)) goto next;
    if (optim) {
      if (st_writer_meta(w, "taca.sum_ce", sbuf[0], err) || st_writer_meta(w, "taca.sum_acc", sbuf[1], err) ||
          st_writer_meta(w, "taca.sum_term", sbuf[2], err) || st_writer_meta(w, "taca.seconds", sbuf[3], err) ||
          aft_model_add_state(am, w, owned, err) || aft_prior_add_state(pr, w, pstep, sizeof pstep, err))
        goto next;
    } else {
      if (aft_model_add_tensors(am, w, owned, err)) goto next;
      if (pr->method == AFT_METHOD_AFT) {
        const int64_t sh[1] = {pr->dP};
        if (st_writer_add(w, "aft.s", TACA_DT_F32, 1, sh, pr->p, err)) goto next;
      } else if (pr->method == AFT_METHOD_KD) {
        const int64_t sw[2] = {pr->dP, pr->dF}, sb[1] = {pr->dP};
        if (st_writer_add(w, "kd.proj.weight", TACA_DT_F32, 2, sw, pr->p, err) ||
            st_writer_add(w, "kd.proj.bias", TACA_DT_F32, 1, sb, pr->p + (size_t)pr->dP * pr->dF, err))
          goto next;
      }
    }
    rc = st_writer_save(w, path, err);
  next:
    st_writer_free(w);
    for (int i = 0; i < 8; i++) free(owned[i]), owned[i] = NULL;
    if (rc) return -1;
  }
  return 0;
}

static double meta_double(const st_file *f, const char *key) {
  const char *v = st_meta(f, key);
  return v ? strtod(v, NULL) : 0;
}

/* Restores the state of DIR/METHOD at `step` after checking that it was written with this run's
 * settings (the keys of meta). */
static int load_checkpoint(const train_options *o, aft_model *am, aft_prior *pr, long step, const char *const *meta,
                           run_sums *sums, taca_error *err) {
  char dir[4096], path[4200];
  method_dir(dir, sizeof dir, o, pr->method);
  checkpoint_path(path, sizeof path, dir, step, 1);
  st_file f;
  if (st_open(&f, path, err)) return -1;
  int rc = -1;
  for (int i = 0; meta[i]; i += 2) {
    const char *have = st_meta(&f, meta[i]);
    if (!have || strcmp(have, meta[i + 1])) {
      taca_fail(err, "%s was written with %s=%s, this run has %s=%s: resume with the same settings", path, meta[i],
                have ? have : "(none)", meta[i], meta[i + 1]);
      goto done;
    }
  }
  if (aft_model_load_state(am, &f, err) || aft_prior_load_state(pr, &f, err)) {
    taca_error_prefix(err, "%s", path);
    goto done;
  }
  if (am->step != step || pr->step != step) {
    taca_fail(err, "%s holds update %ld, its name says %ld", path, am->step, step);
    goto done;
  }
  sums->ce = meta_double(&f, "taca.sum_ce");
  sums->acc = meta_double(&f, "taca.sum_acc");
  sums->term = meta_double(&f, "taca.sum_term");
  sums->seconds = meta_double(&f, "taca.seconds");
  rc = 0;
done:
  st_close(&f);
  return rc;
}

/* DIR/METHOD/result.json: a finished method's figures, so that --resume skips it. */
static int save_result(const train_options *o, const method_result *r, int dP, const char *config, taca_error *err) {
  char path[4200];
  method_dir(path, sizeof path, o, r->method);
  snprintf(path + strlen(path), sizeof path - strlen(path), "/result.json");
  json_t *j = json_pack("{s:s,s:I,s:s,s:f,s:f,s:f,s:f}", "method", aft_method_name(r->method), "steps",
                        (json_int_t)o->steps, "config", config, "train_ce", r->train_ce, "train_acc", r->train_acc,
                        "term", r->term, "seconds", r->seconds);
  json_object_set_new(j, "test_acc", isnan(r->test_acc) ? json_null() : json_real(r->test_acc));
  if (r->s) {
    json_t *a = json_array();
    for (int k = 0; k < dP; k++) json_array_append_new(a, json_real(r->s[k]));
    json_object_set_new(j, "s", a);
  }
  char *text = json_dumps(j, JSON_REAL_PRECISION(17));
  json_decref(j);
  if (!text) return taca_fail(err, "out of memory");
  taca_chunk ch[2] = {{text, strlen(text)}, {"\n", 1}};
  int rc = taca_write_file_atomic(path, ch, 2, err);
  free(text);
  return rc;
}

/* 1 when DIR/METHOD/result.json is there for this run's settings (then r holds it), else 0. */
static int load_result(const train_options *o, aft_method m, int dP, const char *config, method_result *r) {
  char path[4200];
  method_dir(path, sizeof path, o, m);
  snprintf(path + strlen(path), sizeof path - strlen(path), "/result.json");
  json_t *j = json_load_file(path, 0, NULL);
  if (!j) return 0;
  const char *c = json_string_value(json_object_get(j, "config"));
  json_t *s = json_object_get(j, "s");
  int ok = c && !strcmp(c, config) && json_integer_value(json_object_get(j, "steps")) == o->steps &&
           (m != AFT_METHOD_AFT || (json_is_array(s) && (int)json_array_size(s) == dP));
  if (ok) {
    memset(r, 0, sizeof *r);
    r->method = m;
    json_t *t = json_object_get(j, "test_acc");
    r->test_acc = json_is_number(t) ? json_number_value(t) : NAN;
    r->train_ce = json_number_value(json_object_get(j, "train_ce"));
    r->train_acc = json_number_value(json_object_get(j, "train_acc"));
    r->term = json_number_value(json_object_get(j, "term"));
    r->seconds = json_number_value(json_object_get(j, "seconds"));
    if (m == AFT_METHOD_AFT && (r->s = malloc(sizeof(float) * dP)))
      for (int k = 0; k < dP; k++) r->s[k] = (float)json_number_value(json_array_get(s, k));
    ok = m != AFT_METHOD_AFT || r->s != NULL;
  }
  json_decref(j);
  return ok;
}

/* Everything one method's training needs, allocated once per run. */
typedef struct aft_buffers {
  float *F_local, *F_all, *P_all, *dF_all, *logits, *dlogits, *test_pix;
} aft_buffers;

/* The update to resume METHOD from: its latest complete checkpoint under --resume, else 0. */
static long resume_step(const train_options *o, aft_method m) {
  if (!o->resume) return 0;
  char dir[4096];
  method_dir(dir, sizeof dir, o, m);
  long latest = checkpoint_latest(dir);
  return latest > 0 ? latest : 0;
}

/* One method's training on this rank: what the sections below share. */
typedef struct method_run {
  const train_options *o;
  const taca_comm *comm;
  nn_backend *be;
  taca_nccl *nccl;
  aft_method method;
  const char *const *meta;
  const int *dims;
  int n_models, classes, dP, dF, rank, world, b, n;
  FILE *log;
  aft_buffers *bf;
  feed *fd;
  aft_model *am;
  aft_prior pr;
  run_sums sums;
  long start, tail;
  double t_run;
  int *labels;
} method_run;

/* ---- Setup: the downstream model and the prior (resumed from a checkpoint or fresh), the feed at
 * the resumed step, the run's buffers (once per run), the checkpoint of step 0. */
static int method_setup(method_run *r, feed_options *fo, int S, taca_error *err) {
  const train_options *o = r->o;
  r->start = resume_step(o, r->method);
  if (!(r->am = aft_model_create(o->downstream, S, r->classes, r->be, r->b, o->seed, err))) return -1;
  if (o->downstream_init && aft_model_load_tower(r->am, o->downstream_init, NULL, err)) return -1;
  if (aft_prior_init(&r->pr, r->method, r->am->feat_dim, r->dP, r->n, o->seed, err)) return -1;
  if (r->start > 0) {
    if (load_checkpoint(o, r->am, &r->pr, r->start, r->meta, &r->sums, err)) return -1;
    if (r->rank == 0 && !o->quiet)
      fprintf(stderr, "taca-train: aft method '%s' resumes from %s/%s/step-%06ld (update %ld of %ld)\n",
              aft_method_name(r->method), o->out, aft_method_name(r->method), r->start, r->start, o->steps);
  }
  fo->start_step = r->start;
  if (feed_open(&r->fd, fo, err)) return -1;
  const int b = r->b, n = r->n, dF = r->dF = r->am->feat_dim, dP = r->dP, S3 = 3 * S * S;
  aft_buffers *bf = r->bf;
  if (!bf->F_local) {
    bf->F_local = malloc(sizeof(float) * b * dF);
    bf->F_all = malloc(sizeof(float) * n * dF);
    bf->dF_all = malloc(sizeof(float) * n * dF);
    bf->P_all = malloc(sizeof(float) * n * dP);
    bf->logits = malloc(sizeof(float) * b * r->classes);
    bf->dlogits = malloc(sizeof(float) * b * r->classes);
    bf->test_pix = nn_host_alloc(r->be, sizeof(float) * b * S3);
    if (!bf->F_local || !bf->F_all || !bf->dF_all || !bf->P_all || !bf->logits || !bf->dlogits || !bf->test_pix)
      return taca_fail(err, "out of memory");
  }
  if (!(r->labels = malloc(sizeof(int) * b))) return taca_fail(err, "out of memory");
  if (r->rank == 0 && !o->quiet)
    fprintf(stderr, "taca-train: aft method '%s': downstream %s (%zu parameters, %d features), %d classes, "
            "pre-trained features %d wide from %d model(s), beta %g\n", aft_method_name(r->method), o->downstream,
            aft_model_param_count(r->am), dF, r->classes, dP, r->n_models, r->method == AFT_METHOD_STL ? 0.0 : o->beta);
  if (r->rank == 0 && o->save_every > 0 && r->start == 0 && save_checkpoint(o, r->am, &r->pr, r->meta, &r->sums, err))
    return -1;
  return 0;
}

/* ---- One step: batch and labels, forward, agreement, all-gathers, cross-entropy and the prior's
 * term, backward, agreement, gradient all-reduce, updates. -1 ends the method (every rank knows, or
 * this one fails fast). */
static int method_step(method_run *r, long step, ce_result *ce, double *term, double *wait, taca_error *err) {
  const int b = r->b, dF = r->dF, classes = r->classes;
  const aft_method method = r->method;
  aft_buffers *bf = r->bf;
  feed_batch *fb = NULL;
  int failed = feed_next(r->fd, &fb, wait, err) != 0;
  if (!failed && fb->step != step) failed = taca_fail(err, "batch for step %ld arrived at step %ld", fb->step, step) != 0;
  if (!failed) {
    for (int i = 0; i < b; i++) {
      r->labels[i] = fb->labels[i];
      if (r->labels[i] >= classes)
        failed = taca_fail(err, "sample %llu has label %d, outside the %d classes (set --num-classes)",
                           (unsigned long long)fb->indices[i], r->labels[i], classes) != 0;
    }
  }
  if (!failed) {
    aft_model_zero_grad(r->am);
    aft_prior_zero_grad(&r->pr);
    failed = train_fault(r->rank, "step", err) != 0 ||
             aft_model_forward(r->am, fb->pixels, b, bf->F_local, bf->logits, err) != 0;
  }
  if (comm_any(r->comm, failed)) {
    if (!failed) comm_fail_elsewhere(err, "another rank failed at step %ld", step);
    if (fb) feed_release(r->fd, fb);
    return -1;
  }
  *term = 0;
  if (method != AFT_METHOD_STL) {
    if (comm_allgather(r->comm, bf->F_local, (size_t)b * dF, bf->F_all, err) ||
        comm_allgather(r->comm, fb->feat, (size_t)b * r->dP, bf->P_all, err)) {
      feed_release(r->fd, fb);
      return -1;
    }
  }
  feed_release(r->fd, fb);
  failed = cross_entropy(bf->logits, r->labels, b, classes, 1.0 / r->n, bf->dlogits, ce, err) != 0;
  if (!failed && method != AFT_METHOD_STL)
    failed = aft_prior_loss(&r->pr, bf->F_all, bf->P_all, r->n, r->o->beta, term, bf->dF_all, err) != 0;
  if (!failed)
    failed = aft_model_backward(r->am, method == AFT_METHOD_STL ? NULL : bf->dF_all + (size_t)r->rank * b * dF,
                                bf->dlogits, err) != 0;
  if (comm_any(r->comm, failed)) {
    if (!failed) comm_fail_elsewhere(err, "another rank failed at step %ld", step);
    return -1;
  }
  if (train_fault(r->rank, "allreduce", err)) return -1;
  float *gbuf[2];
  size_t glen[2];
  int ng = aft_model_grad_buffers(r->am, gbuf, glen);
  for (int k = 0; k < ng; k++)
    if (comm_grads_allreduce_sum(r->comm, r->nccl, r->be, gbuf[k], glen[k], err) || nn_backend_cuda_check(r->be, err))
      return -1;
  aft_model_update(r->am, train_lr_at(r->o, r->o->lr, step), r->o->weight_decay);
  aft_prior_update(&r->pr, train_lr_at(r->o, r->o->prior_lr, step));
  return 0;
}

/* ---- After a step: the means over ranks, the tail sums of the result, the log line and progress
 * (rank 0), the checkpoint when due, agreed on by every rank. */
static int method_report(method_run *r, long step, double dt, double wait, const ce_result *ce, double term,
                         taca_error *err) {
  const train_options *o = r->o;
  const aft_method method = r->method;
  const int n = r->n;
  const double ce_mean = comm_sum(r->comm, ce->loss_sum) / n, acc = comm_sum(r->comm, ce->correct) / n;
  const double wait_mean = comm_sum(r->comm, wait) / r->world;
  const double beta = method == AFT_METHOD_STL ? 0 : o->beta;
  if (step >= o->steps - r->tail) {
    r->sums.ce += ce_mean / r->tail;
    r->sums.acc += acc / r->tail;
    r->sums.term += term / r->tail;
  }
  int failed = 0;
  if (r->rank == 0) {
    if (r->log) {
      fprintf(r->log, "{\"method\": \"%s\", \"step\": %ld, \"loss\": %.9g, \"loss_ce\": %.9g, \"loss_%s\": %.9g, "
              "\"train_acc\": %.4f, \"samples_per_s\": %.4g, \"data_wait_s\": %.4g, \"step_s\": %.4g",
              aft_method_name(method), step, ce_mean + beta * term, ce_mean,
              method == AFT_METHOD_KD ? "kd" : "reg", term, acc, n / dt, wait_mean, dt);
      if (method == AFT_METHOD_AFT) {
        double means[TACA_CLIENT_MAX_EMB];
        if (aft_rho_means(r->pr.p, r->dP, r->dims, r->n_models, means, err) == 0) {
          fputs(", \"rho_mean\": [", r->log);
          for (int k = 0; k < r->n_models; k++) fprintf(r->log, "%s%.6g", k ? ", " : "", means[k]);
          fputc(']', r->log);
        }
      }
      fputs("}\n", r->log);
      fflush(r->log);
    }
    if (!o->quiet && ((step + 1) % 10 == 0 || step + 1 == o->steps)) {
      char eta[32];
      train_fmt_eta(eta, sizeof eta, (train_now_s() - r->t_run) / (step - r->start + 1) * (o->steps - step - 1));
      fprintf(stderr, "%s step %ld/%ld  loss %.4f (ce %.4f, %s %.4f)  train acc %.3f  %.1f samples/s  ETA %s\n",
              aft_method_name(method), step + 1, o->steps, ce_mean + beta * term, ce_mean,
              method == AFT_METHOD_KD ? "kd" : "R", term, acc, n / dt, eta);
    }
    if ((o->save_every > 0 && (step + 1) % o->save_every == 0) || step + 1 == o->steps) {
      run_sums now = r->sums;
      now.seconds += train_now_s() - r->t_run;
      failed = train_fault(r->rank, "checkpoint", err) != 0 || save_checkpoint(o, r->am, &r->pr, r->meta, &now, err) != 0;
    }
  }
  if (comm_any(r->comm, failed)) {
    if (!failed) comm_fail_elsewhere(err, "rank 0 failed to write a checkpoint at step %ld", step + 1);
    return -1;
  }
  return 0;
}

/* ---- The method's result: the tail means, the test accuracy, the learnt s (AFT), result.json. */
static int method_finish(method_run *r, const test_set *ts, const char *config, method_result *res, taca_error *err) {
  aft_buffers *bf = r->bf;
  res->train_ce = r->sums.ce, res->train_acc = r->sums.acc, res->term = r->sums.term;
  res->seconds = r->sums.seconds + train_now_s() - r->t_run;
  if (ts->n && test_accuracy(r->am, ts, r->comm, bf->test_pix, bf->logits, &res->test_acc, err)) return -1;
  if (r->method == AFT_METHOD_AFT) {
    if (!(res->s = malloc(sizeof(float) * r->dP))) return taca_fail(err, "out of memory");
    memcpy(res->s, r->pr.p, sizeof(float) * r->dP);
  }
  if (r->rank == 0 && save_result(r->o, res, r->dP, config, err)) return -1;
  return 0;
}

static int train_method(const train_options *o, const taca_comm *comm, nn_backend *be, taca_nccl *nccl, feed_options *fo,
                        const test_set *ts, int classes, int S, int dP, aft_method method, const char *const *meta,
                        const char *config, const int *dims, int n_models, FILE *log, aft_buffers *bf,
                        method_result *res, taca_error *err) {
  memset(res, 0, sizeof *res);
  res->method = method;
  res->test_acc = NAN;
  if (o->resume && load_result(o, method, dP, config, res)) {
    if (comm->rank == 0 && !o->quiet)
      fprintf(stderr, "taca-train: aft method '%s' finished in an earlier run (%s/%s/result.json)\n",
              aft_method_name(method), o->out, aft_method_name(method));
    return 0;
  }
  method_run r = {.o = o, .comm = comm, .be = be, .nccl = nccl, .method = method, .meta = meta, .dims = dims,
                  .n_models = n_models, .classes = classes, .dP = dP, .rank = comm->rank, .world = comm->size,
                  .b = o->batch_size / comm->size, .n = o->batch_size, .log = log, .bf = bf,
                  .tail = o->steps < 50 ? o->steps : 50};
  int rc = -1;
  if (method_setup(&r, fo, S, err)) goto done;
  r.t_run = train_now_s();
  for (long step = r.start; step < o->steps; step++) {
    double t0 = train_now_s(), wait = 0, term = 0;
    ce_result ce;
    if (method_step(&r, step, &ce, &term, &wait, err) ||
        method_report(&r, step, train_now_s() - t0, wait, &ce, term, err))
      goto done;
  }
  if (method_finish(&r, ts, config, res, err)) goto done;
  rc = 0;
done:
  if (rc) comm_fail_fast(comm, nccl, err); /* returns only where the others know already */
  free(r.labels);
  feed_close(r.fd);
  aft_model_free(r.am);
  aft_prior_free(&r.pr);
  return rc;
}

/* The report: a table on stdout and JSON (rank 0). */
static int write_report(const train_options *o, const method_result *res, int n_methods,
                        const taca_model_desc *const *models, const int *dims, int n_models, int classes,
                        const test_set *ts, taca_error *err) {
  json_t *root = json_object(), *jm = json_array(), *jf = json_array();
  json_object_set_new(root, "objective", json_string("aft"));
  json_object_set_new(root, "downstream", json_string(o->downstream));
  json_object_set_new(root, "beta", json_real(o->beta));
  json_object_set_new(root, "steps", json_integer(o->steps));
  json_object_set_new(root, "batch_size", json_integer(o->batch_size));
  json_object_set_new(root, "classes", json_integer(classes));
  json_object_set_new(root, "test_samples", json_integer((json_int_t)ts->n));
  printf("\nAFT comparison: downstream %s, %ld steps of batch %d, beta %g; test set %zu samples, %d classes\n",
         o->downstream, o->steps, o->batch_size, o->beta, ts->n, classes);
  printf("  %-6s %10s %10s %10s %12s %9s\n", "method", "test acc", "train acc", "train CE", "term", "seconds");
  for (int i = 0; i < n_methods; i++) {
    const method_result *r = &res[i];
    json_t *j = json_object();
    json_object_set_new(j, "method", json_string(aft_method_name(r->method)));
    json_object_set_new(j, "test_acc", isnan(r->test_acc) ? json_null() : json_real(r->test_acc));
    json_object_set_new(j, "train_acc", json_real(r->train_acc));
    json_object_set_new(j, "train_ce", json_real(r->train_ce));
    json_object_set_new(j, "term", json_real(r->term));
    json_object_set_new(j, "seconds", json_real(r->seconds));
    json_array_append_new(jm, j);
    char acc[32];
    if (isnan(r->test_acc)) snprintf(acc, sizeof acc, "-");
    else snprintf(acc, sizeof acc, "%.2f%%", 100 * r->test_acc);
    printf("  %-6s %10s %9.2f%% %10.4f %12.5f %9.1f\n", aft_method_name(r->method), acc, 100 * r->train_acc,
           r->train_ce, r->term, r->seconds);
  }
  json_object_set_new(root, "methods", jm);
  /* rho per source model, from the aft run */
  const method_result *a = NULL;
  for (int i = 0; i < n_methods; i++)
    if (res[i].method == AFT_METHOD_AFT) a = &res[i];
  if (a && a->s) printf("  learned rho = sigmoid(s) per source model (aft):\n  %-16s %6s %8s %8s %8s\n",
                        "model", "dim", "mean", "min", "max");
  int col = 0;
  for (int k = 0; k < n_models; k++) {
    json_t *j = json_object();
    json_object_set_new(j, "model", json_string(models[k]->name));
    json_object_set_new(j, "arch", json_string(models[k]->arch));
    json_object_set_new(j, "dim", json_integer(dims[k]));
    if (a && a->s) {
      double sum = 0, lo = 1, hi = 0;
      for (int c = col; c < col + dims[k]; c++) {
        double r = aft_rho(a->s[c]);
        sum += r;
        lo = r < lo ? r : lo;
        hi = r > hi ? r : hi;
      }
      json_object_set_new(j, "rho_mean", json_real(sum / dims[k]));
      json_object_set_new(j, "rho_min", json_real(lo));
      json_object_set_new(j, "rho_max", json_real(hi));
      printf("  %-16s %6d %8.4f %8.4f %8.4f\n", models[k]->name, dims[k], sum / dims[k], lo, hi);
    }
    json_array_append_new(jf, j);
    col += dims[k];
  }
  json_object_set_new(root, "features", jf);
  fflush(stdout);
  char path[4096];
  if (o->report) snprintf(path, sizeof path, "%s", o->report);
  else snprintf(path, sizeof path, "%s/report.json", o->out);
  char *text = json_dumps(root, JSON_INDENT(2) | JSON_REAL_PRECISION(6));
  json_decref(root);
  if (!text) return taca_fail(err, "out of memory");
  taca_chunk ch[2] = {{text, strlen(text)}, {"\n", 1}};
  int rc = taca_write_file_atomic(path, ch, 2, err);
  free(text);
  if (!rc && !o->quiet) fprintf(stderr, "taca-train: report in %s\n", path);
  return rc;
}

/* --log-json lines a resumed run keeps (see aft_run). */
typedef struct log_keep {
  const char *done[MAX_METHODS];
  int n_done;
  const char *current;
  long start;
} log_keep;

static int keep_line(json_t *line, void *arg) {
  const log_keep *k = arg;
  const char *m = json_string_value(json_object_get(line, "method"));
  json_t *st = json_object_get(line, "step");
  if (!m || !json_is_integer(st)) return 0;
  for (int i = 0; i < k->n_done; i++)
    if (!strcmp(m, k->done[i])) return 1;
  return k->current && !strcmp(m, k->current) && json_integer_value(st) < k->start;
}

int aft_run(const train_options *o, const taca_comm *comm, taca_error *err) {
  const int rank = comm->rank, world = comm->size;
  if (o->batch_size % world != 0)
    return taca_fail(err, "--batch-size %d does not split evenly over %d ranks", o->batch_size, world);
  const int b = o->batch_size / world;
  aft_method methods[MAX_METHODS];
  int n_methods = 0;
  for (const char *p = o->methods; *p;) {
    size_t len = strcspn(p, ",");
    if (aft_method_parse(p, len, &methods[n_methods]) == 0 && n_methods < MAX_METHODS) n_methods++;
    p += len + (p[len] == ',');
  }
  char device[64];
  if (comm_rank_device(comm, o->device, device, sizeof device, err)) return -1;
  nn_backend *be = nn_backend_create(device, o->threads, err);
  if (!be) {
    comm_fail_fast(comm, NULL, err);
    return -1;
  }
  taca_nccl *nccl = NULL;
  int rc = -1;
  test_set ts = {0};
  feed *probe = NULL;
  FILE *log = NULL;
  aft_buffers bf = {0};
  method_result res[MAX_METHODS] = {0};
  int done_methods = 0;
  int setup_failed = train_fault(rank, "setup", err) != 0;
  if (!setup_failed && rank == 0 && mkdir(o->out, 0755) && errno != EEXIST)
    setup_failed = taca_fail(err, "--out %s: %s", o->out, strerror(errno)) != 0;
  if (comm_any(comm, setup_failed)) {
    if (!setup_failed) comm_fail_elsewhere(err, "another rank failed to set up");
    goto done;
  }
  /* A rank's own NCCL failure ends the run at once (see train.c). */
  const int nccl_failed = comm_nccl_init(&nccl, comm, be, err) != 0;
  if (nccl_failed) comm_fail_fast(comm, NULL, err);
  if (comm_any(comm, nccl_failed)) {
    if (!err->msg[0]) comm_fail_elsewhere(err, "another rank failed to set up NCCL");
    goto done;
  }
  feed_options fo = {.servers = o->servers, .features = o->features, .be = be, .seed = o->seed, .rank = rank,
                     .world = world, .local_batch = b, .depth = 2};
  fo.client.timeout_ms = o->timeout_ms;
  fo.client.retry_budget_ms = o->retry_budget_ms;
  fo.client.token = o->token;
  fo.client.on_retry = train_log_retry, fo.client.retry_arg = (void *)(intptr_t)rank;
  if (feed_open(&probe, &fo, err)) goto done;
  const taca_model_desc *mp[TACA_CLIENT_MAX_EMB];
  taca_model_desc model_copy[TACA_CLIENT_MAX_EMB]; /* outlive the probe's connection */
  const taca_model_desc *models[TACA_CLIENT_MAX_EMB];
  int dims[TACA_CLIENT_MAX_EMB];
  const int n_models = feed_feature_models(probe, mp, dims, TACA_CLIENT_MAX_EMB);
  for (int k = 0; k < n_models; k++) model_copy[k] = *mp[k], models[k] = &model_copy[k];
  const int S = feed_image_size(probe), dP = feed_feature_dim(probe);
  if (o->test_server && test_set_load(&ts, o, S, err)) goto done;
  int classes = o->num_classes ? o->num_classes : ts.max_label + 1;
  if (classes < 2) {
    taca_fail(err, "the test set has labels up to %d: at least 2 classes are needed (or set --num-classes)", ts.max_label);
    goto done;
  }
  if (ts.max_label >= classes) {
    taca_fail(err, "the test set has label %d, outside --num-classes %d", ts.max_label, classes);
    goto done;
  }
  char s_classes[32], s_beta[32], s_dims[256] = "", s_seed[32], s_steps[32], s_lr[32], s_plr[32], s_wd[32],
      s_batch[32], s_sched[16];
  snprintf(s_steps, sizeof s_steps, "%ld", o->steps);
  snprintf(s_lr, sizeof s_lr, "%.9g", o->lr);
  snprintf(s_plr, sizeof s_plr, "%.9g", o->prior_lr);
  snprintf(s_wd, sizeof s_wd, "%.9g", o->weight_decay);
  snprintf(s_batch, sizeof s_batch, "%d", o->batch_size);
  snprintf(s_sched, sizeof s_sched, "%s", o->cosine ? "cosine" : "constant");
  snprintf(s_classes, sizeof s_classes, "%d", classes);
  snprintf(s_beta, sizeof s_beta, "%g", o->beta);
  snprintf(s_seed, sizeof s_seed, "%llu", (unsigned long long)o->seed);
  for (int k = 0; k < n_models; k++)
    snprintf(s_dims + strlen(s_dims), sizeof s_dims - strlen(s_dims), "%s%d", k ? "," : "", dims[k]);
  const char *meta[] = {"taca.objective", "aft", "taca.downstream", o->downstream, "taca.features", o->features,
                        "taca.feature_dims", s_dims, "taca.classes", s_classes, "taca.beta", s_beta,
                        "taca.seed", s_seed, "taca.steps", s_steps, "taca.lr", s_lr, "taca.prior_lr", s_plr,
                        "taca.weight_decay", s_wd, "taca.batch_size", s_batch, "taca.schedule", s_sched, NULL};
  /* what a finished method's result.json must have been made with */
  char config[2048] = "";
  for (int i = 0; meta[i]; i += 2)
    snprintf(config + strlen(config), sizeof config - strlen(config), "%s%s=%s", i ? ";" : "", meta[i], meta[i + 1]);
  if (rank == 0) {
    if (o->log_json) {
      /* A resumed run keeps the lines of finished methods and of the resumed one's earlier steps. */
      log_keep keep = {.n_done = 0, .current = NULL, .start = 0};
      for (int i = 0; o->resume && i < n_methods; i++) {
        method_result r;
        if (load_result(o, methods[i], feed_feature_dim(probe), config, &r)) {
          free(r.s);
          keep.done[keep.n_done++] = aft_method_name(methods[i]);
          continue;
        }
        keep.current = aft_method_name(methods[i]);
        keep.start = resume_step(o, methods[i]);
        break;
      }
      if ((o->resume ? train_trim_log(o->log_json, keep_line, &keep, err) : 0) ||
          !(log = fopen(o->log_json, o->resume ? "ab" : "wb"))) {
        if (!err->msg[0]) taca_fail(err, "--log-json %s: %s", o->log_json, strerror(errno));
        goto done;
      }
    }
    if (!o->quiet)
      fprintf(stderr, "taca-train: aft over %llu samples, %d rank(s) x batch %d, %ld steps (%ld per epoch); methods %s%s\n",
              (unsigned long long)feed_info(probe)->samples, world, b, o->steps, feed_steps_per_epoch(probe), o->methods,
              ts.n ? "" : " (no --test-server: no test accuracy)");
  }
  feed_close(probe);
  probe = NULL;
  int failed = 0;
  for (int i = 0; i < n_methods && !failed; i++) {
    failed = train_method(o, comm, be, nccl, &fo, &ts, classes, S, dP, methods[i], meta, config, dims, n_models, log,
                          &bf, &res[i], err) != 0;
    if (!failed) done_methods++;
  }
  if (comm_any(comm, failed)) {
    if (!failed) comm_fail_elsewhere(err, "another rank failed");
    goto done;
  }
  if (rank == 0 && write_report(o, res, done_methods, models, dims, n_models, classes, &ts, err)) goto done;
  rc = 0;
done:
  if (rc) comm_fail_fast(comm, nccl, err); /* returns only where the others know already */
  if (log) fclose(log);
  feed_close(probe);
  test_set_free(&ts);
  for (int i = 0; i < MAX_METHODS; i++) free(res[i].s);
  free(bf.F_local), free(bf.F_all), free(bf.dF_all), free(bf.P_all), free(bf.logits), free(bf.dlogits);
  nn_host_free(be, bf.test_pix);
  be->synchronize(be);
  comm_nccl_free(nccl);
  nn_backend_destroy(be);
  return rc;
}
