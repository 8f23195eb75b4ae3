/* taca_step.h: one TaCA training step's computation on a backend: the frozen new vision tower with
 * its adapters (or LoRA) and the projector, forward to the features f, and backward from dL/df to
 * the gradients of every trainable tensor. The loss between the two is methods/taca_loss.h.
 *
 * A data-parallel rank does, per step:
 *   taca_params_zero_grad(P);
 *   taca_model_forward(tm, P, pixels, b, f_local)           local rows -> f_local [b, E_old]
 *   (all-gather f, old_img, old_txt of all ranks in rank order: the global batch of n rows)
 *   taca_loss(&lc, f, old_txt, old_img, n, E_old, r0, r0 + b, &terms, df_local, work, &err)
 *   taca_model_backward(tm, P, df_local)                    gradients of this rank's rows
 *   (all-reduce P->flat_g, P->n floats, with SUM)
 *   taca_params_adamw(P, &opt);
 * and a single process does the same with r0 = 0, n = b, or calls taca_step_forward_backward.
 * Features and gradients cross this API in host memory (they are small: b x E_old). */
#ifndef TACA_METHODS_TACA_STEP_H
#define TACA_METHODS_TACA_STEP_H

#include "nn/clip.h"
#include "methods/taca_loss.h"
#include "methods/taca_params.h"

typedef struct taca_model taca_model;

/* Workspaces for up to max_batch images per forward, for the new model (which must outlive it) and
 * the configuration of P (checked against the model: width, layers, embedding size). recompute:
 * keep only block inputs and re-run each block's forward in the backward (less memory, one more
 * forward's time). */
taca_model *taca_model_create(const clip_model *new_model, const taca_params *P, int max_batch,
                              int recompute, taca_error *err);
void taca_model_free(taca_model *tm);
size_t taca_model_memory_bytes(const taca_model *tm); /* activations and workspaces */

/* pixels [B, 3, S, S] (host) -> f [B, E_old] (host): projector(new tower(pixels)). Saves the
 * activations for taca_model_backward. */
int taca_model_forward(taca_model *tm, const taca_params *P, const float *pixels, int B, float *f,
                       taca_error *err);

/* From df [B, E_old] (host) = dL/df of the last forward's rows, ACCUMULATES into P's gradients. */
int taca_model_backward(taca_model *tm, taca_params *P, const float *df, taca_error *err);

/* Single process: zero_grad, forward, loss over the B rows, backward (no update). */
int taca_step_forward_backward(taca_model *tm, taca_params *P, const float *pixels,
                               const float *old_img, const float *old_txt, int B,
                               const taca_loss_config *lc, taca_loss_terms *terms, taca_error *err);

#endif
