/* test_aft_loss.c: methods/aft_loss against PyTorch autograd (tests/fixtures/gen_aft.py ->
 * tests/fixtures/aft/aft.safetensors, prior.py KernelPrior verbatim) and against properties the
 * regulariser must have: n = 1 and T = F give R = sqrt(1e-8); constant columns get zero gradients;
 * R is invariant to scaling F, so <dR/dF, F> = 0; the centering makes each column of dR/dF sum to 0;
 * central finite differences of R (double) match dR/ds and dR/dF; bad input is refused.
 *
 * Tolerances (measured values in comments at each check):
 *   vs torch float32 (as prior.py runs): R |C - torch| <= 1e-5 |torch|; gradients
 *     max |C - torch| <= 1e-4 max |torch|
 *   vs torch float64: R <= 1e-6 relative (the reference is stored as F32); gradients <= 1e-6 of the max (C writes them as float)
 *   finite differences (h = 1e-3, central): <= 1e-5 of the max gradient */
#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "methods/aft_loss.h"
#include "base/safetensors.h"

#define FIX TACA_FIXTURES_DIR "/aft/aft.safetensors"

enum { N = 12, DF = 10, DP = 19 };
static const int DIMS[3] = {8, 6, 5};

static st_file fx;

static void setup(void) {
  taca_error err = {{0}};
  ck_assert_msg(st_open(&fx, FIX, &err) == 0, "%s", err.msg);
}
static void teardown(void) { st_close(&fx); }

static const float *tensor(const char *c, const char *what, size_t numel) {
  char name[64];
  snprintf(name, sizeof name, "%s.%s", c, what);
  const st_tensor *t = st_find(&fx, name);
  ck_assert_msg(t != NULL, "fixture tensor '%s' missing", name);
  ck_assert_msg(t->numel == numel, "fixture tensor '%s': %zu elements, expected %zu", name, t->numel,
                numel);
  const float *p = st_f32_view(t);
  ck_assert_msg(p != NULL, "fixture tensor '%s' is not aligned F32", name);
  return p;
}

static double rel_err(const float *a, const float *b, size_t n) {
  double md = 0, mb = 0;
  for (size_t i = 0; i < n; i++) {
    md = fmax(md, fabs((double)a[i] - b[i]));
    mb = fmax(mb, fabs((double)b[i]));
  }
  return md / (mb > 0 ? mb : 1);
}

static double max_abs(const float *a, size_t n) {
  double m = 0;
  for (size_t i = 0; i < n; i++) m = fmax(m, fabs((double)a[i]));
  return m;
}

/* One fixture case against both torch references. */
static void check_case(const char *c, int n) {
  const float *F = tensor(c, "F", (size_t)n * DF), *P = tensor(c, "P", (size_t)n * DP);
  const float *s = tensor(c, "s", DP);
  taca_error err = {{0}};
  double R;
  float *dF = malloc(sizeof(float) * n * DF), ds[DP];
  double *work = malloc(sizeof(double) * aft_loss_work_size(n, DF, DP));
  ck_assert(dF && work);
  ck_assert_msg(aft_loss(F, n, DF, P, DP, s, &R, dF, ds, work, &err) == 0, "%s", err.msg);
  const double R32 = tensor(c, "R", 1)[0], R64 = tensor(c, "R64", 1)[0];
  const double eR32 = fabs(R - R32) / R32, eR64 = fabs(R - R64) / R64;
  const double eF32 = rel_err(dF, tensor(c, "dF", (size_t)n * DF), (size_t)n * DF);
  const double es32 = rel_err(ds, tensor(c, "ds", DP), DP);
  const double eF64 = rel_err(dF, tensor(c, "dF64", (size_t)n * DF), (size_t)n * DF);
  const double es64 = rel_err(ds, tensor(c, "ds64", DP), DP);
  printf("  %-5s R %.8g: vs f32 %.1e, f64 %.1e; dR/dF vs f32 %.1e, f64 %.1e; dR/ds vs f32 %.1e, "
         "f64 %.1e\n", c, R, eR32, eR64, eF32, eF64, es32, es64);
  /* Measured: R vs f32 <= 8e-8, vs f64 <= 4e-8 (the f64 reference is stored as F32); gradients vs
   * f32 <= 3.2e-7, vs f64 0 (both are the f64 value rounded to float). */
  ck_assert_msg(eR32 <= 1e-5, "%s: R %.9g vs torch f32 %.9g", c, R, R32);
  ck_assert_msg(eR64 <= 1e-6, "%s: R %.9g vs torch f64 %.9g", c, R, R64);
  ck_assert_msg(eF32 <= 1e-4 && es32 <= 1e-4, "%s: gradients vs f32 %.3g, %.3g", c, eF32, es32);
  ck_assert_msg(eF64 <= 1e-6 && es64 <= 1e-6, "%s: gradients vs f64 %.3g, %.3g", c, eF64, es64);
  /* Without work and with no gradients: the same R. */
  double R2;
  ck_assert_int_eq(aft_loss(F, n, DF, P, DP, s, &R2, NULL, NULL, NULL, &err), 0);
  ck_assert(R2 == R);
  /* The per-model rho report. */
  double means[3];
  ck_assert_int_eq(aft_rho_means(s, DP, DIMS, 3, means, &err), 0);
  const float *rm = tensor(c, "rho_means", 3);
  for (int m = 0; m < 3; m++) ck_assert_msg(fabs(means[m] - rm[m]) <= 1e-7, "%s: rho mean %d", c, m);
  free(dF);
  free(work);
}

START_TEST(torch_main) { check_case("main", N); }
END_TEST
START_TEST(torch_init) { check_case("init", N); }
END_TEST
START_TEST(torch_const) {
  check_case("const", N);
  /* Column 9 of P and column 3 of F are constant: their gradients are exactly zero. */
  const float *F = tensor("const", "F", N * DF), *P = tensor("const", "P", N * DP);
  const float *s = tensor("const", "s", DP);
  double R;
  float dF[N * DF], ds[DP];
  ck_assert_int_eq(aft_loss(F, N, DF, P, DP, s, &R, dF, ds, NULL, NULL), 0);
  ck_assert(ds[9] == 0.0f);
  for (int i = 0; i < N; i++) ck_assert(dF[i * DF + 3] == 0.0f);
  ck_assert(max_abs(ds, DP) > 1e-3); /* the other columns do move */
}
END_TEST

/* One row: both centered rows are zero, so R = sqrt(1e-8) and the gradients vanish. */
START_TEST(single_row) {
  check_case("n1", 1);
  const float *F = tensor("n1", "F", DF), *P = tensor("n1", "P", DP), *s = tensor("n1", "s", DP);
  double R;
  float dF[DF], ds[DP];
  ck_assert_int_eq(aft_loss(F, 1, DF, P, DP, s, &R, dF, ds, NULL, NULL), 0);
  ck_assert(R == sqrt(1e-8));
  ck_assert(max_abs(dF, DF) == 0 && max_abs(ds, DP) == 0);
}
END_TEST

/* T = F makes the kernels coincide: R = sqrt(1e-8) = 1e-4 and dR/dF = 0. */
START_TEST(kernels_coincide) {
  const float *F = tensor("main", "F", N * DF);
  float P[N * DF], s[DF], dF[N * DF], ds[DF];
  double R;
  /* P = 2 F, rho = sigmoid(0) = 1/2: T = F exactly, so D = 0 exactly. */
  for (int i = 0; i < N * DF; i++) P[i] = 2 * F[i];
  for (int k = 0; k < DF; k++) s[k] = 0;
  ck_assert_int_eq(aft_loss(F, N, DF, P, DF, s, &R, dF, ds, NULL, NULL), 0);
  ck_assert(R == sqrt(1e-8));
  ck_assert(max_abs(dF, N * DF) == 0 && max_abs(ds, DF) == 0);
  /* P = F, s large: rho -> 1, the kernels agree up to the 1e-8 in the normalisation. */
  for (int k = 0; k < DF; k++) s[k] = 20;
  ck_assert_int_eq(aft_loss(F, N, DF, F, DF, s, &R, dF, ds, NULL, NULL), 0);
  printf("  P = F, s = 20: R - 1e-4 = %.2e, max|dR/dF| %.2e\n", R - 1e-4, max_abs(dF, N * DF));
  ck_assert(fabs(R - 1e-4) <= 1e-12); /* measured ~1e-20 */
  ck_assert(max_abs(dF, N * DF) <= 1e-8);
  /* Any uniform rho and any positive multiple of F: the same. */
  for (int i = 0; i < N * DF; i++) P[i] = 0.37f * F[i];
  for (int k = 0; k < DF; k++) s[k] = -1.3f;
  ck_assert_int_eq(aft_loss(F, N, DF, P, DF, s, &R, dF, ds, NULL, NULL), 0);
  ck_assert(fabs(R - 1e-4) <= 1e-10);
}
END_TEST

/* Invariances of the math: scaling F by 4 (exact in float) leaves R unchanged up to the 1e-8 in
 * the norm and divides dR/dF by 4; <dR/dF, F> = 0 (R is homogeneous of degree 0 in F); each
 * column of dR/dF sums to zero (the centering). */
START_TEST(invariances) {
  const float *F = tensor("main", "F", N * DF), *P = tensor("main", "P", N * DP);
  const float *s = tensor("main", "s", DP);
  float F4[N * DF], dF[N * DF], dF4[N * DF];
  double R, R4;
  for (int i = 0; i < N * DF; i++) F4[i] = 4 * F[i];
  ck_assert_int_eq(aft_loss(F, N, DF, P, DP, s, &R, dF, NULL, NULL, NULL), 0);
  ck_assert_int_eq(aft_loss(F4, N, DF, P, DP, s, &R4, dF4, NULL, NULL, NULL), 0);
  /* Only the 1e-8 in the norm changes (by 1e-8 / |Fc_i| relative): measured 1.1e-9. */
  printf("  R(4F) - R = %.2e relative\n", (R4 - R) / R);
  ck_assert_msg(fabs(R4 - R) <= 1e-8 * R, "R %.12g, R(4F) %.12g", R, R4);
  const double gmax = max_abs(dF, N * DF);
  double dot = 0, fmax_ = max_abs(F, N * DF);
  for (int i = 0; i < N * DF; i++) {
    ck_assert(fabs(4 * (double)dF4[i] - dF[i]) <= 1e-6 * gmax);
    dot += (double)dF[i] * F[i];
  }
  printf("  <dR/dF, F> = %.2e (max|dR/dF| max|F| = %.2e)\n", dot, gmax * fmax_);
  ck_assert(fabs(dot) <= 1e-5 * gmax * fmax_);
  for (int k = 0; k < DF; k++) {
    double col = 0;
    for (int i = 0; i < N; i++) col += dF[i * DF + k];
    ck_assert_msg(fabs(col) <= 1e-6 * gmax, "column %d of dR/dF sums to %.3g", k, col);
  }
}
END_TEST

/* Central finite differences of R (computed in double) against dR/ds and dR/dF. */
START_TEST(finite_differences) {
  const float *F = tensor("main", "F", N * DF), *P = tensor("main", "P", N * DP);
  const float *s0 = tensor("main", "s", DP);
  float s[DP], Fp[N * DF], dF[N * DF], ds[DP];
  double R, Rp, Rm;
  memcpy(s, s0, sizeof s);
  memcpy(Fp, F, sizeof Fp);
  ck_assert_int_eq(aft_loss(F, N, DF, P, DP, s, &R, dF, ds, NULL, NULL), 0);
  const double h = 1e-3, smax = max_abs(ds, DP), fgmax = max_abs(dF, N * DF);
  double worst_s = 0, worst_f = 0;
  for (int k = 0; k < DP; k++) {
    s[k] = (float)(s0[k] + h);
    const double hp = (double)s[k] - s0[k];
    ck_assert_int_eq(aft_loss(F, N, DF, P, DP, s, &Rp, NULL, NULL, NULL, NULL), 0);
    s[k] = (float)(s0[k] - h);
    const double hm = (double)s0[k] - s[k];
    ck_assert_int_eq(aft_loss(F, N, DF, P, DP, s, &Rm, NULL, NULL, NULL, NULL), 0);
    s[k] = s0[k];
    worst_s = fmax(worst_s, fabs((Rp - Rm) / (hp + hm) - ds[k]));
  }
  for (int i = 0; i < N * DF; i += 7) {
    Fp[i] = (float)(F[i] + h);
    const double hp = (double)Fp[i] - F[i];
    ck_assert_int_eq(aft_loss(Fp, N, DF, P, DP, s, &Rp, NULL, NULL, NULL, NULL), 0);
    Fp[i] = (float)(F[i] - h);
    const double hm = (double)F[i] - Fp[i];
    ck_assert_int_eq(aft_loss(Fp, N, DF, P, DP, s, &Rm, NULL, NULL, NULL, NULL), 0);
    Fp[i] = F[i];
    worst_f = fmax(worst_f, fabs((Rp - Rm) / (hp + hm) - dF[i]));
  }
  printf("  finite differences: dR/ds %.1e, dR/dF %.1e of the max\n", worst_s / smax, worst_f / fgmax);
  ck_assert_msg(worst_s <= 1e-5 * smax, "dR/ds vs finite differences: %.3g (max %.3g)", worst_s, smax);
  ck_assert_msg(worst_f <= 1e-5 * fgmax, "dR/dF vs finite differences: %.3g (max %.3g)", worst_f, fgmax);
}
END_TEST

START_TEST(errors) {
  const float *F = tensor("main", "F", N * DF), *P = tensor("main", "P", N * DP);
  const float *s = tensor("main", "s", DP);
  taca_error err = {{0}};
  double R;
  ck_assert_int_eq(aft_loss(F, 0, DF, P, DP, s, &R, NULL, NULL, NULL, &err), -1);
  ck_assert_msg(strstr(err.msg, "0 rows"), "%s", err.msg);
  ck_assert_int_eq(aft_loss_work_size(0, DF, DP), 0);
  float bad[N * DF];
  memcpy(bad, F, sizeof bad);
  bad[13] = INFINITY;
  ck_assert_int_eq(aft_loss(bad, N, DF, P, DP, s, &R, NULL, NULL, NULL, &err), -1);
  ck_assert_msg(strstr(err.msg, "not finite"), "%s", err.msg);
  double means[3];
  const int short_dims[3] = {8, 6, 4}, zero_dims[3] = {8, 0, 11};
  ck_assert_int_eq(aft_rho_means(s, DP, short_dims, 3, means, &err), -1);
  ck_assert_msg(strstr(err.msg, "sum to 18, expected dP = 19"), "%s", err.msg);
  ck_assert_int_eq(aft_rho_means(s, DP, zero_dims, 3, means, &err), -1);
  ck_assert_msg(strstr(err.msg, "model 1 has width 0"), "%s", err.msg);
  ck_assert_int_eq(aft_rho_means(s, DP, DIMS, 0, means, &err), -1);
  /* Extreme logits: rho saturates without NaN. */
  ck_assert(aft_rho(-1e30f) == 0.0 && aft_rho(1e30f) == 1.0 && aft_rho(0) == 0.5);
}
END_TEST

int main(void) {
  Suite *su = suite_create("aft_loss");
  TCase *tc = tcase_create("aft");
  tcase_add_checked_fixture(tc, setup, teardown);
  tcase_add_test(tc, torch_main);
  tcase_add_test(tc, torch_init);
  tcase_add_test(tc, torch_const);
  tcase_add_test(tc, single_row);
  tcase_add_test(tc, kernels_coincide);
  tcase_add_test(tc, invariances);
  tcase_add_test(tc, finite_differences);
  tcase_add_test(tc, errors);
  suite_add_tcase(su, tc);
  SRunner *sr = srunner_create(su);
  srunner_run_all(sr, CK_NORMAL);
  int failed = srunner_ntests_failed(sr);
  srunner_free(sr);
  return failed ? 1 : 0;
}
