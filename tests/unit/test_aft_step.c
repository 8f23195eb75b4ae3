/* test_aft_step.c: whole AFT training steps (methods/aft_model.c + methods/aft_prior.c +
 * nn/cross_entropy.c) against PyTorch (tests/fixtures/gen_aft_step.py -> tests/fixtures/aft/
 * step.safetensors): three steps of the downstream ViT (the tiny CLIP vision tower of
 * tests/fixtures/clip_train/init) with a classifier under the aft, kd and stl methods, and of the
 * linear downstream model under aft: each step's CE and transfer term, the step-0 gradient of every
 * tensor (tower, classifier, s or the KD map), and the values after three updates (the model group
 * with AdamW, the prior group with Adam at its own learning rate). Also the errors of the pieces.
 *
 * Tolerances: CE and term       |C - torch| <= 1e-5 * |torch|
 *             gradients         max |C - torch| <= 1e-4 * max |torch| per tensor
 *             after 3 updates   max |C - torch| <= 1e-4 * max |torch| per tensor (AdamW's early steps
 *                               divide by sqrt(v) ~ |g| and amplify rounding; see test_clip_train.c)
 *             k_proj.bias       analytically zero gradient (softmax ignores a per-query constant): the
 *                               C gradient is checked ~0; Adam moves it by up to lr per step on float
 *                               noise (lr g / (|g| + eps)), differently in C and torch, so its values
 *                               after 3 steps are only checked within 2 * 3 * lr = 6e-3 */
#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nn/cross_entropy.h"
#include "base/safetensors.h"
#include "methods/aft_model.h"
#include "methods/aft_prior.h"

#define FIX TACA_FIXTURES_DIR "/"
#define B 6
#define C 5
#define DP 10

static nn_backend *be;
static st_file ref;

static void setup(void) {
  taca_error err = {{0}};
  be = nn_backend_cpu_create(0);
  ck_assert_msg(st_open(&ref, FIX "aft/step.safetensors", &err) == 0, "%s", err.msg);
}
static void teardown(void) {
  st_close(&ref);
  nn_backend_destroy(be);
}

static const float *tensor(const char *name, size_t numel) {
  const st_tensor *t = st_find(&ref, name);
  ck_assert_msg(t != NULL, "fixture tensor '%s' missing", name);
  ck_assert_msg(numel == 0 || t->numel == numel, "'%s': %zu elements, expected %zu", name, t->numel, numel);
  const float *p = st_f32_view(t);
  ck_assert_msg(p != NULL, "'%s' is not aligned F32", name);
  return p;
}

static int has(const char *name) { return st_find(&ref, name) != NULL; }

static double rel_err(const float *a, const float *b, size_t n) {
  double md = 0, mb = 0;
  for (size_t i = 0; i < n; i++) {
    md = fmax(md, fabs((double)a[i] - b[i]));
    mb = fmax(mb, fabs(b[i]));
  }
  return md / (mb > 0 ? mb : 1);
}

typedef struct tensor_ref {
  char name[160];
  float *p, *g; /* in the model's or the prior's buffers (host backend) */
  size_t numel;
} tensor_ref;

/* Every trainable tensor of model + prior, named as the fixture names them. */
static int list_tensors(aft_model *am, aft_prior *pr, tensor_ref *out) {
  int k = 0;
  if (am->tower) {
    for (int i = 0; i < am->tower->n_tensors; i++) {
      const clip_train_tensor_info *t = &am->tower->info[i];
      snprintf(out[k].name, sizeof out[k].name, "%s", t->name);
      out[k].p = am->tower->flat_p + t->offset, out[k].g = am->tower->flat_g + t->offset, out[k].numel = t->numel;
      k++;
    }
  } else {
    tensor_ref fw = {"features.weight", am->p + am->off_fw, am->g + am->off_fw, (size_t)am->feat_dim * am->in_dim};
    tensor_ref fb = {"features.bias", am->p + am->off_fb, am->g + am->off_fb, (size_t)am->feat_dim};
    out[k++] = fw, out[k++] = fb;
  }
  tensor_ref cw = {"classifier.weight", am->p + am->off_cw, am->g + am->off_cw, (size_t)C * am->feat_dim};
  tensor_ref cb = {"classifier.bias", am->p + am->off_cb, am->g + am->off_cb, C};
  out[k++] = cw, out[k++] = cb;
  if (pr->method == AFT_METHOD_AFT) {
    tensor_ref s = {"aft.s", pr->p, pr->g, DP};
    out[k++] = s;
  } else if (pr->method == AFT_METHOD_KD) {
    const size_t nw = (size_t)DP * am->feat_dim;
    tensor_ref w = {"kd.proj.weight", pr->p, pr->g, nw}, b = {"kd.proj.bias", pr->p + nw, pr->g + nw, DP};
    out[k++] = w, out[k++] = b;
  }
  return k;
}

static void run_case(const char *cs, const char *arch, const char *init, aft_method method) {
  taca_error err = {{0}};
  aft_model *am = aft_model_create(arch, 16, C, be, B, 1, &err);
  ck_assert_msg(am, "%s", err.msg);
  if (init) ck_assert_msg(aft_model_load_tower(am, init, NULL, &err) == 0, "%s", err.msg);
  aft_prior pr;
  ck_assert_msg(aft_prior_init(&pr, method, am->feat_dim, DP, B, 1, &err) == 0, "%s", err.msg);
  tensor_ref T[128];
  const int nt = list_tensors(am, &pr, T);
  char name[256];
  for (int i = 0; i < nt; i++) { /* the fixture's starting values of the non-tower tensors */
    snprintf(name, sizeof name, "%s.init.%.160s", cs, T[i].name);
    if (has(name)) memcpy(T[i].p, tensor(name, T[i].numel), sizeof(float) * T[i].numel);
  }
  const float *pixels = tensor("pixels", (size_t)B * 3 * 16 * 16), *P = tensor("P", (size_t)B * DP);
  const st_tensor *lt = st_find(&ref, "labels");
  ck_assert(lt && lt->dtype == TACA_DT_I32 && lt->numel == B);
  int labels[B];
  memcpy(labels, lt->data, sizeof labels);
  const double beta = method == AFT_METHOD_STL ? 0 : 10;
  snprintf(name, sizeof name, "%s.ce", cs);
  const float *ce_ref = tensor(name, 3);
  snprintf(name, sizeof name, "%s.term", cs);
  const float *term_ref = tensor(name, 3);
  float F[B * 24], logits[B * C], dlogits[B * C], dF[B * 24];
  double worst_g = 0, worst_p = 0;
  for (int step = 0; step < 3; step++) {
    aft_model_zero_grad(am);
    aft_prior_zero_grad(&pr);
    ck_assert_msg(aft_model_forward(am, pixels, B, F, logits, &err) == 0, "%s", err.msg);
    ce_result ce;
    ck_assert_msg(cross_entropy(logits, labels, B, C, 1.0 / B, dlogits, &ce, &err) == 0, "%s", err.msg);
    double term;
    ck_assert_msg(aft_prior_loss(&pr, F, P, B, beta, &term, dF, &err) == 0, "%s", err.msg);
    ck_assert_msg(aft_model_backward(am, method == AFT_METHOD_STL ? NULL : dF, dlogits, &err) == 0, "%s", err.msg);
    const double ce_mean = ce.loss_sum / B;
    ck_assert_msg(fabs(ce_mean - ce_ref[step]) <= 1e-5 * fabs(ce_ref[step]), "%s step %d: CE %.8g, torch %.8g", cs,
                  step, ce_mean, ce_ref[step]);
    ck_assert_msg(fabs(term - term_ref[step]) <= 1e-5 * fabs(term_ref[step]) + 1e-12,
                  "%s step %d: term %.8g, torch %.8g", cs, step, term, term_ref[step]);
    if (step == 0) {
      for (int i = 0; i < nt; i++) {
        snprintf(name, sizeof name, "%s.grad.%.160s", cs, T[i].name);
        if (!has(name)) continue;
        const float *g = tensor(name, T[i].numel);
        if (strstr(T[i].name, "k_proj.bias")) {
          for (size_t j = 0; j < T[i].numel; j++) ck_assert_msg(fabsf(T[i].g[j]) < 1e-6f, "%s not ~0", name);
          continue;
        }
        double e = rel_err(T[i].g, g, T[i].numel);
        worst_g = fmax(worst_g, e);
        ck_assert_msg(e <= 1e-4, "%s: relative error %.3g", name, e);
      }
    }
    aft_model_update(am, 1e-3, 0.01);
    aft_prior_update(&pr, 1e-2);
  }
  int checked = 0;
  for (int i = 0; i < nt; i++) {
    snprintf(name, sizeof name, "%s.final.%.160s", cs, T[i].name);
    if (!has(name)) continue;
    const float *v = tensor(name, T[i].numel);
    checked++;
    if (strstr(T[i].name, "k_proj.bias")) {
      for (size_t j = 0; j < T[i].numel; j++) ck_assert_msg(fabsf(T[i].p[j] - v[j]) <= 6e-3f, "%s differs", name);
      continue;
    }
    double e = rel_err(T[i].p, v, T[i].numel);
    worst_p = fmax(worst_p, e);
    ck_assert_msg(e <= 1e-4, "%s: relative error %.3g after 3 updates", name, e);
  }
  ck_assert_int_gt(checked, 1);
  printf("%s: worst gradient error %.2g, worst parameter error after 3 updates %.2g (%d tensors)\n", cs, worst_g,
         worst_p, checked);
  aft_prior_free(&pr);
  aft_model_free(am);
}

START_TEST(vit_aft) { run_case("vit_aft", FIX "clip_train/init/config.json", FIX "clip_train/init", AFT_METHOD_AFT); }
END_TEST
START_TEST(vit_kd) { run_case("vit_kd", FIX "clip_train/init/config.json", FIX "clip_train/init", AFT_METHOD_KD); }
END_TEST
START_TEST(vit_stl) { run_case("vit_stl", FIX "clip_train/init/config.json", FIX "clip_train/init", AFT_METHOD_STL); }
END_TEST
START_TEST(linear_aft) { run_case("lin_aft", "linear:8", NULL, AFT_METHOD_AFT); }
END_TEST

START_TEST(errors) {
  taca_error err = {{0}};
  ck_assert_ptr_null(aft_model_create("linear:0", 16, C, be, B, 1, &err));
  ck_assert_msg(strstr(err.msg, "linear:D"), "%s", err.msg);
  ck_assert_ptr_null(aft_model_create("ViT-B-16", 16, C, be, B, 1, &err));
  ck_assert_msg(strstr(err.msg, "224 px") && strstr(err.msg, "16 px"), "%s", err.msg);
  ck_assert_ptr_null(aft_model_create("no-such-arch", 16, C, be, B, 1, &err));
  aft_model *am = aft_model_create("linear", 16, C, be, B, 1, &err);
  ck_assert_msg(am, "%s", err.msg);
  ck_assert_int_eq(am->feat_dim, 64);
  ck_assert_int_ne(aft_model_load_tower(am, FIX "clip_train/init", NULL, &err), 0);
  ck_assert_msg(strstr(err.msg, "ViT"), "%s", err.msg);
  float px[3 * 16 * 16] = {0};
  ck_assert_int_ne(aft_model_forward(am, px, B + 1, NULL, NULL, &err), 0);
  aft_model_free(am);
  /* cross entropy: a label outside the classes, a non-finite logit */
  float logits[2 * 3] = {1, 2, 3, 0, 0, NAN};
  int labels[2] = {0, 3};
  ce_result r;
  ck_assert_int_ne(cross_entropy(logits, labels, 2, 3, 1.0, NULL, &r, &err), 0);
  ck_assert_msg(strstr(err.msg, "label 3"), "%s", err.msg);
  labels[1] = 1;
  ck_assert_int_ne(cross_entropy(logits, labels, 2, 3, 1.0, NULL, &r, &err), 0);
  ck_assert_msg(strstr(err.msg, "non-finite"), "%s", err.msg);
  ck_assert_int_eq(cross_entropy(logits, labels, 1, 3, 1.0, NULL, &r, &err), 0);
  ck_assert_int_eq(r.correct, 0);
  ck_assert(fabs(r.loss_sum - (log(exp(1) + exp(2) + exp(3)) - 1)) < 1e-12);
  /* prior: oversized batch */
  aft_prior pr;
  ck_assert_int_eq(aft_prior_init(&pr, AFT_METHOD_AFT, 4, 3, 2, 1, &err), 0);
  float F[3 * 4] = {0}, P[3 * 3] = {0}, dF[3 * 4];
  double v;
  ck_assert_int_ne(aft_prior_loss(&pr, F, P, 3, 10, &v, dF, &err), 0);
  ck_assert_msg(strstr(err.msg, "batch 3"), "%s", err.msg);
  aft_prior_free(&pr);
  aft_method m;
  ck_assert_int_eq(aft_method_parse("kd", 2, &m), 0);
  ck_assert_int_eq(m, AFT_METHOD_KD);
  ck_assert_int_ne(aft_method_parse("kdx", 3, &m), 0);
}
END_TEST

int main(void) {
  Suite *s = suite_create("aft_step");
  TCase *tc = tcase_create("steps");
  tcase_add_checked_fixture(tc, setup, teardown);
  tcase_add_test(tc, vit_aft);
  tcase_add_test(tc, vit_kd);
  tcase_add_test(tc, vit_stl);
  tcase_add_test(tc, linear_aft);
  tcase_add_test(tc, errors);
  suite_add_tcase(s, tc);
  SRunner *sr = srunner_create(s);
  srunner_run_all(sr, CK_NORMAL);
  int failed = srunner_ntests_failed(sr);
  srunner_free(sr);
  return failed ? 1 : 0;
}
