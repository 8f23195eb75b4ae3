/* metrics.h: the daemon's counters (lock-free atomics, updated by the completion-queue threads) and
 * their rendering as Prometheus text exposition format 0.0.4 (served on /metrics by http.c).
 *
 * Exposed series (label method = Info, GetBatch, StreamEpoch, Lookup, Search, Health.Check,
 * Health.Watch, Unknown):
 *   taca_featured_requests_total{method}            calls received
 *   taca_featured_handled_total{method,code}        calls finished, by gRPC status code name
 *   taca_featured_errors_total{method}              calls finished with a status other than OK
 *   taca_featured_request_bytes_total{method}       request message bytes
 *   taca_featured_response_bytes_total{method}     response message bytes
 *   taca_featured_response_messages_total{method}   response messages (stream batches)
 *   taca_featured_latency_seconds{method} (histogram) arrival to final status
 *   taca_featured_active_streams, taca_featured_serving, taca_featured_samples,
 *   taca_featured_index_begin, taca_featured_index_end, taca_featured_uptime_seconds */
#ifndef TACA_FEATURED_METRICS_H
#define TACA_FEATURED_METRICS_H

#include <stddef.h>
#include <stdint.h>

#include "services/featured/methods.h"

#define METRICS_BUCKETS 19
#define METRICS_CODES 17

typedef struct featured_metrics featured_metrics;

featured_metrics *metrics_create(void);
void metrics_free(featured_metrics *m);

void metrics_request(featured_metrics *m, featured_method method, uint64_t request_bytes);
void metrics_message(featured_metrics *m, featured_method method, uint64_t bytes);
/* The call ended with status code after seconds. */
void metrics_done(featured_metrics *m, featured_method method, int code, double seconds);

typedef struct metrics_gauges {
  int active_streams;
  int serving;
  uint64_t samples, index_begin, index_end;
} metrics_gauges;

/* Renders every series into a malloc'd NUL-terminated string (*len bytes); NULL when out of memory. */
char *metrics_render(featured_metrics *m, const metrics_gauges *g, size_t *len);

/* Totals for tests and logs. */
uint64_t metrics_requests(featured_metrics *m, featured_method method);
uint64_t metrics_errors(featured_metrics *m, featured_method method);

const char *grpc_code_name(int code); /* "OK", "INVALID_ARGUMENT", ... */

#endif
