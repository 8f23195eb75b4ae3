/* log.h: the daemon's log: one line per event to stderr or a file that SIGHUP reopens (logrotate),
 * as human text or as JSON lines (--log-format json). Safe to call from any thread. */
#ifndef TACA_FEATURED_LOG_H
#define TACA_FEATURED_LOG_H

#include "base/error.h"

typedef enum log_level { LOG_DEBUG = 0, LOG_INFO = 1, LOG_WARN = 2, LOG_ERROR = 3 } log_level;

typedef enum log_format {
  LOG_FORMAT_TEXT = 0, /* "2024-05-01T12:00:00.123Z info message" */
  LOG_FORMAT_JSON = 1, /* {"ts":"2024-05-01T12:00:00.123Z","level":"info","msg":"message",FIELDS...} */
} log_format;

/* A structured field of an event: in JSON lines a key of its own; text lines show only the message
 * (which says the same in words). */
typedef enum log_field_type { LOG_FIELD_STR, LOG_FIELD_INT, LOG_FIELD_BOOL } log_field_type;
typedef struct log_field {
  const char *key;
  log_field_type type;
  const char *str; /* LOG_FIELD_STR (NULL: JSON null) */
  long long num;   /* LOG_FIELD_INT, LOG_FIELD_BOOL */
} log_field;
#define LOG_STR(k, v) ((log_field){(k), LOG_FIELD_STR, (v), 0})
#define LOG_INT(k, v) ((log_field){(k), LOG_FIELD_INT, NULL, (long long)(v)})
#define LOG_BOOL(k, v) ((log_field){(k), LOG_FIELD_BOOL, NULL, (v) ? 1 : 0})

/* path NULL: stderr. */
int log_open(const char *path, taca_error *err);
/* Reopens the file (after a rotation); keeps the old one if the new open fails. */
int log_reopen(taca_error *err);
void log_close(void);
void log_set_format(log_format f);
/* "text" or "json" -> 0 and *f; anything else -1 with the reason in err. */
int log_parse_format(const char *s, log_format *f, taca_error *err);
void log_msg(log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* log_msg with n structured fields. */
void log_event(log_level level, const log_field *fields, int n, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* Writes s as a JSON string body (no quotes) into out (cap bytes, NUL-terminated, truncated at a
 * character boundary): '"', '\\' and control characters escaped, invalid UTF-8 as U+FFFD. Returns the
 * length written. */
size_t log_json_escape(char *out, size_t cap, const char *s);

#endif
