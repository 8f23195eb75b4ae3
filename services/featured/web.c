/* web.c: the search page and its JSON/thumbnail endpoints (see web.h). Searches go through
 * handle_search with a packed SearchRequest, so the page gets exactly what the gRPC API answers. */
#include "services/featured/web.h"

#include <ctype.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "image/pixel_codec.h"
#include "services/featured/featured.h"
#include "services/featured/handlers.h"
#include "services/featured/metrics.h"
#include "services/featured/encoders.h"
#include "storage/gather.h"
#include "taca/v1/feature_cache.pb-c.h"

extern const char TACA_SEARCH_PAGE[];      /* page_html.c, generated from page.html at build time */
extern const unsigned TACA_SEARCH_PAGE_LEN;

static void set_body(http_reply *out, int code, const char *ctype, char *body, size_t len) {
  out->code = code;
  out->ctype = ctype;
  out->body = body;
  out->len = len;
}

static void text_reply(http_reply *out, int code, const char *msg) {
  set_body(out, code, "text/plain", strdup(msg), strlen(msg));
}

static void json_reply(http_reply *out, int code, json_t *j) {
  char *s = j ? json_dumps(j, JSON_COMPACT | JSON_ENSURE_ASCII) : NULL;
  json_decref(j);
  if (!s) set_body(out, 500, "application/json", strdup("{\"error\":\"out of memory\"}"), 25);
  else set_body(out, code, "application/json", s, strlen(s));
}

static void json_error(http_reply *out, int code, const char *msg) {
  json_reply(out, code, json_pack("{s:s}", "error", msg));
}

/* gRPC status -> HTTP status for the page's error display. */
static int http_code(grpc_status_code c) {
  switch (c) {
    case GRPC_STATUS_INVALID_ARGUMENT: return 400;
    case GRPC_STATUS_NOT_FOUND: return 404;
    case GRPC_STATUS_FAILED_PRECONDITION: return 412;
    case GRPC_STATUS_UNAUTHENTICATED: return 401;
    case GRPC_STATUS_RESOURCE_EXHAUSTED: return 429;
    case GRPC_STATUS_UNAVAILABLE: return 503;
    default: return 500;
  }
}

/* The value of query parameter `name` in target (URL-decoded: %XX and '+'), or 0 if absent. */
static int query_param(const char *target, const char *name, char *out, size_t cap) {
  const char *q = strchr(target, '?');
  size_t nl = strlen(name);
  for (const char *p = q ? q + 1 : NULL; p && *p;) {
    const char *amp = strchr(p, '&'), *end = amp ? amp : p + strlen(p);
    if ((size_t)(end - p) >= nl && !strncmp(p, name, nl) && (p[nl] == '=' || p + nl == end)) {
      size_t o = 0;
      for (const char *s = p[nl] == '=' ? p + nl + 1 : end; s < end && o + 1 < cap; s++) {
        if (*s == '+') out[o++] = ' ';
        else if (*s == '%' && s + 2 < end && isxdigit((unsigned char)s[1]) && isxdigit((unsigned char)s[2])) {
          char hex[3] = {s[1], s[2], 0};
          out[o++] = (char)strtol(hex, NULL, 16);
          s += 2;
        } else out[o++] = *s;
      }
      out[o] = '\0';
      return 1;
    }
    p = amp ? amp + 1 : NULL;
  }
  return 0;
}

static int authorized(const featured *f, const char *authorization) {
  const char *token = f->cfg.token;
  if (!token) return 1;
  if (!authorization || strncmp(authorization, "Bearer ", 7)) return 0;
  const char *v = authorization + 7;
  size_t tl = strlen(token);
  if (strlen(v) != tl) return 0;
  unsigned char diff = 0; /* constant time in the token */
  for (size_t i = 0; i < tl; i++) diff |= (unsigned char)(v[i] ^ token[i]);
  return diff == 0;
}

static void api_info(featured *f, http_reply *out) {
  featured_snapshot *s = malloc(sizeof *s);
  if (!s) return json_error(out, 500, "out of memory");
  featured_snapshot_get(f, s);
  json_t *ms = json_array();
  for (int i = 0; i < s->info.n_models; i++) {
    const store_model *m = &s->info.models[i];
    json_array_append_new(ms, json_pack("{s:s, s:s, s:i, s:i, s:I, s:I, s:b}", "name", m->name, "arch", m->arch,
                                        "image_dim", m->image_dim, "text_dim", m->text_dim, "image_count",
                                        (json_int_t)s->info.n_embeddings[i][STORE_IMAGE], "text_count",
                                        (json_int_t)s->info.n_embeddings[i][STORE_TEXT], "caption_search",
                                        featured_encoders_has_texts(f->encoders, m->name)));
    json_t *last = json_array_get(ms, json_array_size(ms) - 1);
    json_object_set_new(last, "image_search", json_boolean(featured_encoders_has_images(f->encoders, m->name)));
    json_object_set_new(last, "kind", json_string(s->kind[i]));
    json_object_set_new(last, "space", json_string(s->space[i]));
  }
  json_t *as = json_array();
  for (int i = 0; i < s->aliases.n; i++)
    json_array_append_new(as, json_pack("{s:s, s:s}", "name", s->aliases.a[i].name, "target", s->aliases.a[i].target));
  json_t *o = json_pack("{s:I, s:I, s:I, s:I, s:o, s:b, s:i, s:s}", "samples", (json_int_t)s->info.n_samples,
                        "begin", (json_int_t)s->begin, "end", (json_int_t)s->end, "captions",
                        (json_int_t)s->info.n_captions, "models", ms, "pixels", s->info.has_pixel_format, "max_k",
                        f->cfg.max_k, "version", FEATURED_VERSION);
  json_object_set_new(o, "aliases", as);
  free(s);
  json_reply(out, 200, o);
}

static void api_search(featured *f, const char *target, const char *body, size_t body_len, http_reply *out) {
  char q[4096] = "", model[STORE_NAME_MAX * 2], qmodel[STORE_NAME_MAX * 2] = "", kbuf[32], mod[16] = "image",
       metric[16] = "ip";
  if (body && !body_len) return json_error(out, 400, "the POST body (the image to search by) is empty");
  if (!body && (!query_param(target, "q", q, sizeof q) || !q[0]))
    return json_error(out, 400, "q (the caption) is required, or POST an image");
  query_param(target, "query_model", qmodel, sizeof qmodel);
  if (!query_param(target, "model", model, sizeof model) || !model[0]) return json_error(out, 400, "model is required");
  long k = 10;
  if (query_param(target, "k", kbuf, sizeof kbuf)) {
    char *end;
    k = strtol(kbuf, &end, 10);
    if (*end || k < 1) return json_error(out, 400, "k must be a positive integer");
  }
  query_param(target, "modality", mod, sizeof mod);
  query_param(target, "metric", metric, sizeof metric);
  if (strcmp(mod, "image") && strcmp(mod, "text")) return json_error(out, 400, "modality must be image or text");
  if (strcmp(metric, "ip") && strcmp(metric, "cosine")) return json_error(out, 400, "metric must be ip or cosine");
  Taca__V1__SearchRequest req = TACA__V1__SEARCH_REQUEST__INIT;
  char *caps[1] = {q};
  ProtobufCBinaryData img = {body_len, (uint8_t *)body};
  req.model = model;
  if (qmodel[0]) req.query_model = qmodel;
  req.modality = strcmp(mod, "text") ? TACA__V1__MODALITY__MODALITY_IMAGE : TACA__V1__MODALITY__MODALITY_TEXT;
  req.metric = strcmp(metric, "cosine") ? TACA__V1__METRIC__METRIC_INNER_PRODUCT : TACA__V1__METRIC__METRIC_COSINE;
  if (body) {
    req.n_images = 1;
    req.images = &img;
  } else {
    req.n_captions = 1;
    req.captions = caps;
  }
  req.k = (uint32_t)(k > (long)UINT32_MAX ? UINT32_MAX : k);
  req.with_keys = 1;
  req.with_captions = 1;
  req.with_metadata = 1;
  size_t len = taca__v1__search_request__get_packed_size(&req);
  uint8_t *buf = malloc(len ? len : 1);
  if (!buf) return json_error(out, 500, "out of memory");
  taca__v1__search_request__pack(&req, buf);
  reply r = {0};
  handle_search(f, buf, len, &r);
  free(buf);
  if (r.code != GRPC_STATUS_OK) {
    char msg[600];
    snprintf(msg, sizeof msg, "%s: %s", grpc_code_name(r.code), r.msg);
    reply_clear(&r);
    return json_error(out, http_code(r.code), msg);
  }
  Taca__V1__SearchResponse *resp = taca__v1__search_response__unpack(NULL, r.len, r.buf);
  reply_clear(&r);
  if (!resp || resp->n_results != 1) {
    if (resp) taca__v1__search_response__free_unpacked(resp, NULL);
    return json_error(out, 500, "internal error: unexpected Search response");
  }
  const Taca__V1__SearchHits *h = resp->results[0];
  json_t *res = json_array();
  for (size_t i = 0; i < h->n_indices; i++) {
    const char *key = i < h->n_keys ? h->keys[i] : "", *cap = i < h->n_captions ? h->captions[i] : "";
    const char *meta = i < h->n_metadata ? h->metadata[i] : "";
    json_t *o = json_pack("{s:i, s:I, s:s, s:f}", "rank", (int)i + 1, "index", (json_int_t)h->indices[i], "key",
                          key, "score", (double)h->scores[i]);
    json_object_set_new(o, "caption", cap[0] ? json_string(cap) : json_null());
    json_t *mj = meta[0] ? json_loads(meta, 0, NULL) : NULL;
    json_object_set_new(o, "metadata", mj ? mj : json_null());
    json_array_append_new(res, o);
  }
  json_t *o = json_pack("{s:s, s:s, s:i, s:o, s:s}", "model", model, "q", body ? "" : q, "k", (int)k, "results", res,
                        "resolved_model", resp->resolved_model ? resp->resolved_model : model);
  if (body) json_object_set_new(o, "image_bytes", json_integer((json_int_t)body_len));
  taca__v1__search_response__free_unpacked(resp, NULL);
  json_reply(out, 200, o);
}

static void thumb(featured *f, const char *target, http_reply *out) {
  char ibuf[32];
  char *end;
  if (!query_param(target, "index", ibuf, sizeof ibuf) || !ibuf[0])
    return text_reply(out, 400, "index is required\n");
  unsigned long long index = strtoull(ibuf, &end, 10);
  if (*end || ibuf[0] == '-') return text_reply(out, 400, "index must be a number\n");
  featured_snapshot *s = malloc(sizeof *s);
  if (!s) return text_reply(out, 500, "out of memory\n");
  featured_snapshot_get(f, s);
  store_pixel_format pf = s->info.pixel;
  int has = s->info.has_pixel_format;
  free(s);
  if (!has) return text_reply(out, 404, "this store holds no pixels\n");
  store_view *v;
  taca_error err;
  if (store_view_begin(f->store, &v, &err)) return text_reply(out, 503, "store unavailable\n");
  const uint8_t *px;
  size_t len;
  int rc = store_get_pixels(v, index, &px, &len, &err);
  if (rc) {
    store_view_end(v);
    if (rc == STORE_NOT_STORED) return text_reply(out, 404, "no pixels stored for this index\n");
    return text_reply(out, 500, store_error_is_corrupt(&err) ? "store corrupt: pixels of this index are damaged\n"
                                                             : "cannot read the pixels\n");
  }
  uint8_t *jpg = NULL;
  size_t jl = 0;
  if (!strcmp(pf.codec, "jpeg")) {
    jpg = malloc(len);
    if (jpg) memcpy(jpg, px, len), jl = len;
  } else if (pf.channels == 3 && len == (size_t)3 * pf.size * pf.size) {
    if (pixel_encode_jpeg(px, pf.size, 92, &jpg, &jl, &err)) jpg = NULL;
  }
  store_view_end(v);
  if (!jpg) return text_reply(out, 500, "cannot encode the crop\n");
  set_body(out, 200, "image/jpeg", (char *)jpg, jl);
}

void web_handle(void *arg, const char *target, const char *authorization, const char *body, size_t body_len,
                http_reply *out) {
  featured *f = arg;
  char path[1024];
  snprintf(path, sizeof path, "%s", target);
  char *qm = strchr(path, '?');
  if (qm) *qm = '\0';
  if (!strcmp(path, "/") || !strcmp(path, "/index.html")) {
    char *page = malloc(TACA_SEARCH_PAGE_LEN);
    if (page) memcpy(page, TACA_SEARCH_PAGE, TACA_SEARCH_PAGE_LEN);
    return set_body(out, 200, "text/html; charset=utf-8", page, TACA_SEARCH_PAGE_LEN);
  }
  int api = !strncmp(path, "/api/", 5), th = !strcmp(path, "/thumb");
  if (!api && !th) return text_reply(out, 404, "not found: try /, /metrics or /healthz\n");
  if (!authorized(f, authorization)) {
    if (api) return json_error(out, 401, "this server needs 'Authorization: Bearer <token>' (--token)");
    return text_reply(out, 401, "token required\n");
  }
  if (!strcmp(path, "/api/info")) return api_info(f, out);
  if (!strcmp(path, "/api/search")) return api_search(f, target, body, body_len, out);
  if (body) return json_error(out, 405, "POST goes to /api/search only (an image to search by)");
  if (th) return thumb(f, target, out);
  json_error(out, 404, "unknown API path (try /api/info or /api/search)");
}
