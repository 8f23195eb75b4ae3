/* train_options.c: parsing of taca-train's options (command line, then TACA_* environment). */
#include "trainer/train_options.h"

#include "base/envopt.h"
#include "base/hostport.h"
#include "nn/clip_config.h"

#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *USAGE =
    "usage: taca-train --server ADDR[,ADDR...] --new-model NEW [--arch A] --out DIR [options]\n"
    "  Trains TaCA adapters and the projector on the frozen new CLIP vision tower against an old\n"
    "  model's embeddings served by taca-featured. One process per rank: mpirun -np N taca-train ...\n"
    "options (each also as environment variable TACA_<OPTION>, e.g. TACA_BATCH_SIZE):\n"
    "  --objective taca|aft       TaCA adapters (default), or AFT transfer into a downstream model\n"
    "  --device cpu|cuda[:N]      where the model computes (default cpu)\n"
    "  --batch-size B             global batch, split evenly over the ranks (default 32)\n"
    "  --steps N                  updates to make in all (default 100; a resumed run continues to N)\n"
    "  --lr 2e-4  --weight-decay 0.01  --lambda 2\n"
    "  --loss taca|contrastive|distill   both terms (default), or one of them (ablations)\n"
    "  --peft adapter|lora        adapters after blocks (default) or LoRA on q/v (Table 5)\n"
    "  --bottleneck K             adapter width (default 128; 256 for towers wider than 1024)\n"
    "  --lora-rank R --lora-alpha A   LoRA rank and scale numerator (default 8, 8)\n"
    "  --adapter-layers all|A-B   blocks carrying modules, 1-based inclusive (default all)\n"
    "  --projector-hidden H       (default 4096)\n"
    "  --targets NAME             stored model whose embeddings are the targets (default: the only one)\n"
    "  --seed S                   initialisation and data order (default 0)\n"
    "  --save-every K             DIR/step-NNNNNN.safetensors at 0, every K updates, and the last\n"
    "  --resume                   continue from the latest checkpoint in --out (parameters, AdamW\n"
    "                             state and data position); a fresh start when there is none\n"
    "                             (AFT: finished methods are kept, the next one continues)\n"
    "  --init FILE                initial trainable tensors from a safetensors file\n"
    "  --log-json FILE            one JSON object per step (rank 0)\n"
    "  --recompute                recompute block activations in the backward (less memory)\n"
    "  --threads N                compute threads per rank (default: all cores / ranks on this host)\n"
    "  --precision f32|bf16       the frozen tower's forward and input-gradient GEMMs in BF16 with\n"
    "                             F32 accumulation (adapters, LoRA, projector, AdamW stay F32;\n"
    "                             CPU; TaCA only); default f32\n"
    "  --timeout-ms T --retry-budget-ms R   per-call deadline and the time to keep retrying an\n"
    "                             unavailable server before giving up (defaults 30000, 60000)\n"
    "  --token TOKEN              bearer token for the servers\n"
    "  --dry-run                  print the trainable/frozen parameter table (paper's Table 1) and exit\n"
    "  --quiet                    no per-step log lines\n"
    "AFT (--objective aft; --new-model is not used): trains a downstream model on the store's labels\n"
    "with CE + beta R, R aligning its features with the cached features of --features (DESIGN.md):\n"
    "  --features M[,M...]        stored models whose image embeddings are the pre-trained features\n"
    "  --downstream ARCH          linear[:D] (a linear model: D features, default 64, then the\n"
    "                             classifier) or a vision tower: a built-in CLIP name or a JSON\n"
    "                             config; trained in full, with a linear classifier on its embedding\n"
    "  --downstream-init MODEL    start the tower from these weights (default: random init)\n"
    "  --methods aft[,stl,kd]     train each method from the same start on the same batches and\n"
    "                             compare: aft, stl (standard training, beta 0), kd (a learned\n"
    "                             linear map from downstream to pre-trained features, MSE)\n"
    "  --beta 10                  weight of R (and of the KD loss)\n"
    "  --prior-lr 1e-2            learning rate of s (rho = sigmoid(s)) and of the KD map\n"
    "  --test-server ADDR         featured serving the labelled test set: test accuracy per method\n"
    "  --num-classes C            (default: 1 + the largest test label)\n"
    "  --report FILE              the comparison as JSON (default DIR/report.json)\n"
    "  --schedule cosine|constant learning-rate schedule (AFT default cosine over --steps)\n"
    "  AFT defaults: --lr 1e-3, --weight-decay 0, --batch-size 32.\n";

enum {
  O_SERVER = 256, O_NEW_MODEL, O_ARCH, O_OUT, O_OBJECTIVE, O_BATCH, O_STEPS, O_LR, O_WD, O_LAMBDA,
  O_LOSS, O_PEFT, O_BOTTLENECK, O_LORA_RANK, O_LORA_ALPHA, O_LAYERS, O_HIDDEN, O_TARGETS, O_SEED,
  O_SAVE_EVERY, O_RESUME, O_INIT, O_LOG_JSON, O_RECOMPUTE, O_THREADS, O_TIMEOUT, O_RETRY, O_TOKEN,
  O_DRY_RUN, O_QUIET, O_DEVICE, O_FEATURES, O_DOWNSTREAM, O_DOWNSTREAM_INIT, O_METHODS, O_BETA,
  O_PRIOR_LR, O_TEST_SERVER, O_NUM_CLASSES, O_REPORT, O_SCHEDULE, O_PRECISION, O_HELP
};

static const struct option OPTS[] = {
    {"server", required_argument, 0, O_SERVER}, {"new-model", required_argument, 0, O_NEW_MODEL},
    {"arch", required_argument, 0, O_ARCH}, {"out", required_argument, 0, O_OUT},
    {"objective", required_argument, 0, O_OBJECTIVE}, {"batch-size", required_argument, 0, O_BATCH},
    {"steps", required_argument, 0, O_STEPS}, {"lr", required_argument, 0, O_LR},
    {"weight-decay", required_argument, 0, O_WD}, {"lambda", required_argument, 0, O_LAMBDA},
    {"loss", required_argument, 0, O_LOSS}, {"peft", required_argument, 0, O_PEFT},
    {"bottleneck", required_argument, 0, O_BOTTLENECK}, {"lora-rank", required_argument, 0, O_LORA_RANK},
    {"lora-alpha", required_argument, 0, O_LORA_ALPHA}, {"adapter-layers", required_argument, 0, O_LAYERS},
    {"projector-hidden", required_argument, 0, O_HIDDEN}, {"targets", required_argument, 0, O_TARGETS},
    {"seed", required_argument, 0, O_SEED}, {"save-every", required_argument, 0, O_SAVE_EVERY},
    {"resume", no_argument, 0, O_RESUME}, {"init", required_argument, 0, O_INIT},
    {"log-json", required_argument, 0, O_LOG_JSON}, {"recompute", no_argument, 0, O_RECOMPUTE},
    {"threads", required_argument, 0, O_THREADS}, {"timeout-ms", required_argument, 0, O_TIMEOUT},
    {"retry-budget-ms", required_argument, 0, O_RETRY}, {"token", required_argument, 0, O_TOKEN},
    {"dry-run", no_argument, 0, O_DRY_RUN}, {"quiet", no_argument, 0, O_QUIET},
    {"device", required_argument, 0, O_DEVICE}, {"features", required_argument, 0, O_FEATURES},
    {"downstream", required_argument, 0, O_DOWNSTREAM},
    {"downstream-init", required_argument, 0, O_DOWNSTREAM_INIT},
    {"methods", required_argument, 0, O_METHODS}, {"beta", required_argument, 0, O_BETA},
    {"prior-lr", required_argument, 0, O_PRIOR_LR}, {"test-server", required_argument, 0, O_TEST_SERVER},
    {"num-classes", required_argument, 0, O_NUM_CLASSES}, {"report", required_argument, 0, O_REPORT},
    {"schedule", required_argument, 0, O_SCHEDULE}, {"precision", required_argument, 0, O_PRECISION},
    {"help", no_argument, 0, O_HELP}, {0, 0, 0, 0}};

static const char *env_source; /* the variable the value being applied came from, or NULL */

static int bad(const char *opt, const char *val, const char *want) {
  if (env_source)
    fprintf(stderr, "taca-train: --%s expects %s, got '%s' (from the environment variable %s)\n", opt, want, val,
            env_source);
  else fprintf(stderr, "taca-train: --%s expects %s, got '%s'\n", opt, want, val);
  return 2;
}

static int parse_long(const char *s, long lo, long *out) {
  char *end;
  errno = 0;
  long v = strtol(s, &end, 10);
  if (errno || end == s || *end || v < lo) return -1;
  *out = v;
  return 0;
}

static int parse_double(const char *s, double lo, double *out) {
  char *end;
  errno = 0;
  double v = strtod(s, &end);
  if (errno || end == s || *end || !(v >= lo)) return -1;
  *out = v;
  return 0;
}

/* Applies one option's value; 0 ok, 2 usage error. */
static int apply(train_options *o, int id, const char *name, const char *v) {
  long l;
  double d;
  switch (id) {
    case O_SERVER:
    case O_TEST_SERVER: {
      taca_error err; /* ADDR[,ADDR...], ports 1..65535 (base/hostport.h) */
      if (taca_hostport_check_list(id == O_SERVER ? "--server" : "--test-server", v, &err)) {
        fprintf(stderr, "taca-train: %s%s%s%s\n", err.msg, env_source ? " (from the environment variable " : "",
                env_source ? env_source : "", env_source ? ")" : "");
        return 2;
      }
      *(id == O_SERVER ? &o->servers : &o->test_server) = v;
      break;
    }
    case O_NEW_MODEL: o->new_model = v; break;
    case O_ARCH: {
      clip_config cfg; /* a built-in name or a config JSON: a bad one is a usage error */
      taca_error err;
      if (clip_config_from_arg(&cfg, v, &err)) {
        fprintf(stderr, "taca-train: --arch: %s%s%s%s\n", err.msg, env_source ? " (from the environment variable " : "",
                env_source ? env_source : "", env_source ? ")" : "");
        return 2;
      }
      o->arch = v;
      break;
    }
    case O_OUT: o->out = v; break;
    case O_OBJECTIVE:
      if (!strcmp(v, "taca")) o->objective = OBJECTIVE_TACA;
      else if (!strcmp(v, "aft")) o->objective = OBJECTIVE_AFT;
      else return bad(name, v, "taca or aft");
      break;
    case O_BATCH: if (parse_long(v, 1, &l) || l > 1 << 20) return bad(name, v, "a positive integer"); o->batch_size = (int)l; break;
    case O_STEPS: if (parse_long(v, 1, &l)) return bad(name, v, "a count >= 1"); o->steps = l; break;
    case O_LR: if (parse_double(v, 0, &d) || !(d > 0) || !isfinite(d)) return bad(name, v, "a number > 0"); o->lr = d; o->lr_given = 1; break;
    case O_WD: if (parse_double(v, 0, &d)) return bad(name, v, "a number >= 0"); o->weight_decay = d; o->wd_given = 1; break;
    case O_LAMBDA: if (parse_double(v, 0, &d)) return bad(name, v, "a number >= 0"); o->lambda = d; break;
    case O_LOSS:
      if (!strcmp(v, "taca")) o->loss = LOSS_TACA;
      else if (!strcmp(v, "contrastive")) o->loss = LOSS_CONTRASTIVE;
      else if (!strcmp(v, "distill")) o->loss = LOSS_DISTILL;
      else return bad(name, v, "taca, contrastive or distill");
      break;
    case O_PEFT:
      if (strcmp(v, "adapter") && strcmp(v, "lora")) return bad(name, v, "adapter or lora");
      o->peft = v;
      break;
    case O_BOTTLENECK: if (parse_long(v, 1, &l) || l > 1 << 16) return bad(name, v, "a positive integer"); o->bottleneck = (int)l; break;
    case O_LORA_RANK: if (parse_long(v, 1, &l) || l > 1 << 16) return bad(name, v, "a positive integer"); o->lora_rank = (int)l; break;
    case O_LORA_ALPHA: if (parse_double(v, 0, &d)) return bad(name, v, "a number >= 0"); o->lora_alpha = d; break;
    case O_LAYERS: o->adapter_layers = v; break;
    case O_HIDDEN: if (parse_long(v, 1, &l) || l > 1 << 20) return bad(name, v, "a positive integer"); o->projector_hidden = (int)l; break;
    case O_TARGETS: o->targets = v; break;
    case O_SEED: if (parse_long(v, 0, &l)) return bad(name, v, "an integer >= 0"); o->seed = (uint64_t)l; break;
    case O_SAVE_EVERY: if (parse_long(v, 0, &l)) return bad(name, v, "a count >= 0"); o->save_every = l; break;
    case O_RESUME: o->resume = "yes"; break;
    case O_INIT: o->init = v; break;
    case O_LOG_JSON: o->log_json = v; break;
    case O_RECOMPUTE: o->recompute = 1; break;
    case O_THREADS: if (parse_long(v, 1, &l) || l > 1024) return bad(name, v, "a positive integer"); o->threads = (int)l; break;
    case O_TIMEOUT: if (parse_long(v, 1, &l) || l > 1L << 30) return bad(name, v, "milliseconds > 0"); o->timeout_ms = (int)l; break;
    case O_RETRY: if (parse_long(v, 0, &l) || l > 1L << 30) return bad(name, v, "milliseconds >= 0"); o->retry_budget_ms = (int)l; break;
    case O_TOKEN: o->token = v; break;
    case O_DRY_RUN: o->dry_run = 1; break;
    case O_QUIET: o->quiet = 1; break;
    case O_DEVICE:
      if (strcmp(v, "cpu") && strncmp(v, "cuda", 4)) return bad(name, v, "cpu, cuda or cuda:N");
      o->device = v;
      break;
    case O_FEATURES: o->features = v; break;
    case O_DOWNSTREAM: o->downstream = v; break;
    case O_DOWNSTREAM_INIT: o->downstream_init = v; break;
    case O_METHODS: {
      /* each of aft, stl, kd at most once */
      int seen[3] = {0};
      const char *p = v;
      while (*p) {
        size_t len = strcspn(p, ",");
        int k = len == 3 && !strncmp(p, "aft", 3) ? 0 : len == 3 && !strncmp(p, "stl", 3) ? 1
              : len == 2 && !strncmp(p, "kd", 2) ? 2 : -1;
        if (k < 0 || seen[k]++) return bad(name, v, "a list of distinct methods from aft, stl, kd");
        p += len + (p[len] == ',');
      }
      if (!*v) return bad(name, v, "a list of methods from aft, stl, kd");
      o->methods = v;
      break;
    }
    case O_BETA: if (parse_double(v, 0, &d)) return bad(name, v, "a number >= 0"); o->beta = d; break;
    case O_PRIOR_LR: if (parse_double(v, 0, &d)) return bad(name, v, "a number >= 0"); o->prior_lr = d; break;
    case O_NUM_CLASSES: if (parse_long(v, 2, &l) || l > 1 << 20) return bad(name, v, "an integer >= 2"); o->num_classes = (int)l; break;
    case O_REPORT: o->report = v; break;
    case O_SCHEDULE:
      if (!strcmp(v, "cosine")) o->cosine = 1;
      else if (!strcmp(v, "constant")) o->cosine = 0;
      else return bad(name, v, "cosine or constant");
      break;
    case O_PRECISION: {
      taca_error e;
      if (nn_precision_parse(v, &o->precision, &e)) return bad(name, v, "f32 or bf16");
      break;
    }
  }
  return 0;
}

int train_options_parse(train_options *o, int argc, char **argv) {
  memset(o, 0, sizeof *o);
  o->batch_size = 32;
  o->steps = 100;
  o->lr = 2e-4;
  o->weight_decay = 0.01;
  o->lambda = 2.0;
  o->lora_rank = 8;
  o->lora_alpha = 8;
  o->projector_hidden = 4096;
  o->adapter_layers = "all";
  o->peft = "adapter";
  o->timeout_ms = 30000;
  o->retry_budget_ms = 60000;
  o->device = "cpu";
  o->methods = "aft";
  o->beta = 10;
  o->prior_lr = 1e-2;
  o->cosine = -1;
  char given[O_HELP + 1] = {0};
  int c;
  optind = 1;
  opterr = 0;
  while ((c = getopt_long(argc, argv, "", OPTS, NULL)) != -1) {
    if (c == O_HELP) {
      fputs(USAGE, stdout);
      return 1;
    }
    if (c == '?' || c == ':') {
      fprintf(stderr, "taca-train: unknown or incomplete option '%s' (see --help)\n", argv[optind - 1]);
      return 2;
    }
    const char *name = "?";
    for (const struct option *p = OPTS; p->name; p++)
      if (p->val == c) name = p->name;
    if (apply(o, c, name, optarg)) return 2;
    given[c] = 1;
  }
  if (optind < argc) {
    fprintf(stderr, "taca-train: unexpected argument '%s'\n", argv[optind]);
    return 2;
  }
  /* TACA_<NAME> for options not on the command line (rules: base/envopt.h). */
  for (const struct option *p = OPTS; p->name; p++) {
    if (given[p->val]) continue;
    char env[64];
    const char *v;
    taca_error err;
    int set = taca_env_option("TACA_", p, env, sizeof env, &v, &err);
    if (set < 0) {
      fprintf(stderr, "taca-train: %s\n", err.msg);
      return 2;
    }
    if (!set) continue;
    env_source = env;
    int rc = apply(o, p->val, p->name, v);
    env_source = NULL;
    if (rc) return 2;
  }
  if (o->dry_run) return 0;
  if (o->objective == OBJECTIVE_AFT) {
    if (o->precision != NN_PRECISION_F32) {
      fprintf(stderr, "taca-train: --precision bf16 is for --objective taca (AFT trains its whole model, in F32)\n");
      return 2;
    }
    if (!o->lr_given) o->lr = 1e-3;
    if (!o->wd_given) o->weight_decay = 0;
    if (o->cosine < 0) o->cosine = 1;
    if (!o->servers || !o->features || !o->downstream || !o->out) {
      fprintf(stderr, "taca-train: --objective aft needs --server, --features, --downstream and --out (see --help)\n");
      return 2;
    }
    if (!o->test_server && !o->num_classes) {
      fprintf(stderr, "taca-train: --objective aft needs --test-server or --num-classes (the number of classes)\n");
      return 2;
    }
    return 0;
  }
  if (o->cosine < 0) o->cosine = 0;
  if (!o->servers || !o->new_model || !o->out) {
    fprintf(stderr, "taca-train: --server, --new-model and --out are required (see --help)\n");
    return 2;
  }
  return 0;
}

double train_lr_at(const train_options *o, double base_lr, long step) {
  if (!o->cosine || o->steps <= 0) return base_lr;
  return base_lr * 0.5 * (1.0 + cos(M_PI * (double)step / (double)o->steps));
}

void train_log_retry(void *arg, const char *server, const char *error, int wait_ms, int attempt) {
  fprintf(stderr, "taca-train: rank %d: %s: %s; retrying in %.1f s (attempt %d, --retry-budget-ms bounds it)\n",
          (int)(intptr_t)arg, server, error, wait_ms / 1000.0, attempt);
}
