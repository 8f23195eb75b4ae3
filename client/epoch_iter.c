/* epoch_iter.c: the StreamEpoch iterator of taca_client: one stream per shard (each keeps a batch in
 * flight), batches interleaved in proportion to the shards' share sizes, streams cut by UNAVAILABLE
 * resumed at the next batch (start_batch) on a replica or the restarted server. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/epoch_share.h"
#include "client/client_internal.h"

typedef struct shard_stream {
  group *g;
  int replica;          /* index into g->members */
  rpc_stream *rs;
  uint64_t count;       /* batches of this rank's share on this shard */
  uint64_t received;    /* batches delivered so far (= the next sequence expected) */
  int done;
} shard_stream;

struct taca_epoch {
  taca_client *c;
  taca_epoch_options o;
  char names[TACA_CLIENT_MAX_EMB][TACA_CLIENT_NAME_MAX];
  int n;
  shard_stream *s;
  uint64_t total, delivered;
};


static int pick(const taca_epoch *e);

static int stream_open(taca_epoch *e, shard_stream *s, taca_error *err) {
  Taca__V1__StreamEpochRequest req = TACA__V1__STREAM_EPOCH_REQUEST__INIT;
  Taca__V1__Fields pf;
  Taca__V1__EmbeddingRef refs[TACA_CLIENT_MAX_EMB], *refp[TACA_CLIENT_MAX_EMB];
  fields_to_proto(&e->o.fields, &pf, refs, refp);
  req.seed = e->o.seed;
  req.epoch = e->o.epoch;
  req.rank = e->o.rank;
  req.world_size = e->o.world_size;
  req.batch_size = e->o.batch_size;
  req.fields = &pf;
  req.drop_last = e->o.drop_last;
  req.start_batch = s->received;
  uint8_t buf[1024];
  size_t len = taca__v1__stream_epoch_request__get_packed_size(&req);
  if (len > sizeof buf) return taca_fail(err, "StreamEpoch request too large");
  taca__v1__stream_epoch_request__pack(&req, buf);
  conn *cn = &e->c->conns[s->g->members[s->replica]];
  rpc_status st;
  if (rpc_stream_open(e->c, cn, CM_STREAM_EPOCH, buf, len, e->o.timeout_ms, &s->rs, &st))
    return client_fail_status(err, cn, CM_STREAM_EPOCH, &st);
  return 0;
}

int taca_epoch_open(taca_client *c, const taca_epoch_options *o, taca_epoch **out, taca_error *err) {
  *out = NULL;
  if (o->world_size == 0 || o->rank >= o->world_size)
    return taca_fail(err, "StreamEpoch: rank %u must be below world_size %u (>= 1)", o->rank, o->world_size);
  if (o->batch_size == 0 || o->batch_size > (uint32_t)c->info.max_batch)
    return taca_fail(err, "StreamEpoch: batch_size %u must be in [1, %d]", o->batch_size, c->info.max_batch);
  if (fields_check(c, &o->fields, err)) return -1;
  taca_epoch *e = calloc(1, sizeof *e);
  if (!e) return taca_fail(err, "out of memory");
  e->c = c;
  e->o = *o;
  for (int i = 0; i < o->fields.n_embeddings; i++) { /* keep our own copy of the names */
    snprintf(e->names[i], sizeof e->names[i], "%s", o->fields.embeddings[i].model);
    e->o.fields.embeddings[i].model = e->names[i];
  }
  e->s = calloc((size_t)c->n_groups, sizeof *e->s);
  if (!e->s) {
    free(e);
    return taca_fail(err, "out of memory");
  }
  e->n = c->n_groups;
  for (int g = 0; g < c->n_groups; g++) {
    shard_stream *s = &e->s[g];
    s->g = &c->groups[g];
    s->replica = atomic_load(&s->g->next);
    s->count = epoch_batch_count(epoch_share_size(s->g->end - s->g->begin, o->rank, o->world_size), o->batch_size,
                                 o->drop_last);
    e->total += s->count;
    if (s->count == 0) s->done = 1;
  }
  /* Resume mid-epoch: skip the batches taca_epoch_next would deliver first, by the same order of
   * shards, without streaming them; each shard's stream then starts at its own start_batch. */
  for (uint64_t k = 0; k < o->start_batch; k++) {
    int g = pick(e);
    if (g < 0) break; /* beyond the epoch: taca_epoch_next returns 0 */
    shard_stream *s = &e->s[g];
    s->received++;
    e->delivered++;
    if (s->received == s->count) s->done = 1;
  }
  for (int g = 0; g < e->n; g++)
    if (!e->s[g].done && stream_open(e, &e->s[g], err)) {
      taca_epoch_close(e);
      return -1;
    }
  *out = e;
  return 0;
}

uint64_t taca_epoch_batch_count(const taca_epoch *e) { return e->total; }

void taca_epoch_close(taca_epoch *e) {
  if (!e) return;
  for (int g = 0; g < e->n; g++) rpc_stream_close(e->s[g].rs);
  free(e->s);
  free(e);
}

/* The shard whose share is least advanced (received / count), or -1 when all are done. */
static int pick(const taca_epoch *e) {
  int best = -1;
  for (int g = 0; g < e->n; g++) {
    const shard_stream *s = &e->s[g];
    if (s->done) continue;
    if (best < 0) {
      best = g;
      continue;
    }
    const shard_stream *b = &e->s[best];
    if ((unsigned __int128)s->received * b->count < (unsigned __int128)b->received * s->count) best = g;
  }
  return best;
}

int taca_epoch_next(taca_epoch *e, taca_batch *out, taca_error *err) {
  memset(out, 0, sizeof *out);
  for (;;) {
    int g = pick(e);
    if (g < 0) return 0;
    shard_stream *s = &e->s[g];
    double t0 = 0;
    int backoff = e->c->o.backoff_initial_ms, attempts = 0;
    for (;;) {
      conn *cn = &e->c->conns[s->g->members[s->replica]];
      grpc_slice msg;
      rpc_status st;
      if (rpc_stream_recv(s->rs, &msg, &st) == 1) {
        rx_batch rx;
        if (rx_batch_parse(msg, &rx)) return taca_fail(err, "%s: StreamEpoch: malformed batch", cn->addr);
        const Taca__V1__Batch *b = rx.b;
        if (b->sequence != s->received || b->batch_count != s->count) {
          taca_fail(err, "%s: StreamEpoch: got batch %llu of %llu, expected %llu of %llu", cn->addr,
                    (unsigned long long)b->sequence, (unsigned long long)b->batch_count,
                    (unsigned long long)s->received, (unsigned long long)s->count);
          rx_batch_free(&rx);
          return -1;
        }
        size_t rows = b->n_indices;
        if (batch_alloc(e->c, &e->o.fields, rows, out, err)) {
          rx_batch_free(&rx);
          return -1;
        }
        if (batch_scatter(out, &e->o.fields, &rx, rows, NULL, cn->addr, err)) {
          taca_batch_free(out);
          return -1;
        }
        for (size_t i = 0; i < rows; i++)
          if (out->indices[i] < s->g->begin || out->indices[i] >= s->g->end) {
            taca_batch_free(out);
            return taca_fail(err, "%s: StreamEpoch: index %llu outside the shard's range", cn->addr,
                             (unsigned long long)out->indices[i]);
          }
        s->received++;
        out->sequence = e->delivered++;
        out->batch_count = e->total;
        return 1;
      }
      rpc_stream_close(s->rs);
      s->rs = NULL;
      if (st.code == GRPC_STATUS_OK) {
        if (s->received != s->count)
          return taca_fail(err, "%s: StreamEpoch ended after %llu of %llu batches", cn->addr,
                           (unsigned long long)s->received, (unsigned long long)s->count);
        s->done = 1;
        break; /* pick the next shard */
      }
      if (st.code != GRPC_STATUS_UNAVAILABLE) return client_fail_status(err, cn, CM_STREAM_EPOCH, &st);
      /* Cut (server restarting or shutting down): resume at batch `received`, on the next replica,
       * after a backoff step once every replica has been tried. */
      attempts++;
      if (attempts == 1) t0 = client_now();
      s->replica = (s->replica + 1) % s->g->n;
      if (attempts % s->g->n == 0 && client_backoff(e->c, t0, &backoff, cn, CM_STREAM_EPOCH, &st, attempts)) {
        client_fail_status(err, cn, CM_STREAM_EPOCH, &st);
        return taca_error_prefix(err, "gave up resuming at batch %llu after %d attempts",
                                 (unsigned long long)s->received, attempts);
      }
      if (stream_open(e, s, err)) return -1;
    }
  }
}
