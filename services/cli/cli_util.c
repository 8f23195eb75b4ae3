/* cli_util.c: helpers shared by the taca subcommands. */
#include "services/cli/cli_util.h"

#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int cli_fail(const char *cmd, int status, const char *fmt, ...) {
  char msg[1024];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  /* One line: fold any newline a library put into the reason. */
  for (char *p = msg; *p; p++)
    if (*p == '\n' || *p == '\r') *p = ' ';
  fprintf(stderr, "taca %s: %s\n", cmd, msg);
  return status;
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
