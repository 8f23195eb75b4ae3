/* cmd_pretrain.c: `taca pretrain`: trains a small CLIP model from scratch, CLIP-style (both towers
 * and the logit scale, open_clip's recipe: symmetric contrastive loss, AdamW with weight decay on
 * matrices only, cosine learning rate with linear warmup, logit scale clamped to ln 100), on the
 * synthetic captioned-shapes data set rendered on the fly; evaluates it on held-out samples and
 * saves it as a HuggingFace CLIP directory that the rest of the pipeline loads. This is how the
 * demo makes its "old" and "new" models (deploy/demo/). */
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>

#include "nn/clip_train.h"
#include "text/tokenizer.h"
#include "services/cli/cli_util.h"
#include "services/cli/pretrain_feed.h"
#include "services/eval/metrics.h"
#include "base/clock.h"

static const char *USAGE =
    "usage: taca pretrain --arch CONFIG.json|NAME --out DIR [options]\n"
    "  Trains a CLIP model from random initialisation on the synthetic shapes data set (as\n"
    "  `taca synth` writes it, rendered on the fly) and saves it as a HuggingFace CLIP directory\n"
    "  DIR (config.json + model.safetensors), atomically (written into DIR.tmp, then moved).\n"
    "  --arch      an open_clip model-config JSON (embed_dim, vision_cfg, text_cfg, quick_gelu),\n"
    "              a HF config.json, or a built-in name (ViT-B-32, ...); the text tower must use\n"
    "              CLIP's vocabulary (vocab_size 49408)\n"
    "  --init M    start from model M (HF directory) instead of a random initialisation\n"
    "data:\n"
    "  --synth N         train on synthetic indices [I, I+N)            (default 100000)\n"
    "  --synth-start I                                                  (default 0)\n"
    "  --synth-seed SEED data set seed, as taca synth --seed            (default 1)\n"
    "  --size S          render size before CLIP preprocessing (resize + center crop to the\n"
    "                    model's image size), as the images taca synth writes (default: the\n"
    "                    model's image size)\n"
    "optimisation:\n"
    "  --steps N (1000)  --batch-size B (128)  --lr LR (5e-4)  --warmup W (steps/10)\n"
    "  --weight-decay WD (0.2)  --beta1 (0.9)  --beta2 (0.98)  --eps (1e-6)  --seed S (0)\n"
    "evaluation (after training, on held-out samples):\n"
    "  --eval N (1000; 0: none)  --eval-start I (default: just after the training range)\n"
    "  in-batch image->text and text->image accuracy (exact pair, and same attributes), R@1 over\n"
    "  the N samples, and a linear probe on the labels (fit on half, tested on the other half)\n"
    "output:\n"
    "  --log-json FILE   one JSON object per step: step, loss, acc_i2t, acc_t2i, lr, logit_scale,\n"
    "                    samples_per_s (the loss before that step's update)\n"
    "  --log-every K     progress line on stderr every K steps (default 10)\n"
    "  --threads N       compute threads (default: all cores)\n"
    "  Prints one JSON summary line on stdout (training and evaluation figures), which is also\n"
    "  stored in model.safetensors' metadata as \"taca.pretrain\".\n";

typedef struct options {
  const char *arch, *out, *init, *log_json;
  long long synth_n, synth_start, synth_seed, eval_n, eval_start;
  int size, steps, batch, warmup, threads, log_every;
  double lr, wd, beta1, beta2, eps;
  long long seed;
} options;

static int parse_double(const char *opt, const char *s, double lo, double *out) {
  char *end;
  errno = 0;
  double v = strtod(s, &end);
  if (errno || end == s || *end || !isfinite(v) || v < lo)
    return cli_fail("pretrain", 2, "%s expects a number >= %g, got '%s'", opt, lo, s), -1;
  *out = v;
  return 0;
}

static int parse_ll(const char *opt, const char *s, long long lo, long long *out) {
  char *end;
  errno = 0;
  long long v = strtoll(s, &end, 10);
  if (errno || end == s || *end || v < lo)
    return cli_fail("pretrain", 2, "%s expects an integer >= %lld, got '%s'", opt, lo, s), -1;
  *out = v;
  return 0;
}

/* open_clip's cosine_lr: linear warmup to lr over `warmup` steps, then half a cosine to 0. */
static double lr_at(const options *o, int step) {
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

static int evaluate(clip_train *ct, const clip_tokenizer *tok, const options *o, int render_size,
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

/* ---- The command. */

int cmd_pretrain(int argc, char **argv) {
  options o = {.synth_n = 100000, .synth_seed = 1, .eval_n = 1000, .eval_start = -1,
               .steps = 1000, .batch = 128, .warmup = -1, .log_every = 10, .lr = 5e-4, .wd = 0.2,
               .beta1 = 0.9, .beta2 = 0.98, .eps = 1e-6};
  enum {
    O_ARCH = 256, O_OUT, O_INIT, O_SYNTH, O_SSTART, O_SSEED, O_SIZE, O_STEPS, O_BATCH, O_LR,
    O_WARMUP, O_WD, O_B1, O_B2, O_EPS, O_SEED, O_EVAL, O_ESTART, O_LOG, O_EVERY, O_THREADS, O_HELP
  };
  static const struct option opts[] = {
      {"arch", required_argument, 0, O_ARCH},          {"out", required_argument, 0, O_OUT},
      {"init", required_argument, 0, O_INIT},          {"synth", required_argument, 0, O_SYNTH},
      {"synth-start", required_argument, 0, O_SSTART}, {"synth-seed", required_argument, 0, O_SSEED},
      {"size", required_argument, 0, O_SIZE},          {"steps", required_argument, 0, O_STEPS},
      {"batch-size", required_argument, 0, O_BATCH},   {"lr", required_argument, 0, O_LR},
      {"warmup", required_argument, 0, O_WARMUP},      {"weight-decay", required_argument, 0, O_WD},
      {"beta1", required_argument, 0, O_B1},           {"beta2", required_argument, 0, O_B2},
      {"eps", required_argument, 0, O_EPS},            {"seed", required_argument, 0, O_SEED},
      {"eval", required_argument, 0, O_EVAL},          {"eval-start", required_argument, 0, O_ESTART},
      {"log-json", required_argument, 0, O_LOG},       {"log-every", required_argument, 0, O_EVERY},
      {"threads", required_argument, 0, O_THREADS},    {"help", no_argument, 0, O_HELP},
      {0, 0, 0, 0}};
  int c;
  long long ll;
  cli_env_options(&argc, &argv, "", opts); /* TACA_<OPTION> for options not given */
  optind = 1;
  opterr = 0;
  while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
    int bad = 0;
    switch (c) {
      case O_ARCH: if (cli_check_arch("pretrain", optarg)) return 2; o.arch = optarg; break;
      case O_OUT: o.out = optarg; break;
      case O_INIT: o.init = optarg; break;
      case O_SYNTH: bad = parse_ll("--synth", optarg, 1, &o.synth_n); break;
      case O_SSTART: bad = parse_ll("--synth-start", optarg, 0, &o.synth_start); break;
      case O_SSEED: bad = parse_ll("--synth-seed", optarg, 0, &o.synth_seed); break;
      case O_SIZE: bad = cli_parse_positive("pretrain", "--size", optarg, &o.size); break;
      case O_STEPS: bad = cli_parse_positive("pretrain", "--steps", optarg, &o.steps); break;
      case O_BATCH: bad = cli_parse_positive("pretrain", "--batch-size", optarg, &o.batch); break;
      case O_LR: bad = parse_double("--lr", optarg, 0, &o.lr); break;
      case O_WARMUP:
        bad = parse_ll("--warmup", optarg, 0, &ll);
        o.warmup = ll > 1000000000 ? 1000000000 : (int)ll;
        break;
      case O_WD: bad = parse_double("--weight-decay", optarg, 0, &o.wd); break;
      case O_B1: bad = parse_double("--beta1", optarg, 0, &o.beta1); break;
      case O_B2: bad = parse_double("--beta2", optarg, 0, &o.beta2); break;
      case O_EPS: bad = parse_double("--eps", optarg, 0, &o.eps); break;
      case O_SEED: bad = parse_ll("--seed", optarg, 0, &o.seed); break;
      case O_EVAL: bad = parse_ll("--eval", optarg, 0, &o.eval_n); break;
      case O_ESTART: bad = parse_ll("--eval-start", optarg, 0, &o.eval_start); break;
      case O_LOG: o.log_json = optarg; break;
      case O_EVERY: bad = cli_parse_positive("pretrain", "--log-every", optarg, &o.log_every); break;
      case O_THREADS: bad = cli_parse_positive("pretrain", "--threads", optarg, &o.threads); break;
      case O_HELP: fputs(USAGE, stdout); return 0;
      default:
        return cli_fail("pretrain", 2, "unknown or incomplete option '%s' (see --help)",
                        argv[optind - 1]);
    }
    if (bad) return 2;
  }
  if (optind < argc) return cli_fail("pretrain", 2, "unexpected argument '%s'", argv[optind]);
  if (!o.arch || !o.out) return cli_fail("pretrain", 2, "--arch and --out are required (see --help)");
  if (o.synth_n >= (1ll << 32)) return cli_fail("pretrain", 2, "--synth must be below 2^32");
  if (o.eval_n > 1000000) return cli_fail("pretrain", 2, "--eval must be at most 1000000");
  if (o.beta1 >= 1 || o.beta2 >= 1) return cli_fail("pretrain", 2, "--beta1 and --beta2 must be below 1");
  if (o.warmup < 0) o.warmup = o.steps / 10;
  if (o.warmup > o.steps) o.warmup = o.steps;
  if (o.eval_start < 0) o.eval_start = o.synth_start + o.synth_n;

  taca_error err = {{0}};
  clip_config cfg;
  if (clip_config_from_arg(&cfg, o.arch, &err)) return cli_fail("pretrain", 2, "%s", err.msg);
  if (!cfg.has_text) return cli_fail("pretrain", 2, "%s: the architecture has no text tower", o.arch);
  if (cfg.vocab_size != CLIP_VOCAB_SIZE)
    return cli_fail("pretrain", 2, "%s: text vocab_size is %d; the CLIP tokenizer needs %d", o.arch,
                    cfg.vocab_size, CLIP_VOCAB_SIZE);
  const int render_size = o.size ? o.size : cfg.image_size;
  if (render_size < 8 || render_size > 1024)
    return cli_fail("pretrain", 2, "--size must be in 8..1024");

  if (o.threads > 0) omp_set_num_threads(o.threads);
  nn_backend *be = nn_backend_cpu_create(o.threads);
  clip_tokenizer *tok = clip_tokenizer_load(NULL, &err);
  clip_train *ct = NULL;
  pretrain_feed *feed = NULL;
  FILE *log = NULL;
  char *summary = NULL;
  int rc = 1;
  if (!be || !tok) {
    cli_fail("pretrain", 1, "%s", be ? err.msg : "cannot create the CPU backend");
    goto done;
  }
  if (!(ct = clip_train_create(&cfg, be, o.batch, (uint64_t)o.seed, &err))) {
    cli_fail("pretrain", 1, "%s", err.msg);
    goto done;
  }
  if (o.init && clip_train_load(ct, o.init, NULL, &err)) {
    cli_fail("pretrain", 1, "--init: %s", err.msg);
    goto done;
  }
  if (o.log_json && !(log = fopen(o.log_json, "w"))) {
    cli_fail("pretrain", 1, "%s: %s", o.log_json, strerror(errno));
    goto done;
  }
  fprintf(stderr,
          "taca pretrain: %zu parameters (vision %lld, text %lld), %.0f MiB; %d steps of %d on "
          "synthetic samples %lld..%lld (seed %lld, %dpx -> %dpx)\n",
          clip_train_param_count(&cfg), clip_config_vision_params(&cfg),
          clip_config_text_params(&cfg), clip_train_memory_bytes(ct) / 1048576.0, o.steps, o.batch,
          o.synth_start, o.synth_start + o.synth_n - 1, o.synth_seed, render_size,
          cfg.image_size);
  pretrain_feed_config fc = {(uint64_t)o.synth_seed, (uint64_t)o.synth_start,
                             (uint64_t)o.synth_n, render_size, cfg.image_size, cfg.context_len,
                             o.batch, o.steps, 1, (uint64_t)o.seed};
  if (!(feed = pretrain_feed_start(&fc, tok, &err))) {
    cli_fail("pretrain", 1, "%s", err.msg);
    goto done;
  }
  const double t0 = taca_now_s();
  double wait_total = 0, loss_tail = 0;
  int tail_n = 0;
  clip_train_optim opt = {o.lr, o.beta1, o.beta2, o.eps, o.wd};
  clip_loss_result r = {0};
  for (int step = 0; step < o.steps; step++) {
    const double ts = taca_now_s();
    int failed;
    const pretrain_batch *b = pretrain_feed_next(feed, &failed, &err);
    if (!b) {
      cli_fail("pretrain", 1, "%s", failed ? err.msg : "the data feed ended early");
      goto done;
    }
    const double tw = taca_now_s();
    wait_total += tw - ts;
    const float scale = clip_train_logit_scale(ct);
    clip_train_zero_grad(ct);
    if (clip_train_step(ct, b->pixels, b->tokens, b->n, &r, &err)) {
      cli_fail("pretrain", 1, "step %d: %s", step, err.msg);
      goto done;
    }
    opt.lr = lr_at(&o, step);
    clip_train_update(ct, &opt);
    const int n = b->n;
    pretrain_feed_release(feed);
    const double sps = n / (taca_now_s() - ts);
    if (step >= o.steps - 10) loss_tail += r.loss, tail_n++;
    if (log)
      fprintf(log,
              "{\"step\": %d, \"loss\": %.6f, \"acc_i2t\": %.4f, \"acc_t2i\": %.4f, \"lr\": %.6g, "
              "\"logit_scale\": %.5f, \"samples_per_s\": %.1f}\n",
              step, r.loss, r.acc_i2t, r.acc_t2i, opt.lr, scale, sps);
    if ((step + 1) % o.log_every == 0 || step == o.steps - 1)
      fprintf(stderr,
              "step %6d/%d  loss %.4f  acc i->t %.3f t->i %.3f  lr %.2e  scale %.2f  %.0f "
              "samples/s  (%.0f s)\n",
              step + 1, o.steps, r.loss, r.acc_i2t, r.acc_t2i, opt.lr, exp(scale), sps,
              taca_now_s() - t0);
  }
  const double train_s = taca_now_s() - t0;
  pretrain_feed_stop(feed);
  feed = NULL;
  if (log && fclose(log)) {
    log = NULL;
    cli_fail("pretrain", 1, "%s: write failed", o.log_json);
    goto done;
  }
  log = NULL;

  json_t *js = json_object();
  json_t *jt = json_pack("{s:s, s:i, s:i, s:f, s:f, s:f, s:f, s:f, s:I, s:I, s:I, s:I}", "arch",
                         o.arch, "steps", o.steps, "batch", o.batch, "lr", o.lr, "seconds",
                         train_s, "samples_per_s", (double)o.steps * o.batch / train_s,
                         "data_wait_s", wait_total, "final_loss", loss_tail / (tail_n ? tail_n : 1),
                         "synth_seed", o.synth_seed, "synth_start", o.synth_start, "synth_n",
                         o.synth_n, "seed", o.seed);
  json_object_set_new(jt, "logit_scale", json_real(clip_train_logit_scale(ct)));
  json_object_set_new(js, "train", jt);
  fprintf(stderr, "taca pretrain: trained in %.1f s (%.0f samples/s, %.1f s waiting for data)\n",
          train_s, o.steps * o.batch / train_s, wait_total);
  if (o.eval_n > 0) {
    eval_figures ef;
    const double te = taca_now_s();
    if (evaluate(ct, tok, &o, render_size, &ef, &err)) {
      json_decref(js);
      cli_fail("pretrain", 1, "evaluation: %s", err.msg);
      goto done;
    }
    json_object_set_new(
        js, "eval",
        json_pack("{s:I, s:i, s:i, s:f, s:f, s:f, s:f, s:f, s:f, s:f, s:f, s:f, s:f, s:f, s:f, s:i}",
                  "start",
                  o.eval_start, "n", ef.n, "batch", ef.batch, "inbatch_i2t", ef.ib_i2t,
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
            ef.n, o.eval_start, taca_now_s() - te, ef.batch, ef.ib_i2t, ef.ib_t2i, ef.ib_i2t_attr,
            ef.ib_t2i_attr, 1.0 / ef.batch, ef.r1_i2t, ef.r1_t2i, ef.n, ef.r1_i2t_attr,
            ef.r1_t2i_attr, ef.probe_classes, ef.probe_acc);
  }
  summary = json_dumps(js, JSON_COMPACT | JSON_REAL_PRECISION(6));
  json_decref(js);
  if (!summary) {
    cli_fail("pretrain", 1, "out of memory");
    goto done;
  }
  const char *meta[] = {"taca.pretrain", summary, NULL};
  if (clip_train_save_hf(ct, o.out, meta, &err)) {
    cli_fail("pretrain", 1, "%s", err.msg);
    goto done;
  }
  printf("%s\n", summary);
  fprintf(stderr, "taca pretrain: saved %s\n", o.out);
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
