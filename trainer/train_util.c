/* train_util.c: clock, ETA formatting and log trimming for the training loops, and the test-only
 * fault injection of train_util.h. */
#include "trainer/train_util.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/atomicfile.h"

double train_now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec * 1e-9;
}

void train_fmt_eta(char *buf, size_t n, double s) {
  if (!(s >= 0) || s > 1e7) snprintf(buf, n, "--");
  else if (s < 60) snprintf(buf, n, "%.0fs", s);
  else if (s < 3600) snprintf(buf, n, "%dm%02ds", (int)s / 60, (int)s % 60);
  else snprintf(buf, n, "%dh%02dm", (int)s / 3600, (int)s / 60 % 60);
}

int train_trim_log(const char *path, int (*keep)(json_t *line, void *arg), void *arg, taca_error *err) {
  FILE *f = fopen(path, "rb");
  if (!f) return errno == ENOENT ? 0 : taca_fail(err, "%s: %s", path, strerror(errno));
  char *kept = NULL, *line = NULL;
  size_t klen = 0, cap = 0;
  ssize_t n;
  FILE *mem = open_memstream(&kept, &klen);
  if (!mem) {
    fclose(f);
    return taca_fail(err, "out of memory");
  }
  while ((n = getline(&line, &cap, f)) > 0) {
    json_t *j = json_loads(line, 0, NULL);
    if (j && keep(j, arg)) fputs(line, mem);
    json_decref(j);
  }
  free(line);
  fclose(f);
  fclose(mem);
  taca_chunk chunk = {kept, klen};
  int rc = taca_write_file_atomic(path, &chunk, 1, err);
  free(kept);
  return rc;
}

int train_fault(int rank, const char *phase, taca_error *err) {
  static int fired;
  const char *spec = getenv("TACA_TRAIN_FAULT");
  if (!spec || !*spec || fired) return 0;
  char *end;
  long r = strtol(spec, &end, 10);
  if (end == spec || *end != ':' || r != rank) return 0;
  const char *p = end + 1;
  size_t len = strcspn(p, ":");
  if (len != strlen(phase) || strncmp(p, phase, len) != 0) return 0;
  fired = 1;
  if (!strcmp(p + len, ":kill")) raise(SIGKILL);
  return taca_fail(err, "injected fault at %s (TACA_TRAIN_FAULT)", phase);
}
