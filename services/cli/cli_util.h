/* cli_util.h: small helpers shared by the taca subcommands (errors, numbers, caption files). */
#ifndef TACA_CLI_UTIL_H
#define TACA_CLI_UTIL_H

#include <stddef.h>

#include "nn/error.h"

/* Prints "taca CMD: message" to stderr as one line and returns status (for `return cli_fail(...)`). */
int cli_fail(const char *cmd, int status, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* Parses a positive int option value; returns -1 (after printing) if it is not one. */
int cli_parse_positive(const char *cmd, const char *opt, const char *s, int *out);

/* Reads a UTF-8 text file, one caption per line ('\n' or "\r\n"; a final newline does not start a
 * new caption). Returns the number of lines (>= 0) and sets *lines (free with cli_free_lines),
 * or -1 with a reason. */
int cli_read_lines(const char *path, char ***lines, taca_error *err);
void cli_free_lines(char **lines, int n);

#endif
