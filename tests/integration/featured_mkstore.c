/* featured_mkstore.c: `featured-mkstore`, writes the synthetic store of featured_synth.h (for the
 * taca-featured shell/Python tests and bench/featured). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tests/integration/featured_synth.h"

static const char *USAGE =
    "usage: featured-mkstore --db DIR --n N [--begin B] [--pixels S] [--dim D] [--shard I/K]\n"
    "                        [--tiny-model HF_DIR] [--quiet]\n"
    "  Writes the synthetic store described in tests/integration/featured_synth.h.\n";

int main(int argc, char **argv) {
  synth_opts o = {0};
  const char *db = NULL;
  o.n = 0;
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
    if (!strcmp(a, "--help")) return fputs(USAGE, stdout), 0;
    if (!strcmp(a, "--quiet")) {
      o.quiet = 1;
      continue;
    }
    if (!v) {
      fprintf(stderr, "featured-mkstore: %s needs a value\n%s", a, USAGE);
      return 2;
    }
    i++;
    if (!strcmp(a, "--db")) db = v;
    else if (!strcmp(a, "--n")) o.n = strtoull(v, NULL, 10);
    else if (!strcmp(a, "--begin")) o.begin = strtoull(v, NULL, 10);
    else if (!strcmp(a, "--pixels")) o.pixel_size = atoi(v);
    else if (!strcmp(a, "--dim")) o.dim = atoi(v);
    else if (!strcmp(a, "--tiny-model")) o.tiny_model = v;
    else if (!strcmp(a, "--shard")) {
      if (sscanf(v, "%d/%d", &o.shard, &o.nshards) != 2 || o.nshards < 1 || o.shard < 0 || o.shard >= o.nshards) {
        fprintf(stderr, "featured-mkstore: --shard expects I/K with 0 <= I < K\n");
        return 2;
      }
    } else {
      fprintf(stderr, "featured-mkstore: unknown option '%s'\n%s", a, USAGE);
      return 2;
    }
  }
  if (!db || o.n == 0) {
    fprintf(stderr, "featured-mkstore: --db and --n (> 0) are required\n%s", USAGE);
    return 2;
  }
  taca_error err = {{0}};
  if (synth_store_create(db, &o, &err)) {
    fprintf(stderr, "featured-mkstore: %s\n", err.msg);
    return 1;
  }
  return 0;
}
