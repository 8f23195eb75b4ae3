/* aft_loss.c: AFT's kernel regulariser R and its gradients dR/dF, dR/ds (see aft_loss.h).
 * Computed in double: the batch is small (two n x d copies and one n x n kernel), so this costs
 * little next to the model and keeps R and the gradients far inside the float tolerances. */
#include "methods/aft_loss.h"

#include <cblas.h>
#include <math.h>
#include <stdlib.h>

#define AFT_NORM_EPS 1e-8 /* added to the row norm (prior.py) */
#define AFT_MSE_EPS 1e-8  /* added inside the square root (prior.py) */

double aft_rho(float s) {
  const double x = s;
  if (x >= 0) return 1.0 / (1.0 + exp(-x));
  const double e = exp(x);
  return e / (1.0 + e);
}

size_t aft_loss_work_size(int n, int dF, int dP) {
  if (n <= 0 || dF <= 0 || dP <= 0) return 0;
  return 2 * (size_t)n * ((size_t)dF + dP) + (size_t)n * n + 2 * (size_t)n + 2 * (size_t)dP +
         (size_t)dF;
}

/* Column means of X [n, d] (float) in double. */
static void col_means(double *mean, const float *X, int n, int d) {
  for (int k = 0; k < d; k++) mean[k] = 0;
  for (int i = 0; i < n; i++)
    for (int k = 0; k < d; k++) mean[k] += X[(size_t)i * d + k];
  for (int k = 0; k < d; k++) mean[k] /= n;
}

/* Xn = rows of (X - mean) . scale, each divided by (its norm + eps); a[i] = the norm of row i
 * before that division. scale may be NULL (all ones). */
static void center_normalize(double *Xn, double *a, const float *X, const double *mean,
                             const double *scale, int n, int d) {
  for (int i = 0; i < n; i++) {
    double *y = Xn + (size_t)i * d;
    const float *x = X + (size_t)i * d;
    double ss = 0;
    for (int k = 0; k < d; k++) {
      double v = (double)x[k] - mean[k];
      if (scale) v *= scale[k];
      y[k] = v;
      ss += v * v;
    }
    a[i] = sqrt(ss);
    const double inv = 1.0 / (a[i] + AFT_NORM_EPS);
    for (int k = 0; k < d; k++) y[k] *= inv;
  }
}

/* In place, row by row: g <- dR/dXc from g = dR/dXn, y = Xn, a = |Xc| (see aft_loss.h). */
static void normalize_backward(double *g, const double *Xn, const double *a, int n, int d) {
  for (int i = 0; i < n; i++) {
    double *gi = g + (size_t)i * d;
    const double *y = Xn + (size_t)i * d;
    const double den = a[i] + AFT_NORM_EPS;
    double dot = 0;
    for (int k = 0; k < d; k++) dot += y[k] * gi[k];
    const double c = a[i] > 0 ? dot * den / a[i] : 0.0; /* y = 0 when a = 0 */
    for (int k = 0; k < d; k++) gi[k] = (gi[k] - y[k] * c) / den;
  }
}

int aft_loss(const float *F, int n, int dF, const float *P, int dP, const float *s, double *R,
             float *dF_out, float *ds_out, double *work, taca_error *err) {
  if (n <= 0 || dF <= 0 || dP <= 0)
    return taca_fail(err, "aft_loss: empty input (%d rows, %d downstream and %d pre-trained columns)",
                     n, dF, dP);
  if (!F || !P || !s || !R) return taca_fail(err, "aft_loss: F, P, s and R must not be NULL");
  double *own = NULL;
  if (!work && !(work = own = malloc(sizeof(double) * aft_loss_work_size(n, dF, dP))))
    return taca_fail(err, "aft_loss: out of memory for %d rows of %d + %d columns", n, dF, dP);
  double *Fn = work, *Tn = Fn + (size_t)n * dF, *gF = Tn + (size_t)n * dP, *gT = gF + (size_t)n * dF;
  double *D = gT + (size_t)n * dP, *aF = D + (size_t)n * n, *aT = aF + n, *rho = aT + n;
  double *meanP = rho + dP, *colF = meanP + dP;

  /* Forward. T is centered as Pc . rho, which equals center(P . rho) and keeps a constant column of
   * P exactly zero. */
  for (int k = 0; k < dP; k++) rho[k] = aft_rho(s[k]);
  col_means(colF, F, n, dF);
  col_means(meanP, P, n, dP);
  center_normalize(Fn, aF, F, colF, NULL, n, dF);
  center_normalize(Tn, aT, P, meanP, rho, n, dP);
  cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, n, dF, 1.0, Fn, dF, Fn, dF, 0.0, D, n);
  cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, n, dP, -1.0, Tn, dP, Tn, dP, 1.0, D, n);
  double ss = 0;
  for (size_t i = 0; i < (size_t)n * n; i++) ss += D[i] * D[i];
  const double r = sqrt(ss / ((double)n * n) + AFT_MSE_EPS);
  if (!isfinite(r)) {
    free(own);
    return taca_fail(err, "aft_loss: R is not finite: NaN or inf in the features (%d rows)", n);
  }
  *R = r;
  if (!dF_out && !ds_out) {
    free(own);
    return 0;
  }

  /* Backward: G = D / (n^2 R); dR/dFn = 2 G Fn, dR/dTn = -2 G Tn. */
  const double g = 2.0 / ((double)n * n * r);
  if (dF_out) {
    cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, dF, n, g, D, n, Fn, dF, 0.0, gF, dF);
    normalize_backward(gF, Fn, aF, n, dF);
    for (int k = 0; k < dF; k++) colF[k] = 0;
    for (int i = 0; i < n; i++)
      for (int k = 0; k < dF; k++) colF[k] += gF[(size_t)i * dF + k];
    for (int k = 0; k < dF; k++) colF[k] /= n;
    for (int i = 0; i < n; i++)
      for (int k = 0; k < dF; k++)
        dF_out[(size_t)i * dF + k] = (float)(gF[(size_t)i * dF + k] - colF[k]);
  }
  if (ds_out) {
    cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, dP, n, -g, D, n, Tn, dP, 0.0, gT, dP);
    normalize_backward(gT, Tn, aT, n, dP);
    /* dR/ds_k = rho_k (1 - rho_k) sum_i dR/dTc_ik Pc_ik (the centering of T drops out against Pc). */
    for (int k = 0; k < dP; k++) {
      double acc = 0;
      for (int i = 0; i < n; i++)
        acc += gT[(size_t)i * dP + k] * ((double)P[(size_t)i * dP + k] - meanP[k]);
      ds_out[k] = (float)(acc * rho[k] * aft_rho(-s[k]));
    }
  }
  free(own);
  return 0;
}

int aft_rho_means(const float *s, int dP, const int *dims, int n_models, double *means,
                  taca_error *err) {
  if (n_models <= 0 || !dims || !s || !means)
    return taca_fail(err, "aft_rho_means: no models (%d)", n_models);
  long long total = 0;
  for (int m = 0; m < n_models; m++) {
    if (dims[m] <= 0)
      return taca_fail(err, "aft_rho_means: model %d has width %d, expected > 0", m, dims[m]);
    total += dims[m];
  }
  if (total != dP)
    return taca_fail(err, "aft_rho_means: the %d model widths sum to %lld, expected dP = %d",
                     n_models, total, dP);
  int c = 0;
  for (int m = 0; m < n_models; m++) {
    double acc = 0;
    for (int k = 0; k < dims[m]; k++) acc += aft_rho(s[c + k]);
    means[m] = acc / dims[m];
    c += dims[m];
  }
  return 0;
}
