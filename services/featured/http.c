/* http.c: the /metrics and /healthz HTTP endpoint on libuv (see http.h). */
#include "services/featured/http.h"

#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define HTTP_MAX_HEADER 8192
#define HTTP_MAX_BODY (16u << 20) /* a POST body (an image for the page's search by image) */
#define HTTP_TIMEOUT_MS 10000

typedef struct conn conn;

struct http_server {
  uv_tcp_t listener;
  http_handlers h;
  conn *conns;
  int stopping;
  int open_handles; /* listener + connections' handles not yet closed */
};

struct conn {
  http_server *srv;
  uv_tcp_t tcp;
  uv_timer_t timer;
  uv_write_t wr;
  char buf[HTTP_MAX_HEADER];
  size_t len;
  char *resp;
  int closing, open_handles, answered;
  int working;            /* an app request is on the thread pool: freeing waits for it */
  uv_work_t work;
  char target[1024], auth[512];
  int has_auth, head;
  int in_body;            /* the head is read; reading a POST body of body_want bytes */
  char *body;
  size_t body_len, body_want;
  http_reply app;
  conn *prev, *next;
};

static void maybe_free_server(http_server *s) {
  if (s->stopping && s->open_handles == 0) free(s);
}

static void conn_handle_closed(uv_handle_t *h) {
  conn *c = h->data;
  if (--c->open_handles || c->working) return;
  http_server *s = c->srv;
  free(c->resp);
  free(c->body);
  free(c);
  s->open_handles--;
  maybe_free_server(s);
}

static void conn_close(conn *c) {
  if (c->closing) return;
  c->closing = 1;
  http_server *s = c->srv;
  if (c->prev) c->prev->next = c->next;
  else s->conns = c->next;
  if (c->next) c->next->prev = c->prev;
  uv_timer_stop(&c->timer);
  uv_close((uv_handle_t *)&c->tcp, conn_handle_closed);
  uv_close((uv_handle_t *)&c->timer, conn_handle_closed);
}

static void on_written(uv_write_t *w, int status) {
  (void)status;
  conn_close(w->data);
}

static void respond(conn *c, int code, const char *reason, const char *ctype, const char *body, size_t blen,
                    int head_only) {
  char hdr[256];
  int hl = snprintf(hdr, sizeof hdr,
                    "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\nConnection: close\r\n\r\n", code,
                    reason, ctype, blen);
  size_t total = (size_t)hl + (head_only ? 0 : blen);
  c->resp = malloc(total);
  if (!c->resp) {
    conn_close(c);
    return;
  }
  memcpy(c->resp, hdr, (size_t)hl);
  if (!head_only && blen) memcpy(c->resp + hl, body, blen);
  c->answered = 1;
  uv_read_stop((uv_stream_t *)&c->tcp);
  uv_buf_t b = uv_buf_init(c->resp, (unsigned)total);
  c->wr.data = c;
  if (uv_write(&c->wr, (uv_stream_t *)&c->tcp, &b, 1, on_written)) conn_close(c);
}

/* The value of header `name` (case-insensitive) in the request head, or 0. */
static int header_value(const conn *c, const char *name, char *out, size_t cap) {
  size_t nl = strlen(name);
  const char *p = memchr(c->buf, '\n', c->len), *end = c->buf + c->len;
  while (p && p + 1 < end) {
    const char *line = p + 1;
    const char *eol = memchr(line, '\n', (size_t)(end - line));
    if (!eol) break;
    if ((size_t)(eol - line) > nl && line[nl] == ':' && !strncasecmp(line, name, nl)) {
      const char *v = line + nl + 1, *ve = eol;
      while (v < ve && (*v == ' ' || *v == '\t')) v++;
      while (ve > v && (ve[-1] == '\r' || ve[-1] == ' ')) ve--;
      if ((size_t)(ve - v) >= cap) return 0;
      memcpy(out, v, (size_t)(ve - v));
      out[ve - v] = '\0';
      return 1;
    }
    p = eol;
  }
  return 0;
}

static void app_work(uv_work_t *w) {
  conn *c = w->data;
  http_server *s = c->srv;
  s->h.app(s->h.arg, c->target, c->has_auth ? c->auth : NULL, c->body, c->body_len, &c->app);
}

static void app_done(uv_work_t *w, int status) {
  conn *c = w->data;
  c->working = 0;
  if (c->closing) { /* stopped or timed out meanwhile: its handles are closed, free it here */
    free(c->app.body);
    if (c->open_handles == 0) {
      http_server *s = c->srv;
      free(c->resp);
      free(c->body);
      free(c);
      s->open_handles--;
      maybe_free_server(s);
    }
    return;
  }
  if (status || !c->app.body) {
    static const char msg[] = "internal error\n";
    respond(c, 500, "Internal Server Error", "text/plain", msg, sizeof msg - 1, c->head);
  } else {
    const char *reason = c->app.code == 200 ? "OK" : c->app.code == 404 ? "Not Found" : c->app.code == 401 ? "Unauthorized"
                         : c->app.code < 500 ? "Bad Request" : "Error";
    respond(c, c->app.code, reason, c->app.ctype, c->app.body, c->app.len, c->head);
  }
  free(c->app.body);
  c->app.body = NULL;
}

/* POST goes to the app only (the page's API), never to /metrics or /healthz. */
static int s_app_target(const conn *c, const char *path) {
  return c->srv->h.app && strcmp(path, "/metrics") && strcmp(path, "/healthz");
}

static void handle_request(conn *c) {
  /* Request line: METHOD SP TARGET SP VERSION */
  char method[16], target[1024], full[1024];
  const char *sp1 = memchr(c->buf, ' ', c->len);
  const char *sp2 = sp1 ? memchr(sp1 + 1, ' ', c->len - (size_t)(sp1 + 1 - c->buf)) : NULL;
  const char *eol = memchr(c->buf, '\n', c->len);
  if (!sp1 || !sp2 || !eol || sp2 > eol || (size_t)(sp1 - c->buf) >= sizeof method ||
      (size_t)(sp2 - sp1 - 1) >= sizeof target) {
    static const char msg[] = "bad request\n";
    respond(c, 400, "Bad Request", "text/plain", msg, sizeof msg - 1, 0);
    return;
  }
  memcpy(method, c->buf, (size_t)(sp1 - c->buf));
  method[sp1 - c->buf] = '\0';
  memcpy(target, sp1 + 1, (size_t)(sp2 - sp1 - 1));
  target[sp2 - sp1 - 1] = '\0';
  memcpy(full, target, sizeof full);
  char *q = strchr(target, '?');
  if (q) *q = '\0';
  int head = !strcmp(method, "HEAD"), post = !strcmp(method, "POST");
  if (strcmp(method, "GET") && !head && !(post && s_app_target(c, target))) {
    static const char msg[] = "only GET and HEAD (POST for the page's API)\n";
    respond(c, 405, "Method Not Allowed", "text/plain", msg, sizeof msg - 1, 0);
    return;
  }
  http_server *s = c->srv;
  if (!strcmp(target, "/metrics") && s->h.metrics_token) {
    char auth[512];
    int ok = header_value(c, "Authorization", auth, sizeof auth) && !strncmp(auth, "Bearer ", 7) &&
             strlen(auth + 7) == strlen(s->h.metrics_token);
    unsigned char diff = 0; /* constant time in the token */
    for (size_t i = 0; ok && s->h.metrics_token[i]; i++) diff |= (unsigned char)(auth[7 + i] ^ s->h.metrics_token[i]);
    if (!ok || diff) {
      static const char msg[] = "this endpoint needs 'Authorization: Bearer <token>' (--metrics-auth)\n";
      respond(c, 401, "Unauthorized", "text/plain", msg, sizeof msg - 1, head);
      return;
    }
  }
  if (!strcmp(target, "/metrics")) {
    size_t len = 0;
    char *body = s->h.metrics(s->h.arg, &len);
    if (!body) {
      static const char msg[] = "out of memory\n";
      respond(c, 500, "Internal Server Error", "text/plain", msg, sizeof msg - 1, head);
      return;
    }
    respond(c, 200, "OK", "text/plain; version=0.0.4; charset=utf-8", body, len, head);
    free(body);
  } else if (!strcmp(target, "/healthz")) {
    if (s->h.serving(s->h.arg)) respond(c, 200, "OK", "text/plain", "ok\n", 3, head);
    else respond(c, 503, "Service Unavailable", "text/plain", "shutting down\n", 14, head);
  } else if (s->h.app) {
    memcpy(c->target, full, sizeof c->target);
    c->has_auth = header_value(c, "Authorization", c->auth, sizeof c->auth);
    c->head = head;
    c->working = 1;
    c->work.data = c;
    uv_read_stop((uv_stream_t *)&c->tcp);
    uv_timer_stop(&c->timer);
    if (uv_queue_work(c->tcp.loop, &c->work, app_work, app_done)) {
      c->working = 0;
      static const char msg[] = "cannot queue the request\n";
      respond(c, 503, "Service Unavailable", "text/plain", msg, sizeof msg - 1, head);
    }
  } else {
    static const char msg[] = "not found: try /metrics or /healthz\n";
    respond(c, 404, "Not Found", "text/plain", msg, sizeof msg - 1, head);
  }
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
  (void)suggested;
  conn *c = h->data;
  if (c->in_body) *buf = uv_buf_init(c->body + c->body_len, (unsigned)(c->body_want - c->body_len));
  else *buf = uv_buf_init(c->buf + c->len, (unsigned)(sizeof c->buf - c->len));
}

static void on_read(uv_stream_t *st, ssize_t nread, const uv_buf_t *buf) {
  (void)buf;
  conn *c = st->data;
  if (c->answered || c->closing) return;
  if (nread < 0) {
    if (nread == UV_ENOBUFS) {
      static const char msg[] = "headers too large\n";
      respond(c, 431, "Request Header Fields Too Large", "text/plain", msg, sizeof msg - 1, 0);
    } else {
      conn_close(c);
    }
    return;
  }
  if (c->in_body) {
    c->body_len += (size_t)nread;
    if (c->body_len == c->body_want) handle_request(c);
    return;
  }
  c->len += (size_t)nread;
  for (size_t i = 0; i + 1 < c->len; i++) {
    size_t end = 0;
    if (c->buf[i] == '\n' && c->buf[i + 1] == '\n') end = i + 2;
    else if (i + 3 < c->len && !memcmp(c->buf + i, "\r\n\r\n", 4)) end = i + 4;
    if (!end) continue;
    if (c->len >= 5 && !memcmp(c->buf, "POST ", 5)) { /* a body of Content-Length bytes follows */
      char cl[32];
      char *e;
      if (!header_value(c, "Content-Length", cl, sizeof cl)) {
        static const char msg[] = "POST needs Content-Length\n";
        respond(c, 411, "Length Required", "text/plain", msg, sizeof msg - 1, 0);
        return;
      }
      unsigned long long want = strtoull(cl, &e, 10);
      if (*e || cl[0] == '-' || want > HTTP_MAX_BODY) {
        static const char msg[] = "request body too large (at most 16 MiB) or a bad Content-Length\n";
        respond(c, 413, "Payload Too Large", "text/plain", msg, sizeof msg - 1, 0);
        return;
      }
      c->body_want = (size_t)want;
      c->body = malloc(c->body_want ? c->body_want : 1);
      if (!c->body) {
        static const char msg[] = "out of memory\n";
        respond(c, 503, "Service Unavailable", "text/plain", msg, sizeof msg - 1, 0);
        return;
      }
      size_t have = c->len - end < c->body_want ? c->len - end : c->body_want;
      memcpy(c->body, c->buf + end, have);
      c->body_len = have;
      c->len = end;
      if (c->body_len < c->body_want) {
        c->in_body = 1;
        return;
      }
    }
    handle_request(c);
    return;
  }
  if (c->len == sizeof c->buf) {
    static const char msg[] = "headers too large\n";
    respond(c, 431, "Request Header Fields Too Large", "text/plain", msg, sizeof msg - 1, 0);
  }
}

static void on_timeout(uv_timer_t *t) { conn_close(t->data); }

static void on_connection(uv_stream_t *server, int status) {
  http_server *s = server->data;
  if (status < 0 || s->stopping) return;
  conn *c = calloc(1, sizeof *c);
  if (!c) return;
  c->srv = s;
  uv_tcp_init(server->loop, &c->tcp);
  uv_timer_init(server->loop, &c->timer);
  c->tcp.data = c;
  c->timer.data = c;
  c->open_handles = 2;
  s->open_handles++;
  c->next = s->conns;
  if (s->conns) s->conns->prev = c;
  s->conns = c;
  if (uv_accept(server, (uv_stream_t *)&c->tcp) || uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read)) {
    conn_close(c);
    return;
  }
  uv_timer_start(&c->timer, on_timeout, HTTP_TIMEOUT_MS, 0);
}

int http_parse_hostport(const char *hostport, struct sockaddr_storage *addr, taca_error *err) {
  const char *colon = strrchr(hostport, ':');
  if (!colon || colon == hostport || !colon[1])
    return taca_fail(err, "'%s': expected HOST:PORT", hostport);
  char host[256];
  const char *h = hostport;
  size_t hl = (size_t)(colon - hostport);
  if (h[0] == '[' && hl >= 2 && h[hl - 1] == ']') {
    h++;
    hl -= 2;
  }
  if (hl >= sizeof host) return taca_fail(err, "'%s': host name too long", hostport);
  memcpy(host, h, hl);
  host[hl] = '\0';
  char *end;
  long port = strtol(colon + 1, &end, 10);
  if (*end || port < 0 || port > 65535) return taca_fail(err, "'%s': port must be 0..65535", hostport);
  memset(addr, 0, sizeof *addr);
  if (uv_ip4_addr(host, (int)port, (struct sockaddr_in *)addr) == 0) return 0;
  if (uv_ip6_addr(host, (int)port, (struct sockaddr_in6 *)addr) == 0) return 0;
  struct addrinfo hints = {0}, *res = NULL;
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  int rc = getaddrinfo(host, NULL, &hints, &res);
  if (rc || !res) return taca_fail(err, "'%s': cannot resolve host '%s': %s", hostport, host, gai_strerror(rc));
  memcpy(addr, res->ai_addr, res->ai_addrlen);
  if (res->ai_family == AF_INET) ((struct sockaddr_in *)addr)->sin_port = htons((uint16_t)port);
  else ((struct sockaddr_in6 *)addr)->sin6_port = htons((uint16_t)port);
  freeaddrinfo(res);
  return 0;
}

static void listener_closed(uv_handle_t *h) {
  http_server *s = h->data;
  s->open_handles--;
  maybe_free_server(s);
}

int http_start(uv_loop_t *loop, const char *hostport, const http_handlers *h, http_server **out, int *port,
               taca_error *err) {
  *out = NULL;
  struct sockaddr_storage addr;
  if (http_parse_hostport(hostport, &addr, err)) return taca_error_prefix(err, "--metrics");
  http_server *s = calloc(1, sizeof *s);
  if (!s) return taca_fail(err, "out of memory");
  s->h = *h;
  uv_tcp_init(loop, &s->listener);
  s->listener.data = s;
  s->open_handles = 1;
  int rc = uv_tcp_bind(&s->listener, (const struct sockaddr *)&addr, 0);
  if (rc == 0) rc = uv_listen((uv_stream_t *)&s->listener, 128, on_connection);
  if (rc) {
    s->stopping = 1;
    uv_close((uv_handle_t *)&s->listener, listener_closed);
    return taca_fail(err, "--metrics %s: %s", hostport, uv_strerror(rc));
  }
  struct sockaddr_storage bound;
  int blen = sizeof bound;
  uv_tcp_getsockname(&s->listener, (struct sockaddr *)&bound, &blen);
  *port = bound.ss_family == AF_INET6 ? ntohs(((struct sockaddr_in6 *)&bound)->sin6_port)
                                      : ntohs(((struct sockaddr_in *)&bound)->sin_port);
  *out = s;
  return 0;
}

void http_stop(http_server *s) {
  if (!s || s->stopping) return;
  s->stopping = 1;
  while (s->conns) conn_close(s->conns);
  uv_close((uv_handle_t *)&s->listener, listener_closed);
}
