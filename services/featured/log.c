/* log.c: timestamped log lines (UTC, ISO 8601) under a mutex, to stderr or a reopenable file. */
#include "services/featured/log.h"

#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>

static pthread_mutex_t log_mu = PTHREAD_MUTEX_INITIALIZER;
static FILE *log_file;  /* NULL: stderr */
static char log_path[4096];

int log_open(const char *path, taca_error *err) {
  pthread_mutex_lock(&log_mu);
  int rc = 0;
  if (path) {
    FILE *f = fopen(path, "a");
    if (!f) {
      rc = taca_fail(err, "--log %s: %s", path, strerror(errno));
    } else {
      setvbuf(f, NULL, _IOLBF, 0);
      log_file = f;
      snprintf(log_path, sizeof log_path, "%s", path);
    }
  }
  pthread_mutex_unlock(&log_mu);
  return rc;
}

int log_reopen(taca_error *err) {
  int rc = 0;
  pthread_mutex_lock(&log_mu);
  if (log_file) {
    FILE *f = fopen(log_path, "a");
    if (!f) {
      rc = taca_fail(err, "reopening log %s: %s", log_path, strerror(errno));
    } else {
      setvbuf(f, NULL, _IOLBF, 0);
      fclose(log_file);
      log_file = f;
    }
  }
  pthread_mutex_unlock(&log_mu);
  return rc;
}

void log_close(void) {
  pthread_mutex_lock(&log_mu);
  if (log_file) fclose(log_file);
  log_file = NULL;
  pthread_mutex_unlock(&log_mu);
}

void log_msg(log_level level, const char *fmt, ...) {
  static const char *NAMES[] = {"debug", "info", "warn", "error"};
  struct timeval tv;
  gettimeofday(&tv, NULL);
  struct tm tm;
  gmtime_r(&tv.tv_sec, &tm);
  char ts[32];
  strftime(ts, sizeof ts, "%Y-%m-%dT%H:%M:%S", &tm);
  char line[1024];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(line, sizeof line, fmt, ap);
  va_end(ap);
  pthread_mutex_lock(&log_mu);
  FILE *f = log_file ? log_file : stderr;
  fprintf(f, "%s.%03dZ %s %s\n", ts, (int)(tv.tv_usec / 1000), NAMES[level & 3], line);
  fflush(f);
  pthread_mutex_unlock(&log_mu);
}
