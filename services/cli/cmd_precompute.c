/* cmd_precompute.c: `taca precompute`: fill a store with an old model's embeddings of a data set. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "services/cli/cli_util.h"
#include "services/precompute/launcher.h"
#include "services/precompute/precompute.h"

static const char *USAGE =
    "usage: taca precompute --model OLD [--arch NAME|CONFIG.json] --data SPEC... --db DIR [options]\n"
    "  Runs a CLIP model over image-caption data once and stores preprocessed pixels (uint8), token\n"
    "  ids, labels and the model's image and text embeddings in an LMDB store. Resumable: run the\n"
    "  same command again after an interruption. On a finished store, a new --model embeds the\n"
    "  stored samples without --data (AFT needs several models' features; or a `taca export`\n"
    "  directory: the adapted encoder's features in the old model's space).\n"
    "  Inputs are recorded (size, content fingerprint) and compared on every run: other inputs are\n"
    "  refused, except with --append.\n"
    "  SPEC: WebDataset tar shards (shards/{00000..00099}.tar; KEY.jpg|png|webp + KEY.txt [+ KEY.cls])\n"
    "        or a folder with captions.tsv (relative/path<TAB>caption[<TAB>label]). Several SPECs\n"
    "        may follow one --data (--data a.tar b.tar), and --data may be repeated.\n"
    "options:\n"
    "  --name NAME          model name in the store (default: from the model path)\n"
    "  --shard I/N          take every N-th input file starting at I (0-based)\n"
    "  --shard auto         I/N from the launcher: mpirun (OMPI_COMM_WORLD_RANK/SIZE), a Slurm array\n"
    "                       (SLURM_ARRAY_TASK_ID/COUNT), a Kubernetes Indexed Job (JOB_COMPLETION_INDEX\n"
    "                       with --shard-count N); --db may hold {shard}: one store per shard\n"
    "  --index-base N       first sample index of this shard (default: entries of lower shards)\n"
    "  --append             ingest the --data inputs not yet in the store after its samples (indices\n"
    "                       continue; the ingested inputs must be unchanged, one already ingested is\n"
    "                       refused; run with the model that ingested the store, then each other\n"
    "                       model as printed); a store of one shard\n"
    "  --range A:B          a second model on a finished store: embed only the samples with index\n"
    "                       in [A, B) (a partial re-embedding; Search --fallback serves the mix)\n"
    "  --batch-size B       samples per batch and per commit (default 32)\n"
    "  --dtype f16|f32      stored embedding type (default f16)\n"
    "  --no-pixels          do not store preprocessed pixels\n"
    "  --pixel-size S       store crops of S x S (default: the model's input size), e.g. the\n"
    "                       resolution of the new tower that will train on this store\n"
    "  --pixel-codec raw|jpeg  stored crops as uint8 CHW (default, exact) or as JPEG (several\n"
    "                       times smaller, lossy); --pixel-quality Q for JPEG (default 95)\n"
    "  --threads N          compute threads (default: all cores)\n"
    "  --precision f32|bf16 arithmetic of the model's matrix multiplies (default f32; bf16: BF16\n"
    "                       with F32 accumulation, recorded with the model in the store)\n"
    "  --workers N          image decoding threads (default 2)\n"
    "  --map-size BYTES     LMDB map size (default 1 TiB, sparse)\n"
    "  --quiet              no progress output\n";

int cmd_precompute(int argc, char **argv) {
  precompute_opts o = {.batch = 32, .dtype = TACA_DT_F16, .store_pixels = 1, .nshards = 1,
                       .index_base = -1};
  char **data = calloc(argc + 32, sizeof *data); /* + one per option cli_env_options may add */
  if (!data) return cli_fail("precompute", 1, "out of memory");
  static const struct option opts[] = {
      {"model", required_argument, 0, 'm'},    {"arch", required_argument, 0, 'a'},
      {"name", required_argument, 0, 'N'},     {"data", required_argument, 0, 'd'},
      {"db", required_argument, 0, 'D'},       {"shard", required_argument, 0, 's'},
      {"index-base", required_argument, 0, 'I'}, {"batch-size", required_argument, 0, 'b'},
      {"dtype", required_argument, 0, 't'},    {"no-pixels", no_argument, 0, 'P'},
      {"pixel-size", required_argument, 0, 'S'},
      {"pixel-codec", required_argument, 0, 'C'}, {"pixel-quality", required_argument, 0, 'Q'},
      {"threads", required_argument, 0, 'j'},  {"workers", required_argument, 0, 'w'},
      {"map-size", required_argument, 0, 'M'}, {"quiet", no_argument, 0, 'q'},
      {"shard-count", required_argument, 0, 'K'}, {"range", required_argument, 0, 'R'},
      {"help", no_argument, 0, 'h'},       {"append", no_argument, 0, 'A'},
      {"precision", required_argument, 0, 'r'},
      {0, 0, 0, 0}};
  int c, rc = 0, jpeg = 0, quality = 95, shard_auto = 0, shard_count = 0;
  cli_env_options(&argc, &argv, "", opts); /* TACA_<OPTION> for options not given */
  optind = 1;
  opterr = 0;
  while (rc == 0 && (c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
    switch (c) {
      case 'm': o.model_path = optarg; break;
      case 'a': if (cli_check_arch("precompute", optarg)) rc = 2; o.arch = optarg; break;
      case 'N': o.name = optarg; break;
      case 'd': /* --data A [B ...]: the paths a shell glob gives, up to the next option */
        data[o.ndata++] = optarg;
        while (optind < argc && argv[optind][0] != '-') data[o.ndata++] = argv[optind++];
        break;
      case 'D': o.db = optarg; break;
      case 's': {
        int i, n, k = 0;
        if (!strcmp(optarg, "auto")) shard_auto = 1;
        else if (sscanf(optarg, "%d/%d%n", &i, &n, &k) != 2 || optarg[k] || n < 1 || i < 0 || i >= n)
          rc = cli_fail("precompute", 2, "--shard expects I/N with 0 <= I < N, or auto, got '%s'", optarg);
        else o.shard = i, o.nshards = n;
        break;
      }
      case 'K': if (cli_parse_positive("precompute", "--shard-count", optarg, &shard_count)) rc = 2; break;
      case 'I': {
        char *end;
        long long v = strtoll(optarg, &end, 10);
        if (*end || end == optarg || v < 0) rc = cli_fail("precompute", 2, "--index-base expects a non-negative integer");
        o.index_base = v;
        break;
      }
      case 'b': if (cli_parse_positive("precompute", "--batch-size", optarg, &o.batch)) rc = 2; break;
      case 't':
        if (!strcmp(optarg, "f16")) o.dtype = TACA_DT_F16;
        else if (!strcmp(optarg, "f32")) o.dtype = TACA_DT_F32;
        else rc = cli_fail("precompute", 2, "--dtype must be f16 or f32, got '%s'", optarg);
        break;
      case 'P': o.store_pixels = 0; break;
      case 'S': if (cli_parse_positive("precompute", "--pixel-size", optarg, &o.pixel_size)) rc = 2; break;
      case 'C':
        if (!strcmp(optarg, "raw")) jpeg = 0;
        else if (!strcmp(optarg, "jpeg")) jpeg = 1;
        else rc = cli_fail("precompute", 2, "--pixel-codec must be raw or jpeg, got '%s'", optarg);
        break;
      case 'Q':
        if (cli_parse_positive("precompute", "--pixel-quality", optarg, &quality)) rc = 2;
        else if (quality > 100) rc = cli_fail("precompute", 2, "--pixel-quality must be in 1..100, got '%s'", optarg);
        break;
      case 'j': if (cli_parse_positive("precompute", "--threads", optarg, &o.threads)) rc = 2; break;
      case 'w': if (cli_parse_positive("precompute", "--workers", optarg, &o.workers)) rc = 2; break;
      case 'r': if (cli_parse_precision("precompute", optarg, &o.precision)) rc = 2; break;
      case 'M': {
        char *end;
        unsigned long long v = strtoull(optarg, &end, 10);
        if (*end || end == optarg || v < (1u << 20)) rc = cli_fail("precompute", 2, "--map-size expects bytes (>= 1 MiB)");
        o.map_size = v;
        break;
      }
      case 'q': o.quiet = 1; break;
      case 'A': o.append = 1; break;
      case 'R': {
        char *colon = strchr(optarg, ':'), *e1, *e2;
        unsigned long long a = strtoull(optarg, &e1, 10), b = colon ? strtoull(colon + 1, &e2, 10) : 0;
        if (!colon || e1 != colon || e1 == optarg || !colon[1] || *e2 || b <= a || optarg[0] == '-' || colon[1] == '-')
          rc = cli_fail("precompute", 2, "--range expects A:B with A < B (sample indices), got '%s'", optarg);
        o.has_range = 1;
        o.range_begin = a;
        o.range_end = b;
        break;
      }
      case 'h': fputs(USAGE, stdout); free(data); return 0;
      default: rc = cli_fail("precompute", 2, "unknown or incomplete option '%s' (see --help)", argv[optind - 1]);
    }
  }
  if (rc == 0 && optind < argc) rc = cli_fail("precompute", 2, "unexpected argument '%s'", argv[optind]);
  if (rc == 0 && (!o.model_path || !o.db)) rc = cli_fail("precompute", 2, "--model and --db are required (see --help)");
  if (rc == 0 && o.has_range && o.ndata) rc = cli_fail("precompute", 2, "--range goes with a second model on a finished store (no --data)");
  if (rc == 0 && shard_count && !shard_auto) rc = cli_fail("precompute", 2, "--shard-count goes with --shard auto");
  if (rc == 0 && o.append && o.ndata == 0) rc = cli_fail("precompute", 2, "--append needs --data (the inputs to add)");
  char db[4096];
  if (rc == 0 && (shard_auto || strstr(o.db, "{shard}"))) {
    taca_error err = {{0}};
    const char *who = "--shard";
    if (shard_auto && launcher_shard(shard_count, &o.shard, &o.nshards, &who, &err))
      rc = cli_fail("precompute", 2, "%s", err.msg);
    else if (launcher_expand(o.db, o.shard, o.nshards, db, sizeof db, &err))
      rc = cli_fail("precompute", 2, "--db %s", err.msg);
    else {
      o.db = db;
      if (!o.quiet) fprintf(stderr, "precompute: shard %d/%d (from %s) into %s\n", o.shard, o.nshards, who, o.db);
    }
  }
  if (rc == 0) {
    o.jpeg_quality = jpeg ? quality : 0;
    o.data = data;
    precompute_stats st;
    taca_error err = {{0}};
    if (precompute_run(&o, &st, &err)) rc = cli_fail("precompute", 1, "%s", err.msg);
    else if (!o.quiet)
      fprintf(stderr, "precompute: %s done in %.1f s (%llu embedded, %.1f samples/s)\n", st.mode,
              st.seconds, (unsigned long long)st.embedded, st.seconds > 0 ? st.embedded / st.seconds : 0);
  }
  free(data);
  return rc;
}
