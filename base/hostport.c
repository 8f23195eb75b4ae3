/* hostport.c: parsing and checking of "HOST:PORT" addresses (rules in hostport.h). */
#include "base/hostport.h"

#include <errno.h>
#include <netdb.h>
#include <stdio.h>
#include <arpa/inet.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

int taca_hostport_parse(const char *flag, const char *s, int zero_ok, taca_hostport *out, taca_error *err) {
  memset(out, 0, sizeof *out);
  const char *host = s, *host_end, *port;
  if (*s == '[') {
    host = s + 1;
    host_end = strchr(host, ']');
    if (!host_end || host_end[1] != ':')
      return taca_fail(err, "%s: expected [IPV6]:PORT, got '%s'", flag, s);
    port = host_end + 2;
    out->ipv6 = 1;
  } else {
    host_end = strrchr(s, ':');
    if (!host_end) return taca_fail(err, "%s: expected HOST:PORT, got '%s' (no ':PORT')", flag, s);
    if (memchr(s, ':', (size_t)(host_end - s)))
      return taca_fail(err, "%s: expected HOST:PORT, got '%s' (write an IPv6 address in brackets: [::1]:PORT)", flag, s);
    port = host_end + 1;
  }
  size_t hl = (size_t)(host_end - host);
  if (hl == 0) return taca_fail(err, "%s: expected HOST:PORT, got '%s' (empty host)", flag, s);
  if (hl >= sizeof out->host) return taca_fail(err, "%s: host name longer than %zu bytes", flag, sizeof out->host - 1);
  for (size_t i = 0; i < hl; i++)
    if (host[i] == ',' || host[i] == ' ' || host[i] == '/' || (unsigned char)host[i] < 0x21)
      return taca_fail(err, "%s: '%s' is not a host name or address", flag, s);
  if (!*port) return taca_fail(err, "%s: expected HOST:PORT, got '%s' (empty port)", flag, s);
  long p = 0;
  for (const char *c = port; *c; c++) {
    if (*c < '0' || *c > '9') return taca_fail(err, "%s: port '%s' in '%s' is not a number", flag, port, s);
    if (p <= 65535) p = p * 10 + (*c - '0');
  }
  if (p > 65535 || (p == 0 && !zero_ok))
    return taca_fail(err, "%s: port %s in '%s' is out of range 1..65535%s", flag, port, s,
                     zero_ok ? " (0 picks a free one)" : "");
  memcpy(out->host, host, hl);
  out->host[hl] = '\0';
  out->port = (int)p;
  return 0;
}

int taca_hostport_is_loopback(const taca_hostport *hp) {
  if (!strcmp(hp->host, "localhost")) return 1;
  unsigned char a[16];
  if (inet_pton(AF_INET, hp->host, a) == 1) return a[0] == 127;
  static const unsigned char one[16] = {[15] = 1};
  if (inet_pton(AF_INET6, hp->host, a) == 1) return !memcmp(a, one, 16);
  return 0;
}

int taca_hostport_check_list(const char *flag, const char *list, taca_error *err) {
  if (!list || !*list) return taca_fail(err, "%s: no address given", flag);
  char one[300];
  for (const char *p = list;;) {
    size_t l = strcspn(p, ",");
    if (l == 0) return taca_fail(err, "%s: empty entry in the address list '%s'", flag, list);
    if (l >= sizeof one) return taca_fail(err, "%s: address longer than %zu bytes", flag, sizeof one - 1);
    memcpy(one, p, l);
    one[l] = '\0';
    taca_hostport hp;
    if (taca_hostport_parse(flag, one, TACA_PORT_NONZERO, &hp, err)) return -1;
    if (!p[l]) return 0;
    p += l + 1;
  }
}

void taca_hostport_format(const taca_hostport *hp, int port, char *buf, unsigned size) {
  snprintf(buf, size, hp->ipv6 ? "[%s]:%d" : "%s:%d", hp->host, port);
}

const char *taca_hostport_bind_problem(const taca_hostport *hp) {
  struct addrinfo hints = {0}, *res = NULL;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
  char port[8];
  snprintf(port, sizeof port, "%d", hp->port);
  int rc = getaddrinfo(hp->host, port, &hints, &res);
  if (rc) return gai_strerror(rc);
  const char *why = NULL;
  for (struct addrinfo *a = res; a; a = a->ai_next) {
    int fd = socket(a->ai_family, a->ai_socktype, a->ai_protocol);
    if (fd < 0) continue;
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    int bad = bind(fd, a->ai_addr, a->ai_addrlen) ? errno : 0;
    close(fd);
    if (!bad) {
      why = NULL;
      break;
    }
    why = strerror(bad);
  }
  freeaddrinfo(res);
  return why;
}
