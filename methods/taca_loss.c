/* taca_loss.c: TaCA's contrastive + distillation loss and its gradient (see taca_loss.h).
 * Computed in double: the global batch is small (n x n logits), so this costs nothing and keeps the
 * loss terms well inside the float tolerance of the reference. */
#include "methods/taca_loss.h"

#include "nn/contrastive.h"

#include <math.h>
#include <stdlib.h>

float taca_loss_scale(float logit_scale) {
  double s = exp((double)logit_scale);
  return (float)(s < 100.0 ? s : 100.0);
}

size_t taca_loss_work_size(int n, int E) {
  if (n <= 0 || E <= 0) return 0;
  return 2 * (size_t)n * E + (size_t)n * n + 3 * (size_t)n + (size_t)E;
}

int taca_loss(const taca_loss_config *cfg, const float *f, const float *t, const float *v, int n,
              int E, int r0, int r1, taca_loss_terms *terms, float *df, double *work,
              taca_error *err) {
  if (n <= 0 || E <= 0) return taca_fail(err, "taca_loss: empty batch (%d rows of width %d)", n, E);
  if (r0 < 0 || r1 < r0 || r1 > n)
    return taca_fail(err, "taca_loss: owned rows [%d, %d) are not inside the batch [0, %d)", r0, r1,
                     n);
  double *own = NULL;
  if (!work && !(work = own = malloc(sizeof(double) * taca_loss_work_size(n, E))))
    return taca_fail(err, "taca_loss: out of memory for a batch of %d", n);
  double *fn = work, *tn = fn + (size_t)n * E, *L = tn + (size_t)n * E;
  double *rlse = L + (size_t)n * n, *clse = rlse + n, *fnorm = clse + n, *dfn = fnorm + n;
  const double s = cfg->scale;

  const double contra = contrastive_forward(f, t, n, E, s, fn, tn, fnorm, NULL, L, rlse, clse);
  double distill = 0;
  for (int i = 0; i < n; i++) {
    double d = 0;
    for (int k = 0; k < E; k++) {
      double e = (double)f[(size_t)i * E + k] - v[(size_t)i * E + k];
      d += e * e;
    }
    distill += sqrt(d);
  }
  distill /= n;
  const double loss = cfg->w_contra * contra + cfg->w_distill * distill;
  if (!isfinite(loss)) {
    free(own);
    return taca_fail(err, "taca_loss: the loss is not finite (contrastive %g, distill %g): "
                          "NaN or inf in the features or targets",
                     contra, distill);
  }
  terms->loss = loss;
  terms->contra = contra;
  terms->distill = distill;

  if (df) {
    const double gc = cfg->w_contra * 0.5 / n, gd = cfg->w_distill / n;
    for (int i = r0; i < r1; i++) {
      /* dL/dn(f_i) = s sum_j G_ij n(t_j), G = dL/dlogits (row softmax + column softmax - 2 I). */
      for (int k = 0; k < E; k++) dfn[k] = 0;
      if (gc != 0) {
        for (int j = 0; j < n; j++) {
          const double lij = L[(size_t)i * n + j];
          double g = exp(lij - rlse[i]) + exp(lij - clse[j]) - (i == j ? 2.0 : 0.0);
          g *= gc * s;
          const double *b = tn + (size_t)j * E;
          for (int k = 0; k < E; k++) dfn[k] += g * b[k];
        }
      }
      /* Through the normalisation: (dfn - n (n . dfn)) / |f|. */
      const double *a = fn + (size_t)i * E;
      double dot = 0;
      for (int k = 0; k < E; k++) dot += a[k] * dfn[k];
      const int clamped = fnorm[i] <= 1e-12; /* below torch's eps the divisor is constant */
      double dist = 0;
      for (int k = 0; k < E; k++) {
        double e = (double)f[(size_t)i * E + k] - v[(size_t)i * E + k];
        dist += e * e;
      }
      dist = sqrt(dist);
      float *out = df + (size_t)(i - r0) * E;
      for (int k = 0; k < E; k++) {
        double g = (clamped ? dfn[k] : dfn[k] - a[k] * dot) / fnorm[i];
        if (gd != 0 && dist > 0) g += gd * ((double)f[(size_t)i * E + k] - v[(size_t)i * E + k]) / dist;
        out[k] = (float)g;
      }
    }
  }
  free(own);
  return 0;
}
