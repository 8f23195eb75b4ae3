/* cli_util.c: helpers shared by the taca subcommands. */
#include "services/cli/cli_util.h"

#include "base/envopt.h"
#include "nn/clip_config.h"

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* What cli_env_options added, for the "(from the environment variable ...)" note of cli_fail. */
enum { ENV_MAX = 64 };
static char **env_argv;                /* the last argv it built */
static char *env_args[ENV_MAX];        /* "--NAME=VALUE" strings in env_argv */
static char env_opt[ENV_MAX][64];      /* "--NAME" */
static char env_var[ENV_MAX][72];      /* "TACA_NAME" */
static int env_n;

/* The environment variable an option named in msg came from, or NULL. */
static const char *env_source(const char *msg) {
  for (int i = 0; i < env_n; i++) {
    size_t l = strlen(env_opt[i]);
    for (const char *p = strstr(msg, env_opt[i]); p; p = strstr(p + 1, env_opt[i])) {
      char next = p[l];
      if (!(islower((unsigned char)next) || isdigit((unsigned char)next) || next == '-')) return env_var[i];
    }
  }
  return NULL;
}

int cli_fail(const char *cmd, int status, const char *fmt, ...) {
  char msg[1024];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  const char *var = status == 2 ? env_source(msg) : NULL;
  if (var) {
    size_t l = strlen(msg);
    snprintf(msg + l, sizeof msg - l, " (from the environment variable %s)", var);
  }
  /* One line: fold any newline a library put into the reason. */
  for (char *p = msg; *p; p++)
    if (*p == '\n' || *p == '\r') *p = ' ';
  fprintf(stderr, "taca %s: %s\n", cmd, msg);
  return status;
}

void cli_env_options(int *argc, char ***argv, const char *shortopts, const struct option *opts) {
  for (int i = 0; i < env_n; i++) free(env_args[i]);
  env_n = 0;
  int n = *argc;
  /* Which options the command line gives: a getopt_long pass over a copy (it permutes its array). */
  char **scan = malloc(((size_t)n + 1) * sizeof *scan);
  size_t n_opts = 0;
  while (opts[n_opts].name) n_opts++;
  char *given = calloc(n_opts + 1, 1);
  if (!scan || !given) {
    free(scan);
    free(given);
    return;
  }
  memcpy(scan, *argv, ((size_t)n + 1) * sizeof *scan);
  int saved_opterr = opterr, idx;
  opterr = 0;
  optind = 0; /* glibc: full re-initialisation */
  int c;
  while (idx = -1, (c = getopt_long(n, scan, shortopts, opts, &idx)) != -1) {
    if (idx >= 0 && (size_t)idx < n_opts) given[idx] = 1;
    else if (c != '?' && c != ':') /* a short option: the long twins with the same val */
      for (size_t k = 0; k < n_opts; k++)
        if (!opts[k].flag && opts[k].val == c) given[k] = 1;
  }
  opterr = saved_opterr;
  optind = 1;
  free(scan);

  for (size_t k = 0; k < n_opts && env_n < ENV_MAX; k++) {
    const struct option *o = &opts[k];
    if (given[k] || strlen(o->name) >= sizeof env_opt[0] - 2) continue;
    char var[sizeof env_var[0]];
    const char *v;
    taca_error err;
    int set = taca_env_option("TACA_", o, var, sizeof var, &v, &err);
    if (set < 0) exit(cli_fail((*argv)[0], 2, "%s", err.msg));
    if (!set) continue;
    size_t len = strlen(o->name) + (v ? strlen(v) : 0) + 4;
    char *arg = malloc(len);
    if (!arg) break;
    if (!v) snprintf(arg, len, "--%s", o->name);
    else snprintf(arg, len, "--%s=%s", o->name, v);
    env_args[env_n] = arg;
    snprintf(env_opt[env_n], sizeof env_opt[0], "--%s", o->name);
    snprintf(env_var[env_n], sizeof env_var[0], "%s", var);
    env_n++;
  }
  free(given);
  if (env_n == 0) return;
  char **nv = malloc(((size_t)n + env_n + 1) * sizeof *nv);
  if (!nv) {
    for (int i = 0; i < env_n; i++) free(env_args[i]);
    env_n = 0;
    return;
  }
  nv[0] = (*argv)[0];
  memcpy(nv + 1, env_args, (size_t)env_n * sizeof *nv);
  memcpy(nv + 1 + env_n, *argv + 1, (size_t)n * sizeof *nv); /* argv[1..n-1] and the NULL */
  free(env_argv);
  env_argv = nv;
  *argv = nv;
  *argc = n + env_n;
}

int cli_check_arch(const char *cmd, const char *arch) {
  clip_config cfg;
  taca_error err;
  if (clip_config_from_arg(&cfg, arch, &err) == 0) return 0;
  cli_fail(cmd, 2, "--arch: %s", err.msg);
  return -1;
}

int cli_parse_positive(const char *cmd, const char *opt, const char *s, int *out) {
  char *end;
  errno = 0;
  long v = strtol(s, &end, 10);
  if (errno || end == s || *end || v <= 0 || v > INT_MAX) {
    cli_fail(cmd, 2, "%s expects a positive integer, got '%s'", opt, s);
    return -1;
  }
  *out = (int)v;
  return 0;
}

int cli_parse_precision(const char *cmd, const char *s, nn_precision *out) {
  taca_error err = {{0}};
  if (nn_precision_parse(s, out, &err)) {
    cli_fail(cmd, 2, "--%s", err.msg);
    return -1;
  }
  return 0;
}

int cli_read_lines(const char *path, char ***lines, taca_error *err) {
  FILE *f = fopen(path, "rb");
  if (!f) return taca_fail(err, "%s: %s", path, strerror(errno));
  char **v = NULL;
  int n = 0, cap = 0;
  char *line = NULL;
  size_t lcap = 0;
  ssize_t len;
  while ((len = getline(&line, &lcap, f)) >= 0) {
    if (len > 0 && line[len - 1] == '\n') line[--len] = 0;
    if (len > 0 && line[len - 1] == '\r') line[--len] = 0;
    if ((size_t)len != strlen(line)) {
      cli_free_lines(v, n);
      free(line);
      fclose(f);
      return taca_fail(err, "%s: line %d contains a NUL byte", path, n + 1);
    }
    if (n == cap) {
      cap = cap ? 2 * cap : 64;
      char **nv = realloc(v, sizeof *nv * cap);
      if (!nv) break;
      v = nv;
    }
    v[n++] = strdup(line);
  }
  int bad = ferror(f);
  free(line);
  fclose(f);
  if (bad) {
    cli_free_lines(v, n);
    return taca_fail(err, "%s: read error", path);
  }
  *lines = v;
  return n;
}

void cli_free_lines(char **lines, int n) {
  for (int i = 0; i < n; i++) free(lines[i]);
  free(lines);
}
