/* handlers.h: the request handlers of taca-featured as plain functions: request bytes in, a reply
 * (status + packed response) out. server.c calls them from the completion-queue threads; the
 * fuzzer (tests/fuzz/fuzz_featured.c) calls them directly. Any thread may call them concurrently. */
#ifndef TACA_FEATURED_HANDLERS_H
#define TACA_FEATURED_HANDLERS_H

#include <stddef.h>
#include <stdint.h>

#include "services/featured/featured.h"
#include "services/featured/reply.h"

void handle_info(featured *f, const uint8_t *req, size_t len, reply *r);
void handle_get_batch(featured *f, const uint8_t *req, size_t len, reply *r);
void handle_lookup(featured *f, const uint8_t *req, size_t len, reply *r);
void handle_search(featured *f, const uint8_t *req, size_t len, reply *r);
/* Embed: new images or captions through a loaded encoder; per-item errors in the response. */
void handle_embed(featured *f, const uint8_t *req, size_t len, reply *r);
/* SetAlias (admin): repoints an alias (featured_set_alias). */
void handle_set_alias(featured *f, const uint8_t *req, size_t len, reply *r);

/* grpc.health.v1: the serving status of a service name ("" and "taca.v1.FeatureCache" are known):
 * 1 SERVING, 2 NOT_SERVING (shutting down), -1 unknown. */
int health_status(featured *f, const char *service);
/* Check: NOT_FOUND for an unknown service. */
void handle_health_check(featured *f, const uint8_t *req, size_t len, reply *r);
/* Decodes a HealthCheckRequest's service name into buf; -1 (INVALID_ARGUMENT in r) if malformed. */
int health_parse_request(const uint8_t *req, size_t len, char *buf, size_t cap, reply *r);
/* Packs a HealthCheckResponse{status} into r. */
int health_pack_status(int status, reply *r);

/* StreamEpoch: open checks the request and takes the epoch permutation; next packs the following
 * batch into r (returns 1), or returns 0 when the share is done, -1 on error (status in r). */
typedef struct epoch_stream epoch_stream;
int epoch_stream_open(featured *f, const uint8_t *req, size_t len, epoch_stream **out, reply *r);
int epoch_stream_next(epoch_stream *s, reply *r);
uint64_t epoch_stream_position(const epoch_stream *s); /* next batch number */
uint64_t epoch_stream_count(const epoch_stream *s);    /* batches in the share */
void epoch_stream_close(epoch_stream *s);

#endif
