/* taca_loss.h: the TaCA training objective (DESIGN.md "TaCA, precisely") and its gradient, over the
 * GLOBAL batch, on the host.
 *
 *   f = projector output, v = old image embedding, t = old text embedding (rows, unnormalised);
 *   s = min(exp(old logit_scale), 100), frozen; n() = L2 normalisation (x / max(|x|, 1e-12));
 *   L_contra  = 1/2 [CE(s n(f) n(t)^T, arange) + CE(s n(t) n(f)^T, arange)]
 *   L_distill = mean_i |f_i - v_i|_2              (the norm, not its square)
 *   L         = w_contra L_contra + w_distill L_distill
 * TaCA is w_contra = 1, w_distill = lambda = 2; contrastive-only is w_distill = 0; distill-only is
 * w_contra = 0 (with w_distill = lambda, so the term weighs what it weighs in the full loss).
 *
 * Data parallelism: the contrastive term couples every row of the global batch, so each rank
 * gathers f, t and v of all ranks (rows in rank order) and calls taca_loss with the range [r0, r1)
 * of rows it owns. Every rank gets the same global loss terms, and dL/df for its own rows only.
 * Backpropagating those rows through its own forward gives this rank's share of dL/dtheta; since
 * dL/dtheta = sum_i dL/df_i . df_i/dtheta and the rows are partitioned among the ranks, the SUM
 * all-reduce of the ranks' parameter gradients is exactly the single-process gradient of the
 * global-batch loss (no averaging, no extra factor). test_taca_grad checks this with two halves. */
#ifndef TACA_METHODS_TACA_LOSS_H
#define TACA_METHODS_TACA_LOSS_H

#include <stddef.h>

#include "base/error.h"

typedef struct taca_loss_config {
  float scale;     /* s: taca_loss_scale(old logit_scale) */
  float w_contra;  /* weight of L_contra */
  float w_distill; /* weight of L_distill */
} taca_loss_config;

typedef struct taca_loss_terms {
  double loss, contra, distill; /* L and its unweighted terms (both always computed, for logs) */
} taca_loss_terms;

/* min(exp(logit_scale), 100). */
float taca_loss_scale(float logit_scale);

/* Doubles of scratch taca_loss needs for a global batch of n rows of width E. */
size_t taca_loss_work_size(int n, int E);

/* f, t, v: [n, E] host arrays (the global batch). Fills terms and df [r1 - r0, E] = dL/df for rows
 * r0 <= i < r1 (df may be NULL: loss only). work: taca_loss_work_size(n, E) doubles, or NULL to
 * allocate per call. Returns -1 with a reason on bad sizes, out of memory, or a non-finite loss. */
int taca_loss(const taca_loss_config *cfg, const float *f, const float *t, const float *v, int n,
              int E, int r0, int r1, taca_loss_terms *terms, float *df, double *work,
              taca_error *err);

#endif
