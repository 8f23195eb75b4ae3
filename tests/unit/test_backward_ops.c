/* test_backward_ops.c: the backend's training ops against PyTorch autograd
 * (tests/fixtures/gen_taca.py -> taca/ops.safetensors): linear, LayerNorm, attention (causal and
 * not), bias+GELU and bias+QuickGELU forward-with-pre-activation and backward, AdamW steps against
 * torch.optim.AdamW; plus accumulation, row strides, scatter and the memory helpers.
 *
 * Tolerance: max |C - torch| <= 1e-5 * max |torch| per tensor (measured: <= 1e-6 for the GEMM-based
 * ops, ~3e-7 for the activations with the vectorised erf/exp; AdamW parameters <= 1e-6). Every
 * test runs twice: on the CPU backend this CPU dispatches to, and on the portable baseline
 * (TACA_CPU_ISA=baseline; nn/backend_cpu_dispatch.c). */
#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nn/backend.h"
#include "base/safetensors.h"

static nn_backend *be;
static st_file ops;

static void setup(void) {
  be = nn_backend_cpu_create(0);
  taca_error err;
  ck_assert_msg(st_open(&ops, TACA_FIXTURES_DIR "/taca/ops.safetensors", &err) == 0, "%s", err.msg);
}

static void setup_baseline(void) {
  setenv("TACA_CPU_ISA", "baseline", 1);
  setup();
  unsetenv("TACA_CPU_ISA");
}

static void teardown(void) {
  st_close(&ops);
  nn_backend_destroy(be);
}

static const float *T(const char *name, size_t *numel) {
  const st_tensor *t = st_find(&ops, name);
  ck_assert_msg(t != NULL, "fixture tensor '%s' missing", name);
  const float *p = st_f32_view(t);
  ck_assert_msg(p != NULL, "fixture tensor '%s' is not aligned F32", name);
  if (numel) *numel = t->numel;
  return p;
}

static double rel_err(const float *a, const float *b, size_t n) {
  double md = 0, mb = 0;
  for (size_t i = 0; i < n; i++) {
    double d = fabs((double)a[i] - b[i]);
    if (d > md) md = d;
    if (fabs(b[i]) > mb) mb = fabs(b[i]);
  }
  return md / (mb > 0 ? mb : 1);
}

#define CHECK_CLOSE(got, ref, n, tol, what)                                              \
  do {                                                                                   \
    double e_ = rel_err((got), (ref), (n));                                              \
    printf("  %-28s rel err %.2e\n", (what), e_);                                        \
    ck_assert_msg(e_ <= (tol), "%s: relative error %.3g > %.1g", (what), e_, (double)(tol)); \
  } while (0)

static float *dup(const float *src, size_t n) {
  float *p = malloc(sizeof(float) * n);
  memcpy(p, src, sizeof(float) * n);
  return p;
}

START_TEST(linear) {
  const int N = 7, C = 12, OC = 5;
  const float *x = T("linear.x", NULL), *w = T("linear.w", NULL), *b = T("linear.b", NULL);
  const float *dy = T("linear.dy", NULL);
  float y[7 * 5], dx[7 * 12], dw[5 * 12] = {0}, db[5] = {0};
  be->linear_forward(be, y, OC, x, C, w, b, N, C, OC, 0);
  CHECK_CLOSE(y, T("linear.y", NULL), N * OC, 1e-5, "linear forward");
  be->linear_backward(be, dx, C, dw, db, dy, OC, x, C, w, N, C, OC, 0);
  CHECK_CLOSE(dx, T("linear.dx", NULL), N * C, 1e-5, "linear dinp");
  CHECK_CLOSE(dw, T("linear.dw", NULL), OC * C, 1e-5, "linear dW");
  CHECK_CLOSE(db, T("linear.db", NULL), OC, 1e-5, "linear db");

  /* Accumulation: dinp with accumulate=1 adds; dW and db always add. */
  float ref[7 * 12], dw2[5 * 12], db2[5];
  for (int i = 0; i < N * C; i++) ref[i] = dx[i] + 1.0f, dx[i] = 1.0f;
  for (int i = 0; i < OC * C; i++) dw2[i] = 2 * dw[i];
  for (int i = 0; i < OC; i++) db2[i] = 2 * db[i];
  be->linear_backward(be, dx, C, dw, db, dy, OC, x, C, w, N, C, OC, 1);
  CHECK_CLOSE(dx, ref, N * C, 1e-6, "linear dinp accumulate");
  CHECK_CLOSE(dw, dw2, OC * C, 1e-6, "linear dW accumulates");
  CHECK_CLOSE(db, db2, OC, 1e-6, "linear db accumulates");

  /* Row strides: dout a column slice of a wider buffer, inp and dinp inside wider rows; frozen
   * weights (dw, db NULL) only give dinp. */
  float dys[7 * 15], xs[7 * 20], dxs[7 * 16], dws[5 * 12] = {0}, dxc[7 * 12];
  for (int n = 0; n < N; n++) {
    for (int j = 0; j < 15; j++) dys[n * 15 + j] = j >= 5 && j < 10 ? dy[n * OC + j - 5] : 99.f;
    for (int j = 0; j < 20; j++) xs[n * 20 + j] = j < C ? x[n * C + j] : -99.f;
    for (int j = 0; j < 16; j++) dxs[n * 16 + j] = 7.f;
  }
  be->linear_backward(be, dxs, 16, dws, NULL, dys + 5, 15, xs, 20, w, N, C, OC, 0);
  for (int n = 0; n < N; n++) {
    memcpy(dxc + n * C, dxs + n * 16, sizeof(float) * C);
    for (int j = C; j < 16; j++) ck_assert_float_eq(dxs[n * 16 + j], 7.f);
  }
  CHECK_CLOSE(dxc, T("linear.dx", NULL), N * C, 1e-5, "linear dinp strided");
  CHECK_CLOSE(dws, T("linear.dw", NULL), OC * C, 1e-5, "linear dW strided");
  float dxf[7 * 12];
  be->linear_backward(be, dxf, C, NULL, NULL, dy, OC, NULL, 0, w, N, C, OC, 0);
  CHECK_CLOSE(dxf, T("linear.dx", NULL), N * C, 1e-5, "linear dinp frozen");
}
END_TEST

/* GEMMs large enough to be split across threads (by output rows, and by output columns when the
 * output has few rows), against a double-precision loop. Measured: <= 1.2e-6. */
static void split_case(int N, int C, int OC) {
  float *x = malloc(sizeof(float) * N * C), *w = malloc(sizeof(float) * OC * C);
  float *dy = malloc(sizeof(float) * N * OC), *dx = malloc(sizeof(float) * N * C);
  float *dw = calloc((size_t)OC * C, sizeof(float)), *rx = malloc(sizeof(float) * N * C);
  float *rw = malloc(sizeof(float) * OC * C);
  for (int i = 0; i < N * C; i++) x[i] = (float)((i * 37 % 101) - 50) / 50.f;
  for (int i = 0; i < OC * C; i++) w[i] = (float)((i * 53 % 97) - 48) / 48.f;
  for (int i = 0; i < N * OC; i++) dy[i] = (float)((i * 29 % 89) - 44) / 44.f;
  for (int n = 0; n < N; n++)
    for (int c = 0; c < C; c++) {
      double a = 0;
      for (int o = 0; o < OC; o++) a += (double)dy[n * OC + o] * w[o * C + c];
      rx[n * C + c] = (float)a;
    }
  for (int o = 0; o < OC; o++)
    for (int c = 0; c < C; c++) {
      double a = 0;
      for (int n = 0; n < N; n++) a += (double)dy[n * OC + o] * x[n * C + c];
      rw[o * C + c] = (float)a;
    }
  be->linear_backward(be, dx, C, dw, NULL, dy, OC, x, C, w, N, C, OC, 0);
  char what[64];
  snprintf(what, sizeof what, "split dinp %dx%dx%d", N, C, OC);
  CHECK_CLOSE(dx, rx, (size_t)N * C, 1e-5, what);
  snprintf(what, sizeof what, "split dW %dx%dx%d", OC, C, N);
  CHECK_CLOSE(dw, rw, (size_t)OC * C, 1e-5, what);
  free(x), free(w), free(dy), free(dx), free(dw), free(rx), free(rw);
}

START_TEST(linear_split) {
  split_case(100, 70, 90); /* dinp and dW split by rows */
  split_case(8, 700, 90);  /* dinp by columns (8 rows), dW by rows */
  split_case(700, 90, 20); /* dinp by rows, dW by columns (20 rows) */
  split_case(37, 33, 500); /* odd sizes, partial 16-blocks */
}
END_TEST

START_TEST(layernorm) {
  const int N = 6, C = 20;
  const float *x = T("ln.x", NULL), *w = T("ln.w", NULL), *b = T("ln.b", NULL);
  const float *dy = T("ln.dy", NULL);
  float y[6 * 20], mean[6], rstd[6], dx[6 * 20] = {0}, dw[20] = {0}, db[20] = {0};
  be->layernorm_forward(be, y, mean, rstd, x, w, b, N, C);
  CHECK_CLOSE(y, T("ln.y", NULL), N * C, 1e-5, "layernorm forward");
  be->layernorm_backward(be, dx, dw, db, dy, x, mean, rstd, w, N, C);
  CHECK_CLOSE(dx, T("ln.dx", NULL), N * C, 1e-5, "layernorm dinp");
  CHECK_CLOSE(dw, T("ln.dw", NULL), C, 1e-5, "layernorm dw");
  CHECK_CLOSE(db, T("ln.db", NULL), C, 1e-5, "layernorm db");
  /* dinp accumulates (the residual stream); frozen weights: dw, db NULL. */
  float acc[6 * 20], ref[6 * 20];
  for (int i = 0; i < N * C; i++) acc[i] = 0.5f, ref[i] = T("ln.dx", NULL)[i] + 0.5f;
  be->layernorm_backward(be, acc, NULL, NULL, dy, x, mean, rstd, w, N, C);
  CHECK_CLOSE(acc, ref, N * C, 1e-5, "layernorm dinp accumulate");
}
END_TEST

static void attention(int causal) {
  const int B = 2, Tn = 5, C = 12, NH = 3;
  char name[64];
  snprintf(name, sizeof name, "attn%d.qkv", causal);
  const float *qkv = T(name, NULL);
  snprintf(name, sizeof name, "attn%d.dy", causal);
  const float *dy = T(name, NULL);
  float y[2 * 5 * 12], att[2 * 3 * 5 * 5], datt[2 * 3 * 5 * 5], dqkv[2 * 5 * 36];
  be->attention_forward(be, y, att, qkv, B, Tn, C, NH, causal);
  snprintf(name, sizeof name, "attn%d.y", causal);
  CHECK_CLOSE(y, T(name, NULL), B * Tn * C, 1e-5, causal ? "attention forward causal" : "attention forward");
  snprintf(name, sizeof name, "attn%d.att", causal);
  CHECK_CLOSE(att, T(name, NULL), B * NH * Tn * Tn, 1e-5, "attention probabilities");
  for (size_t i = 0; i < sizeof dqkv / sizeof *dqkv; i++) dqkv[i] = NAN; /* fully overwritten */
  be->attention_backward(be, dqkv, datt, dy, qkv, att, B, Tn, C, NH, causal);
  snprintf(name, sizeof name, "attn%d.dqkv", causal);
  CHECK_CLOSE(dqkv, T(name, NULL), B * Tn * 3 * C, 1e-5, causal ? "attention dqkv causal" : "attention dqkv");
}

START_TEST(attention_full) { attention(0); }
END_TEST

START_TEST(attention_causal) { attention(1); }
END_TEST

static void bias_act(const char *act_name, nn_act act) {
  const int N = 10, C = 30;
  char name[64];
#define F(field) (snprintf(name, sizeof name, "%s.%s", act_name, field), T(name, NULL))
  const float *x = F("x"), *b = F("b"), *dy = F("dy");
  float *pre = dup(x, N * C), out[10 * 30], xb[10 * 30], dpre[10 * 30], db[30] = {0};
  be->bias_act_forward_pre(be, out, pre, b, (size_t)N, C, act);
  for (int i = 0; i < N * C; i++) xb[i] = x[i] + b[i % C];
  CHECK_CLOSE(pre, xb, N * C, 0, "bias_act pre-activation kept");
  CHECK_CLOSE(out, F("y"), N * C, 1e-5, act == NN_ACT_GELU ? "bias+GELU forward" : "bias+QuickGELU forward");
  be->act_backward(be, dpre, dy, pre, (size_t)N * C, act);
  CHECK_CLOSE(dpre, F("dx"), N * C, 1e-5, act == NN_ACT_GELU ? "GELU backward" : "QuickGELU backward");
  /* The bias gradient: the column sum of dpre (what linear_backward's db computes). */
  be->linear_backward(be, NULL, 0, NULL, db, dpre, C, NULL, 0, NULL, N, 1, C, 0);
  CHECK_CLOSE(db, F("db"), C, 1e-5, "bias gradient");
  /* In place: dinp aliasing dout. */
  float *inplace = dup(dy, N * C);
  be->act_backward(be, inplace, inplace, pre, (size_t)N * C, act);
  CHECK_CLOSE(inplace, dpre, N * C, 0, "act backward in place");
  /* Plain bias_act_forward (inference) agrees with the training variant. */
  float *inf = dup(x, N * C);
  be->bias_act_forward(be, inf, b, (size_t)N, C, act);
  CHECK_CLOSE(inf, out, N * C, 0, "bias_act_forward agrees");
#undef F
  free(pre), free(inplace), free(inf);
}

START_TEST(gelu) { bias_act("gelu", NN_ACT_GELU); }
END_TEST

START_TEST(quick_gelu) { bias_act("quick_gelu", NN_ACT_QUICK_GELU); }
END_TEST

START_TEST(adamw) {
  size_t n;
  const float *p0 = T("adamw.p0", &n), *g = T("adamw.g", NULL), *pref = T("adamw.p", NULL);
  ck_assert_int_eq(n, 50);
  float *p = dup(p0, n), m[50] = {0}, v[50] = {0};
  for (int t = 1; t <= 3; t++) {
    be->adamw_update(be, p, g + (t - 1) * n, m, v, n, 1e-3, 0.9, 0.999, 1e-8, 0.01, t);
    /* Parameters move by ~lr per step: compare the update, relative to its size. */
    float du[50], dref[50];
    for (size_t i = 0; i < n; i++) du[i] = p[i] - p0[i], dref[i] = pref[(t - 1) * n + i] - p0[i];
    char what[48];
    snprintf(what, sizeof what, "adamw step %d update", t);
    CHECK_CLOSE(du, dref, n, 1e-5, what);
    CHECK_CLOSE(p, pref + (t - 1) * n, n, 1e-6, "adamw parameters");
  }
  CHECK_CLOSE(m, T("adamw.m", NULL), n, 1e-6, "adamw m");
  CHECK_CLOSE(v, T("adamw.v", NULL), n, 1e-6, "adamw v");
  free(p);
}
END_TEST

START_TEST(helpers) {
  float out[4 * 3] = {0}, inp[2 * 3] = {1, 2, 3, 4, 5, 6};
  int64_t rows[2] = {3, 1};
  be->scatter_rows_add(be, out, inp, rows, 2, 3);
  be->scatter_rows_add(be, out, inp, rows, 2, 3);
  const float want[12] = {0, 0, 0, 8, 10, 12, 0, 0, 0, 2, 4, 6};
  for (int i = 0; i < 12; i++) ck_assert_float_eq(out[i], want[i]);
  float c[12];
  be->copy(be, c, out, sizeof c);
  be->scale(be, c, 12, -0.5f);
  for (int i = 0; i < 12; i++) ck_assert_float_eq(c[i], -0.5f * want[i]);
  be->zero(be, c, sizeof c);
  for (int i = 0; i < 12; i++) ck_assert_float_eq(c[i], 0.f);
}
END_TEST

int main(void) {
  Suite *s = suite_create("backward_ops");
  printf("backward_ops: this CPU's backend: %s\n", nn_backend_cpu_isa());
  for (int isa = 0; isa < 2; isa++) {
    TCase *tc = tcase_create(isa ? "ops_baseline" : "ops");
    tcase_add_checked_fixture(tc, isa ? setup_baseline : setup, teardown);
    tcase_add_test(tc, linear);
    tcase_add_test(tc, linear_split);
    tcase_add_test(tc, layernorm);
    tcase_add_test(tc, attention_full);
    tcase_add_test(tc, attention_causal);
    tcase_add_test(tc, gelu);
    tcase_add_test(tc, quick_gelu);
    tcase_add_test(tc, adamw);
    tcase_add_test(tc, helpers);
    suite_add_tcase(s, tc);
  }
  SRunner *sr = srunner_create(s);
  srunner_run_all(sr, CK_NORMAL);
  int failed = srunner_ntests_failed(sr);
  srunner_free(sr);
  return failed ? 1 : 0;
}
