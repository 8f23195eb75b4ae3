/* cmd_verify.c: `taca verify --db DIR`: checks every record of a store (storage/verify.c) and
 * reports per database; exit 0 when everything verifies, 1 when anything is damaged. */
#include <getopt.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "services/cli/cli_util.h"
#include "storage/store.h"

static const char *USAGE =
    "usage: taca verify --db DIR [--json]\n"
    "  Reads every record of the store: checksums, layouts and lengths of samples, pixels, keys and\n"
    "  embedding blocks, the key table against the samples, the embedding counts, and the content\n"
    "  hash against the one recorded when the last writer finished. One line per database; exit 0\n"
    "  when everything verifies, 1 when anything is damaged or cannot be read.\n";

int cmd_verify(int argc, char **argv) {
  const char *db = NULL;
  int json = 0;
  static const struct option opts[] = {
      {"db", required_argument, 0, 'd'}, {"json", no_argument, 0, 'j'}, {"help", no_argument, 0, 'h'}, {0, 0, 0, 0}};
  int c;
  optind = 1;
  opterr = 0;
  while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
    switch (c) {
      case 'd': db = optarg; break;
      case 'j': json = 1; break;
      case 'h': fputs(USAGE, stdout); return 0;
      default: return cli_fail("verify", 2, "unknown or incomplete option '%s' (see --help)", argv[optind - 1]);
    }
  }
  if (optind < argc) return cli_fail("verify", 2, "unexpected argument '%s'", argv[optind]);
  if (!db) return cli_fail("verify", 2, "--db DIR is required");
  taca_error err = {{0}};
  taca_store *s;
  store_view *v;
  store_options so = {.readonly = 1};
  if (store_open(&s, db, &so, &err)) return cli_fail("verify", 1, "%s", err.msg);
  if (store_view_begin(s, &v, &err)) {
    store_close(s);
    return cli_fail("verify", 1, "%s", err.msg);
  }
  store_verify_report r;
  int rc = store_verify(v, &r, &err);
  store_view_end(v);
  store_close(s);
  if (rc) return cli_fail("verify", 1, "%s: %s", db, err.msg);
  json_t *dbs = json ? json_array() : NULL;
  for (int i = 0; i < r.n_db; i++) {
    const store_db_report *d = &r.db[i];
    if (json) {
      json_array_append_new(dbs, json_pack("{s:s, s:I, s:I, s:s}", "name", d->name, "records", (json_int_t)d->records,
                                           "bad", (json_int_t)d->bad, "first_problem", d->first_problem));
    } else if (i == r.n_db - 1) {
      if (d->bad) printf("%-12s DAMAGED: %s\n", d->name, d->first_problem);
      else if (r.hash_recorded) printf("%-12s ok: %s, as recorded by %s\n", d->name, r.hash, r.recorded_by);
      else printf("%-12s %s (none recorded: the last writer did not finish)\n", d->name, r.hash);
    } else if (d->bad) {
      printf("%-12s %llu records, %llu DAMAGED; first: %s\n", d->name, (unsigned long long)d->records,
             (unsigned long long)d->bad, d->first_problem);
    } else {
      printf("%-12s %llu records ok\n", d->name, (unsigned long long)d->records);
    }
  }
  if (json) {
    json_t *o = json_pack("{s:s, s:I, s:o, s:s, s:b, s:b}", "db", db, "problems", (json_int_t)r.problems, "databases",
                          dbs, "hash", r.hash, "hash_recorded", r.hash_recorded, "hash_equal", r.hash_equal);
    char *js = o ? json_dumps(o, JSON_COMPACT) : NULL;
    if (js) puts(js);
    free(js);
    json_decref(o);
  }
  if (r.problems) return cli_fail("verify", 1, "%s: store corrupt: %llu problems (see above)", db,
                                  (unsigned long long)r.problems);
  return 0;
}
