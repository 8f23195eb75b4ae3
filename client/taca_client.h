/* taca_client.h: the C client of taca-featured, for trainers and tools.
 *
 * A client connects to one or several servers ("host:port,host:port"). It calls Info on each to
 * learn the index range it serves: servers with the same range are replicas (tried in turn), servers
 * with disjoint ranges are shards of one data set (requests are routed by index). Overlapping but
 * different ranges, or shards that disagree on models or pixel format, are refused at connect.
 *
 * Every call has a deadline (timeout_ms per attempt). A call that fails with UNAVAILABLE (server
 * down, restarting, shutting down) is retried on the next replica with exponential backoff and
 * jitter, within retry_budget_ms for the whole operation. Other errors are returned at once, with a
 * reason of the form "ADDR: Method: STATUS_CODE: server's message".
 *
 * Thread safety: one taca_client may be used from several threads at once; a taca_epoch belongs to
 * the thread that reads it. Functions return 0 on success, -1 with a reason in err.
 *
 *   taca_client *c;
 *   taca_client_connect(&c, "10.0.0.1:50051,10.0.0.2:50051", NULL, &err);
 *   taca_fields f = {.tokens = 1, .n_embeddings = 1, .embeddings = {{"old", TACA_IMAGE}}};
 *   taca_epoch_options eo = {.seed = 1, .epoch = 0, .rank = r, .world_size = W, .batch_size = 256, .fields = f};
 *   taca_epoch *e;
 *   taca_epoch_open(c, &eo, &e, &err);
 *   taca_batch b;
 *   while (taca_epoch_next(e, &b, &err) == 1) { ...; taca_batch_free(&b); }
 *   taca_epoch_close(e);
 *   taca_client_close(c); */
#ifndef TACA_CLIENT_H
#define TACA_CLIENT_H

#include <stddef.h>
#include <stdint.h>

#include "base/dtype.h"
#include "base/error.h"

#define TACA_CLIENT_MAX_SERVERS 64
#define TACA_CLIENT_MAX_MODELS 32
#define TACA_CLIENT_MAX_EMB 16
#define TACA_CLIENT_NAME_MAX 64
#define TACA_CLIENT_CONTEXT_LEN 77

typedef struct taca_client taca_client;

typedef struct taca_client_options {
  int timeout_ms;              /* deadline of each attempt; 0 = 30000 */
  int retry_budget_ms;         /* time for retrying UNAVAILABLE per operation; 0 = 20000, < 0 = never retry */
  int backoff_initial_ms;      /* first wait; 0 = 50 (doubles, +-20% jitter) */
  int backoff_max_ms;          /* longest wait; 0 = 2000 */
  const char *token;           /* sent as "authorization: Bearer TOKEN"; NULL = none */
  const char *tls_ca;          /* PEM file of trusted roots: connect with TLS; NULL = plaintext */
  const char *tls_server_name; /* host name to verify in the certificate (default: the address's host) */
  size_t max_message;          /* largest response accepted; 0 = 256 MiB */
  int health_only;             /* connect without Info (no token needed): only taca_client_health works */
  /* Called before each backoff wait on UNAVAILABLE (NULL = silent): the server, the error
   * ("Method: CODE: details"), the wait and the attempts so far; e.g. one log line per step. */
  void (*on_retry)(void *arg, const char *server, const char *error, int wait_ms, int attempt);
  void *retry_arg;
} taca_client_options;

typedef enum taca_modality { TACA_IMAGE = 0, TACA_TEXT = 1 } taca_modality;
typedef enum taca_metric { TACA_METRIC_IP = 0, TACA_METRIC_COSINE = 1 } taca_metric;

typedef struct taca_model_desc {
  char name[TACA_CLIENT_NAME_MAX], arch[TACA_CLIENT_NAME_MAX];
  int image_dim, text_dim;     /* 0 when that modality is not stored */
  taca_dtype dtype;            /* TACA_DT_F16 or TACA_DT_F32 as stored */
  float logit_scale;           /* log form, as in the checkpoint */
  int image_size;
  uint64_t image_count, text_count; /* summed over shards */
  int caption_search;          /* every shard can search this model by caption */
  int embed_images;            /* every shard has its image encoder (Embed, Search by image) */
  char kind[16];               /* "clip", "adapted" or "" (not recorded) */
  char space[48];              /* the embedding space: two models' vectors compare iff equal */
} taca_model_desc;

typedef struct taca_alias_desc {
  char name[TACA_CLIENT_NAME_MAX], target[TACA_CLIENT_NAME_MAX];
  uint64_t version;
} taca_alias_desc;

typedef struct taca_server_desc {
  char address[256];
  uint64_t begin, end, samples;
  int shard, shard_count;
  char version[64];
} taca_server_desc;

typedef struct taca_dataset_info {
  uint64_t samples;            /* summed over shards (replicas counted once) */
  uint64_t begin, end;         /* lowest begin and highest end over shards */
  int n_servers;
  taca_server_desc servers[TACA_CLIENT_MAX_SERVERS];
  int n_shards;                /* distinct ranges */
  int n_models;
  taca_model_desc models[TACA_CLIENT_MAX_MODELS];
  int has_pixels, pixel_size, pixel_channels, pixel_quality;
  char pixel_codec[8];
  int context_length;
  int max_batch, max_k;        /* smallest over servers (the client splits bigger GetBatch calls) */
  int n_aliases;               /* the first server's alias table at connect (names resolve on the server */
  taca_alias_desc aliases[TACA_CLIENT_MAX_MODELS]; /* at each call: a flip is seen without reconnecting) */
} taca_dataset_info;

/* What to fetch besides the indices. */
typedef struct taca_fields {
  int pixels, tokens, labels, keys;
  int n_embeddings;
  struct {
    const char *model;
    taca_modality modality;
  } embeddings[TACA_CLIENT_MAX_EMB];
  int embeddings_as_f32;       /* convert to F32 on the server (default: the stored dtype) */
  int captions, metadata;      /* the samples' caption text and source metadata (JSON object text) */
} taca_fields;

typedef struct taca_embeddings {
  char model[TACA_CLIENT_NAME_MAX];
  taca_modality modality;
  taca_dtype dtype;
  int dim;
  void *data;                  /* n x dim elements of dtype, row-major */
  uint8_t *present;            /* n flags: 0 where the row is not stored (its data is zero) */
} taca_embeddings;

typedef struct taca_batch {
  size_t n;
  uint64_t *indices;
  int32_t *tokens;             /* n x 77, or NULL */
  int32_t *labels;             /* n (-1 = none), or NULL */
  char **keys;                 /* n strings, or NULL */
  const uint8_t **pixels;      /* n pointers to the stored bytes (raw CHW uint8 or JPEG), or NULL */
  size_t *pixel_sizes;         /* n byte counts (0 where none is stored) */
  int n_embeddings;
  taca_embeddings embeddings[TACA_CLIENT_MAX_EMB]; /* in the order of taca_fields.embeddings */
  char **captions;             /* n strings ("" where none is stored), or NULL */
  char **metadata;             /* n JSON object texts ("" where none is stored), or NULL */
  uint64_t sequence, batch_count; /* StreamEpoch: this batch's number and the total (all shards) */
  struct taca_batch_mem *mem_; /* owns everything above */
} taca_batch;

void taca_batch_free(taca_batch *b);

int taca_client_connect(taca_client **out, const char *servers, const taca_client_options *opt, taca_error *err);
void taca_client_close(taca_client *c);
const taca_dataset_info *taca_client_info(const taca_client *c);
/* Optional, once per process (trainers): tunes glibc malloc so that large received messages reuse
 * heap memory instead of being mmap'ed, unmapped and page-faulted again for every batch (a process-
 * wide setting, hence not done implicitly). */
void taca_client_tune_malloc(void);

/* Index of a model in info->models, or -1; an alias gives its target's index as of connect (calls
 * still send the alias itself, which each server resolves per call). */
int taca_client_find_model(const taca_client *c, const char *name);

/* The samples at indices[0..n) in that order (any shard; split into several calls as needed). */
int taca_client_get_batch(taca_client *c, const uint64_t *indices, size_t n, const taca_fields *f, taca_batch *out,
                          taca_error *err);

/* The samples with these keys, in request order; keys are always returned. Unknown keys are an
 * error, or skipped with allow_missing (out->n < n then). */
int taca_client_lookup(taca_client *c, const char *const *keys, size_t n, const taca_fields *f, int allow_missing,
                       taca_batch *out, taca_error *err);

typedef struct taca_search_result {
  int nq, k;
  int *count;                  /* nq: hits of each query (<= k) */
  uint64_t *indices;           /* nq x k: by score descending, ties by lower index */
  float *scores;               /* nq x k */
  char **keys;                 /* nq x k when asked for, else NULL */
} taca_search_result;
void taca_search_result_free(taca_search_result *r);

/* Exact top-k over every shard: by nq query vectors (queries, nq x dim floats) or by nq captions
 * (queries NULL; the servers encode them with the model's text tower). */
int taca_client_search(taca_client *c, const char *model, taca_modality modality, const float *queries,
                       const char *const *captions, int nq, int k, taca_metric metric, int with_keys,
                       taca_search_result *out, taca_error *err);

/* The same through each shard's approximate index (taca index): ann set, nprobe and refine 0 = the
 * index's defaults (refine: candidates per hit rescored exactly). Every shard must have a fresh index
 * of the model (FAILED_PRECONDITION otherwise). */
typedef struct taca_search_opts {
  int ann;
  int nprobe;
  int refine;
  const char *query_model;     /* the model the queries come from (its space must be the gallery's); NULL = model */
  /* Search by images (encoded JPEG/PNG/WebP bytes) instead of vectors or captions: queries and
   * captions NULL, nq images embedded by query_model's encoder on the servers. */
  const uint8_t *const *images;
  const size_t *image_sizes;
  /* A mixed gallery: more models of the space, in order of preference after `model` (exact only). */
  int n_fallback;
  const char *const *fallback;
} taca_search_opts;
int taca_client_search_opts(taca_client *c, const char *model, taca_modality modality, const float *queries,
                            const char *const *captions, int nq, int k, taca_metric metric, int with_keys,
                            const taca_search_opts *opts, taca_search_result *out, taca_error *err);

/* Embed (the first shard's servers, replicas in turn): n encoded images (images/image_sizes) or n
 * captions through the server's encoder of `model` (an alias resolves there). out: n x dim F32 in
 * request order; ok[i] = 0 (and errors[i] says why) where an item failed. Free with
 * taca_embed_result_free. */
typedef struct taca_embed_result {
  int n, dim;
  float *data;
  uint8_t *ok;
  char **errors;               /* n strings ("" where ok) */
  char model[TACA_CLIENT_NAME_MAX];  /* the stored model used */
  char space[48];
} taca_embed_result;
void taca_embed_result_free(taca_embed_result *r);
int taca_client_embed(taca_client *c, const char *model, const uint8_t *const *images, const size_t *image_sizes,
                      const char *const *captions, int n, int normalize, taca_embed_result *out, taca_error *err);

/* SetAlias on every server of the client, in the order given (a flip of replicas or shards):
 * target "" removes the alias. Stops at the first failure, which names the server; servers before it
 * have flipped (*flipped says how many). previous (may be NULL) gets the first server's old target. */
int taca_client_set_alias(taca_client *c, const char *name, const char *target, int allow_space_change,
                          char previous[TACA_CLIENT_NAME_MAX], int *flipped, taca_error *err);

/* Health.Check of every server: 0 when all are SERVING. */
int taca_client_health(taca_client *c, taca_error *err);

/* ---- StreamEpoch ----
 * Rank `rank` of `world_size` gets its share of the (seed, epoch) permutation of every shard (each
 * shard permutes its own range; see services/featured/epoch.h), batches of the shards interleaved in
 * proportion to their sizes. A stream cut by UNAVAILABLE (server restart, shutdown) is resumed at the
 * next batch on a replica or the restarted server, within the retry budget. */
typedef struct taca_epoch_options {
  uint64_t seed, epoch;
  uint32_t rank, world_size, batch_size;
  int drop_last;
  taca_fields fields;
  int timeout_ms;              /* deadline of each stream; 0 = none */
  uint64_t start_batch;        /* resume mid-epoch: the first batch delivered is this rank's
                                  start_batch-th of the epoch (earlier ones are never streamed) */
} taca_epoch_options;

typedef struct taca_epoch taca_epoch;
int taca_epoch_open(taca_client *c, const taca_epoch_options *o, taca_epoch **out, taca_error *err);
/* 1: *out holds the next batch (free it); 0: the epoch is over; -1: error. */
int taca_epoch_next(taca_epoch *e, taca_batch *out, taca_error *err);
uint64_t taca_epoch_batch_count(const taca_epoch *e); /* over all shards */
void taca_epoch_close(taca_epoch *e);

#endif
