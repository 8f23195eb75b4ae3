/* cmd_add_features.c: `taca add-features`: store a .npy of embeddings computed elsewhere, or a
 * random "noise" feature set, as one more model of a finished store (services/precompute/
 * add_features.h), so that AFT can transfer from it. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "services/cli/cli_util.h"
#include "services/precompute/add_features.h"

static const char *USAGE =
    "usage: taca add-features --db DIR --name NAME (--npy X.npy [--keys KEYS.txt] | --random DIM)\n"
    "                         [--seed S] [--arch TEXT] [--dtype f16|f32] [--quiet]\n"
    "  Stores image embeddings of the store's samples under model NAME, for `taca-train --objective\n"
    "  aft --features ...`: the rows of X.npy ([N, D], float) in the store's index order, or matched\n"
    "  to samples by the keys in KEYS.txt (one per line, N lines); or, with --random DIM, standard\n"
    "  normal vectors that depend only on (seed, sample index): a noise control. Run it again to\n"
    "  finish an interrupted run. Defaults: seed 0, dtype f16, arch 'external' or 'random'.\n";

int cmd_add_features(int argc, char **argv) {
  add_features_opts o = {.dtype = TACA_DT_F16};
  static const struct option opts[] = {
      {"db", required_argument, 0, 'd'},    {"name", required_argument, 0, 'n'},
      {"npy", required_argument, 0, 'x'},   {"keys", required_argument, 0, 'k'},
      {"random", required_argument, 0, 'r'}, {"seed", required_argument, 0, 's'},
      {"arch", required_argument, 0, 'a'},  {"dtype", required_argument, 0, 't'},
      {"quiet", no_argument, 0, 'q'},       {"help", no_argument, 0, 'h'},
      {0, 0, 0, 0}};
  int c;
  cli_env_options(&argc, &argv, "", opts); /* TACA_<OPTION> for options not given */
  optind = 1;
  opterr = 0;
  while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
    switch (c) {
      case 'd': o.db = optarg; break;
      case 'n': o.name = optarg; break;
      case 'x': o.npy = optarg; break;
      case 'k': o.keys = optarg; break;
      case 'r': if (cli_parse_positive("add-features", "--random", optarg, &o.random_dim)) return 2; break;
      case 's': {
        char *end;
        unsigned long long v = strtoull(optarg, &end, 10);
        if (end == optarg || *end || optarg[0] == '-')
          return cli_fail("add-features", 2, "--seed expects an integer >= 0, got '%s'", optarg);
        o.seed = v;
        break;
      }
      case 'a': o.arch = optarg; break;
      case 't':
        if (!strcmp(optarg, "f16")) o.dtype = TACA_DT_F16;
        else if (!strcmp(optarg, "f32")) o.dtype = TACA_DT_F32;
        else return cli_fail("add-features", 2, "--dtype expects f16 or f32, got '%s'", optarg);
        break;
      case 'q': o.quiet = 1; break;
      case 'h': fputs(USAGE, stdout); return 0;
      default: return cli_fail("add-features", 2, "unknown or incomplete option '%s' (see --help)", argv[optind - 1]);
    }
  }
  if (optind < argc) return cli_fail("add-features", 2, "unexpected argument '%s'", argv[optind]);
  if (!o.db || !o.name) return cli_fail("add-features", 2, "--db and --name are required (see --help)");
  if (!o.npy == !o.random_dim) return cli_fail("add-features", 2, "give exactly one of --npy and --random");
  taca_error err = {{0}};
  uint64_t n;
  if (add_features_run(&o, &n, &err)) return cli_fail("add-features", 1, "%s", err.msg);
  if (!o.quiet) fprintf(stderr, "add-features: stored %llu embeddings of '%s' in %s\n", (unsigned long long)n, o.name, o.db);
  return 0;
}
