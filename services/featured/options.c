/* options.c: parses the command line of taca-featured into a featured_config, then takes every long
 * option not given there from the environment variable TACA_FEATURED_<OPTION>. */
#include "services/featured/options.h"

#include "base/envopt.h"
#include "base/hostport.h"
#include "services/featured/log.h"

#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

const char *FEATURED_USAGE =
    "usage: taca-featured --db DIR [--listen HOST:PORT] [--http HOST:PORT]\n"
    "                     [--model NAME=PATH[:ARCH]]... [--threads N] [--max-batch N]\n"
    "                     [--max-streams N] [--max-message BYTES] [--max-k K] [--grace SECONDS]\n"
    "                     [--port-file FILE] [--log FILE] [--log-format text|json]\n"
    "                     [--tls-cert PEM --tls-key PEM] [--token TOKEN] [--precision f32|bf16]\n"
    "  Serves a feature store (read-only) over gRPC: taca.v1.FeatureCache (Info, GetBatch,\n"
    "  StreamEpoch, Lookup, Search, Embed, SetAlias) and grpc.health.v1.Health.\n"
    "  --db DIR            the store (one LMDB environment, e.g. one shard)\n"
    "  --listen HOST:PORT  gRPC address (default 127.0.0.1:50051; port 0 picks a free one)\n"
    "  --http HOST:PORT    HTTP endpoint (also --metrics): the search page at /, its JSON API\n"
    "                      (/api/info, /api/search, /thumb), /metrics (Prometheus text), /healthz\n"
    "  --model NAME=PATH[:ARCH]  load the encoder of the store's model NAME (checked against the\n"
    "                      weights its embeddings came from) for Embed and Search by caption or\n"
    "                      image: PATH is a HF CLIP directory, an exported adapted model (taca\n"
    "                      export), or an open_clip .safetensors with ARCH; repeatable\n"
    "  --aliases FILE      the alias table SetAlias repoints (default DB/aliases.json)\n"
    "  --max-watch N       concurrent Health.Watch calls, a budget apart from --max-streams (16)\n"
    "  --handshake-timeout SECONDS  close connections that have not finished their HTTP/2 (and\n"
    "                      TLS) handshake by then (default 5)\n"
    "  --metrics-auth      /metrics (and /healthz) need the token too (default: open, for scrapers)\n"
    "  --insecure          allow a --listen address off loopback without TLS and a token (warned)\n"
    "  --max-request BYTES largest request accepted (default 33554432: a 4096 x 1024 query Search fits;\n"
    "                      at most --max-message)\n"
    "  --threads N         completion-queue threads (default: CPU count, at least 2)\n"
    "  --max-batch N       samples per batch and queries per Search (default 4096)\n"
    "  --max-streams N     concurrent StreamEpoch calls (default 64)\n"
    "  --max-message BYTES largest response sent (default 67108864)\n"
    "  --max-k K           largest Search k (default 10000)\n"
    "  --grace SECONDS     on SIGTERM/SIGINT: stop accepting, end streams at their next batch\n"
    "                      (UNAVAILABLE, with the batch to resume from), let unary calls finish,\n"
    "                      and cancel what still runs after this long (default 10)\n"
    "  --port-file FILE    write the bound ports (\"grpc=P\" and \"metrics=P\" lines) once listening\n"
    "  --log FILE          log here instead of stderr; SIGHUP reopens it\n"
    "  --log-format text|json  text lines (default) or JSON lines: one object per line with\n"
    "                      ts, level, msg and the event's fields (docs/ops.md)\n"
    "  --tls-cert, --tls-key  serve TLS with this certificate chain and private key (PEM)\n"
    "  --token TOKEN       require 'authorization: Bearer TOKEN' on FeatureCache calls (the\n"
    "                      health service stays open for probes)\n"
    "  --precision f32|bf16  arithmetic of the --model encoders' matrix multiplies (Embed, Search\n"
    "                      by caption or image; bf16: BF16 with F32 accumulation); default: the precision\n"
    "                      the store records for the model (f32 unless precompute ran with\n"
    "                      --precision bf16)\n"
    "  Every option is also read from the environment variable TACA_FEATURED_<OPTION> when it is\n"
    "  not on the command line (--max-batch -> TACA_FEATURED_MAX_BATCH); TACA_FEATURED_MODEL takes\n"
    "  one or more NAME=PATH[:ARCH] separated by commas.\n";

static int parse_int(const char *opt, const char *s, long lo, long hi, long *out, taca_error *err) {
  char *end;
  errno = 0;
  long v = strtol(s, &end, 10);
  if (errno || end == s || *end || v < lo || v > hi)
    return taca_fail(err, "%s: expected an integer in [%ld, %ld], got '%s'", opt, lo, hi, s);
  *out = v;
  return 0;
}

static int parse_model(featured_config *cfg, char *s, taca_error *err) {
  if (cfg->n_models >= FEATURED_MAX_MODEL_OPTS)
    return taca_fail(err, "--model: at most %d models", FEATURED_MAX_MODEL_OPTS);
  char *eq = strchr(s, '=');
  if (!eq || eq == s || !eq[1]) return taca_fail(err, "--model: expected NAME=PATH[:ARCH], got '%s'", s);
  size_t nl = (size_t)(eq - s);
  if (nl >= STORE_NAME_MAX) return taca_fail(err, "--model: name longer than %d bytes", STORE_NAME_MAX - 1);
  featured_model_opt *m = &cfg->models[cfg->n_models];
  memcpy(m->name, s, nl);
  m->name[nl] = '\0';
  for (int i = 0; i < cfg->n_models; i++)
    if (!strcmp(cfg->models[i].name, m->name)) return taca_fail(err, "--model: '%s' given twice", m->name);
  m->path = eq + 1;
  m->arch = NULL;
  char *colon = strchr(eq + 1, ':');
  if (colon) {
    *colon = '\0';
    if (!colon[1]) return taca_fail(err, "--model %s: empty ARCH after ':'", m->name);
    m->arch = colon + 1;
  }
  if (!*m->path) return taca_fail(err, "--model %s: empty PATH", m->name);
  cfg->n_models++;
  return 0;
}

enum { O_DB = 256, O_LISTEN, O_METRICS, O_MODEL, O_THREADS, O_MAX_BATCH, O_MAX_STREAMS, O_MAX_MESSAGE, O_MAX_K,
       O_GRACE, O_PORT_FILE, O_LOG, O_LOG_FORMAT, O_TLS_CERT, O_TLS_KEY, O_TOKEN, O_ALIASES, O_MAX_WATCH, O_HANDSHAKE, O_METRICS_AUTH,
       O_INSECURE, O_MAX_REQUEST, O_PRECISION, O_HELP };
static const struct option LONG[] = {
    {"db", required_argument, 0, O_DB},
    {"listen", required_argument, 0, O_LISTEN},
    {"metrics", required_argument, 0, O_METRICS},
    {"http", required_argument, 0, O_METRICS},  /* the clearer name: it also serves the search page */
    {"model", required_argument, 0, O_MODEL},
    {"threads", required_argument, 0, O_THREADS},
    {"max-batch", required_argument, 0, O_MAX_BATCH},
    {"max-streams", required_argument, 0, O_MAX_STREAMS},
    {"max-message", required_argument, 0, O_MAX_MESSAGE},
    {"max-k", required_argument, 0, O_MAX_K},
    {"grace", required_argument, 0, O_GRACE},
    {"port-file", required_argument, 0, O_PORT_FILE},
    {"log", required_argument, 0, O_LOG},
    {"log-format", required_argument, 0, O_LOG_FORMAT},
    {"tls-cert", required_argument, 0, O_TLS_CERT},
    {"tls-key", required_argument, 0, O_TLS_KEY},
    {"token", required_argument, 0, O_TOKEN},
    {"aliases", required_argument, 0, O_ALIASES},
    {"max-watch", required_argument, 0, O_MAX_WATCH},
    {"handshake-timeout", required_argument, 0, O_HANDSHAKE},
    {"metrics-auth", no_argument, 0, O_METRICS_AUTH},
    {"insecure", no_argument, 0, O_INSECURE},
    {"max-request", required_argument, 0, O_MAX_REQUEST},
    {"precision", required_argument, 0, O_PRECISION},
    {"help", no_argument, 0, O_HELP},
    {0, 0, 0, 0},
};

/* Applies one option's value (from argv or the environment); 0 ok, -1 with the reason in err. */
static int apply(featured_config *cfg, int id, char *val, taca_error *err) {
  long v = 0;
  switch (id) {
    case O_DB: cfg->db = val; break;
    case O_LISTEN:
    case O_METRICS: {
      taca_hostport hp; /* checked here, so that a bad address from the environment is named so */
      if (taca_hostport_parse(id == O_LISTEN ? "--listen" : "--metrics", val, TACA_PORT_ZERO_OK, &hp, err)) return -1;
      *(id == O_LISTEN ? &cfg->listen : &cfg->metrics_listen) = val;
      break;
    }
    case O_MODEL: return parse_model(cfg, val, err);
    case O_THREADS:
      if (parse_int("--threads", val, 1, 256, &v, err)) return -1;
      cfg->threads = (int)v;
      break;
    case O_MAX_BATCH:
      if (parse_int("--max-batch", val, 1, 65536, &v, err)) return -1; /* search.h: at most 65536 queries */
      cfg->max_batch = (int)v;
      break;
    case O_MAX_STREAMS:
      if (parse_int("--max-streams", val, 1, 1 << 20, &v, err)) return -1;
      cfg->max_streams = (int)v;
      break;
    case O_MAX_MESSAGE:
      if (parse_int("--max-message", val, 1024, INT_MAX, &v, err)) return -1;
      cfg->max_message = (size_t)v;
      break;
    case O_MAX_K:
      if (parse_int("--max-k", val, 1, 1 << 24, &v, err)) return -1;
      cfg->max_k = (int)v;
      break;
    case O_GRACE:
      if (parse_int("--grace", val, 0, 86400, &v, err)) return -1;
      cfg->grace_ms = (int)v * 1000;
      break;
    case O_PORT_FILE: cfg->port_file = val; break;
    case O_LOG: cfg->log_path = val; break;
    case O_LOG_FORMAT: {
      log_format lf;
      if (log_parse_format(val, &lf, err)) return -1;
      cfg->log_json = lf == LOG_FORMAT_JSON;
      break;
    }
    case O_ALIASES: cfg->aliases_path = val; break;
    case O_MAX_WATCH:
      if (parse_int("--max-watch", val, 1, 4096, &v, err)) return -1;
      cfg->max_watches = (int)v;
      break;
    case O_HANDSHAKE:
      if (parse_int("--handshake-timeout", val, 1, 300, &v, err)) return -1;
      cfg->handshake_ms = (int)v * 1000;
      break;
    case O_METRICS_AUTH: cfg->metrics_auth = 1; break;
    case O_INSECURE: cfg->insecure = 1; break;
    case O_MAX_REQUEST:
      if (parse_int("--max-request", val, 1024, INT_MAX, &v, err)) return -1;
      cfg->max_request = (size_t)v;
      break;
    case O_TLS_CERT: cfg->tls_cert = val; break;
    case O_TLS_KEY: cfg->tls_key = val; break;
    case O_TOKEN:
      if (!*val) return taca_fail(err, "--token: empty token");
      cfg->token = val;
      break;
    case O_PRECISION: {
      taca_error e;
      if (nn_precision_parse(val, &cfg->precision, &e)) return taca_fail(err, "--%s", e.msg);
      cfg->precision_set = 1;
      break;
    }
  }
  return 0;
}

/* TACA_FEATURED_MODEL: NAME=PATH[:ARCH] entries separated by commas, parsed from a private copy
 * (parse_model cuts the string in place; the environment stays untouched). */
static int apply_env_models(featured_config *cfg, const char *val, taca_error *err) {
  static char copy[8192];
  if (strlen(val) >= sizeof copy)
    return taca_fail(err, "TACA_FEATURED_MODEL: longer than %zu bytes", sizeof copy - 1);
  strcpy(copy, val);
  char *save = NULL;
  for (char *m = strtok_r(copy, ",", &save); m; m = strtok_r(NULL, ",", &save))
    if (parse_model(cfg, m, err)) return -1;
  return 0;
}

int featured_parse_options(featured_config *cfg, int argc, char **argv, FILE *out, taca_error *err) {
  memset(cfg, 0, sizeof *cfg);
  long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
  cfg->listen = "127.0.0.1:50051";
  cfg->threads = ncpu < 2 ? 2 : ncpu > 16 ? 16 : (int)ncpu;
  cfg->max_batch = 4096;
  cfg->max_streams = 64;
  cfg->max_watches = 16;
  cfg->handshake_ms = 5000;
  cfg->max_k = 10000;
  cfg->max_message = 64u << 20;
  cfg->max_request = 32u << 20;
  cfg->grace_ms = 10000;
  cfg->refresh_ms = 2000;

  char given[O_HELP + 1] = {0};
  optind = 1;
  opterr = 0;
  int c;
  while ((c = getopt_long(argc, argv, "h", LONG, NULL)) != -1) {
    if (c == 'h' || c == O_HELP) {
      fputs(FEATURED_USAGE, out);
      return 1;
    }
    if (c < O_DB || c > O_PRECISION)
      return taca_fail(err, "unknown or incomplete option '%s' (try --help)", argv[optind - 1]);
    if (apply(cfg, c, optarg, err)) return -1;
    given[c] = 1;
  }
  if (optind < argc) return taca_fail(err, "unexpected argument '%s' (try --help)", argv[optind]);
  /* TACA_FEATURED_<OPTION> for the options not on the command line (rules: base/envopt.h). */
  for (const struct option *p = LONG; p->name; p++) {
    if (p->val == O_HELP || given[p->val]) continue;
    char env[64];
    const char *cval;
    int set = taca_env_option("TACA_FEATURED_", p, env, sizeof env, &cval, err);
    if (set < 0) return -1;
    if (!set) continue;
    char *val = (char *)cval; /* parse_model cuts --model values in place; the env copy is private */
    if ((p->val == O_MODEL ? apply_env_models(cfg, val, err) : apply(cfg, p->val, val, err)) < 0) {
      if (!err) return -1;
      char why[sizeof err->msg];
      snprintf(why, sizeof why, "%s", err->msg);
      return taca_fail(err, "%s (from the environment variable %s)", why, env);
    }
  }
  if (cfg->max_request > cfg->max_message) cfg->max_request = cfg->max_message; /* never above it */
  if (!cfg->db) return taca_fail(err, "--db DIR is required (try --help)");
  if (!cfg->tls_cert != !cfg->tls_key) return taca_fail(err, "--tls-cert and --tls-key go together");
  if (cfg->metrics_auth && !cfg->token) return taca_fail(err, "--metrics-auth needs --token");
  const char *flags[2] = {"--listen", "--http"}, *addrs[2] = {cfg->listen, cfg->metrics_listen};
  for (int i = 0; i < 2; i++) {
    taca_hostport hp;
    if (!addrs[i] || taca_hostport_parse(flags[i], addrs[i], TACA_PORT_ZERO_OK, &hp, NULL)) continue;
    int exposed = !taca_hostport_is_loopback(&hp);
    if (exposed && !cfg->insecure && (i == 0 ? (!cfg->tls_cert || !cfg->token) : !cfg->token))
      return taca_fail(err, "%s %s is off loopback: serve it with %s, or say --insecure to do it anyway", flags[i],
                       addrs[i], i == 0 ? "--tls-cert/--tls-key and --token" : "--token (and --metrics-auth)");
  }
  return 0;
}
