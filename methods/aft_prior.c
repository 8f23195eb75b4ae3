/* aft_prior.c: the transfer terms AFT compares (aft, kd, stl) and their parameter group (see
 * aft_prior.h). */
#include "methods/aft_prior.h"

#include <cblas.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nn/adamw.h"
#include "methods/aft_loss.h"
#include "base/rng.h"
#include "base/safetensors.h"

static const char *NAMES[] = {"aft", "stl", "kd"};

const char *aft_method_name(aft_method m) { return m >= 0 && m <= 2 ? NAMES[m] : "?"; }

int aft_method_parse(const char *name, size_t len, aft_method *m) {
  for (int i = 0; i < 3; i++)
    if (strlen(NAMES[i]) == len && !strncmp(name, NAMES[i], len)) {
      *m = (aft_method)i;
      return 0;
    }
  return -1;
}

int aft_prior_init(aft_prior *pr, aft_method method, int dF, int dP, int max_n, uint64_t seed,
                   taca_error *err) {
  memset(pr, 0, sizeof *pr);
  if (dF <= 0 || dP <= 0 || max_n <= 0)
    return taca_fail(err, "aft prior: bad sizes (dF %d, dP %d, batch %d)", dF, dP, max_n);
  pr->method = method, pr->dF = dF, pr->dP = dP, pr->max_n = max_n;
  pr->n = method == AFT_METHOD_AFT ? (size_t)dP : method == AFT_METHOD_KD ? (size_t)dP * dF + dP : 0;
  if (pr->n && !(pr->p = calloc(4 * pr->n, sizeof(float)))) return taca_fail(err, "out of memory");
  pr->g = pr->p + pr->n, pr->m = pr->g + pr->n, pr->v = pr->m + pr->n;
  if (method == AFT_METHOD_AFT) {
    if (!(pr->work = malloc(sizeof(double) * aft_loss_work_size(max_n, dF, dP))) ||
        !(pr->ds = malloc(sizeof(float) * dP)))
      goto oom;
  } else if (method == AFT_METHOD_KD) {
    if (!(pr->pred = malloc(sizeof(float) * (size_t)max_n * dP))) goto oom;
    /* nn.Linear(dF, dP): U(+-1/sqrt(dF)) for weight and bias */
    uint64_t s = seed ^ 0x6B64000000000000ull;
    const double bound = 1.0 / sqrt((double)dF);
    for (size_t i = 0; i < pr->n; i++) pr->p[i] = (float)(bound * (2.0 * rng_uniform01(&s) - 1.0));
  }
  return 0;
oom:
  aft_prior_free(pr);
  return taca_fail(err, "out of memory");
}

void aft_prior_free(aft_prior *pr) {
  free(pr->p);
  free(pr->work);
  free(pr->pred);
  free(pr->ds);
  memset(pr, 0, sizeof *pr);
}

void aft_prior_zero_grad(aft_prior *pr) {
  if (pr->n) memset(pr->g, 0, sizeof(float) * pr->n);
}

const float *aft_prior_s(const aft_prior *pr) { return pr->method == AFT_METHOD_AFT ? pr->p : NULL; }

/* kd: E = F Wk^T + bk - P; value = mean(E^2); d/dE of beta*value = 2 beta E / (n dP). */
static int kd_loss(aft_prior *pr, const float *F, const float *P, int n, double beta, double *value,
                   float *dF_out) {
  const int dF = pr->dF, dP = pr->dP;
  const float *W = pr->p, *b = pr->p + (size_t)dP * dF;
  float *gW = pr->g, *gb = pr->g + (size_t)dP * dF, *E = pr->pred;
  for (int i = 0; i < n; i++) memcpy(E + (size_t)i * dP, b, sizeof(float) * dP);
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, dP, dF, 1.0f, F, dF, W, dF, 1.0f, E, dP);
  double sum = 0;
  const double c = 2.0 * beta / ((double)n * dP);
  for (size_t i = 0; i < (size_t)n * dP; i++) {
    const double e = (double)E[i] - P[i];
    sum += e * e;
    E[i] = (float)(c * e);
  }
  *value = sum / ((double)n * dP);
  /* dF = dE W; dW += dE^T F; db += colsum(dE) */
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, dF, dP, 1.0f, E, dP, W, dF, 0.0f, dF_out, dF);
  cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, dP, dF, n, 1.0f, E, dP, F, dF, 1.0f, gW, dF);
  for (int i = 0; i < n; i++)
    for (int k = 0; k < dP; k++) gb[k] += E[(size_t)i * dP + k];
  return 0;
}

int aft_prior_loss(aft_prior *pr, const float *F, const float *P, int n, double beta, double *value,
                   float *dF_out, taca_error *err) {
  if (n <= 0 || n > pr->max_n) return taca_fail(err, "aft prior: batch %d is outside 1..%d", n, pr->max_n);
  const int dF = pr->dF, dP = pr->dP;
  *value = 0;
  switch (pr->method) {
    case AFT_METHOD_STL:
      memset(dF_out, 0, sizeof(float) * (size_t)n * dF);
      return 0;
    case AFT_METHOD_KD:
      return kd_loss(pr, F, P, n, beta, value, dF_out);
    case AFT_METHOD_AFT:
      break;
  }
  /* aft: R and its gradients, scaled by beta; dR/ds accumulates into g (s's gradient). */
  if (aft_loss(F, n, dF, P, dP, pr->p, value, dF_out, pr->ds, pr->work, err)) return -1;
  const float fb = (float)beta;
  for (size_t i = 0; i < (size_t)n * dF; i++) dF_out[i] *= fb;
  for (int k = 0; k < dP; k++) pr->g[k] += fb * pr->ds[k];
  return 0;
}

void aft_prior_update(aft_prior *pr, double lr) {
  if (!pr->n) return;
  pr->step++;
  nn_adamw_host(pr->p, pr->g, pr->m, pr->v, pr->n, lr, 0.9, 0.999, 1e-8, 0.0, pr->step, 1);
}

int aft_prior_add_state(const aft_prior *pr, st_writer *w, char *step_buf, size_t n, taca_error *err) {
  snprintf(step_buf, n, "%ld", pr->step);
  if (st_writer_meta(w, "taca.prior_step", step_buf, err)) return -1;
  if (!pr->n) return 0;
  const int64_t shape[1] = {(int64_t)pr->n};
  return st_writer_add(w, "prior.p", TACA_DT_F32, 1, shape, pr->p, err) ||
                 st_writer_add(w, "prior.m", TACA_DT_F32, 1, shape, pr->m, err) ||
                 st_writer_add(w, "prior.v", TACA_DT_F32, 1, shape, pr->v, err)
             ? -1
             : 0;
}

int aft_prior_load_state(aft_prior *pr, const st_file *f, taca_error *err) {
  long step;
  if (st_meta_count(f, "taca.prior_step", &step, err)) return -1;
  if (pr->n && (st_read_f32_exact(f, "prior.p", pr->n, pr->p, err) || st_read_f32_exact(f, "prior.m", pr->n, pr->m, err) ||
                st_read_f32_exact(f, "prior.v", pr->n, pr->v, err)))
    return -1;
  pr->step = step;
  return 0;
}
