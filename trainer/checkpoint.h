/* checkpoint.h: the trainer's checkpoint files in --out DIR:
 *   DIR/step-NNNNNN.safetensors        the trainable parameters after NNNNNN updates (PyTorch-loadable)
 *   DIR/step-NNNNNN.optim.safetensors  AdamW moments and step, for --resume
 * both written atomically (temp file, fsync, rename), the optimizer file first so a parameters file
 * only ever exists with its optimizer state. Metadata records the configuration a resumed run must
 * match (new model, targets, batch, world size, seed, PEFT layout). */
#ifndef TACA_TRAINER_CHECKPOINT_H
#define TACA_TRAINER_CHECKPOINT_H

#include "base/error.h"
#include "methods/taca_checkpoint.h"

void checkpoint_path(char *buf, size_t n, const char *dir, long step, int optim);

/* Writes both files for P->step. meta: NULL-terminated key, value pairs. */
int checkpoint_save(const taca_params *P, const char *dir, const char *const *meta, taca_error *err);

/* The highest step with both files present in dir, or -1 when there is none. */
long checkpoint_latest(const char *dir);

/* Loads parameters and optimizer state of `step`, checking that the stored metadata values of the
 * keys in `must_match` (NULL-terminated key, value pairs) equal the given ones. */
int checkpoint_load(taca_params *P, const char *dir, long step, const char *const *must_match,
                    taca_error *err);

#endif
