/* cmd_health.c: `taca health ADDR[,ADDR...]`: the gRPC health protocol (grpc.health.v1.Health/Check)
 * against running taca-featured servers, for container health checks and scripts. Exit 0 when every
 * server answers SERVING, 1 otherwise (the reason on stderr), 2 for bad usage. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/hostport.h"
#include "services/cli/cli_util.h"
#include "client/taca_client.h"

int cmd_health(int argc, char **argv) {
  const char *servers = NULL;
  int timeout = 3000;
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
      puts("usage: taca health ADDR[,ADDR...] [--timeout MS]\n"
           "  Health.Check of every server (grpc.health.v1): exit 0 when all are SERVING, else 1.\n"
           "  Uses only the health service, which a server keeps open without its token.");
      return 0;
    }
    if (!strcmp(argv[i], "--timeout") && i + 1 < argc) {
      if (cli_parse_positive("health", "--timeout", argv[++i], &timeout)) return 2;
    } else if (argv[i][0] == '-') {
      return cli_fail("health", 2, "unknown option '%s' (see --help)", argv[i]);
    } else if (!servers) {
      servers = argv[i];
    } else {
      return cli_fail("health", 2, "unexpected argument '%s'", argv[i]);
    }
  }
  if (!servers) return cli_fail("health", 2, "give the server address (see --help)");
  taca_error err = {{0}};
  if (taca_hostport_check_list("ADDR", servers, &err)) return cli_fail("health", 2, "%s", err.msg);
  /* Only grpc.health.v1 is called (no Info, no token): it works on a token-protected server. */
  taca_client_options o = {.timeout_ms = timeout, .retry_budget_ms = -1, .health_only = 1};
  taca_client *c;
  if (taca_client_connect(&c, servers, &o, &err)) return cli_fail("health", 1, "%s", err.msg);
  int rc = taca_client_health(c, &err) ? cli_fail("health", 1, "%s", err.msg) : 0;
  taca_client_close(c);
  if (rc == 0) printf("SERVING\n");
  return rc;
}
