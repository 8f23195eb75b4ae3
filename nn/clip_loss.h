/* clip_loss.h: CLIP's contrastive objective with a LEARNABLE logit scale, as open_clip's ClipLoss
 * trains it, and its gradients with respect to both towers' features and the scale, on the host.
 *
 *   s = exp(logit_scale)          (unclamped here: open_clip clamps the parameter to [0, ln 100]
 *                                  after each optimizer step; clip_train_update does that)
 *   n() = L2 normalisation x / max(|x|, 1e-12)      (torch.nn.functional.normalize)
 *   logits = s n(img) n(txt)^T    [B, B]
 *   L = 1/2 [CE(logits, arange) + CE(logits^T, arange)]
 *   dL/dlogit_scale = sum_ij dL/dlogits_ij * logits_ij
 *
 * Also reports the in-batch retrieval accuracies: the fraction of images whose highest-scoring
 * caption is their own (image -> text) and of captions whose highest-scoring image is their own
 * (text -> image); ties count as misses unless the own item is the first maximum.
 * Computed in double: the batch is small (B x B logits). */
#ifndef TACA_NN_CLIP_LOSS_H
#define TACA_NN_CLIP_LOSS_H

#include <stddef.h>

#include "base/error.h"

typedef struct clip_loss_result {
  double loss;
  double acc_i2t, acc_t2i; /* in-batch top-1 accuracies, in [0, 1] */
  double dlogit_scale;     /* dL/dlogit_scale */
} clip_loss_result;

/* Doubles of scratch clip_loss needs for B rows of width E. */
size_t clip_loss_work_size(int B, int E);

/* img, txt: [B, E] host arrays. Fills r and, when non-NULL, dimg and dtxt [B, E] (= dL/dimg,
 * dL/dtxt). work: clip_loss_work_size(B, E) doubles, or NULL to allocate per call. Returns -1 with
 * a reason on bad sizes, out of memory, or a non-finite loss. */
int clip_loss(const float *img, const float *txt, int B, int E, float logit_scale,
              clip_loss_result *r, float *dimg, float *dtxt, double *work, taca_error *err);

#endif
