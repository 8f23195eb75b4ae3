/* test_clip_train.c: full-parameter CLIP training (nn/clip_train.c, nn/clip_loss.c) against
 * PyTorch autograd (tests/fixtures/gen_clip_train.py -> tests/fixtures/clip_train/): the step-0
 * image and text features, the CLIP loss with its learnable logit scale and the in-batch
 * accuracies, the gradient of EVERY tensor of both towers (token embedding with repeated ids,
 * positional and class embeddings, patch embedding, LayerNorms, q/k/v/out, MLP, projections, logit
 * scale), and three AdamW steps (two groups, open_clip's clamp of the logit scale) with each step's
 * loss and the final parameters. Also: saving as a HF directory that clip_model_load reads and whose
 * inference forward matches, atomic replacement of an existing directory, initialisation, the
 * vision-only model, and the errors.
 *
 * Tolerances (measured on this machine in comments):
 *   features, loss            max |C - torch| <= 1e-5 * max |torch|
 *   gradients                 max |C - torch| <= 1e-4 * max |torch|, per tensor (measured <= 2.6e-6)
 *     except k_proj.bias: its gradient is analytically 0 (softmax ignores a per-query constant);
 *     torch gives float noise ~1e-8, so both sides are only checked to be <= 1e-6 * max |dq_b|
 *   parameters after 3 steps  max |C - torch| <= 1e-4 * max |torch|, per tensor (measured <= 1.9e-5:
 *     AdamW's first steps divide by sqrt(v) ~ |g|, which amplifies gradient rounding); k_proj.bias
 *     moves by lr g / (|g| + eps) with g float noise, differently in C and torch: checked to within
 *     a tenth of a full step per step, 3e-4 (measured <= 1.3e-4) */
#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "nn/clip.h"
#include "nn/clip_train.h"
#include "base/safetensors.h"

#define FIX TACA_FIXTURES_DIR "/clip_train/"

static nn_backend *be;

static void setup(void) { be = nn_backend_cpu_create(0); }
static void teardown(void) { nn_backend_destroy(be); }

static const st_tensor *find(const st_file *f, const char *name, size_t numel) {
  const st_tensor *t = st_find(f, name);
  ck_assert_msg(t != NULL, "fixture tensor '%s' missing", name);
  ck_assert_msg(numel == 0 || t->numel == numel, "fixture tensor '%s': %zu elements, expected %zu",
                name, t->numel, numel);
  return t;
}

static const float *tensor(const st_file *f, const char *name, size_t numel) {
  const float *p = st_f32_view(find(f, name, numel));
  ck_assert_msg(p != NULL, "fixture tensor '%s' is not aligned F32", name);
  return p;
}

static double max_abs(const float *a, size_t n) {
  double m = 0;
  for (size_t i = 0; i < n; i++) m = fmax(m, fabs(a[i]));
  return m;
}

static double rel_err(const float *a, const float *b, size_t n) {
  double md = 0;
  for (size_t i = 0; i < n; i++) md = fmax(md, fabs((double)a[i] - b[i]));
  double mb = max_abs(b, n);
  return md / (mb > 0 ? mb : 1);
}

typedef struct ctx {
  clip_config cfg;
  clip_train *ct;
  st_file ref;
  const float *pixels;
  int32_t *tokens;
  int B;
} ctx;

static void open_ctx(ctx *c, int max_batch) {
  taca_error err = {{0}};
  ck_assert_msg(clip_config_hf_json(&c->cfg, FIX "init/config.json", &err) == 0, "%s", err.msg);
  c->ct = clip_train_create(&c->cfg, be, max_batch, 5, &err);
  ck_assert_msg(c->ct, "%s", err.msg);
  ck_assert_msg(clip_train_load(c->ct, FIX "init", NULL, &err) == 0, "%s", err.msg);
  ck_assert_msg(st_open(&c->ref, FIX "ref.safetensors", &err) == 0, "%s", err.msg);
  const st_tensor *px = find(&c->ref, "pixels", 0);
  c->B = (int)px->shape[0];
  c->pixels = tensor(&c->ref, "pixels", 0);
  const st_tensor *tk = find(&c->ref, "tokens", (size_t)c->B * c->cfg.context_len);
  ck_assert_int_eq(tk->dtype, TACA_DT_I32);
  c->tokens = malloc(tk->nbytes);
  memcpy(c->tokens, tk->data, tk->nbytes);
}

static void close_ctx(ctx *c) {
  free(c->tokens);
  st_close(&c->ref);
  clip_train_free(c->ct);
}

/* Analytically-zero gradients (see the top comment). */
static int is_k_bias(const char *name) { return strstr(name, "k_proj.bias") != NULL; }

/* Compares every tensor of the flat buffer `flat` with the fixture's PREFIX.NAME. */
static void check_all(const ctx *c, const float *flat, const char *prefix, double tol,
                      double k_bias_tol) {
  const clip_train *ct = c->ct;
  double worst = 0;
  const char *worst_name = "";
  for (int i = 0; i < ct->n_tensors; i++) {
    const clip_train_tensor_info *t = &ct->info[i];
    char name[200];
    snprintf(name, sizeof name, "%s.%s", prefix, t->name);
    const float *ref = tensor(&c->ref, name, t->numel);
    const float *got = flat + t->offset;
    if (is_k_bias(t->name)) {
      /* Scale: the matching q bias tensor (same block), which is never 0. */
      char qname[200];
      snprintf(qname, sizeof qname, "%s", name);
      memcpy(strstr(qname, "k_proj.bias"), "q", 1);
      const double scale = max_abs(tensor(&c->ref, qname, t->numel), t->numel);
      if (!strcmp(prefix, "grad")) {
        ck_assert_msg(max_abs(ref, t->numel) <= 1e-6 * scale, "%s: reference not ~0", name);
        ck_assert_msg(max_abs(got, t->numel) <= 1e-6 * scale, "%s: max |C| %g, not ~0 (scale %g)",
                      name, max_abs(got, t->numel), scale);
      } else {
        double d = 0;
        for (size_t j = 0; j < t->numel; j++) d = fmax(d, fabs((double)got[j] - ref[j]));
        ck_assert_msg(d <= k_bias_tol, "%s: max |C - torch| %g (tolerance %g)", name, d,
                      k_bias_tol);
        fprintf(stderr, "test_clip_train: %s: max |C - torch| %.2e\n", name, d);
      }
      continue;
    }
    const double e = rel_err(got, ref, t->numel);
    if (e > worst) worst = e, worst_name = t->name;
    ck_assert_msg(e <= tol, "%s: max |C - torch| = %.3g of max |torch| %.3g (tolerance %g)", name,
                  e, max_abs(ref, t->numel), tol);
  }
  fprintf(stderr, "test_clip_train: %s: worst relative error %.2e (%s)\n", prefix, worst,
          worst_name);
}

START_TEST(features_loss_and_gradients) {
  ctx c;
  open_ctx(&c, 8);
  taca_error err = {{0}};
  clip_train *ct = c.ct;
  const int E = c.cfg.embed_dim;
  const float *fi = clip_train_image_forward(ct, c.pixels, c.B, &err);
  ck_assert_msg(fi, "%s", err.msg);
  double e = rel_err(fi, tensor(&c.ref, "image_features", (size_t)c.B * E), (size_t)c.B * E);
  ck_assert_msg(e <= 1e-5, "image features: relative error %g", e); /* measured ~2e-7 */
  const float *ft = clip_train_text_forward(ct, c.tokens, c.B, &err);
  ck_assert_msg(ft, "%s", err.msg);
  e = rel_err(ft, tensor(&c.ref, "text_features", (size_t)c.B * E), (size_t)c.B * E);
  ck_assert_msg(e <= 1e-5, "text features: relative error %g", e);

  clip_train_zero_grad(ct);
  clip_loss_result r;
  ck_assert_msg(clip_train_step(ct, c.pixels, c.tokens, c.B, &r, &err) == 0, "%s", err.msg);
  const float *lref = tensor(&c.ref, "loss", 3);
  ck_assert_msg(fabs(r.loss - lref[0]) <= 1e-5 * fabs(lref[0]), "loss %.8f vs torch %.8f", r.loss,
                lref[0]);
  ck_assert_msg(fabs(r.acc_i2t - lref[1]) < 1e-6 && fabs(r.acc_t2i - lref[2]) < 1e-6,
                "accuracies %g %g vs torch %g %g", r.acc_i2t, r.acc_t2i, lref[1], lref[2]);
  check_all(&c, ct->flat_g, "grad", 1e-4, 0);
  close_ctx(&c);
}
END_TEST

START_TEST(adamw_three_steps) {
  ctx c;
  open_ctx(&c, 6);
  taca_error err = {{0}};
  const st_file *r = &c.ref;
  clip_train_optim o = {strtod(st_meta(r, "lr"), NULL), strtod(st_meta(r, "beta1"), NULL),
                        strtod(st_meta(r, "beta2"), NULL), strtod(st_meta(r, "eps"), NULL),
                        strtod(st_meta(r, "weight_decay"), NULL)};
  const int steps = atoi(st_meta(r, "steps"));
  const float *losses = tensor(r, "losses", steps);
  for (int s = 0; s < steps; s++) {
    clip_loss_result lr;
    clip_train_zero_grad(c.ct);
    ck_assert_msg(clip_train_step(c.ct, c.pixels, c.tokens, c.B, &lr, &err) == 0, "%s", err.msg);
    ck_assert_msg(fabs(lr.loss - losses[s]) <= 1e-5 * fabs(losses[s]),
                  "step %d: loss %.8f vs torch %.8f", s, lr.loss, losses[s]);
    clip_train_update(c.ct, &o);
  }
  ck_assert_int_eq(c.ct->step, steps);
  /* k_proj.bias: each step moves it by lr g / (|g| + eps) with g float noise (~1e-8 against
   * eps 1e-6), differently in C and torch; bounded by a tenth of a full step per step. */
  check_all(&c, c.ct->flat_p, "final", 1e-4, 0.1 * steps * o.lr);
  close_ctx(&c);
}
END_TEST

static void rm_model_dir(const char *dir) {
  char p[512];
  snprintf(p, sizeof p, "%s/model.safetensors", dir);
  unlink(p);
  snprintf(p, sizeof p, "%s/config.json", dir);
  unlink(p);
  rmdir(dir);
}

START_TEST(save_hf_roundtrip) {
  ctx c;
  open_ctx(&c, 6);
  taca_error err = {{0}};
  char dir[256], tmp[300];
  snprintf(dir, sizeof dir, "/tmp/test_clip_train.%d", (int)getpid());
  snprintf(tmp, sizeof tmp, "%s.tmp", dir);
  const char *meta[] = {"note", "test", NULL};
  ck_assert_msg(clip_train_save_hf(c.ct, dir, meta, &err) == 0, "%s", err.msg);
  struct stat sb;
  ck_assert_int_ne(stat(tmp, &sb), 0); /* nothing left behind */
  /* The directory is an HF CLIP model the whole pipeline loads, with the same forward. */
  clip_model *m = clip_model_load(dir, NULL, be, &err);
  ck_assert_msg(m, "%s", err.msg);
  ck_assert_int_eq(m->cfg.embed_dim, c.cfg.embed_dim);
  ck_assert_int_eq(m->cfg.vocab_size, 256);
  ck_assert_int_eq(m->cfg.context_len, 16);
  ck_assert_int_eq(m->cfg.vision.act, NN_ACT_GELU);
  const int E = c.cfg.embed_dim, B = c.B;
  float *a = malloc(sizeof(float) * B * E), *b = malloc(sizeof(float) * B * E);
  ck_assert_int_eq(clip_encode_image(m, c.pixels, B, a, &err), 0);
  const float *fi = clip_train_image_forward(c.ct, c.pixels, B, &err);
  ck_assert_msg(rel_err(fi, a, (size_t)B * E) <= 1e-5, "image: %g", rel_err(fi, a, (size_t)B * E));
  ck_assert_int_eq(clip_encode_text(m, c.tokens, B, b, &err), 0);
  const float *ft = clip_train_text_forward(c.ct, c.tokens, B, &err);
  ck_assert_msg(rel_err(ft, b, (size_t)B * E) <= 1e-5, "text: %g", rel_err(ft, b, (size_t)B * E));
  ck_assert_float_eq(m->logit_scale, clip_train_logit_scale(c.ct));
  clip_model_free(m);
  /* Saving over an existing model replaces it (exchange path); a second train model loads it. */
  clip_train_optim o = {1e-2, 0.9, 0.98, 1e-6, 0.2};
  clip_loss_result lr;
  clip_train_zero_grad(c.ct);
  ck_assert_int_eq(clip_train_step(c.ct, c.pixels, c.tokens, B, &lr, &err), 0);
  clip_train_update(c.ct, &o);
  ck_assert_msg(clip_train_save_hf(c.ct, dir, NULL, &err) == 0, "%s", err.msg);
  ck_assert_int_ne(stat(tmp, &sb), 0);
  clip_train *ct2 = clip_train_create(&c.cfg, be, 6, 99, &err);
  ck_assert_msg(ct2, "%s", err.msg);
  ck_assert_msg(clip_train_load(ct2, dir, NULL, &err) == 0, "%s", err.msg);
  for (int i = 0; i < c.ct->n_tensors; i++) {
    const clip_train_tensor_info *t = &c.ct->info[i];
    ck_assert_msg(memcmp(ct2->flat_p + t->offset, c.ct->flat_p + t->offset,
                         sizeof(float) * t->numel) == 0,
                  "%s differs after save/load", t->name);
  }
  clip_train_free(ct2);
  /* A path that exists as a file cannot be replaced. */
  rm_model_dir(dir);
  FILE *f = fopen(dir, "w");
  ck_assert_ptr_nonnull(f);
  fclose(f);
  ck_assert_int_eq(clip_train_save_hf(c.ct, dir, NULL, &err), -1);
  ck_assert_msg(strstr(err.msg, "not a directory") != NULL, "%s", err.msg);
  ck_assert_int_ne(stat(tmp, &sb), 0);
  unlink(dir);
  free(a), free(b);
  close_ctx(&c);
}
END_TEST

static double mean_sq(const float *x, size_t n, double *mean) {
  double s = 0, s2 = 0;
  for (size_t i = 0; i < n; i++) s += x[i], s2 += (double)x[i] * x[i];
  *mean = s / n;
  return sqrt(s2 / n - *mean * *mean);
}

START_TEST(initialisation) {
  taca_error err = {{0}};
  clip_config cfg;
  ck_assert_int_eq(clip_config_hf_json(&cfg, FIX "init/config.json", &err), 0);
  cfg.vocab_size = 4096; /* enough draws for tight statistics */
  clip_train *a = clip_train_create(&cfg, be, 2, 1, &err), *b = clip_train_create(&cfg, be, 2, 1, &err);
  clip_train *c = clip_train_create(&cfg, be, 2, 2, &err);
  ck_assert_msg(a && b && c, "%s", err.msg);
  ck_assert_int_eq(memcmp(a->flat_p, b->flat_p, sizeof(float) * a->n), 0); /* deterministic */
  ck_assert_int_ne(memcmp(a->flat_p, c->flat_p, sizeof(float) * a->n), 0);
  /* Counts: HF's parameter count (clip_config_*_params) plus the logit scale. */
  size_t count = 0;
  for (int i = 0; i < a->n_tensors; i++) count += a->info[i].numel;
  ck_assert_uint_eq(count, clip_train_param_count(&cfg));
  ck_assert_uint_eq(count, (size_t)(clip_config_vision_params(&cfg) +
                                    clip_config_text_params(&cfg) + 1));
  /* Distributions (OpenAI / open_clip): token embedding N(0, 0.02), text positional N(0, 0.01),
   * class embedding N(0, W^-1/2), LayerNorm 1 / 0, in_proj biases 0, logit scale ln(1/0.07),
   * vision in_proj xavier U(+-sqrt(6/4W)). */
  double m, sd;
  sd = mean_sq(a->p.tok_emb, (size_t)cfg.vocab_size * cfg.text.width, &m);
  ck_assert_msg(fabs(sd - 0.02) < 0.001 && fabs(m) < 0.001, "tok_emb std %g mean %g", sd, m);
  sd = mean_sq(a->p.tpos, (size_t)cfg.context_len * cfg.text.width, &m);
  ck_assert_msg(fabs(sd - 0.01) < 0.002, "text pos std %g", sd);
  const int W = cfg.vision.width;
  sd = mean_sq(a->p.vblocks[0].qkv_w, (size_t)3 * W * W, &m);
  ck_assert_msg(fabs(sd - sqrt(6.0 / (4 * W)) / sqrt(3.0)) < 0.01, "vision qkv std %g", sd);
  float bound = 0;
  for (int i = 0; i < 3 * W * W; i++) bound = fmaxf(bound, fabsf(a->p.vblocks[0].qkv_w[i]));
  ck_assert_float_le(bound, sqrtf(6.0f / (4 * W)));
  sd = mean_sq(a->p.tblocks[1].fc1_w, (size_t)cfg.text.mlp * cfg.text.width, &m);
  ck_assert_msg(fabs(sd - 1 / sqrt(2.0 * cfg.text.width)) < 0.02, "text fc1 std %g", sd);
  for (int i = 0; i < W; i++) {
    ck_assert_float_eq(a->p.ln_pre_w[i], 1.0f);
    ck_assert_float_eq(a->p.ln_post_b[i], 0.0f);
    ck_assert_float_eq(a->p.vblocks[1].qkv_b[i + W], 0.0f);
  }
  ck_assert_float_eq_tol(clip_train_logit_scale(a), (float)log(1 / 0.07), 1e-6);
  /* Gradients and moments start at 0; the decay group is exactly the tensors with ndim >= 2. */
  ck_assert_double_eq(max_abs(a->flat_g, 3 * a->n), 0);
  for (int i = 0; i < a->n_tensors; i++) {
    const clip_train_tensor_info *t = &a->info[i];
    ck_assert_int_eq(t->decay, t->ndim >= 2);
    ck_assert_int_eq(t->offset + t->numel <= a->n_decay, t->decay);
  }
  /* q, k, v adjacent: the packed in_proj. */
  for (int i = 0; i < a->n_tensors; i++)
    if (!strcmp(a->info[i].name, "vision_model.encoder.layers.0.self_attn.v_proj.weight"))
      ck_assert_ptr_eq(a->p.vblocks[0].qkv_w + 2 * (size_t)W * W, a->flat_p + a->info[i].offset);
  clip_train_free(a), clip_train_free(b), clip_train_free(c);
}
END_TEST

START_TEST(logit_scale_clamp) {
  ctx c;
  open_ctx(&c, 6);
  clip_train_optim o = {1e-9, 0.9, 0.98, 1e-6, 0.0};
  float v = 5.0f;
  memcpy(c.ct->p.logit_scale, &v, sizeof v);
  clip_train_zero_grad(c.ct);
  clip_train_update(c.ct, &o);
  ck_assert_float_eq(clip_train_logit_scale(c.ct), (float)log(100.0));
  v = -0.5f;
  memcpy(c.ct->p.logit_scale, &v, sizeof v);
  clip_train_update(c.ct, &o);
  ck_assert_float_eq(clip_train_logit_scale(c.ct), 0.0f);
  close_ctx(&c);
}
END_TEST

START_TEST(vision_only) {
  /* A vision-only model (AFT's downstream ViT) has exactly the vision tensors, loads the vision
   * tower of a full model, and its image backward gives the full model's vision gradients. */
  ctx c;
  open_ctx(&c, 6);
  taca_error err = {{0}};
  clip_config vc = c.cfg;
  vc.has_text = 0;
  clip_train *v = clip_train_create(&vc, be, 6, 1, &err);
  ck_assert_msg(v, "%s", err.msg);
  ck_assert_ptr_null(v->p.tok_emb);
  ck_assert_ptr_null(v->p.logit_scale);
  ck_assert_uint_eq(clip_train_param_count(&vc), (size_t)clip_config_vision_params(&vc));
  ck_assert_msg(clip_train_load(v, FIX "init", NULL, &err) == 0, "%s", err.msg);
  ck_assert_ptr_null(clip_train_text_forward(v, c.tokens, 1, &err));
  ck_assert_int_eq(clip_train_step(v, c.pixels, c.tokens, 1, NULL, &err), -1);
  clip_loss_result r;
  clip_train_zero_grad(c.ct);
  ck_assert_int_eq(clip_train_step(c.ct, c.pixels, c.tokens, c.B, &r, &err), 0);
  clip_train_zero_grad(v);
  ck_assert_ptr_nonnull(clip_train_image_forward(v, c.pixels, c.B, &err));
  ck_assert_int_eq(clip_train_image_backward(v, c.ct->host_dimg, &err), 0);
  for (int i = 0; i < v->n_tensors; i++) {
    const clip_train_tensor_info *t = &v->info[i];
    int j = 0;
    while (j < c.ct->n_tensors && strcmp(c.ct->info[j].name, t->name)) j++;
    ck_assert_int_lt(j, c.ct->n_tensors);
    ck_assert_msg(memcmp(v->flat_g + t->offset, c.ct->flat_g + c.ct->info[j].offset,
                         sizeof(float) * t->numel) == 0,
                  "%s: vision-only gradient differs", t->name);
  }
  clip_train_free(v);
  close_ctx(&c);
}
END_TEST

START_TEST(errors) {
  ctx c;
  open_ctx(&c, 6);
  taca_error err = {{0}};
  ck_assert_ptr_null(clip_train_image_forward(c.ct, c.pixels, 7, &err));
  ck_assert_msg(strstr(err.msg, "batch 7") != NULL, "%s", err.msg);
  ck_assert_int_eq(clip_train_text_backward(c.ct, c.ct->host_dtxt, &err), -1); /* no forward */
  int32_t bad[16] = {254, 256, 255};
  ck_assert_ptr_null(clip_train_text_forward(c.ct, bad, 1, &err));
  ck_assert_msg(strstr(err.msg, "token id 256 at row 0 position 1") != NULL, "%s", err.msg);
  ck_assert_int_eq(clip_train_text_backward(c.ct, c.ct->host_dtxt, &err), -1);
  /* Another architecture (the clip fixtures' HF model) is refused with both descriptions. */
  ck_assert_int_eq(clip_train_load(c.ct, TACA_FIXTURES_DIR "/clip/hf_gelu_f16", NULL, &err), -1);
  ck_assert_msg(strstr(err.msg, "architecture") && strstr(err.msg, "width 32"), "%s", err.msg);
  ck_assert_int_eq(clip_train_load(c.ct, "/nonexistent/model", NULL, &err), -1);
  clip_config bad_cfg = c.cfg;
  bad_cfg.vision.heads = 5;
  ck_assert_ptr_null(clip_train_create(&bad_cfg, be, 4, 1, &err));
  ck_assert_ptr_null(clip_train_create(&c.cfg, be, 0, 1, &err));
  close_ctx(&c);
}
END_TEST

START_TEST(loss_edge_cases) {
  /* A single pair: both cross-entropies are 0, accuracies 1, all gradients 0. */
  float img[3] = {1, 2, 3}, txt[3] = {-1, 0, 2}, di[3], dt[3];
  clip_loss_result r;
  ck_assert_int_eq(clip_loss(img, txt, 1, 3, 2.0f, &r, di, dt, NULL, NULL), 0);
  ck_assert_double_eq_tol(r.loss, 0, 1e-12);
  ck_assert_double_eq(r.acc_i2t, 1);
  ck_assert_double_eq_tol(r.dlogit_scale, 0, 1e-12);
  ck_assert_double_eq_tol(max_abs(di, 3) + max_abs(dt, 3), 0, 1e-12);
  float nanv[3] = {NAN, 0, 0};
  taca_error err = {{0}};
  ck_assert_int_eq(clip_loss(nanv, txt, 1, 3, 2.0f, &r, di, dt, NULL, &err), -1);
  ck_assert_int_eq(clip_loss(img, txt, 0, 3, 2.0f, &r, di, dt, NULL, &err), -1);
}
END_TEST

static Suite *suite(void) {
  Suite *s = suite_create("clip_train");
  TCase *tc = tcase_create("core");
  tcase_add_checked_fixture(tc, setup, teardown);
  tcase_set_timeout(tc, 120);
  tcase_add_test(tc, features_loss_and_gradients);
  tcase_add_test(tc, adamw_three_steps);
  tcase_add_test(tc, save_hf_roundtrip);
  tcase_add_test(tc, initialisation);
  tcase_add_test(tc, logit_scale_clamp);
  tcase_add_test(tc, vision_only);
  tcase_add_test(tc, errors);
  tcase_add_test(tc, loss_edge_cases);
  suite_add_tcase(s, tc);
  return s;
}

int main(void) {
  SRunner *sr = srunner_create(suite());
  srunner_run_all(sr, CK_NORMAL);
  int failed = srunner_ntests_failed(sr);
  srunner_free(sr);
  return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
