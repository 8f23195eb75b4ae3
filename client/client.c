/* client.c: taca_client: connecting (Info of every server, shards and replicas), retries with
 * backoff on UNAVAILABLE, and GetBatch / Lookup / Search / Health across shards. */
#include <errno.h>
#include <grpc/grpc_security.h>
#include <malloc.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/hostport.h"
#include "grpc/health/v1/health.pb-c.h"
#include "client/client_internal.h"

static const char *const CODE_NAMES[] = {
    "OK",        "CANCELLED",          "UNKNOWN",           "INVALID_ARGUMENT", "DEADLINE_EXCEEDED", "NOT_FOUND",
    "ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION", "ABORTED", "OUT_OF_RANGE",
    "UNIMPLEMENTED", "INTERNAL",       "UNAVAILABLE",       "DATA_LOSS",        "UNAUTHENTICATED",
};

static const char *code_name(int c) { return c >= 0 && c <= 16 ? CODE_NAMES[c] : "UNKNOWN"; }

double client_now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

void client_sleep_ms(int ms) {
  struct timespec t = {ms / 1000, (long)(ms % 1000) * 1000000L};
  while (nanosleep(&t, &t) && errno == EINTR) {
  }
}

int client_fail_status(taca_error *err, const conn *cn, client_method m, const rpc_status *st) {
  return taca_fail(err, "%s: %s: %s: %s", cn->addr, CLIENT_METHOD_NAMES[m], code_name(st->code), st->details);
}

int client_backoff(const taca_client *c, double t0, int *backoff_ms, const conn *cn, client_method m,
                   const rpc_status *st, int attempt) {
  if (c->o.retry_budget_ms < 0) return -1;
  double left_ms = (double)c->o.retry_budget_ms - (client_now() - t0) * 1000.0;
  /* +-20% jitter so that many clients restarting together do not retry in lock-step */
  unsigned r = (unsigned)(client_now() * 1e9) * 2654435761u;
  int wait = (int)((double)*backoff_ms * (0.8 + 0.4 * (double)(r % 1000) / 1000.0));
  if (wait > left_ms) return -1;
  if (c->o.on_retry) {
    char why[700];
    snprintf(why, sizeof why, "%s: %s: %s", CLIENT_METHOD_NAMES[m], code_name(st->code), st->details);
    c->o.on_retry(c->o.retry_arg, cn->addr, why, wait, attempt);
  }
  client_sleep_ms(wait);
  *backoff_ms = *backoff_ms * 2 > c->o.backoff_max_ms ? c->o.backoff_max_ms : *backoff_ms * 2;
  return 0;
}

/* One unary call to one server with backoff on UNAVAILABLE (used before groups exist). */
static int call_conn(taca_client *c, conn *cn, client_method m, const uint8_t *req, size_t len, grpc_slice *resp,
                     taca_error *err) {
  double t0 = client_now();
  int backoff = c->o.backoff_initial_ms, attempts = 0;
  for (;;) {
    rpc_status st;
    attempts++;
    if (rpc_unary(c, cn, m, req, len, resp, &st) == 0 && st.code == GRPC_STATUS_OK) return 0;
    if (st.code != GRPC_STATUS_UNAVAILABLE || client_backoff(c, t0, &backoff, cn, m, &st, attempts)) {
      client_fail_status(err, cn, m, &st);
      if (st.code == GRPC_STATUS_UNAVAILABLE && attempts > 1)
        taca_error_prefix(err, "gave up after %d attempts in %.1f s", attempts, client_now() - t0);
      return -1;
    }
  }
}

int client_call_group(taca_client *c, group *g, client_method m, const uint8_t *req, size_t len, grpc_slice *resp,
                      taca_error *err) {
  double t0 = client_now();
  int backoff = c->o.backoff_initial_ms, attempts = 0;
  int first = atomic_load(&g->next);
  for (;;) {
    int r = (first + attempts) % g->n;
    conn *cn = &c->conns[g->members[r]];
    rpc_status st;
    attempts++;
    if (rpc_unary(c, cn, m, req, len, resp, &st) == 0 && st.code == GRPC_STATUS_OK) {
      atomic_store(&g->next, r);
      return 0;
    }
    /* Another replica is tried at once; a full round of them waits a backoff step first. */
    if (st.code != GRPC_STATUS_UNAVAILABLE || (attempts % g->n == 0 && client_backoff(c, t0, &backoff, cn, m, &st, attempts))) {
      client_fail_status(err, cn, m, &st);
      if (st.code == GRPC_STATUS_UNAVAILABLE && attempts > 1)
        taca_error_prefix(err, "gave up after %d attempts in %.1f s", attempts, client_now() - t0);
      return -1;
    }
  }
}

/* ---------- connect ---------- */

static taca_dtype dtype_of(Taca__V1__DType d) {
  return d == TACA__V1__DTYPE__DTYPE_F16 ? TACA_DT_F16 : d == TACA__V1__DTYPE__DTYPE_F32 ? TACA_DT_F32 : TACA_DT_INVALID;
}

static int read_pem(const char *path, char **out, taca_error *err) {
  FILE *f = fopen(path, "rb");
  if (!f) return taca_fail(err, "%s: %s", path, strerror(errno));
  fseek(f, 0, SEEK_END);
  long n = ftell(f);
  fseek(f, 0, SEEK_SET);
  char *buf = n >= 0 ? malloc((size_t)n + 1) : NULL;
  if (!buf || fread(buf, 1, (size_t)n, f) != (size_t)n) {
    free(buf);
    fclose(f);
    return taca_fail(err, "%s: cannot read", path);
  }
  buf[n] = '\0';
  fclose(f);
  *out = buf;
  return 0;
}

/* Merges one server's Info into c->info (the first one sets models and pixel format; the others
 * must agree). */
static int merge_info(taca_client *c, conn *cn, const Taca__V1__InfoResponse *in, taca_error *err) {
  taca_dataset_info *di = &c->info;
  taca_server_desc *sd = &di->servers[di->n_servers++];
  snprintf(sd->address, sizeof sd->address, "%s", cn->addr);
  sd->begin = in->index_begin;
  sd->end = in->index_end;
  sd->samples = in->sample_count;
  sd->shard = (int)in->shard;
  sd->shard_count = (int)in->shard_count;
  snprintf(sd->version, sizeof sd->version, "%s", in->server_version ? in->server_version : "");
  cn->begin = in->index_begin;
  cn->end = in->index_end;
  cn->samples = in->sample_count;
  cn->max_batch = in->max_batch ? (int)in->max_batch : 1;
  cn->max_k = in->max_k ? (int)in->max_k : 1;
  if (in->index_end < in->index_begin) return taca_fail(err, "%s: Info: range [%llu, %llu) is reversed", cn->addr,
                                                          (unsigned long long)in->index_begin,
                                                          (unsigned long long)in->index_end);
  for (int j = 0; j < di->n_servers - 1; j++) { /* replicas: equal ranges; shards: disjoint ones */
    const taca_server_desc *o = &di->servers[j];
    int equal = o->begin == sd->begin && o->end == sd->end;
    int disjoint = o->end <= sd->begin || sd->end <= o->begin;
    if (!equal && !disjoint)
      return taca_fail(err, "%s serves [%llu, %llu), which overlaps [%llu, %llu) of %s: replicas must serve equal "
                       "ranges, shards disjoint ones",
                       cn->addr, (unsigned long long)sd->begin, (unsigned long long)sd->end,
                       (unsigned long long)o->begin, (unsigned long long)o->end, o->address);
  }
  if (di->n_servers == 1) {
    if (in->n_models > TACA_CLIENT_MAX_MODELS) return taca_fail(err, "%s: Info: too many models", cn->addr);
    di->n_models = (int)in->n_models;
    for (size_t i = 0; i < in->n_models; i++) {
      const Taca__V1__ModelInfo *m = in->models[i];
      taca_model_desc *d = &di->models[i];
      snprintf(d->name, sizeof d->name, "%s", m->name ? m->name : "");
      snprintf(d->arch, sizeof d->arch, "%s", m->arch ? m->arch : "");
      d->image_dim = (int)m->image_dim;
      d->text_dim = (int)m->text_dim;
      d->dtype = dtype_of(m->dtype);
      d->logit_scale = m->logit_scale;
      d->image_size = (int)m->image_size;
      d->caption_search = m->caption_search;
      d->embed_images = m->embed_images;
      snprintf(d->kind, sizeof d->kind, "%s", m->kind ? m->kind : "");
      snprintf(d->space, sizeof d->space, "%s", m->space ? m->space : "");
      if (d->dtype == TACA_DT_INVALID || d->image_dim < 0 || d->image_dim > (1 << 20) || d->text_dim < 0 ||
          d->text_dim > (1 << 20))
        return taca_fail(err, "%s: Info: model '%s' has an unknown dtype or absurd dims", cn->addr, d->name);
    }
    di->has_pixels = in->pixel_format != NULL;
    if (in->pixel_format) {
      di->pixel_size = (int)in->pixel_format->size;
      di->pixel_channels = (int)in->pixel_format->channels;
      di->pixel_quality = (int)in->pixel_format->quality;
      snprintf(di->pixel_codec, sizeof di->pixel_codec, "%s", in->pixel_format->codec ? in->pixel_format->codec : "");
    }
    di->context_length = (int)in->context_length;
    di->n_aliases = 0;
    for (size_t i = 0; i < in->n_aliases && di->n_aliases < TACA_CLIENT_MAX_MODELS; i++) {
      taca_alias_desc *a = &di->aliases[di->n_aliases++];
      snprintf(a->name, sizeof a->name, "%s", in->aliases[i]->name ? in->aliases[i]->name : "");
      snprintf(a->target, sizeof a->target, "%s", in->aliases[i]->target ? in->aliases[i]->target : "");
      a->version = in->aliases[i]->version;
    }
    di->max_batch = cn->max_batch;
    di->max_k = cn->max_k;
  } else {
    if (in->n_models != (size_t)di->n_models)
      return taca_fail(err, "%s: serves %zu models, %s serves %d: not shards of one data set", cn->addr, in->n_models,
                       di->servers[0].address, di->n_models);
    for (size_t i = 0; i < in->n_models; i++) {
      const Taca__V1__ModelInfo *m = in->models[i];
      taca_model_desc *d = &di->models[i];
      if (!m->name || strcmp(m->name, d->name) || (int)m->image_dim != d->image_dim ||
          (int)m->text_dim != d->text_dim || dtype_of(m->dtype) != d->dtype)
        return taca_fail(err, "%s: model '%s' differs from %s's '%s' (name, dims or dtype): not shards of one data set",
                         cn->addr, m->name ? m->name : "", di->servers[0].address, d->name);
      d->caption_search = d->caption_search && m->caption_search;
      d->embed_images = d->embed_images && m->embed_images;
    }
    if ((in->pixel_format != NULL) != di->has_pixels ||
        (in->pixel_format && ((int)in->pixel_format->size != di->pixel_size ||
                              strcmp(in->pixel_format->codec ? in->pixel_format->codec : "", di->pixel_codec))))
      return taca_fail(err, "%s: pixel format differs from %s's", cn->addr, di->servers[0].address);
    if (cn->max_batch < di->max_batch) di->max_batch = cn->max_batch;
    if (cn->max_k < di->max_k) di->max_k = cn->max_k;
  }
  return 0;
}

static int cmp_group(const void *a, const void *b) {
  const group *x = a, *y = b;
  return x->begin < y->begin ? -1 : x->begin > y->begin ? 1 : 0;
}

/* Groups servers by range (replicas), checks shards are disjoint, sums counts over shards. */
static int build_groups(taca_client *c, taca_error *err) {
  for (int i = 0; i < c->n_conns; i++) {
    conn *cn = &c->conns[i];
    int g = 0;
    for (; g < c->n_groups; g++)
      if (c->groups[g].begin == cn->begin && c->groups[g].end == cn->end) break;
    if (g == c->n_groups) {
      group *ng = &c->groups[c->n_groups++];
      memset(ng, 0, sizeof *ng);
      ng->begin = cn->begin;
      ng->end = cn->end;
      ng->samples = cn->samples;
      ng->max_batch = cn->max_batch;
      ng->max_k = cn->max_k;
    }
    group *gr = &c->groups[g];
    gr->members[gr->n++] = i;
    if (cn->max_batch < gr->max_batch) gr->max_batch = cn->max_batch;
    if (cn->max_k < gr->max_k) gr->max_k = cn->max_k;
  }
  qsort(c->groups, (size_t)c->n_groups, sizeof c->groups[0], cmp_group);
  taca_dataset_info *di = &c->info;
  di->n_shards = c->n_groups;
  di->samples = 0;
  for (int g = 0; g < c->n_groups; g++) {
    const group *gr = &c->groups[g];
    if (g > 0 && gr->begin < c->groups[g - 1].end)
      return taca_fail(err, "%s serves [%llu, %llu), which overlaps [%llu, %llu) of %s: replicas must serve equal "
                       "ranges, shards disjoint ones",
                       c->conns[gr->members[0]].addr, (unsigned long long)gr->begin, (unsigned long long)gr->end,
                       (unsigned long long)c->groups[g - 1].begin, (unsigned long long)c->groups[g - 1].end,
                       c->conns[c->groups[g - 1].members[0]].addr);
    di->samples += gr->samples;
  }
  di->begin = c->n_groups ? c->groups[0].begin : 0;
  di->end = c->n_groups ? c->groups[c->n_groups - 1].end : 0;
  return 0;
}

int taca_client_connect(taca_client **out, const char *servers, const taca_client_options *opt, taca_error *err) {
  *out = NULL;
  if (!servers || !*servers) return taca_fail(err, "no server address given");
  if (taca_hostport_check_list("server address", servers, err)) return -1;
  taca_client *c = calloc(1, sizeof *c);
  if (!c) return taca_fail(err, "out of memory");
  if (opt) c->o = *opt;
  if (c->o.timeout_ms <= 0) c->o.timeout_ms = 30000;
  if (c->o.retry_budget_ms == 0) c->o.retry_budget_ms = 20000;
  if (c->o.backoff_initial_ms <= 0) c->o.backoff_initial_ms = 50;
  if (c->o.backoff_max_ms <= 0) c->o.backoff_max_ms = 2000;
  if (c->o.max_message == 0) c->o.max_message = 256u << 20;
  if (c->o.token) {
    if (strlen(c->o.token) > sizeof c->auth - 8) {
      free(c);
      return taca_fail(err, "token longer than %zu bytes", sizeof c->auth - 8);
    }
    snprintf(c->auth, sizeof c->auth, "Bearer %s", c->o.token);
  }
  c->o.token = NULL;
  grpc_init();

  char *pem = NULL;
  if (c->o.tls_ca && read_pem(c->o.tls_ca, &pem, err)) {
    taca_error_prefix(err, "TLS roots");
    taca_client_close(c);
    return -1;
  }
  c->o.tls_ca = NULL;
  grpc_arg args[2];
  int nargs = 0;
  args[nargs].type = GRPC_ARG_INTEGER;
  args[nargs].key = (char *)GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH;
  args[nargs++].value.integer = c->o.max_message > INT32_MAX ? INT32_MAX : (int)c->o.max_message;
  if (pem && c->o.tls_server_name) {
    args[nargs].type = GRPC_ARG_STRING;
    args[nargs].key = (char *)GRPC_SSL_TARGET_NAME_OVERRIDE_ARG;
    args[nargs++].value.string = (char *)c->o.tls_server_name;
  }
  grpc_channel_args ca = {(size_t)nargs, args};

  /* Parse "a,b,c" */
  const char *p = servers;
  while (*p) {
    const char *comma = strchr(p, ',');
    size_t l = comma ? (size_t)(comma - p) : strlen(p);
    if (l > 0) {
      if (c->n_conns == TACA_CLIENT_MAX_SERVERS) {
        free(pem);
        taca_client_close(c);
        return taca_fail(err, "more than %d servers", TACA_CLIENT_MAX_SERVERS);
      }
      if (l >= sizeof c->conns[0].addr) {
        free(pem);
        taca_client_close(c);
        return taca_fail(err, "server address too long");
      }
      conn *cn = &c->conns[c->n_conns++];
      memcpy(cn->addr, p, l);
      cn->addr[l] = '\0';
      grpc_channel_credentials *creds = pem ? grpc_ssl_credentials_create(pem, NULL, NULL, NULL)
                                            : grpc_insecure_credentials_create();
      cn->ch = grpc_channel_create(cn->addr, creds, &ca);
      grpc_channel_credentials_release(creds);
      for (int m = 0; m < CM_COUNT; m++)
        cn->handles[m] = grpc_channel_register_call(cn->ch, CLIENT_METHOD_PATHS[m], NULL, NULL);
    }
    p += l + (comma ? 1 : 0);
  }
  free(pem);
  c->o.tls_server_name = NULL;
  if (c->n_conns == 0) {
    taca_client_close(c);
    return taca_fail(err, "no server address in '%s'", servers);
  }

  if (c->o.health_only) {
    *out = c;
    return 0;
  }
  for (int i = 0; i < c->n_conns; i++) {
    conn *cn = &c->conns[i];
    Taca__V1__InfoRequest req = TACA__V1__INFO_REQUEST__INIT;
    uint8_t buf[16];
    size_t len = taca__v1__info_request__pack(&req, buf);
    grpc_slice resp;
    if (call_conn(c, cn, CM_INFO, buf, len, &resp, err)) {
      taca_client_close(c);
      return -1;
    }
    Taca__V1__InfoResponse *in =
        taca__v1__info_response__unpack(NULL, GRPC_SLICE_LENGTH(resp), GRPC_SLICE_START_PTR(resp));
    grpc_slice_unref(resp);
    if (!in) {
      taca_fail(err, "%s: Info: malformed response", cn->addr);
      taca_client_close(c);
      return -1;
    }
    int rc = merge_info(c, cn, in, err);
    /* Counts are summed once per distinct range (replicas hold the same embeddings). */
    int first_of_range = 1;
    for (int j = 0; j < i; j++)
      if (c->conns[j].begin == cn->begin && c->conns[j].end == cn->end) first_of_range = 0;
    if (rc == 0 && first_of_range)
      for (size_t m = 0; m < in->n_models && m < TACA_CLIENT_MAX_MODELS; m++) {
        c->info.models[m].image_count += in->models[m]->image_count;
        c->info.models[m].text_count += in->models[m]->text_count;
      }
    taca__v1__info_response__free_unpacked(in, NULL);
    if (rc) {
      taca_client_close(c);
      return -1;
    }
  }
  if (build_groups(c, err)) {
    taca_client_close(c);
    return -1;
  }
  *out = c;
  return 0;
}

void taca_client_close(taca_client *c) {
  if (!c) return;
  for (int i = 0; i < c->n_conns; i++)
    if (c->conns[i].ch) grpc_channel_destroy(c->conns[i].ch);
  free(c);
  grpc_shutdown();
}

const taca_dataset_info *taca_client_info(const taca_client *c) { return &c->info; }

void taca_client_tune_malloc(void) {
  /* Fixed thresholds (this also turns glibc's dynamic adjustment off): buffers up to 256 MiB come from
   * the heap and freed memory is kept for the next message instead of being unmapped and faulted in
   * again. Measured on 9.6 MB batches: 1.0-1.8 GB/s before, 2.1-2.3 GB/s after (docs/featured.md). */
  mallopt(M_MMAP_THRESHOLD, 256 << 20);
  mallopt(M_TRIM_THRESHOLD, 1 << 30);
}

int taca_client_find_model(const taca_client *c, const char *name) {
  if (!name) return -1;
  for (int i = 0; i < c->info.n_models; i++)
    if (!strcmp(c->info.models[i].name, name)) return i;
  for (int a = 0; a < c->info.n_aliases; a++)
    if (!strcmp(c->info.aliases[a].name, name))
      for (int i = 0; i < c->info.n_models; i++)
        if (!strcmp(c->info.models[i].name, c->info.aliases[a].target)) return i;
  return -1;
}

/* ---------- GetBatch ---------- */

static int group_of(const taca_client *c, uint64_t index) {
  int lo = 0, hi = c->n_groups - 1;
  while (lo <= hi) {
    int mid = (lo + hi) / 2;
    const group *g = &c->groups[mid];
    if (index < g->begin) hi = mid - 1;
    else if (index >= g->end) lo = mid + 1;
    else return mid;
  }
  return -1;
}

static int out_of_range(const taca_client *c, size_t i, uint64_t index, taca_error *err) {
  char ranges[512] = "";
  for (int g = 0; g < c->n_groups; g++) {
    size_t l = strlen(ranges);
    snprintf(ranges + l, sizeof ranges - l, "%s[%llu, %llu)", g ? " " : "", (unsigned long long)c->groups[g].begin,
             (unsigned long long)c->groups[g].end);
  }
  return taca_fail(err, "indices[%zu] = %llu is served by no server (ranges: %s)", i, (unsigned long long)index,
                   ranges);
}

/* One GetBatch of idx[0..n) to group g, rows scattered to pos. */
static int get_chunk(taca_client *c, group *g, const uint64_t *idx, const size_t *pos, size_t n, const taca_fields *f,
                     taca_batch *out, taca_error *err) {
  Taca__V1__GetBatchRequest req = TACA__V1__GET_BATCH_REQUEST__INIT;
  Taca__V1__Fields pf;
  Taca__V1__EmbeddingRef refs[TACA_CLIENT_MAX_EMB], *refp[TACA_CLIENT_MAX_EMB];
  fields_to_proto(f, &pf, refs, refp);
  req.n_indices = n;
  req.indices = (uint64_t *)idx;
  req.fields = &pf;
  size_t len = taca__v1__get_batch_request__get_packed_size(&req);
  uint8_t *buf = malloc(len ? len : 1);
  if (!buf) return taca_fail(err, "out of memory");
  taca__v1__get_batch_request__pack(&req, buf);
  grpc_slice resp;
  int rc = client_call_group(c, g, CM_GET_BATCH, buf, len, &resp, err);
  free(buf);
  if (rc) return -1;
  char who[300];
  snprintf(who, sizeof who, "%s", c->conns[g->members[atomic_load(&g->next)]].addr);
  rx_batch rx;
  if (rx_batch_parse(resp, &rx)) return taca_fail(err, "%s: GetBatch: malformed response", who);
  return batch_scatter(out, f, &rx, n, pos, who, err);
}

int taca_client_get_batch(taca_client *c, const uint64_t *indices, size_t n, const taca_fields *f, taca_batch *out,
                          taca_error *err) {
  memset(out, 0, sizeof *out);
  if (fields_check(c, f, err)) return -1;
  int *gi = malloc((n ? n : 1) * sizeof *gi);
  uint64_t *sub = malloc((n ? n : 1) * sizeof *sub);
  size_t *pos = malloc((n ? n : 1) * sizeof *pos);
  if (!gi || !sub || !pos) {
    free(gi), free(sub), free(pos);
    return taca_fail(err, "out of memory");
  }
  int rc = -1;
  for (size_t i = 0; i < n; i++)
    if ((gi[i] = group_of(c, indices[i])) < 0) {
      out_of_range(c, i, indices[i], err);
      goto done;
    }
  if (batch_alloc(c, f, n, out, err)) goto done;
  if (n == 0) {
    rc = 0;
    goto done;
  }
  for (int g = 0; g < c->n_groups; g++) {
    size_t m = 0;
    for (size_t i = 0; i < n; i++)
      if (gi[i] == g) {
        sub[m] = indices[i];
        pos[m++] = i;
      }
    size_t step = (size_t)c->groups[g].max_batch;
    for (size_t s = 0; s < m; s += step) {
      size_t cnt = m - s < step ? m - s : step;
      if (get_chunk(c, &c->groups[g], sub + s, pos + s, cnt, f, out, err)) {
        taca_batch_free(out);
        goto done;
      }
    }
  }
  rc = 0;
done:
  free(gi);
  free(sub);
  free(pos);
  return rc;
}

/* ---------- Lookup ---------- */

static int lookup_call(taca_client *c, group *g, const char *const *keys, size_t n, const taca_fields *f,
                       int allow_missing, Taca__V1__LookupResponse **out, taca_error *err) {
  *out = NULL;
  Taca__V1__LookupRequest req = TACA__V1__LOOKUP_REQUEST__INIT;
  Taca__V1__Fields pf;
  Taca__V1__EmbeddingRef refs[TACA_CLIENT_MAX_EMB], *refp[TACA_CLIENT_MAX_EMB];
  fields_to_proto(f, &pf, refs, refp);
  req.n_keys = n;
  req.keys = (char **)keys;
  req.fields = &pf;
  req.allow_missing = allow_missing;
  size_t len = taca__v1__lookup_request__get_packed_size(&req);
  uint8_t *buf = malloc(len ? len : 1);
  if (!buf) return taca_fail(err, "out of memory");
  taca__v1__lookup_request__pack(&req, buf);
  grpc_slice s;
  int rc = client_call_group(c, g, CM_LOOKUP, buf, len, &s, err);
  free(buf);
  if (rc) return -1;
  *out = taca__v1__lookup_response__unpack(NULL, GRPC_SLICE_LENGTH(s), GRPC_SLICE_START_PTR(s));
  grpc_slice_unref(s);
  if (!*out || !(*out)->batch || (*out)->batch->n_keys != (*out)->batch->n_indices) {
    if (*out) taca__v1__lookup_response__free_unpacked(*out, NULL);
    *out = NULL;
    return taca_fail(err, "%s: Lookup: malformed response", c->conns[g->members[atomic_load(&g->next)]].addr);
  }
  return 0;
}

int taca_client_lookup(taca_client *c, const char *const *keys, size_t n, const taca_fields *f, int allow_missing,
                       taca_batch *out, taca_error *err) {
  memset(out, 0, sizeof *out);
  taca_fields fk = {0};
  if (f) fk = *f;
  fk.keys = 1;
  if (fields_check(c, &fk, err)) return -1;
  if (n > (size_t)c->info.max_batch) return taca_fail(err, "%zu keys; at most %d per lookup", n, c->info.max_batch);
  for (size_t i = 0; i < n; i++)
    if (!keys[i] || !keys[i][0]) return taca_fail(err, "keys[%zu] is empty", i);
  Taca__V1__LookupResponse *r;
  if (c->n_groups == 1) { /* one round trip: the server resolves and gathers */
    if (lookup_call(c, &c->groups[0], keys, n, &fk, allow_missing, &r, err)) return -1;
    size_t rows = r->batch->n_indices;
    if (batch_alloc(c, &fk, rows, out, err)) {
      taca__v1__lookup_response__free_unpacked(r, NULL);
      return -1;
    }
    rx_batch rx;
    if (rx_batch_wrap(r->batch, &r->base, &rx)) {
      taca_batch_free(out);
      return taca_fail(err, "out of memory");
    }
    if (batch_scatter(out, &fk, &rx, rows, NULL, c->conns[c->groups[0].members[0]].addr, err)) {
      taca_batch_free(out);
      return -1;
    }
    return 0;
  }
  /* Several shards: find each key's index on whichever shard has it, then GetBatch (routed). */
  uint64_t *idx = malloc((n ? n : 1) * sizeof *idx);
  uint8_t *found = calloc(n ? n : 1, 1);
  if (!idx || !found) {
    free(idx), free(found);
    return taca_fail(err, "out of memory");
  }
  taca_fields only_keys = {.keys = 1};
  int rc = -1;
  for (int g = 0; g < c->n_groups; g++) {
    if (lookup_call(c, &c->groups[g], keys, n, &only_keys, 1, &r, err)) goto done;
    const Taca__V1__Batch *b = r->batch;
    size_t row = 0;
    for (size_t i = 0; i < n && row < b->n_keys; i++) /* found rows come in request order */
      if (!strcmp(keys[i], b->keys[row])) {
        if (!found[i]) idx[i] = b->indices[row];
        found[i] = 1;
        row++;
      }
    int ordered = row == b->n_keys;
    taca__v1__lookup_response__free_unpacked(r, NULL);
    if (!ordered) {
      taca_fail(err, "%s: Lookup: rows not in request order", c->conns[c->groups[g].members[0]].addr);
      goto done;
    }
  }
  size_t nf = 0;
  for (size_t i = 0; i < n; i++) {
    if (found[i]) idx[nf++] = idx[i];
    else if (!allow_missing) {
      taca_fail(err, "Lookup: NOT_FOUND: key '%.200s' is on no server", keys[i]);
      goto done;
    }
  }
  rc = taca_client_get_batch(c, idx, nf, &fk, out, err);
done:
  free(idx);
  free(found);
  return rc;
}

/* ---------- Search ---------- */

void taca_search_result_free(taca_search_result *r) {
  if (!r) return;
  if (r->keys)
    for (size_t i = 0; i < (size_t)r->nq * (size_t)r->k; i++) free(r->keys[i]);
  free(r->keys);
  free(r->count);
  free(r->indices);
  free(r->scores);
  memset(r, 0, sizeof *r);
}

/* Inserts hit (s, idx, key) into query q's sorted list (score desc, index asc), keeping k. */
static void offer(taca_search_result *r, int q, float s, uint64_t idx, const char *key) {
  size_t base = (size_t)q * (size_t)r->k;
  int n = r->count[q], at = n;
  while (at > 0) {
    float ps = r->scores[base + at - 1];
    uint64_t pi = r->indices[base + at - 1];
    if (ps > s || (ps == s && pi < idx)) break;
    at--;
  }
  if (at >= r->k) return;
  char *kc = NULL;
  if (r->keys) {
    kc = strdup(key ? key : "");
    if (n == r->k) free(r->keys[base + r->k - 1]);
  }
  int last = n < r->k ? n : r->k - 1;
  for (int j = last; j > at; j--) {
    r->scores[base + j] = r->scores[base + j - 1];
    r->indices[base + j] = r->indices[base + j - 1];
    if (r->keys) r->keys[base + j] = r->keys[base + j - 1];
  }
  r->scores[base + at] = s;
  r->indices[base + at] = idx;
  if (r->keys) r->keys[base + at] = kc;
  if (n < r->k) r->count[q]++;
}

int taca_client_search(taca_client *c, const char *model, taca_modality modality, const float *queries,
                       const char *const *captions, int nq, int k, taca_metric metric, int with_keys,
                       taca_search_result *out, taca_error *err) {
  return taca_client_search_opts(c, model, modality, queries, captions, nq, k, metric, with_keys, NULL, out, err);
}

int taca_client_search_opts(taca_client *c, const char *model, taca_modality modality, const float *queries,
                            const char *const *captions, int nq, int k, taca_metric metric, int with_keys,
                            const taca_search_opts *opts, taca_search_result *out, taca_error *err) {
  memset(out, 0, sizeof *out);
  int mi = taca_client_find_model(c, model);
  if (mi < 0) {
    taca_fields probe = {.n_embeddings = 1};
    probe.embeddings[0].model = model;
    return fields_check(c, &probe, err);
  }
  const taca_model_desc *m = &c->info.models[mi];
  int dim = modality == TACA_TEXT ? m->text_dim : m->image_dim;
  if (dim <= 0) return taca_fail(err, "model '%s' stores no %s embeddings", m->name, modality == TACA_TEXT ? "text" : "image");
  if (nq <= 0 || k <= 0) return taca_fail(err, "search needs nq >= 1 and k >= 1 (got %d, %d)", nq, k);
  const uint8_t *const *images = opts ? opts->images : NULL;
  if ((queries != NULL) + (captions != NULL) + (images != NULL) != 1)
    return taca_fail(err, "search: give query vectors, captions or images (exactly one of them)");
  Taca__V1__SearchRequest req = TACA__V1__SEARCH_REQUEST__INIT;
  req.model = (char *)model; /* as given: an alias is resolved by each server, per call */
  ProtobufCBinaryData *imgs = NULL;
  if (opts && opts->query_model) {
    int qi = taca_client_find_model(c, opts->query_model);
    if (qi < 0) return taca_fail(err, "search: query model '%.64s' is not in the data set", opts->query_model);
    req.query_model = (char *)opts->query_model;
  }
  if (opts && opts->n_fallback > 0) {
    req.n_gallery_fallback = (size_t)opts->n_fallback;
    req.gallery_fallback = (char **)opts->fallback;
  }
  req.modality = modality == TACA_TEXT ? TACA__V1__MODALITY__MODALITY_TEXT : TACA__V1__MODALITY__MODALITY_IMAGE;
  if (queries) {
    req.n_queries = (size_t)nq * (size_t)dim;
    req.queries = (float *)queries;
  } else if (captions) {
    req.n_captions = (size_t)nq;
    req.captions = (char **)captions;
  } else {
    imgs = malloc((size_t)nq * sizeof *imgs);
    if (!imgs) return taca_fail(err, "out of memory");
    for (int i = 0; i < nq; i++) imgs[i] = (ProtobufCBinaryData){opts->image_sizes[i], (uint8_t *)images[i]};
    req.n_images = (size_t)nq;
    req.images = imgs;
  }
  req.k = (uint32_t)k;
  req.metric = metric == TACA_METRIC_COSINE ? TACA__V1__METRIC__METRIC_COSINE : TACA__V1__METRIC__METRIC_INNER_PRODUCT;
  req.with_keys = with_keys;
  if (opts && opts->ann) {
    req.ann = 1;
    req.nprobe = opts->nprobe > 0 ? (uint32_t)opts->nprobe : 0;
    req.refine = opts->refine > 0 ? (uint32_t)opts->refine : 0;
  }
  size_t len = taca__v1__search_request__get_packed_size(&req);
  uint8_t *buf = malloc(len);
  if (buf) taca__v1__search_request__pack(&req, buf);
  free(imgs);
  out->nq = nq;
  out->k = k;
  out->count = calloc((size_t)nq, sizeof *out->count);
  out->indices = calloc((size_t)nq * (size_t)k, sizeof *out->indices);
  out->scores = calloc((size_t)nq * (size_t)k, sizeof *out->scores);
  if (with_keys) out->keys = calloc((size_t)nq * (size_t)k, sizeof *out->keys);
  if (!buf || !out->count || !out->indices || !out->scores || (with_keys && !out->keys)) {
    free(buf);
    taca_search_result_free(out);
    return taca_fail(err, "out of memory");
  }
  for (int g = 0; g < c->n_groups; g++) {
    grpc_slice s;
    if (client_call_group(c, &c->groups[g], CM_SEARCH, buf, len, &s, err)) goto fail;
    Taca__V1__SearchResponse *r = taca__v1__search_response__unpack(NULL, GRPC_SLICE_LENGTH(s), GRPC_SLICE_START_PTR(s));
    grpc_slice_unref(s);
    int ok = r && r->n_results == (size_t)nq;
    for (int q = 0; ok && q < nq; q++) {
      const Taca__V1__SearchHits *h = r->results[q];
      if (h->n_indices != h->n_scores || h->n_indices > (size_t)k || (with_keys && h->n_keys != h->n_indices)) {
        ok = 0;
        break;
      }
      for (size_t j = 0; j < h->n_indices; j++) offer(out, q, h->scores[j], h->indices[j], with_keys ? h->keys[j] : NULL);
    }
    if (r) taca__v1__search_response__free_unpacked(r, NULL);
    if (!ok) {
      taca_fail(err, "%s: Search: malformed response", c->conns[c->groups[g].members[0]].addr);
      goto fail;
    }
  }
  free(buf);
  return 0;
fail:
  free(buf);
  taca_search_result_free(out);
  return -1;
}

/* ---------- Embed ---------- */

void taca_embed_result_free(taca_embed_result *r) {
  if (!r) return;
  if (r->errors)
    for (int i = 0; i < r->n; i++) free(r->errors[i]);
  free(r->errors);
  free(r->data);
  free(r->ok);
  memset(r, 0, sizeof *r);
}

int taca_client_embed(taca_client *c, const char *model, const uint8_t *const *images, const size_t *image_sizes,
                      const char *const *captions, int n, int normalize, taca_embed_result *out, taca_error *err) {
  memset(out, 0, sizeof *out);
  if (n <= 0) return taca_fail(err, "embed: nothing to embed (n = %d)", n);
  if (!images == !captions) return taca_fail(err, "embed: give images or captions (exactly one of them)");
  if (c->n_groups == 0) return taca_fail(err, "embed: no server");
  Taca__V1__EmbedRequest req = TACA__V1__EMBED_REQUEST__INIT;
  req.model = (char *)model;
  req.normalize = normalize;
  ProtobufCBinaryData *imgs = NULL;
  if (images) {
    imgs = malloc((size_t)n * sizeof *imgs);
    if (!imgs) return taca_fail(err, "out of memory");
    for (int i = 0; i < n; i++) imgs[i] = (ProtobufCBinaryData){image_sizes[i], (uint8_t *)images[i]};
    req.n_images = (size_t)n;
    req.images = imgs;
  } else {
    req.n_captions = (size_t)n;
    req.captions = (char **)captions;
  }
  size_t len = taca__v1__embed_request__get_packed_size(&req);
  uint8_t *buf = malloc(len ? len : 1);
  if (!buf) {
    free(imgs);
    return taca_fail(err, "out of memory");
  }
  taca__v1__embed_request__pack(&req, buf);
  free(imgs);
  grpc_slice s;
  int rc = client_call_group(c, &c->groups[0], CM_EMBED, buf, len, &s, err);
  free(buf);
  if (rc) return -1;
  Taca__V1__EmbedResponse *r = taca__v1__embed_response__unpack(NULL, GRPC_SLICE_LENGTH(s), GRPC_SLICE_START_PTR(s));
  grpc_slice_unref(s);
  const char *addr = c->conns[c->groups[0].members[0]].addr;
  if (!r || r->dim == 0 || r->dim > (1u << 20) || r->data.len != (size_t)n * r->dim * sizeof(float) ||
      r->ok.len != (size_t)n) {
    if (r) taca__v1__embed_response__free_unpacked(r, NULL);
    return taca_fail(err, "%s: Embed: malformed response", addr);
  }
  out->n = n;
  out->dim = (int)r->dim;
  out->data = malloc(r->data.len);
  out->ok = malloc((size_t)n);
  out->errors = calloc((size_t)n, sizeof *out->errors);
  int ok = out->data && out->ok && out->errors;
  if (ok) {
    memcpy(out->data, r->data.data, r->data.len);
    memcpy(out->ok, r->ok.data, (size_t)n);
    for (size_t e = 0; e < r->n_errors; e++)
      if (r->errors[e]->item < (uint32_t)n && !out->errors[r->errors[e]->item])
        out->errors[r->errors[e]->item] = strdup(r->errors[e]->message ? r->errors[e]->message : "");
    for (int i = 0; i < n && ok; i++) {
      if (!out->errors[i]) out->errors[i] = strdup(out->ok[i] ? "" : "failed (no reason given)");
      ok = out->errors[i] != NULL;
    }
    snprintf(out->model, sizeof out->model, "%s", r->model ? r->model : "");
    snprintf(out->space, sizeof out->space, "%s", r->space ? r->space : "");
  }
  taca__v1__embed_response__free_unpacked(r, NULL);
  if (!ok) {
    taca_embed_result_free(out);
    return taca_fail(err, "out of memory");
  }
  return 0;
}

/* ---------- SetAlias ---------- */

int taca_client_set_alias(taca_client *c, const char *name, const char *target, int allow_space_change,
                          char previous[TACA_CLIENT_NAME_MAX], int *flipped, taca_error *err) {
  if (flipped) *flipped = 0;
  if (previous) previous[0] = '\0';
  Taca__V1__SetAliasRequest req = TACA__V1__SET_ALIAS_REQUEST__INIT;
  req.name = (char *)name;
  req.target = (char *)(target ? target : "");
  req.allow_space_change = allow_space_change;
  size_t len = taca__v1__set_alias_request__get_packed_size(&req);
  uint8_t buf[512];
  if (len > sizeof buf) return taca_fail(err, "alias name or target too long");
  taca__v1__set_alias_request__pack(&req, buf);
  for (int i = 0; i < c->n_conns; i++) {
    conn *cn = &c->conns[i];
    grpc_slice s;
    rpc_status st;
    if (rpc_unary(c, cn, CM_SET_ALIAS, buf, len, &s, &st) || st.code != GRPC_STATUS_OK)
      return client_fail_status(err, cn, CM_SET_ALIAS, &st);
    Taca__V1__SetAliasResponse *r =
        taca__v1__set_alias_response__unpack(NULL, GRPC_SLICE_LENGTH(s), GRPC_SLICE_START_PTR(s));
    grpc_slice_unref(s);
    if (!r) return taca_fail(err, "%s: SetAlias: malformed response", cn->addr);
    if (i == 0 && previous) snprintf(previous, TACA_CLIENT_NAME_MAX, "%s", r->previous_target ? r->previous_target : "");
    taca__v1__set_alias_response__free_unpacked(r, NULL);
    if (flipped) (*flipped)++;
  }
  return 0;
}

/* ---------- Health ---------- */

int taca_client_health(taca_client *c, taca_error *err) {
  Grpc__Health__V1__HealthCheckRequest req = GRPC__HEALTH__V1__HEALTH_CHECK_REQUEST__INIT;
  uint8_t buf[8];
  size_t len = grpc__health__v1__health_check_request__pack(&req, buf);
  for (int i = 0; i < c->n_conns; i++) {
    conn *cn = &c->conns[i];
    grpc_slice s;
    rpc_status st;
    if (rpc_unary(c, cn, CM_HEALTH, buf, len, &s, &st) || st.code != GRPC_STATUS_OK)
      return client_fail_status(err, cn, CM_HEALTH, &st);
    Grpc__Health__V1__HealthCheckResponse *r =
        grpc__health__v1__health_check_response__unpack(NULL, GRPC_SLICE_LENGTH(s), GRPC_SLICE_START_PTR(s));
    grpc_slice_unref(s);
    int status = r ? (int)r->status : -1;
    if (r) grpc__health__v1__health_check_response__free_unpacked(r, NULL);
    if (status != GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING)
      return taca_fail(err, "%s: Health.Check: status %d, not SERVING", cn->addr, status);
  }
  return 0;
}
