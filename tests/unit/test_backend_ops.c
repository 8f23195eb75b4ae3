/* test_backend_ops.c: the CPU backend's ops tables and its run-time dispatch: every slot of
 * nn_backend is set (each backend fills them from one static const table; the CUDA backend is
 * checked in test_cuda_parity), on both builds of the CPU backend (this CPU's, and the portable
 * baseline that TACA_CPU_ISA=baseline forces), and the two builds compute the same ops: equal for
 * elementwise ops, within 1e-6 of max |x| where the vectorised reductions (LayerNorm, softmax)
 * add in another order. In a CUDA build, also that the module loads libnccl lazily (no GPU is
 * needed for that): a missing library is a reason, not a failure to load the module. */
#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nn/backend.h"
#include "nn/backend_cuda.h"

static nn_backend *make(int baseline) {
  if (baseline) setenv("TACA_CPU_ISA", "baseline", 1);
  nn_backend *be = nn_backend_cpu_create(1);
  unsetenv("TACA_CPU_ISA");
  ck_assert_ptr_nonnull(be);
  return be;
}

static float *rnd(size_t n, unsigned seed) {
  float *p = malloc(sizeof(float) * n);
  ck_assert_ptr_nonnull(p);
  srand(seed);
  for (size_t i = 0; i < n; i++) p[i] = (float)rand() / RAND_MAX * 4.f - 2.f;
  return p;
}

static double rel_diff(const float *a, const float *b, size_t n) {
  double md = 0, mb = 0;
  for (size_t i = 0; i < n; i++) {
    double d = fabs((double)a[i] - b[i]);
    if (!(d <= md)) md = d;
    if (fabs(b[i]) > mb) mb = fabs(b[i]);
  }
  return md / (mb > 0 ? mb : 1);
}

START_TEST(no_slot_null) {
  for (int baseline = 0; baseline < 2; baseline++) {
    nn_backend *be = make(baseline);
    const char *missing = nn_backend_missing_op(be);
    ck_assert_msg(missing == NULL, "the CPU backend (%s) has no '%s'", baseline ? "baseline" : nn_backend_cpu_isa(),
                  missing);
    ck_assert_str_eq(be->name, "cpu");
    ck_assert_int_eq(be->host_memory, 1);
    void *p = nn_host_alloc(be, 100);
    ck_assert_ptr_nonnull(p);
    ck_assert_uint_eq((uintptr_t)p % 64, 0);
    nn_host_free(be, p);
    nn_backend_destroy(be);
  }
  /* the check itself finds a hole */
  nn_backend *be = make(0);
  nn_backend copy = *be;
  copy.scatter_rows_add = NULL;
  ck_assert_str_eq(nn_backend_missing_op(&copy), "scatter_rows_add");
  nn_backend_destroy(be);
}
END_TEST

START_TEST(builds_agree) {
  nn_backend *v = make(0), *b = make(1);
  printf("  this CPU's backend: %s; compared with the baseline build\n", nn_backend_cpu_isa());
  const int N = 13, C = 203, T = 17, NH = 3, HC = 3 * 16, B = 2;
  float *x = rnd((size_t)N * C, 1), *w = rnd(C, 2), *bias = rnd(C, 3);
  float *o1 = malloc(sizeof(float) * N * C), *o2 = malloc(sizeof(float) * N * C);
  ck_assert(o1 && o2);
  v->layernorm_forward(v, o1, NULL, NULL, x, w, bias, N, C);
  b->layernorm_forward(b, o2, NULL, NULL, x, w, bias, N, C);
  double e = rel_diff(o1, o2, (size_t)N * C);
  printf("  layernorm_forward: rel diff %.2g\n", e);
  ck_assert_double_le(e, 1e-6);
  memcpy(o1, x, sizeof(float) * N * C), memcpy(o2, x, sizeof(float) * N * C);
  v->bias_act_forward(v, o1, bias, N, C, NN_ACT_GELU);
  b->bias_act_forward(b, o2, bias, N, C, NN_ACT_GELU);
  ck_assert_int_eq(memcmp(o1, o2, sizeof(float) * N * C), 0); /* elementwise: no reduction */
  float *qkv = rnd((size_t)B * T * 3 * HC, 4), *a1 = malloc(sizeof(float) * B * T * HC),
        *a2 = malloc(sizeof(float) * B * T * HC);
  ck_assert(a1 && a2);
  v->attention_forward(v, a1, NULL, qkv, B, T, HC, NH, 1);
  b->attention_forward(b, a2, NULL, qkv, B, T, HC, NH, 1);
  e = rel_diff(a1, a2, (size_t)B * T * HC);
  printf("  attention_forward: rel diff %.2g\n", e);
  ck_assert_double_le(e, 1e-6);
  free(x), free(w), free(bias), free(o1), free(o2), free(qkv), free(a1), free(a2);
  nn_backend_destroy(v), nn_backend_destroy(b);
}
END_TEST

/* Check forks each test: every one loads the CUDA module and NCCL afresh. */
START_TEST(nccl_missing) {
#ifdef TACA_HAVE_CUDA
  setenv("TACA_NCCL_LIBRARY", "/nonexistent/libnccl.so.2", 1);
  taca_error err = {{0}};
  size_t bytes = nn_cuda_nccl_id_bytes(&err);
  printf("  without libnccl: id bytes %zu (%s)\n", bytes, err.msg);
  ck_assert_uint_eq(bytes, 0);
  /* the module itself loaded: the reason is NCCL's, not the module's */
  ck_assert_msg(strstr(err.msg, "NCCL not available") || strstr(err.msg, "could not be loaded"), "%s", err.msg);
  if (!strstr(err.msg, "could not be loaded")) ck_assert_msg(strstr(err.msg, "/nonexistent/libnccl.so.2"), "%s", err.msg);
#endif
}
END_TEST

START_TEST(nccl_lazy) {
#ifdef TACA_HAVE_CUDA
  unsetenv("TACA_NCCL_LIBRARY");
  taca_error err = {{0}};
  size_t bytes = nn_cuda_nccl_id_bytes(&err);
  printf("  libnccl by the module's search: id bytes %zu%s%s\n", bytes, bytes ? "" : ": ", err.msg);
  ck_assert_msg(bytes == 128 || bytes == 0, "NCCL unique id of %zu bytes", bytes);
  /* where a libnccl is found, every entry point the module uses resolves in it */
  if (!bytes) ck_assert_msg(!strstr(err.msg, "lacks"), "%s", err.msg);
#endif
}
END_TEST

int main(void) {
  Suite *s = suite_create("backend_ops");
  TCase *tc = tcase_create("cpu");
  tcase_add_test(tc, no_slot_null);
  tcase_add_test(tc, builds_agree);
  tcase_add_test(tc, nccl_missing);
  tcase_add_test(tc, nccl_lazy);
  suite_add_tcase(s, tc);
  SRunner *sr = srunner_create(s);
  srunner_run_all(sr, CK_NORMAL);
  int failed = srunner_ntests_failed(sr);
  srunner_free(sr);
  return failed ? 1 : 0;
}
