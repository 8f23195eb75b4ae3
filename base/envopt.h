/* envopt.h: the one reader of options from the environment, used by taca-train, taca-featured and
 * the `taca` subcommands, so that every program follows the same documented rules:
 *   - option --NAME is read from PREFIX + NAME in upper case with '-' -> '_' (prefix "TACA_":
 *     --batch-size -> TACA_BATCH_SIZE; "TACA_FEATURED_": --max-batch -> TACA_FEATURED_MAX_BATCH);
 *   - only for options the command line does not give (the command line wins); never --help;
 *   - an empty variable counts as unset;
 *   - an option with a value takes the variable's text as typed on the command line (checked by the
 *     same code, and a usage error names the variable);
 *   - a flag (no value) is set by 1, true or yes, left off by 0, false or no; anything else is a
 *     usage error naming the variable (never a guess). */
#ifndef TACA_BASE_ENVOPT_H
#define TACA_BASE_ENVOPT_H

#include <getopt.h>
#include <stddef.h>

#include "base/error.h"

/* Writes PREFIX + NAME (upper case, '-' -> '_') into var. */
void taca_env_var_name(const char *prefix, const char *name, char *var, size_t size);

/* Reads option o from the environment (rules above); var receives the variable's name.
 * Returns 0 when unset or a flag left off, 1 when set (*value is the text, or NULL for a flag that is
 * set), -1 for a flag with another value (err: "TACA_X: ..."). */
int taca_env_option(const char *prefix, const struct option *o, char *var, size_t var_size, const char **value,
                    taca_error *err);

#endif
