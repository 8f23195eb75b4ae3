/* cross_entropy.c: softmax cross-entropy against labels (see cross_entropy.h), in double. */
#include "nn/cross_entropy.h"

#include <math.h>

int argmax_row(const float *x, int C) {
  int best = 0;
  for (int c = 1; c < C; c++)
    if (x[c] > x[best]) best = c;
  return best;
}

int cross_entropy(const float *logits, const int *labels, int n, int C, double scale, float *dlogits,
                  ce_result *r, taca_error *err) {
  r->loss_sum = 0;
  r->correct = 0;
  for (int i = 0; i < n; i++) {
    const float *x = logits + (size_t)i * C;
    const int y = labels[i];
    if (y < 0 || y >= C) return taca_fail(err, "label %d of row %d is outside [0, %d)", y, i, C);
    double mx = x[0];
    for (int c = 0; c < C; c++) {
      if (!isfinite(x[c])) return taca_fail(err, "row %d has a non-finite logit (class %d)", i, c);
      mx = x[c] > mx ? x[c] : mx;
    }
    double z = 0;
    for (int c = 0; c < C; c++) z += exp(x[c] - mx);
    const double lse = mx + log(z);
    r->loss_sum += lse - x[y];
    r->correct += argmax_row(x, C) == y;
    if (dlogits) {
      float *d = dlogits + (size_t)i * C;
      for (int c = 0; c < C; c++) {
        double p = exp(x[c] - lse);
        d[c] = (float)(scale * (p - (c == y)));
      }
    }
  }
  return 0;
}
