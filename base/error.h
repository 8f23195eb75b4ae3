/* error.h: the one error type every module returns its reasons in.
 *
 * Functions that can fail return 0 on success and -1 on failure, and write a one-line,
 * human-readable reason ("model.safetensors: tensor 'x' data_offsets [0, 9] out of range (buffer is 8 bytes)")
 * into a caller-provided taca_error (which may be NULL when the caller does not care). */
#ifndef TACA_BASE_ERROR_H
#define TACA_BASE_ERROR_H

#include <stddef.h>

typedef struct taca_error {
  char msg[512];
} taca_error;

/* Formats the reason into err (if non-NULL) and returns -1, so callers can `return taca_fail(...)`. */
int taca_fail(taca_error *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Prepends "prefix: " to an error already set (for adding context such as a file name). Returns -1. */
int taca_error_prefix(taca_error *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#endif
