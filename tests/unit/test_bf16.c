/* test_bf16.c: BF16 matrix multiplies of the CPU backend (backend.h, bf16_register) and CLIP in
 * --precision bf16, on both of its paths (oneDNN where it has a BF16 matmul for this CPU; the
 * portable one that TACA_BF16_GEMM=portable forces).
 *  - ops: linear_forward / linear_backward's dinp on registered weights equal the exact sum of the
 *    BF16-rounded products (computed here in double) to F32 summation noise (<= 1e-5 of the
 *    largest |term| sum), with bias, accumulation, output row strides and a W inside a larger
 *    region (k of a packed q|k|v); unregistered weights stay F32 bit for bit.
 *  - CLIP against PyTorch (tests/fixtures/gen_bf16.py: a ViT-B/16-shaped model, narrower and
 *    shallower: vision width 192, 3 layers, head width 64; text width 128): image and text features
 *    in bf16 have per-row cosine >= 0.999 to the F32 reference and a relative error
 *    (max |a - r| / max |r|) no worse than 1.5x that of torch.autocast("cpu", bfloat16) on the
 *    same weights; the two paths agree to less than that error; switching back to F32 gives the F32 features bit
 *    for bit.
 *  - TaCA training with the frozen tower in BF16 (its forward and input-gradient GEMMs; adapters,
 *    projector and AdamW F32): 100 steps on the fixture's tower from the same start and batches as
 *    in F32; the loss stays within 1% of the F32 run's at every step, and training does learn. */
#include <check.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/dtype.h"
#include "base/npy.h"
#include "methods/taca_loss.h"
#include "methods/taca_params.h"
#include "methods/taca_step.h"
#include "nn/backend.h"
#include "nn/clip.h"

static nn_backend *make(int portable) {
  if (portable) setenv("TACA_BF16_GEMM", "portable", 1);
  else unsetenv("TACA_BF16_GEMM");
  nn_backend *be = nn_backend_cpu_create(2);
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

static double r16(float x) { return taca_bf16_to_f32(taca_f32_to_bf16(x)); }

/* out[n, j] (+)= sum_c r16(inp[n, c]) r16(w[j, c]) + bias[j]; scale[n, j] = sum |terms|. */
static void ref_forward(double *out, double *scale, const float *inp, int ldi, const float *w,
                        const float *bias, int N, int C, int OC) {
  for (int n = 0; n < N; n++)
    for (int j = 0; j < OC; j++) {
      double s = bias ? bias[j] : 0, a = bias ? fabs(bias[j]) : 0;
      for (int c = 0; c < C; c++) {
        double t = r16(inp[(size_t)n * ldi + c]) * r16(w[(size_t)j * C + c]);
        s += t;
        a += fabs(t);
      }
      out[(size_t)n * OC + j] += s;
      scale[(size_t)n * OC + j] = a;
    }
}

static void check_ops(int portable) {
  nn_backend *be = make(portable);
  taca_error err = {{0}};
  ck_assert_ptr_nonnull(be->bf16_register);
  const int N = 37, C = 96, OC = 80, LDO = 3 * OC + 5;
  /* A packed [3 OC, C] region; the test multiplies by its middle third (k of q|k|v). */
  float *region = rnd((size_t)3 * OC * C, 1), *inp = rnd((size_t)N * C, 2), *bias = rnd(OC, 3);
  float *w = region + (size_t)OC * C;
  float *out = rnd((size_t)N * LDO, 4), *out0 = malloc(sizeof(float) * N * LDO);
  memcpy(out0, out, sizeof(float) * N * LDO);
  /* Unregistered: F32, bit for bit what the plain backend computes. */
  nn_backend *plain = make(0);
  float *o1 = calloc((size_t)N * OC, sizeof(float)), *o2 = calloc((size_t)N * OC, sizeof(float));
  ck_assert_int_eq(be->bf16_register(be, inp + 1, 7, &err), 0); /* an unrelated region */
  be->linear_forward(be, o1, OC, inp, C, w, bias, N, C, OC, 0);
  plain->linear_forward(plain, o2, OC, inp, C, w, bias, N, C, OC, 0);
  ck_assert_int_eq(memcmp(o1, o2, sizeof(float) * N * OC), 0);
  be->bf16_unregister(be, inp + 1);

  ck_assert_int_eq(be->bf16_register(be, region, (size_t)3 * OC * C, &err), 0);
  ck_assert_int_eq(be->bf16_register(be, region, (size_t)3 * OC * C, &err), 0); /* no-op */
  ck_assert_int_ne(be->bf16_register(be, region + 5, 10, &err), 0);             /* overlaps */
  ck_assert_msg(strstr(err.msg, "overlaps"), "%s", err.msg);
  double *ref = calloc((size_t)N * OC, sizeof(double)), *sc = calloc((size_t)N * OC, sizeof(double));
  for (int acc = 0; acc < 2; acc++) {
    memcpy(out, out0, sizeof(float) * N * LDO);
    for (int n = 0; n < N; n++)
      for (int j = 0; j < OC; j++) ref[(size_t)n * OC + j] = acc ? out0[(size_t)n * LDO + 7 + j] : 0;
    ref_forward(ref, sc, inp, C, w, bias, N, C, OC);
    be->linear_forward(be, out + 7, LDO, inp, C, w, bias, N, C, OC, acc);
    double worst = 0;
    for (int n = 0; n < N; n++)
      for (int j = 0; j < LDO; j++) {
        const float got = out[(size_t)n * LDO + j];
        if (j < 7 || j >= 7 + OC) { /* outside the output columns: untouched */
          ck_assert_float_eq(got, out0[(size_t)n * LDO + j]);
          continue;
        }
        double e = fabs(got - ref[(size_t)n * OC + j - 7]) / (sc[(size_t)n * OC + j - 7] + 1e-30);
        if (e > worst) worst = e;
      }
    ck_assert_msg(worst <= 1e-5, "%s bf16 linear_forward (acc %d): error %.3g of the term sum",
                  portable ? "portable" : nn_backend_cpu_bf16_impl(), acc, worst);
  }
  /* linear_backward: dinp[N, C] = r16(dout[N, OC]) . r16(W) in BF16; dw, db stay F32. */
  float *dout = rnd((size_t)N * OC, 5), *dinp = calloc((size_t)N * C, sizeof(float));
  float *dw = calloc((size_t)OC * C, sizeof(float)), *dw2 = calloc((size_t)OC * C, sizeof(float));
  float *db = calloc(OC, sizeof(float)), *db2 = calloc(OC, sizeof(float));
  float *dinp2 = calloc((size_t)N * C, sizeof(float));
  be->linear_backward(be, dinp, C, dw, db, dout, OC, inp, C, w, N, C, OC, 0);
  plain->linear_backward(plain, dinp2, C, dw2, db2, dout, OC, inp, C, w, N, C, OC, 0);
  ck_assert_int_eq(memcmp(dw, dw2, sizeof(float) * OC * C), 0);
  ck_assert_int_eq(memcmp(db, db2, sizeof(float) * OC), 0);
  double worst = 0;
  for (int n = 0; n < N; n++)
    for (int c = 0; c < C; c++) {
      double s = 0, a = 0;
      for (int j = 0; j < OC; j++) {
        double t = r16(dout[(size_t)n * OC + j]) * r16(w[(size_t)j * C + c]);
        s += t;
        a += fabs(t);
      }
      double e = fabs(dinp[(size_t)n * C + c] - s) / (a + 1e-30);
      if (e > worst) worst = e;
    }
  ck_assert_msg(worst <= 1e-5, "bf16 dinp: error %.3g of the term sum", worst);
  /* ... and it is BF16 indeed: it differs from the F32 product. */
  ck_assert_int_ne(memcmp(dinp, dinp2, sizeof(float) * N * C), 0);
  be->bf16_unregister(be, region);
  memset(o1, 0, sizeof(float) * N * OC);
  be->linear_forward(be, o1, OC, inp, C, w, bias, N, C, OC, 0);
  ck_assert_int_eq(memcmp(o1, o2, sizeof(float) * N * OC), 0);
  free(region), free(inp), free(bias), free(out), free(out0), free(o1), free(o2), free(ref);
  free(sc), free(dout), free(dinp), free(dinp2), free(dw), free(dw2), free(db), free(db2);
  nn_backend_destroy(plain);
  nn_backend_destroy(be);
}

START_TEST(ops_onednn) { check_ops(0); }
END_TEST

START_TEST(ops_portable) { check_ops(1); }
END_TEST

/* ---- CLIP against PyTorch autocast ---- */

static void fixture(char *buf, size_t n, const char *file) {
  snprintf(buf, n, "%s/bf16/%s", TACA_FIXTURES_DIR, file);
}

static void load_npy(const char *file, npy_array *a) {
  char path[1024];
  taca_error err = {{0}};
  fixture(path, sizeof path, file);
  ck_assert_msg(npy_load(path, a, &err) == 0, "%s", err.msg);
}

static double rel_err(const float *a, const float *b, size_t n) {
  double md = 0, mb = 0;
  for (size_t i = 0; i < n; i++) {
    double d = fabs((double)a[i] - b[i]);
    if (!(d <= md)) md = d;
    if (fabs(b[i]) > mb) mb = fabs(b[i]);
  }
  return md / (mb > 0 ? mb : 1);
}

static double min_cos(const float *a, const float *b, int rows, int E) {
  double worst = 1;
  for (int r = 0; r < rows; r++) {
    double ab = 0, aa = 0, bb = 0;
    for (int i = 0; i < E; i++) {
      double x = a[(size_t)r * E + i], y = b[(size_t)r * E + i];
      ab += x * y, aa += x * x, bb += y * y;
    }
    double c = ab / sqrt(aa * bb);
    if (!(c >= worst)) worst = c;
  }
  return worst;
}

typedef struct feats {
  float *img, *txt;
} feats;

static clip_model *load_model(nn_backend *be) {
  char path[1024], arch[1024];
  taca_error err = {{0}};
  fixture(path, sizeof path, "model.safetensors");
  fixture(arch, sizeof arch, "open_clip_config.json");
  clip_model *m = clip_model_load(path, arch, be, &err);
  ck_assert_msg(m, "%s", err.msg);
  return m;
}

static feats encode(clip_model *m, const npy_array *pix, const npy_array *tok) {
  taca_error err = {{0}};
  const int E = m->cfg.embed_dim;
  feats f = {malloc(sizeof(float) * pix->shape[0] * E), malloc(sizeof(float) * tok->shape[0] * E)};
  ck_assert_msg(clip_encode_image(m, pix->data, (int)pix->shape[0], f.img, &err) == 0, "%s", err.msg);
  ck_assert_msg(clip_encode_text(m, tok->data, (int)tok->shape[0], f.txt, &err) == 0, "%s", err.msg);
  return f;
}

static double json_num(json_t *j, const char *key) {
  json_t *v = json_object_get(j, key);
  ck_assert_msg(json_is_number(v), "autocast_error.json has no '%s'", key);
  return json_number_value(v);
}

START_TEST(clip_vs_autocast) {
  npy_array pix, tok, img_ref, txt_ref, img_ac, txt_ac;
  load_npy("pixels.npy", &pix);
  load_npy("tokens.npy", &tok);
  load_npy("image_f32.npy", &img_ref);
  load_npy("text_f32.npy", &txt_ref);
  load_npy("image_autocast.npy", &img_ac);
  load_npy("text_autocast.npy", &txt_ac);
  char path[1024];
  fixture(path, sizeof path, "autocast_error.json");
  json_error_t je;
  json_t *rep = json_load_file(path, 0, &je);
  ck_assert_msg(rep, "%s: %s", path, je.text);
  const double ac_img = json_num(rep, "image_rel_err"), ac_txt = json_num(rep, "text_rel_err");
  json_decref(rep);
  const int BI = (int)pix.shape[0], BT = (int)tok.shape[0];
  const int E = (int)img_ref.shape[1];
  /* the fixture's own claim, recomputed from its arrays */
  ck_assert_double_le(fabs(rel_err(img_ac.data, img_ref.data, (size_t)BI * E) - ac_img), 1e-6);
  ck_assert_double_le(fabs(rel_err(txt_ac.data, txt_ref.data, (size_t)BT * E) - ac_txt), 1e-6);

  feats path_feats[2];
  for (int portable = 0; portable < 2; portable++) {
    nn_backend *be = make(portable);
    clip_model *m = load_model(be);
    ck_assert_int_eq(m->cfg.embed_dim, E);
    feats f32 = encode(m, &pix, &tok);
    ck_assert_double_le(rel_err(f32.img, img_ref.data, (size_t)BI * E), 1e-4);
    ck_assert_double_le(rel_err(f32.txt, txt_ref.data, (size_t)BT * E), 1e-4);
    taca_error err = {{0}};
    ck_assert_msg(clip_model_set_precision(m, NN_PRECISION_BF16, &err) == 0, "%s", err.msg);
    feats bf = encode(m, &pix, &tok);
    const double ei = rel_err(bf.img, img_ref.data, (size_t)BI * E);
    const double et = rel_err(bf.txt, txt_ref.data, (size_t)BT * E);
    const double ci = min_cos(bf.img, img_ref.data, BI, E), ct = min_cos(bf.txt, txt_ref.data, BT, E);
    printf("bf16 (%s): image rel err %.3g (autocast %.3g), min cos %.7f; text rel err %.3g "
           "(autocast %.3g), min cos %.7f\n",
           portable ? "portable" : nn_backend_cpu_bf16_impl(), ei, ac_img, ci, et, ac_txt, ct);
    ck_assert_msg(ci >= 0.999 && ct >= 0.999, "per-row cosine %.6f / %.6f < 0.999", ci, ct);
    ck_assert_msg(ei <= 1.5 * ac_img, "image: relative error %.3g > 1.5 x autocast's %.3g", ei, ac_img);
    ck_assert_msg(et <= 1.5 * ac_txt, "text: relative error %.3g > 1.5 x autocast's %.3g", et, ac_txt);
    /* BF16 did happen (the features moved off F32) */
    ck_assert_double_gt(ei, 1e-5);
    ck_assert_double_gt(et, 1e-5);
    /* back to F32: bit for bit the F32 features */
    ck_assert_int_eq(clip_model_set_precision(m, NN_PRECISION_F32, &err), 0);
    feats again = encode(m, &pix, &tok);
    ck_assert_int_eq(memcmp(again.img, f32.img, sizeof(float) * BI * E), 0);
    ck_assert_int_eq(memcmp(again.txt, f32.txt, sizeof(float) * BT * E), 0);
    path_feats[portable] = bf;
    free(f32.img), free(f32.txt), free(again.img), free(again.txt);
    clip_model_free(m);
    nn_backend_destroy(be);
  }
  /* oneDNN and portable: the same products, summed in another order; the order flips the BF16
   * rounding of some later activations, so the two differ by BF16 noise, less than BF16 differs
   * from F32 (measured: 1.9e-3 on the image features). */
  ck_assert_double_le(rel_err(path_feats[0].img, path_feats[1].img, (size_t)BI * E), ac_img);
  ck_assert_double_le(rel_err(path_feats[0].txt, path_feats[1].txt, (size_t)BT * E), ac_txt);
  for (int i = 0; i < 2; i++) free(path_feats[i].img), free(path_feats[i].txt);
  npy_free(&pix), npy_free(&tok), npy_free(&img_ref), npy_free(&txt_ref);
  npy_free(&img_ac), npy_free(&txt_ac);
}
END_TEST

/* 100 TaCA steps (adapters in every block, projector hidden 256, AdamW as taca-train's defaults:
 * lr 2e-4, wd 0.01; batch 8 of 32 fixed images) in precision p; losses [100]. Targets: a fixed
 * random map of the frozen tower's own F32 image features (so there is something to learn), text
 * targets the same plus noise. Measured: loss 30.55 -> 6.67 in both; the largest gap 0.27% (step
 * 1). At lr 5e-4 the runs part after ~80 steps of memorising 32 images (8.6% at step 98), where
 * two F32 runs that differ only in summation order stay within 1e-5. */
#define TRAIN_STEPS 100
static void train_run(nn_precision p, double *losses) {
  nn_backend *be = make(0);
  clip_model *m = load_model(be);
  taca_error err = {{0}};
  const int N = 32, B = 8, S = m->cfg.image_size, E = m->cfg.embed_dim, EO = 48;
  const size_t per = (size_t)3 * S * S;
  float *pix = malloc(sizeof(float) * per * N), *feat = malloc(sizeof(float) * N * E);
  float *old_img = malloc(sizeof(float) * N * EO), *old_txt = malloc(sizeof(float) * N * EO);
  float *map = rnd((size_t)E * EO, 21), *noise = rnd((size_t)N * EO, 22), *g = rnd(per * N, 23);
  for (size_t i = 0; i < per * N; i++) pix[i] = g[i];
  ck_assert_int_eq(clip_encode_image(m, pix, N, feat, &err), 0); /* F32: the same targets for both */
  for (int n = 0; n < N; n++)
    for (int j = 0; j < EO; j++) {
      double acc = 0;
      for (int k = 0; k < E; k++) acc += feat[(size_t)n * E + k] * map[(size_t)k * EO + j];
      old_img[(size_t)n * EO + j] = (float)(acc / sqrt(E));
      old_txt[(size_t)n * EO + j] = old_img[(size_t)n * EO + j] + 0.3f * noise[(size_t)n * EO + j];
    }
  ck_assert_msg(clip_model_set_precision(m, p, &err) == 0, "%s", err.msg);
  taca_param_config pc;
  taca_param_config_default(&pc, &m->cfg, EO);
  pc.proj_hidden = 256;
  taca_params P;
  ck_assert_msg(taca_params_create(&P, &pc, be, 7, &err) == 0, "%s", err.msg);
  taca_model *tm = taca_model_create(m, &P, B, 0, &err);
  ck_assert_msg(tm, "%s", err.msg);
  const taca_adamw_config opt = {2e-4, 0.9, 0.999, 1e-8, 0.01}; /* taca-train's defaults */
  const taca_loss_config lc = {taca_loss_scale(logf(100.f)), 1.f, 2.f};
  for (int s = 0; s < TRAIN_STEPS; s++) {
    const int b0 = (s % (N / B)) * B;
    taca_loss_terms terms;
    ck_assert_msg(taca_step_forward_backward(tm, &P, pix + per * b0, old_img + (size_t)b0 * EO,
                                             old_txt + (size_t)b0 * EO, B, &lc, &terms, &err) == 0,
                  "%s", err.msg);
    losses[s] = terms.loss;
    taca_params_adamw(&P, &opt);
  }
  taca_model_free(tm);
  taca_params_free(&P);
  clip_model_free(m);
  nn_backend_destroy(be);
  free(pix), free(feat), free(old_img), free(old_txt), free(map), free(noise), free(g);
}

START_TEST(taca_train_bf16) {
  double f32[TRAIN_STEPS], bf16[TRAIN_STEPS];
  train_run(NN_PRECISION_F32, f32);
  train_run(NN_PRECISION_BF16, bf16);
  double worst = 0;
  int worst_at = 0, differ = 0;
  for (int s = 0; s < TRAIN_STEPS; s++) {
    double e = fabs(bf16[s] - f32[s]) / fabs(f32[s]);
    if (e > worst) worst = e, worst_at = s;
    differ |= bf16[s] != f32[s];
  }
  printf("TaCA 100 steps: loss %.4f -> %.4f (F32), %.4f -> %.4f (BF16); largest relative gap %.3g "
         "at step %d\n", f32[0], f32[TRAIN_STEPS - 1], bf16[0], bf16[TRAIN_STEPS - 1], worst, worst_at);
  ck_assert_msg(differ, "the BF16 run computed exactly the F32 losses: BF16 was not used");
  ck_assert_msg(worst <= 0.01, "BF16 loss %.6g vs F32 %.6g at step %d: %.3g > 1%%", bf16[worst_at],
                f32[worst_at], worst_at, worst);
  /* it trains: the last epoch's mean loss is well below the first's */
  double first = 0, last = 0;
  for (int s = 0; s < 4; s++) first += f32[s], last += f32[TRAIN_STEPS - 4 + s];
  ck_assert_msg(last < 0.7 * first, "F32 training did not learn (%.4f -> %.4f)", first / 4, last / 4);
}
END_TEST

START_TEST(precision_names) {
  nn_precision p;
  taca_error err = {{0}};
  ck_assert_int_eq(nn_precision_parse("bf16", &p, &err), 0);
  ck_assert_int_eq(p, NN_PRECISION_BF16);
  ck_assert_int_eq(nn_precision_parse("f32", &p, &err), 0);
  ck_assert_int_eq(p, NN_PRECISION_F32);
  ck_assert_int_ne(nn_precision_parse("fp16", &p, &err), 0);
  ck_assert_msg(strstr(err.msg, "'fp16'") && strstr(err.msg, "f32 or bf16"), "%s", err.msg);
  ck_assert_str_eq(nn_precision_name(NN_PRECISION_BF16), "bf16");
  /* a backend without the optional slots refuses bf16 with a reason */
  nn_backend *be = make(0);
  nn_backend copy = *be;
  copy.bf16_register = NULL;
  copy.name = "test";
  ck_assert_int_ne(nn_backend_check_precision(&copy, NN_PRECISION_BF16, &err), 0);
  ck_assert_msg(strstr(err.msg, "test backend"), "%s", err.msg);
  ck_assert_int_eq(nn_backend_check_precision(&copy, NN_PRECISION_F32, &err), 0);
  printf("BF16 GEMMs here: %s\n", nn_backend_cpu_bf16_impl());
  nn_backend_destroy(be);
}
END_TEST

int main(void) {
  Suite *s = suite_create("bf16");
  TCase *tc = tcase_create("bf16");
  tcase_set_timeout(tc, 300);
  tcase_add_test(tc, ops_onednn);
  tcase_add_test(tc, ops_portable);
  tcase_add_test(tc, clip_vs_autocast);
  tcase_add_test(tc, taca_train_bf16);
  tcase_add_test(tc, precision_names);
  suite_add_tcase(s, tc);
  SRunner *sr = srunner_create(s);
  srunner_run_all(sr, CK_NORMAL);
  int failed = srunner_ntests_failed(sr);
  srunner_free(sr);
  return failed ? 1 : 0;
}
