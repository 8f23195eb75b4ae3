/* cmd_pretrain.c: `taca pretrain`: the options of the pretraining job (services/pretrain/pretrain.h,
 * which trains a small CLIP model from scratch on the synthetic shapes: the demo's old and new
 * models), checked here; the job does the rest. */
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>

#include "nn/clip.h"
#include "services/cli/cli_util.h"
#include "services/pretrain/pretrain.h"
#include "text/tokenizer.h"

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

/* ---- The command. */

int cmd_pretrain(int argc, char **argv) {
  pretrain_options o = {.synth_n = 100000, .synth_seed = 1, .eval_n = 1000, .eval_start = -1,
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

  char *summary = NULL;
  if (pretrain_run(&o, &cfg, &summary, &err)) return cli_fail("pretrain", 1, "%s", err.msg);
  printf("%s\n", summary);
  free(summary);
  return 0;
}
