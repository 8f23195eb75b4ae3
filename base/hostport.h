/* hostport.h: the one parser of network addresses ("HOST:PORT") for every program: taca-featured's
 * --listen and --metrics, the client's server lists (taca-train --server/--test-server, `taca query
 * --server`, `taca health`). One set of rules and one-line errors naming the flag:
 *   - HOST is a name, an IPv4 address or a bracketed IPv6 address ("[::1]:50051"); not empty;
 *   - PORT is decimal digits only, 1..65535; 0 ("pick a free port") only where the caller allows it
 *     (listening addresses), never for an address to connect to;
 *   - a list is ADDR[,ADDR...] without empty entries. */
#ifndef TACA_BASE_HOSTPORT_H
#define TACA_BASE_HOSTPORT_H

#include "base/error.h"

typedef struct taca_hostport {
  char host[256]; /* without the brackets of an IPv6 address */
  int port;
  int ipv6;       /* written in brackets */
} taca_hostport;

enum { TACA_PORT_NONZERO = 0, TACA_PORT_ZERO_OK = 1 };

/* Parses s into out; -1 with "FLAG: ..." in err when it breaks a rule above. */
int taca_hostport_parse(const char *flag, const char *s, int zero_ok, taca_hostport *out, taca_error *err);

/* Checks every entry of a comma-separated list (connect addresses: ports 1..65535). */
int taca_hostport_check_list(const char *flag, const char *list, taca_error *err);

/* "HOST:PORT" (IPv6 in brackets) with the given port, e.g. the bound port of a ":0" address. */
void taca_hostport_format(const taca_hostport *hp, int port, char *buf, unsigned size);

/* 1 when hp names the loopback interface without resolving anything: "localhost", 127.0.0.0/8 or
 * ::1 (a server off loopback must not serve in clear text without a token). */
int taca_hostport_is_loopback(const taca_hostport *hp);

/* Why binding a TCP socket to hp fails ("Address already in use"), for a clear error after a
 * library's bind failed; NULL when a bind would succeed or the host does not resolve to one. */
const char *taca_hostport_bind_problem(const taca_hostport *hp);

#endif
