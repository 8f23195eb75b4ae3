/* aft_loss.h: the AFT kernel regulariser (DESIGN.md "AFT, precisely"; amazon-science/
 * adaptive-feature-transfer prior.py KernelPrior, linear kernel) and its exact gradient, on the host.
 *
 * On a minibatch of n rows, with F [n, dF] the downstream penultimate features, P [n, dP] the
 * concatenated pre-trained features and s [dP] the learned scale logits:
 *
 *   rho  = sigmoid(s)                                  (per column of P)
 *   T    = P . diag(rho)                               (T_ik = P_ik rho_k)
 *   Fc   = F - 1 mean_rows(F),   Tc = T - 1 mean_rows(T)          (center each column)
 *   Fn_i = Fc_i / (|Fc_i| + 1e-8),  Tn_i = Tc_i / (|Tc_i| + 1e-8)  (each row, Euclidean norm)
 *   K_F  = Fn Fn^T,  K_T = Tn Tn^T,  D = K_F - K_T                 (n x n)
 *   R    = sqrt( sum_ij D_ij^2 / n^2 + 1e-8 )
 *
 * The training loss is CE + beta R (beta 10 by default); the caller scales the gradients by beta.
 *
 * Gradients (G = D / (n^2 R), symmetric):
 *   dR/dFn = 2 G Fn,   dR/dTn = -2 G Tn
 *   through the normalisation, row i with a = |Xc_i|, y = Xn_i, g = dR/dXn_i:
 *     dR/dXc_i = (g - y (y . g) (a + 1e-8) / a) / (a + 1e-8)    (a = 0: g / 1e-8, as torch, whose
 *                                                                  norm gradient is 0 at 0)
 *   through the centering: dR/dX = dR/dXc - 1 mean_rows(dR/dXc)
 *   dR/ds_k = rho_k (1 - rho_k) sum_i dR/dTc_ik Pc_ik      (Pc = centered P; centering commutes
 *                                                            with the column scaling)
 * n = 1 gives Fc = Tc = 0, D = 0, R = sqrt(1e-8) = 1e-4 and zero gradients; a constant column of P
 * gets dR/ds = 0 exactly.
 *
 * Everything is computed in double (the n x n kernels and their backward with cblas_dgemm); the
 * caller owns BLAS threading (DESIGN.md pitfalls: decide one threading owner per process). */
#ifndef TACA_METHODS_AFT_LOSS_H
#define TACA_METHODS_AFT_LOSS_H

#include <stddef.h>

#include "base/error.h"

/* Doubles of scratch aft_loss needs for n rows, dF downstream and dP pre-trained columns
 * (0 on non-positive sizes). */
size_t aft_loss_work_size(int n, int dF, int dP);

/* F [n, dF], P [n, dP], s [dP]: host arrays, row-major. Writes R to *R, dR/dF [n, dF] to dF_out and
 * dR/ds [dP] to ds_out (either may be NULL: not computed; both overwrite, they do not accumulate).
 * work: aft_loss_work_size(n, dF, dP) doubles, or NULL to allocate per call. Returns -1 with a reason
 * on bad sizes, out of memory, or non-finite inputs (R not finite). */
int aft_loss(const float *F, int n, int dF, const float *P, int dP, const float *s, double *R,
             float *dF_out, float *ds_out, double *work, taca_error *err);

/* sigmoid(x), stable for any sign (the rho of one column). */
double aft_rho(float s);

/* The report of which pre-trained model's features were kept: means[m] = mean of sigmoid(s) over
 * model m's columns, where the models occupy consecutive column ranges of P of widths dims[0..M-1]
 * (in the order they were concatenated; the widths must be positive and sum to dP). */
int aft_rho_means(const float *s, int dP, const int *dims, int n_models, double *means,
                  taca_error *err);

#endif
