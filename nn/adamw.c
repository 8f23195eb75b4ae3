/* adamw.c: torch.optim.AdamW's update on host arrays (see adamw.h). */
#include "nn/adamw.h"

#include <math.h>

void nn_adamw_host(float *p, const float *g, float *m, float *v, size_t n, double lr, double beta1,
                   double beta2, double eps, double weight_decay, long t, int threads) {
  if (threads < 1) threads = 1;
  const float decay = (float)(1.0 - lr * weight_decay);
  const double bc1 = 1.0 - pow(beta1, (double)t), bc2 = 1.0 - pow(beta2, (double)t);
  const float step_size = (float)(lr / bc1), bc2_sqrt = (float)sqrt(bc2);
  const float b1 = (float)beta1, b2 = (float)beta2, a1 = (float)(1.0 - beta1);
  const float a2 = (float)(1.0 - beta2), e = (float)eps;
#pragma omp parallel for simd schedule(static) num_threads(threads) if (n >= 65536)
  for (size_t i = 0; i < n; i++) {
    const float gi = g[i];
    const float mi = m[i] * b1 + a1 * gi;
    const float vi = v[i] * b2 + a2 * gi * gi;
    m[i] = mi;
    v[i] = vi;
    p[i] = p[i] * decay - step_size * (mi / (sqrtf(vi) / bc2_sqrt + e));
  }
}
