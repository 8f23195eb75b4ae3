/* cmd_import.c: `taca import`: an embeddings-only store from .npy files computed elsewhere
 * (services/precompute/import.h). */
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "services/cli/cli_util.h"
#include "services/precompute/import.h"

#define CMD "import"

static const char *USAGE =
    "usage: taca import --db DIR --name NAME --npy X.npy [X2.npy ...] [--npy X3.npy ...]\n"
    "                   [--modality image|text] [--text-npy T.npy ...] [--keys KEYS.txt]\n"
    "                   [--first-index I] [--shard I/N] [--dtype f16|f32] [--arch TEXT] [--quiet]\n"
    "  Creates (or extends) a store that holds embeddings without pixels: the rows of the .npy files\n"
    "  ([rows, dim] float32/float16/bfloat16, e.g. clip-retrieval's img_emb_0.npy img_emb_1.npy ...)\n"
    "  become samples I, I+1, ... in the order given, as model NAME's embeddings of --modality\n"
    "  (default image). --text-npy adds the text embeddings of the same rows (then --npy are images).\n"
    "  Keys: the lines of KEYS.txt (one per row, all files together), or the index in 12 digits.\n"
    "  Rerun the same command to finish an interrupted import; append files to import more.\n"
    "  A shard of a corpus imports its rows with --first-index (its range's start) and --shard.\n"
    "  Defaults: first index 0, shard 0/1, dtype f16, arch 'import'.\n";

static int parse_u64(const char *flag, const char *s, uint64_t *out) {
  char *end;
  if (!*s || *s == '-') return cli_fail(CMD, 2, "%s expects an integer >= 0, got '%s'", flag, s);
  unsigned long long v = strtoull(s, &end, 10);
  if (*end) return cli_fail(CMD, 2, "%s expects an integer >= 0, got '%s'", flag, s);
  *out = v;
  return 0;
}

int cmd_import(int argc, char **argv) {
  import_opts o = {.modality = STORE_IMAGE, .dtype = TACA_DT_F16, .nshards = 1};
  static const struct option opts[] = {
      {"db", required_argument, 0, 'd'},         {"name", required_argument, 0, 'n'},
      {"npy", required_argument, 0, 'x'},        {"text-npy", required_argument, 0, 'T'},
      {"modality", required_argument, 0, 'm'},   {"keys", required_argument, 0, 'k'},
      {"first-index", required_argument, 0, 'f'}, {"shard", required_argument, 0, 's'},
      {"dtype", required_argument, 0, 't'},      {"arch", required_argument, 0, 'a'},
      {"chunk", required_argument, 0, 'c'},      {"quiet", no_argument, 0, 'q'},
      {"help", no_argument, 0, 'h'},             {0, 0, 0, 0}};
  cli_env_options(&argc, &argv, "", opts);
  optind = 1;
  opterr = 0;
  int c;
  while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
    switch (c) {
      case 'd': o.db = optarg; break;
      case 'n': o.name = optarg; break;
      case 'x':
        if (o.n_npy == IMPORT_MAX_FILES) return cli_fail(CMD, 2, "more than %d --npy files", IMPORT_MAX_FILES);
        o.npy[o.n_npy++] = optarg;
        break;
      case 'T':
        if (o.n_text_npy == IMPORT_MAX_FILES) return cli_fail(CMD, 2, "more than %d --text-npy files", IMPORT_MAX_FILES);
        o.text_npy[o.n_text_npy++] = optarg;
        break;
      case 'm':
        if (!strcmp(optarg, "image")) o.modality = STORE_IMAGE;
        else if (!strcmp(optarg, "text")) o.modality = STORE_TEXT;
        else return cli_fail(CMD, 2, "--modality expects image or text, got '%s'", optarg);
        break;
      case 'k': o.keys = optarg; break;
      case 'f': if (parse_u64("--first-index", optarg, &o.first_index)) return 2; break;
      case 's': {
        int i, n, len = 0;
        if (sscanf(optarg, "%d/%d%n", &i, &n, &len) != 2 || optarg[len] || n < 1 || i < 0 || i >= n)
          return cli_fail(CMD, 2, "--shard expects I/N with 0 <= I < N, got '%s'", optarg);
        o.shard = i;
        o.nshards = n;
        break;
      }
      case 't':
        if (!strcmp(optarg, "f16")) o.dtype = TACA_DT_F16;
        else if (!strcmp(optarg, "f32")) o.dtype = TACA_DT_F32;
        else return cli_fail(CMD, 2, "--dtype expects f16 or f32, got '%s'", optarg);
        break;
      case 'a': o.arch = optarg; break;
      case 'c': if (parse_u64("--chunk", optarg, &o.chunk_rows) || !o.chunk_rows) return cli_fail(CMD, 2, "--chunk expects rows >= 1"); break;
      case 'q': o.quiet = 1; break;
      case 'h': fputs(USAGE, stdout); return 0;
      default: return cli_fail(CMD, 2, "unknown or incomplete option '%s' (see --help)", argv[optind - 1]);
    }
  }
  /* Paths after --npy's first one (what a shell glob gives) are more --npy files. */
  for (; optind < argc; optind++) {
    if (!o.n_npy) return cli_fail(CMD, 2, "unexpected argument '%s' (files follow --npy)", argv[optind]);
    if (o.n_npy == IMPORT_MAX_FILES) return cli_fail(CMD, 2, "more than %d --npy files", IMPORT_MAX_FILES);
    o.npy[o.n_npy++] = argv[optind];
  }
  if (!o.db || !o.name || !o.n_npy) return cli_fail(CMD, 2, "--db, --name and --npy are required (see --help)");
  if (strlen(o.name) >= STORE_NAME_MAX || strpbrk(o.name, "/ \t"))
    return cli_fail(CMD, 2, "--name '%s': a model name has 1..%d printable characters, no '/' or spaces", o.name,
                    STORE_NAME_MAX - 1);
  taca_error err = {{0}};
  import_result r;
  if (import_run(&o, &r, &err)) return cli_fail(CMD, 1, "%s", err.msg);
  if (!o.quiet || r.rows_written == 0)
    fprintf(stderr, "import: %s: model '%s' holds rows %" PRIu64 "..%" PRIu64 " (%" PRIu64 " new, %" PRIu64
            " from before; %s%s%d-wide)\n", o.db, o.name, o.first_index, o.first_index + r.rows_total - 1,
            r.rows_written, r.rows_before, r.dim ? "image " : "", r.text_dim ? "text " : "",
            r.dim ? r.dim : r.text_dim);
  return 0;
}
