/* fastmath.h: vectorisable exp, erf and the activation functions used by the CPU backend.
 *
 * glibc's expf/erff are scalar calls that block auto-vectorisation without -ffast-math; these inline
 * versions compile to SIMD inside `#pragma omp simd` loops. Accuracy (checked in test_backend_cpu):
 * fast_expf relative error < 2e-7 over [-87, 88]; fast_erff absolute error < 2e-7. */
#ifndef TACA_BASE_FASTMATH_H
#define TACA_BASE_FASTMATH_H

#include <math.h>
#include <stddef.h>
#include <stdint.h>

static inline float fast_expf(float x) {
  /* e^x = 2^n * e^r, n = round(x / ln2) (by the 1.5 * 2^23 trick, which keeps the loop vectorisable),
   * |r| <= ln2 / 2 with a Cody-Waite split of ln2, degree-6 polynomial; 2^n built in the exponent. */
  x = x < -87.3f ? -87.3f : x;
  x = x > 88.3f ? 88.3f : x;
  float n = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
  float r = x - n * 0.693145751953125f;
  r = r - n * 1.428606765330187045e-06f;
  float p = 1.f / 720.f;
  p = p * r + 1.f / 120.f;
  p = p * r + 1.f / 24.f;
  p = p * r + 1.f / 6.f;
  p = p * r + 0.5f;
  p = p * r + 1.f;
  p = p * r + 1.f;
  union {
    int32_t i;
    float f;
  } scale;
  scale.i = ((int32_t)n + 127) << 23;
  return p * scale.f;
}

static inline float fast_erff(float x) {
  /* Abramowitz & Stegun 7.1.26 with t = 1 / (1 + p|x|); max abs error 1.5e-7. Branch-free. */
  float ax = __builtin_fabsf(x);
  float t = 1.f / (1.f + 0.3275911f * ax);
  float y = ((((1.061405429f * t - 1.453152027f) * t + 1.421413741f) * t - 0.284496736f) * t +
             0.254829592f) * t;
  return __builtin_copysignf(1.f - y * fast_expf(-ax * ax), x);
}

static inline float gelu_f(float x) { return 0.5f * x * (1.f + fast_erff(x * 0.70710678118654752f)); }

static inline float quick_gelu_f(float x) { return x / (1.f + fast_expf(-1.702f * x)); }

/* Each of the n rows of x [n, d] divided by its L2 norm (summed in double; a zero row stays zero):
 * `taca embed --normalize` and the Embed RPC's normalize, one rule so that they give the same bytes. */
static inline void taca_l2_normalize_rows(float *x, size_t n, int d) {
  for (size_t i = 0; i < n; i++) {
    float *r = x + i * (size_t)d;
    double s = 0;
    for (int j = 0; j < d; j++) s += (double)r[j] * r[j];
    float inv = s > 0 ? (float)(1.0 / sqrt(s)) : 0.f;
    for (int j = 0; j < d; j++) r[j] *= inv;
  }
}

#endif
