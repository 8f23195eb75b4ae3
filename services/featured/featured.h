/* featured.h: the state shared by the parts of taca-featured (options, the opened store, a periodically
 * refreshed snapshot of its info, caption encoders, the epoch-permutation cache, metrics).
 *
 * Threads: the libuv main thread (signals, timers, HTTP) and the gRPC completion-queue threads read
 * this; fields that change after start-up are atomics or behind snap_lock. */
#ifndef TACA_FEATURED_H
#define TACA_FEATURED_H

#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "base/error.h"
#include "nn/backend.h"
#include "search/ann.h"
#include "services/featured/aliases.h"
#include "storage/store.h"

#define FEATURED_VERSION "taca-featured 0.1.0"
#define FEATURED_MAX_MODEL_OPTS 16

typedef struct featured_model_opt {
  char name[STORE_NAME_MAX]; /* the store's model name */
  const char *path;          /* HF directory or open_clip .safetensors */
  const char *arch;          /* built-in name or open_clip JSON; NULL for HF directories */
} featured_model_opt;

typedef struct featured_config {
  const char *db;
  const char *listen;          /* HOST:PORT for gRPC (default 127.0.0.1:50051) */
  const char *metrics_listen;  /* HOST:PORT for HTTP /metrics and /healthz, or NULL */
  const char *port_file;
  const char *log_path;        /* NULL: stderr */
  int log_json;                /* --log-format json: JSON lines (log.h) */
  const char *tls_cert, *tls_key;
  const char *token;           /* bearer token required on every FeatureCache call, or NULL */
  const char *aliases_path;    /* the alias table's file; NULL = DB/aliases.json */
  int threads;                 /* completion-queue threads */
  int max_batch;               /* samples per batch, queries per Search */
  int max_streams;             /* concurrent StreamEpoch calls */
  int max_watches;             /* concurrent Health.Watch calls (no token needed: a budget of their own) */
  int handshake_ms;            /* a connection's HTTP/2 + TLS handshake must finish within this */
  int metrics_auth;            /* /metrics needs the token too */
  int insecure;                /* allow a non-loopback --listen without TLS and token (warned) */
  int max_k;
  size_t max_message;          /* bytes of a response (and the default of max_request) */
  size_t max_request;          /* bytes of a request: gRPC refuses larger ones from their length prefix */
  int grace_ms;                /* shutdown: cancel what is still running after this long */
  int refresh_ms;              /* store info refresh period */
  nn_precision precision;      /* of the text towers' GEMMs (--precision) ... */
  int precision_set;           /* ... when given; else each model's as the store records it */
  int n_models;
  featured_model_opt models[FEATURED_MAX_MODEL_OPTS];
} featured_config;

typedef struct featured_encoders featured_encoders;
typedef struct epoch_cache epoch_cache;
typedef struct featured_metrics featured_metrics;

#define FEATURED_SPACE_MAX 48

/* What the store looked like at the last refresh, and the alias table as of the last SetAlias. A call
 * takes one copy and resolves every name against it (a flip is atomic per call). */
typedef struct featured_snapshot {
  store_info info;
  uint64_t begin, end; /* served range: the declared one, else that of the stored samples */
  /* Per model id: the embedding space (the provenance record's "space": for a plain CLIP model its
   * weights hash, for an adapted one its OLD model's; "model:NAME" when nothing is recorded) and the
   * kind ("clip", "adapted"; "" unknown). */
  char space[STORE_MAX_MODELS][FEATURED_SPACE_MAX];
  char kind[STORE_MAX_MODELS][16];
  alias_table aliases;
} featured_snapshot;

/* The stored model a name means in this snapshot: a model's own name, or an alias's target.
 * Returns the model id, or -1 when the name is neither (or an alias's target is gone). */
int snapshot_resolve(const featured_snapshot *s, const char *name);

/* The daemon's lifecycle, one value that only moves forward (featured_advance):
 *   SERVING   taking calls;
 *   DRAINING  after SIGTERM/SIGINT (or a failed start): health NOT_SERVING, new FeatureCache calls
 *             UNAVAILABLE, streams end at their next batch, unary calls finish;
 *   LINGERING no call left: a short pause so that final statuses reach the clients;
 *   CLOSING   gRPC shutdown requested (no request is armed again), connections closing. */
typedef enum featured_state { FS_SERVING, FS_DRAINING, FS_LINGERING, FS_CLOSING } featured_state;

typedef struct featured {
  featured_config cfg;
  taca_store *store;
  pthread_rwlock_t snap_lock;
  featured_snapshot snap;
  featured_encoders *encoders; /* NULL when no --model was given */
  pthread_mutex_t alias_mu;     /* serialises SetAlias (file write, then publish) */
  char alias_path[4096];
  /* The stored models' ANN indexes (taca index), loaded at start: NULL where there is none or it
   * is stale (ann_error says why, for the FAILED_PRECONDITION of Search with ann). */
  ann_index *ann[STORE_MAX_MODELS][2];
  char ann_error[STORE_MAX_MODELS][2][sizeof(taca_error)];
  epoch_cache *epochs;
  featured_metrics *metrics;
  atomic_int state;         /* featured_state */
  atomic_int active_streams;
  atomic_int active_watches;
} featured;

/* Opens the store read-only, takes the first snapshot, loads the alias table and the --model
 * encoders. */
int featured_open(featured *f, const featured_config *cfg, taca_error *err);
void featured_close(featured *f);
/* Loads the ANN indexes of the snapshot's models (featured_open does); failures are recorded in
 * ann_error, never fatal. */
void featured_load_ann(featured *f);
/* Re-reads the store info (new samples, models) into the snapshot. */
int featured_refresh(featured *f, taca_error *err);
/* Raises the state to `to` if it is lower; returns the state before (so `prev < to` means this call
 * made the move: each transition's work runs once). */
featured_state featured_advance(featured *f, featured_state to);
static inline featured_state featured_state_now(featured *f) { return (featured_state)atomic_load(&f->state); }
/* DRAINING or later: health NOT_SERVING, new calls refused. */
static inline int featured_draining(featured *f) { return featured_state_now(f) >= FS_DRAINING; }
/* Copies the current snapshot. */
void featured_snapshot_get(featured *f, featured_snapshot *out);
/* SetAlias: checks name and target against the current snapshot (see SetAliasRequest in the proto),
 * writes the new table to the file, then publishes it. On failure nothing changes; *code is the
 * gRPC status to answer (INVALID_ARGUMENT, NOT_FOUND, FAILED_PRECONDITION, ABORTED, INTERNAL). */
int featured_set_alias(featured *f, const char *name, const char *target, int allow_space_change, uint64_t if_version,
                       featured_alias *now, char previous[STORE_NAME_MAX], int *code, taca_error *err);

#endif
