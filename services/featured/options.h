/* options.h: the command line of taca-featured. */
#ifndef TACA_FEATURED_OPTIONS_H
#define TACA_FEATURED_OPTIONS_H

#include <stdio.h>

#include "base/error.h"
#include "services/featured/featured.h"

extern const char *FEATURED_USAGE;

/* Fills cfg from argv (defaults first). Returns 0 to run, 1 when --help was asked (usage printed to
 * out), -1 on a usage error with the reason in err. Strings point into argv. */
int featured_parse_options(featured_config *cfg, int argc, char **argv, FILE *out, taca_error *err);

#endif
