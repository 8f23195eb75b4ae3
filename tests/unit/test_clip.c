/* test_clip.c: the C CLIP forward passes against PyTorch outputs (tests/fixtures/gen_clip.py),
 * both checkpoint layouts, F32/F16/BF16 weights, QuickGELU and GELU; and clear errors for
 * models that do not match their architecture.
 * Tolerance (DESIGN.md "Numerics"): max |C - torch| <= 1e-4 * max |torch|. */
#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nn/clip.h"
#include "base/npy.h"

static nn_backend *be;

static void setup(void) { be = nn_backend_cpu_create(0); }
static void teardown(void) { nn_backend_destroy(be); }

static void fixture(char *buf, size_t n, const char *model, const char *file) {
  snprintf(buf, n, "%s/clip/%s/%s", TACA_FIXTURES_DIR, model, file);
}

/* Returns max |a - b| / max |b|. */
static double rel_err(const float *a, const float *b, size_t n) {
  double md = 0, mb = 0;
  for (size_t i = 0; i < n; i++) {
    double d = fabs((double)a[i] - b[i]);
    if (d > md) md = d;
    if (fabs(b[i]) > mb) mb = fabs(b[i]);
  }
  return md / (mb > 0 ? mb : 1);
}

static void check_model(const char *name, int open_clip) {
  char path[1024], arch[1024];
  taca_error err = {{0}};
  fixture(path, sizeof path, name, open_clip ? "model.safetensors" : "");
  if (!open_clip) path[strlen(path) - 1] = 0; /* the directory */
  fixture(arch, sizeof arch, name, "open_clip_config.json");
  clip_model *m = clip_model_load(path, open_clip ? arch : NULL, be, &err);
  ck_assert_msg(m, "load %s: %s", name, err.msg);

  npy_array pix, tok, ref_img, ref_txt;
  fixture(path, sizeof path, name, "pixels.npy");
  ck_assert_msg(npy_load(path, &pix, &err) == 0, "%s", err.msg);
  fixture(path, sizeof path, name, "tokens.npy");
  ck_assert_msg(npy_load(path, &tok, &err) == 0, "%s", err.msg);
  fixture(path, sizeof path, name, "image_features.npy");
  ck_assert_msg(npy_load(path, &ref_img, &err) == 0, "%s", err.msg);
  fixture(path, sizeof path, name, "text_features.npy");
  ck_assert_msg(npy_load(path, &ref_txt, &err) == 0, "%s", err.msg);

  int B = (int)pix.shape[0], E = m->cfg.embed_dim;
  ck_assert_int_eq(ref_img.shape[1], E);
  float *out = malloc(sizeof(float) * B * E);
  ck_assert_int_eq(clip_encode_image(m, pix.data, B, out, &err), 0);
  double e = rel_err(out, ref_img.data, (size_t)B * E);
  ck_assert_msg(e <= 1e-4, "%s image features: relative error %.3g > 1e-4", name, e);
  /* Batch-size independence: the last image alone gives the same row. */
  ck_assert_int_eq(clip_encode_image(m, (float *)pix.data + (size_t)(B - 1) * pix.numel / B, 1,
                                     out, &err), 0);
  e = rel_err(out, (float *)ref_img.data + (size_t)(B - 1) * E, E);
  ck_assert_msg(e <= 1e-4, "%s single image: relative error %.3g", name, e);
  free(out);

  int BT = (int)tok.shape[0];
  out = malloc(sizeof(float) * BT * E);
  ck_assert_int_eq(clip_encode_text(m, tok.data, BT, out, &err), 0);
  e = rel_err(out, ref_txt.data, (size_t)BT * E);
  ck_assert_msg(e <= 1e-4, "%s text features: relative error %.3g > 1e-4", name, e);
  free(out);

  npy_free(&pix);
  npy_free(&tok);
  npy_free(&ref_img);
  npy_free(&ref_txt);
  clip_model_free(m);
}

START_TEST(open_clip_quickgelu_f32) { check_model("oc_quickgelu_f32", 1); }
END_TEST

START_TEST(hf_gelu_f16) { check_model("hf_gelu_f16", 0); }
END_TEST

START_TEST(open_clip_gelu_bf16) { check_model("oc_gelu_bf16", 1); }
END_TEST

START_TEST(wrong_architecture_is_named) {
  char path[1024];
  taca_error err = {{0}};
  fixture(path, sizeof path, "oc_quickgelu_f32", "model.safetensors");
  clip_model *m = clip_model_load(path, "ViT-B-16", be, &err);
  ck_assert_ptr_null(m);
  ck_assert_msg(strstr(err.msg, "shape") && strstr(err.msg, "visual.conv1.weight"), "%s", err.msg);
  m = clip_model_load(path, NULL, be, &err);
  ck_assert_ptr_null(m);
  ck_assert_msg(strstr(err.msg, "--arch"), "%s", err.msg);
  m = clip_model_load(path, "ViT-Q-99", be, &err);
  ck_assert_ptr_null(m);
  ck_assert_msg(strstr(err.msg, "unknown architecture 'ViT-Q-99'"), "%s", err.msg);
  m = clip_model_load("/nonexistent/model", NULL, be, &err);
  ck_assert_ptr_null(m);
  ck_assert_msg(strstr(err.msg, "/nonexistent/model"), "%s", err.msg);
}
END_TEST

START_TEST(builtin_configs) {
  clip_config c;
  taca_error err;
  ck_assert_int_eq(clip_config_builtin(&c, "ViT-g-14", &err), 0);
  ck_assert_int_eq(c.vision.mlp, 6144);
  ck_assert_int_eq(c.vision.heads, 16);
  ck_assert_int_eq(c.vision.act, NN_ACT_GELU);
  ck_assert_int_eq(clip_config_builtin(&c, "ViT-bigG-14", &err), 0);
  ck_assert_int_eq(c.vision.mlp, 8192);
  ck_assert_int_eq(c.text.heads, 20);
  ck_assert_int_eq(clip_config_builtin(&c, "ViT-B-16-quickgelu", &err), 0);
  ck_assert_int_eq(c.vision.act, NN_ACT_QUICK_GELU);
  ck_assert_int_eq(c.patch_size, 16);
  /* open_clip ViT-B/16 visual tower: 86,192,640 parameters (incl. the 768x512 projection). */
  ck_assert_int_eq(clip_config_vision_params(&c), 86192640LL);
}
END_TEST

int main(void) {
  Suite *s = suite_create("clip");
  TCase *tc = tcase_create("forward");
  tcase_add_checked_fixture(tc, setup, teardown);
  tcase_set_timeout(tc, 120);
  tcase_add_test(tc, open_clip_quickgelu_f32);
  tcase_add_test(tc, hf_gelu_f16);
  tcase_add_test(tc, open_clip_gelu_bf16);
  tcase_add_test(tc, wrong_architecture_is_named);
  tcase_add_test(tc, builtin_configs);
  suite_add_tcase(s, tc);
  SRunner *sr = srunner_create(s);
  srunner_run_all(sr, CK_NORMAL);
  int failed = srunner_ntests_failed(sr);
  srunner_free(sr);
  return failed ? 1 : 0;
}
