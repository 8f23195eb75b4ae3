/* clip_loss.c: CLIP's symmetric contrastive loss with a learnable logit scale (see clip_loss.h). */
#include "nn/clip_loss.h"

#include "nn/contrastive.h"

#include <math.h>
#include <stdlib.h>

size_t clip_loss_work_size(int B, int E) {
  if (B <= 0 || E <= 0) return 0;
  return 2 * (size_t)B * E + (size_t)B * B + 4 * (size_t)B + (size_t)E;
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
  const double loss = contrastive_forward(img, txt, B, E, s, in, tn, inorm, tnorm, L, rlse, clse);
  int hit_i2t = 0, hit_t2i = 0;
  for (int i = 0; i < B; i++) {
    int bi = 0, bt = 0;
    for (int j = 1; j < B; j++) {
      if (L[(size_t)i * B + j] > L[(size_t)i * B + bi]) bi = j;
      if (L[(size_t)j * B + i] > L[(size_t)bt * B + i]) bt = j;
    }
    hit_i2t += bi == i;
    hit_t2i += bt == i;
  }
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
    contrastive_through_normalize(dimg + (size_t)i * E, g, in + (size_t)i * E, inorm[i], E);
  }
  for (int j = 0; dtxt && j < B; j++) {
    for (int k = 0; k < E; k++) g[k] = 0;
    for (int i = 0; i < B; i++) {
      const double gij = s * L[(size_t)i * B + j];
      const double *a = in + (size_t)i * E;
      for (int k = 0; k < E; k++) g[k] += gij * a[k];
    }
    contrastive_through_normalize(dtxt + (size_t)j * E, g, tn + (size_t)j * E, tnorm[j], E);
  }
  free(own);
  return 0;
}
