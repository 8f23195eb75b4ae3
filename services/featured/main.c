/* main.c: taca-featured, the feature-cache gRPC daemon: options, start-up, and the libuv main loop
 * (signals, store refresh timer, HTTP /metrics + /healthz, shutdown sequencing). gRPC runs on its
 * own completion-queue threads (server.c) and wakes this loop with uv_async_send when it is done.
 *
 * SIGTERM/SIGINT: graceful shutdown (stop accepting, NOT_SERVING, streams end at their next batch
 * with UNAVAILABLE, unary calls finish; whatever runs after --grace is cancelled); exit status 0.
 * A second signal cancels everything at once. SIGHUP reopens the --log file. */
#include <grpc/grpc.h>
#include <grpc/support/log.h>
#include <pthread.h>
#include <signal.h>
#include <time.h>
#include <sys/resource.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "base/atomicfile.h"
#include "base/hostport.h"
#include "services/featured/featured.h"
#include "services/featured/http.h"
#include "services/featured/web.h"
#include "services/featured/log.h"
#include "services/featured/metrics.h"
#include "services/featured/options.h"
#include "services/featured/server.h"

typedef struct app {
  uv_loop_t loop;
  featured f;
  featured_server *srv;
  http_server *http;
  uv_signal_t sigterm, sigint, sighup;
  uv_async_t done_async, idle_async;
  uv_timer_t refresh, grace, linger;
} app; /* the lifecycle state lives in A.f.state (featured.h) */

static app A;

/* Linger after the last call before closing the connections, so that the final statuses reach the
 * clients' transports before the sockets close. */
#define LINGER_MS 300

static void on_grpc_done(void *arg) {
  (void)arg;
  uv_async_send(&A.done_async); /* the only libuv call allowed from another thread */
}

static void on_grpc_idle(void *arg) {
  (void)arg;
  uv_async_send(&A.idle_async);
}

static void close_handle(uv_handle_t *h) {
  if (!uv_is_closing(h)) uv_close(h, NULL);
}

static void on_done(uv_async_t *a) {
  (void)a;
  log_msg(LOG_INFO, "gRPC server shut down; exiting");
  http_stop(A.http);
  A.http = NULL;
  close_handle((uv_handle_t *)&A.sigterm);
  close_handle((uv_handle_t *)&A.sigint);
  close_handle((uv_handle_t *)&A.sighup);
  close_handle((uv_handle_t *)&A.refresh);
  close_handle((uv_handle_t *)&A.grace);
  close_handle((uv_handle_t *)&A.linger);
  close_handle((uv_handle_t *)&A.done_async);
  close_handle((uv_handle_t *)&A.idle_async);
}

/* Clients may keep idle connections open after GOAWAY: with no call left, close them. */
static void on_force_close(uv_timer_t *t) {
  (void)t;
  server_cancel_all(A.srv);
}

static void on_linger(uv_timer_t *t) {
  (void)t;
  log_msg(LOG_INFO, "no call left; closing connections");
  server_begin_shutdown(A.srv);
  uv_timer_start(&A.linger, on_force_close, LINGER_MS, 0);
}

static void on_idle(uv_async_t *a) {
  (void)a;
  if (featured_state_now(&A.f) != FS_DRAINING || featured_advance(&A.f, FS_LINGERING) != FS_DRAINING) return;
  uv_timer_start(&A.linger, on_linger, LINGER_MS, 0);
}

static void on_grace(uv_timer_t *t) {
  (void)t;
  log_msg(LOG_WARN, "grace period over with %d stream(s) still open: cancelling every remaining call",
          atomic_load(&A.f.active_streams));
  server_cancel_all(A.srv);
}

static void on_stop_signal(uv_signal_t *s, int signum) {
  (void)s;
  if (featured_advance(&A.f, FS_DRAINING) >= FS_DRAINING) {
    log_msg(LOG_WARN, "%s again: cancelling every remaining call", strsignal(signum));
    server_cancel_all(A.srv);
    return;
  }
  log_field fl[] = {LOG_STR("event", "shutdown"), LOG_STR("signal", strsignal(signum)),
                    LOG_INT("grace_s", A.f.cfg.grace_ms / 1000)};
  log_event(LOG_INFO, fl, 3, "%s: shutting down (no new calls; streams end at their next batch; grace %d s)",
            strsignal(signum), A.f.cfg.grace_ms / 1000);
  uv_timer_stop(&A.refresh);
  uv_timer_start(&A.grace, on_grace, (uint64_t)A.f.cfg.grace_ms, 0);
  server_drain(A.srv);
}

static void on_hup(uv_signal_t *s, int signum) {
  (void)s;
  (void)signum;
  taca_error err;
  if (log_reopen(&err)) log_msg(LOG_ERROR, "%s", err.msg);
  else log_msg(LOG_INFO, "SIGHUP: log reopened");
}

static void on_refresh(uv_timer_t *t) {
  (void)t;
  taca_error err;
  if (featured_refresh(&A.f, &err)) log_msg(LOG_WARN, "store refresh failed: %s", err.msg);
}

static char *metrics_cb(void *arg, size_t *len) {
  featured *f = arg;
  featured_snapshot *s = malloc(sizeof *s);
  if (!s) return NULL;
  featured_snapshot_get(f, s);
  metrics_gauges g = {
      .active_streams = atomic_load(&f->active_streams),
      .serving = !featured_draining(f),
      .samples = s->info.n_samples,
      .index_begin = s->begin,
      .index_end = s->end,
  };
  free(s);
  return metrics_render(f->metrics, &g, len);
}

/* gRPC core's own messages (transport errors, peers that break the protocol) go to the same log, in the
 * same format, as events "grpc" with the gRPC source position. */
static atomic_int grpc_log_quiet; /* while binding: the clear one-line error replaces gRPC's long one */
/* gRPC's own messages, at most GRPC_LOG_BURST per second (a client failing TLS handshakes in a loop
 * would otherwise write a line each); how many were dropped is said with the next one let through. */
#define GRPC_LOG_BURST 20
static pthread_mutex_t grpc_log_mu = PTHREAD_MUTEX_INITIALIZER;
static time_t grpc_log_second;
static int grpc_log_count;
static long grpc_log_dropped;

static void grpc_log_cb(gpr_log_func_args *a) {
  if (atomic_load(&grpc_log_quiet)) return;
  time_t now = time(NULL);
  long dropped = 0;
  pthread_mutex_lock(&grpc_log_mu);
  if (now != grpc_log_second) {
    grpc_log_second = now;
    grpc_log_count = 0;
  }
  int drop = ++grpc_log_count > GRPC_LOG_BURST;
  if (drop) grpc_log_dropped++;
  else {
    dropped = grpc_log_dropped;
    grpc_log_dropped = 0;
  }
  pthread_mutex_unlock(&grpc_log_mu);
  if (drop) return;
  if (dropped) log_msg(LOG_WARN, "grpc: %ld messages dropped (more than %d per second)", dropped, GRPC_LOG_BURST);
  log_level lv = a->severity == GPR_LOG_SEVERITY_ERROR  ? LOG_ERROR
                 : a->severity == GPR_LOG_SEVERITY_INFO ? LOG_INFO
                                                        : LOG_DEBUG;
  const char *file = a->file ? strrchr(a->file, '/') : NULL;
  file = file ? file + 1 : a->file;
  log_field fl[] = {LOG_STR("event", "grpc"), LOG_STR("file", file), LOG_INT("line", a->line)};
  log_event(lv, fl, 3, "grpc: %s", a->message ? a->message : "");
}

static int serving_cb(void *arg) { return !featured_draining((featured *)arg); }

static int write_port_file(const char *path, int grpc_port, int metrics_port, taca_error *err) {
  char buf[64];
  int n = snprintf(buf, sizeof buf, "grpc=%d\nmetrics=%d\n", grpc_port, metrics_port);
  taca_chunk c = {buf, (size_t)n};
  return taca_write_file_atomic(path, &c, 1, err);
}

/* A stop signal that arrives before libuv's handlers are installed: recorded, then raised again
 * once they are, so that it drains like any other. */
static volatile sig_atomic_t early_stop;
static void on_early_stop(int sig) { early_stop = sig; }

int main(int argc, char **argv) {
  /* Stop signals wait until the loop can drain (an early SIGTERM must not kill a starting server
   * with 143): caught from here on (libraries start threads before main, OpenBLAS's among them, and
   * any thread may receive a process signal), blocked in every thread started from now on, and
   * unblocked for this thread once libuv's handlers are installed. */
  struct sigaction early = {0};
  early.sa_handler = on_early_stop;
  sigemptyset(&early.sa_mask);
  sigaction(SIGTERM, &early, NULL);
  sigaction(SIGINT, &early, NULL);
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGTERM);
  sigaddset(&stop_signals, SIGINT);
  sigaddset(&stop_signals, SIGHUP);
  pthread_sigmask(SIG_BLOCK, &stop_signals, NULL);
  featured_config cfg;
  taca_error err = {{0}};
  int rc = featured_parse_options(&cfg, argc, argv, stdout, &err);
  if (rc == 1) return 0;
  if (rc < 0) {
    fprintf(stderr, "taca-featured: %s\n", err.msg);
    return 2;
  }
  log_set_format(cfg.log_json ? LOG_FORMAT_JSON : LOG_FORMAT_TEXT);
  if (log_open(cfg.log_path, &err)) {
    fprintf(stderr, "taca-featured: %s\n", err.msg);
    return 1;
  }
  signal(SIGPIPE, SIG_IGN);
  /* Every connection is a descriptor: the soft limit (often 1024) would lock clients out long
   * before the hard one. */
  struct rlimit nofile;
  if (getrlimit(RLIMIT_NOFILE, &nofile) == 0 && nofile.rlim_cur < nofile.rlim_max) {
    rlim_t was = nofile.rlim_cur;
    nofile.rlim_cur = nofile.rlim_max;
    if (setrlimit(RLIMIT_NOFILE, &nofile) == 0)
      log_msg(LOG_INFO, "open-file limit raised from %llu to %llu", (unsigned long long)was,
              (unsigned long long)nofile.rlim_max);
  }
  gpr_set_log_function(grpc_log_cb);
  if (featured_open(&A.f, &cfg, &err)) {
    log_msg(LOG_ERROR, "%s", err.msg);
    if (cfg.log_path) fprintf(stderr, "taca-featured: %s\n", err.msg);
    log_close();
    return 1;
  }
  grpc_init();
  uv_loop_init(&A.loop);
  uv_async_init(&A.loop, &A.done_async, on_done);
  uv_async_init(&A.loop, &A.idle_async, on_idle);
  uv_timer_init(&A.loop, &A.linger);
  int grpc_port = 0, metrics_port = 0;
  server_callbacks cb = {on_grpc_idle, on_grpc_done, NULL};
  atomic_store(&grpc_log_quiet, 1);
  int started = server_start(&A.f, &cb, &A.srv, &grpc_port, &err);
  atomic_store(&grpc_log_quiet, 0);
  if (started) {
    log_msg(LOG_ERROR, "%s", err.msg);
    if (cfg.log_path) fprintf(stderr, "taca-featured: %s\n", err.msg);
    rc = 1;
    goto out_early;
  }
  if (cfg.metrics_listen) {
    http_handlers hh = {metrics_cb, serving_cb, &A.f, web_handle, cfg.metrics_auth ? cfg.token : NULL};
    if (http_start(&A.loop, cfg.metrics_listen, &hh, &A.http, &metrics_port, &err)) {
      log_msg(LOG_ERROR, "%s", err.msg);
      if (cfg.log_path) fprintf(stderr, "taca-featured: %s\n", err.msg);
      rc = 1;
      featured_advance(&A.f, FS_DRAINING);
      server_begin_shutdown(A.srv);
      server_cancel_all(A.srv);
    }
  }
  uv_signal_init(&A.loop, &A.sigterm);
  uv_signal_init(&A.loop, &A.sigint);
  uv_signal_init(&A.loop, &A.sighup);
  uv_signal_start(&A.sigterm, on_stop_signal, SIGTERM);
  uv_signal_start(&A.sigint, on_stop_signal, SIGINT);
  uv_signal_start(&A.sighup, on_hup, SIGHUP);
  pthread_sigmask(SIG_UNBLOCK, &stop_signals, NULL); /* a signal that came meanwhile is handled now */
  if (early_stop) raise(early_stop);
  uv_timer_init(&A.loop, &A.refresh);
  uv_timer_init(&A.loop, &A.grace);
  if (!featured_draining(&A.f)) {
    uv_timer_start(&A.refresh, on_refresh, (uint64_t)cfg.refresh_ms, (uint64_t)cfg.refresh_ms);
    if (cfg.port_file && write_port_file(cfg.port_file, grpc_port, metrics_port, &err)) {
      log_msg(LOG_ERROR, "--port-file: %s", err.msg);
      rc = 1;
      featured_advance(&A.f, FS_DRAINING);
      server_begin_shutdown(A.srv);
      server_cancel_all(A.srv);
    }
  }
  /* The bound addresses (an ephemeral ":0" shows the port it got). */
  char grpc_addr[300], metrics_addr[300] = "";
  taca_hostport hp;
  if (taca_hostport_parse("--listen", cfg.listen, TACA_PORT_ZERO_OK, &hp, NULL) == 0)
    taca_hostport_format(&hp, grpc_port, grpc_addr, sizeof grpc_addr);
  else snprintf(grpc_addr, sizeof grpc_addr, "%s", cfg.listen);
  if (cfg.metrics_listen && taca_hostport_parse("--metrics", cfg.metrics_listen, TACA_PORT_ZERO_OK, &hp, NULL) == 0)
    taca_hostport_format(&hp, metrics_port, metrics_addr, sizeof metrics_addr);
  if (!featured_draining(&A.f)) {
    featured_snapshot *s = malloc(sizeof *s);
    if (s) {
      featured_snapshot_get(&A.f, s);
      log_field fl[] = {LOG_STR("event", "serving"), LOG_STR("db", cfg.db), LOG_STR("listen", cfg.listen),
                        LOG_INT("port", grpc_port), LOG_BOOL("tls", cfg.tls_cert != NULL),
                        LOG_INT("samples", s->info.n_samples), LOG_INT("index_begin", s->begin),
                        LOG_INT("index_end", s->end), LOG_INT("models", s->info.n_models),
                        LOG_INT("threads", cfg.threads), LOG_BOOL("token", cfg.token != NULL),
                        LOG_STR("metrics_listen", cfg.metrics_listen), LOG_INT("metrics_port", metrics_port)};
      log_event(LOG_INFO, fl, (int)(sizeof fl / sizeof fl[0]),
              "serving %s on %s%s, %llu samples in [%llu, %llu), %d models, %d threads%s%s",
              cfg.db, grpc_addr, cfg.tls_cert ? " (TLS)" : "", (unsigned long long)s->info.n_samples,
              (unsigned long long)s->begin, (unsigned long long)s->end, s->info.n_models, cfg.threads,
              cfg.token ? ", bearer token required" : "", cfg.metrics_listen ? "" : ", no metrics endpoint");
      if (cfg.metrics_listen) {
        log_field fm[] = {LOG_STR("event", "metrics"), LOG_STR("listen", cfg.metrics_listen),
                          LOG_INT("port", metrics_port)};
        log_event(LOG_INFO, fm, 3, "metrics on http://%s/metrics; search page at /", metrics_addr);
      }
      if (cfg.token && !cfg.tls_cert)
        log_msg(LOG_WARN, "--token without TLS: the token travels in clear text; use --tls-cert off loopback");
      if (cfg.insecure && taca_hostport_parse("--listen", cfg.listen, TACA_PORT_ZERO_OK, &hp, NULL) == 0 &&
          !taca_hostport_is_loopback(&hp))
        log_msg(LOG_WARN, "--insecure: serving off loopback (%s)%s%s: anyone who reaches it can read%s the store",
                grpc_addr, cfg.tls_cert ? "" : " without TLS", cfg.token ? "" : " and without a token",
                cfg.token ? " the traffic to" : "");
      if (cfg.metrics_listen && !cfg.metrics_auth)
        log_msg(LOG_INFO, "/metrics is open to anyone who reaches %s (--metrics-auth puts it behind the token)",
                metrics_addr);
      free(s);
    }
  }
  uv_run(&A.loop, UV_RUN_DEFAULT);
  server_destroy(A.srv);
  A.srv = NULL;
out_early:
  if (A.srv) server_destroy(A.srv);
  if (!uv_is_closing((uv_handle_t *)&A.done_async)) uv_close((uv_handle_t *)&A.done_async, NULL);
  if (!uv_is_closing((uv_handle_t *)&A.idle_async)) uv_close((uv_handle_t *)&A.idle_async, NULL);
  if (!uv_is_closing((uv_handle_t *)&A.linger)) uv_close((uv_handle_t *)&A.linger, NULL);
  uv_run(&A.loop, UV_RUN_DEFAULT);
  uv_loop_close(&A.loop);
  grpc_shutdown();
  featured_close(&A.f);
  log_field fl[] = {LOG_STR("event", "stopped"), LOG_INT("exit_status", rc)};
  log_event(LOG_INFO, fl, 2, "taca-featured stopped (exit status %d)", rc);
  log_close();
  return rc;
}
