/* cmd_drop_model.c: `taca drop-model --db DIR --name NAME`: removes one model (its embeddings and
 * records) from a store, e.g. one left by a failed add-features. */
#include <getopt.h>
#include <stdio.h>
#include <string.h>

#include "services/cli/cli_util.h"
#include "storage/store.h"

static const char *USAGE =
    "usage: taca drop-model --db DIR --name NAME\n"
    "  Removes model NAME from the store: its embeddings, its model record, counts and progress.\n"
    "  Models registered after it keep their names (their ids move down by one).\n";

int cmd_drop_model(int argc, char **argv) {
  const char *db = NULL, *name = NULL;
  static const struct option opts[] = {
      {"db", required_argument, 0, 'd'}, {"name", required_argument, 0, 'n'}, {"help", no_argument, 0, 'h'}, {0, 0, 0, 0}};
  int c;
  optind = 1;
  opterr = 0;
  while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
    switch (c) {
      case 'd': db = optarg; break;
      case 'n': name = optarg; break;
      case 'h': fputs(USAGE, stdout); return 0;
      default: return cli_fail("drop-model", 2, "unknown or incomplete option '%s' (see --help)", argv[optind - 1]);
    }
  }
  if (optind < argc) return cli_fail("drop-model", 2, "unexpected argument '%s'", argv[optind]);
  if (!db || !name) return cli_fail("drop-model", 2, "--db and --name are required (see --help)");
  taca_error err = {{0}};
  taca_store *s;
  store_txn *t;
  store_options so = {0};
  if (store_open(&s, db, &so, &err)) return cli_fail("drop-model", 1, "%s", err.msg);
  if (store_txn_begin(s, &t, &err) || store_drop_model(t, name, &err)) {
    store_txn_abort(t);
    store_close(s);
    return cli_fail("drop-model", 1, "%s: %s", db, err.msg);
  }
  char by[128];
  snprintf(by, sizeof by, "drop-model %s", name);
  int rc = store_txn_commit(t, &err) || store_record_content_hash(s, by, &err);
  store_close(s);
  if (rc) return cli_fail("drop-model", 1, "%s: %s", db, err.msg);
  fprintf(stderr, "drop-model: removed model '%s' from %s\n", name, db);
  return 0;
}
