/* train_util.h: small helpers the training loops share (TaCA in train.c, AFT in aft_train.c). */
#ifndef TACA_TRAINER_TRAIN_UTIL_H
#define TACA_TRAINER_TRAIN_UTIL_H

#include <jansson.h>
#include <stddef.h>

#include "base/error.h"

double train_now_s(void);                        /* CLOCK_MONOTONIC seconds */
void train_fmt_eta(char *buf, size_t n, double s); /* "42s", "3m07s", "2h05m" or "--" */

/* Rewrites the JSON-lines log at path (atomically) keeping the lines for which keep(line) is
 * nonzero: a resumed run drops what it will log again. A missing file is not an error. */
int train_trim_log(const char *path, int (*keep)(json_t *line, void *arg), void *arg, taca_error *err);

#endif
