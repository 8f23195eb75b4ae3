/* client_internal.h: structures shared by the files of taca_client (not a public API). */
#ifndef TACA_CLIENT_INTERNAL_H
#define TACA_CLIENT_INTERNAL_H

#include <grpc/grpc.h>
#include <grpc/status.h>
#include <stdatomic.h>

#include "client/taca_client.h"
#include "taca/v1/feature_cache.pb-c.h"

typedef enum client_method { CM_INFO, CM_GET_BATCH, CM_STREAM_EPOCH, CM_LOOKUP, CM_SEARCH, CM_HEALTH, CM_EMBED, CM_SET_ALIAS, CM_COUNT } client_method;
extern const char *const CLIENT_METHOD_PATHS[CM_COUNT];
extern const char *const CLIENT_METHOD_NAMES[CM_COUNT];

typedef struct conn {
  char addr[256];
  grpc_channel *ch;
  void *handles[CM_COUNT];
  uint64_t begin, end, samples;
  int max_batch, max_k;
} conn;

/* Replicas serving one range. */
typedef struct group {
  uint64_t begin, end, samples;
  int n, members[TACA_CLIENT_MAX_SERVERS];
  atomic_int next; /* replica to try first (the last one that worked) */
  int max_batch, max_k;
} group;

struct taca_client {
  taca_client_options o;
  char auth[600];   /* "Bearer TOKEN", or "" */
  int n_conns;
  conn conns[TACA_CLIENT_MAX_SERVERS];
  int n_groups;     /* sorted by begin, disjoint */
  group groups[TACA_CLIENT_MAX_SERVERS];
  taca_dataset_info info;
};

typedef struct rpc_status {
  grpc_status_code code;
  char details[512];
} rpc_status;

/* ---- rpc.c: one unary call / one server stream on a channel ---- */
/* 0 when the call completed (st says how; on OK *resp holds the response, unref it), -1 (st set)
 * when it could not be started. */
int rpc_unary(const taca_client *c, conn *cn, client_method m, const uint8_t *req, size_t len, grpc_slice *resp,
              rpc_status *st);

typedef struct rpc_stream rpc_stream;
/* Sends the request and arms the first receive. timeout_ms 0 = no deadline. */
int rpc_stream_open(const taca_client *c, conn *cn, client_method m, const uint8_t *req, size_t len, int timeout_ms,
                    rpc_stream **out, rpc_status *st);
/* 1: a message in *msg (unref it); 0: the stream ended with status *st (OK or not). */
int rpc_stream_recv(rpc_stream *s, grpc_slice *msg, rpc_status *st);
void rpc_stream_close(rpc_stream *s);

/* ---- client.c: retries ---- */
/* Unary call to group g with replica failover and backoff on UNAVAILABLE; -1 with err on failure. */
int client_call_group(taca_client *c, group *g, client_method m, const uint8_t *req, size_t len, grpc_slice *resp,
                      taca_error *err);
/* Sleeps the next backoff step (after telling o.on_retry about the failed call cn/m/st, attempt
 * number `attempt`); returns -1 when the retry budget (from t0) would be exceeded. */
int client_backoff(const taca_client *c, double t0, int *backoff_ms, const conn *cn, client_method m,
                   const rpc_status *st, int attempt);
double client_now(void);
void client_sleep_ms(int ms);
/* Fails with "ADDR: Method: CODE: details". */
int client_fail_status(taca_error *err, const conn *cn, client_method m, const rpc_status *st);

/* ---- batch_convert.c ---- */
/* Builds the request Fields message (into caller storage). */
void fields_to_proto(const taca_fields *f, Taca__V1__Fields *pf, Taca__V1__EmbeddingRef *refs,
                     Taca__V1__EmbeddingRef **refp);
/* Checks the field selection against the data set info (models, dims, pixels). */
int fields_check(const taca_client *c, const taca_fields *f, taca_error *err);
/* Allocates out for n rows of the selection f (arrays zeroed). */
int batch_alloc(const taca_client *c, const taca_fields *f, size_t n, taca_batch *out, taca_error *err);
/* A received Batch. Parsed from the raw bytes, its pixels stay in `raw` (no copy) and the rest is
 * unpacked by protobuf-c into b; wrapped from an unpacked message, the pixels are those of b. */
typedef struct rx_batch {
  Taca__V1__Batch *b;
  ProtobufCMessage *owner; /* what to free (b itself, or a message containing it) */
  grpc_slice raw;
  int has_raw;
  size_t n_pix;
  const uint8_t **pix;
  size_t *pix_len;
} rx_batch;
/* Takes s. -1 when s is not a valid Batch. */
int rx_batch_parse(grpc_slice s, rx_batch *rx);
int rx_batch_wrap(Taca__V1__Batch *b, ProtobufCMessage *owner, rx_batch *rx);
void rx_batch_free(rx_batch *rx);
/* Copies the rows of rx (which must have `rows` rows) into out at positions pos[0..rows) (NULL =
 * 0..rows-1); pixels and keys are referenced. Takes rx (freed with out, or at once on failure).
 * Fails naming `who` if the batch does not match what was asked for. */
int batch_scatter(taca_batch *out, const taca_fields *f, rx_batch *rx, size_t rows, const size_t *pos,
                  const char *who, taca_error *err);

#endif
