/* contrastive.h: the forward half shared by CLIP's pretraining loss (clip_loss.c) and TaCA's loss
 * (taca_loss.c): L2-normalised rows, scaled cosine logits, and the symmetric cross-entropy with the
 * diagonal as targets, in double on the host. */
#ifndef TACA_NN_CONTRASTIVE_H
#define TACA_NN_CONTRASTIVE_H

#include <stddef.h>

/* an/bn [n, E] = rows of a/b divided by max(|row|, 1e-12) (torch.nn.functional.normalize); the
 * divisors go to anorm/bnorm when non-NULL. L [n, n] = s an bnᵀ; rlse/clse [n] = the row and column
 * log-sum-exp of L. Returns ½ [CE(L, arange) + CE(Lᵀ, arange)] (means over the n rows). The
 * gradient wrt the logits is (softmax_rows(L) + softmax_cols(L) - 2I) / (2n) =
 * (exp(L_ij - rlse_i) + exp(L_ij - clse_j) - 2[i=j]) / (2n). */
double contrastive_forward(const float *a, const float *b, int n, int E, double s, double *an,
                           double *bn, double *anorm, double *bnorm, double *L, double *rlse,
                           double *clse);

/* Gradient through the normalisation of one row (divisor d, normalised row a) of the gradient g
 * wrt the normalised row: (g - a (a . g)) / d, or g / d where the 1e-12 clamp made d constant. */
void contrastive_through_normalize(float *out, const double *g, const double *a, double d, int E);

#endif
