/* server.c: gRPC C core server for taca-featured: registration, completion-queue threads, and the
 * per-call state machines.
 *
 * Every call is bound to the completion queue it was requested on, and each queue has exactly one
 * thread, so a call's events are handled by one thread in order; only Health.Watch calls are also
 * touched by the main thread (status changes), under their own mutex.
 *
 * Call kinds:
 *   unary   the checks that need no body (method, draining, token, deadline); then the request (with
 *           --token, a RECV_MESSAGE after those checks, so a refused call is never read; without one,
 *           the message that came with the call); then one batch: initial metadata + message (if
 *           OK) + status + RECV_CLOSE_ON_SERVER. StreamEpoch and Health.Watch get theirs the same way.
 *   stream  (StreamEpoch) RECV_CLOSE_ON_SERVER first; then exactly one SEND_MESSAGE in flight, the
 *           next batch built while it is (flow control is the completion of that send); finally
 *           the status. Freed when no batch of the call is pending.
 *   watch   (Health.Watch) the current status, then a message at each change; ends UNAVAILABLE on
 *           shutdown.
 *   reflection (ServerReflectionInfo, v1 and v1alpha) RECV_CLOSE_ON_SERVER first; then one
 *           RECV_MESSAGE at a time, each answered by one SEND_MESSAGE (reflection.c) before the next
 *           receive; the client's half-close ends it OK.
 *   unknown any other method: UNIMPLEMENTED (a request for unregistered methods is always armed,
 *           otherwise such calls would hang until their deadline). */
#include "services/featured/server.h"

#include <errno.h>
#include <grpc/byte_buffer_reader.h>
#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <grpc/slice.h>
#include <grpc/support/time.h>

#include "base/file.h"
#include "base/hostport.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "services/featured/handlers.h"
#include "services/featured/log.h"
#include "services/featured/methods.h"
#include "services/featured/metrics.h"
#include "services/featured/reflection.h"

typedef enum tag_kind { T_NEW, T_UNARY, T_SEND, T_CLOSE, T_RECV, T_SHUTDOWN } tag_kind;

struct call;
typedef struct tag {
  tag_kind kind;
  struct call *c;
} tag;

typedef struct worker {
  featured_server *srv;
  grpc_completion_queue *cq;
  pthread_t thread;
  int started;
} worker;

struct featured_server {
  featured *f;
  grpc_server *server;
  void *handles[FM_COUNT];
  int nworkers;
  worker *w;
  tag shutdown_tag;
  atomic_int active;    /* calls arrived and not yet freed */
  server_callbacks cb;
  pthread_mutex_t watch_mu;
  struct call *watch_head;
  /* With a token, requests are received only after the checks (a call refused from its metadata
   * costs no read); without one there is nothing to refuse before the body, and the request comes
   * with the call (one completion less per call: ~20% of the mixed load's throughput). */
  int deferred_recv;
};

typedef struct call {
  featured_server *srv;
  worker *w;
  featured_method method;
  grpc_call *call;
  gpr_timespec deadline;
  grpc_metadata_array md;
  grpc_call_details details; /* FM_UNKNOWN only */
  grpc_byte_buffer *payload;
  tag t_new, t_unary, t_send, t_close, t_recv;
  struct timespec t0;
  int recv_cancelled;        /* written by RECV_CLOSE_ON_SERVER */
  int pending;               /* batches in flight */
  int md_sent, status_sent, closed, broken, in_flight;
  int counted_stream, arrived;
  grpc_status_code final_code;
  grpc_slice status_slice;
  int has_status_slice;
  grpc_byte_buffer *inflight, *prefetched;
  size_t prefetched_len;
  /* StreamEpoch */
  epoch_stream *es;
  int has_err;
  grpc_status_code err_code;
  char err_msg[512];
  /* Health.Watch */
  pthread_mutex_t mu;
  int mu_init, in_list, last_status;
  struct call *wprev, *wnext;
  char service[256];
} call;

static double elapsed_s(const struct timespec *t0) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)(t.tv_sec - t0->tv_sec) + (double)(t.tv_nsec - t0->tv_nsec) * 1e-9;
}

static void call_free(call *c) {
  featured_server *s = c->srv;
  int arrived = c->arrived;
  if (c->counted_stream == 1) atomic_fetch_sub(&c->srv->f->active_streams, 1);
  if (c->counted_stream == 2) atomic_fetch_sub(&c->srv->f->active_watches, 1);
  grpc_metadata_array_destroy(&c->md);
  if (c->method == FM_UNKNOWN) grpc_call_details_destroy(&c->details);
  if (c->payload) grpc_byte_buffer_destroy(c->payload);
  if (c->inflight) grpc_byte_buffer_destroy(c->inflight);
  if (c->prefetched) grpc_byte_buffer_destroy(c->prefetched);
  if (c->has_status_slice) grpc_slice_unref(c->status_slice);
  epoch_stream_close(c->es);
  if (c->call) grpc_call_unref(c->call);
  if (c->mu_init) pthread_mutex_destroy(&c->mu);
  free(c);
  /* the last call of a draining server: phase 1 is over */
  if (arrived && atomic_fetch_sub(&s->active, 1) == 1 && featured_draining(s->f)) s->cb.idle(s->cb.arg);
}

/* Requests the next call of `method` on worker w's queue. */
static void arm(worker *w, featured_method method) {
  featured_server *s = w->srv;
  call *c = calloc(1, sizeof *c);
  if (!c) {
    log_msg(LOG_ERROR, "out of memory arming a %s request", FEATURED_METHOD_NAMES[method]);
    return;
  }
  c->srv = s;
  c->w = w;
  c->method = method;
  c->t_new = (tag){T_NEW, c};
  c->t_unary = (tag){T_UNARY, c};
  c->t_send = (tag){T_SEND, c};
  c->t_close = (tag){T_CLOSE, c};
  c->t_recv = (tag){T_RECV, c};
  c->last_status = -1;
  grpc_metadata_array_init(&c->md);
  grpc_call_error e;
  if (method == FM_UNKNOWN) {
    grpc_call_details_init(&c->details);
    e = grpc_server_request_call(s->server, &c->call, &c->details, &c->md, w->cq, w->cq, &c->t_new);
  } else {
    e = grpc_server_request_registered_call(s->server, s->handles[method], &c->call, &c->deadline, &c->md,
                                            s->deferred_recv || FEATURED_METHOD_BIDI(method) ? NULL : &c->payload,
                                            w->cq, w->cq, &c->t_new);
  }
  if (e != GRPC_CALL_OK) {
    log_msg(LOG_ERROR, "arming a %s request failed (grpc_call_error %d)", FEATURED_METHOD_NAMES[method], (int)e);
    call_free(c);
  }
}

/* Keeps the memory of a reply's zero-copy tail (an LMDB read view) alive until gRPC drops the last
 * slice that points into it. */
typedef struct tail_hold {
  void *owner;
  void (*release)(void *owner);
} tail_hold;

static void tail_hold_release(void *p) {
  tail_hold *h = p;
  if (h->release) h->release(h->owner);
  free(h);
}

/* The reply as a byte buffer: the packed message, then for each tail entry a small header slice and
 * a slice into the tail's memory (sub-slices of one span, so no allocation per entry). Takes r->buf
 * and the tail. NULL when out of memory (the reply is then cleared). */
static grpc_byte_buffer *reply_to_bb(reply *r) {
  grpc_slice main = r->len ? grpc_slice_new(r->buf, r->len, free) : grpc_empty_slice();
  r->buf = NULL;
  r->len = 0;
  reply_tail *t = &r->tail;
  if (t->n == 0) {
    reply_tail_clear(t);
    grpc_byte_buffer *bb = grpc_raw_byte_buffer_create(&main, 1);
    grpc_slice_unref(main);
    return bb;
  }
  size_t n = t->n, k = 0;
  grpc_slice *sl = malloc((2 * n + 1) * sizeof *sl);
  uint8_t *hdr = malloc(n * 20);
  tail_hold *h = malloc(sizeof *h);
  if (!sl || !hdr || !h) {
    free(sl), free(hdr), free(h);
    grpc_slice_unref(main);
    reply_tail_clear(t);
    return NULL;
  }
  h->owner = t->owner;
  h->release = t->release;
  t->owner = NULL;
  t->release = NULL;
  const uint8_t *lo = NULL, *hi = NULL;
  for (size_t i = 0; i < n; i++)
    if (t->len[i]) {
      if (!lo || t->data[i] < lo) lo = t->data[i];
      if (!hi || t->data[i] + t->len[i] > hi) hi = t->data[i] + t->len[i];
    }
  grpc_slice hdrs = grpc_slice_new(hdr, n * 20, free);
  grpc_slice span = lo ? grpc_slice_new_with_user_data((void *)lo, (size_t)(hi - lo), tail_hold_release, h)
                       : grpc_empty_slice();
  if (!lo) tail_hold_release(h); /* nothing points into the tail's memory */
  sl[k++] = main;
  size_t off = 0;
  for (size_t i = 0; i < n; i++) {
    size_t hl = reply_tail_header(t, i, hdr + off);
    sl[k++] = grpc_slice_sub(hdrs, off, off + hl);
    off += hl;
    if (t->len[i]) {
      size_t at = (size_t)(t->data[i] - lo);
      sl[k++] = grpc_slice_sub(span, at, at + t->len[i]);
    }
  }
  grpc_byte_buffer *bb = grpc_raw_byte_buffer_create(sl, k);
  for (size_t i = 0; i < k; i++) grpc_slice_unref(sl[i]);
  grpc_slice_unref(hdrs);
  grpc_slice_unref(span);
  free(sl);
  reply_tail_clear(t); /* the arrays; the owner now belongs to the span */
  return bb;
}

static size_t reply_bytes(const reply *r) { return r->len + reply_tail_bytes(&r->tail); }

static void set_status_slice(call *c, const char *msg) {
  if (c->has_status_slice) grpc_slice_unref(c->status_slice);
  c->status_slice = grpc_slice_from_copied_string(msg);
  c->has_status_slice = 1;
}

static void log_status(call *c, grpc_status_code code, const char *msg) {
  if (code != GRPC_STATUS_OK) {
    log_field fl[] = {LOG_STR("event", "rpc_error"), LOG_STR("method", FEATURED_METHOD_NAMES[c->method]),
                      LOG_STR("code", grpc_code_name(code)), LOG_STR("detail", msg)};
    log_event(LOG_INFO, fl, 4, "%s -> %s: %s", FEATURED_METHOD_NAMES[c->method], grpc_code_name(code), msg);
  }
}

/* ---------- unary ---------- */

static void finish_unary(call *c, reply *r) {
  grpc_op ops[4];
  memset(ops, 0, sizeof ops);
  int n = 0;
  ops[n++].op = GRPC_OP_SEND_INITIAL_METADATA;
  size_t bytes = 0;
  if (r->code == GRPC_STATUS_OK) {
    bytes = reply_bytes(r);
    c->inflight = reply_to_bb(r);
    if (!c->inflight) reply_fail(r, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory sending the response");
  }
  if (r->code == GRPC_STATUS_OK) {
    metrics_message(c->srv->f->metrics, c->method, bytes);
    ops[n].op = GRPC_OP_SEND_MESSAGE;
    ops[n++].data.send_message.send_message = c->inflight;
  }
  set_status_slice(c, r->code == GRPC_STATUS_OK ? "" : r->msg);
  log_status(c, r->code, r->msg);
  ops[n].op = GRPC_OP_SEND_STATUS_FROM_SERVER;
  ops[n].data.send_status_from_server.status = r->code;
  ops[n++].data.send_status_from_server.status_details = &c->status_slice;
  ops[n].op = GRPC_OP_RECV_CLOSE_ON_SERVER;
  ops[n++].data.recv_close_on_server.cancelled = &c->recv_cancelled;
  c->final_code = r->code;
  reply_clear(r);
  grpc_call_error e = grpc_call_start_batch(c->call, ops, (size_t)n, &c->t_unary, NULL);
  if (e != GRPC_CALL_OK) {
    log_msg(LOG_ERROR, "%s: starting the reply failed (grpc_call_error %d)", FEATURED_METHOD_NAMES[c->method], (int)e);
    metrics_done(c->srv->f->metrics, c->method, GRPC_STATUS_INTERNAL, elapsed_s(&c->t0));
    call_free(c);
  }
}

static void on_unary_done(call *c) {
  int code = c->final_code;
  if (c->recv_cancelled && code == GRPC_STATUS_OK) code = GRPC_STATUS_CANCELLED;
  metrics_done(c->srv->f->metrics, c->method, code, elapsed_s(&c->t0));
  call_free(c);
}

/* ---------- StreamEpoch ---------- */

static int start(call *c, grpc_op *ops, size_t n, tag *t) {
  grpc_call_error e = grpc_call_start_batch(c->call, ops, n, t, NULL);
  if (e != GRPC_CALL_OK) {
    log_msg(LOG_ERROR, "%s: grpc_call_start_batch failed (grpc_call_error %d)", FEATURED_METHOD_NAMES[c->method],
            (int)e);
    c->broken = 1;
    return -1;
  }
  c->pending++;
  return 0;
}

static int send_status(call *c, grpc_status_code code, const char *msg) {
  grpc_op ops[2];
  memset(ops, 0, sizeof ops);
  size_t n = 0;
  if (!c->md_sent) ops[n++].op = GRPC_OP_SEND_INITIAL_METADATA;
  set_status_slice(c, msg);
  ops[n].op = GRPC_OP_SEND_STATUS_FROM_SERVER;
  ops[n].data.send_status_from_server.status = code;
  ops[n++].data.send_status_from_server.status_details = &c->status_slice;
  c->md_sent = 1;
  c->status_sent = 1;
  c->final_code = code;
  log_status(c, code, msg);
  if (start(c, ops, n, &c->t_send)) return -1;
  c->in_flight = 1;
  return 0;
}

static int send_message(call *c, grpc_byte_buffer *bb) {
  grpc_op ops[2];
  memset(ops, 0, sizeof ops);
  size_t n = 0;
  if (!c->md_sent) ops[n++].op = GRPC_OP_SEND_INITIAL_METADATA;
  ops[n].op = GRPC_OP_SEND_MESSAGE;
  ops[n++].data.send_message.send_message = bb;
  c->md_sent = 1;
  c->inflight = bb;
  if (start(c, ops, n, &c->t_send)) return -1;
  c->in_flight = 1;
  return 0;
}

/* Builds the next batch of the stream into c->prefetched (or records the error to end with). */
static void stream_prefetch(call *c) {
  reply r = {0};
  int rc = epoch_stream_next(c->es, &r);
  if (rc == 1) {
    c->prefetched_len = reply_bytes(&r);
    c->prefetched = reply_to_bb(&r);
    if (!c->prefetched) {
      rc = -1;
      reply_fail(&r, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory sending a batch");
    }
  }
  if (rc < 0) {
    c->has_err = 1;
    c->err_code = r.code;
    snprintf(c->err_msg, sizeof c->err_msg, "%s", r.msg);
  }
  reply_clear(&r);
}

/* With no send in flight: sends the prefetched batch (and builds the next), or the final status. */
static void stream_pump(call *c) {
  if (c->closed || c->broken || c->status_sent || c->in_flight) return;
  featured *f = c->srv->f;
  if (featured_draining(f) && (c->prefetched || c->has_err)) {
    uint64_t next = epoch_stream_position(c->es) - (c->prefetched ? 1 : 0);
    char msg[256];
    snprintf(msg, sizeof msg,
             "taca-featured is shutting down: batch %llu of %llu not sent; resume with start_batch=%llu",
             (unsigned long long)next, (unsigned long long)epoch_stream_count(c->es), (unsigned long long)next);
    send_status(c, GRPC_STATUS_UNAVAILABLE, msg);
    return;
  }
  if (c->prefetched) {
    grpc_byte_buffer *bb = c->prefetched;
    size_t len = c->prefetched_len;
    c->prefetched = NULL;
    if (send_message(c, bb) == 0) {
      metrics_message(f->metrics, c->method, len);
      stream_prefetch(c);
    }
    return;
  }
  if (c->has_err) send_status(c, c->err_code, c->err_msg);
  else send_status(c, GRPC_STATUS_OK, "");
}

static void stream_maybe_free(call *c) {
  if (c->pending) return;
  int code = c->final_code;
  if (!c->status_sent || (c->recv_cancelled && code == GRPC_STATUS_OK)) code = GRPC_STATUS_CANCELLED;
  metrics_done(c->srv->f->metrics, c->method, code, elapsed_s(&c->t0));
  call_free(c);
}

/* Counts the call against --max-streams (StreamEpoch) or --max-watch (Health.Watch, a budget of its
 * own: watches need no token, so they must never crowd out the data plane); finishes it
 * RESOURCE_EXHAUSTED (returns -1) when over. */
static int admit_stream(call *c) {
  featured *f = c->srv->f;
  int watch = c->method == FM_HEALTH_WATCH;
  atomic_int *counter = watch ? &f->active_watches : &f->active_streams;
  int limit = watch ? f->cfg.max_watches : f->cfg.max_streams;
  int active = atomic_fetch_add(counter, 1) + 1;
  c->counted_stream = watch ? 2 : 1;
  if (active <= limit) return 0;
  reply r = {0};
  reply_fail(&r, GRPC_STATUS_RESOURCE_EXHAUSTED,
             "%d %s are open, the limit of this server (%s %d): retry later or use another replica", active - 1,
             watch ? "health watches" : "streams", watch ? "--max-watch" : "--max-streams", limit);
  finish_unary(c, &r);
  return -1;
}

static void stream_begin(call *c, const uint8_t *req, size_t len) {
  if (admit_stream(c)) return;
  reply r = {0};
  if (epoch_stream_open(c->srv->f, req, len, &c->es, &r)) {
    finish_unary(c, &r);
    return;
  }
  grpc_op op;
  memset(&op, 0, sizeof op);
  op.op = GRPC_OP_RECV_CLOSE_ON_SERVER;
  op.data.recv_close_on_server.cancelled = &c->recv_cancelled;
  if (start(c, &op, 1, &c->t_close)) {
    metrics_done(c->srv->f->metrics, c->method, GRPC_STATUS_INTERNAL, elapsed_s(&c->t0));
    call_free(c);
    return;
  }
  stream_prefetch(c);
  stream_pump(c);
  stream_maybe_free(c);
}

/* ---------- Health.Watch ---------- */

/* c->mu held, no send in flight: sends the status if it changed, or ends the call on shutdown. */
static void watch_send_locked(call *c) {
  if (c->closed || c->broken || c->status_sent || c->in_flight) return;
  featured *f = c->srv->f;
  int st = health_status(f, c->service);
  if (st < 0) st = 3; /* SERVICE_UNKNOWN */
  if (st != c->last_status) {
    reply r = {0};
    if (health_pack_status(st, &r)) return;
    size_t len = r.len;
    grpc_byte_buffer *bb = reply_to_bb(&r);
    if (bb && send_message(c, bb) == 0) {
      c->last_status = st;
      metrics_message(f->metrics, c->method, len);
    }
    return;
  }
  if (featured_draining(f)) send_status(c, GRPC_STATUS_UNAVAILABLE, "taca-featured is shutting down");
}

static void watch_release(call *c) {
  featured_server *s = c->srv;
  pthread_mutex_lock(&s->watch_mu);
  if (c->in_list) {
    if (c->wprev) c->wprev->wnext = c->wnext;
    else s->watch_head = c->wnext;
    if (c->wnext) c->wnext->wprev = c->wprev;
    c->in_list = 0;
  }
  pthread_mutex_unlock(&s->watch_mu);
  int code = c->final_code;
  if (!c->status_sent) code = GRPC_STATUS_CANCELLED;
  metrics_done(s->f->metrics, c->method, code, elapsed_s(&c->t0));
  call_free(c);
}

static void watch_begin(call *c, const uint8_t *req, size_t len) {
  if (admit_stream(c)) return;
  reply r = {0};
  if (health_parse_request(req, len, c->service, sizeof c->service, &r)) {
    finish_unary(c, &r);
    return;
  }
  pthread_mutex_init(&c->mu, NULL);
  c->mu_init = 1;
  featured_server *s = c->srv;
  pthread_mutex_lock(&s->watch_mu);
  pthread_mutex_lock(&c->mu);
  c->wnext = s->watch_head;
  if (s->watch_head) s->watch_head->wprev = c;
  s->watch_head = c;
  c->in_list = 1;
  grpc_op op;
  memset(&op, 0, sizeof op);
  op.op = GRPC_OP_RECV_CLOSE_ON_SERVER;
  op.data.recv_close_on_server.cancelled = &c->recv_cancelled;
  if (start(c, &op, 1, &c->t_close) == 0) watch_send_locked(c);
  int release = c->pending == 0;
  pthread_mutex_unlock(&c->mu);
  pthread_mutex_unlock(&s->watch_mu);
  if (release) watch_release(c);
}

/* ---------- ServerReflectionInfo ---------- */

static int reflection_recv(call *c) {
  grpc_op op;
  memset(&op, 0, sizeof op);
  op.op = GRPC_OP_RECV_MESSAGE;
  op.data.recv_message.recv_message = &c->payload;
  return start(c, &op, 1, &c->t_recv);
}

static void reflection_begin(call *c) {
  if (admit_stream(c)) return;
  grpc_op op;
  memset(&op, 0, sizeof op);
  op.op = GRPC_OP_RECV_CLOSE_ON_SERVER;
  op.data.recv_close_on_server.cancelled = &c->recv_cancelled;
  if (start(c, &op, 1, &c->t_close) == 0) reflection_recv(c);
  stream_maybe_free(c);
}

/* One request received (or the client's half-close: payload NULL): answer it, or end the call. */
static void on_reflection_recv(call *c, int ok) {
  c->pending--;
  if (c->closed || c->broken || c->status_sent) {
  } else if (!ok || !c->payload) {
    send_status(c, GRPC_STATUS_OK, "");
  } else if (featured_draining(c->srv->f)) {
    send_status(c, GRPC_STATUS_UNAVAILABLE, "taca-featured is shutting down");
  } else {
    grpc_byte_buffer_reader rd;
    grpc_slice body = grpc_empty_slice();
    if (grpc_byte_buffer_reader_init(&rd, c->payload)) {
      body = grpc_byte_buffer_reader_readall(&rd);
      grpc_byte_buffer_reader_destroy(&rd);
    }
    metrics_request(c->srv->f->metrics, c->method, GRPC_SLICE_LENGTH(body));
    reply r = {0};
    reflection_handle(GRPC_SLICE_START_PTR(body), GRPC_SLICE_LENGTH(body), &r);
    grpc_slice_unref(body);
    if (r.code != GRPC_STATUS_OK) {
      send_status(c, r.code, r.msg);
    } else {
      size_t len = reply_bytes(&r);
      grpc_byte_buffer *bb = reply_to_bb(&r);
      if (!bb) send_status(c, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory sending the response");
      else if (send_message(c, bb) == 0) metrics_message(c->srv->f->metrics, c->method, len);
    }
    reply_clear(&r);
  }
  if (c->payload) grpc_byte_buffer_destroy(c->payload);
  c->payload = NULL;
  stream_maybe_free(c);
}

/* ---------- dispatch ---------- */

static int authorized(call *c) {
  const char *token = c->srv->f->cfg.token;
  if (!token) return 1;
  size_t tl = strlen(token);
  for (size_t i = 0; i < c->md.count; i++) {
    const grpc_metadata *m = &c->md.metadata[i];
    if (grpc_slice_str_cmp(m->key, "authorization")) continue;
    const uint8_t *v = GRPC_SLICE_START_PTR(m->value);
    size_t vl = GRPC_SLICE_LENGTH(m->value);
    if (vl != 7 + tl || memcmp(v, "Bearer ", 7)) continue;
    unsigned char diff = 0; /* constant time in the token */
    for (size_t j = 0; j < tl; j++) diff |= (unsigned char)(v[7 + j] ^ (unsigned char)token[j]);
    if (!diff) return 1;
  }
  return 0;
}

/* Runs the handler of a call whose request message has arrived (body = its bytes). */
static void dispatch(call *c, const uint8_t *req, size_t len) {
  featured *f = c->srv->f;
  reply r = {0};
  switch (c->method) {
    case FM_INFO: handle_info(f, req, len, &r); finish_unary(c, &r); break;
    case FM_GET_BATCH: handle_get_batch(f, req, len, &r); finish_unary(c, &r); break;
    case FM_LOOKUP: handle_lookup(f, req, len, &r); finish_unary(c, &r); break;
    case FM_SEARCH: handle_search(f, req, len, &r); finish_unary(c, &r); break;
    case FM_EMBED: handle_embed(f, req, len, &r); finish_unary(c, &r); break;
    case FM_SET_ALIAS: handle_set_alias(f, req, len, &r); finish_unary(c, &r); break;
    case FM_HEALTH_CHECK: handle_health_check(f, req, len, &r); finish_unary(c, &r); break;
    case FM_STREAM_EPOCH: stream_begin(c, req, len); break;
    case FM_HEALTH_WATCH: watch_begin(c, req, len); break;
    default: break;
  }
}

/* A call has arrived: its metadata only. Every check that needs no body runs first (unknown method,
 * draining, the token, the deadline), so that a refused call costs no read, copy or decode of its
 * request; then its one request message is received (on_request_recv). */
static void request_ready(call *c);

static void on_new(call *c, int ok) {
  featured_server *s = c->srv;
  if (!ok) { /* the server is shutting down: this request will never be matched */
    call_free(c);
    return;
  }
  c->arrived = 1;
  atomic_fetch_add(&s->active, 1);
  if (featured_state_now(s->f) < FS_CLOSING) arm(c->w, c->method);
  clock_gettime(CLOCK_MONOTONIC, &c->t0);
  featured *f = s->f;
  /* health and reflection (the public schema) stay open for tools */
  int needs_token = c->method != FM_HEALTH_CHECK && c->method != FM_HEALTH_WATCH && !FEATURED_METHOD_BIDI(c->method) &&
                    c->method != FM_UNKNOWN;
  reply r = {0};
  if (c->method == FM_UNKNOWN) {
    metrics_request(f->metrics, c->method, 0);
    char path[256];
    size_t pl = GRPC_SLICE_LENGTH(c->details.method);
    snprintf(path, sizeof path, "%.*s", (int)(pl > 200 ? 200 : pl), (const char *)GRPC_SLICE_START_PTR(c->details.method));
    reply_fail(&r, GRPC_STATUS_UNIMPLEMENTED, "method %s is not served here (taca.v1.FeatureCache, grpc.health.v1.Health, grpc.reflection.v1[alpha].ServerReflection)",
               path);
    finish_unary(c, &r);
  } else if (c->method != FM_HEALTH_CHECK && c->method != FM_HEALTH_WATCH && featured_draining(f)) {
    metrics_request(f->metrics, c->method, 0);
    reply_fail(&r, GRPC_STATUS_UNAVAILABLE, "taca-featured is shutting down: use another replica or retry later");
    finish_unary(c, &r);
  } else if (needs_token && !authorized(c)) {
    metrics_request(f->metrics, c->method, 0);
    reply_fail(&r, GRPC_STATUS_UNAUTHENTICATED, "this server needs 'authorization: Bearer <token>' metadata (--token)");
    finish_unary(c, &r);
  } else if (c->method != FM_HEALTH_WATCH && c->method != FM_STREAM_EPOCH && !FEATURED_METHOD_BIDI(c->method) &&
             gpr_time_cmp(c->deadline, gpr_now(c->deadline.clock_type)) < 0) {
    metrics_request(f->metrics, c->method, 0);
    reply_fail(&r, GRPC_STATUS_DEADLINE_EXCEEDED, "the deadline passed before the call was handled");
    finish_unary(c, &r);
  } else if (FEATURED_METHOD_BIDI(c->method)) {
    reflection_begin(c);
  } else if (!s->deferred_recv) {
    request_ready(c);
  } else {
    grpc_op op;
    memset(&op, 0, sizeof op);
    op.op = GRPC_OP_RECV_MESSAGE;
    op.data.recv_message.recv_message = &c->payload;
    if (start(c, &op, 1, &c->t_recv)) {
      metrics_request(f->metrics, c->method, 0);
      reply_fail(&r, GRPC_STATUS_INTERNAL, "cannot receive the request");
      finish_unary(c, &r);
    }
  }
}

/* The request message of a unary or server-streaming call has arrived (payload NULL: the stream
 * ended before one whole message, which is not an empty request): run the handler. */
static void request_ready(call *c) {
  featured *f = c->srv->f;
  if (!c->payload) {
    metrics_request(f->metrics, c->method, 0);
    reply r = {0};
    reply_fail(&r, GRPC_STATUS_INVALID_ARGUMENT,
               "no complete request message arrived (the stream ended inside or before it)");
    finish_unary(c, &r);
    return;
  }
  grpc_slice body = grpc_empty_slice();
  grpc_byte_buffer_reader rd;
  if (grpc_byte_buffer_reader_init(&rd, c->payload)) {
    body = grpc_byte_buffer_reader_readall(&rd);
    grpc_byte_buffer_reader_destroy(&rd);
  }
  grpc_byte_buffer_destroy(c->payload);
  c->payload = NULL;
  metrics_request(f->metrics, c->method, GRPC_SLICE_LENGTH(body));
  dispatch(c, GRPC_SLICE_START_PTR(body), GRPC_SLICE_LENGTH(body));
  grpc_slice_unref(body);
}

static void on_request_recv(call *c, int ok) {
  c->pending--;
  if (!ok && c->payload) {
    grpc_byte_buffer_destroy(c->payload);
    c->payload = NULL;
  }
  request_ready(c);
}

static void on_send(call *c, int ok) {
  if (c->method == FM_HEALTH_WATCH) {
    pthread_mutex_lock(&c->mu);
    c->pending--;
    c->in_flight = 0;
    if (c->inflight) grpc_byte_buffer_destroy(c->inflight);
    c->inflight = NULL;
    if (!ok) c->broken = 1;
    else watch_send_locked(c);
    int release = c->pending == 0;
    pthread_mutex_unlock(&c->mu);
    if (release) watch_release(c);
    return;
  }
  c->pending--;
  c->in_flight = 0;
  if (c->inflight) grpc_byte_buffer_destroy(c->inflight);
  c->inflight = NULL;
  if (!ok) c->broken = 1;
  else if (FEATURED_METHOD_BIDI(c->method)) {
    if (!c->status_sent && !c->closed) reflection_recv(c); /* the answer went out: the next question */
  } else stream_pump(c);
  stream_maybe_free(c);
}

static void on_close(call *c) {
  if (c->method == FM_HEALTH_WATCH) {
    pthread_mutex_lock(&c->mu);
    c->pending--;
    c->closed = 1;
    int release = c->pending == 0;
    pthread_mutex_unlock(&c->mu);
    if (release) watch_release(c);
    return;
  }
  c->pending--;
  c->closed = 1;
  stream_maybe_free(c);
}

static void *worker_main(void *arg) {
  worker *w = arg;
  for (;;) {
    grpc_event ev = grpc_completion_queue_next(w->cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
    if (ev.type == GRPC_QUEUE_SHUTDOWN) break;
    if (ev.type != GRPC_OP_COMPLETE) continue;
    tag *t = ev.tag;
    switch (t->kind) {
      case T_SHUTDOWN: w->srv->cb.done(w->srv->cb.arg); break;
      case T_NEW: on_new(t->c, ev.success); break;
      case T_UNARY: on_unary_done(t->c); break;
      case T_SEND: on_send(t->c, ev.success); break;
      case T_CLOSE: on_close(t->c); break;
      case T_RECV:
        if (FEATURED_METHOD_BIDI(t->c->method)) on_reflection_recv(t->c, ev.success);
        else on_request_recv(t->c, ev.success);
        break;
    }
  }
  return NULL;
}

/* ---------- lifecycle ---------- */

/* A PEM file as a C string (taca_read_file adds the NUL). */
static char *read_pem_file(const char *path, taca_error *err) {
  unsigned char *data;
  size_t len;
  if (taca_read_file(path, 1u << 20, &data, &len, err)) return NULL;
  return (char *)data;
}

static grpc_server_credentials *make_creds(const featured_config *cfg, taca_error *err) {
  if (!cfg->tls_cert) return grpc_insecure_server_credentials_create();
  char *cert = read_pem_file(cfg->tls_cert, err);
  if (!cert) return taca_error_prefix(err, "--tls-cert"), NULL;
  char *key = read_pem_file(cfg->tls_key, err);
  if (!key) {
    free(cert);
    return taca_error_prefix(err, "--tls-key"), NULL;
  }
  grpc_ssl_pem_key_cert_pair pair = {key, cert};
  grpc_server_credentials *c =
      grpc_ssl_server_credentials_create_ex(NULL, &pair, 1, GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE, NULL);
  memset(key, 0, strlen(key));
  free(key);
  free(cert);
  if (!c) taca_fail(err, "--tls-cert/--tls-key: grpc could not make TLS credentials from them");
  return c;
}

int server_start(featured *f, const server_callbacks *cb, featured_server **out, int *port, taca_error *err) {
  *out = NULL;
  featured_server *s = calloc(1, sizeof *s);
  if (!s) return taca_fail(err, "out of memory");
  s->f = f;
  s->cb = *cb;
  s->shutdown_tag = (tag){T_SHUTDOWN, NULL};
  s->deferred_recv = f->cfg.token != NULL;
  pthread_mutex_init(&s->watch_mu, NULL);
  int maxmsg = f->cfg.max_message > (size_t)INT32_MAX - 65536 ? INT32_MAX : (int)f->cfg.max_message + 65536;
  grpc_arg args[7];
  args[0].type = GRPC_ARG_INTEGER;
  args[0].key = (char *)GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH;
  args[0].value.integer = (int)f->cfg.max_request; /* refused from the length prefix, not buffered */
  args[1].type = GRPC_ARG_INTEGER;
  args[1].key = (char *)GRPC_ARG_MAX_SEND_MESSAGE_LENGTH;
  args[1].value.integer = maxmsg;
  /* gRPC sets SO_REUSEPORT by default: a second daemon on a busy port would silently share it. */
  args[2].type = GRPC_ARG_INTEGER;
  args[2].key = (char *)GRPC_ARG_ALLOW_REUSEPORT;
  args[2].value.integer = 0;
  /* Compressed requests are refused (a small gzip body can decode to gigabytes before any check). */
  args[3].type = GRPC_ARG_INTEGER;
  args[3].key = (char *)GRPC_COMPRESSION_CHANNEL_ENABLED_ALGORITHMS_BITSET;
  args[3].value.integer = 1; /* identity only */
  /* Connection hygiene: a socket that has not finished its HTTP/2 (and TLS) handshake within a few
   * seconds is closed (gRPC's default is 120 s: a thousand silent sockets would lock clients out);
   * a connection without calls for 5 minutes is closed too. */
  args[4].type = GRPC_ARG_INTEGER;
  args[4].key = (char *)GRPC_ARG_SERVER_HANDSHAKE_TIMEOUT_MS;
  args[4].value.integer = f->cfg.handshake_ms;
  args[5].type = GRPC_ARG_INTEGER;
  args[5].key = (char *)GRPC_ARG_MAX_CONNECTION_IDLE_MS;
  args[5].value.integer = 300000;
  args[6].type = GRPC_ARG_INTEGER;
  args[6].key = (char *)GRPC_ARG_MAX_CONCURRENT_STREAMS;
  args[6].value.integer = 256; /* calls per connection */
  grpc_channel_args ca = {7, args};
  s->server = grpc_server_create(&ca, NULL);
  s->nworkers = f->cfg.threads + 1; /* the last one serves health only: data-plane load cannot starve it */
  s->w = calloc((size_t)s->nworkers, sizeof *s->w);
  if (!s->server || !s->w) {
    server_destroy(s);
    return taca_fail(err, "cannot create the gRPC server");
  }
  for (int i = 0; i < s->nworkers; i++) {
    s->w[i].srv = s;
    s->w[i].cq = grpc_completion_queue_create_for_next(NULL);
    grpc_server_register_completion_queue(s->server, s->w[i].cq, NULL);
  }
  for (int m = 0; m < FM_COUNT; m++)
    if (FEATURED_METHOD_PATHS[m])
      s->handles[m] = grpc_server_register_method(s->server, FEATURED_METHOD_PATHS[m], NULL,
                                                  s->deferred_recv || FEATURED_METHOD_BIDI(m)
                                                      ? GRPC_SRM_PAYLOAD_NONE
                                                      : GRPC_SRM_PAYLOAD_READ_INITIAL_BYTE_BUFFER,
                                                  0);
  grpc_server_credentials *creds = make_creds(&f->cfg, err);
  if (!creds) {
    server_destroy(s);
    return -1;
  }
  *port = grpc_server_add_http2_port(s->server, f->cfg.listen, creds);
  grpc_server_credentials_release(creds);
  if (*port == 0) {
    server_destroy(s);
    taca_hostport hp;
    const char *why = taca_hostport_parse("--listen", f->cfg.listen, TACA_PORT_ZERO_OK, &hp, NULL) == 0
                          ? taca_hostport_bind_problem(&hp) : NULL;
    return taca_fail(err, "--listen %s: cannot listen there: %s", f->cfg.listen,
                     why ? why : "gRPC refused the address (not one this machine has?)");
  }
  grpc_server_start(s->server);
  /* Keep several requests armed per method and queue, so that bursts do not wait for re-arming. */
  for (int i = 0; i < s->nworkers; i++)
    for (int m = 0; m < FM_COUNT; m++) {
      int health = m == FM_HEALTH_CHECK || m == FM_HEALTH_WATCH, health_worker = i == s->nworkers - 1;
      if (health != health_worker) continue; /* a call stays on the queue it was requested on */
      int k = (m == FM_GET_BATCH || m == FM_LOOKUP) ? 8
              : (m == FM_UNKNOWN || m == FM_HEALTH_WATCH || FEATURED_METHOD_BIDI(m)) ? 2 : 4;
      for (int j = 0; j < k; j++) arm(&s->w[i], (featured_method)m);
    }
  for (int i = 0; i < s->nworkers; i++) {
    if (pthread_create(&s->w[i].thread, NULL, worker_main, &s->w[i])) {
      log_msg(LOG_ERROR, "cannot start completion-queue thread %d", i);
      continue;
    }
    s->w[i].started = 1;
  }
  if (!s->w[0].started) {
    server_begin_shutdown(s);
    server_cancel_all(s);
    return taca_fail(err, "cannot start the completion-queue threads");
  }
  *out = s;
  return 0;
}

void server_drain(featured_server *s) {
  server_health_changed(s);
  if (atomic_load(&s->active) == 0) s->cb.idle(s->cb.arg);
}

void server_begin_shutdown(featured_server *s) {
  if (featured_advance(s->f, FS_CLOSING) >= FS_CLOSING) return;
  grpc_server_shutdown_and_notify(s->server, s->w[0].cq, &s->shutdown_tag);
  server_health_changed(s);
}

void server_cancel_all(featured_server *s) {
  if (featured_state_now(s->f) < FS_CLOSING) server_begin_shutdown(s);
  grpc_server_cancel_all_calls(s->server);
}

void server_health_changed(featured_server *s) {
  pthread_mutex_lock(&s->watch_mu);
  for (call *c = s->watch_head; c; c = c->wnext) {
    pthread_mutex_lock(&c->mu);
    watch_send_locked(c);
    pthread_mutex_unlock(&c->mu);
  }
  pthread_mutex_unlock(&s->watch_mu);
}

void server_destroy(featured_server *s) {
  if (!s) return;
  for (int i = 0; s->w && i < s->nworkers; i++)
    if (s->w[i].cq) grpc_completion_queue_shutdown(s->w[i].cq);
  for (int i = 0; s->w && i < s->nworkers; i++)
    if (s->w[i].started) pthread_join(s->w[i].thread, NULL);
  if (s->server) grpc_server_destroy(s->server);
  for (int i = 0; s->w && i < s->nworkers; i++)
    if (s->w[i].cq) grpc_completion_queue_destroy(s->w[i].cq);
  pthread_mutex_destroy(&s->watch_mu);
  free(s->w);
  free(s);
}
