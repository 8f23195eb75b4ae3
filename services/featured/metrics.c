/* metrics.c: atomic per-method counters and latency histograms, rendered as Prometheus text. */
#include "services/featured/metrics.h"

#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* Upper bounds (seconds) of the latency buckets, from 10 us (most unary calls on loopback finish
 * under 100 us, so their quantiles need buckets there); a final +Inf bucket follows. */
static const double BUCKET_LE[METRICS_BUCKETS] = {0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001,
                                                  0.0025,  0.005,    0.01,    0.025,  0.05,    0.1,    0.25,
                                                  0.5,     1,        2.5,     5,      10};
static const char *const BUCKET_TEXT[METRICS_BUCKETS] = {
    "0.00001", "0.000025", "0.00005", "0.0001", "0.00025", "0.0005", "0.001", "0.0025", "0.005", "0.01",
    "0.025",   "0.05",     "0.1",     "0.25",   "0.5",     "1",      "2.5",   "5",      "10"};

static const char *const CODE_NAMES[METRICS_CODES] = {
    "OK",        "CANCELLED",          "UNKNOWN",           "INVALID_ARGUMENT", "DEADLINE_EXCEEDED", "NOT_FOUND",
    "ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION", "ABORTED", "OUT_OF_RANGE",
    "UNIMPLEMENTED", "INTERNAL",       "UNAVAILABLE",       "DATA_LOSS",        "UNAUTHENTICATED",
};

const char *grpc_code_name(int code) { return code >= 0 && code < METRICS_CODES ? CODE_NAMES[code] : "UNKNOWN"; }

typedef struct method_metrics {
  atomic_uint_fast64_t requests, request_bytes, response_bytes, response_messages;
  atomic_uint_fast64_t codes[METRICS_CODES];
  atomic_uint_fast64_t buckets[METRICS_BUCKETS + 1];
  atomic_uint_fast64_t sum_ns;
} method_metrics;

struct featured_metrics {
  method_metrics m[FM_COUNT];
  struct timespec start;
};

featured_metrics *metrics_create(void) {
  featured_metrics *m = calloc(1, sizeof *m);
  if (m) clock_gettime(CLOCK_MONOTONIC, &m->start);
  return m;
}

void metrics_free(featured_metrics *m) { free(m); }

void metrics_request(featured_metrics *m, featured_method method, uint64_t request_bytes) {
  atomic_fetch_add_explicit(&m->m[method].requests, 1, memory_order_relaxed);
  atomic_fetch_add_explicit(&m->m[method].request_bytes, request_bytes, memory_order_relaxed);
}

void metrics_message(featured_metrics *m, featured_method method, uint64_t bytes) {
  atomic_fetch_add_explicit(&m->m[method].response_messages, 1, memory_order_relaxed);
  atomic_fetch_add_explicit(&m->m[method].response_bytes, bytes, memory_order_relaxed);
}

void metrics_done(featured_metrics *m, featured_method method, int code, double seconds) {
  method_metrics *mm = &m->m[method];
  if (code < 0 || code >= METRICS_CODES) code = 2;
  atomic_fetch_add_explicit(&mm->codes[code], 1, memory_order_relaxed);
  int b = 0;
  while (b < METRICS_BUCKETS && seconds > BUCKET_LE[b]) b++;
  atomic_fetch_add_explicit(&mm->buckets[b], 1, memory_order_relaxed);
  if (seconds < 0) seconds = 0;
  atomic_fetch_add_explicit(&mm->sum_ns, (uint64_t)(seconds * 1e9), memory_order_relaxed);
}

uint64_t metrics_requests(featured_metrics *m, featured_method method) {
  return atomic_load_explicit(&m->m[method].requests, memory_order_relaxed);
}

uint64_t metrics_errors(featured_metrics *m, featured_method method) {
  uint64_t e = 0;
  for (int c = 1; c < METRICS_CODES; c++) e += atomic_load_explicit(&m->m[method].codes[c], memory_order_relaxed);
  return e;
}

/* A growing text buffer. */
typedef struct sbuf {
  char *p;
  size_t len, cap;
  int oom;
} sbuf;

__attribute__((format(printf, 2, 3))) static void put(sbuf *b, const char *fmt, ...) {
  if (b->oom) return;
  for (;;) {
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(b->p + b->len, b->cap - b->len, fmt, ap);
    va_end(ap);
    if (n < 0) {
      b->oom = 1;
      return;
    }
    if ((size_t)n < b->cap - b->len) {
      b->len += (size_t)n;
      return;
    }
    size_t ncap = (b->cap + (size_t)n + 1) * 2;
    char *np = realloc(b->p, ncap);
    if (!np) {
      b->oom = 1;
      return;
    }
    b->p = np;
    b->cap = ncap;
  }
}

#define LOAD(x) ((unsigned long long)atomic_load_explicit(&(x), memory_order_relaxed))

char *metrics_render(featured_metrics *m, const metrics_gauges *g, size_t *len) {
  sbuf b = {malloc(16384), 0, 16384, 0};
  if (!b.p) return NULL;
  b.p[0] = '\0';
  static const struct {
    const char *name, *help;
    size_t off;
  } COUNTERS[] = {
      {"taca_featured_requests_total", "Calls received.", offsetof(method_metrics, requests)},
      {"taca_featured_request_bytes_total", "Request message bytes received.", offsetof(method_metrics, request_bytes)},
      {"taca_featured_response_bytes_total", "Response message bytes sent.", offsetof(method_metrics, response_bytes)},
      {"taca_featured_response_messages_total", "Response messages sent (stream batches included).",
       offsetof(method_metrics, response_messages)},
  };
  for (size_t c = 0; c < sizeof COUNTERS / sizeof COUNTERS[0]; c++) {
    put(&b, "# HELP %s %s\n# TYPE %s counter\n", COUNTERS[c].name, COUNTERS[c].help, COUNTERS[c].name);
    for (int i = 0; i < FM_COUNT; i++) {
      atomic_uint_fast64_t *v = (atomic_uint_fast64_t *)((char *)&m->m[i] + COUNTERS[c].off);
      put(&b, "%s{method=\"%s\"} %llu\n", COUNTERS[c].name, FEATURED_METHOD_NAMES[i], LOAD(*v));
    }
  }
  put(&b, "# HELP taca_featured_handled_total Calls finished, by gRPC status code.\n"
          "# TYPE taca_featured_handled_total counter\n");
  for (int i = 0; i < FM_COUNT; i++)
    for (int c = 0; c < METRICS_CODES; c++) {
      unsigned long long v = LOAD(m->m[i].codes[c]); /* every series from the start, 0 included: rate() */
      put(&b, "taca_featured_handled_total{method=\"%s\",code=\"%s\"} %llu\n", FEATURED_METHOD_NAMES[i],
            CODE_NAMES[c], v);
    }
  put(&b, "# HELP taca_featured_errors_total Calls finished with a status other than OK.\n"
          "# TYPE taca_featured_errors_total counter\n");
  for (int i = 0; i < FM_COUNT; i++)
    put(&b, "taca_featured_errors_total{method=\"%s\"} %llu\n", FEATURED_METHOD_NAMES[i],
        (unsigned long long)metrics_errors(m, (featured_method)i));
  put(&b, "# HELP taca_featured_latency_seconds Time from a call's arrival to its final status.\n"
          "# TYPE taca_featured_latency_seconds histogram\n");
  for (int i = 0; i < FM_COUNT; i++) {
    unsigned long long cum = 0;
    for (int k = 0; k <= METRICS_BUCKETS; k++) {
      cum += LOAD(m->m[i].buckets[k]);
      put(&b, "taca_featured_latency_seconds_bucket{method=\"%s\",le=\"%s\"} %llu\n", FEATURED_METHOD_NAMES[i],
          k < METRICS_BUCKETS ? BUCKET_TEXT[k] : "+Inf", cum);
    }
    put(&b, "taca_featured_latency_seconds_sum{method=\"%s\"} %.9f\n", FEATURED_METHOD_NAMES[i],
        (double)LOAD(m->m[i].sum_ns) * 1e-9);
    put(&b, "taca_featured_latency_seconds_count{method=\"%s\"} %llu\n", FEATURED_METHOD_NAMES[i], cum);
  }
  struct timespec now;
  clock_gettime(CLOCK_MONOTONIC, &now);
  double up = (double)(now.tv_sec - m->start.tv_sec) + (double)(now.tv_nsec - m->start.tv_nsec) * 1e-9;
  put(&b,
      "# HELP taca_featured_active_streams StreamEpoch calls in progress (Health.Watch has a budget of its own).\n"
      "# TYPE taca_featured_active_streams gauge\ntaca_featured_active_streams %d\n"
      "# HELP taca_featured_serving 1 while serving, 0 once shutting down.\n"
      "# TYPE taca_featured_serving gauge\ntaca_featured_serving %d\n"
      "# HELP taca_featured_samples Samples stored (at the last refresh).\n"
      "# TYPE taca_featured_samples gauge\ntaca_featured_samples %llu\n"
      "# HELP taca_featured_index_begin First index of the served range.\n"
      "# TYPE taca_featured_index_begin gauge\ntaca_featured_index_begin %llu\n"
      "# HELP taca_featured_index_end End (exclusive) of the served range.\n"
      "# TYPE taca_featured_index_end gauge\ntaca_featured_index_end %llu\n"
      "# HELP taca_featured_uptime_seconds Seconds since start.\n"
      "# TYPE taca_featured_uptime_seconds gauge\ntaca_featured_uptime_seconds %.3f\n",
      g->active_streams, g->serving, (unsigned long long)g->samples, (unsigned long long)g->index_begin,
      (unsigned long long)g->index_end, up);
  if (b.oom) {
    free(b.p);
    return NULL;
  }
  *len = b.len;
  return b.p;
}
