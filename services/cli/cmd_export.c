/* cmd_export.c: `taca export`: the adapted encoder (NEW + TaCA checkpoint [+ OLD's text tower]) as
 * one self-contained HF-layout directory that every --model accepts (methods/taca_export.h). */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>

#include "methods/encoder.h"
#include "methods/taca_adapted.h"
#include "methods/taca_export.h"
#include "services/cli/cli_util.h"
#include "services/cli/commands.h"

#define CMD "export"

static const char *USAGE =
    "usage: taca export --new-model NEW [--arch A] --checkpoint CKPT.safetensors\n"
    "                   [--text-model OLD [--text-arch A]] [--lora-alpha 8] --out DIR\n"
    "  Writes DIR/config.json, DIR/model.safetensors and DIR/preprocessor_config.json: the NEW vision\n"
    "  tower with the checkpoint's adapters/LoRA and projector, and OLD's text tower (docs/export.md).\n"
    "  Its image features are the projector output, in OLD's embedding space; its text features are\n"
    "  OLD's. `taca embed|precompute|eval --model DIR` and taca-featured load it as a model; without\n"
    "  --text-model it has no text tower and its space is unknown (recorded as \"\").\n"
    "  --lora-alpha is used for a LoRA checkpoint whose metadata has no taca.lora_alpha.\n";

int cmd_export_model(int argc, char **argv) {
  const char *new_model = NULL, *arch = NULL, *ckpt = NULL, *old = NULL, *old_arch = NULL, *out = NULL;
  float lora_alpha = 8.0f;
  enum { O_NEW = 1, O_ARCH, O_CKPT, O_OLD, O_OLD_ARCH, O_ALPHA, O_OUT, O_HELP };
  static const struct option opts[] = {
      {"new-model", required_argument, 0, O_NEW},   {"arch", required_argument, 0, O_ARCH},
      {"checkpoint", required_argument, 0, O_CKPT}, {"text-model", required_argument, 0, O_OLD},
      {"text-arch", required_argument, 0, O_OLD_ARCH}, {"lora-alpha", required_argument, 0, O_ALPHA},
      {"out", required_argument, 0, O_OUT},         {"help", no_argument, 0, O_HELP},
      {0, 0, 0, 0}};
  int c;
  optind = 1;
  opterr = 0;
  while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
    switch (c) {
      case O_NEW: new_model = optarg; break;
      case O_ARCH: arch = optarg; break;
      case O_CKPT: ckpt = optarg; break;
      case O_OLD: old = optarg; break;
      case O_OLD_ARCH: old_arch = optarg; break;
      case O_ALPHA: {
        char *end;
        double d = strtod(optarg, &end);
        if (end == optarg || *end || !(d > 0)) return cli_fail(CMD, 2, "--lora-alpha must be a positive number, got '%s'", optarg);
        lora_alpha = (float)d;
        break;
      }
      case O_OUT: out = optarg; break;
      case O_HELP: fputs(USAGE, stdout); return 0;
      default: return cli_fail(CMD, 2, "unknown or incomplete option '%s' (see --help)", argv[optind - 1]);
    }
  }
  if (optind < argc) return cli_fail(CMD, 2, "unexpected argument '%s' (see --help)", argv[optind]);
  if (!new_model || !ckpt || !out) return cli_fail(CMD, 2, "--new-model, --checkpoint and --out are required (see --help)");
  if (old_arch && !old) return cli_fail(CMD, 2, "--text-arch needs --text-model");
  taca_error err = {{0}};
  nn_backend *be = nn_backend_cpu_create(1);
  if (!be) return cli_fail(CMD, 1, "out of memory");
  taca_adapted *a = taca_adapted_open_sources(new_model, arch, ckpt, old, old_arch, 0, lora_alpha, be, 1, &err);
  int rc = 0;
  if (!a || taca_export_write(a, out, &err)) rc = cli_fail(CMD, 1, "%s", err.msg);
  else
    fprintf(stderr, "taca export: %s: %s over %s (%s, blocks %s)%s%s\n", out, ckpt, new_model,
            taca_adapted_checkpoint_info(a)->peft, taca_adapted_checkpoint_info(a)->layers,
            old ? ", text tower of " : ", no text tower", old ? old : "");
  taca_adapted_free(a);
  nn_backend_destroy(be);
  return rc;
}
