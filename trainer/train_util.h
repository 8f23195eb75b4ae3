/* train_util.h: small helpers the training loops share (TaCA in train.c, AFT in aft_train.c). */
#ifndef TACA_TRAINER_TRAIN_UTIL_H
#define TACA_TRAINER_TRAIN_UTIL_H

#include <stddef.h>

double train_now_s(void);                        /* CLOCK_MONOTONIC seconds */
void train_fmt_eta(char *buf, size_t n, double s); /* "42s", "3m07s", "2h05m" or "--" */

#endif
