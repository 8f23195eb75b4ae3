/* test_featured.c: integration test of taca-featured and taca_client on 127.0.0.1 with ephemeral ports.
 *
 * main() writes synthetic stores (tests/integration/featured_synth.h: every value follows a formula)
 * and starts real daemons: a full store with a CLIP text tower for caption search, two shards plus a
 * replica, a server with a tiny message limit, and a TLS + bearer-token server. The tests (forked by
 * Check) exercise every RPC through the client library and raw gRPC calls, every error path, the
 * epoch permutation against an independent implementation of its documented algorithm, two ranks
 * covering the data exactly once, SIGTERM during a stream (clean UNAVAILABLE status, NOT_SERVING on
 * Health.Watch, exit status 0), replica failover and stream resumption, /metrics and /healthz, and
 * `taca query --server` (its code is compiled in). At the end every daemon must exit 0 on SIGTERM. */
#include <arpa/inet.h>
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <grpc/byte_buffer_reader.h>
#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <grpc/support/time.h>
#include <math.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "base/clock.h"
#include "grpc/health/v1/health.pb-c.h"
#include "nn/clip.h"
#include "base/npy.h"
#include "text/tokenizer.h"
#include "client/taca_client.h"
#include "taca/v1/feature_cache.pb-c.h"
#include "tests/integration/featured_synth.h"

/* `taca query --server` lives in the taca tool: compile it in to call it directly. */
#include "services/cli/cli_util.c"
#include "services/cli/cmd_query_server.c"

#define TINY_MODEL TACA_FIXTURES_DIR "/clip/hf_gelu_f16"

/* ---------- daemons ---------- */

typedef struct daemon_t {
  pid_t pid;
  int port, mport;
  char portfile[512], logfile[512];
} daemon_t;

static char g_tmp[256];
static char g_full[300], g_shard0[300], g_shard1[300], g_big[300];
static daemon_t D_full, D_s0, D_s1, D_s1r, D_small, D_tls;
static int g_tls_ok;
static char g_cert[300], g_key[300];

/* Starts taca-featured on 127.0.0.1:0 with extra args (NULL-terminated); waits for its port file. */
static int start_daemon(daemon_t *d, const char *name, const char *db, const char *const *extra) {
  memset(d, 0, sizeof *d);
  snprintf(d->portfile, sizeof d->portfile, "%s/%s.ports", g_tmp, name);
  snprintf(d->logfile, sizeof d->logfile, "%s/%s.log", g_tmp, name);
  unlink(d->portfile);
  const char *argv[64];
  int n = 0;
  argv[n++] = TACA_BIN_DIR "/taca-featured";
  argv[n++] = "--db";
  argv[n++] = db;
  argv[n++] = "--listen";
  argv[n++] = "127.0.0.1:0";
  argv[n++] = "--metrics";
  argv[n++] = "127.0.0.1:0";
  argv[n++] = "--port-file";
  argv[n++] = d->portfile;
  argv[n++] = "--log";
  argv[n++] = d->logfile;
  argv[n++] = "--threads";
  argv[n++] = "2";
  for (int i = 0; extra && extra[i]; i++) argv[n++] = extra[i];
  argv[n] = NULL;
  pid_t pid = fork();
  if (pid < 0) return -1;
  if (pid == 0) {
    execv(argv[0], (char *const *)argv);
    _exit(127);
  }
  d->pid = pid;
  double t0 = taca_now_s();
  while (taca_now_s() - t0 < 30) {
    FILE *f = fopen(d->portfile, "r");
    if (f) {
      int ok = fscanf(f, "grpc=%d metrics=%d", &d->port, &d->mport) == 2;
      fclose(f);
      if (ok) return 0;
    }
    int st;
    if (waitpid(pid, &st, WNOHANG) == pid) {
      fprintf(stderr, "taca-featured %s exited early (status %d); log %s\n", name, st, d->logfile);
      d->pid = 0;
      return -1;
    }
    usleep(20000);
  }
  fprintf(stderr, "taca-featured %s did not write its port file\n", name);
  return -1;
}

/* Sends sig and waits up to timeout_s; returns the exit status, or -1 (killed / timed out). */
static int stop_daemon(daemon_t *d, int sig, double timeout_s) {
  if (d->pid <= 0) return -1;
  kill(d->pid, sig);
  double t0 = taca_now_s();
  int st;
  while (taca_now_s() - t0 < timeout_s) {
    if (waitpid(d->pid, &st, WNOHANG) == d->pid) {
      d->pid = 0;
      return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
    }
    usleep(10000);
  }
  kill(d->pid, SIGKILL);
  waitpid(d->pid, &st, 0);
  d->pid = 0;
  return -1;
}

static void addr_of(const daemon_t *d, char *buf, size_t cap) { snprintf(buf, cap, "127.0.0.1:%d", d->port); }

static taca_client *connect_to(const char *addrs, taca_error *err) {
  taca_client_options o = {.timeout_ms = 20000, .retry_budget_ms = 3000};
  taca_client *c = NULL;
  if (taca_client_connect(&c, addrs, &o, err)) return NULL;
  return c;
}

static taca_client *connect_d(const daemon_t *d) {
  char a[64];
  addr_of(d, a, sizeof a);
  taca_error err = {{0}};
  taca_client *c = connect_to(a, &err);
  ck_assert_msg(c != NULL, "connect %s: %s", a, err.msg);
  return c;
}

/* ---------- raw gRPC (to see exact status codes and send hostile bytes) ---------- */

typedef struct raw_result {
  grpc_status_code code;
  char details[1024];
  uint8_t *body;
  size_t len;
} raw_result;

static void raw_unary(const daemon_t *d, const char *method, const void *req, size_t len, raw_result *r) {
  memset(r, 0, sizeof *r);
  grpc_init();
  char target[64];
  addr_of(d, target, sizeof target);
  grpc_channel_credentials *cr = grpc_insecure_credentials_create();
  grpc_channel *ch = grpc_channel_create(target, cr, NULL);
  grpc_channel_credentials_release(cr);
  grpc_completion_queue *cq = grpc_completion_queue_create_for_pluck(NULL);
  gpr_timespec dl = gpr_time_add(gpr_now(GPR_CLOCK_REALTIME), gpr_time_from_millis(20000, GPR_TIMESPAN));
  grpc_slice ms = grpc_slice_from_static_string(method);
  grpc_call *call = grpc_channel_create_call(ch, NULL, GRPC_PROPAGATE_DEFAULTS, cq, ms, NULL, dl, NULL);
  grpc_slice rs = grpc_slice_from_copied_buffer(req, len);
  grpc_byte_buffer *send = grpc_raw_byte_buffer_create(&rs, 1), *recv = NULL;
  grpc_slice_unref(rs);
  grpc_metadata_array imd, tmd;
  grpc_metadata_array_init(&imd);
  grpc_metadata_array_init(&tmd);
  grpc_slice details = grpc_empty_slice();
  grpc_op ops[6];
  memset(ops, 0, sizeof ops);
  ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
  ops[1].op = GRPC_OP_SEND_MESSAGE;
  ops[1].data.send_message.send_message = send;
  ops[2].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
  ops[3].op = GRPC_OP_RECV_INITIAL_METADATA;
  ops[3].data.recv_initial_metadata.recv_initial_metadata = &imd;
  ops[4].op = GRPC_OP_RECV_MESSAGE;
  ops[4].data.recv_message.recv_message = &recv;
  ops[5].op = GRPC_OP_RECV_STATUS_ON_CLIENT;
  ops[5].data.recv_status_on_client.trailing_metadata = &tmd;
  ops[5].data.recv_status_on_client.status = &r->code;
  ops[5].data.recv_status_on_client.status_details = &details;
  ck_assert_int_eq(grpc_call_start_batch(call, ops, 6, (void *)1, NULL), GRPC_CALL_OK);
  grpc_completion_queue_pluck(cq, (void *)1, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
  snprintf(r->details, sizeof r->details, "%.*s", (int)GRPC_SLICE_LENGTH(details),
           (const char *)GRPC_SLICE_START_PTR(details));
  if (recv) {
    grpc_byte_buffer_reader rd;
    grpc_byte_buffer_reader_init(&rd, recv);
    grpc_slice all = grpc_byte_buffer_reader_readall(&rd);
    r->len = GRPC_SLICE_LENGTH(all);
    r->body = malloc(r->len + 1);
    memcpy(r->body, GRPC_SLICE_START_PTR(all), r->len);
    grpc_slice_unref(all);
    grpc_byte_buffer_reader_destroy(&rd);
    grpc_byte_buffer_destroy(recv);
  }
  grpc_byte_buffer_destroy(send);
  grpc_slice_unref(details);
  grpc_metadata_array_destroy(&imd);
  grpc_metadata_array_destroy(&tmd);
  grpc_call_unref(call);
  grpc_completion_queue_shutdown(cq);
  grpc_completion_queue_pluck(cq, NULL, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
  grpc_completion_queue_destroy(cq);
  grpc_channel_destroy(ch);
  grpc_shutdown();
}

static void expect_status(raw_result *r, grpc_status_code code, const char *needle) {
  ck_assert_msg(r->code == code, "status %d (%s), expected %d", r->code, r->details, code);
  if (needle) ck_assert_msg(strstr(r->details, needle), "'%s' not in '%s'", needle, r->details);
  free(r->body);
  r->body = NULL;
}

/* A raw server stream: messages pulled one at a time. */
typedef struct raw_stream {
  grpc_channel *ch;
  grpc_completion_queue *cq;
  grpc_call *call;
  grpc_byte_buffer *send, *recv;
  grpc_metadata_array imd, tmd;
  grpc_status_code code;
  grpc_slice details;
} raw_stream;

static void raw_stream_open(raw_stream *s, const daemon_t *d, const char *method, const void *req, size_t len) {
  memset(s, 0, sizeof *s);
  grpc_init();
  char target[64];
  addr_of(d, target, sizeof target);
  grpc_channel_credentials *cr = grpc_insecure_credentials_create();
  s->ch = grpc_channel_create(target, cr, NULL);
  grpc_channel_credentials_release(cr);
  s->cq = grpc_completion_queue_create_for_pluck(NULL);
  gpr_timespec dl = gpr_time_add(gpr_now(GPR_CLOCK_REALTIME), gpr_time_from_millis(60000, GPR_TIMESPAN));
  s->call = grpc_channel_create_call(s->ch, NULL, GRPC_PROPAGATE_DEFAULTS, s->cq, grpc_slice_from_static_string(method),
                                     NULL, dl, NULL);
  grpc_slice rs = grpc_slice_from_copied_buffer(req, len);
  s->send = grpc_raw_byte_buffer_create(&rs, 1);
  grpc_slice_unref(rs);
  grpc_metadata_array_init(&s->imd);
  grpc_metadata_array_init(&s->tmd);
  s->details = grpc_empty_slice();
  grpc_op ops[4];
  memset(ops, 0, sizeof ops);
  ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
  ops[1].op = GRPC_OP_SEND_MESSAGE;
  ops[1].data.send_message.send_message = s->send;
  ops[2].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
  ops[3].op = GRPC_OP_RECV_INITIAL_METADATA;
  ops[3].data.recv_initial_metadata.recv_initial_metadata = &s->imd;
  ck_assert_int_eq(grpc_call_start_batch(s->call, ops, 4, (void *)1, NULL), GRPC_CALL_OK);
  grpc_completion_queue_pluck(s->cq, (void *)1, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
}

/* 1 and a malloc'd message, or 0 at the end (status in s->code / s->details). */
static int raw_stream_next(raw_stream *s, uint8_t **msg, size_t *len) {
  grpc_op op;
  memset(&op, 0, sizeof op);
  op.op = GRPC_OP_RECV_MESSAGE;
  op.data.recv_message.recv_message = &s->recv;
  ck_assert_int_eq(grpc_call_start_batch(s->call, &op, 1, (void *)2, NULL), GRPC_CALL_OK);
  grpc_completion_queue_pluck(s->cq, (void *)2, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
  if (s->recv) {
    grpc_byte_buffer_reader rd;
    grpc_byte_buffer_reader_init(&rd, s->recv);
    grpc_slice all = grpc_byte_buffer_reader_readall(&rd);
    *len = GRPC_SLICE_LENGTH(all);
    *msg = malloc(*len + 1);
    memcpy(*msg, GRPC_SLICE_START_PTR(all), *len);
    grpc_slice_unref(all);
    grpc_byte_buffer_reader_destroy(&rd);
    grpc_byte_buffer_destroy(s->recv);
    s->recv = NULL;
    return 1;
  }
  memset(&op, 0, sizeof op);
  op.op = GRPC_OP_RECV_STATUS_ON_CLIENT;
  op.data.recv_status_on_client.trailing_metadata = &s->tmd;
  op.data.recv_status_on_client.status = &s->code;
  op.data.recv_status_on_client.status_details = &s->details;
  ck_assert_int_eq(grpc_call_start_batch(s->call, &op, 1, (void *)3, NULL), GRPC_CALL_OK);
  grpc_completion_queue_pluck(s->cq, (void *)3, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
  return 0;
}

static void raw_stream_close(raw_stream *s) {
  grpc_byte_buffer_destroy(s->send);
  grpc_slice_unref(s->details);
  grpc_metadata_array_destroy(&s->imd);
  grpc_metadata_array_destroy(&s->tmd);
  grpc_call_unref(s->call);
  grpc_completion_queue_shutdown(s->cq);
  grpc_completion_queue_pluck(s->cq, NULL, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
  grpc_completion_queue_destroy(s->cq);
  grpc_channel_destroy(s->ch);
  grpc_shutdown();
}

static size_t pack_get_batch(uint8_t *buf, const uint64_t *idx, size_t n, Taca__V1__Fields *f) {
  Taca__V1__GetBatchRequest req = TACA__V1__GET_BATCH_REQUEST__INIT;
  req.n_indices = n;
  req.indices = (uint64_t *)idx;
  req.fields = f;
  return taca__v1__get_batch_request__pack(&req, buf);
}

static size_t pack_stream(uint8_t *buf, uint64_t seed, uint64_t epoch, uint32_t rank, uint32_t world, uint32_t bs,
                          uint64_t start, Taca__V1__Fields *f) {
  Taca__V1__StreamEpochRequest req = TACA__V1__STREAM_EPOCH_REQUEST__INIT;
  req.seed = seed;
  req.epoch = epoch;
  req.rank = rank;
  req.world_size = world;
  req.batch_size = bs;
  req.start_batch = start;
  req.fields = f;
  return taca__v1__stream_epoch_request__pack(&req, buf);
}

/* ---------- reference values ---------- */

static void check_sample_fields(const taca_batch *b, size_t r, uint64_t i, int pixel_size) {
  ck_assert_uint_eq(b->indices[r], i);
  char key[32];
  synth_key(i, key, sizeof key);
  if (b->keys) ck_assert_str_eq(b->keys[r], key);
  if (b->labels) ck_assert_int_eq(b->labels[r], synth_label(i));
  if (b->tokens) {
    int32_t tok[77];
    synth_tokens(i, tok);
    ck_assert_mem_eq(b->tokens + r * 77, tok, sizeof tok);
  }
  if (b->pixels) {
    size_t plen = 3 * (size_t)pixel_size * (size_t)pixel_size;
    ck_assert_uint_eq(b->pixel_sizes[r], plen);
    for (size_t j = 0; j < plen; j++) ck_assert_uint_eq(b->pixels[r][j], synth_pixel(i, j));
  }
  for (int e = 0; e < b->n_embeddings; e++) {
    const taca_embeddings *te = &b->embeddings[e];
    int model = !strcmp(te->model, "old") ? 0 : !strcmp(te->model, "wide") ? 1 : 2;
    int mod = te->modality == TACA_TEXT;
    int stored = !(model == 0 && mod == 1 && !synth_has_text(i));
    ck_assert_int_eq(te->present[r], stored);
    for (int j = 0; j < te->dim; j++) {
      float v;
      if (te->dtype == TACA_DT_F16) v = taca_f16_to_f32(((const uint16_t *)te->data)[r * te->dim + j]);
      else v = ((const float *)te->data)[r * te->dim + j];
      float want = stored ? synth_value(i, j, model, mod) : 0.0f;
      ck_assert_msg(v == want, "index %llu %s[%d][%d] = %g, want %g", (unsigned long long)i, te->model, mod, j, v,
                    want);
    }
  }
}

/* Brute-force top-k over the synthetic vectors of (model, modality) for indices [b, e). */
typedef struct hit {
  float s;
  uint64_t i;
} hit;

static int cmp_hit(const void *a, const void *b) {
  const hit *x = a, *y = b;
  if (x->s != y->s) return x->s > y->s ? -1 : 1;
  return x->i < y->i ? -1 : x->i > y->i;
}

static float ref_score(const float *q, uint64_t i, int dim, int model, int mod, int cosine) {
  double d = 0, nq = 0, nr = 0;
  for (int j = 0; j < dim; j++) {
    double r = synth_value(i, j, model, mod);
    d += q[j] * r;
    nq += (double)q[j] * q[j];
    nr += r * r;
  }
  if (cosine) d = (nq > 0 && nr > 0) ? d / sqrt(nq) / sqrt(nr) : 0;
  return (float)d;
}

/* The server's hits must be a true top-k: scores match the reference at every rank (within tol),
 * and each hit's own reference score equals the score returned. */
static void check_topk(const taca_search_result *r, int q, const float *qv, int dim, int model, int mod, int cosine,
                       uint64_t n, int k) {
  hit *h = malloc(n * sizeof *h);
  float maxabs = 0;
  for (uint64_t i = 0; i < n; i++) {
    h[i].s = ref_score(qv, i, dim, model, mod, cosine);
    h[i].i = i;
    if (fabsf(h[i].s) > maxabs) maxabs = fabsf(h[i].s);
  }
  qsort(h, n, sizeof *h, cmp_hit);
  int want = k < (int)n ? k : (int)n;
  ck_assert_int_eq(r->count[q], want);
  float tol = 1e-4f * (maxabs > 1 ? maxabs : 1); /* sgemm F32 vs double reference */
  for (int j = 0; j < want; j++) {
    size_t at = (size_t)q * (size_t)r->k + (size_t)j;
    ck_assert_msg(fabsf(r->scores[at] - h[j].s) <= tol, "rank %d: score %g, reference %g", j, r->scores[at], h[j].s);
    float own = ref_score(qv, r->indices[at], dim, model, mod, cosine);
    ck_assert_msg(fabsf(own - r->scores[at]) <= tol, "rank %d: index %llu scores %g, server said %g", j,
                  (unsigned long long)r->indices[at], own, r->scores[at]);
    if (j > 0) ck_assert(r->scores[at] <= r->scores[at - 1]);
    if (r->keys) {
      char key[32];
      synth_key(r->indices[at], key, sizeof key);
      ck_assert_str_eq(r->keys[at], key);
    }
  }
  free(h);
}

/* An independent implementation of the permutation documented in services/featured/epoch.h. */
static uint64_t sm64(uint64_t *x) {
  uint64_t z = (*x += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

static void ref_perm(uint32_t *p, uint32_t n, uint64_t seed, uint64_t epoch) {
  uint64_t x = seed, s[4];
  uint64_t y = sm64(&x) ^ epoch;
  for (int i = 0; i < 4; i++) s[i] = sm64(&y);
  for (uint32_t i = 0; i < n; i++) p[i] = i;
  for (uint32_t i = n - 1; i >= 1; i--) {
    uint64_t range = (uint64_t)i + 1, l;
    unsigned __int128 m;
    do {
      uint64_t r = ((s[1] * 5) << 7 | (s[1] * 5) >> 57) * 9;
      uint64_t t = s[1] << 17;
      s[2] ^= s[0], s[3] ^= s[1], s[1] ^= s[2], s[0] ^= s[3], s[2] ^= t;
      s[3] = (s[3] << 45) | (s[3] >> 19);
      m = (unsigned __int128)r * range;
      l = (uint64_t)m;
    } while (l < range && l < (0 - range) % range);
    uint32_t j = (uint32_t)(m >> 64), tmp = p[i];
    p[i] = p[j];
    p[j] = tmp;
  }
}

/* ---------- tests: Info, GetBatch, Lookup ---------- */

START_TEST(test_info) {
  taca_client *c = connect_d(&D_full);
  const taca_dataset_info *in = taca_client_info(c);
  ck_assert_uint_eq(in->samples, 100);
  ck_assert_uint_eq(in->begin, 0);
  ck_assert_uint_eq(in->end, 100);
  ck_assert_int_eq(in->n_servers, 1);
  ck_assert_int_eq(in->n_shards, 1);
  ck_assert_int_eq(in->n_models, 3);
  ck_assert_str_eq(in->models[0].name, "old");
  ck_assert_int_eq(in->models[0].image_dim, 32);
  ck_assert_int_eq(in->models[0].text_dim, 32);
  ck_assert_int_eq(in->models[0].dtype, TACA_DT_F16);
  ck_assert_float_eq_tol(in->models[0].logit_scale, logf(100.0f), 1e-6);
  ck_assert_uint_eq(in->models[0].image_count, 100);
  ck_assert_uint_eq(in->models[0].text_count, 100 - 6); /* i % 17 == 3: 3, 20, 37, 54, 71, 88 */
  ck_assert_int_eq(in->models[0].caption_search, 0);
  ck_assert_str_eq(in->models[1].name, "wide");
  ck_assert_int_eq(in->models[1].dtype, TACA_DT_F32);
  ck_assert_int_eq(in->models[1].text_dim, 0);
  ck_assert_str_eq(in->models[2].name, "tiny");
  ck_assert_int_eq(in->models[2].caption_search, 1);
  ck_assert_int_eq(in->has_pixels, 1);
  ck_assert_int_eq(in->pixel_size, 8);
  ck_assert_str_eq(in->pixel_codec, "raw");
  ck_assert_int_eq(in->context_length, 77);
  ck_assert_int_eq(in->max_batch, 64);
  ck_assert_str_eq(taca_client_info(c)->servers[0].version, "taca-featured 0.1.0");
  taca_error err = {{0}};
  ck_assert_msg(taca_client_health(c, &err) == 0, "%s", err.msg);
  taca_client_close(c);
}
END_TEST

START_TEST(test_get_batch_values) {
  taca_client *c = connect_d(&D_full);
  uint64_t idx[] = {0, 5, 99, 17, 3, 3, 54};
  size_t n = sizeof idx / sizeof idx[0];
  taca_fields f = {.pixels = 1, .tokens = 1, .labels = 1, .keys = 1, .n_embeddings = 4};
  f.embeddings[0].model = "old";
  f.embeddings[1].model = "old";
  f.embeddings[1].modality = TACA_TEXT;
  f.embeddings[2].model = "wide";
  f.embeddings[3].model = "tiny";
  f.embeddings[3].modality = TACA_TEXT;
  for (int as_f32 = 0; as_f32 < 2; as_f32++) {
    f.embeddings_as_f32 = as_f32;
    taca_batch b;
    taca_error err = {{0}};
    ck_assert_msg(taca_client_get_batch(c, idx, n, &f, &b, &err) == 0, "%s", err.msg);
    ck_assert_uint_eq(b.n, n);
    ck_assert_int_eq(b.embeddings[0].dtype, as_f32 ? TACA_DT_F32 : TACA_DT_F16);
    ck_assert_int_eq(b.embeddings[2].dtype, TACA_DT_F32);
    for (size_t r = 0; r < n; r++) check_sample_fields(&b, r, idx[r], 8);
    taca_batch_free(&b);
  }
  /* indices only; and an empty request */
  taca_batch b;
  taca_error err = {{0}};
  ck_assert_msg(taca_client_get_batch(c, idx, n, NULL, &b, &err) == 0, "%s", err.msg);
  ck_assert_ptr_null(b.tokens);
  ck_assert_ptr_null(b.pixels);
  ck_assert_uint_eq(b.indices[2], 99);
  taca_batch_free(&b);
  ck_assert_msg(taca_client_get_batch(c, idx, 0, &f, &b, &err) == 0, "%s", err.msg);
  ck_assert_uint_eq(b.n, 0);
  taca_batch_free(&b);
  /* more indices than --max-batch: the client splits the call */
  uint64_t many[150];
  for (int i = 0; i < 150; i++) many[i] = (uint64_t)(i * 37 % 100);
  taca_fields fk = {.keys = 1, .n_embeddings = 1};
  fk.embeddings[0].model = "wide";
  ck_assert_msg(taca_client_get_batch(c, many, 150, &fk, &b, &err) == 0, "%s", err.msg);
  for (size_t r = 0; r < 150; r++) check_sample_fields(&b, r, many[r], 8);
  taca_batch_free(&b);
  taca_client_close(c);
}
END_TEST

START_TEST(test_get_batch_errors) {
  uint8_t buf[4096];
  raw_result r;
  uint64_t bad[] = {1, 100};
  raw_unary(&D_full, "/taca.v1.FeatureCache/GetBatch", buf, pack_get_batch(buf, bad, 2, NULL), &r);
  expect_status(&r, GRPC_STATUS_INVALID_ARGUMENT, "indices[1] = 100 is outside the range this server serves, [0, 100)");
  uint64_t many[65] = {0};
  raw_unary(&D_full, "/taca.v1.FeatureCache/GetBatch", buf, pack_get_batch(buf, many, 65, NULL), &r);
  expect_status(&r, GRPC_STATUS_INVALID_ARGUMENT, "at most 64 per request (--max-batch)");
  Taca__V1__Fields f = TACA__V1__FIELDS__INIT;
  Taca__V1__EmbeddingRef e = TACA__V1__EMBEDDING_REF__INIT, *ep = &e;
  f.n_embeddings = 1;
  f.embeddings = &ep;
  e.model = "nope";
  uint64_t one = 1;
  raw_unary(&D_full, "/taca.v1.FeatureCache/GetBatch", buf, pack_get_batch(buf, &one, 1, &f), &r);
  expect_status(&r, GRPC_STATUS_NOT_FOUND, "model 'nope' is not in this store (it has: old, wide, tiny)");
  e.model = "wide";
  e.modality = TACA__V1__MODALITY__MODALITY_TEXT;
  raw_unary(&D_full, "/taca.v1.FeatureCache/GetBatch", buf, pack_get_batch(buf, &one, 1, &f), &r);
  expect_status(&r, GRPC_STATUS_NOT_FOUND, "model 'wide' stores no text embeddings");
  e.modality = 7;
  raw_unary(&D_full, "/taca.v1.FeatureCache/GetBatch", buf, pack_get_batch(buf, &one, 1, &f), &r);
  expect_status(&r, GRPC_STATUS_INVALID_ARGUMENT, "modality 7");
  /* hostile bytes */
  static const uint8_t junk[] = {0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f, 0x01};
  raw_unary(&D_full, "/taca.v1.FeatureCache/GetBatch", junk, sizeof junk, &r);
  expect_status(&r, GRPC_STATUS_INVALID_ARGUMENT, "malformed GetBatchRequest");
  raw_unary(&D_full, "/taca.v1.FeatureCache/Search", junk, sizeof junk, &r);
  expect_status(&r, GRPC_STATUS_INVALID_ARGUMENT, "malformed SearchRequest");
  raw_unary(&D_full, "/taca.v1.FeatureCache/NoSuchMethod", junk, sizeof junk, &r);
  expect_status(&r, GRPC_STATUS_UNIMPLEMENTED, "/taca.v1.FeatureCache/NoSuchMethod");
  raw_unary(&D_full, "/other.Service/Get", NULL, 0, &r);
  expect_status(&r, GRPC_STATUS_UNIMPLEMENTED, "not served here");
  /* pixels from a store without pixels */
  Taca__V1__Fields fp = TACA__V1__FIELDS__INIT;
  fp.pixels = 1;
  raw_unary(&D_s0, "/taca.v1.FeatureCache/GetBatch", buf, pack_get_batch(buf, &one, 1, &fp), &r);
  expect_status(&r, GRPC_STATUS_FAILED_PRECONDITION, "holds no pixels");
  /* the client names the ranges it knows before asking */
  taca_client *c = connect_d(&D_full);
  taca_batch b;
  taca_error err = {{0}};
  ck_assert_int_eq(taca_client_get_batch(c, bad, 2, NULL, &b, &err), -1);
  ck_assert_msg(strstr(err.msg, "indices[1] = 100 is served by no server (ranges: [0, 100))"), "%s", err.msg);
  taca_fields tf = {.n_embeddings = 1};
  tf.embeddings[0].model = "missing";
  ck_assert_int_eq(taca_client_get_batch(c, &one, 1, &tf, &b, &err), -1);
  ck_assert_msg(strstr(err.msg, "model 'missing' is not in the data set (it has: old, wide, tiny)"), "%s", err.msg);
  taca_client_close(c);
}
END_TEST

START_TEST(test_message_limit) {
  /* D_small: --max-message 4096: a response over it, and a request over it. */
  uint8_t buf[32768];
  uint64_t idx[40];
  for (int i = 0; i < 40; i++) idx[i] = (uint64_t)i;
  Taca__V1__Fields f = TACA__V1__FIELDS__INIT;
  f.pixels = 1;
  raw_result r;
  raw_unary(&D_small, "/taca.v1.FeatureCache/GetBatch", buf, pack_get_batch(buf, idx, 40, &f), &r);
  expect_status(&r, GRPC_STATUS_RESOURCE_EXHAUSTED, "over the 4096-byte message limit (--max-message)");
  uint64_t big[3000]; /* 3000 six-byte varints: an 18 KB request */
  for (int i = 0; i < 3000; i++) big[i] = 1ull << 40;
  raw_unary(&D_small, "/taca.v1.FeatureCache/GetBatch", buf, pack_get_batch(buf, big, 3000, NULL), &r);
  ck_assert_int_eq(r.code, GRPC_STATUS_RESOURCE_EXHAUSTED); /* refused by gRPC's receive limit */
  free(r.body);
  /* the same small request works */
  raw_unary(&D_small, "/taca.v1.FeatureCache/GetBatch", buf, pack_get_batch(buf, idx, 4, &f), &r);
  expect_status(&r, GRPC_STATUS_OK, NULL);
}
END_TEST

START_TEST(test_lookup) {
  taca_client *c = connect_d(&D_full);
  const char *keys[] = {"s0000042", "s0000007", "s0000042"};
  taca_fields f = {.labels = 1, .tokens = 1, .n_embeddings = 1};
  f.embeddings[0].model = "old";
  f.embeddings[0].modality = TACA_TEXT;
  taca_batch b;
  taca_error err = {{0}};
  ck_assert_msg(taca_client_lookup(c, keys, 3, &f, 0, &b, &err) == 0, "%s", err.msg);
  ck_assert_uint_eq(b.n, 3);
  check_sample_fields(&b, 0, 42, 8);
  check_sample_fields(&b, 1, 7, 8);
  check_sample_fields(&b, 2, 42, 8);
  taca_batch_free(&b);
  const char *some[] = {"s0000001", "nope", "s0000002"};
  ck_assert_int_eq(taca_client_lookup(c, some, 3, &f, 0, &b, &err), -1);
  ck_assert_msg(strstr(err.msg, "NOT_FOUND") && strstr(err.msg, "'nope'"), "%s", err.msg);
  ck_assert_msg(taca_client_lookup(c, some, 3, &f, 1, &b, &err) == 0, "%s", err.msg);
  ck_assert_uint_eq(b.n, 2);
  check_sample_fields(&b, 0, 1, 8);
  check_sample_fields(&b, 1, 2, 8);
  taca_batch_free(&b);
  taca_client_close(c);
  /* raw: missing_keys, empty key */
  Taca__V1__LookupRequest req = TACA__V1__LOOKUP_REQUEST__INIT;
  char *rk[] = {"s0000001", "zz", ""};
  req.keys = rk;
  req.n_keys = 2;
  req.allow_missing = 1;
  uint8_t buf[256];
  raw_result r;
  raw_unary(&D_full, "/taca.v1.FeatureCache/Lookup", buf, taca__v1__lookup_request__pack(&req, buf), &r);
  ck_assert_int_eq(r.code, GRPC_STATUS_OK);
  Taca__V1__LookupResponse *lr = taca__v1__lookup_response__unpack(NULL, r.len, r.body);
  ck_assert_ptr_nonnull(lr);
  ck_assert_uint_eq(lr->batch->n_indices, 1);
  ck_assert_uint_eq(lr->batch->indices[0], 1);
  ck_assert_uint_eq(lr->n_missing_keys, 1);
  ck_assert_str_eq(lr->missing_keys[0], "zz");
  taca__v1__lookup_response__free_unpacked(lr, NULL);
  free(r.body);
  req.n_keys = 3;
  raw_unary(&D_full, "/taca.v1.FeatureCache/Lookup", buf, taca__v1__lookup_request__pack(&req, buf), &r);
  expect_status(&r, GRPC_STATUS_INVALID_ARGUMENT, "keys[2] is empty");
}
END_TEST

/* ---------- Search ---------- */

START_TEST(test_search_vectors) {
  taca_client *c = connect_d(&D_full);
  float q[2 * 32];
  for (int j = 0; j < 32; j++) {
    q[j] = synth_value(42, j, 0, 0);
    q[32 + j] = (float)((j % 5) - 2) * 0.25f;
  }
  for (int cosine = 0; cosine < 2; cosine++) {
    taca_search_result r;
    taca_error err = {{0}};
    ck_assert_msg(taca_client_search(c, "old", TACA_IMAGE, q, NULL, 2, 7, cosine ? TACA_METRIC_COSINE : TACA_METRIC_IP,
                                     1, &r, &err) == 0, "%s", err.msg);
    check_topk(&r, 0, q, 32, 0, 0, cosine, 100, 7);
    check_topk(&r, 1, q + 32, 32, 0, 0, cosine, 100, 7);
    if (cosine) ck_assert_uint_eq(r.indices[0], 42); /* its own vector */
    taca_search_result_free(&r);
  }
  /* k over the count: every stored vector; text embeddings with holes */
  taca_search_result r;
  taca_error err = {{0}};
  ck_assert_msg(taca_client_search(c, "old", TACA_TEXT, q, NULL, 1, 200, TACA_METRIC_IP, 0, &r, &err) == 0, "%s",
                err.msg);
  ck_assert_int_eq(r.count[0], 94);
  ck_assert_ptr_null(r.keys);
  taca_search_result_free(&r);
  ck_assert_int_eq(taca_client_search(c, "old", TACA_IMAGE, NULL, (const char *const[]){"x"}, 1, 3, TACA_METRIC_IP, 0,
                                      &r, &err), -1);
  ck_assert_msg(strstr(err.msg, "FAILED_PRECONDITION") && strstr(err.msg, "--model old=PATH[:ARCH]") &&
                    strstr(err.msg, "loaded: tiny"), "%s", err.msg);
  taca_client_close(c);

  /* raw error paths */
  uint8_t buf[1024];
  raw_result rr;
  Taca__V1__SearchRequest req = TACA__V1__SEARCH_REQUEST__INIT;
  req.model = "old";
  req.queries = q;
  req.n_queries = 32;
  req.k = 0;
  raw_unary(&D_full, "/taca.v1.FeatureCache/Search", buf, taca__v1__search_request__pack(&req, buf), &rr);
  expect_status(&rr, GRPC_STATUS_INVALID_ARGUMENT, "k = 0: it must be in [1, 10000] (--max-k)");
  req.k = 3;
  req.n_queries = 31;
  raw_unary(&D_full, "/taca.v1.FeatureCache/Search", buf, taca__v1__search_request__pack(&req, buf), &rr);
  expect_status(&rr, GRPC_STATUS_INVALID_ARGUMENT, "31 floats, not a multiple of model 'old' image embedding width 32");
  req.n_queries = 32;
  char *cap[] = {"a dog"};
  req.captions = cap;
  req.n_captions = 1;
  raw_unary(&D_full, "/taca.v1.FeatureCache/Search", buf, taca__v1__search_request__pack(&req, buf), &rr);
  expect_status(&rr, GRPC_STATUS_INVALID_ARGUMENT, "not both");
  req.n_captions = 0;
  req.n_queries = 0;
  raw_unary(&D_full, "/taca.v1.FeatureCache/Search", buf, taca__v1__search_request__pack(&req, buf), &rr);
  expect_status(&rr, GRPC_STATUS_INVALID_ARGUMENT, "got neither");
  req.model = "nope";
  req.n_queries = 32;
  raw_unary(&D_full, "/taca.v1.FeatureCache/Search", buf, taca__v1__search_request__pack(&req, buf), &rr);
  expect_status(&rr, GRPC_STATUS_NOT_FOUND, "(it has: old, wide, tiny)");
  req.model = "wide";
  req.modality = TACA__V1__MODALITY__MODALITY_TEXT;
  raw_unary(&D_full, "/taca.v1.FeatureCache/Search", buf, taca__v1__search_request__pack(&req, buf), &rr);
  expect_status(&rr, GRPC_STATUS_NOT_FOUND, "stores no text embeddings");
  req.model = "old";
  req.modality = TACA__V1__MODALITY__MODALITY_IMAGE;
  q[3] = NAN;
  raw_unary(&D_full, "/taca.v1.FeatureCache/Search", buf, taca__v1__search_request__pack(&req, buf), &rr);
  expect_status(&rr, GRPC_STATUS_INVALID_ARGUMENT, "queries[3] (query 0) is not finite");
}
END_TEST

START_TEST(test_search_captions) {
  /* The server's caption search equals a brute-force search with the caption encoded here. */
  taca_error err = {{0}};
  nn_backend *be = nn_backend_cpu_create(1);
  clip_model *m = clip_model_load(TINY_MODEL, NULL, be, &err);
  ck_assert_msg(m != NULL, "%s", err.msg);
  clip_tokenizer *tok = clip_tokenizer_load(NULL, &err);
  ck_assert_msg(tok != NULL, "%s", err.msg);
  const char *caps[] = {"a photo of a red circle", "two blue squares on grass"};
  int32_t tokens[2 * 77];
  for (int i = 0; i < 2; i++) ck_assert_int_eq(clip_tokenize(tok, caps[i], tokens + i * 77, 77, &err), 0);
  float enc[2 * 16];
  ck_assert_msg(clip_encode_text(m, tokens, 2, enc, &err) == 0, "%s", err.msg);
  taca_client *c = connect_d(&D_full);
  for (int mod = 0; mod < 2; mod++) {
    taca_search_result r;
    ck_assert_msg(taca_client_search(c, "tiny", mod ? TACA_TEXT : TACA_IMAGE, NULL, caps, 2, 5, TACA_METRIC_COSINE, 1,
                                     &r, &err) == 0, "%s", err.msg);
    check_topk(&r, 0, enc, 16, 2, mod, 1, 100, 5);
    check_topk(&r, 1, enc + 16, 16, 2, mod, 1, 100, 5);
    taca_search_result_free(&r);
  }
  /* invalid UTF-8 in a caption */
  ck_assert_int_eq(taca_client_search(c, "tiny", TACA_IMAGE, NULL, (const char *const[]){"bad \xff\xfe"}, 1, 5,
                                      TACA_METRIC_IP, 0, &(taca_search_result){0}, &err), -1);
  ck_assert_msg(strstr(err.msg, "INVALID_ARGUMENT") && strstr(err.msg, "caption 0"), "%s", err.msg);
  taca_client_close(c);
  clip_tokenizer_free(tok);
  clip_model_free(m);
  nn_backend_destroy(be);
}
END_TEST

/* ---------- StreamEpoch ---------- */

/* Collects rank r's stream through the client; returns the indices in order. */
static size_t collect_epoch(taca_client *c, uint64_t seed, uint64_t epoch, uint32_t rank, uint32_t world, uint32_t bs,
                            int drop_last, const taca_fields *f, uint64_t *out, size_t cap, int pixel_size) {
  taca_epoch_options o = {.seed = seed, .epoch = epoch, .rank = rank, .world_size = world, .batch_size = bs,
                          .drop_last = drop_last};
  if (f) o.fields = *f;
  taca_epoch *e;
  taca_error err = {{0}};
  ck_assert_msg(taca_epoch_open(c, &o, &e, &err) == 0, "%s", err.msg);
  size_t n = 0;
  uint64_t seq = 0;
  taca_batch b;
  int rc;
  while ((rc = taca_epoch_next(e, &b, &err)) == 1) {
    ck_assert_uint_eq(b.sequence, seq++);
    ck_assert_uint_eq(b.batch_count, taca_epoch_batch_count(e));
    ck_assert(b.n >= 1 && b.n <= bs);
    for (size_t i = 0; i < b.n; i++) {
      if (f) check_sample_fields(&b, i, b.indices[i], pixel_size);
      ck_assert(n < cap);
      out[n++] = b.indices[i];
    }
    taca_batch_free(&b);
  }
  ck_assert_msg(rc == 0, "%s", err.msg);
  ck_assert_uint_eq(seq, taca_epoch_batch_count(e));
  taca_epoch_close(e);
  return n;
}

START_TEST(test_stream_epoch) {
  taca_client *c = connect_d(&D_full);
  uint32_t perm[100];
  ref_perm(perm, 100, 1234, 5);
  uint64_t a[100], b[100];
  taca_fields f = {.keys = 1, .labels = 1, .n_embeddings = 1};
  f.embeddings[0].model = "old";
  f.embeddings[0].modality = TACA_TEXT;
  size_t na = collect_epoch(c, 1234, 5, 0, 2, 7, 0, &f, a, 100, 8);
  size_t nb = collect_epoch(c, 1234, 5, 1, 2, 7, 0, NULL, b, 100, 8);
  ck_assert_uint_eq(na, 50);
  ck_assert_uint_eq(nb, 50);
  int seen[100] = {0};
  for (size_t i = 0; i < 50; i++) {
    ck_assert_uint_eq(a[i], perm[2 * i]);     /* rank 0: positions 0, 2, 4, ... */
    ck_assert_uint_eq(b[i], perm[2 * i + 1]); /* rank 1: positions 1, 3, 5, ... */
    seen[a[i]]++;
    seen[b[i]]++;
  }
  for (int i = 0; i < 100; i++) ck_assert_int_eq(seen[i], 1);
  /* deterministic; another epoch is another order */
  uint64_t again[100], other[100];
  ck_assert_uint_eq(collect_epoch(c, 1234, 5, 0, 2, 7, 0, NULL, again, 100, 8), 50);
  ck_assert_mem_eq(again, a, sizeof(uint64_t) * 50);
  ck_assert_uint_eq(collect_epoch(c, 1234, 6, 0, 2, 7, 0, NULL, other, 100, 8), 50);
  ck_assert(memcmp(other, a, sizeof(uint64_t) * 50) != 0);
  /* three ranks with drop_last: shares 34, 33, 33 -> 4 batches of 8 each */
  uint64_t d[100];
  for (uint32_t r = 0; r < 3; r++) ck_assert_uint_eq(collect_epoch(c, 9, 0, r, 3, 8, 1, NULL, d, 100, 8), 32);
  /* world larger than the data: ranks past it get nothing */
  ck_assert_uint_eq(collect_epoch(c, 9, 0, 120, 150, 4, 0, NULL, d, 100, 8), 0);
  ck_assert_uint_eq(collect_epoch(c, 9, 0, 99, 150, 4, 0, NULL, d, 100, 8), 1);
  taca_client_close(c);

  /* start_batch resumes inside the share; errors */
  uint8_t buf[512], *msg;
  size_t len;
  raw_stream s;
  raw_stream_open(&s, &D_full, "/taca.v1.FeatureCache/StreamEpoch", buf, pack_stream(buf, 1234, 5, 0, 2, 7, 5, NULL));
  ck_assert_int_eq(raw_stream_next(&s, &msg, &len), 1);
  Taca__V1__Batch *bt = taca__v1__batch__unpack(NULL, len, msg);
  ck_assert_uint_eq(bt->sequence, 5);
  ck_assert_uint_eq(bt->batch_count, 8);
  ck_assert_uint_eq(bt->indices[0], perm[2 * 35]);
  taca__v1__batch__free_unpacked(bt, NULL);
  free(msg);
  int more = 0;
  while (raw_stream_next(&s, &msg, &len) == 1) more++, free(msg);
  ck_assert_int_eq(more, 2);
  ck_assert_int_eq(s.code, GRPC_STATUS_OK);
  raw_stream_close(&s);
  struct {
    uint32_t rank, world, bs;
    uint64_t start;
    const char *needle;
  } bad[] = {
      {2, 2, 7, 0, "rank 2 is not below world_size 2"},
      {0, 0, 7, 0, "world_size must be at least 1"},
      {0, 1, 0, 0, "batch_size 0: it must be in [1, 64]"},
      {0, 1, 65, 0, "batch_size 65"},
      {0, 2, 7, 9, "start_batch 9 is beyond the 8 batches"},
  };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    raw_stream_open(&s, &D_full, "/taca.v1.FeatureCache/StreamEpoch", buf,
                    pack_stream(buf, 1, 0, bad[i].rank, bad[i].world, bad[i].bs, bad[i].start, NULL));
    ck_assert_int_eq(raw_stream_next(&s, &msg, &len), 0);
    ck_assert_int_eq(s.code, GRPC_STATUS_INVALID_ARGUMENT);
    char det[512];
    snprintf(det, sizeof det, "%.*s", (int)GRPC_SLICE_LENGTH(s.details), (const char *)GRPC_SLICE_START_PTR(s.details));
    ck_assert_msg(strstr(det, bad[i].needle), "'%s' not in '%s'", bad[i].needle, det);
    raw_stream_close(&s);
  }
}
END_TEST

START_TEST(test_max_streams) {
  /* D_full allows 3 StreamEpoch streams and 3 Health.Watch streams, budgets apart: watches (which
   * need no token) at their limit leave StreamEpoch working, and the 4th watch is refused. */
  raw_stream w[4], s;
  uint8_t buf[64], *msg;
  size_t len;
  for (int i = 0; i < 3; i++) {
    raw_stream_open(&w[i], &D_full, "/grpc.health.v1.Health/Watch", NULL, 0);
    ck_assert_int_eq(raw_stream_next(&w[i], &msg, &len), 1);
    ck_assert_uint_eq(len, 2);
    ck_assert_int_eq(msg[0], 0x08);
    ck_assert_int_eq(msg[1], 1); /* SERVING */
    free(msg);
  }
  raw_stream_open(&w[3], &D_full, "/grpc.health.v1.Health/Watch", NULL, 0);
  ck_assert_int_eq(raw_stream_next(&w[3], &msg, &len), 0);
  ck_assert_int_eq(w[3].code, GRPC_STATUS_RESOURCE_EXHAUSTED);
  ck_assert(strstr((const char *)GRPC_SLICE_START_PTR(w[3].details), "--max-watch 3") != NULL);
  raw_stream_close(&w[3]);
  /* StreamEpoch works at once with every watch slot taken */
  raw_stream_open(&s, &D_full, "/taca.v1.FeatureCache/StreamEpoch", buf, pack_stream(buf, 1, 0, 0, 1, 10, 0, NULL));
  int n = 0;
  while (raw_stream_next(&s, &msg, &len) == 1) n++, free(msg);
  ck_assert_int_eq(s.code, GRPC_STATUS_OK);
  ck_assert_int_eq(n, 10);
  raw_stream_close(&s);
  for (int i = 0; i < 3; i++) {
    grpc_call_cancel(w[i].call, NULL);
    ck_assert_int_eq(raw_stream_next(&w[i], &msg, &len), 0);
    ck_assert_int_eq(w[i].code, GRPC_STATUS_CANCELLED);
    raw_stream_close(&w[i]);
  }
}
END_TEST

/* ---------- Health ---------- */

START_TEST(test_health) {
  Grpc__Health__V1__HealthCheckRequest req = GRPC__HEALTH__V1__HEALTH_CHECK_REQUEST__INIT;
  uint8_t buf[128];
  raw_result r;
  raw_unary(&D_full, "/grpc.health.v1.Health/Check", buf, grpc__health__v1__health_check_request__pack(&req, buf), &r);
  ck_assert_int_eq(r.code, GRPC_STATUS_OK);
  ck_assert_uint_eq(r.len, 2);
  ck_assert_int_eq(r.body[1], 1);
  free(r.body);
  req.service = "taca.v1.FeatureCache";
  raw_unary(&D_full, "/grpc.health.v1.Health/Check", buf, grpc__health__v1__health_check_request__pack(&req, buf), &r);
  expect_status(&r, GRPC_STATUS_OK, NULL);
  req.service = "other.Service";
  raw_unary(&D_full, "/grpc.health.v1.Health/Check", buf, grpc__health__v1__health_check_request__pack(&req, buf), &r);
  expect_status(&r, GRPC_STATUS_NOT_FOUND, "unknown service 'other.Service'");
  /* Watch of an unknown service: SERVICE_UNKNOWN (3), call kept open */
  raw_stream s;
  uint8_t *msg;
  size_t len;
  raw_stream_open(&s, &D_full, "/grpc.health.v1.Health/Watch", buf, grpc__health__v1__health_check_request__pack(&req, buf));
  ck_assert_int_eq(raw_stream_next(&s, &msg, &len), 1);
  ck_assert_int_eq(msg[1], 3);
  free(msg);
  grpc_call_cancel(s.call, NULL);
  ck_assert_int_eq(raw_stream_next(&s, &msg, &len), 0);
  raw_stream_close(&s);
}
END_TEST

/* ---------- /metrics and /healthz ---------- */

static char *http_get(int port, const char *path, int *status) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
  inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
  ck_assert_int_eq(connect(fd, (struct sockaddr *)&a, sizeof a), 0);
  char req[256];
  int n = snprintf(req, sizeof req, "GET %s HTTP/1.1\r\nHost: x\r\n\r\n", path);
  ck_assert_int_eq(write(fd, req, (size_t)n), n);
  size_t cap = 1 << 20, len = 0;
  char *buf = malloc(cap);
  ssize_t got;
  while ((got = read(fd, buf + len, cap - len - 1)) > 0) len += (size_t)got;
  buf[len] = '\0';
  close(fd);
  ck_assert_int_eq(sscanf(buf, "HTTP/1.1 %d", status), 1);
  return buf;
}

START_TEST(test_metrics) {
  int st;
  char *body = http_get(D_full.mport, "/healthz", &st);
  ck_assert_int_eq(st, 200);
  ck_assert(strstr(body, "\r\n\r\nok\n") != NULL);
  free(body);
  body = http_get(D_full.mport, "/nope", &st);
  ck_assert_int_eq(st, 404);
  free(body);
  /* make sure some calls were counted, including an error */
  uint8_t buf[64];
  uint64_t idx = 3, bad = 1000;
  raw_result r;
  raw_unary(&D_full, "/taca.v1.FeatureCache/GetBatch", buf, pack_get_batch(buf, &idx, 1, NULL), &r);
  expect_status(&r, GRPC_STATUS_OK, NULL);
  raw_unary(&D_full, "/taca.v1.FeatureCache/GetBatch", buf, pack_get_batch(buf, &bad, 1, NULL), &r);
  expect_status(&r, GRPC_STATUS_INVALID_ARGUMENT, NULL);
  body = http_get(D_full.mport, "/metrics", &st);
  ck_assert_int_eq(st, 200);
  ck_assert(strstr(body, "Content-Type: text/plain; version=0.0.4") != NULL);
  unsigned long long reqs = 0, inval = 0, ok = 0, count = 0, inf = 0;
  const char *p = strstr(body, "\ntaca_featured_requests_total{method=\"GetBatch\"} ");
  ck_assert_ptr_nonnull(p);
  sscanf(strchr(p + 1, '}') + 2, "%llu", &reqs);
  p = strstr(body, "taca_featured_handled_total{method=\"GetBatch\",code=\"INVALID_ARGUMENT\"} ");
  ck_assert_ptr_nonnull(p);
  sscanf(strchr(p, '}') + 2, "%llu", &inval);
  p = strstr(body, "taca_featured_handled_total{method=\"GetBatch\",code=\"OK\"} ");
  ck_assert_ptr_nonnull(p);
  sscanf(strchr(p, '}') + 2, "%llu", &ok);
  p = strstr(body, "taca_featured_latency_seconds_count{method=\"GetBatch\"} ");
  ck_assert_ptr_nonnull(p);
  sscanf(strchr(p, '}') + 2, "%llu", &count);
  p = strstr(body, "taca_featured_latency_seconds_bucket{method=\"GetBatch\",le=\"+Inf\"} ");
  ck_assert_ptr_nonnull(p);
  sscanf(strchr(p, '}') + 2, "%llu", &inf);
  ck_assert_uint_ge(reqs, 2);
  ck_assert_uint_ge(inval, 1);
  ck_assert_uint_ge(ok, 1);
  ck_assert_uint_eq(count, inf);
  ck_assert(strstr(body, "taca_featured_errors_total{method=\"GetBatch\"} ") != NULL);
  ck_assert(strstr(body, "taca_featured_response_bytes_total{method=\"GetBatch\"} ") != NULL);
  ck_assert(strstr(body, "taca_featured_serving 1\n") != NULL);
  /* every error series exists at 0 before its first error; the lowest bucket is 10 us */
  ck_assert(strstr(body, "taca_featured_handled_total{method=\"Search\",code=\"DATA_LOSS\"} 0\n") != NULL);
  ck_assert(strstr(body, "taca_featured_latency_seconds_bucket{method=\"Lookup\",le=\"0.00001\"} ") != NULL);
  ck_assert(strstr(body, "taca_featured_samples 100\n") != NULL);
  free(body);
}
END_TEST

/* ---------- shards and replicas ---------- */

START_TEST(test_shards) {
  char addrs[256];
  snprintf(addrs, sizeof addrs, "127.0.0.1:%d,127.0.0.1:%d,127.0.0.1:%d", D_s1.port, D_s0.port, D_s1r.port);
  taca_error err = {{0}};
  taca_client *c = connect_to(addrs, &err);
  ck_assert_msg(c != NULL, "%s", err.msg);
  const taca_dataset_info *in = taca_client_info(c);
  ck_assert_uint_eq(in->samples, 100);
  ck_assert_uint_eq(in->begin, 0);
  ck_assert_uint_eq(in->end, 100);
  ck_assert_int_eq(in->n_shards, 2);
  ck_assert_int_eq(in->n_servers, 3);
  ck_assert_uint_eq(in->models[0].image_count, 100);
  uint64_t idx[] = {99, 0, 59, 60, 61, 1, 75, 75};
  taca_fields f = {.keys = 1, .tokens = 1, .labels = 1, .n_embeddings = 2};
  f.embeddings[0].model = "old";
  f.embeddings[1].model = "wide";
  taca_batch b;
  ck_assert_msg(taca_client_get_batch(c, idx, 8, &f, &b, &err) == 0, "%s", err.msg);
  for (size_t r = 0; r < 8; r++) check_sample_fields(&b, r, idx[r], 0);
  taca_batch_free(&b);
  const char *keys[] = {"s0000070", "s0000003", "missing", "s0000060"};
  ck_assert_msg(taca_client_lookup(c, keys, 4, &f, 1, &b, &err) == 0, "%s", err.msg);
  ck_assert_uint_eq(b.n, 3);
  check_sample_fields(&b, 0, 70, 0);
  check_sample_fields(&b, 1, 3, 0);
  check_sample_fields(&b, 2, 60, 0);
  taca_batch_free(&b);
  ck_assert_int_eq(taca_client_lookup(c, keys, 4, &f, 0, &b, &err), -1);
  ck_assert_msg(strstr(err.msg, "'missing' is on no server"), "%s", err.msg);
  float q[32];
  for (int j = 0; j < 32; j++) q[j] = synth_value(77, j, 0, 0);
  taca_search_result r;
  ck_assert_msg(taca_client_search(c, "old", TACA_IMAGE, q, NULL, 1, 9, TACA_METRIC_IP, 1, &r, &err) == 0, "%s",
                err.msg);
  check_topk(&r, 0, q, 32, 0, 0, 0, 100, 9);
  taca_search_result_free(&r);
  /* the epoch over both shards: two ranks cover every index exactly once */
  uint64_t a[100], bb[100];
  size_t na = collect_epoch(c, 77, 1, 0, 2, 6, 0, &f, a, 100, 0);
  size_t nb = collect_epoch(c, 77, 1, 1, 2, 6, 0, NULL, bb, 100, 0);
  ck_assert_uint_eq(na + nb, 100);
  int seen[100] = {0};
  for (size_t i = 0; i < na; i++) seen[a[i]]++;
  for (size_t i = 0; i < nb; i++) seen[bb[i]]++;
  for (int i = 0; i < 100; i++) ck_assert_int_eq(seen[i], 1);
  /* start_batch over both shards (shares of unequal sizes): the batches from k on, as a full
   * epoch delivers them, without the first k streamed */
  taca_epoch_options eo = {.seed = 77, .epoch = 1, .rank = 0, .world_size = 1, .batch_size = 7, .drop_last = 1};
  uint64_t full[100];
  size_t nfull = 0, nbat = 0;
  taca_epoch *ep;
  ck_assert_msg(taca_epoch_open(c, &eo, &ep, &err) == 0, "%s", err.msg);
  const uint64_t total = taca_epoch_batch_count(ep);
  for (taca_batch tb; taca_epoch_next(ep, &tb, &err) == 1; taca_batch_free(&tb), nbat++)
    for (size_t i = 0; i < tb.n; i++) full[nfull++] = tb.indices[i];
  taca_epoch_close(ep);
  ck_assert_uint_eq(nbat, total);
  ck_assert_uint_ge(nbat, 10);
  for (uint64_t k = 0; k <= nbat + 1; k++) {
    eo.start_batch = k;
    ck_assert_msg(taca_epoch_open(c, &eo, &ep, &err) == 0, "start_batch %llu: %s", (unsigned long long)k, err.msg);
    size_t pos = (size_t)(k < nbat ? k : nbat) * 7;
    taca_batch tb;
    int got;
    while ((got = taca_epoch_next(ep, &tb, &err)) == 1) {
      for (size_t i = 0; i < tb.n; i++, pos++) {
        ck_assert_uint_lt(pos, nfull);
        ck_assert_uint_eq(tb.indices[i], full[pos]);
      }
      taca_batch_free(&tb);
    }
    ck_assert_msg(got == 0, "start_batch %llu: %s", (unsigned long long)k, err.msg);
    ck_assert_uint_eq(pos, nfull);
    taca_epoch_close(ep);
  }
  taca_client_close(c);
  /* overlapping ranges are refused */
  snprintf(addrs, sizeof addrs, "127.0.0.1:%d,127.0.0.1:%d", D_full.port, D_s0.port);
  ck_assert_ptr_null(connect_to(addrs, &err));
  ck_assert_msg(strstr(err.msg, "overlaps"), "%s", err.msg);
}
END_TEST

START_TEST(test_failover_and_resume) {
  /* Two replicas of one store; one is killed: GetBatch fails over; then a stream is cut by SIGTERM of
   * the replica serving it and the iterator resumes on the other without losing or repeating data. */
  daemon_t r1, r2;
  const char *extra[] = {"--max-batch", "64", NULL};
  ck_assert_int_eq(start_daemon(&r1, "rep1", g_big, extra), 0);
  ck_assert_int_eq(start_daemon(&r2, "rep2", g_big, extra), 0);
  char addrs[128];
  snprintf(addrs, sizeof addrs, "127.0.0.1:%d,127.0.0.1:%d", r1.port, r2.port);
  taca_error err = {{0}};
  taca_client *c = connect_to(addrs, &err);
  ck_assert_msg(c != NULL, "%s", err.msg);
  ck_assert_int_eq(taca_client_info(c)->n_shards, 1);
  ck_assert_int_eq(taca_client_info(c)->n_servers, 2);
  taca_epoch_options o = {.seed = 3, .epoch = 0, .rank = 0, .world_size = 1, .batch_size = 1};
  o.fields.pixels = 1;
  taca_epoch *e;
  ck_assert_msg(taca_epoch_open(c, &o, &e, &err) == 0, "%s", err.msg);
  uint64_t total = taca_epoch_batch_count(e);
  ck_assert_uint_eq(total, 1500);
  char *seen = calloc(1500, 1);
  taca_batch b;
  for (int i = 0; i < 3; i++) {
    ck_assert_int_eq(taca_epoch_next(e, &b, &err), 1);
    seen[b.indices[0]]++;
    taca_batch_free(&b);
  }
  /* the stream is on r1 (the first replica): stop it while reading on */
  kill(r1.pid, SIGTERM);
  size_t got = 3;
  int rc;
  while ((rc = taca_epoch_next(e, &b, &err)) == 1) {
    ck_assert_uint_eq(b.pixel_sizes[0], 3 * 64 * 64);
    ck_assert_uint_eq(b.pixels[0][100], synth_pixel(b.indices[0], 100));
    seen[b.indices[0]]++;
    got++;
    taca_batch_free(&b);
  }
  ck_assert_msg(rc == 0, "%s", err.msg);
  ck_assert_uint_eq(got, 1500);
  for (int i = 0; i < 1500; i++) ck_assert_int_eq(seen[i], 1);
  taca_epoch_close(e);
  ck_assert_int_eq(stop_daemon(&r1, 0, 20), 0);
  free(seen);
  uint64_t idx[] = {1, 2, 1499};
  ck_assert_msg(taca_client_get_batch(c, idx, 3, NULL, &b, &err) == 0, "%s", err.msg); /* r2 answers */
  taca_batch_free(&b);
  taca_client_close(c);
  ck_assert_int_eq(stop_daemon(&r2, SIGTERM, 20), 0);
}
END_TEST

START_TEST(test_sigterm_during_stream) {
  daemon_t d;
  ck_assert_int_eq(start_daemon(&d, "term", g_big, NULL), 0);
  uint8_t buf[256], *msg;
  size_t len;
  Taca__V1__Fields f = TACA__V1__FIELDS__INIT;
  f.pixels = 1;
  raw_stream s, w;
  raw_stream_open(&w, &d, "/grpc.health.v1.Health/Watch", NULL, 0);
  ck_assert_int_eq(raw_stream_next(&w, &msg, &len), 1);
  ck_assert_int_eq(msg[1], 1);
  free(msg);
  raw_stream_open(&s, &d, "/taca.v1.FeatureCache/StreamEpoch", buf, pack_stream(buf, 1, 0, 0, 1, 1, 0, &f));
  ck_assert_int_eq(raw_stream_next(&s, &msg, &len), 1);
  free(msg);
  kill(d.pid, SIGTERM);
  /* the watcher hears NOT_SERVING, then the call ends UNAVAILABLE */
  ck_assert_int_eq(raw_stream_next(&w, &msg, &len), 1);
  ck_assert_int_eq(msg[1], 2);
  free(msg);
  ck_assert_int_eq(raw_stream_next(&w, &msg, &len), 0);
  ck_assert_int_eq(w.code, GRPC_STATUS_UNAVAILABLE);
  raw_stream_close(&w);
  /* the stream ends with a clean UNAVAILABLE naming where to resume, after the batches already sent */
  uint64_t got = 1, last = 0;
  while (raw_stream_next(&s, &msg, &len) == 1) {
    Taca__V1__Batch *b = taca__v1__batch__unpack(NULL, len, msg);
    ck_assert_ptr_nonnull(b);
    ck_assert_uint_eq(b->sequence, got);
    last = b->sequence;
    taca__v1__batch__free_unpacked(b, NULL);
    free(msg);
    got++;
  }
  (void)last;
  ck_assert_int_eq(s.code, GRPC_STATUS_UNAVAILABLE);
  char det[512], want[64];
  snprintf(det, sizeof det, "%.*s", (int)GRPC_SLICE_LENGTH(s.details), (const char *)GRPC_SLICE_START_PTR(s.details));
  snprintf(want, sizeof want, "resume with start_batch=%llu", (unsigned long long)got);
  ck_assert_msg(strstr(det, "shutting down") && strstr(det, want), "'%s' (received %llu)", det,
                (unsigned long long)got);
  ck_assert_uint_lt(got, 1500);
  raw_stream_close(&s);
  int st = stop_daemon(&d, 0, 20); /* signal 0: just wait */
  ck_assert_int_eq(st, 0);
}
END_TEST

/* ---------- TLS + bearer token ---------- */

START_TEST(test_tls_token) {
  char addr[64];
  snprintf(addr, sizeof addr, "localhost:%d", D_tls.port);
  taca_client_options o = {.timeout_ms = 10000, .retry_budget_ms = 500, .tls_ca = g_cert, .token = "s3cret"};
  taca_client *c = NULL;
  taca_error err = {{0}};
  ck_assert_msg(taca_client_connect(&c, addr, &o, &err) == 0, "%s", err.msg);
  uint64_t idx = 7;
  taca_fields f = {.keys = 1};
  taca_batch b;
  ck_assert_msg(taca_client_get_batch(c, &idx, 1, &f, &b, &err) == 0, "%s", err.msg);
  ck_assert_str_eq(b.keys[0], "s0000007");
  taca_batch_free(&b);
  taca_client_close(c);
  o.token = "wrong";
  ck_assert_int_eq(taca_client_connect(&c, addr, &o, &err), -1);
  ck_assert_msg(strstr(err.msg, "UNAUTHENTICATED") && strstr(err.msg, "Bearer"), "%s", err.msg);
  o.token = NULL;
  ck_assert_int_eq(taca_client_connect(&c, addr, &o, &err), -1);
  ck_assert_msg(strstr(err.msg, "UNAUTHENTICATED"), "%s", err.msg);
  /* plaintext to a TLS port fails (UNAVAILABLE), health needs no token */
  taca_client_options plain = {.timeout_ms = 3000, .retry_budget_ms = -1, .token = "s3cret"};
  ck_assert_int_eq(taca_client_connect(&c, addr, &plain, &err), -1);
  ck_assert_msg(strstr(err.msg, "UNAVAILABLE"), "%s", err.msg);
}
END_TEST

/* ---------- taca query --server ---------- */

static char *run_query(int argc, const char **argv, int *status) {
  char path[512];
  snprintf(path, sizeof path, "%s/query-out-%d.txt", g_tmp, (int)getpid());
  fflush(stdout);
  int saved = dup(1);
  int fd = open(path, O_CREAT | O_TRUNC | O_WRONLY, 0644);
  dup2(fd, 1);
  close(fd);
  *status = cmd_query_server(argc, (char **)argv);
  fflush(stdout);
  dup2(saved, 1);
  close(saved);
  FILE *f = fopen(path, "r");
  char *buf = calloc(1, 1 << 20);
  size_t n = fread(buf, 1, (1 << 20) - 1, f);
  buf[n] = '\0';
  fclose(f);
  unlink(path);
  return buf;
}

START_TEST(test_query_server) {
  char addr[64];
  addr_of(&D_full, addr, sizeof addr);
  int st;
  char *out = run_query(4, (const char *[]){"query", "--server", addr, "info", NULL}, &st);
  ck_assert_int_eq(st, 0);
  ck_assert_msg(strstr(out, "100 samples in [0, 100), 1 shard(s), 1 server(s)"), "%s", out);
  ck_assert_msg(strstr(out, "tiny  arch hf  f32") && strstr(out, "caption search"), "%s", out);
  free(out);
  out = run_query(5, (const char *[]){"query", "--server", addr, "--json", "info", NULL}, &st);
  ck_assert_int_eq(st, 0);
  ck_assert_msg(strstr(out, "\"samples\":100") && strstr(out, "\"name\":\"wide\""), "%s", out);
  free(out);
  out = run_query(6, (const char *[]){"query", "--server", addr, "lookup", "s0000013", "nokey", NULL}, &st);
  ck_assert_int_eq(st, 1);
  ck_assert_msg(strstr(out, "s0000013\tindex 13\tlabel 3\ttokens 4\tpixels 192 B\tembeddings old:image old:text "
                            "wide:image tiny:image tiny:text"), "%s", out);
  free(out);
  out = run_query(10, (const char *[]){"query", "--server", addr, "search", "--model", "tiny", "--caption", "a red circle",
                                       "-k", "3", NULL}, &st);
  ck_assert_int_eq(st, 0);
  ck_assert_msg(strstr(out, "query 0 \"a red circle\"") && strstr(out, "   3  index "), "%s", out);
  free(out);
  char npy[512];
  snprintf(npy, sizeof npy, "%s/export-%d.npy", g_tmp, (int)getpid());
  out = run_query(12, (const char *[]){"query", "--server", addr, "export", "--model", "old", "--modality", "image",
                                       "--out", npy, "--range", "10:90", NULL}, &st);
  ck_assert_int_eq(st, 0);
  free(out);
  npy_array a;
  taca_error err = {{0}};
  ck_assert_msg(npy_load(npy, &a, &err) == 0, "%s", err.msg);
  ck_assert_int_eq(a.dtype, TACA_DT_F32);
  ck_assert_int_eq(a.shape[0], 80);
  ck_assert_int_eq(a.shape[1], 32);
  for (int i = 0; i < 80; i++)
    for (int j = 0; j < 32; j++) ck_assert(((float *)a.data)[i * 32 + j] == synth_value(10 + (uint64_t)i, j, 0, 0));
  npy_free(&a);
  /* text embeddings have holes: export names the first missing index */
  out = run_query(10, (const char *[]){"query", "--server", addr, "export", "--model", "old", "--modality", "text",
                                       "--out", npy, NULL}, &st);
  ck_assert_int_eq(st, 1);
  free(out);
  out = run_query(3, (const char *[]){"query", "--server", addr, NULL}, &st);
  ck_assert_int_eq(st, 2);
  free(out);
  unlink(npy);
}
END_TEST

/* ---------- main: stores, daemons, suite ---------- */

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw) {
  (void)sb, (void)flag, (void)ftw;
  return remove(path);
}

static int setup_all(void) {
  snprintf(g_tmp, sizeof g_tmp, "/tmp/taca-featured-test-XXXXXX");
  if (!mkdtemp(g_tmp)) return -1;
  snprintf(g_full, sizeof g_full, "%s/full", g_tmp);
  snprintf(g_shard0, sizeof g_shard0, "%s/shard0", g_tmp);
  snprintf(g_shard1, sizeof g_shard1, "%s/shard1", g_tmp);
  snprintf(g_big, sizeof g_big, "%s/big", g_tmp);
  taca_error err = {{0}};
  synth_opts full = {.n = 100, .pixel_size = 8, .tiny_model = TINY_MODEL, .quiet = 1};
  synth_opts s0 = {.begin = 0, .n = 60, .shard = 0, .nshards = 2, .quiet = 1};
  synth_opts s1 = {.begin = 60, .n = 40, .shard = 1, .nshards = 2, .quiet = 1};
  synth_opts big = {.n = 1500, .pixel_size = 64, .quiet = 1};
  if (synth_store_create(g_full, &full, &err) || synth_store_create(g_shard0, &s0, &err) ||
      synth_store_create(g_shard1, &s1, &err) || synth_store_create(g_big, &big, &err)) {
    fprintf(stderr, "test_featured: %s\n", err.msg);
    return -1;
  }
  const char *full_args[] = {"--model", "tiny=" TINY_MODEL, "--max-batch", "64", "--max-streams", "3", "--max-watch", "3",
                             NULL};
  const char *small_args[] = {"--max-message", "4096", NULL};
  if (start_daemon(&D_full, "full", g_full, full_args) || start_daemon(&D_s0, "s0", g_shard0, NULL) ||
      start_daemon(&D_s1, "s1", g_shard1, NULL) || start_daemon(&D_s1r, "s1r", g_shard1, NULL) ||
      start_daemon(&D_small, "small", g_full, small_args))
    return -1;
  snprintf(g_cert, sizeof g_cert, "%s/cert.pem", g_tmp);
  snprintf(g_key, sizeof g_key, "%s/key.pem", g_tmp);
  char cmd[1024];
  snprintf(cmd, sizeof cmd,
           "openssl req -x509 -newkey rsa:2048 -nodes -keyout %s -out %s -days 2 -subj /CN=localhost "
           "-addext subjectAltName=DNS:localhost,IP:127.0.0.1 >/dev/null 2>&1",
           g_key, g_cert);
  g_tls_ok = system(cmd) == 0;
  if (g_tls_ok) {
    const char *tls_args[] = {"--tls-cert", g_cert, "--tls-key", g_key, "--token", "s3cret", NULL};
    if (start_daemon(&D_tls, "tls", g_full, tls_args)) return -1;
  } else {
    fprintf(stderr, "test_featured: openssl could not make a certificate: the TLS test is not run\n");
  }
  return 0;
}

int main(void) {
  signal(SIGPIPE, SIG_IGN);
  int setup_failed = setup_all() != 0;
  int failed = 1;
  if (!setup_failed) {
    Suite *s = suite_create("featured");
    TCase *tc = tcase_create("featured");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_info);
    tcase_add_test(tc, test_get_batch_values);
    tcase_add_test(tc, test_get_batch_errors);
    tcase_add_test(tc, test_message_limit);
    tcase_add_test(tc, test_lookup);
    tcase_add_test(tc, test_search_vectors);
    tcase_add_test(tc, test_search_captions);
    tcase_add_test(tc, test_stream_epoch);
    tcase_add_test(tc, test_max_streams);
    tcase_add_test(tc, test_health);
    tcase_add_test(tc, test_metrics);
    tcase_add_test(tc, test_shards);
    tcase_add_test(tc, test_failover_and_resume);
    tcase_add_test(tc, test_sigterm_during_stream);
    if (g_tls_ok) tcase_add_test(tc, test_tls_token);
    tcase_add_test(tc, test_query_server);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
  }
  /* every daemon must shut down cleanly on SIGTERM */
  daemon_t *all[] = {&D_full, &D_s0, &D_s1, &D_s1r, &D_small, &D_tls};
  const char *names[] = {"full", "s0", "s1", "s1r", "small", "tls"};
  for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) {
    if (all[i]->pid <= 0) continue;
    int st = stop_daemon(all[i], SIGTERM, 20);
    if (st != 0) {
      fprintf(stderr, "taca-featured %s: exit status %d after SIGTERM (log %s)\n", names[i], st, all[i]->logfile);
      failed++;
    }
  }
  if (!failed && !setup_failed && !getenv("TACA_KEEP_TMP")) nftw(g_tmp, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
  else fprintf(stderr, "test_featured: files kept in %s\n", g_tmp);
  return (failed || setup_failed) ? EXIT_FAILURE : EXIT_SUCCESS;
}
