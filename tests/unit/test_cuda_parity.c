/* test_cuda_parity.c: the CUDA backend against the CPU backend on the same inputs: every op of
 * nn/backend.h forward and backward (random inputs, odd sizes, row strides, accumulation, NULL
 * optional outputs, aliasing where the contract allows it), the memory paths (staged, large and
 * page-locked uploads, the caching allocator, the sticky error), CLIP image and text embeddings, a
 * CLIP pretraining step, and whole TaCA training steps (adapters and LoRA, with and without
 * recomputation, page-locked batches) with three AdamW updates; AFT's downstream models (linear:D
 * and a ViT) over several steps, and the linear model's page-locked uploads against the same run
 * under TACA_CUDA_SYNC=1 (bit-identical, else a stream race); odd and large shapes whose grids
 * need a second grid-stride pass; cuda:1 when two GPUs exist; a deliberate CUDA error (sticky,
 * reported by the next backward). Each runs in the three math modes; every backend slot is set.
 *
 * Skips (exit 77, CTest's skip code) only when no GPU is present: the build has no CUDA backend, or
 * the machine has no NVIDIA device nodes (/dev/nvidia[0-9]*, /dev/dxg) and the runtime finds no
 * GPU. A machine with a GPU whose module, driver or runtime fails is a FAILURE (exit 1), so that a
 * broken setup never reads as "no GPU".
 *
 * Tolerances: max |cuda - cpu| <= tol * max |cpu|, per tensor:
 *                           f32     tf32    bf16
 *   elementwise/row ops     1e-5    1e-5    1e-5   (no GEMM: the math mode does not apply)
 *   GEMM ops (linear,       1e-4    5e-3    3e-2   (TF32: 10-bit mantissa, unit roundoff 4.9e-4;
 *   attention)                                      BF16: 7-bit, 3.9e-3; both F32 accumulation)
 *   whole step: loss        1e-5    2e-3    2e-2   (relative to |loss|)
 *   whole step: gradients   1e-4    5e-2    2e-1   (every tensor of the flat gradient)
 *   after 3 AdamW steps     1e-4    (f32 only: AdamW's first steps move each parameter by about
 *                                   lr sign(g), which reduced precision may flip for small g)
 * The f32 bounds are the DESIGN.md numerics bound (1e-4) for anything with GEMMs and the op tests'
 * 1e-5 for the rest; the tf32/bf16 bounds follow from the unit roundoffs above with margin. None was
 * measured yet: this machine has no GPU. Each check prints its error, to tighten them on one. */
#include <check.h>
#include <glob.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nn/backend.h"
#include "nn/backend_cuda.h"
#include "nn/clip.h"
#include "nn/clip_train.h"
#include "nn/cross_entropy.h"
#include "base/npy.h"
#include "base/safetensors.h"
#include "methods/aft_model.h"
#include "methods/taca_loss.h"
#include "methods/taca_checkpoint.h"
#include "methods/taca_params.h"
#include "methods/taca_step.h"

static nn_backend *cpu, *gpu;
static nn_cuda_math math_mode;
static double tol_gemm, tol_loss, tol_grad;
#define TOL_ELEM 1e-5

/* ---- Helpers. */

static uint64_t rng = 0x9e3779b97f4a7c15ull;

static float urand(float lo, float hi) { /* splitmix64 -> uniform [lo, hi) */
  uint64_t z = (rng += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  z ^= z >> 31;
  return lo + (hi - lo) * (float)((z >> 40) * (1.0 / 16777216.0));
}

static float *host_rand(size_t n, float lo, float hi) {
  float *p = malloc(sizeof(float) * (n ? n : 1));
  ck_assert_ptr_nonnull(p);
  for (size_t i = 0; i < n; i++) p[i] = urand(lo, hi);
  return p;
}

static float *host_dup(const float *src, size_t n) {
  float *p = malloc(sizeof(float) * (n ? n : 1));
  ck_assert_ptr_nonnull(p);
  memcpy(p, src, sizeof(float) * n);
  return p;
}

static void *dev_bytes(const void *h, size_t bytes) {
  void *d = gpu->alloc(gpu, bytes);
  ck_assert_msg(d != NULL, "device alloc of %zu bytes failed", bytes);
  if (h) gpu->upload(gpu, d, h, bytes);
  return d;
}

static float *dev(const float *h, size_t n) { return dev_bytes(h, sizeof(float) * n); }

static float *fetch(const float *d, size_t n) {
  float *h = malloc(sizeof(float) * (n ? n : 1));
  ck_assert_ptr_nonnull(h);
  gpu->download(gpu, h, d, sizeof(float) * n);
  return h;
}

static void gpu_ok(void) {
  taca_error err = {{0}};
  ck_assert_msg(nn_backend_cuda_check(gpu, &err) == 0, "%s", err.msg);
}

static double rel_err(const float *a, const float *b, size_t n) {
  double md = 0, mb = 0;
  for (size_t i = 0; i < n; i++) {
    double d = fabs((double)a[i] - b[i]);
    if (!(d <= md)) md = d; /* NaN propagates */
    if (fabs(b[i]) > mb) mb = fabs(b[i]);
  }
  return md / (mb > 0 ? mb : 1);
}

/* Downloads d (n floats) and compares with the CPU's ref. */
static void check_dev(const float *d, const float *ref, size_t n, double tol, const char *what) {
  gpu_ok();
  float *got = fetch(d, n);
  gpu_ok();
  double e = rel_err(got, ref, n);
  printf("  [%s] %-40s rel err %.2e (tol %.0e)\n", nn_cuda_math_name(math_mode), what, e, tol);
  ck_assert_msg(e <= tol, "%s (%s): relative error %.3g > %.1g", what, nn_cuda_math_name(math_mode),
                e, tol);
  free(got);
}

static void check_host(const float *got, const float *ref, size_t n, double tol, const char *what) {
  double e = rel_err(got, ref, n);
  printf("  [%s] %-40s rel err %.2e (tol %.0e)\n", nn_cuda_math_name(math_mode), what, e, tol);
  ck_assert_msg(e <= tol, "%s (%s): relative error %.3g > %.1g", what, nn_cuda_math_name(math_mode),
                e, tol);
}

static void setup_mode(nn_cuda_math m) {
  taca_error err = {{0}};
  cpu = nn_backend_cpu_create(0);
  ck_assert_ptr_nonnull(cpu);
  gpu = nn_backend_cuda_create_math(0, m, &err);
  ck_assert_msg(gpu != NULL, "%s", err.msg);
  ck_assert_int_eq(nn_backend_cuda_math(gpu), m);
  math_mode = m;
  tol_gemm = m == NN_CUDA_MATH_F32 ? 1e-4 : m == NN_CUDA_MATH_TF32 ? 5e-3 : 3e-2;
  tol_loss = m == NN_CUDA_MATH_F32 ? 1e-5 : m == NN_CUDA_MATH_TF32 ? 2e-3 : 2e-2;
  tol_grad = m == NN_CUDA_MATH_F32 ? 1e-4 : m == NN_CUDA_MATH_TF32 ? 5e-2 : 2e-1;
}
static void setup_f32(void) { setup_mode(NN_CUDA_MATH_F32); }
static void setup_tf32(void) { setup_mode(NN_CUDA_MATH_TF32); }
static void setup_bf16(void) { setup_mode(NN_CUDA_MATH_BF16); }

static void teardown(void) {
  if (gpu) gpu_ok();
  nn_backend_destroy(gpu);
  nn_backend_destroy(cpu);
  gpu = cpu = NULL;
}

/* ---- Memory: uploads (staged, large pageable, page-locked on the copy stream), downloads, zero,
 * copy, the caching allocator's reuse and counters. */

START_TEST(memory) {
  const size_t small = 1000, large = (3u << 20) / sizeof(float) + 7; /* > one staging slot */
  float *a = host_rand(small, -1, 1), *b = host_rand(large, -1, 1);
  float *da = dev(a, small), *db = dev(b, large);
  float *ga = fetch(da, small), *gb = fetch(db, large);
  ck_assert_int_eq(memcmp(ga, a, sizeof(float) * small), 0);
  ck_assert_int_eq(memcmp(gb, b, sizeof(float) * large), 0);
  /* The source of a pageable upload may change right after the call. */
  for (int i = 0; i < 8; i++) {
    a[0] = (float)i;
    gpu->upload(gpu, da + i, a, sizeof(float));
  }
  a[0] = -5.f;
  float row[8];
  gpu->download(gpu, row, da, sizeof row);
  for (int i = 0; i < 8; i++) ck_assert_float_eq(row[i], (float)i);
  /* Page-locked: asynchronous on the copy stream; the next op (scale) must see the data. */
  float *pin = nn_host_alloc(gpu, sizeof(float) * large);
  ck_assert_ptr_nonnull(pin);
  for (size_t i = 0; i < large; i++) pin[i] = (float)(i % 1001) - 500.f;
  float *dp = dev(NULL, large);
  gpu->upload(gpu, dp, pin, sizeof(float) * large);
  gpu->scale(gpu, dp, large, 2.f);
  float *gp = fetch(dp, large);
  for (size_t i = 0; i < large; i++) ck_assert_float_eq(gp[i], 2.f * pin[i]);
  nn_host_free(gpu, pin);
  /* zero and device-to-device copy. */
  gpu->copy(gpu, dp, db, sizeof(float) * large);
  gpu->zero(gpu, dp + 3, sizeof(float) * 10);
  free(gp);
  gp = fetch(dp, large);
  for (size_t i = 0; i < large; i++) ck_assert_float_eq(gp[i], i >= 3 && i < 13 ? 0.f : b[i]);
  /* Allocator: a freed block of the same size class is reused; nothing new from the driver. */
  size_t held0, used0, held1, used1;
  float *x = gpu->alloc(gpu, 1000);
  nn_backend_cuda_memory(gpu, &held0, &used0);
  gpu->free(gpu, x);
  float *y = gpu->alloc(gpu, 900);
  nn_backend_cuda_memory(gpu, &held1, &used1);
  ck_assert_ptr_eq(x, y);
  ck_assert_uint_eq(held0, held1);
  ck_assert_uint_eq(used0, used1);
  ck_assert_uint_eq((uintptr_t)y % 64, 0);
  gpu->free(gpu, y);
  gpu->free(gpu, da), gpu->free(gpu, db), gpu->free(gpu, dp);
  nn_backend_cuda_memory(gpu, &held1, &used1);
  ck_assert_uint_eq(used1, 0);
  ck_assert_uint_ge(held1, sizeof(float) * (small + 2 * large));
  free(a), free(b), free(ga), free(gb), free(gp);
  gpu_ok();
}
END_TEST

/* After a failure the backend refuses work and downloads NaN; the reason is kept. */
START_TEST(sticky_error) {
  taca_error err = {{0}};
  nn_backend *bad = nn_backend_cuda_create_math(0, math_mode, &err);
  ck_assert_msg(bad != NULL, "%s", err.msg);
  float *d = bad->alloc(bad, 64);
  ck_assert_ptr_nonnull(d);
  int not_ours;
  bad->free(bad, &not_ours);
  ck_assert_int_eq(nn_backend_cuda_check(bad, &err), -1);
  ck_assert_msg(strstr(err.msg, "did not allocate"), "%s", err.msg);
  float out[4] = {1, 2, 3, 4};
  bad->download(bad, out, d, sizeof out);
  for (int i = 0; i < 4; i++) ck_assert(isnan(out[i]));
  ck_assert_ptr_null(bad->alloc(bad, 64));
  nn_backend_destroy(bad);
  /* Bad device numbers and math modes are refused with a reason. */
  ck_assert_ptr_null(nn_backend_cuda_create(4096, &err));
  ck_assert_msg(strstr(err.msg, "no such GPU"), "%s", err.msg);
  nn_cuda_math m;
  ck_assert_int_eq(nn_cuda_math_parse("fp8", &m, &err), -1);
  ck_assert_ptr_null(nn_backend_create("cuda:x", 0, &err));
  ck_assert_msg(strstr(err.msg, "cuda:N"), "%s", err.msg);
}
END_TEST

/* ---- Linear. */

START_TEST(linear_forward) {
  const int N = 37, C = 53, OC = 29, ldi = C + 3, ldo = OC + 5;
  float *x = host_rand((size_t)N * ldi, -1, 1), *w = host_rand((size_t)OC * C, -1, 1);
  float *bias = host_rand(OC, -1, 1), *out0 = host_rand((size_t)N * ldo, -1, 1);
  float *dx = dev(x, (size_t)N * ldi), *dw = dev(w, (size_t)OC * C), *dbias = dev(bias, OC);
  for (int acc = 0; acc < 2; acc++) {
    for (int with_bias = 0; with_bias < 2; with_bias++) {
      float *ref = host_dup(out0, (size_t)N * ldo), *dout = dev(out0, (size_t)N * ldo);
      cpu->linear_forward(cpu, ref, ldo, x, ldi, w, with_bias ? bias : NULL, N, C, OC, acc);
      gpu->linear_forward(gpu, dout, ldo, dx, ldi, dw, with_bias ? dbias : NULL, N, C, OC, acc);
      char what[64];
      snprintf(what, sizeof what, "linear fwd acc=%d bias=%d (+ padding)", acc, with_bias);
      check_dev(dout, ref, (size_t)N * ldo, tol_gemm, what); /* padding columns untouched */
      gpu->free(gpu, dout);
      free(ref);
    }
  }
  gpu->free(gpu, dx), gpu->free(gpu, dw), gpu->free(gpu, dbias);
  free(x), free(w), free(bias), free(out0);
}
END_TEST

START_TEST(linear_backward) {
  const int N = 41, C = 35, OC = 23, ldd = OC + 2, ldi = C + 1, lddi = C + 4;
  float *dout = host_rand((size_t)N * ldd, -1, 1), *x = host_rand((size_t)N * ldi, -1, 1);
  float *w = host_rand((size_t)OC * C, -1, 1);
  float *dinp0 = host_rand((size_t)N * lddi, -1, 1), *dw0 = host_rand((size_t)OC * C, -1, 1);
  float *db0 = host_rand(OC, -1, 1);
  float *d_dout = dev(dout, (size_t)N * ldd), *d_x = dev(x, (size_t)N * ldi);
  float *d_w = dev(w, (size_t)OC * C);
  for (int acc = 0; acc < 2; acc++) {
    float *rdi = host_dup(dinp0, (size_t)N * lddi), *rdw = host_dup(dw0, (size_t)OC * C);
    float *rdb = host_dup(db0, OC);
    float *gdi = dev(dinp0, (size_t)N * lddi), *gdw = dev(dw0, (size_t)OC * C), *gdb = dev(db0, OC);
    cpu->linear_backward(cpu, rdi, lddi, rdw, rdb, dout, ldd, x, ldi, w, N, C, OC, acc);
    gpu->linear_backward(gpu, gdi, lddi, gdw, gdb, d_dout, ldd, d_x, ldi, d_w, N, C, OC, acc);
    check_dev(gdi, rdi, (size_t)N * lddi, tol_gemm, acc ? "linear bwd dinp (accumulate)" : "linear bwd dinp");
    check_dev(gdw, rdw, (size_t)OC * C, tol_gemm, "linear bwd dW (+= initial)");
    check_dev(gdb, rdb, OC, TOL_ELEM, "linear bwd db (+= initial)");
    /* Optional outputs: dinp only (inp NULL), then the column-sum form (C = 1, no W). */
    cpu->linear_backward(cpu, rdi, lddi, NULL, NULL, dout, ldd, NULL, 0, w, N, C, OC, 0);
    gpu->linear_backward(gpu, gdi, lddi, NULL, NULL, d_dout, ldd, NULL, 0, d_w, N, C, OC, 0);
    check_dev(gdi, rdi, (size_t)N * lddi, tol_gemm, "linear bwd dinp only");
    cpu->linear_backward(cpu, NULL, 0, NULL, rdb, dout, ldd, NULL, 0, NULL, N, 1, OC, 0);
    gpu->linear_backward(gpu, NULL, 0, NULL, gdb, d_dout, ldd, NULL, 0, NULL, N, 1, OC, 0);
    check_dev(gdb, rdb, OC, TOL_ELEM, "column sums (db only)");
    gpu->free(gpu, gdi), gpu->free(gpu, gdw), gpu->free(gpu, gdb);
    free(rdi), free(rdw), free(rdb);
  }
  /* Many rows (several per thread of the reduction) and more than 32 columns. */
  const int NB = 2000, OCB = 70;
  float *big = host_rand((size_t)NB * OCB, -1, 1), *sb = calloc(OCB, sizeof(float));
  float *d_big = dev(big, (size_t)NB * OCB), *d_sb = dev(sb, OCB);
  cpu->linear_backward(cpu, NULL, 0, NULL, sb, big, OCB, NULL, 0, NULL, NB, 1, OCB, 0);
  gpu->linear_backward(gpu, NULL, 0, NULL, d_sb, d_big, OCB, NULL, 0, NULL, NB, 1, OCB, 0);
  check_dev(d_sb, sb, OCB, TOL_ELEM, "column sums, 2000 rows");
  gpu->free(gpu, d_big), gpu->free(gpu, d_sb), free(big), free(sb);
  gpu->free(gpu, d_dout), gpu->free(gpu, d_x), gpu->free(gpu, d_w);
  free(dout), free(x), free(w), free(dinp0), free(dw0), free(db0);
}
END_TEST

/* ---- LayerNorm. */

START_TEST(layernorm) {
  const int N = 19, C = 300;
  const size_t NC = (size_t)N * C;
  float *x = host_rand(NC, -2, 3), *w = host_rand(C, 0.5f, 1.5f), *b = host_rand(C, -1, 1);
  float *dy = host_rand(NC, -1, 1), *dx0 = host_rand(NC, -1, 1);
  float *dw0 = host_rand(C, -1, 1), *db0 = host_rand(C, -1, 1);
  float *ro = malloc(sizeof(float) * NC), *rm = malloc(sizeof(float) * N), *rr = malloc(sizeof(float) * N);
  float *gx = dev(x, NC), *gw = dev(w, C), *gb = dev(b, C), *gdy = dev(dy, NC);
  float *go = dev(NULL, NC), *gm = dev(NULL, N), *gr = dev(NULL, N);
  cpu->layernorm_forward(cpu, ro, rm, rr, x, w, b, N, C);
  gpu->layernorm_forward(gpu, go, gm, gr, gx, gw, gb, N, C);
  check_dev(go, ro, NC, TOL_ELEM, "layernorm fwd");
  check_dev(gm, rm, N, TOL_ELEM, "layernorm mean");
  check_dev(gr, rr, N, TOL_ELEM, "layernorm rstd");
  gpu->zero(gpu, go, sizeof(float) * NC);
  gpu->layernorm_forward(gpu, go, NULL, NULL, gx, gw, gb, N, C); /* statistics optional */
  check_dev(go, ro, NC, TOL_ELEM, "layernorm fwd (no stats)");
  /* Backward: dinp accumulates onto its initial values; dw, db too; each optional. */
  float *rdx = host_dup(dx0, NC), *rdw = host_dup(dw0, C), *rdb = host_dup(db0, C);
  float *gdx = dev(dx0, NC), *gdw = dev(dw0, C), *gdb = dev(db0, C);
  cpu->layernorm_backward(cpu, rdx, rdw, rdb, dy, x, rm, rr, w, N, C);
  gpu->layernorm_backward(gpu, gdx, gdw, gdb, gdy, gx, gm, gr, gw, N, C);
  check_dev(gdx, rdx, NC, TOL_ELEM, "layernorm bwd dinp (+=)");
  check_dev(gdw, rdw, C, TOL_ELEM, "layernorm bwd dw (+=)");
  check_dev(gdb, rdb, C, TOL_ELEM, "layernorm bwd db (+=)");
  cpu->layernorm_backward(cpu, rdx, NULL, rdb, dy, x, rm, rr, w, N, C);
  gpu->layernorm_backward(gpu, gdx, NULL, gdb, gdy, gx, gm, gr, gw, N, C);
  check_dev(gdx, rdx, NC, TOL_ELEM, "layernorm bwd dinp, dw NULL");
  check_dev(gdb, rdb, C, TOL_ELEM, "layernorm bwd db, dw NULL");
  cpu->layernorm_backward(cpu, NULL, rdw, NULL, dy, x, rm, rr, w, N, C);
  gpu->layernorm_backward(gpu, NULL, gdw, NULL, gdy, gx, gm, gr, gw, N, C);
  check_dev(gdw, rdw, C, TOL_ELEM, "layernorm bwd dw only");
  float *bufs[] = {gx, gw, gb, gdy, go, gm, gr, gdx, gdw, gdb};
  for (size_t i = 0; i < sizeof bufs / sizeof *bufs; i++) gpu->free(gpu, bufs[i]);
  free(x), free(w), free(b), free(dy), free(dx0), free(dw0), free(db0), free(ro), free(rm), free(rr);
  free(rdx), free(rdw), free(rdb);
}
END_TEST

/* ---- Activations. */

START_TEST(activations) {
  const int N = 23, C = 77;
  const size_t n = (size_t)N * C;
  float *x = host_rand(n, -5, 5), *bias = host_rand(C, -1, 1), *dout = host_rand(n, -1, 1);
  float *gxs = dev(NULL, n), *gbias = dev(bias, C), *gpre = dev(NULL, n), *gout = dev(NULL, n);
  float *gdo = dev(dout, n), *gdi = dev(NULL, n);
  const nn_act acts[] = {NN_ACT_GELU, NN_ACT_QUICK_GELU};
  for (int a = 0; a < 2; a++) {
    for (int with_bias = 0; with_bias < 2; with_bias++) {
      const char *name = a ? "quick_gelu" : "gelu";
      char what[64];
      const float *bb = with_bias ? bias : NULL, *gbb = with_bias ? gbias : NULL;
      /* In place. */
      float *r = host_dup(x, n);
      gpu->upload(gpu, gxs, x, sizeof(float) * n);
      cpu->bias_act_forward(cpu, r, bb, (size_t)N, C, acts[a]);
      gpu->bias_act_forward(gpu, gxs, gbb, (size_t)N, C, acts[a]);
      snprintf(what, sizeof what, "bias+%s fwd bias=%d", name, with_bias);
      check_dev(gxs, r, n, TOL_ELEM, what);
      /* Keeping the pre-activation. */
      float *rpre = host_dup(x, n), *rout = malloc(sizeof(float) * n);
      gpu->upload(gpu, gpre, x, sizeof(float) * n);
      cpu->bias_act_forward_pre(cpu, rout, rpre, bb, (size_t)N, C, acts[a]);
      gpu->bias_act_forward_pre(gpu, gout, gpre, gbb, (size_t)N, C, acts[a]);
      snprintf(what, sizeof what, "bias+%s fwd_pre out bias=%d", name, with_bias);
      check_dev(gout, rout, n, TOL_ELEM, what);
      check_dev(gpre, rpre, n, TOL_ELEM, "  pre-activation");
      /* Backward, separate output and aliased (dinp == dout). */
      float *rdi = malloc(sizeof(float) * n);
      cpu->act_backward(cpu, rdi, dout, rpre, n, acts[a]);
      gpu->act_backward(gpu, gdi, gdo, gpre, n, acts[a]);
      snprintf(what, sizeof what, "%s backward", name);
      check_dev(gdi, rdi, n, TOL_ELEM, what);
      gpu->copy(gpu, gdi, gdo, sizeof(float) * n);
      gpu->act_backward(gpu, gdi, gdi, gpre, n, acts[a]);
      check_dev(gdi, rdi, n, TOL_ELEM, "  aliased dinp == dout");
      free(r), free(rpre), free(rout), free(rdi);
    }
  }
  float *bufs[] = {gxs, gbias, gpre, gout, gdo, gdi};
  for (size_t i = 0; i < sizeof bufs / sizeof *bufs; i++) gpu->free(gpu, bufs[i]);
  free(x), free(bias), free(dout);
}
END_TEST

/* ---- Attention, forward and backward, causal and not, with and without saved probabilities;
 * T above 32 so that rows span several iterations of a warp. */

static void attention_case(int B, int T, int C, int NH, int causal) {
  const size_t nqkv = (size_t)B * T * 3 * C, nout = (size_t)B * T * C;
  const size_t natt = (size_t)B * NH * T * T;
  float *qkv = host_rand(nqkv, -1.5f, 1.5f), *dout = host_rand(nout, -1, 1);
  float *rout = malloc(sizeof(float) * nout), *ratt = malloc(sizeof(float) * natt);
  float *rdatt = malloc(sizeof(float) * natt), *rdqkv = malloc(sizeof(float) * nqkv);
  float *gqkv = dev(qkv, nqkv), *gdout = dev(dout, nout), *gout = dev(NULL, nout);
  float *gatt = dev(NULL, natt), *gdatt = dev(NULL, natt), *gdqkv = dev(NULL, nqkv);
  char what[80];
  cpu->attention_forward(cpu, rout, ratt, qkv, B, T, C, NH, causal);
  gpu->attention_forward(gpu, gout, gatt, gqkv, B, T, C, NH, causal);
  snprintf(what, sizeof what, "attention fwd B%d T%d C%d NH%d causal=%d", B, T, C, NH, causal);
  check_dev(gout, rout, nout, tol_gemm, what);
  check_dev(gatt, ratt, natt, tol_gemm, "  probabilities");
  gpu->zero(gpu, gout, sizeof(float) * nout);
  gpu->attention_forward(gpu, gout, NULL, gqkv, B, T, C, NH, causal);
  check_dev(gout, rout, nout, tol_gemm, "  without saved probabilities");
  cpu->attention_backward(cpu, rdqkv, rdatt, dout, qkv, ratt, B, T, C, NH, causal);
  gpu->attention_backward(gpu, gdqkv, gdatt, gdout, gqkv, gatt, B, T, C, NH, causal);
  check_dev(gdqkv, rdqkv, nqkv, tol_gemm, "  backward dqkv");
  float *bufs[] = {gqkv, gdout, gout, gatt, gdatt, gdqkv};
  for (size_t i = 0; i < sizeof bufs / sizeof *bufs; i++) gpu->free(gpu, bufs[i]);
  free(qkv), free(dout), free(rout), free(ratt), free(rdatt), free(rdqkv);
}

START_TEST(attention) {
  attention_case(3, 40, 48, 4, 0);
  attention_case(3, 40, 48, 4, 1);
  attention_case(2, 7, 16, 2, 1);
  attention_case(1, 77, 64, 1, 1);
}
END_TEST

/* ---- Embeddings, gathers, scatters, scale. */

START_TEST(embeddings) {
  /* im2col with S divisible by P and not. */
  for (int k = 0; k < 2; k++) {
    const int B = 2, P = 7, S = k ? 30 : 28, G = S / P;
    const size_t npix = (size_t)B * 3 * S * S, nout = (size_t)B * G * G * 3 * P * P;
    float *pix = host_rand(npix, -1, 1), *ref = malloc(sizeof(float) * nout);
    float *gpix = dev(pix, npix), *gout = dev(NULL, nout);
    cpu->im2col_patches(cpu, ref, pix, B, S, P);
    gpu->im2col_patches(gpu, gout, gpix, B, S, P);
    check_dev(gout, ref, nout, 0, k ? "im2col S=30 P=7" : "im2col S=28 P=7");
    gpu->free(gpu, gpix), gpu->free(gpu, gout), free(pix), free(ref);
  }
  {
    const int B = 2, G2 = 16, C = 24, T = G2 + 1;
    float *pe = host_rand((size_t)B * G2 * C, -1, 1), *cls = host_rand(C, -1, 1);
    float *pos = host_rand((size_t)T * C, -1, 1), *ref = malloc(sizeof(float) * B * T * C);
    float *gpe = dev(pe, (size_t)B * G2 * C), *gcls = dev(cls, C), *gpos = dev(pos, (size_t)T * C);
    float *gx = dev(NULL, (size_t)B * T * C);
    cpu->vit_embed(cpu, ref, pe, cls, pos, B, G2, C);
    gpu->vit_embed(gpu, gx, gpe, gcls, gpos, B, G2, C);
    check_dev(gx, ref, (size_t)B * T * C, 0, "vit_embed");
    gpu->free(gpu, gpe), gpu->free(gpu, gcls), gpu->free(gpu, gpos), gpu->free(gpu, gx);
    free(pe), free(cls), free(pos), free(ref);
  }
  {
    const int B = 3, ctx = 12, T = 9, C = 16, V = 50;
    int32_t tok[3 * 12];
    for (int i = 0; i < B * ctx; i++) tok[i] = (int32_t)((i * 37 + 11) % V);
    float *emb = host_rand((size_t)V * C, -1, 1), *pos = host_rand((size_t)ctx * C, -1, 1);
    float *ref = malloc(sizeof(float) * B * T * C);
    int32_t *gtok = dev_bytes(tok, sizeof tok);
    float *gemb = dev(emb, (size_t)V * C), *gpos = dev(pos, (size_t)ctx * C);
    float *gx = dev(NULL, (size_t)B * T * C);
    cpu->text_embed(cpu, ref, tok, ctx, emb, pos, B, T, C);
    gpu->text_embed(gpu, gx, gtok, ctx, gemb, gpos, B, T, C);
    check_dev(gx, ref, (size_t)B * T * C, 0, "text_embed");
    gpu->free(gpu, gtok), gpu->free(gpu, gemb), gpu->free(gpu, gpos), gpu->free(gpu, gx);
    free(emb), free(pos), free(ref);
  }
  {
    /* Gather 5 of 40 rows; scatter-add them back into a nonzero buffer; scale. */
    const int R = 40, n = 5, C = 33;
    const int64_t rows[5] = {39, 0, 17, 3, 22};
    float *src = host_rand((size_t)R * C, -1, 1), *acc = host_rand((size_t)R * C, -1, 1);
    float *rg = malloc(sizeof(float) * n * C);
    float *gsrc = dev(src, (size_t)R * C), *gacc = dev(acc, (size_t)R * C);
    float *gg = dev(NULL, (size_t)n * C);
    cpu->gather_rows(cpu, rg, src, rows, n, C);
    gpu->gather_rows(gpu, gg, gsrc, rows, n, C);
    check_dev(gg, rg, (size_t)n * C, 0, "gather_rows");
    cpu->scatter_rows_add(cpu, acc, rg, rows, n, C);
    gpu->scatter_rows_add(gpu, gacc, gg, rows, n, C);
    check_dev(gacc, acc, (size_t)R * C, TOL_ELEM, "scatter_rows_add");
    cpu->scale(cpu, acc, (size_t)R * C, -0.37f);
    gpu->scale(gpu, gacc, (size_t)R * C, -0.37f);
    check_dev(gacc, acc, (size_t)R * C, TOL_ELEM, "scale");
    /* Many rows (more than one staging slot of indices: the synchronous path). */
    const int many = 200000, MC = 2;
    int64_t *idx = malloc(sizeof(int64_t) * many);
    for (int i = 0; i < many; i++) idx[i] = (int64_t)((i * 7919LL) % many);
    float *big = host_rand((size_t)many * MC, -1, 1), *rbig = malloc(sizeof(float) * many * MC);
    float *gbig = dev(big, (size_t)many * MC), *gres = dev(NULL, (size_t)many * MC);
    cpu->gather_rows(cpu, rbig, big, idx, many, MC);
    gpu->gather_rows(gpu, gres, gbig, idx, many, MC);
    check_dev(gres, rbig, (size_t)many * MC, 0, "gather_rows, 200000 rows");
    gpu->free(gpu, gbig), gpu->free(gpu, gres), free(idx), free(big), free(rbig);
    gpu->free(gpu, gsrc), gpu->free(gpu, gacc), gpu->free(gpu, gg);
    free(src), free(acc), free(rg);
  }
}
END_TEST

/* ---- AdamW: three steps, bias corrections included. */

START_TEST(adamw) {
  const size_t n = 1003;
  float *p = host_rand(n, -1, 1), *m = calloc(n, sizeof(float)), *v = calloc(n, sizeof(float));
  float *gp = dev(p, n), *gm = dev(m, n), *gv = dev(v, n), *gg = dev(NULL, n);
  for (long t = 1; t <= 3; t++) {
    float *g = host_rand(n, -0.1f, 0.1f);
    gpu->upload(gpu, gg, g, sizeof(float) * n);
    cpu->adamw_update(cpu, p, g, m, v, n, 1e-3, 0.9, 0.999, 1e-8, 0.01, t);
    gpu->adamw_update(gpu, gp, gg, gm, gv, n, 1e-3, 0.9, 0.999, 1e-8, 0.01, t);
    free(g);
  }
  check_dev(gp, p, n, TOL_ELEM, "adamw params after 3 steps");
  check_dev(gm, m, n, TOL_ELEM, "adamw m");
  check_dev(gv, v, n, TOL_ELEM, "adamw v");
  gpu->free(gpu, gp), gpu->free(gpu, gm), gpu->free(gpu, gv), gpu->free(gpu, gg);
  free(p), free(m), free(v);
}
END_TEST

/* ---- CLIP inference: image and text embeddings of the open_clip fixture model. */

START_TEST(clip_embeddings) {
  char path[1024], arch[1024];
  taca_error err = {{0}};
  snprintf(path, sizeof path, "%s/clip/oc_quickgelu_f32/model.safetensors", TACA_FIXTURES_DIR);
  snprintf(arch, sizeof arch, "%s/clip/oc_quickgelu_f32/open_clip_config.json", TACA_FIXTURES_DIR);
  clip_model *mc = clip_model_load(path, arch, cpu, &err);
  ck_assert_msg(mc, "%s", err.msg);
  clip_model *mg = clip_model_load(path, arch, gpu, &err);
  ck_assert_msg(mg, "%s", err.msg);
  npy_array pix, tok;
  snprintf(path, sizeof path, "%s/clip/oc_quickgelu_f32/pixels.npy", TACA_FIXTURES_DIR);
  ck_assert_msg(npy_load(path, &pix, &err) == 0, "%s", err.msg);
  snprintf(path, sizeof path, "%s/clip/oc_quickgelu_f32/tokens.npy", TACA_FIXTURES_DIR);
  ck_assert_msg(npy_load(path, &tok, &err) == 0, "%s", err.msg);
  const int B = (int)pix.shape[0], BT = (int)tok.shape[0], E = mc->cfg.embed_dim;
  float *rc = malloc(sizeof(float) * B * E), *rg = malloc(sizeof(float) * B * E);
  ck_assert_int_eq(clip_encode_image(mc, pix.data, B, rc, &err), 0);
  ck_assert_msg(clip_encode_image(mg, pix.data, B, rg, &err) == 0, "%s", err.msg);
  gpu_ok();
  check_host(rg, rc, (size_t)B * E, tol_gemm, "CLIP image features");
  free(rc), free(rg);
  rc = malloc(sizeof(float) * BT * E), rg = malloc(sizeof(float) * BT * E);
  ck_assert_int_eq(clip_encode_text(mc, tok.data, BT, rc, &err), 0);
  ck_assert_msg(clip_encode_text(mg, tok.data, BT, rg, &err) == 0, "%s", err.msg);
  gpu_ok();
  check_host(rg, rc, (size_t)BT * E, tol_gemm, "CLIP text features");
  free(rc), free(rg);
  npy_free(&pix), npy_free(&tok);
  clip_model_free(mc), clip_model_free(mg);
}
END_TEST

/* ---- A CLIP pretraining step (both towers, every weight, the logit scale). */

START_TEST(clip_train_step_parity) {
  const char *fix = TACA_FIXTURES_DIR "/clip_train/";
  char path[1024];
  taca_error err = {{0}};
  clip_config cfg;
  snprintf(path, sizeof path, "%sinit/config.json", fix);
  ck_assert_msg(clip_config_hf_json(&cfg, path, &err) == 0, "%s", err.msg);
  st_file ref;
  snprintf(path, sizeof path, "%sref.safetensors", fix);
  ck_assert_msg(st_open(&ref, path, &err) == 0, "%s", err.msg);
  const st_tensor *px = st_find(&ref, "pixels"), *tk = st_find(&ref, "tokens");
  ck_assert(px && tk && tk->dtype == TACA_DT_I32);
  const int B = (int)px->shape[0];
  const float *pixels = st_f32_view(px);
  ck_assert_ptr_nonnull(pixels);
  int32_t *tokens = malloc(tk->nbytes);
  memcpy(tokens, tk->data, tk->nbytes);
  clip_train *c = clip_train_create(&cfg, cpu, B, 5, &err), *g = clip_train_create(&cfg, gpu, B, 5, &err);
  ck_assert_msg(c && g, "%s", err.msg);
  snprintf(path, sizeof path, "%sinit", fix);
  ck_assert_msg(clip_train_load(c, path, NULL, &err) == 0, "%s", err.msg);
  ck_assert_msg(clip_train_load(g, path, NULL, &err) == 0, "%s", err.msg);
  clip_loss_result rc, rg;
  clip_train_zero_grad(c), clip_train_zero_grad(g);
  ck_assert_msg(clip_train_step(c, pixels, tokens, B, &rc, &err) == 0, "%s", err.msg);
  ck_assert_msg(clip_train_step(g, pixels, tokens, B, &rg, &err) == 0, "%s", err.msg);
  gpu_ok();
  const double el = fabs(rg.loss - rc.loss) / fabs(rc.loss);
  printf("  [%s] CLIP step loss %.7f vs cpu %.7f: rel err %.1e\n", nn_cuda_math_name(math_mode),
         rg.loss, rc.loss, el);
  ck_assert_msg(el <= tol_loss, "CLIP step loss %.9g vs %.9g", rg.loss, rc.loss);
  float *gg = fetch(g->flat_g, g->n);
  double worst = 0, gmax = 0;
  const char *worst_name = "";
  for (size_t i = 0; i < c->n; i++) gmax = fmax(gmax, fabs(c->flat_g[i]));
  for (int i = 0; i < c->n_tensors; i++) {
    const size_t off = c->info[i].offset, n = c->info[i].numel;
    double e = rel_err(gg + off, c->flat_g + off, n);
    if (strstr(c->info[i].name, "k_proj.bias")) {
      /* Analytically zero (softmax is invariant to a shift of every score by q . b_k): both sides
       * hold rounding noise, so the bound is absolute, against the largest gradient. */
      double md = 0;
      for (size_t k = 0; k < n; k++) md = fmax(md, fabs((double)gg[off + k] - c->flat_g[off + k]));
      e = md / (gmax > 0 ? gmax : 1);
    }
    ck_assert_msg(e <= tol_grad, "CLIP step gradient of %s: relative error %.3g > %.1g",
                  c->info[i].name, e, tol_grad);
    if (e > worst) worst = e, worst_name = c->info[i].name;
  }
  printf("  [%s] CLIP step gradients: %d tensors, worst rel err %.1e (%s)\n",
         nn_cuda_math_name(math_mode), c->n_tensors, worst, worst_name);
  free(gg), free(tokens);
  clip_train_free(c), clip_train_free(g);
  st_close(&ref);
}
END_TEST

/* ---- Whole TaCA training steps. */

typedef struct side {
  clip_model *m;
  taca_params P;
  taca_model *tm;
} side;

static float meta_float(const st_file *f, const char *key) {
  const char *s = st_meta(f, key);
  ck_assert_msg(s != NULL, "fixture metadata '%s' missing", key);
  return strtof(s, NULL);
}

static void open_side(side *s, nn_backend *be, const st_file *r, const char *tower, const char *name,
                      int recompute, int B) {
  char path[1024], arch[1024];
  taca_error err = {{0}};
  snprintf(path, sizeof path, "%s/taca/tower_%s.safetensors", TACA_FIXTURES_DIR, tower);
  snprintf(arch, sizeof arch, "%s/taca/tower_%s.json", TACA_FIXTURES_DIR, tower);
  s->m = clip_model_load(path, arch, be, &err);
  ck_assert_msg(s->m, "%s", err.msg);
  taca_param_config pc;
  taca_param_config_default(&pc, &s->m->cfg, (int)meta_float(r, "e_old"));
  pc.proj_hidden = (int)meta_float(r, "hidden");
  const char *peft = st_meta(r, "peft");
  pc.peft.kind = peft && !strcmp(peft, "lora") ? VIT_PEFT_LORA : VIT_PEFT_ADAPTER;
  pc.peft.bottleneck = pc.peft.lora_rank = (int)meta_float(r, "k");
  pc.peft.lora_alpha = meta_float(r, "lora_alpha");
  ck_assert_int_eq(taca_parse_layer_range(st_meta(r, "blocks"), pc.layers, &pc.peft.first,
                                          &pc.peft.last, &err), 0);
  ck_assert_msg(taca_params_create(&s->P, &pc, be, 1, &err) == 0, "%s", err.msg);
  snprintf(path, sizeof path, "%s/taca/%s.init.safetensors", TACA_FIXTURES_DIR, name);
  ck_assert_msg(taca_params_load(&s->P, path, &err) == 0, "%s", err.msg);
  s->tm = taca_model_create(s->m, &s->P, B, recompute, &err);
  ck_assert_msg(s->tm, "%s", err.msg);
}

static void close_side(side *s) {
  taca_model_free(s->tm);
  taca_params_free(&s->P);
  clip_model_free(s->m);
}

static const float *st_f32(const st_file *f, const char *name) {
  const st_tensor *t = st_find(f, name);
  ck_assert_msg(t != NULL, "fixture tensor '%s' missing", name);
  const float *p = st_f32_view(t);
  ck_assert_msg(p != NULL, "fixture tensor '%s' is not aligned F32", name);
  return p;
}

/* Compares a flat buffer (P's layout) of the GPU side with the CPU side's, tensor by tensor. */
static void check_flat(const taca_params *P, const float *got, const float *ref, double tol,
                       const char *what) {
  double worst = 0;
  const char *worst_name = "";
  for (int i = 0; i < P->n_tensors; i++) {
    const taca_tensor_info *t = &P->info[i];
    double e = rel_err(got + t->offset, ref + t->offset, t->numel);
    ck_assert_msg(e <= tol, "%s: %s relative error %.3g > %.1g (%s)", what, t->name, e, tol,
                  nn_cuda_math_name(math_mode));
    if (e > worst) worst = e, worst_name = t->name;
  }
  printf("  [%s] %-40s %d tensors, worst rel err %.1e (%s)\n", nn_cuda_math_name(math_mode), what,
         P->n_tensors, worst, worst_name);
}

static void taca_case(const char *tower, const char *name, int recompute) {
  char path[1024];
  taca_error err = {{0}};
  st_file r;
  snprintf(path, sizeof path, "%s/taca/%s.ref.safetensors", TACA_FIXTURES_DIR, name);
  ck_assert_msg(st_open(&r, path, &err) == 0, "%s", err.msg);
  const st_tensor *px = st_find(&r, "pixels");
  ck_assert_ptr_nonnull(px);
  const int steps = (int)px->shape[0], B = (int)px->shape[1], S = (int)px->shape[3];
  const int E = (int)meta_float(&r, "e_old");
  const size_t npix = (size_t)B * 3 * S * S;
  taca_loss_config lc = {taca_loss_scale(*st_f32(&r, "logit_scale")), 1.0f, meta_float(&r, "lambda")};
  side c, g;
  open_side(&c, cpu, &r, tower, name, recompute, B);
  open_side(&g, gpu, &r, tower, name, recompute, B);
  /* The GPU side's batches come from page-locked memory, as the trainer's feed provides them. */
  float *pinned = nn_host_alloc(gpu, sizeof(float) * npix);
  ck_assert_ptr_nonnull(pinned);
  const taca_adamw_config opt = {1e-3, 0.9, 0.999, 1e-8, 0.01};
  const int n_steps = steps < 3 ? steps : 3;
  float *host = malloc(sizeof(float) * c.P.n);
  for (int s = 0; s < n_steps; s++) {
    const float *pixels = st_f32(&r, "pixels") + (size_t)s * npix;
    const float *img = st_f32(&r, "old_img") + (size_t)s * B * E;
    const float *txt = st_f32(&r, "old_txt") + (size_t)s * B * E;
    memcpy(pinned, pixels, sizeof(float) * npix);
    taca_loss_terms tc, tg;
    ck_assert_msg(taca_step_forward_backward(c.tm, &c.P, pixels, img, txt, B, &lc, &tc, &err) == 0,
                  "%s", err.msg);
    ck_assert_msg(taca_step_forward_backward(g.tm, &g.P, pinned, img, txt, B, &lc, &tg, &err) == 0,
                  "%s", err.msg);
    gpu_ok();
    const double el = fabs(tg.loss - tc.loss) / fabs(tc.loss);
    const double ec = fabs(tg.contra - tc.contra) / fabs(tc.contra);
    const double ed = fabs(tg.distill - tc.distill) / fabs(tc.distill);
    printf("  [%s] %s%s step %d: loss %.7f vs cpu %.7f, rel err %.1e / %.1e / %.1e\n",
           nn_cuda_math_name(math_mode), name, recompute ? " (recompute)" : "", s, tg.loss, tc.loss,
           el, ec, ed);
    ck_assert_msg(el <= tol_loss && ec <= tol_loss && ed <= tol_loss,
                  "%s step %d: loss terms (%.7g %.7g %.7g) vs cpu (%.7g %.7g %.7g)", name, s,
                  tg.loss, tg.contra, tg.distill, tc.loss, tc.contra, tc.distill);
    if (s == 0) {
      g.P.be->download(g.P.be, host, g.P.flat_g, sizeof(float) * g.P.n);
      check_flat(&c.P, host, c.P.flat_g, tol_grad, "TaCA step 0 gradients");
    }
    taca_params_adamw(&c.P, &opt);
    taca_params_adamw(&g.P, &opt);
  }
  gpu_ok();
  if (math_mode == NN_CUDA_MATH_F32) {
    g.P.be->download(g.P.be, host, g.P.flat_p, sizeof(float) * g.P.n);
    check_flat(&c.P, host, c.P.flat_p, 1e-4, "params after 3 AdamW steps");
  }
  free(host);
  nn_host_free(gpu, pinned);
  close_side(&c), close_side(&g);
  st_close(&r);
}

START_TEST(taca_adapter_all) { taca_case("quickgelu", "adapter_all", 0); }
END_TEST

START_TEST(taca_adapter_range_recompute) { taca_case("gelu", "adapter_range", 1); }
END_TEST

START_TEST(taca_lora) { taca_case("quickgelu", "lora_all", 0); }
END_TEST


/* ---- Every slot of both backends is set (their static const tables). */

START_TEST(ops_complete) {
  const char *missing = nn_backend_missing_op(gpu);
  ck_assert_msg(missing == NULL, "the CUDA backend has no '%s'", missing);
  missing = nn_backend_missing_op(cpu);
  ck_assert_msg(missing == NULL, "the CPU backend has no '%s'", missing);
}
END_TEST

/* ---- A deliberate CUDA error: an invalid device pointer. Sticky, and the next backward of a
 * model reports it (before the ranks' agreement in the trainer). */

START_TEST(injected_cuda_error) {
  taca_error err = {{0}};
  nn_backend *bad = nn_backend_cuda_create_math(0, math_mode, &err);
  ck_assert_msg(bad != NULL, "%s", err.msg);
  aft_model *am = aft_model_create("linear:8", 8, 3, bad, 4, 1, &err);
  ck_assert_msg(am != NULL, "%s", err.msg);
  float *pix = host_rand(4 * 3 * 8 * 8, -1, 1), logits[4 * 3], dl[4 * 3];
  ck_assert_int_eq(aft_model_forward(am, pix, 4, NULL, logits, &err), 0);
  for (int i = 0; i < 12; i++) dl[i] = 0.1f;
  ck_assert_int_eq(nn_backend_cuda_check(bad, &err), 0);
  float *d = bad->alloc(bad, 1024);
  bad->copy(bad, d, (const void *)(uintptr_t)0x10, 1024); /* not a device pointer */
  bad->synchronize(bad);
  ck_assert_int_eq(nn_backend_cuda_check(bad, &err), -1);
  printf("  [%s] injected error: %s\n", nn_cuda_math_name(math_mode), err.msg);
  memset(&err, 0, sizeof err);
  ck_assert_int_eq(aft_model_backward(am, NULL, dl, &err), -1);
  ck_assert_msg(err.msg[0], "the backward after a CUDA error gave no reason");
  aft_model_free(am);
  nn_backend_destroy(bad);
  free(pix);
}
END_TEST

/* ---- Odd, large shapes: more elements / rows than one pass of a grid-stride grid covers (grids
 * are capped at 32 blocks per multiprocessor: ~4k blocks on a 132-SM GPU), so every kernel's
 * second and later passes run. */

START_TEST(large_shapes) {
  const int N = 9001, C = 771; /* 6.9M elements, 9001 rows: past 132 * 32 * 256 and 132 * 32 */
  const size_t n = (size_t)N * C;
  float *x = host_rand(n, -3, 3), *w = host_rand(C, 0.5f, 1.5f), *b = host_rand(C, -0.5f, 0.5f);
  float *dx = dev(x, n), *dw = dev(w, C), *db = dev(b, C), *dout = dev(NULL, n);
  float *ref = malloc(sizeof(float) * n), *mean = malloc(sizeof(float) * N), *rstd = malloc(sizeof(float) * N);
  ck_assert(ref && mean && rstd);
  float *dmean = dev(NULL, N), *drstd = dev(NULL, N);
  /* LayerNorm over 9001 rows */
  cpu->layernorm_forward(cpu, ref, mean, rstd, x, w, b, N, C);
  gpu->layernorm_forward(gpu, dout, dmean, drstd, dx, dw, db, N, C);
  check_dev(dout, ref, n, TOL_ELEM, "large layernorm_forward (9001 x 771)");
  check_dev(drstd, rstd, N, TOL_ELEM, "large layernorm rstd");
  /* GELU in place over 6.9M elements */
  memcpy(ref, x, sizeof(float) * n);
  cpu->bias_act_forward(cpu, ref, b, n / C, C, NN_ACT_GELU);
  gpu->copy(gpu, dout, dx, sizeof(float) * n);
  gpu->bias_act_forward(gpu, dout, db, n / C, C, NN_ACT_GELU);
  check_dev(dout, ref, n, TOL_ELEM, "large bias_act_forward gelu (6.9M)");
  /* scale and AdamW over an odd count */
  const size_t m = n - 5;
  memcpy(ref, x, sizeof(float) * m);
  cpu->scale(cpu, ref, m, 0.37f);
  gpu->copy(gpu, dout, dx, sizeof(float) * m);
  gpu->scale(gpu, dout, m, 0.37f);
  check_dev(dout, ref, m, TOL_ELEM, "large scale (6.9M - 5)");
  float *g = host_rand(m, -1, 1), *mo = calloc(m, sizeof(float)), *v = calloc(m, sizeof(float));
  ck_assert(g && mo && v);
  float *dg = dev(g, m), *dm = dev(mo, m), *dv = dev(v, m);
  memcpy(ref, x, sizeof(float) * m);
  gpu->copy(gpu, dout, dx, sizeof(float) * m);
  for (long t = 1; t <= 2; t++) {
    cpu->adamw_update(cpu, ref, g, mo, v, m, 1e-3, 0.9, 0.999, 1e-8, 0.01, t);
    gpu->adamw_update(gpu, dout, dg, dm, dv, m, 1e-3, 0.9, 0.999, 1e-8, 0.01, t);
  }
  check_dev(dout, ref, m, TOL_ELEM, "large adamw_update (6.9M - 5, 2 steps)");
  check_dev(dv, v, m, TOL_ELEM, "large adamw second moment");
  gpu->free(gpu, dx), gpu->free(gpu, dw), gpu->free(gpu, db), gpu->free(gpu, dout);
  gpu->free(gpu, dmean), gpu->free(gpu, drstd), gpu->free(gpu, dg), gpu->free(gpu, dm), gpu->free(gpu, dv);
  free(x), free(w), free(b), free(ref), free(mean), free(rstd), free(g), free(mo), free(v);
  gpu_ok();
}
END_TEST

/* ---- cuda:1 (only where two GPUs exist): a backend on the second GPU computes what the CPU does. */

START_TEST(second_gpu) {
  taca_error err = {{0}};
  if (nn_cuda_device_count(&err) < 2) {
    printf("  [%s] cuda:1: one GPU only, not run\n", nn_cuda_math_name(math_mode));
    return;
  }
  nn_backend *g1 = nn_backend_create("cuda:1", 0, &err);
  ck_assert_msg(g1 != NULL, "%s", err.msg);
  ck_assert_int_eq(nn_backend_cuda_device(g1), 1);
  const int N = 33, C = 47, OC = 19;
  float *x = host_rand((size_t)N * C, -1, 1), *w = host_rand((size_t)OC * C, -1, 1), *bias = host_rand(OC, -1, 1);
  float *ref = malloc(sizeof(float) * N * OC), *got = malloc(sizeof(float) * N * OC);
  ck_assert(ref && got);
  cpu->linear_forward(cpu, ref, OC, x, C, w, bias, N, C, OC, 0);
  float *dx = g1->alloc(g1, sizeof(float) * N * C), *dw = g1->alloc(g1, sizeof(float) * OC * C);
  float *db = g1->alloc(g1, sizeof(float) * OC), *dy = g1->alloc(g1, sizeof(float) * N * OC);
  g1->upload(g1, dx, x, sizeof(float) * N * C), g1->upload(g1, dw, w, sizeof(float) * OC * C);
  g1->upload(g1, db, bias, sizeof(float) * OC);
  g1->linear_forward(g1, dy, OC, dx, C, dw, db, N, C, OC, 0);
  g1->download(g1, got, dy, sizeof(float) * N * OC);
  ck_assert_int_eq(nn_backend_cuda_check(g1, &err), 0);
  check_host(got, ref, (size_t)N * OC, tol_gemm, "cuda:1 linear_forward");
  g1->free(g1, dx), g1->free(g1, dw), g1->free(g1, db), g1->free(g1, dy);
  nn_backend_destroy(g1);
  free(x), free(w), free(bias), free(ref), free(got);
}
END_TEST

/* ---- AFT downstream models: steps of forward, cross-entropy, backward and AdamW on both backends. */

/* Runs `steps` AFT steps of arch on be from page-locked (pinned) or plain batches without a host
 * sync between a step's backward and the next upload (as the trainer does); params receives the
 * final parameters (n floats), logits the last step's logits. */
static void aft_steps(nn_backend *be, const char *arch, int S, int B, int steps, int pinned, float *params,
                      size_t *n_params, float *logits_out) {
  const int C = 5;
  taca_error err = {{0}};
  aft_model *am = aft_model_create(arch, S, C, be, B, 7, &err);
  ck_assert_msg(am != NULL, "%s", err.msg);
  const size_t npix = (size_t)B * 3 * S * S;
  float *pix = pinned ? nn_host_alloc(be, sizeof(float) * npix) : malloc(sizeof(float) * npix);
  float *logits = malloc(sizeof(float) * B * C), *dl = malloc(sizeof(float) * B * C);
  int *labels = malloc(sizeof(int) * B);
  ck_assert(pix && logits && dl && labels);
  uint64_t saved = rng;
  rng = 12345; /* the same batches on every backend */
  for (int step = 0; step < steps; step++) {
    for (size_t i = 0; i < npix; i++) pix[i] = urand(-1, 1);
    for (int i = 0; i < B; i++) labels[i] = (i * 7 + step) % C;
    aft_model_zero_grad(am);
    ck_assert_int_eq(aft_model_forward(am, pix, B, NULL, logits, &err), 0);
    ce_result ce;
    ck_assert_msg(cross_entropy(logits, labels, B, C, 1.0 / B, dl, &ce, &err) == 0, "%s", err.msg);
    ck_assert_msg(aft_model_backward(am, NULL, dl, &err) == 0, "%s", err.msg);
    aft_model_update(am, 1e-3, 0.01); /* asynchronous: the next upload may overlap it */
  }
  rng = saved;
  memcpy(logits_out, logits, sizeof(float) * B * C);
  *n_params = am->n;
  be->download(be, params, am->p, sizeof(float) * am->n);
  aft_model_free(am);
  if (pinned) nn_host_free(be, pix);
  else free(pix);
  free(logits), free(dl), free(labels);
}

static void aft_case(const char *arch, int S, int B, int steps) {
  const size_t cap = (size_t)4 << 20;
  float *pc = malloc(sizeof(float) * cap), *pg = malloc(sizeof(float) * cap);
  float lc[64 * 5], lg[64 * 5];
  size_t nc = 0, ng = 0;
  ck_assert(pc && pg && B <= 64);
  aft_steps(cpu, arch, S, B, steps, 0, pc, &nc, lc);
  aft_steps(gpu, arch, S, B, steps, 1, pg, &ng, lg);
  ck_assert_uint_eq(nc, ng);
  ck_assert_uint_le(nc, cap);
  gpu_ok();
  char what[96];
  snprintf(what, sizeof what, "aft %s: last logits (%d steps)", arch, steps);
  check_host(lg, lc, (size_t)B * 5, tol_gemm * 10, what);
  snprintf(what, sizeof what, "aft %s: parameters after %d AdamW steps", arch, steps);
  /* AdamW's first steps move parameters by ~lr sign(g): compare the moves, f32 only (as taca_case) */
  if (math_mode == NN_CUDA_MATH_F32) check_host(pg, pc, nc, tol_grad, what);
  free(pc), free(pg);
}

START_TEST(aft_linear) { aft_case("linear:16", 24, 12, 3); }
END_TEST

START_TEST(aft_vit) { aft_case(TACA_FIXTURES_DIR "/clip_train/init/config.json", 16, 6, 3); }
END_TEST

/* The stream contract, checked: AFT's linear model uploads each batch from page-locked memory on
 * the copy stream while the previous step's weight-gradient GEMM may still run; the run must equal,
 * bit for bit, the same run with every op synchronised (TACA_CUDA_SYNC=1). Large images and batch
 * so that the GEMM is long enough for an overlap to happen. */
START_TEST(aft_stream_contract) {
  const int S = 160, B = 48, steps = 6;
  const size_t cap = (size_t)16 << 20;
  float *pa = malloc(sizeof(float) * cap), *pb = malloc(sizeof(float) * cap);
  float la[64 * 5], lb[64 * 5];
  size_t na = 0, nb = 0;
  ck_assert(pa && pb);
  taca_error err = {{0}};
  aft_steps(gpu, "linear:64", S, B, steps, 1, pa, &na, la);
  setenv("TACA_CUDA_SYNC", "1", 1);
  nn_backend *synced = nn_backend_cuda_create_math(0, math_mode, &err);
  unsetenv("TACA_CUDA_SYNC");
  ck_assert_msg(synced != NULL, "%s", err.msg);
  aft_steps(synced, "linear:64", S, B, steps, 1, pb, &nb, lb);
  ck_assert_int_eq(nn_backend_cuda_check(synced, &err), 0);
  nn_backend_destroy(synced);
  gpu_ok();
  ck_assert_uint_eq(na, nb);
  size_t differ = 0;
  for (size_t i = 0; i < na; i++) differ += memcmp(&pa[i], &pb[i], sizeof(float)) != 0;
  printf("  [%s] aft linear:64 overlapped vs TACA_CUDA_SYNC=1: %zu of %zu parameters differ\n",
         nn_cuda_math_name(math_mode), differ, na);
  ck_assert_msg(differ == 0, "a stream race: %zu of %zu parameters differ from the synchronised run", differ, na);
  ck_assert_int_eq(memcmp(la, lb, sizeof(float) * B * 5), 0);
  free(pa), free(pb);
}
END_TEST

static TCase *mode_case(const char *name, void (*setup)(void)) {
  TCase *tc = tcase_create(name);
  tcase_add_checked_fixture(tc, setup, teardown);
  tcase_add_test(tc, memory);
  tcase_add_test(tc, sticky_error);
  tcase_add_test(tc, linear_forward);
  tcase_add_test(tc, linear_backward);
  tcase_add_test(tc, layernorm);
  tcase_add_test(tc, activations);
  tcase_add_test(tc, attention);
  tcase_add_test(tc, embeddings);
  tcase_add_test(tc, adamw);
  tcase_add_test(tc, clip_embeddings);
  tcase_add_test(tc, clip_train_step_parity);
  tcase_add_test(tc, taca_adapter_all);
  tcase_add_test(tc, taca_adapter_range_recompute);
  tcase_add_test(tc, taca_lora);
  tcase_add_test(tc, ops_complete);
  tcase_add_test(tc, injected_cuda_error);
  tcase_add_test(tc, large_shapes);
  tcase_add_test(tc, second_gpu);
  tcase_add_test(tc, aft_linear);
  tcase_add_test(tc, aft_vit);
  tcase_add_test(tc, aft_stream_contract);
  return tc;
}

/* An NVIDIA GPU is present: its device nodes exist (bare metal, containers with the toolkit, WSL). */
static int gpu_present(char *which, size_t n) {
  const char *patterns[] = {"/dev/nvidia[0-9]*", "/dev/dxg"};
  for (size_t i = 0; i < sizeof patterns / sizeof patterns[0]; i++) {
    glob_t g;
    int found = glob(patterns[i], 0, NULL, &g) == 0 && g.gl_pathc > 0;
    if (found) snprintf(which, n, "%s", g.gl_pathv[0]);
    globfree(&g);
    if (found) return 1;
  }
  return 0;
}

int main(void) {
  taca_error err = {{0}};
#ifndef TACA_HAVE_CUDA
  printf("test_cuda_parity: skipped: this build has no CUDA backend\n");
  return 77;
#endif
  char node[256] = "";
  const int present = gpu_present(node, sizeof node);
  const int count = nn_cuda_device_count(&err);
  if (count <= 0) {
    /* No device nodes, or the runtime says there is no device: no GPU. Anything else with a GPU
     * present (the module does not load, the driver is too old, initialisation fails) is broken. */
    if (!present || strstr(err.msg, "cudaErrorNoDevice")) {
      printf("test_cuda_parity: skipped: no GPU (%s)\n", err.msg);
      return 77;
    }
    printf("test_cuda_parity: FAILED: a GPU is present (%s) but the CUDA backend cannot use it: %s\n", node,
           err.msg);
    return 1;
  }
  printf("test_cuda_parity: %d GPU(s)%s%s\n", count, present ? ", device node " : "", node);
  Suite *s = suite_create("cuda_parity");
  suite_add_tcase(s, mode_case("f32", setup_f32));
  suite_add_tcase(s, mode_case("tf32", setup_tf32));
  suite_add_tcase(s, mode_case("bf16", setup_bf16));
  SRunner *sr = srunner_create(s);
  /* CUDA cannot be used in a child forked after the parent initialised it (the device count
   * above did): run the tests in this process. */
  srunner_set_fork_status(sr, CK_NOFORK);
  srunner_run_all(sr, CK_NORMAL);
  int failed = srunner_ntests_failed(sr);
  srunner_free(sr);
  return failed ? 1 : 0;
}
