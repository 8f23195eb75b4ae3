/* train.h: one rank's TaCA training run (see train.c). */
#ifndef TACA_TRAINER_TRAIN_H
#define TACA_TRAINER_TRAIN_H

#include "base/error.h"
#include "trainer/collectives.h"
#include "trainer/train_options.h"

int train_run(const train_options *o, const taca_comm *comm, taca_error *err);

#endif
