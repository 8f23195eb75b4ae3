/* test_encoder.c: methods/encoder.h, the one encoder behind every --model: a plain CLIP model, an
 * adapted one from its sources (NEW + TaCA checkpoint + OLD), and the same exported with
 * taca_export_write and opened again (fixtures of tests/fixtures/gen_export.py).
 *   - export and sources give bit-identical image and text features, for adapters and LoRA;
 *   - both match the PyTorch reference: max |C - torch| <= 1e-4 * max |torch|;
 *   - text features of an adapted model are OLD's, bit for bit;
 *   - dims, preprocessing, provenance (kinds, hashes, the space = OLD's weights hash);
 *   - a NaN in the checkpoint is refused at embed time with the model's name; a text-only
 *     request on a vision-only model fails clearly. */
#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/file_hash.h"
#include "base/npy.h"
#include "methods/encoder.h"
#include "methods/taca_adapted.h"
#include "methods/taca_export.h"

#define FIX TACA_FIXTURES_DIR
#define NEW FIX "/taca/tower_gelu.safetensors"
#define NEW_ARCH FIX "/taca/tower_gelu.json"
#define OLD FIX "/clip/hf_gelu_f16"

static nn_backend *be;
static char tmpdir[256];

static void setup(void) {
  be = nn_backend_cpu_create(1);
  snprintf(tmpdir, sizeof tmpdir, "/tmp/test_encoder.XXXXXX");
  ck_assert_ptr_nonnull(mkdtemp(tmpdir));
}

static void teardown(void) {
  char cmd[512];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
  ck_assert_int_eq(system(cmd), 0);
  nn_backend_destroy(be);
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

static void load_npy(const char *path, npy_array *a) {
  taca_error err = {{0}};
  ck_assert_msg(npy_load(path, a, &err) == 0, "%s", err.msg);
}

/* Exports NEW + CKPT + OLD into tmpdir/NAME and returns the directory. */
static void export_to(const char *ckpt, const char *name, char *dir, size_t cap) {
  taca_error err = {{0}};
  snprintf(dir, cap, "%s/%s", tmpdir, name);
  taca_adapted *a = taca_adapted_open_sources(NEW, NEW_ARCH, ckpt, OLD, NULL, 16, 8.0f, be, 4, &err);
  ck_assert_msg(a != NULL, "%s", err.msg);
  ck_assert_msg(taca_export_write(a, dir, &err) == 0, "%s", err.msg);
  taca_adapted_free(a);
}

static void check_case(const char *kind) {
  char ckpt[512], ref_path[512], dir[512];
  snprintf(ckpt, sizeof ckpt, FIX "/export/%s.safetensors", kind);
  snprintf(ref_path, sizeof ref_path, FIX "/export/%s_features.npy", kind);
  export_to(ckpt, kind, dir, sizeof dir);
  npy_array pix = {0}, ref = {0}, tok = {0};
  load_npy(FIX "/export/pixels.npy", &pix);
  load_npy(ref_path, &ref);
  load_npy(OLD "/tokens.npy", &tok);
  const int n = (int)pix.shape[0], nt = (int)tok.shape[0];
  int32_t *ids = malloc(sizeof *ids * tok.numel);
  for (size_t i = 0; i < tok.numel; i++)
    ids[i] = tok.dtype == TACA_DT_I64 ? (int32_t)((int64_t *)tok.data)[i] : ((int32_t *)tok.data)[i];

  taca_error err = {{0}};
  taca_encoder *src = encoder_open_adapted(NEW, NEW_ARCH, ckpt, OLD, NULL, 16, 8.0f, be, 2, &err);
  ck_assert_msg(src != NULL, "%s", err.msg);
  taca_encoder *exp = encoder_open(dir, NULL, be, 2, &err);
  ck_assert_msg(exp != NULL, "%s", err.msg);
  taca_encoder *old = encoder_open(OLD, NULL, be, 2, &err);
  ck_assert_msg(old != NULL, "%s", err.msg);
  ck_assert_int_eq(encoder_get_kind(exp), ENCODER_ADAPTED);
  ck_assert_int_eq(encoder_get_kind(old), ENCODER_CLIP);
  ck_assert_int_eq(encoder_image_dim(exp), 16);
  ck_assert_int_eq(encoder_text_dim(exp), 16);
  ck_assert_int_eq(encoder_context_len(exp), 77);
  encoder_preprocess pp;
  encoder_get_preprocess(exp, &pp);
  ck_assert_int_eq(pp.image_size, 16);
  ck_assert_str_eq(pp.resize, ENCODER_RESIZE_CLIP);
  ck_assert_float_eq(pp.mean[0], 0.48145466f);
  ck_assert_float_eq(encoder_logit_scale(exp), encoder_logit_scale(old));

  float *a = malloc(sizeof(float) * n * 16), *b = malloc(sizeof(float) * n * 16);
  float *ta = malloc(sizeof(float) * nt * 16), *tb = malloc(sizeof(float) * nt * 16);
  /* n = 5 rows in chunks of 2: the same chunks on both sides */
  ck_assert_msg(encoder_embed_images(src, pix.data, n, a, &err) == 0, "%s", err.msg);
  ck_assert_msg(encoder_embed_images(exp, pix.data, n, b, &err) == 0, "%s", err.msg);
  ck_assert_msg(memcmp(a, b, sizeof(float) * n * 16) == 0, "%s: export and sources differ", kind);
  double e = rel_err(b, ref.data, (size_t)n * 16);
  ck_assert_msg(e <= 1e-4, "%s: C vs PyTorch %.3g", kind, e);
  ck_assert_msg(encoder_embed_texts(exp, ids, nt, ta, &err) == 0, "%s", err.msg);
  ck_assert_msg(encoder_embed_texts(old, ids, nt, tb, &err) == 0, "%s", err.msg);
  ck_assert_msg(memcmp(ta, tb, sizeof(float) * nt * 16) == 0, "%s: text features are not OLD's", kind);

  /* provenance: recorded by the export, computed for the sources, the same values */
  const encoder_provenance *pe = encoder_provenance_get(exp, &err), *ps = encoder_provenance_get(src, &err),
                           *po = encoder_provenance_get(old, &err);
  ck_assert_msg(pe && ps && po, "%s", err.msg);
  char h_new[33], h_old[33], h_ck[33], h_exp[33], w[1024];
  ck_assert(taca_file_xxh3(NEW, h_new, &err) == 0 && taca_file_xxh3(OLD "/model.safetensors", h_old, &err) == 0 &&
            taca_file_xxh3(ckpt, h_ck, &err) == 0);
  snprintf(w, sizeof w, "%s/model.safetensors", dir);
  ck_assert(taca_file_xxh3(w, h_exp, &err) == 0);
  ck_assert_str_eq(pe->kind_name, "adapted");
  ck_assert_str_eq(po->kind_name, "clip");
  ck_assert_str_eq(pe->new_xxh, h_new);
  ck_assert_str_eq(pe->old_xxh, h_old);
  ck_assert_str_eq(pe->ckpt_xxh, h_ck);
  ck_assert_str_eq(pe->weights_xxh, h_exp);
  ck_assert_str_eq(ps->new_xxh, h_new);
  ck_assert_str_eq(ps->ckpt_xxh, h_ck);
  ck_assert_str_eq(pe->space, po->space); /* the old space */
  ck_assert_str_eq(po->space, h_old);
  ck_assert_str_eq(pe->peft, ps->peft);
  ck_assert_ptr_nonnull(strstr(pe->peft, kind));

  free(a), free(b), free(ta), free(tb), free(ids);
  npy_free(&pix), npy_free(&ref), npy_free(&tok);
  encoder_close(src), encoder_close(exp), encoder_close(old);
}

START_TEST(test_adapter) { check_case("adapter"); }
END_TEST

START_TEST(test_lora) { check_case("lora"); }
END_TEST

/* A checkpoint with a NaN projector bias: loads, but its features are refused naming the model. */
START_TEST(test_non_finite) {
  taca_error err = {{0}};
  st_file f;
  ck_assert(st_open(&f, FIX "/export/adapter.safetensors", &err) == 0);
  st_writer *w = st_writer_new();
  float *copies[64];
  int nc = 0;
  for (int i = 0; i < f.n; i++) {
    const st_tensor *t = &f.tensors[i];
    float *c = malloc(sizeof(float) * (t->numel ? t->numel : 1));
    ck_assert(st_to_f32(t, c, &err) == 0);
    if (!strcmp(t->name, "projector.fc2.bias")) c[3] = NAN;
    copies[nc++] = c;
    ck_assert(st_writer_add(w, t->name, TACA_DT_F32, t->ndim, t->shape, c, &err) == 0);
  }
  char path[512];
  snprintf(path, sizeof path, "%s/nan.safetensors", tmpdir);
  ck_assert_msg(st_writer_save(w, path, &err) == 0, "%s", err.msg);
  st_writer_free(w);
  st_close(&f);
  for (int i = 0; i < nc; i++) free(copies[i]);
  taca_encoder *e = encoder_open_adapted(NEW, NEW_ARCH, path, NULL, NULL, 0, 8.0f, be, 4, &err);
  ck_assert_msg(e != NULL, "%s", err.msg);
  ck_assert_int_eq(encoder_text_dim(e), 0);
  npy_array pix = {0};
  load_npy(FIX "/export/pixels.npy", &pix);
  float out[5 * 16];
  ck_assert_int_eq(encoder_embed_images(e, pix.data, 5, out, &err), -1);
  ck_assert_msg(strstr(err.msg, NEW) && strstr(err.msg, "not finite"), "%s", err.msg);
  int32_t tok[77] = {49406, 49407};
  ck_assert_int_eq(encoder_embed_texts(e, tok, 1, out, &err), -1);
  ck_assert_msg(strstr(err.msg, "no text tower"), "%s", err.msg);
  npy_free(&pix);
  encoder_close(e);
}
END_TEST

/* Errors name the mismatch: a checkpoint for another tower; --arch with an export. */
START_TEST(test_errors) {
  taca_error err = {{0}};
  ck_assert_ptr_null(encoder_open_adapted(OLD, NULL, FIX "/export/adapter.safetensors", NULL, NULL, 0, 8.0f, be, 2, &err));
  ck_assert_msg(strstr(err.msg, "projector takes 20-d input"), "%s", err.msg);
  ck_assert_ptr_null(encoder_open_adapted(NEW, NEW_ARCH, FIX "/export/adapter.safetensors", NULL, NULL, 32, 8.0f, be, 2, &err));
  ck_assert_msg(strstr(err.msg, "another old model"), "%s", err.msg);
  char dir[512];
  export_to(FIX "/export/lora.safetensors", "x", dir, sizeof dir);
  ck_assert_ptr_null(encoder_open(dir, "ViT-B-16", be, 2, &err));
  ck_assert_msg(strstr(err.msg, "drop --arch"), "%s", err.msg);
}
END_TEST

int main(void) {
  Suite *s = suite_create("encoder");
  TCase *tc = tcase_create("encoder");
  tcase_add_checked_fixture(tc, setup, teardown);
  tcase_add_test(tc, test_adapter);
  tcase_add_test(tc, test_lora);
  tcase_add_test(tc, test_non_finite);
  tcase_add_test(tc, test_errors);
  suite_add_tcase(s, tc);
  SRunner *sr = srunner_create(s);
  srunner_run_all(sr, CK_NORMAL);
  int failed = srunner_ntests_failed(sr);
  srunner_free(sr);
  return failed ? 1 : 0;
}
