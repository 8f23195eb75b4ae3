/* pretrain.c: the pretraining job (see pretrain.h): the training loop over pretrain_feed's batches
 * and the held-out evaluation. */
#include "services/pretrain/pretrain.h"

#include <errno.h>
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "base/clock.h"
#include "nn/clip_train.h"
#include "services/eval/metrics.h"
#include "services/pretrain/pretrain_feed.h"
#include "text/tokenizer.h"

/* open_clip's cosine_lr: linear warmup to lr over `warmup` steps, then half a cosine to 0. */
static double lr_at(const pretrain_options *o, int step) {
  if (step < o->warmup) return o->lr * (step + 1) / o->warmup;
  const double e = step - o->warmup, es = o->steps - o->warmup;
  return es > 0 ? 0.5 * (1 + cos(M_PI * e / es)) * o->lr : o->lr;
}

/* ---- Held-out evaluation. */

typedef struct eval_figures {
  int n, batch;
  double ib_i2t, ib_t2i, ib_i2t_attr, ib_t2i_attr; /* in-batch, averaged over samples */
  double r1_i2t, r1_t2i, r5_i2t, r5_t2i;          /* over all n */
  double r1_i2t_attr, r1_t2i_attr;                /* top-1 over all n has the same attributes */
  double probe_acc;                               /* linear probe on labels */
  int probe_train, probe_test, probe_classes;
} eval_figures;

/* In-batch top-1 of one batch of features (host [b, E]): exact pair hits and attribute hits. */
static void inbatch(const float *img, const float *txt, const int32_t *attrs, int b, int E,
                    double *i2t, double *t2i, double *i2t_attr, double *t2i_attr, double *S) {
  for (int i = 0; i < b; i++) {
    for (int j = 0; j < b; j++) {
      double d = 0, ni = 0, nt = 0;
      for (int k = 0; k < E; k++) {
        d += (double)img[(size_t)i * E + k] * txt[(size_t)j * E + k];
        ni += (double)img[(size_t)i * E + k] * img[(size_t)i * E + k];
        nt += (double)txt[(size_t)j * E + k] * txt[(size_t)j * E + k];
      }
      S[(size_t)i * b + j] = d / (sqrt(ni * nt) + 1e-30);
    }
  }
  for (int i = 0; i < b; i++) {
    int bi = 0, bt = 0;
    for (int j = 1; j < b; j++) {
      if (S[(size_t)i * b + j] > S[(size_t)i * b + bi]) bi = j;
      if (S[(size_t)j * b + i] > S[(size_t)bt * b + i]) bt = j;
    }
    *i2t += bi == i, *t2i += bt == i;
    *i2t_attr += attrs[bi] == attrs[i], *t2i_attr += attrs[bt] == attrs[i];
  }
}

/* Top-1 over all n items with the same attributes as the query, both directions. */
static void attr_retrieval(const float *img, const float *txt, const int32_t *attrs, int n, int E,
                           double *i2t, double *t2i) {
  double *ni = malloc(sizeof(double) * n), *nt = malloc(sizeof(double) * n);
  int *bi = malloc(sizeof(int) * n), *bt = malloc(sizeof(int) * n);
  double *si = malloc(sizeof(double) * n), *st = malloc(sizeof(double) * n);
  *i2t = *t2i = 0;
  if (!ni || !nt || !bi || !bt || !si || !st) goto done;
  for (int i = 0; i < n; i++) {
    double a = 0, b = 0;
    for (int k = 0; k < E; k++) {
      a += (double)img[(size_t)i * E + k] * img[(size_t)i * E + k];
      b += (double)txt[(size_t)i * E + k] * txt[(size_t)i * E + k];
    }
    ni[i] = sqrt(a) + 1e-30, nt[i] = sqrt(b) + 1e-30;
    bi[i] = bt[i] = -1;
  }
  for (int i = 0; i < n; i++)
    for (int j = 0; j < n; j++) {
      double d = 0;
      for (int k = 0; k < E; k++) d += (double)img[(size_t)i * E + k] * txt[(size_t)j * E + k];
      const double c = d / (ni[i] * nt[j]);
      if (bi[i] < 0 || c > si[i]) bi[i] = j, si[i] = c; /* image i's best text */
      if (bt[j] < 0 || c > st[j]) bt[j] = i, st[j] = c; /* text j's best image */
    }
  for (int i = 0; i < n; i++) *i2t += attrs[bi[i]] == attrs[i], *t2i += attrs[bt[i]] == attrs[i];
  *i2t /= n, *t2i /= n;
done:
  free(ni), free(nt), free(bi), free(bt), free(si), free(st);
}

static int evaluate(clip_train *ct, const clip_tokenizer *tok, const pretrain_options *o, int render_size,
                    eval_figures *ef, taca_error *err) {
  const int E = ct->cfg.embed_dim, B = o->batch, n = (int)o->eval_n;
  memset(ef, 0, sizeof *ef);
  pretrain_feed_config fc = {(uint64_t)o->synth_seed, (uint64_t)o->eval_start, (uint64_t)n,
                             render_size, ct->cfg.image_size, ct->cfg.context_len, B,
                             (n + B - 1) / B, 0, 0};
  float *img = malloc(sizeof(float) * n * E), *txt = malloc(sizeof(float) * n * E);
  int32_t *labels = malloc(sizeof(int32_t) * n), *pred = malloc(sizeof(int32_t) * n);
  int32_t *attrs = malloc(sizeof(int32_t) * n);
  double *S = malloc(sizeof(double) * B * B);
  pretrain_feed *feed = NULL;
  int rc = -1, got = 0;
  if (!img || !txt || !labels || !pred || !attrs || !S) {
    taca_fail(err, "out of memory for the evaluation of %d samples", n);
    goto done;
  }
  if (!(feed = pretrain_feed_start(&fc, tok, err))) goto done;
  const pretrain_batch *b;
  int failed;
  while ((b = pretrain_feed_next(feed, &failed, err))) {
    const float *fi = clip_train_image_forward(ct, b->pixels, b->n, err);
    if (!fi) goto done;
    ct->be->download(ct->be, img + (size_t)got * E, fi, sizeof(float) * b->n * E);
    const float *ft = clip_train_text_forward(ct, b->tokens, b->n, err);
    if (!ft) goto done;
    ct->be->download(ct->be, txt + (size_t)got * E, ft, sizeof(float) * b->n * E);
    memcpy(labels + got, b->labels, sizeof(int32_t) * b->n);
    memcpy(attrs + got, b->attrs, sizeof(int32_t) * b->n);
    inbatch(img + (size_t)got * E, txt + (size_t)got * E, b->attrs, b->n, E, &ef->ib_i2t,
            &ef->ib_t2i, &ef->ib_i2t_attr, &ef->ib_t2i_attr, S);
    got += b->n;
    pretrain_feed_release(feed);
  }
  if (failed) goto done;
  ef->n = got, ef->batch = B;
  ef->ib_i2t /= got, ef->ib_t2i /= got, ef->ib_i2t_attr /= got, ef->ib_t2i_attr /= got;
  eval_retrieval ret;
  if (eval_retrieval_run(txt, img, got, E, &ret, err)) goto done;
  ef->r1_i2t = ret.i2t.r1, ef->r1_t2i = ret.t2i.r1, ef->r5_i2t = ret.i2t.r5, ef->r5_t2i = ret.t2i.r5;
  attr_retrieval(img, txt, attrs, got, E, &ef->r1_i2t_attr, &ef->r1_t2i_attr);
  /* Linear probe: fit on the first half, test on the second. */
  const int half = got / 2;
  eval_head_config hc;
  eval_head_config_default(&hc);
  eval_linear_head h;
  if (half >= 2 && eval_head_fit(&h, img, labels, half, E, &hc, err) == 0) {
    if (eval_head_predict(&h, img + (size_t)half * E, got - half, pred, err) == 0) {
      ef->probe_acc = eval_accuracy(pred, labels + half, got - half, NULL);
      ef->probe_train = half, ef->probe_test = got - half, ef->probe_classes = h.n_classes;
    }
    eval_head_free(&h);
  }
  rc = 0;
done:
  pretrain_feed_stop(feed);
  free(img), free(txt), free(labels), free(pred), free(attrs), free(S);
  return rc;
}

/* ---- The job. */

int pretrain_run(const pretrain_options *o, const clip_config *cfg, char **summary_out, taca_error *err) {
  *summary_out = NULL;
  const int render_size = o->size ? o->size : cfg->image_size;
  if (o->threads > 0) omp_set_num_threads(o->threads);
  nn_backend *be = nn_backend_cpu_create(o->threads);
  clip_tokenizer *tok = clip_tokenizer_load(NULL, err);
  clip_train *ct = NULL;
  pretrain_feed *feed = NULL;
  FILE *log = NULL;
  char *summary = NULL;
  int rc = -1;
  if (!be || !tok) {
    if (!be) taca_fail(err, "cannot create the CPU backend");
    goto done;
  }
  if (!(ct = clip_train_create(cfg, be, o->batch, (uint64_t)o->seed, err))) {
    /* err set */;
    goto done;
  }
  if (o->init && clip_train_load(ct, o->init, NULL, err)) {
    taca_error_prefix(err, "--init");
    goto done;
  }
  if (o->log_json && !(log = fopen(o->log_json, "w"))) {
    taca_fail(err, "%s: %s", o->log_json, strerror(errno));
    goto done;
  }
  fprintf(stderr,
          "taca pretrain: %zu parameters (vision %lld, text %lld), %.0f MiB; %d steps of %d on "
          "synthetic samples %lld..%lld (seed %lld, %dpx -> %dpx)\n",
          clip_train_param_count(cfg), clip_config_vision_params(cfg),
          clip_config_text_params(cfg), clip_train_memory_bytes(ct) / 1048576.0, o->steps, o->batch,
          o->synth_start, o->synth_start + o->synth_n - 1, o->synth_seed, render_size,
          cfg->image_size);
  pretrain_feed_config fc = {(uint64_t)o->synth_seed, (uint64_t)o->synth_start,
                             (uint64_t)o->synth_n, render_size, cfg->image_size, cfg->context_len,
                             o->batch, o->steps, 1, (uint64_t)o->seed};
  if (!(feed = pretrain_feed_start(&fc, tok, err))) {
    /* err set */;
    goto done;
  }
  const double t0 = taca_now_s();
  double wait_total = 0, loss_tail = 0;
  int tail_n = 0;
  clip_train_optim opt = {o->lr, o->beta1, o->beta2, o->eps, o->wd};
  clip_loss_result r = {0};
  for (int step = 0; step < o->steps; step++) {
    const double ts = taca_now_s();
    int failed;
    const pretrain_batch *b = pretrain_feed_next(feed, &failed, err);
    if (!b) {
      if (!failed) taca_fail(err, "the data feed ended early");
      goto done;
    }
    const double tw = taca_now_s();
    wait_total += tw - ts;
    const float scale = clip_train_logit_scale(ct);
    clip_train_zero_grad(ct);
    if (clip_train_step(ct, b->pixels, b->tokens, b->n, &r, err)) {
      taca_error_prefix(err, "step %d", step);
      goto done;
    }
    opt.lr = lr_at(o, step);
    clip_train_update(ct, &opt);
    const int n = b->n;
    pretrain_feed_release(feed);
    const double sps = n / (taca_now_s() - ts);
    if (step >= o->steps - 10) loss_tail += r.loss, tail_n++;
    if (log)
      fprintf(log,
              "{\"step\": %d, \"loss\": %.6f, \"acc_i2t\": %.4f, \"acc_t2i\": %.4f, \"lr\": %.6g, "
              "\"logit_scale\": %.5f, \"samples_per_s\": %.1f}\n",
              step, r.loss, r.acc_i2t, r.acc_t2i, opt.lr, scale, sps);
    if ((step + 1) % o->log_every == 0 || step == o->steps - 1)
      fprintf(stderr,
              "step %6d/%d  loss %.4f  acc i->t %.3f t->i %.3f  lr %.2e  scale %.2f  %.0f "
              "samples/s  (%.0f s)\n",
              step + 1, o->steps, r.loss, r.acc_i2t, r.acc_t2i, opt.lr, exp(scale), sps,
              taca_now_s() - t0);
  }
  const double train_s = taca_now_s() - t0;
  pretrain_feed_stop(feed);
  feed = NULL;
  if (log && fclose(log)) {
    log = NULL;
    taca_fail(err, "%s: write failed", o->log_json);
    goto done;
  }
  log = NULL;

  json_t *js = json_object();
  json_t *jt = json_pack("{s:s, s:i, s:i, s:f, s:f, s:f, s:f, s:f, s:I, s:I, s:I, s:I}", "arch",
                         o->arch, "steps", o->steps, "batch", o->batch, "lr", o->lr, "seconds",
                         train_s, "samples_per_s", (double)o->steps * o->batch / train_s,
                         "data_wait_s", wait_total, "final_loss", loss_tail / (tail_n ? tail_n : 1),
                         "synth_seed", o->synth_seed, "synth_start", o->synth_start, "synth_n",
                         o->synth_n, "seed", o->seed);
  json_object_set_new(jt, "logit_scale", json_real(clip_train_logit_scale(ct)));
  json_object_set_new(js, "train", jt);
  fprintf(stderr, "taca pretrain: trained in %.1f s (%.0f samples/s, %.1f s waiting for data)\n",
          train_s, o->steps * o->batch / train_s, wait_total);
  if (o->eval_n > 0) {
    eval_figures ef;
    const double te = taca_now_s();
    if (evaluate(ct, tok, o, render_size, &ef, err)) {
      json_decref(js);
      taca_error_prefix(err, "evaluation");
      goto done;
    }
    json_object_set_new(
        js, "eval",
        json_pack("{s:I, s:i, s:i, s:f, s:f, s:f, s:f, s:f, s:f, s:f, s:f, s:f, s:f, s:f, s:f, s:i}",
                  "start",
                  o->eval_start, "n", ef.n, "batch", ef.batch, "inbatch_i2t", ef.ib_i2t,
                  "inbatch_t2i", ef.ib_t2i, "inbatch_i2t_attr", ef.ib_i2t_attr, "inbatch_t2i_attr",
                  ef.ib_t2i_attr, "r1_i2t", ef.r1_i2t, "r1_t2i", ef.r1_t2i, "r5_i2t", ef.r5_i2t,
                  "r5_t2i", ef.r5_t2i, "r1_i2t_attr", ef.r1_i2t_attr, "r1_t2i_attr",
                  ef.r1_t2i_attr, "probe_acc", ef.probe_acc, "probe_chance",
                  1.0 / (ef.probe_classes ? ef.probe_classes : 1), "probe_classes",
                  ef.probe_classes));
    fprintf(stderr,
            "held-out %d samples from %lld (%.1f s): in-batch (of %d) i->t %.3f t->i %.3f, same "
            "attributes i->t %.3f t->i %.3f (chance %.3f); R@1 i->t %.3f t->i %.3f; R@1 same "
            "attributes (of all %d) i->t %.3f t->i %.3f; linear probe on %d labels %.3f\n",
            ef.n, o->eval_start, taca_now_s() - te, ef.batch, ef.ib_i2t, ef.ib_t2i, ef.ib_i2t_attr,
            ef.ib_t2i_attr, 1.0 / ef.batch, ef.r1_i2t, ef.r1_t2i, ef.n, ef.r1_i2t_attr,
            ef.r1_t2i_attr, ef.probe_classes, ef.probe_acc);
  }
  summary = json_dumps(js, JSON_COMPACT | JSON_REAL_PRECISION(6));
  json_decref(js);
  if (!summary) {
    taca_fail(err, "out of memory");
    goto done;
  }
  const char *meta[] = {"taca.pretrain", summary, NULL};
  if (clip_train_save_hf(ct, o->out, meta, err)) {
    /* err set */;
    goto done;
  }
  fprintf(stderr, "taca pretrain: saved %s\n", o->out);
  *summary_out = summary;
  summary = NULL;
  rc = 0;
done:
  if (log) fclose(log);
  pretrain_feed_stop(feed);
  free(summary);
  clip_train_free(ct);
  clip_tokenizer_free(tok);
  nn_backend_destroy(be);
  return rc;
}
