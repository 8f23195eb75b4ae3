/* cmd_alias.c: `taca alias`: point a served name (e.g. "current") at a stored model on running
 * taca-featured servers, atomically per server (SetAlias), and list or remove aliases. The hot swap
 * of the upgrade: downstream clients that ask for "current" get the new model's vectors from their
 * next call on, without a restart; the same command with the old target rolls back. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/hostport.h"
#include "client/taca_client.h"
#include "services/cli/cli_util.h"
#include "services/cli/commands.h"

#define CMD "alias"

static const char *USAGE =
    "usage: taca alias --server ADDR[,ADDR...] [--token TOKEN] [--tls-ca PEM] [--allow-space-change]\n"
    "                  NAME TARGET\n"
    "       taca alias --server ADDR[,ADDR...] [--token TOKEN] --remove NAME\n"
    "       taca alias --server ADDR[,ADDR...] [--token TOKEN] --list\n"
    "  Points the alias NAME at the stored model TARGET on every server given (replicas and shards,\n"
    "  in turn), atomically on each: a call that names NAME sees either the old target or the new one.\n"
    "  The table persists beside each server's store (DIR/aliases.json). A flip into another embedding\n"
    "  space (a model whose vectors do not compare with the current target's) is refused unless\n"
    "  --allow-space-change. Needs the server's token when it has one (also from TACA_TOKEN).\n"
    "  Exit 0 when every server flipped; 1 naming the first that failed (those before it flipped).\n";

int cmd_alias(int argc, char **argv) {
  const char *server = NULL, *remove = NULL;
  int list = 0, allow = 0;
  const char *pos[2];
  int npos = 0;
  taca_client_options o = {0};
  o.token = getenv("TACA_TOKEN");
  if (o.token && !o.token[0]) o.token = NULL;
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
    if (!strcmp(a, "--help") || !strcmp(a, "-h")) return fputs(USAGE, stdout), 0;
    if (!strcmp(a, "--list")) list = 1;
    else if (!strcmp(a, "--allow-space-change")) allow = 1;
    else if (a[0] == '-' && a[1]) {
      if (!v) return cli_fail(CMD, 2, "option '%s' needs a value (see --help)", a);
      if (!strcmp(a, "--server")) server = v;
      else if (!strcmp(a, "--token")) o.token = v;
      else if (!strcmp(a, "--tls-ca")) o.tls_ca = v;
      else if (!strcmp(a, "--remove")) remove = v;
      else return cli_fail(CMD, 2, "unknown option '%s' (see --help)", a);
      i++;
    } else if (npos < 2) {
      pos[npos++] = a;
    } else {
      return cli_fail(CMD, 2, "unexpected argument '%s' (see --help)", a);
    }
  }
  if (!server) return cli_fail(CMD, 2, "--server ADDR is required (see --help)");
  taca_error err = {{0}};
  if (taca_hostport_check_list("--server", server, &err)) return cli_fail(CMD, 2, "%s", err.msg);
  if (list + (remove != NULL) + (npos > 0) != 1 || (npos && npos != 2))
    return cli_fail(CMD, 2, "give NAME TARGET, --remove NAME or --list (see --help)");
  o.retry_budget_ms = 3000;
  taca_client *c;
  if (taca_client_connect(&c, server, &o, &err)) return cli_fail(CMD, 1, "%s", err.msg);
  int rc = 0;
  if (list) {
    const taca_dataset_info *in = taca_client_info(c);
    for (int i = 0; i < in->n_aliases; i++)
      printf("%s -> %s  (version %" PRIu64 ")\n", in->aliases[i].name, in->aliases[i].target, in->aliases[i].version);
    if (in->n_aliases == 0) fprintf(stderr, "alias: no aliases on %s\n", in->servers[0].address);
  } else {
    const char *name = remove ? remove : pos[0], *target = remove ? "" : pos[1];
    char prev[TACA_CLIENT_NAME_MAX];
    int flipped = 0;
    if (taca_client_set_alias(c, name, target, allow, prev, &flipped, &err)) {
      rc = cli_fail(CMD, 1, "%s (%d of %d servers flipped before it)", err.msg, flipped, taca_client_info(c)->n_servers);
    } else if (remove) {
      printf("alias %s removed (was -> %s) on %d server(s)\n", name, prev, flipped);
    } else {
      printf("alias %s -> %s (was %s) on %d server(s)\n", name, target, prev[0] ? prev : "unset", flipped);
    }
  }
  taca_client_close(c);
  return rc;
}
