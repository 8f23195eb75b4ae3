/* log.c: log lines (UTC, ISO 8601 timestamps) under a mutex, to stderr or a reopenable file, as text
 * or as JSON lines with structured fields. */
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
static log_format log_fmt = LOG_FORMAT_TEXT;

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

void log_set_format(log_format f) {
  pthread_mutex_lock(&log_mu);
  log_fmt = f;
  pthread_mutex_unlock(&log_mu);
}

int log_parse_format(const char *s, log_format *f, taca_error *err) {
  if (!strcmp(s, "text")) *f = LOG_FORMAT_TEXT;
  else if (!strcmp(s, "json")) *f = LOG_FORMAT_JSON;
  else return taca_fail(err, "--log-format: expected text or json, got '%s'", s);
  return 0;
}

/* Length of the valid UTF-8 sequence at s (1..4), or 0 if it is not one. */
static int utf8_len(const unsigned char *s) {
  unsigned c = s[0];
  int n;
  unsigned min;
  if (c < 0x80) return 1;
  if (c >= 0xC2 && c <= 0xDF) n = 2, min = 0x80;
  else if (c >= 0xE0 && c <= 0xEF) n = 3, min = 0x800;
  else if (c >= 0xF0 && c <= 0xF4) n = 4, min = 0x10000;
  else return 0;
  unsigned cp = c & (0x3F >> (n - 1));
  for (int i = 1; i < n; i++) {
    if ((s[i] & 0xC0) != 0x80) return 0; /* also stops at the NUL */
    cp = cp << 6 | (s[i] & 0x3F);
  }
  if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return 0;
  return n;
}

size_t log_json_escape(char *out, size_t cap, const char *s) {
  size_t o = 0;
  if (!cap) return 0;
  for (const unsigned char *p = (const unsigned char *)s; *p;) {
    char tmp[8];
    size_t tl;
    int n = 1;
    if (*p == '"' || *p == '\\') tl = (size_t)snprintf(tmp, sizeof tmp, "\\%c", *p);
    else if (*p == '\n') tl = (size_t)snprintf(tmp, sizeof tmp, "\\n");
    else if (*p == '\r') tl = (size_t)snprintf(tmp, sizeof tmp, "\\r");
    else if (*p == '\t') tl = (size_t)snprintf(tmp, sizeof tmp, "\\t");
    else if (*p < 0x20 || *p == 0x7F) tl = (size_t)snprintf(tmp, sizeof tmp, "\\u%04x", *p);
    else if ((n = utf8_len(p)) == 0) {
      n = 1;
      tl = (size_t)snprintf(tmp, sizeof tmp, "\\ufffd");
    } else {
      memcpy(tmp, p, (size_t)n);
      tl = (size_t)n;
    }
    if (o + tl >= cap) break;
    memcpy(out + o, tmp, tl);
    o += tl;
    p += n;
  }
  out[o] = '\0';
  return o;
}

static void emit(log_level level, const log_field *fields, int n, const char *fmt, va_list ap) {
  static const char *NAMES[] = {"debug", "info", "warn", "error"};
  struct timeval tv;
  gettimeofday(&tv, NULL);
  struct tm tm;
  gmtime_r(&tv.tv_sec, &tm);
  char ts[40], sec[32];
  strftime(sec, sizeof sec, "%Y-%m-%dT%H:%M:%S", &tm);
  snprintf(ts, sizeof ts, "%s.%03dZ", sec, (int)(tv.tv_usec / 1000));
  char msg[1024];
  vsnprintf(msg, sizeof msg, fmt, ap);
  pthread_mutex_lock(&log_mu);
  FILE *f = log_file ? log_file : stderr;
  if (log_fmt == LOG_FORMAT_TEXT) {
    fprintf(f, "%s %s %s\n", ts, NAMES[level & 3], msg);
  } else {
    static char line[8192]; /* under log_mu */
    char esc[2048];
    size_t l = 0;
    log_json_escape(esc, sizeof esc, msg);
    l += (size_t)snprintf(line, sizeof line, "{\"ts\":\"%s\",\"level\":\"%s\",\"msg\":\"%s\"", ts, NAMES[level & 3], esc);
    for (int i = 0; i < n && l < sizeof line; i++) {
      char key[128];
      log_json_escape(key, sizeof key, fields[i].key);
      if (fields[i].type == LOG_FIELD_INT)
        l += (size_t)snprintf(line + l, sizeof line - l, ",\"%s\":%lld", key, fields[i].num);
      else if (fields[i].type == LOG_FIELD_BOOL)
        l += (size_t)snprintf(line + l, sizeof line - l, ",\"%s\":%s", key, fields[i].num ? "true" : "false");
      else if (!fields[i].str)
        l += (size_t)snprintf(line + l, sizeof line - l, ",\"%s\":null", key);
      else {
        log_json_escape(esc, sizeof esc, fields[i].str);
        l += (size_t)snprintf(line + l, sizeof line - l, ",\"%s\":\"%s\"", key, esc);
      }
    }
    if (l >= sizeof line - 2) { /* cannot happen with these buffer sizes; never write broken JSON */
      log_json_escape(esc, 256, msg);
      snprintf(line, sizeof line, "{\"ts\":\"%s\",\"level\":\"%s\",\"msg\":\"%s\"", ts, NAMES[level & 3], esc);
      l = strlen(line);
    }
    fprintf(f, "%s}\n", line);
  }
  fflush(f);
  pthread_mutex_unlock(&log_mu);
}

void log_msg(log_level level, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  emit(level, NULL, 0, fmt, ap);
  va_end(ap);
}

void log_event(log_level level, const log_field *fields, int n, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  emit(level, fields, n, fmt, ap);
  va_end(ap);
}
