/* clip_train_impl.h: internal interface between nn/clip_train.c (activations, forward, backward)
 * and nn/clip_train_params.c (the tensor table, initialisation, load, save, AdamW). */
#ifndef TACA_NN_CLIP_TRAIN_IMPL_H
#define TACA_NN_CLIP_TRAIN_IMPL_H

#include "nn/clip_train.h"

/* Builds the tensor table, allocates the four flat buffers and initialises the parameters. On
 * error the parameter fields of ct are left freeable by clip_train_params_free. */
int clip_train_params_create(clip_train *ct, uint64_t seed, taca_error *err);
void clip_train_params_free(clip_train *ct);

#endif
