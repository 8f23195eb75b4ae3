/* cmd_eval.c: `taca eval`: the hot-plug compatibility report of a TaCA checkpoint on a held-out
 * split of a store (services/eval/): retrieval against the old text encoder, an old downstream head
 * applied unchanged, feature distances; as a table, JSON and a self-contained HTML page. */
#include <errno.h>
#include <getopt.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "services/cli/cli_util.h"
#include "services/cli/commands.h"
#include "services/eval/eval.h"
#include "services/eval/report.h"

static const char *USAGE =
    "usage: taca eval --db DIR --old NAME --new-model NEW [--arch A] [--checkpoint CKPT.safetensors]\n"
    "                 [--split 0.8] [--split-group G] [--seed S] [--json OUT.json] [--html OUT.html]\n"
    "                 [--log-json TRAIN_LOG.json] [--batch-size 32] [--threads N] [--quiet]\n"
    "                 [--service-json SWAP.json] [--aft-json AFT_REPORT.json]\n"
    "                 [--precision f32|bf16]\n"
    "                 [--no-new-head] [--head-l2 1e-3] [--head-iters 1000] [--lora-alpha 8]\n"
    "                 [--save-features DIR] [--gate min-gain=X,max-flip=Y,min-update-gain=Z]\n"
    "  NEW is a CLIP model (with --checkpoint: plus that TaCA checkpoint) or a directory written by\n"
    "  `taca export` (an adapted model itself; then no --checkpoint).\n"
    "  Measures the paper's Eq. (2) on a store: with the old downstream head untouched,\n"
    "  old features < adapted new features <= new features with a retrained head.\n"
    "  Split: sample INDEX is in the train split iff u(SEED, INDEX) < SPLIT, u a splitmix64 hash in\n"
    "  [0, 1) (services/eval/metrics.h); only the test split is scored. --split-group G decides by\n"
    "  INDEX / G instead, keeping groups of G consecutive indices (taca synth --motion G's frame\n"
    "  sequences) in one split. Samples need pixels (at the\n"
    "  new model's input size) and NAME's image embedding (and text embedding when NAME has text).\n"
    "  On the test split, against NAME's stored embeddings:\n"
    "    retrieval   text->image and image->text R@1/5/10 (cosine; the true item is the sample's\n"
    "                own caption/image, ties broken by index) for the old image embeddings, the\n"
    "                adapted new features (--checkpoint: new tower + adapters/LoRA + projector)\n"
    "                and the unadapted new features (when the widths match), beside chance k/N;\n"
    "    old head    softmax regression (full-batch L-BFGS, L2 --head-l2 on the weights, inputs\n"
    "                centred and scaled by train statistics that belong to the head) trained on\n"
    "                the old image embeddings of the train split, applied unchanged to each\n"
    "                encoder's test features; and a head trained on the new model's own train\n"
    "                features (the upper reference; --no-new-head skips encoding the train split);\n"
    "    distance    mean L2 and mean cosine between each encoder's features and the old ones;\n"
    "    compatibility  BCT's protocol: label retrieval within the test split (each labelled sample\n"
    "                queries the others; R@1 and mAP) for old->old, new->old (adapted query, old\n"
    "                gallery: the upgrade without backfill) and new->new (unadapted, full backfill);\n"
    "                the gain (new->old minus old->old R@1) and BCT's update gain (gain divided by\n"
    "                new->new minus old->old); the old head's negative-flip rate (labelled test\n"
    "                samples it gets right on old features and wrong on adapted ones).\n"
    "  --gate: after the reports, exit 3 when a threshold fails or cannot be measured (the reason on\n"
    "  stderr), 0 when all hold: min-gain in points of the R@1 gain, max-flip in percent of\n"
    "  negative flips, min-update-gain as a ratio; the table and the JSON (\"gate\") record the\n"
    "  verdict. Exit 1 is a run-time failure, 2 bad usage.\n"
    "  --service-json and --aft-json add the hot swap (deploy/demo/downstream.py's result: the old\n"
    "  head through a served alias before and after the flip) and an AFT report to the JSON and HTML.\n"
    "  --json writes every figure; --html a self-contained page (inline SVG: the loss curves of\n"
    "  --log-json, the recalls and accuracies, the tables). --lora-alpha is used for a LoRA\n"
    "  checkpoint whose metadata has no taca.lora_alpha. --save-features DIR writes what was scored\n"
    "  as .npy: test_index, test_label, test_old_image, test_old_text, test_new, test_adapted,\n"
    "  train_index, train_label, train_old_image, train_new (rows in split order).\n"
    "  --precision bf16: the new tower's matrix multiplies in BF16 with F32 accumulation (adapters,\n"
    "  LoRA and projector stay F32); the JSON then has \"precision\": \"bf16\". Default f32.\n";

#define CMD "eval"

static int parse_double(const char *opt, const char *s, double *out) {
  char *end;
  errno = 0;
  double v = strtod(s, &end);
  if (end == s || *end || errno) return cli_fail(CMD, 2, "%s: expected a number, got '%s'", opt, s);
  *out = v;
  return 0;
}

int cmd_eval(int argc, char **argv) {
  eval_options o;
  eval_options_default(&o);
  const char *json_out = NULL, *html_out = NULL;
  eval_gate gate;
  int have_gate = 0;
  enum { O_SERVICE = 200, O_AFT, O_DB = 1, O_OLD, O_NEW, O_ARCH, O_CKPT, O_SPLIT, O_SEED, O_JSON, O_HTML, O_LOG, O_BATCH, O_THREADS,
         O_QUIET, O_NO_NEW_HEAD, O_HEAD_L2, O_HEAD_ITERS, O_LORA_ALPHA, O_SAVE, O_GATE, O_PRECISION, O_SPLIT_GROUP, O_HELP };
  static const struct option opts[] = {
      {"db", required_argument, 0, O_DB},           {"old", required_argument, 0, O_OLD},
      {"new-model", required_argument, 0, O_NEW},   {"arch", required_argument, 0, O_ARCH},
      {"checkpoint", required_argument, 0, O_CKPT}, {"split", required_argument, 0, O_SPLIT},
      {"seed", required_argument, 0, O_SEED},       {"json", required_argument, 0, O_JSON},
      {"split-group", required_argument, 0, O_SPLIT_GROUP},
      {"html", required_argument, 0, O_HTML},       {"log-json", required_argument, 0, O_LOG},
      {"service-json", required_argument, 0, O_SERVICE}, {"aft-json", required_argument, 0, O_AFT},
      {"batch-size", required_argument, 0, O_BATCH}, {"threads", required_argument, 0, O_THREADS},
      {"precision", required_argument, 0, O_PRECISION},
      {"quiet", no_argument, 0, O_QUIET},           {"no-new-head", no_argument, 0, O_NO_NEW_HEAD},
      {"head-l2", required_argument, 0, O_HEAD_L2}, {"head-iters", required_argument, 0, O_HEAD_ITERS},
      {"lora-alpha", required_argument, 0, O_LORA_ALPHA}, {"save-features", required_argument, 0, O_SAVE},
      {"gate", required_argument, 0, O_GATE},       {"help", no_argument, 0, O_HELP},
      {0, 0, 0, 0}};
  int c;
  double d = 0;
  cli_env_options(&argc, &argv, "", opts); /* TACA_<OPTION> for options not given */
  optind = 1;
  opterr = 0;
  while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
    switch (c) {
      case O_DB: o.db = optarg; break;
      case O_OLD: o.old_name = optarg; break;
      case O_NEW: o.new_model = optarg; break;
      case O_ARCH: if (cli_check_arch("eval", optarg)) return 2; o.arch = optarg; break;
      case O_CKPT: o.checkpoint = optarg; break;
      case O_SPLIT:
        if (parse_double("--split", optarg, &o.split)) return 2;
        if (!(o.split > 0 && o.split < 1)) return cli_fail(CMD, 2, "--split must be in (0, 1), got '%s'", optarg);
        break;
      case O_SPLIT_GROUP: if (cli_parse_positive(CMD, "--split-group", optarg, &o.split_group)) return 2; break;
      case O_SEED: {
        char *end;
        errno = 0;
        unsigned long long v = strtoull(optarg, &end, 10);
        if (end == optarg || *end || errno || optarg[0] == '-')
          return cli_fail(CMD, 2, "--seed: expected a non-negative integer, got '%s'", optarg);
        o.seed = v;
        break;
      }
      case O_JSON: json_out = optarg; break;
      case O_HTML: html_out = optarg; break;
      case O_LOG: o.log_json = optarg; break;
      case O_SERVICE: o.service_json = optarg; break;
      case O_AFT: o.aft_json = optarg; break;
      case O_BATCH: if (cli_parse_positive(CMD, "--batch-size", optarg, &o.batch_size)) return 2; break;
      case O_THREADS: if (cli_parse_positive(CMD, "--threads", optarg, &o.threads)) return 2; break;
      case O_PRECISION: if (cli_parse_precision(CMD, optarg, &o.precision)) return 2; break;
      case O_QUIET: o.quiet = 1; break;
      case O_NO_NEW_HEAD: o.new_head = 0; break;
      case O_HEAD_L2:
        if (parse_double("--head-l2", optarg, &o.head.l2)) return 2;
        if (!(o.head.l2 >= 0)) return cli_fail(CMD, 2, "--head-l2 must be >= 0, got '%s'", optarg);
        break;
      case O_HEAD_ITERS: if (cli_parse_positive(CMD, "--head-iters", optarg, &o.head.max_iter)) return 2; break;
      case O_LORA_ALPHA:
        if (parse_double("--lora-alpha", optarg, &d)) return 2;
        if (!(d > 0)) return cli_fail(CMD, 2, "--lora-alpha must be positive, got '%s'", optarg);
        o.lora_alpha = (float)d;
        break;
      case O_SAVE: o.features_dir = optarg; break;
      case O_GATE: {
        taca_error ge = {{0}};
        if (eval_gate_parse(optarg, &gate, &ge)) return cli_fail(CMD, 2, "%s", ge.msg);
        have_gate = 1;
        break;
      }
      case O_HELP: fputs(USAGE, stdout); return 0;
      default: return cli_fail(CMD, 2, "unknown or incomplete option '%s' (see --help)", argv[optind - 1]);
    }
  }
  if (optind < argc) return cli_fail(CMD, 2, "unexpected argument '%s' (see --help)", argv[optind]);
  if (!o.db || !o.old_name || !o.new_model)
    return cli_fail(CMD, 2, "--db, --old and --new-model are required (see --help)");

  const char *extra[2] = {o.service_json, o.aft_json}, *extra_flag[2] = {"--service-json", "--aft-json"};
  for (int k = 0; k < 2; k++) { /* checked before the work, not after it */
    if (!extra[k]) continue;
    json_error_t je;
    json_t *j = json_load_file(extra[k], 0, &je);
    if (!j || !json_is_object(j)) {
      json_decref(j);
      return cli_fail(CMD, 1, "%s %s: not a JSON object (%s)", extra_flag[k], extra[k], j ? "another JSON value" : je.text);
    }
    json_decref(j);
  }
  if (have_gate) o.gate = &gate;
  eval_result r;
  taca_error err = {{0}};
  if (eval_run(&o, &r, &err)) return cli_fail(CMD, 1, "%s", err.msg);
  int rc = 0;
  if (!o.quiet) fputc('\n', stderr);
  eval_print_table(stdout, &r, &o);
  fflush(stdout);
  if (json_out && eval_write_json(json_out, &r, &o, &err)) rc = cli_fail(CMD, 1, "%s", err.msg);
  if (!rc && html_out && eval_write_html(html_out, &r, &o, &err)) rc = cli_fail(CMD, 1, "%s", err.msg);
  if (!rc && r.gate_checked) {
    if (r.gate_failed) rc = cli_fail(CMD, EVAL_GATE_EXIT, "gate failed: %s", r.gate_why);
    else if (!o.quiet) fprintf(stderr, "taca eval: gate passed\n");
  }
  eval_result_free(&r);
  return rc;
}
