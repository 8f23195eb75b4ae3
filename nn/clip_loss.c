/* clip_loss.c: CLIP's symmetric contrastive loss with a learnable logit scale (see clip_loss.h). */
#include "nn/clip_loss.h"

#include <math.h>
#include <stdlib.h>

size_t clip_loss_work_size(int B, int E) {
  if (B <= 0 || E <= 0) return 0;
  return 2 * (size_t)B * E + (size_t)B * B + 4 * (size_t)B + (size_t)E;
}

/* dst = x / max(|x|, 1e-12); returns the divisor. */
static double normalize_row(double *dst, const float *x, int E) {
  double s = 0;
  for (int k = 0; k < E; k++) s += (double)x[k] * x[k];
  const double d = fmax(sqrt(s), 1e-12);
  for (int k = 0; k < E; k++) dst[k] = x[k] / d;
  return d;
}

static double logsumexp(const double *x, int n, size_t stride) {
  double mx = x[0];
  for (int i = 1; i < n; i++) mx = fmax(mx, x[(size_t)i * stride]);
  double s = 0;
  for (int i = 0; i < n; i++) s += exp(x[(size_t)i * stride] - mx);
  return mx + log(s);
}

/* Gradient through the normalisation of row x (norm d, normalised a): (g - a (a . g)) / d, or
 * g / d where torch's eps clamps the divisor (then the divisor is constant). */
static void through_normalize(float *out, const double *g, const double *a, double d, int E) {
  double dot = 0;
  for (int k = 0; k < E; k++) dot += a[k] * g[k];
  const int clamped = d <= 1e-12;
  for (int k = 0; k < E; k++) out[k] = (float)((clamped ? g[k] : g[k] - a[k] * dot) / d);
}

int clip_loss(const float *img, const float *txt, int B, int E, float logit_scale,
              clip_loss_result *r, float *dimg, float *dtxt, double *work, taca_error *err) {
  if (B <= 0 || E <= 0) return taca_fail(err, "clip_loss: empty batch (%d rows of width %d)", B, E);
  double *own = NULL;
  if (!work && !(work = own = malloc(sizeof(double) * clip_loss_work_size(B, E))))
    return taca_fail(err, "clip_loss: out of memory for a batch of %d", B);
  double *in = work, *tn = in + (size_t)B * E, *L = tn + (size_t)B * E;
  double *rlse = L + (size_t)B * B, *clse = rlse + B, *inorm = clse + B, *tnorm = inorm + B;
  double *g = tnorm + B;
  const double s = exp((double)logit_scale);
  for (int i = 0; i < B; i++) {
    inorm[i] = normalize_row(in + (size_t)i * E, img + (size_t)i * E, E);
    tnorm[i] = normalize_row(tn + (size_t)i * E, txt + (size_t)i * E, E);
  }
  for (int i = 0; i < B; i++)
    for (int j = 0; j < B; j++) {
      const double *a = in + (size_t)i * E, *b = tn + (size_t)j * E;
      double d = 0;
      for (int k = 0; k < E; k++) d += a[k] * b[k];
      L[(size_t)i * B + j] = s * d;
    }
  double ce_img = 0, ce_txt = 0;
  int hit_i2t = 0, hit_t2i = 0;
  for (int i = 0; i < B; i++) {
    rlse[i] = logsumexp(L + (size_t)i * B, B, 1);
    clse[i] = logsumexp(L + i, B, (size_t)B);
    ce_img += rlse[i] - L[(size_t)i * B + i];
    ce_txt += clse[i] - L[(size_t)i * B + i];
    int bi = 0, bt = 0;
    for (int j = 1; j < B; j++) {
      if (L[(size_t)i * B + j] > L[(size_t)i * B + bi]) bi = j;
      if (L[(size_t)j * B + i] > L[(size_t)bt * B + i]) bt = j;
    }
    hit_i2t += bi == i;
    hit_t2i += bt == i;
  }
  const double loss = 0.5 * (ce_img + ce_txt) / B;
  if (!isfinite(loss)) {
    free(own);
    return taca_fail(err, "clip_loss: the loss is not finite (%g; logit scale %g): NaN or inf in "
                          "the features",
                     loss, (double)logit_scale);
  }
  r->loss = loss;
  r->acc_i2t = (double)hit_i2t / B;
  r->acc_t2i = (double)hit_t2i / B;
  /* G = dL/dlogits = (softmax_rows(L) + softmax_cols(L) - 2 I) / (2 B); overwrite L with G after
   * using L for the logit-scale gradient. */
  double dls = 0;
  const double c = 0.5 / B;
  for (int i = 0; i < B; i++)
    for (int j = 0; j < B; j++) {
      const double lij = L[(size_t)i * B + j];
      const double gij = c * (exp(lij - rlse[i]) + exp(lij - clse[j]) - (i == j ? 2.0 : 0.0));
      dls += gij * lij;
      L[(size_t)i * B + j] = gij;
    }
  r->dlogit_scale = dls;
  /* dL/dn(img_i) = s sum_j G_ij n(txt_j); dL/dn(txt_j) = s sum_i G_ij n(img_i). */
  for (int i = 0; dimg && i < B; i++) {
    for (int k = 0; k < E; k++) g[k] = 0;
    for (int j = 0; j < B; j++) {
      const double gij = s * L[(size_t)i * B + j];
      const double *b = tn + (size_t)j * E;
      for (int k = 0; k < E; k++) g[k] += gij * b[k];
    }
    through_normalize(dimg + (size_t)i * E, g, in + (size_t)i * E, inorm[i], E);
  }
  for (int j = 0; dtxt && j < B; j++) {
    for (int k = 0; k < E; k++) g[k] = 0;
    for (int i = 0; i < B; i++) {
      const double gij = s * L[(size_t)i * B + j];
      const double *a = in + (size_t)i * E;
      for (int k = 0; k < E; k++) g[k] += gij * a[k];
    }
    through_normalize(dtxt + (size_t)j * E, g, tn + (size_t)j * E, tnorm[j], E);
  }
  free(own);
  return 0;
}
