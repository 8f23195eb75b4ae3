/* server.h: the gRPC side of taca-featured: the grpc_server, its completion-queue threads (one queue
 * per thread), and a state machine per call (unary, StreamEpoch, Health.Watch, unknown methods).
 *
 * Shutdown, driven from the libuv main thread, in two phases:
 *   1. drain (after featured_advance(f, FS_DRAINING) and server_drain): new FeatureCache calls are
 *      answered UNAVAILABLE, health is NOT_SERVING (Watch streams are told, then ended UNAVAILABLE),
 *      each StreamEpoch ends at its next batch boundary with UNAVAILABLE naming the batch to resume
 *      from, unary calls finish. Connections stay open meanwhile, so that clients receive those
 *      statuses behind the data they have buffered. When no call is left, cb.idle is called.
 *   2. server_begin_shutdown: gRPC stops accepting and closes the connections; when that is done,
 *      cb.done is called.
 * Both callbacks run on a completion-queue thread (use uv_async_send there). server_cancel_all
 * forces the end (grace timer, second signal). server_destroy joins the threads. */
#ifndef TACA_FEATURED_SERVER_H
#define TACA_FEATURED_SERVER_H

#include "base/error.h"
#include "services/featured/featured.h"

typedef struct featured_server featured_server;

typedef struct server_callbacks {
  void (*idle)(void *arg); /* draining and no call left */
  void (*done)(void *arg); /* gRPC shutdown complete */
  void *arg;
} server_callbacks;

/* Binds cfg.listen, starts the threads and returns the bound port in *port. */
int server_start(featured *f, const server_callbacks *cb, featured_server **out, int *port, taca_error *err);
/* Phase 1 (call after featured_advance(f, FS_DRAINING)): tells Watch streams; cb.idle follows when no call
 * is left (at once if there is none). */
void server_drain(featured_server *s);
/* Phase 2. */
void server_begin_shutdown(featured_server *s);
void server_cancel_all(featured_server *s);
/* Tells Health.Watch streams the serving status may have changed. */
void server_health_changed(featured_server *s);
/* After `done` has been called: shuts the queues down, joins the threads, frees everything. */
void server_destroy(featured_server *s);

#endif
