/* contrastive.c: normalised logits and symmetric cross-entropy shared by the CLIP and TaCA losses. */
#include "nn/contrastive.h"

#include <math.h>

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

double contrastive_forward(const float *a, const float *b, int n, int E, double s, double *an,
                           double *bn, double *anorm, double *bnorm, double *L, double *rlse,
                           double *clse) {
  for (int i = 0; i < n; i++) {
    double da = normalize_row(an + (size_t)i * E, a + (size_t)i * E, E);
    double db = normalize_row(bn + (size_t)i * E, b + (size_t)i * E, E);
    if (anorm) anorm[i] = da;
    if (bnorm) bnorm[i] = db;
  }
  for (int i = 0; i < n; i++)
    for (int j = 0; j < n; j++) {
      const double *x = an + (size_t)i * E, *y = bn + (size_t)j * E;
      double d = 0;
      for (int k = 0; k < E; k++) d += x[k] * y[k];
      L[(size_t)i * n + j] = s * d;
    }
  double ce_rows = 0, ce_cols = 0;
  for (int i = 0; i < n; i++) {
    rlse[i] = logsumexp(L + (size_t)i * n, n, 1);
    clse[i] = logsumexp(L + i, n, (size_t)n);
    ce_rows += rlse[i] - L[(size_t)i * n + i];
    ce_cols += clse[i] - L[(size_t)i * n + i];
  }
  return 0.5 * (ce_rows + ce_cols) / n;
}

void contrastive_through_normalize(float *out, const double *g, const double *a, double d, int E) {
  double dot = 0;
  for (int k = 0; k < E; k++) dot += a[k] * g[k];
  const int clamped = d <= 1e-12;
  for (int k = 0; k < E; k++) out[k] = (float)((clamped ? g[k] : g[k] - a[k] * dot) / d);
}
