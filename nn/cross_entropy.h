/* cross_entropy.h: softmax cross-entropy of class logits against integer labels (torch's
 * F.cross_entropy with mean reduction over a batch the caller may split across ranks), on the host. */
#ifndef TACA_NN_CROSS_ENTROPY_H
#define TACA_NN_CROSS_ENTROPY_H

#include "base/error.h"

typedef struct ce_result {
  double loss_sum;  /* sum over the rows of -log softmax(logits)[label] */
  int correct;      /* rows whose argmax (lowest index on ties) is the label */
} ce_result;

/* logits [n, C], labels [n] in [0, C). dlogits (may be NULL; may alias logits): the gradient of
 * (loss_sum * scale), i.e. scale * (softmax - onehot); pass scale = 1 / global batch for a mean.
 * Fails with a reason on a label outside [0, C) or a non-finite logit. */
int cross_entropy(const float *logits, const int *labels, int n, int C, double scale, float *dlogits,
                  ce_result *r, taca_error *err);

/* Index of the largest of x[0..C) (the lowest on ties). */
int argmax_row(const float *x, int C);

#endif
