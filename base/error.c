/* error.c: formatting of taca_error reasons. */
#include "base/error.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

int taca_fail(taca_error *err, const char *fmt, ...) {
  if (err) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err->msg, sizeof err->msg, fmt, ap);
    va_end(ap);
  }
  return -1;
}

int taca_error_prefix(taca_error *err, const char *fmt, ...) {
  if (!err) return -1;
  char prefix[256], old[sizeof err->msg];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(prefix, sizeof prefix, fmt, ap);
  va_end(ap);
  memcpy(old, err->msg, sizeof old);
  /* Keep the whole reason (it names the actual problem); shorten the prefix if both do not fit. */
  const size_t room = sizeof err->msg - 3; /* ": " and the terminator */
  size_t lp = strnlen(prefix, sizeof prefix), lo = strnlen(old, sizeof old);
  if (lo > room) lo = room;
  if (lp > room - lo) lp = room - lo;
  memcpy(err->msg, prefix, lp);
  memcpy(err->msg + lp, ": ", 2);
  memcpy(err->msg + lp + 2, old, lo);
  err->msg[lp + 2 + lo] = 0;
  return -1;
}
