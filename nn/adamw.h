/* adamw.h: one torch.optim.AdamW step over host arrays (amsgrad off), the arithmetic of the CPU
 * backend's adamw_update and of the trainer's small host-side parameter groups (AFT's s, KD's map). */
#ifndef TACA_NN_ADAMW_H
#define TACA_NN_ADAMW_H

#include <stddef.h>

/* t = the step number counted from 1:
 *   p *= 1 - lr wd;  m = b1 m + (1 - b1) g;  v = b2 v + (1 - b2) g^2;
 *   p -= lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps).
 * The scalars are computed in double as torch's Python floats are, and rounded to float where a
 * float tensor meets them. Parallel over `threads` OpenMP threads from 65536 elements (each element
 * on its own: the result does not depend on the count). */
void nn_adamw_host(float *p, const float *g, float *m, float *v, size_t n, double lr, double beta1,
                   double beta2, double eps, double weight_decay, long t, int threads);

#endif
