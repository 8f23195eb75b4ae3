/* cmd_index.c: `taca index`: build the approximate search index of one stored model (search/ann.h). */
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "search/ann.h"
#include "services/cli/cli_util.h"
#include "storage/store.h"

#define CMD "index"

static const char *USAGE =
    "usage: taca index --db DIR --model NAME [--modality image|text] [--kind ivfflat|ivfpq|hnsw]\n"
    "                  [--metric ip|cosine] [--nlist N] [--pq M] [--hnsw-m M] [--train-samples N]\n"
    "                  [--coarse auto|flat|hnsw] [--nprobe N] [--refine R] [--quiet]\n"
    "  Builds a faiss index of model NAME's stored embeddings for `taca query ... search --ann` and\n"
    "  taca-featured's Search with ann set. The index lives in DIR (index-NAME-MODALITY.faiss, written\n"
    "  atomically) and is recorded in the store with its parameters and the store's content hash: it is\n"
    "  refused once the store changes (build it again). Hits are rescored exactly from the store.\n"
    "  Defaults: image, ivfflat, cosine, nlist = the power of two nearest sqrt(vectors), pq = dim/4,\n"
    "  hnsw-m 32, train on 50 x nlist vectors, nprobe = nlist/16 (at least 8; HNSW: efSearch 64),\n"
    "  refine (candidates per hit rescored exactly) 100 for ivfpq, 4 otherwise.\n"
    "  --coarse: how IVF assigns vectors to lists: flat (every centroid), hnsw (an HNSW graph over the\n"
    "  centroids, IVFn_HNSW32: the build's assignment no longer grows with nlist) or auto (hnsw from\n"
    "  4096 lists on).\n";

int cmd_index(int argc, char **argv) {
  taca_error err = {{0}};
  const char *db = NULL, *model = NULL;
  store_modality mod = STORE_IMAGE;
  ann_params p = {.kind = ANN_IVFFLAT, .metric = STORE_METRIC_COSINE};
  static const struct option opts[] = {
      {"db", required_argument, 0, 'd'},       {"model", required_argument, 0, 'm'},
      {"modality", required_argument, 0, 'M'}, {"kind", required_argument, 0, 'k'},
      {"metric", required_argument, 0, 'e'},   {"nlist", required_argument, 0, 'n'},
      {"pq", required_argument, 0, 'p'},       {"hnsw-m", required_argument, 0, 'H'},
      {"train-samples", required_argument, 0, 't'}, {"nprobe", required_argument, 0, 'P'},
      {"refine", required_argument, 0, 'R'},
      {"coarse", required_argument, 0, 'C'},
      {"quiet", no_argument, 0, 'q'},          {"help", no_argument, 0, 'h'},
      {0, 0, 0, 0}};
  cli_env_options(&argc, &argv, "", opts);
  optind = 1;
  opterr = 0;
  int c, v;
  while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
    switch (c) {
      case 'd': db = optarg; break;
      case 'm': model = optarg; break;
      case 'M':
        if (!strcmp(optarg, "image")) mod = STORE_IMAGE;
        else if (!strcmp(optarg, "text")) mod = STORE_TEXT;
        else return cli_fail(CMD, 2, "--modality expects image or text, got '%s'", optarg);
        break;
      case 'k':
        if (ann_kind_parse(optarg, &p.kind)) return cli_fail(CMD, 2, "--kind expects ivfflat, ivfpq or hnsw, got '%s'", optarg);
        break;
      case 'e':
        if (!strcmp(optarg, "ip")) p.metric = STORE_METRIC_IP;
        else if (!strcmp(optarg, "cosine")) p.metric = STORE_METRIC_COSINE;
        else return cli_fail(CMD, 2, "--metric expects ip or cosine, got '%s'", optarg);
        break;
      case 'n': if (cli_parse_positive(CMD, "--nlist", optarg, &p.nlist)) return 2; break;
      case 'p': if (cli_parse_positive(CMD, "--pq", optarg, &p.pq_m)) return 2; break;
      case 'H': if (cli_parse_positive(CMD, "--hnsw-m", optarg, &p.hnsw_m)) return 2; break;
      case 't': if (cli_parse_positive(CMD, "--train-samples", optarg, &v)) return 2; p.train_samples = v; break;
      case 'P': if (cli_parse_positive(CMD, "--nprobe", optarg, &p.default_nprobe)) return 2; break;
      case 'R':
        if (cli_parse_positive(CMD, "--refine", optarg, &p.default_refine)) return 2;
        if (ann_check_refine(1, p.default_refine, &err)) return cli_fail(CMD, 2, "--%s", err.msg);
        break;
      case 'C':
        if (!strcmp(optarg, "auto")) p.coarse = ANN_COARSE_AUTO;
        else if (!strcmp(optarg, "flat")) p.coarse = ANN_COARSE_FLAT;
        else if (!strcmp(optarg, "hnsw")) p.coarse = ANN_COARSE_HNSW;
        else return cli_fail(CMD, 2, "--coarse expects auto, flat or hnsw, got '%s'", optarg);
        break;
      case 'q': p.quiet = 1; break;
      case 'h': fputs(USAGE, stdout); return 0;
      default: return cli_fail(CMD, 2, "unknown or incomplete option '%s' (see --help)", argv[optind - 1]);
    }
  }
  if (optind < argc) return cli_fail(CMD, 2, "unexpected argument '%s'", argv[optind]);
  if (!db || !model) return cli_fail(CMD, 2, "--db and --model are required (see --help)");
  if (p.nlist > 1 << 20) return cli_fail(CMD, 2, "--nlist %d: at most %d lists", p.nlist, 1 << 20);
  taca_store *st;
  store_options so = {0};
  if (store_open(&st, db, &so, &err)) return cli_fail(CMD, 1, "%s", err.msg);
  ann_info info;
  int rc = ann_build(st, model, mod, &p, &info, &err);
  store_close(st);
  if (rc) return cli_fail(CMD, 1, "%s", err.msg);
  printf("index: %s %s of '%s' (%s): %" PRId64 " vectors, width %d, %s, default nprobe %d, refine %d\n",
         info.kind, info.factory, model, store_modality_name(mod), info.vectors, info.dim, info.metric,
         info.default_nprobe, info.default_refine);
  return 0;
}
