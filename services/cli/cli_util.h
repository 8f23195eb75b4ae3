/* cli_util.h: small helpers shared by the taca subcommands (errors, numbers, caption files). */
#ifndef TACA_CLI_UTIL_H
#define TACA_CLI_UTIL_H

#include <getopt.h>
#include <stddef.h>

#include "base/error.h"
#include "nn/backend.h"

/* Prints "taca CMD: message" to stderr as one line and returns status (for `return cli_fail(...)`). */
int cli_fail(const char *cmd, int status, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* Takes the long options of opts that argv does not give from the environment: option --NAME from
 * TACA_<NAME>, by the rules of base/envopt.h (the one reader of taca-train and taca-featured too; a
 * flag variable with a value other than 1/true/yes/0/false/no exits 2 with a line naming it).
 * The values are inserted as "--NAME=VALUE" right after
 * (*argv)[0], so that the caller's getopt_long loop parses and checks them like typed ones; *argc
 * and *argv then point to a private array (kept until the next call). shortopts: the caller's.
 * cli_fail then names the variable in a usage error about an option taken from it. Call it before
 * the getopt_long loop: cli_env_options(&argc, &argv, "", opts). */
void cli_env_options(int *argc, char ***argv, const char *shortopts, const struct option *opts);

/* Checks an --arch value (built-in name or config JSON, nn/clip_config.h) while parsing options, so
 * that a bad one is a usage error (exit 2) with a one-line reason; -1 (after printing) if it is bad. */
int cli_check_arch(const char *cmd, const char *arch);

/* Parses a positive int option value; returns -1 (after printing) if it is not one. */
int cli_parse_positive(const char *cmd, const char *opt, const char *s, int *out);
/* --precision f32|bf16 (nn/backend.h); prints the one-line usage error and returns -1 otherwise. */
int cli_parse_precision(const char *cmd, const char *s, nn_precision *out);

/* Reads a UTF-8 text file, one caption per line ('\n' or "\r\n"; a final newline does not start a
 * new caption). Returns the number of lines (>= 0) and sets *lines (free with cli_free_lines),
 * or -1 with a reason. */
int cli_read_lines(const char *path, char ***lines, taca_error *err);
void cli_free_lines(char **lines, int n);

#endif
