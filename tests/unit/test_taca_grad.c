/* test_taca_grad.c: TaCA training against PyTorch autograd (tests/fixtures/gen_taca.py ->
 * tests/fixtures/taca/): the loss terms and dL/df of methods/taca_loss in every mode; the step-0 loss
 * terms and the gradient of every trainable tensor for adapters in all blocks, adapters in a block
 * range, and LoRA on q/v (with and without activation recomputation); the data-parallel split (two
 * ranks' halves of the batch, gradients summed = one-shot gradient); five AdamW steps (lr 1e-3,
 * wd 0.01, a new batch each step) with each step's losses and the final parameters; checkpoint
 * save/load round trips, resume, initialisation, and the errors for mismatched checkpoints.
 *
 * Tolerances (measured values in comments at each check):
 *   loss terms          |C - torch| <= 1e-5 * |torch|
 *   gradients           max |C - torch| <= 1e-4 * max |torch|, per tensor
 *   params after 5 steps max |C - torch| <= 1e-5 * max |torch|, per tensor */
#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "nn/clip.h"
#include "base/safetensors.h"
#include "methods/taca_loss.h"
#include "methods/taca_checkpoint.h"
#include "methods/taca_params.h"
#include "methods/taca_step.h"

#define FIX TACA_FIXTURES_DIR "/taca/"

static nn_backend *be;

static void setup(void) { be = nn_backend_cpu_create(0); }
static void teardown(void) { nn_backend_destroy(be); }

static const float *tensor(const st_file *f, const char *name, size_t numel) {
  const st_tensor *t = st_find(f, name);
  ck_assert_msg(t != NULL, "fixture tensor '%s' missing", name);
  ck_assert_msg(numel == 0 || t->numel == numel, "fixture tensor '%s': %zu elements, expected %zu",
                name, t->numel, numel);
  const float *p = st_f32_view(t);
  ck_assert_msg(p != NULL, "fixture tensor '%s' is not aligned F32", name);
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

static int meta_int(const st_file *f, const char *key) {
  const char *s = st_meta(f, key);
  ck_assert_msg(s != NULL, "fixture metadata '%s' missing", key);
  return atoi(s);
}

static float meta_float(const st_file *f, const char *key) {
  const char *s = st_meta(f, key);
  ck_assert_msg(s != NULL, "fixture metadata '%s' missing", key);
  return strtof(s, NULL);
}

/* A fixture case: the frozen tower, the reference file and the parameters loaded from CASE.init. */
typedef struct tcase_ctx {
  clip_model *m;
  st_file ref;
  taca_params P;
  taca_loss_config lc;
  int B, E_old, S, steps;
} tcase_ctx;

static void open_case(tcase_ctx *c, const char *tower, const char *name) {
  char path[1024], arch[1024];
  taca_error err = {{0}};
  snprintf(path, sizeof path, FIX "tower_%s.safetensors", tower);
  snprintf(arch, sizeof arch, FIX "tower_%s.json", tower);
  c->m = clip_model_load(path, arch, be, &err);
  ck_assert_msg(c->m, "%s", err.msg);
  snprintf(path, sizeof path, FIX "%s.ref.safetensors", name);
  ck_assert_msg(st_open(&c->ref, path, &err) == 0, "%s", err.msg);
  const st_file *r = &c->ref;
  c->E_old = meta_int(r, "e_old");
  taca_param_config pc;
  taca_param_config_default(&pc, &c->m->cfg, c->E_old);
  pc.proj_hidden = meta_int(r, "hidden");
  const char *peft = st_meta(r, "peft");
  pc.peft.kind = peft && !strcmp(peft, "lora") ? VIT_PEFT_LORA : VIT_PEFT_ADAPTER;
  pc.peft.bottleneck = pc.peft.lora_rank = meta_int(r, "k");
  pc.peft.lora_alpha = meta_float(r, "lora_alpha");
  ck_assert_int_eq(taca_parse_layer_range(st_meta(r, "blocks"), pc.layers, &pc.peft.first,
                                          &pc.peft.last, &err), 0);
  ck_assert_msg(taca_params_create(&c->P, &pc, be, 1, &err) == 0, "%s", err.msg);
  snprintf(path, sizeof path, FIX "%s.init.safetensors", name);
  ck_assert_msg(taca_params_load(&c->P, path, &err) == 0, "%s", err.msg);
  const st_tensor *px = st_find(r, "pixels");
  ck_assert_ptr_nonnull(px);
  c->steps = (int)px->shape[0];
  c->B = (int)px->shape[1];
  c->S = (int)px->shape[3];
  c->lc.scale = taca_loss_scale(*tensor(r, "logit_scale", 1));
  c->lc.w_contra = 1.0f;
  c->lc.w_distill = meta_float(r, "lambda");
}

static void close_case(tcase_ctx *c) {
  taca_params_free(&c->P);
  st_close(&c->ref);
  clip_model_free(c->m);
}

static const float *batch(const tcase_ctx *c, const char *what, int step) {
  size_t row = !strcmp(what, "pixels") ? (size_t)3 * c->S * c->S : (size_t)c->E_old;
  return tensor(&c->ref, what, 0) + (size_t)step * c->B * row;
}

static void check_terms(const taca_loss_terms *t, const float *ref, const char *what) {
  double e0 = fabs(t->loss - ref[0]) / fabs(ref[0]), e1 = fabs(t->contra - ref[1]) / fabs(ref[1]);
  double e2 = fabs(t->distill - ref[2]) / fabs(ref[2]);
  printf("  %-34s loss %.6f (torch %.6f) rel err %.1e / %.1e / %.1e\n", what, t->loss, ref[0], e0,
         e1, e2);
  ck_assert_msg(e0 <= 1e-5 && e1 <= 1e-5 && e2 <= 1e-5,
                "%s: loss terms (%.7g, %.7g, %.7g) vs torch (%.7g, %.7g, %.7g)", what, t->loss,
                t->contra, t->distill, ref[0], ref[1], ref[2]);
}

/* Compares every tensor of flat (a buffer laid out like P) with the fixture's PREFIX.NAME. */
static void check_tensors(const tcase_ctx *c, const float *flat, const char *prefix, double tol,
                          const char *what) {
  double worst = 0;
  const char *worst_name = "";
  for (int i = 0; i < c->P.n_tensors; i++) {
    const taca_tensor_info *t = &c->P.info[i];
    char name[96];
    snprintf(name, sizeof name, "%s%s", prefix, t->name);
    double e = rel_err(flat + t->offset, tensor(&c->ref, name, t->numel), t->numel);
    ck_assert_msg(e <= tol, "%s: %s relative error %.3g > %.1g", what, t->name, e, tol);
    if (e > worst) worst = e, worst_name = c->P.info[i].name;
  }
  printf("  %-34s %d tensors, worst rel err %.1e (%s)\n", what, c->P.n_tensors, worst, worst_name);
}

static void step0(const char *tower, const char *name, int recompute) {
  tcase_ctx c;
  open_case(&c, tower, name);
  taca_error err = {{0}};
  taca_model *tm = taca_model_create(c.m, &c.P, c.B, recompute, &err);
  ck_assert_msg(tm, "%s", err.msg);
  taca_loss_terms terms;
  ck_assert_msg(taca_step_forward_backward(tm, &c.P, batch(&c, "pixels", 0), batch(&c, "old_img", 0),
                                           batch(&c, "old_txt", 0), c.B, &c.lc, &terms, &err) == 0,
                "%s", err.msg);
  char what[96];
  snprintf(what, sizeof what, "%s%s step 0", name, recompute ? " (recompute)" : "");
  check_terms(&terms, tensor(&c.ref, "losses", 0), what);
  check_tensors(&c, c.P.flat_g, "grad.", 1e-4, what);
  taca_model_free(tm);
  close_case(&c);
}

/* Measured: loss terms <= 4e-7; gradients <= 3e-6 (adapter_all), 2e-6 (adapter_range), 3e-6 (LoRA). */
START_TEST(adapter_all_step0) { step0("quickgelu", "adapter_all", 0); }
END_TEST

START_TEST(adapter_all_recompute) { step0("quickgelu", "adapter_all", 1); }
END_TEST

START_TEST(adapter_range_step0) { step0("gelu", "adapter_range", 0); }
END_TEST

START_TEST(adapter_range_recompute) { step0("gelu", "adapter_range", 1); }
END_TEST

START_TEST(lora_step0) { step0("quickgelu", "lora_all", 0); }
END_TEST

START_TEST(lora_recompute) { step0("quickgelu", "lora_all", 1); }
END_TEST

/* Two "ranks" with half the batch each: gather f, each takes the loss gradient of its own rows,
 * backpropagates them, and the SUM of their gradients equals the one-shot gradient. */
START_TEST(split_rows_sum) {
  tcase_ctx c, c2;
  open_case(&c, "quickgelu", "adapter_all");
  open_case(&c2, "quickgelu", "adapter_all");
  taca_error err = {{0}};
  const int B = c.B, h = B / 2, E = c.E_old, pix = 3 * c.S * c.S;
  taca_model *one = taca_model_create(c.m, &c.P, B, 0, &err);
  taca_model *r0 = taca_model_create(c.m, &c.P, h, 0, &err);
  taca_model *r1 = taca_model_create(c2.m, &c2.P, B - h, 0, &err);
  ck_assert_msg(one && r0 && r1, "%s", err.msg);
  const float *px = batch(&c, "pixels", 0), *img = batch(&c, "old_img", 0);
  const float *txt = batch(&c, "old_txt", 0);
  taca_loss_terms t_one, t0, t1;
  ck_assert_int_eq(taca_step_forward_backward(one, &c.P, px, img, txt, B, &c.lc, &t_one, &err), 0);
  float *full = malloc(sizeof(float) * c.P.n);
  memcpy(full, c.P.flat_g, sizeof(float) * c.P.n);

  float *f = malloc(sizeof(float) * B * E), *df = malloc(sizeof(float) * B * E);
  taca_params_zero_grad(&c.P);
  taca_params_zero_grad(&c2.P);
  ck_assert_int_eq(taca_model_forward(r0, &c.P, px, h, f, &err), 0);
  ck_assert_int_eq(taca_model_forward(r1, &c2.P, px + (size_t)h * pix, B - h, f + (size_t)h * E, &err), 0);
  /* (all-gather of f) */
  ck_assert_int_eq(taca_loss(&c.lc, f, txt, img, B, E, 0, h, &t0, df, NULL, &err), 0);
  ck_assert_int_eq(taca_loss(&c.lc, f, txt, img, B, E, h, B, &t1, df + (size_t)h * E, NULL, &err), 0);
  ck_assert_int_eq(taca_model_backward(r0, &c.P, df, &err), 0);
  ck_assert_int_eq(taca_model_backward(r1, &c2.P, df + (size_t)h * E, &err), 0);
  /* Both ranks see the same global loss. */
  ck_assert(t0.loss == t1.loss && t0.contra == t1.contra && t0.distill == t1.distill);
  ck_assert_msg(fabs(t0.loss - t_one.loss) <= 1e-6 * fabs(t_one.loss), "%.9g vs %.9g", t0.loss,
                t_one.loss);
  /* (all-reduce SUM) */
  for (size_t i = 0; i < c.P.n; i++) c.P.flat_g[i] += c2.P.flat_g[i];
  double worst = 0;
  for (int i = 0; i < c.P.n_tensors; i++) {
    const taca_tensor_info *t = &c.P.info[i];
    double e = rel_err(c.P.flat_g + t->offset, full + t->offset, t->numel);
    ck_assert_msg(e <= 1e-5, "%s: split-rows gradient differs by %.3g", t->name, e);
    worst = e > worst ? e : worst;
  }
  printf("  split rows: summed gradients vs one-shot worst rel err %.1e\n", worst); /* ~3e-7 */
  check_tensors(&c, c.P.flat_g, "grad.", 1e-4, "split rows vs torch");
  free(f), free(df), free(full);
  taca_model_free(one), taca_model_free(r0), taca_model_free(r1);
  close_case(&c), close_case(&c2);
}
END_TEST

/* Five AdamW steps on five batches: each step's losses and the final parameters match torch; the
 * checkpoint and optimizer state round-trip, and resuming from them continues identically. */
START_TEST(adamw_five_steps) {
  tcase_ctx c;
  open_case(&c, "quickgelu", "adapter_all");
  ck_assert_int_eq(c.steps, 5);
  taca_error err = {{0}};
  taca_model *tm = taca_model_create(c.m, &c.P, c.B, 0, &err);
  ck_assert_msg(tm, "%s", err.msg);
  const taca_adamw_config opt = {1e-3, 0.9, 0.999, 1e-8, 0.01};
  const float *losses = tensor(&c.ref, "losses", 15);
  char ckpt[256], optim[256];
  snprintf(ckpt, sizeof ckpt, "/tmp/test_taca_grad.%d.params.safetensors", (int)getpid());
  snprintf(optim, sizeof optim, "/tmp/test_taca_grad.%d.optim.safetensors", (int)getpid());
  for (int s = 0; s < 5; s++) {
    taca_loss_terms terms;
    ck_assert_int_eq(taca_step_forward_backward(tm, &c.P, batch(&c, "pixels", s), batch(&c, "old_img", s),
                                                batch(&c, "old_txt", s), c.B, &c.lc, &terms, &err), 0);
    char what[32];
    snprintf(what, sizeof what, "adamw step %d", s);
    check_terms(&terms, losses + 3 * s, what); /* measured <= 1e-6 */
    if (s == 3) { /* checkpoint after 3 updates, before the 4th */
      ck_assert_msg(taca_params_save(&c.P, ckpt, NULL, &err) == 0, "%s", err.msg);
      ck_assert_msg(taca_optim_save(&c.P, optim, NULL, &err) == 0, "%s", err.msg);
    }
    taca_params_adamw(&c.P, &opt);
  }
  ck_assert_int_eq(c.P.step, 5);
  check_tensors(&c, c.P.flat_p, "final.", 1e-5, "params after 5 AdamW steps"); /* measured ~1e-7 */

  /* Resume: a fresh parameter set from the step-3 checkpoint redoes steps 3 and 4 identically. */
  tcase_ctx r;
  open_case(&r, "quickgelu", "adapter_all");
  ck_assert_msg(taca_params_load(&r.P, ckpt, &err) == 0, "%s", err.msg);
  ck_assert_msg(taca_optim_load(&r.P, optim, &err) == 0, "%s", err.msg);
  ck_assert_int_eq(r.P.step, 3);
  for (int s = 3; s < 5; s++) {
    taca_loss_terms terms;
    ck_assert_int_eq(taca_step_forward_backward(tm, &r.P, batch(&r, "pixels", s), batch(&r, "old_img", s),
                                                batch(&r, "old_txt", s), r.B, &r.lc, &terms, &err), 0);
    ck_assert_msg(fabs(terms.loss - losses[3 * s]) <= 1e-5 * fabs(losses[3 * s]), "resumed step %d", s);
    taca_params_adamw(&r.P, &opt);
  }
  for (size_t i = 0; i < c.P.n; i++) ck_assert_float_eq(r.P.flat_p[i], c.P.flat_p[i]);
  for (size_t i = 0; i < c.P.n; i++) ck_assert_float_eq(r.P.flat_m[i], c.P.flat_m[i]);
  /* The saved files carry DESIGN.md's names, shapes and the step. */
  st_file f;
  ck_assert_int_eq(st_open(&f, ckpt, &err), 0);
  const st_tensor *t = st_find(&f, "adapter.2.down.weight");
  ck_assert(t && t->ndim == 2 && t->shape[0] == 8 && t->shape[1] == 32 && t->dtype == TACA_DT_F32);
  t = st_find(&f, "projector.fc2.weight");
  ck_assert(t && t->shape[0] == 16 && t->shape[1] == 64);
  ck_assert_str_eq(st_meta(&f, "step"), "3");
  ck_assert_int_eq(f.n, c.P.n_tensors);
  st_close(&f);
  ck_assert_int_eq(st_open(&f, optim, &err), 0);
  ck_assert(st_find(&f, "adapter.0.up.bias.m") && st_find(&f, "projector.fc1.weight.v"));
  ck_assert_int_eq(f.n, 2 * c.P.n_tensors);
  st_close(&f);
  unlink(ckpt), unlink(optim);
  close_case(&r);
  taca_model_free(tm);
  close_case(&c);
}
END_TEST

/* The loss alone, every mode, and owned-row ranges. Measured: terms <= 1e-7, df <= 2e-7. */
START_TEST(loss_modes) {
  st_file f;
  taca_error err = {{0}};
  ck_assert_msg(st_open(&f, FIX "loss.safetensors", &err) == 0, "%s", err.msg);
  const int n = 8, E = 16;
  const float *F = tensor(&f, "f", n * E), *Tx = tensor(&f, "t", n * E), *V = tensor(&f, "v", n * E);
  const char *modes[] = {"full", "contra", "distill", "capped"};
  for (int i = 0; i < 4; i++) {
    char name[64];
    snprintf(name, sizeof name, "%s.cfg", modes[i]);
    const float *cfg = tensor(&f, name, 3);
    taca_loss_config lc = {taca_loss_scale(cfg[0]), cfg[1], cfg[2]};
    if (i == 3) ck_assert_float_eq(lc.scale, 100.0f);
    taca_loss_terms t;
    float df[8 * 16], part[3 * 16];
    ck_assert_int_eq(taca_loss(&lc, F, Tx, V, n, E, 0, n, &t, df, NULL, &err), 0);
    snprintf(name, sizeof name, "%s.terms", modes[i]);
    const float *ref = tensor(&f, name, 3);
    ck_assert_msg(fabs(t.loss - ref[0]) <= 1e-5 * fabs(ref[0]), "%s loss %.8g vs %.8g", modes[i],
                  t.loss, ref[0]);
    ck_assert(fabs(t.contra - ref[1]) <= 1e-5 * fabs(ref[1]));
    ck_assert(fabs(t.distill - ref[2]) <= 1e-5 * fabs(ref[2]));
    snprintf(name, sizeof name, "%s.df", modes[i]);
    const float *dref = tensor(&f, name, n * E);
    double e = rel_err(df, dref, n * E);
    printf("  loss %-8s terms rel err %.1e, df rel err %.1e\n", modes[i], fabs(t.loss - ref[0]) / fabs(ref[0]), e);
    ck_assert_msg(e <= 1e-5, "%s: df relative error %.3g", modes[i], e);
    /* Rows [3, 6) only: the same rows of the full gradient, the same global terms. */
    taca_loss_terms tp;
    ck_assert_int_eq(taca_loss(&lc, F, Tx, V, n, E, 3, 6, &tp, part, NULL, &err), 0);
    ck_assert(tp.loss == t.loss);
    for (int k = 0; k < 3 * E; k++) ck_assert_float_eq(part[k], df[3 * E + k]);
  }
  /* Bad arguments and non-finite inputs are refused with a reason. */
  taca_loss_config lc = {14.0f, 1.0f, 2.0f};
  taca_loss_terms t;
  ck_assert_int_eq(taca_loss(&lc, F, Tx, V, n, E, 5, 9, &t, NULL, NULL, &err), -1);
  ck_assert_msg(strstr(err.msg, "[5, 9)"), "%s", err.msg);
  float bad[8 * 16];
  memcpy(bad, F, sizeof bad);
  bad[17] = NAN;
  ck_assert_int_eq(taca_loss(&lc, bad, Tx, V, n, E, 0, n, &t, NULL, NULL, &err), -1);
  ck_assert_msg(strstr(err.msg, "not finite"), "%s", err.msg);
  st_close(&f);
}
END_TEST

/* Initialisation, parameter counts, the layer-range parser and checkpoint mismatches. */
START_TEST(params_init_and_errors) {
  taca_error err = {{0}};
  clip_model *m = clip_model_load(FIX "tower_quickgelu.safetensors", FIX "tower_quickgelu.json", be, &err);
  ck_assert_msg(m, "%s", err.msg);
  taca_param_config pc;
  taca_param_config_default(&pc, &m->cfg, 16);
  ck_assert_int_eq(pc.peft.first, 0);
  ck_assert_int_eq(pc.peft.last, 2);
  ck_assert_int_eq(pc.peft.bottleneck, 128);
  pc.proj_hidden = 64, pc.peft.bottleneck = 8;
  /* Count: 3 blocks x (2 W k + k + W) + (E_new H + H + H E_old + E_old). */
  ck_assert_int_eq(taca_param_count(&pc), 3 * (2 * 32 * 8 + 8 + 32) + (24 * 64 + 64 + 64 * 16 + 16));
  taca_params P, Q;
  ck_assert_int_eq(taca_params_create(&P, &pc, be, 42, &err), 0);
  ck_assert_int_eq(taca_params_create(&Q, &pc, be, 42, &err), 0);
  ck_assert_int_eq(memcmp(P.flat_p, Q.flat_p, sizeof(float) * P.n), 0); /* seeded */
  const float bound = 1.0f / sqrtf(32.0f);
  double sum = 0;
  for (int i = 0; i < 8 * 32; i++) {
    ck_assert(fabsf(P.p.blocks[1].down_w[i]) <= bound);
    sum += fabsf(P.p.blocks[1].down_w[i]);
  }
  ck_assert(sum / 256 > 0.35 * bound && sum / 256 < 0.65 * bound); /* uniform: mean |x| = b/2 */
  for (int i = 0; i < 32 * 8; i++) ck_assert_float_eq(P.p.blocks[2].up_w[i], 0.f);
  for (int i = 0; i < 32; i++) ck_assert_float_eq(P.p.blocks[0].up_b[i], 0.f);
  for (int i = 0; i < 64; i++) ck_assert(fabsf(P.p.proj.fc1_b[i]) <= 1.0f / sqrtf(24.0f));
  for (int i = 0; i < 16; i++) ck_assert(fabsf(P.p.proj.fc2_b[i]) <= 1.0f / 8.0f);
  for (size_t i = 0; i < 3 * P.n; i++) ck_assert_float_eq(P.flat_g[i], 0.f);
  taca_params_free(&Q);
  ck_assert_int_eq(taca_params_create(&Q, &pc, be, 43, &err), 0);
  ck_assert_int_ne(memcmp(P.flat_p, Q.flat_p, sizeof(float) * P.n), 0);
  taca_params_free(&Q);

  /* The fixture checkpoint (adapters in blocks 0-2, k = 8) loaded into other configurations. */
  taca_params_free(&P);
  taca_param_config other = pc;
  ck_assert_int_eq(taca_parse_layer_range("2-3", 3, &other.peft.first, &other.peft.last, &err), 0);
  ck_assert_int_eq(taca_params_create(&P, &other, be, 1, &err), 0);
  ck_assert_int_eq(taca_params_load(&P, FIX "adapter_all.init.safetensors", &err), -1);
  ck_assert_msg(strstr(err.msg, "unexpected tensor 'adapter.0."), "%s", err.msg);
  taca_params_free(&P);
  other = pc, other.peft.bottleneck = 7;
  ck_assert_int_eq(taca_params_create(&P, &other, be, 1, &err), 0);
  ck_assert_int_eq(taca_params_load(&P, FIX "adapter_all.init.safetensors", &err), -1);
  ck_assert_msg(strstr(err.msg, "'adapter.0.down.weight'") && strstr(err.msg, "expected [7, 32]"), "%s",
                err.msg);
  taca_params_free(&P);
  other = pc, other.peft.kind = VIT_PEFT_LORA, other.peft.lora_rank = 4;
  ck_assert_int_eq(taca_params_create(&P, &other, be, 1, &err), 0);
  ck_assert_int_eq(taca_params_load(&P, FIX "adapter_all.init.safetensors", &err), -1);
  ck_assert_msg(strstr(err.msg, "missing tensor 'lora.0.q.A'"), "%s", err.msg);
  ck_assert_int_eq(taca_optim_load(&P, FIX "adapter_all.init.safetensors", &err), -1);
  ck_assert_msg(strstr(err.msg, "missing tensor"), "%s", err.msg);
  ck_assert_int_eq(taca_params_load(&P, "/nonexistent/x.safetensors", &err), -1);
  ck_assert_msg(strstr(err.msg, "/nonexistent/x.safetensors"), "%s", err.msg);
  taca_params_free(&P);

  /* Parameters for another tower, batches beyond the workspace. */
  other = pc, other.width = 48;
  ck_assert_int_eq(taca_params_create(&P, &other, be, 1, &err), 0);
  ck_assert_ptr_null(taca_model_create(m, &P, 2, 0, &err));
  ck_assert_msg(strstr(err.msg, "width 48"), "%s", err.msg);
  taca_params_free(&P);
  ck_assert_int_eq(taca_params_create(&P, &pc, be, 1, &err), 0);
  taca_model *tm = taca_model_create(m, &P, 2, 0, &err);
  ck_assert_msg(tm, "%s", err.msg);
  float px[3 * 3 * 16 * 16] = {0}, f[3 * 16];
  ck_assert_int_eq(taca_model_forward(tm, &P, px, 3, f, &err), -1);
  ck_assert_msg(strstr(err.msg, "batch 3"), "%s", err.msg);
  ck_assert_int_eq(taca_model_backward(tm, &P, f, &err), -1);
  ck_assert_msg(strstr(err.msg, "without a forward"), "%s", err.msg);
  taca_model_free(tm);
  taca_params_free(&P);

  /* Layer ranges: 1-based inclusive, "all", single blocks; clear errors. */
  int a, b;
  ck_assert_int_eq(taca_parse_layer_range("all", 12, &a, &b, &err), 0);
  ck_assert(a == 0 && b == 11);
  ck_assert_int_eq(taca_parse_layer_range("1-6", 12, &a, &b, &err), 0);
  ck_assert(a == 0 && b == 5);
  ck_assert_int_eq(taca_parse_layer_range("7", 12, &a, &b, &err), 0);
  ck_assert(a == 6 && b == 6);
  const char *bad[] = {"0-3", "5-4", "1-13", "x", "1-", "3-5x", ""};
  for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
    ck_assert_msg(taca_parse_layer_range(bad[i], 12, &a, &b, &err) == -1, "'%s' accepted", bad[i]);
    ck_assert_msg(strstr(err.msg, "layer range"), "%s", err.msg);
  }
  /* Table 1 scale: ViT-L/14 with adapters (k 128) in 24 blocks, projector 768 -> 4096 -> 512. */
  clip_config L14;
  ck_assert_int_eq(clip_config_builtin(&L14, "ViT-L-14", &err), 0);
  taca_param_config_default(&pc, &L14, 512);
  ck_assert_int_eq(taca_param_count(&pc),
                   24LL * (2 * 1024 * 128 + 128 + 1024) + (768LL * 4096 + 4096 + 4096 * 512 + 512));
  clip_model_free(m);
}
END_TEST

int main(void) {
  Suite *s = suite_create("taca_grad");
  TCase *tc = tcase_create("grad");
  tcase_add_checked_fixture(tc, setup, teardown);
  tcase_set_timeout(tc, 120);
  tcase_add_test(tc, loss_modes);
  tcase_add_test(tc, adapter_all_step0);
  tcase_add_test(tc, adapter_all_recompute);
  tcase_add_test(tc, adapter_range_step0);
  tcase_add_test(tc, adapter_range_recompute);
  tcase_add_test(tc, lora_step0);
  tcase_add_test(tc, lora_recompute);
  tcase_add_test(tc, split_rows_sum);
  tcase_add_test(tc, adamw_five_steps);
  tcase_add_test(tc, params_init_and_errors);
  suite_add_tcase(s, tc);
  SRunner *sr = srunner_create(s);
  srunner_run_all(sr, CK_NORMAL);
  int failed = srunner_ntests_failed(sr);
  srunner_free(sr);
  return failed ? 1 : 0;
}
