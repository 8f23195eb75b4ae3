/* bench_featured.c: load test of taca-featured through taca_client on loopback.
 *
 *   bench_featured --server ADDR --mode mixed [--clients N] [--seconds S] [--batch B] [--pid PID]
 *       N client threads (each its own connection) for S seconds, each looping over a mix of
 *       StreamEpoch batches, GetBatch (B random indices: pixels, tokens, "old" image embeddings),
 *       Lookup (1 key) and Search (k = 10, one "old" image query): batches/s, MB/s, p50/p99 latency
 *       and errors per operation.
 *   bench_featured --server ADDR --mode stream [--batch B] [--seconds S]
 *       one StreamEpoch with pixels + embeddings, as fast as the client reads: MB/s.
 *   bench_featured --server ADDR --mode lookup-rate [--rate R] [--seconds S]
 *       Lookups of one key paced at R per second (open loop): p50/p99/max latency.
 * --pid PID adds the server's peak RSS (VmHWM) to the report.
 * Check mode (the CTest load test, tests/integration/featured_load.sh): --max-p99-ms MS fails the run
 * when any operation's p99 latency is over MS, --max-rss-mb MB when the server's peak RSS is over MB
 * (needs --pid), --min-ops N when any operation of the mode succeeded fewer than N times. The store is the synthetic one of
 * tests/integration/featured_synth.h (keys "s%07d"); bench/run-featured.sh sets everything up.
 * Prints a human table and one JSON line per mode. Exit status 1 if any operation failed. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/clock.h"
#include "base/dtype.h"
#include "client/taca_client.h"

enum { OP_STREAM, OP_GET, OP_LOOKUP, OP_SEARCH, OP_COUNT };
static const char *OP_NAMES[OP_COUNT] = {"StreamEpoch", "GetBatch", "Lookup", "Search"};

typedef struct stats {
  double *lat;
  size_t n, cap;
  uint64_t bytes, errors, samples;
} stats;

typedef struct worker {
  int id;
  pthread_t th;
  stats st[OP_COUNT];
  char first_error[512];
} worker;

static const char *g_server;
static int g_seconds = 10, g_batch = 32, g_clients = 8, g_rate = 1000;
static double g_max_p99_ms = 0, g_max_rss_mb = 0; /* 0: no check */
static long g_min_ops = 0;
static atomic_int g_stop;

static void record(stats *s, double sec) {
  if (s->n == s->cap) {
    size_t cap = s->cap ? s->cap * 2 : 4096;
    double *nl = realloc(s->lat, cap * sizeof *nl);
    if (!nl) return;
    s->lat = nl;
    s->cap = cap;
  }
  s->lat[s->n++] = sec;
}

static uint64_t batch_bytes(const taca_batch *b) {
  uint64_t n = b->n * 8;
  if (b->tokens) n += b->n * 77 * 4;
  if (b->labels) n += b->n * 4;
  if (b->pixels)
    for (size_t i = 0; i < b->n; i++) n += b->pixel_sizes[i];
  for (int e = 0; e < b->n_embeddings; e++)
    n += b->n * ((uint64_t)b->embeddings[e].dim * taca_dtype_size(b->embeddings[e].dtype) + 1);
  return n;
}

static uint64_t rng_next(uint64_t *s) {
  uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

static double pct(const double *v, size_t n, double p) {
  if (!n) return 0;
  size_t i = (size_t)(p * (double)(n - 1) + 0.5);
  return v[i < n ? i : n - 1];
}

static void fail_once(worker *w, const char *msg) {
  if (!w->first_error[0]) snprintf(w->first_error, sizeof w->first_error, "%s", msg);
}

static taca_client *connect_or_die(void) {
  taca_client_options o = {.timeout_ms = 60000, .retry_budget_ms = 5000};
  taca_client *c;
  taca_error err = {{0}};
  if (taca_client_connect(&c, g_server, &o, &err)) {
    fprintf(stderr, "bench_featured: %s\n", err.msg);
    exit(1);
  }
  return c;
}

/* ---------- mixed ---------- */

static void *mixed_main(void *arg) {
  worker *w = arg;
  taca_client *c = connect_or_die();
  const taca_dataset_info *in = taca_client_info(c);
  uint64_t n = in->end - in->begin, rs = 0x1234 + (uint64_t)w->id;
  int dim = in->models[0].image_dim;
  taca_fields fb = {.pixels = in->has_pixels, .tokens = 1, .n_embeddings = 1};
  fb.embeddings[0].model = in->models[0].name;
  taca_epoch *e = NULL;
  uint64_t epoch = 0;
  uint64_t *idx = malloc((size_t)g_batch * sizeof *idx);
  float *q = malloc((size_t)dim * sizeof *q);
  taca_error err = {{0}};
  while (!atomic_load(&g_stop)) {
    int op = (int)(rng_next(&rs) % OP_COUNT);
    stats *st = &w->st[op];
    taca_batch b;
    double t0 = taca_now_s();
    int ok = 0;
    if (op == OP_STREAM) {
      if (!e) {
        taca_epoch_options o = {.seed = 7, .epoch = epoch++, .rank = (uint32_t)w->id,
                                .world_size = (uint32_t)g_clients, .batch_size = (uint32_t)g_batch, .fields = fb};
        if (taca_epoch_open(c, &o, &e, &err)) e = NULL;
      }
      int rc = e ? taca_epoch_next(e, &b, &err) : -1;
      if (rc == 1) {
        ok = 1;
        st->bytes += batch_bytes(&b);
        st->samples += b.n;
        taca_batch_free(&b);
      } else {
        if (rc == 0) ok = -1; /* epoch over: not an operation */
        taca_epoch_close(e);
        e = NULL;
      }
    } else if (op == OP_GET) {
      for (int i = 0; i < g_batch; i++) idx[i] = in->begin + rng_next(&rs) % n;
      if (taca_client_get_batch(c, idx, (size_t)g_batch, &fb, &b, &err) == 0) {
        ok = 1;
        st->bytes += batch_bytes(&b);
        st->samples += b.n;
        taca_batch_free(&b);
      }
    } else if (op == OP_LOOKUP) {
      char key[32];
      snprintf(key, sizeof key, "s%07llu", (unsigned long long)(in->begin + rng_next(&rs) % n));
      const char *keys[1] = {key};
      taca_fields fl = {.labels = 1};
      if (taca_client_lookup(c, keys, 1, &fl, 0, &b, &err) == 0) {
        ok = 1;
        st->bytes += batch_bytes(&b);
        st->samples += b.n;
        taca_batch_free(&b);
      }
    } else {
      for (int j = 0; j < dim; j++) q[j] = (float)((int)(rng_next(&rs) % 97) - 48) / 64.0f;
      taca_search_result r;
      if (taca_client_search(c, in->models[0].name, TACA_IMAGE, q, NULL, 1, 10, TACA_METRIC_IP, 0, &r, &err) == 0) {
        ok = 1;
        st->bytes += (uint64_t)r.count[0] * 12;
        st->samples += 1;
        taca_search_result_free(&r);
      }
    }
    if (ok == 1) record(st, taca_now_s() - t0);
    else if (ok == 0 && !atomic_load(&g_stop)) {
      st->errors++;
      fail_once(w, err.msg);
    }
  }
  taca_epoch_close(e);
  free(idx);
  free(q);
  taca_client_close(c);
  return NULL;
}

static long peak_rss_kb(int pid) {
  if (pid <= 0) return -1;
  char path[64], line[256];
  snprintf(path, sizeof path, "/proc/%d/status", pid);
  FILE *f = fopen(path, "r");
  if (!f) return -1;
  long kb = -1;
  while (fgets(line, sizeof line, f))
    if (!strncmp(line, "VmHWM:", 6)) kb = strtol(line + 6, NULL, 10);
  fclose(f);
  return kb;
}

static int report(worker *ws, int nw, double secs, const char *mode, int pid) {
  int bad = 0;
  printf("%-12s %10s %10s %10s %10s %10s %8s\n", "operation", "ops/s", "samples/s", "MB/s", "p50 ms", "p99 ms",
         "errors");
  char json[2048];
  snprintf(json, sizeof json, "{\"mode\":\"%s\",\"seconds\":%.2f,\"clients\":%d,\"batch\":%d", mode, secs, nw,
           g_batch);
  for (int op = 0; op < OP_COUNT; op++) {
    stats all = {0};
    for (int i = 0; i < nw; i++) {
      stats *s = &ws[i].st[op];
      all.bytes += s->bytes;
      all.errors += s->errors;
      all.samples += s->samples;
      for (size_t k = 0; k < s->n; k++) record(&all, s->lat[k]);
    }
    if (!all.n && !all.errors) continue;
    qsort(all.lat, all.n, sizeof *all.lat, cmp_double);
    double p50 = pct(all.lat, all.n, 0.50) * 1e3, p99 = pct(all.lat, all.n, 0.99) * 1e3;
    double mx = all.n ? all.lat[all.n - 1] * 1e3 : 0;
    fprintf(stdout, "%-12s %10.1f %10.1f %10.1f %10.3f %10.3f %8llu\n", OP_NAMES[op], (double)all.n / secs,
            (double)all.samples / secs, (double)all.bytes / secs / 1e6, p50, p99, (unsigned long long)all.errors);
    size_t l = strlen(json);
    snprintf(json + l, sizeof json - l,
             ",\"%s\":{\"ops\":%zu,\"ops_per_s\":%.1f,\"samples_per_s\":%.1f,\"MB_per_s\":%.2f,\"p50_ms\":%.3f,"
             "\"p99_ms\":%.3f,\"max_ms\":%.3f,\"errors\":%llu}",
             OP_NAMES[op], all.n, (double)all.n / secs, (double)all.samples / secs, (double)all.bytes / secs / 1e6,
             p50, p99, mx, (unsigned long long)all.errors);
    if (all.errors) bad = 1;
    if (g_max_p99_ms > 0 && p99 > g_max_p99_ms) {
      fprintf(stderr, "check: %s p99 %.3f ms is over --max-p99-ms %.1f\n", OP_NAMES[op], p99, g_max_p99_ms);
      bad = 1;
    }
    if ((long)all.n < g_min_ops) {
      fprintf(stderr, "check: %s succeeded %zu times, fewer than --min-ops %ld\n", OP_NAMES[op], all.n, g_min_ops);
      bad = 1;
    }
    free(all.lat);
  }
  if (g_min_ops > 0 && !strcmp(mode, "mixed"))
    for (int op = 0; op < OP_COUNT; op++) {
      size_t n = 0;
      for (int i = 0; i < nw; i++) n += ws[i].st[op].n + ws[i].st[op].errors;
      if (!n) {
        fprintf(stderr, "check: %s never ran\n", OP_NAMES[op]);
        bad = 1;
      }
    }
  long rss = peak_rss_kb(pid);
  printf("%s,\"server_peak_rss_mb\":%.1f}\n", json, rss >= 0 ? (double)rss / 1024 : -1.0);
  if (rss >= 0) printf("server peak RSS %.1f MB\n", (double)rss / 1024);
  if (g_max_rss_mb > 0 && (rss < 0 || (double)rss / 1024 > g_max_rss_mb)) {
    fprintf(stderr, "check: server peak RSS %.1f MB is over --max-rss-mb %.0f (or unknown: give --pid)\n",
            rss >= 0 ? (double)rss / 1024 : -1.0, g_max_rss_mb);
    bad = 1;
  }
  for (int i = 0; i < nw; i++)
    if (ws[i].first_error[0]) {
      fprintf(stderr, "first error (client %d): %s\n", i, ws[i].first_error);
      break;
    }
  return bad;
}

static int run_mixed(int pid) {
  worker *ws = calloc((size_t)g_clients, sizeof *ws);
  for (int i = 0; i < g_clients; i++) {
    ws[i].id = i;
    pthread_create(&ws[i].th, NULL, mixed_main, &ws[i]);
  }
  double t0 = taca_now_s();
  struct timespec d = {g_seconds, 0};
  nanosleep(&d, NULL);
  atomic_store(&g_stop, 1);
  for (int i = 0; i < g_clients; i++) pthread_join(ws[i].th, NULL);
  double secs = taca_now_s() - t0;
  printf("mixed load: %d clients, %.1f s, batch %d\n", g_clients, secs, g_batch);
  int bad = report(ws, g_clients, secs, "mixed", pid);
  for (int i = 0; i < g_clients; i++)
    for (int op = 0; op < OP_COUNT; op++) free(ws[i].st[op].lat);
  free(ws);
  return bad;
}

/* ---------- stream ---------- */

static int run_stream(int pid) {
  taca_client *c = connect_or_die();
  const taca_dataset_info *in = taca_client_info(c);
  taca_fields f = {.pixels = in->has_pixels, .tokens = 1, .n_embeddings = 1};
  f.embeddings[0].model = in->models[0].name;
  worker w = {0};
  taca_error err = {{0}};
  double t0 = taca_now_s();
  uint64_t epoch = 0;
  while (taca_now_s() - t0 < g_seconds) {
    taca_epoch_options o = {.seed = 1, .epoch = epoch++, .rank = 0, .world_size = 1, .batch_size = (uint32_t)g_batch,
                            .fields = f};
    taca_epoch *e;
    if (taca_epoch_open(c, &o, &e, &err)) {
      w.st[OP_STREAM].errors++;
      fail_once(&w, err.msg);
      break;
    }
    taca_batch b;
    double t = taca_now_s();
    int rc = 0;
    while (taca_now_s() - t0 < g_seconds && (rc = taca_epoch_next(e, &b, &err)) == 1) {
      double t1 = taca_now_s();
      record(&w.st[OP_STREAM], t1 - t);
      w.st[OP_STREAM].bytes += batch_bytes(&b);
      w.st[OP_STREAM].samples += b.n;
      taca_batch_free(&b);
      t = taca_now_s();
    }
    if (taca_now_s() - t0 < g_seconds && rc < 0) {
      w.st[OP_STREAM].errors++;
      fail_once(&w, err.msg);
    }
    taca_epoch_close(e);
  }
  double secs = taca_now_s() - t0;
  printf("single stream: batch %d, %.1f s (latency = wait for each next batch)\n", g_batch, secs);
  int bad = report(&w, 1, secs, "stream", pid);
  free(w.st[OP_STREAM].lat);
  taca_client_close(c);
  return bad;
}

/* ---------- paced lookups ---------- */

static int run_lookup_rate(int pid) {
  taca_client *c = connect_or_die();
  const taca_dataset_info *in = taca_client_info(c);
  uint64_t n = in->end - in->begin, rs = 99;
  worker w = {0};
  taca_error err = {{0}};
  double t0 = taca_now_s(), period = 1.0 / g_rate;
  long k = 0;
  taca_fields f = {.labels = 1};
  while (taca_now_s() - t0 < g_seconds) {
    double due = t0 + (double)k * period, t = taca_now_s();
    if (t < due) {
      struct timespec d = {0, (long)((due - t) * 1e9)};
      nanosleep(&d, NULL);
    }
    char key[32];
    snprintf(key, sizeof key, "s%07llu", (unsigned long long)(in->begin + rng_next(&rs) % n));
    const char *keys[1] = {key};
    taca_batch b;
    double s = taca_now_s();
    if (taca_client_lookup(c, keys, 1, &f, 0, &b, &err) == 0) {
      record(&w.st[OP_LOOKUP], taca_now_s() - s);
      w.st[OP_LOOKUP].samples++;
      w.st[OP_LOOKUP].bytes += batch_bytes(&b);
      taca_batch_free(&b);
    } else {
      w.st[OP_LOOKUP].errors++;
      fail_once(&w, err.msg);
    }
    k++;
  }
  double secs = taca_now_s() - t0;
  printf("paced lookups: %d/s target, %.1f s\n", g_rate, secs);
  int bad = report(&w, 1, secs, "lookup-rate", pid);
  free(w.st[OP_LOOKUP].lat);
  taca_client_close(c);
  return bad;
}

int main(int argc, char **argv) {
  const char *mode = "mixed";
  int pid = 0;
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
    if (!strcmp(a, "--help")) {
      puts("usage: bench_featured --server ADDR [--mode mixed|stream|lookup-rate] [--clients N] [--seconds S]\n"
           "                      [--batch B] [--rate R] [--pid SERVER_PID]\n"
           "                      [--max-p99-ms MS] [--max-rss-mb MB] [--min-ops N]   (checks: exit 1 if not met)");
      return 0;
    }
    if (!v) {
      fprintf(stderr, "bench_featured: %s needs a value\n", a);
      return 2;
    }
    i++;
    if (!strcmp(a, "--server")) g_server = v;
    else if (!strcmp(a, "--mode")) mode = v;
    else if (!strcmp(a, "--clients")) g_clients = atoi(v);
    else if (!strcmp(a, "--seconds")) g_seconds = atoi(v);
    else if (!strcmp(a, "--batch")) g_batch = atoi(v);
    else if (!strcmp(a, "--rate")) g_rate = atoi(v);
    else if (!strcmp(a, "--pid")) pid = atoi(v);
    else if (!strcmp(a, "--max-p99-ms")) g_max_p99_ms = atof(v);
    else if (!strcmp(a, "--max-rss-mb")) g_max_rss_mb = atof(v);
    else if (!strcmp(a, "--min-ops")) g_min_ops = atol(v);
    else {
      fprintf(stderr, "bench_featured: unknown option %s\n", a);
      return 2;
    }
  }
  if (!g_server || g_clients < 1 || g_seconds < 1 || g_batch < 1 || g_rate < 1) {
    fprintf(stderr, "bench_featured: --server is required; counts must be positive\n");
    return 2;
  }
  taca_client_tune_malloc(); /* as a trainer would */
  if (!strcmp(mode, "mixed")) return run_mixed(pid);
  if (!strcmp(mode, "stream")) return run_stream(pid);
  if (!strcmp(mode, "lookup-rate")) return run_lookup_rate(pid);
  fprintf(stderr, "bench_featured: unknown mode '%s'\n", mode);
  return 2;
}
