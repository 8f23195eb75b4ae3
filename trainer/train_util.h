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

/* Test-only fault injection: TACA_TRAIN_FAULT=RANK:PHASE[:kill] makes rank RANK fail the first time
 * it reaches PHASE (setup: after the backend, before the first collective; step: in a step's
 * forward, before the ranks agree; allreduce: just before the gradient all-reduce, after the
 * agreement; checkpoint: in a checkpoint write), with a one-line error or, with :kill, by SIGKILL.
 * Returns -1 with "injected fault at PHASE" when it fires, else 0. Unset: always 0. */
int train_fault(int rank, const char *phase, taca_error *err);

#endif
