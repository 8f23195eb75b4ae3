/* http.h: a minimal HTTP/1.x endpoint on the libuv loop for operators: GET /metrics (Prometheus
 * text) and GET /healthz (200 "ok" while serving, 503 once shutting down); every other GET, and POST
 * with a Content-Length body of at most 16 MiB, goes to the optional app handler (the analysts'
 * search page, web.h), which runs on libuv's thread pool so that a search does not hold up the loop.
 * One request per connection, 8 KiB of headers at most, 10 s to send the whole request. The listener and connections live on the loop's thread only. */
#ifndef TACA_FEATURED_HTTP_H
#define TACA_FEATURED_HTTP_H

#include <stddef.h>
#include <uv.h>

#include "base/error.h"

typedef struct http_server http_server;

/* What the app handler answers: status code, content type (static string) and a malloc'd body. */
typedef struct http_reply {
  int code;
  const char *ctype;
  char *body;
  size_t len;
} http_reply;

typedef struct http_handlers {
  char *(*metrics)(void *arg, size_t *len); /* malloc'd body, NULL on failure */
  int (*serving)(void *arg);                /* 1 while serving */
  void *arg;
  /* Optional (NULL: 404). target: the request target with its query string; authorization: the
   * Authorization header's value or NULL; body: a POST's body (NULL for GET). Called on a
   * thread-pool thread; fills out. */
  void (*app)(void *arg, const char *target, const char *authorization, const char *body, size_t body_len,
              http_reply *out);
  const char *metrics_token; /* non-NULL: GET /metrics needs "Authorization: Bearer TOKEN" (401 otherwise) */
} http_handlers;

/* Listens on hostport ("127.0.0.1:9090", "[::1]:0", "localhost:9090"); *port receives the bound port. */
int http_start(uv_loop_t *loop, const char *hostport, const http_handlers *h, http_server **out, int *port,
               taca_error *err);
/* Closes the listener and every open connection; the memory is freed once libuv has closed them. */
void http_stop(http_server *s);

/* Resolves "HOST:PORT" (IPv4, [IPv6] or a name) into addr. */
int http_parse_hostport(const char *hostport, struct sockaddr_storage *addr, taca_error *err);

#endif
