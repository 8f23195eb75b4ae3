/* log.h: the daemon's log: timestamped lines to stderr or a file that SIGHUP reopens (logrotate).
 * Safe to call from any thread. */
#ifndef TACA_FEATURED_LOG_H
#define TACA_FEATURED_LOG_H

#include "nn/error.h"

typedef enum log_level { LOG_DEBUG = 0, LOG_INFO = 1, LOG_WARN = 2, LOG_ERROR = 3 } log_level;

/* path NULL: stderr. */
int log_open(const char *path, taca_error *err);
/* Reopens the file (after a rotation); keeps the old one if the new open fails. */
int log_reopen(taca_error *err);
void log_close(void);
void log_msg(log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#endif
