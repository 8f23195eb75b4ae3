/* cmd_tokenize.c: `taca tokenize --text CAPTIONS.txt --out T.npy`: CLIP token ids, int32 [N, 77]. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>

#include "base/npy.h"
#include "text/tokenizer.h"
#include "services/cli/cli_util.h"

static const char *USAGE =
    "usage: taca tokenize --text CAPTIONS.txt --out T.npy [--vocab BPE.txt.gz]\n"
    "  Tokenizes one caption per line with CLIP's BPE into int32 [N, 77] ids\n"
    "  (<start_of_text>=49406 ... <end_of_text>=49407, zero-padded, truncated keeping 49407).\n";

int cmd_tokenize(int argc, char **argv) {
  const char *text = NULL, *out = NULL, *vocab = NULL;
  static const struct option opts[] = {{"text", required_argument, 0, 't'},
                                        {"out", required_argument, 0, 'o'},
                                        {"vocab", required_argument, 0, 'v'},
                                        {"help", no_argument, 0, 'h'},
                                        {0, 0, 0, 0}};
  int c;
  cli_env_options(&argc, &argv, "", opts); /* TACA_<OPTION> for options not given */
  optind = 1;
  opterr = 0;
  while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
    switch (c) {
      case 't': text = optarg; break;
      case 'o': out = optarg; break;
      case 'v': vocab = optarg; break;
      case 'h': fputs(USAGE, stdout); return 0;
      default: return cli_fail("tokenize", 2, "unknown or incomplete option '%s' (see --help)", argv[optind - 1]);
    }
  }
  if (optind < argc) return cli_fail("tokenize", 2, "unexpected argument '%s'", argv[optind]);
  if (!text || !out) return cli_fail("tokenize", 2, "--text and --out are required (see --help)");

  taca_error err = {{0}};
  char **lines;
  int n = cli_read_lines(text, &lines, &err);
  if (n < 0) return cli_fail("tokenize", 1, "%s", err.msg);
  clip_tokenizer *tok = clip_tokenizer_load(vocab, &err);
  if (!tok) {
    cli_free_lines(lines, n);
    return cli_fail("tokenize", 1, "%s", err.msg);
  }
  int32_t *ids = calloc((size_t)(n ? n : 1) * CLIP_CONTEXT_LEN, sizeof *ids);
  int rc = ids ? 0 : cli_fail("tokenize", 1, "out of memory");
  for (int i = 0; rc == 0 && i < n; i++) {
    if (clip_tokenize(tok, lines[i], ids + (size_t)i * CLIP_CONTEXT_LEN, CLIP_CONTEXT_LEN, &err))
      rc = cli_fail("tokenize", 1, "%s line %d: %s", text, i + 1, err.msg);
  }
  if (rc == 0) {
    int64_t shape[2] = {n, CLIP_CONTEXT_LEN};
    if (npy_save(out, TACA_DT_I32, 2, shape, ids, &err)) rc = cli_fail("tokenize", 1, "%s", err.msg);
  }
  free(ids);
  clip_tokenizer_free(tok);
  cli_free_lines(lines, n);
  return rc;
}
