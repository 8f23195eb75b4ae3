/* bench_aft.c: CPU throughput of one AFT training step as `taca-train --objective aft` runs it (a
 * downstream CLIP vision tower trained in full with a linear classifier; loss CE + beta R, R the AFT
 * kernel regulariser against the pre-trained features P with the learned s; AdamW on the model,
 * Adam on s), beside the OpenBLAS sgemm roofline measured on the step's own GEMM shapes.
 *
 *   bench_aft --model TOWER.safetensors --arch NAME|JSON --inputs INPUTS.safetensors [--iters 5]
 *
 * TOWER: the tower's weights (open_clip "visual.*" names), INPUTS: the batch and the starting
 * values, both written by `bench_aft.py write` so that PyTorch (bench_aft.py time) computes the same
 * steps: pixels [B, 3, S, S], P [B, dP], labels (I32) [B], classifier.weight [C, E],
 * classifier.bias [C], aft.s [dP]. The step is taca-train's (trainer/aft_train.c) on one rank:
 * forward, cross-entropy, the AFT term (beta 10), backward, AdamW (lr 1e-3, weight decay 0.01 on
 * tensors of 2 or more dimensions) and Adam on s (lr 1e-2). Each timed step runs on the parameters
 * the previous one left: one warm-up step, then --iters timed ones (median).
 *
 * Prints one JSON line: samples/s, the parts of the step (forward, CE, AFT term, backward including
 * both updates, the updates alone), GFLOP per sample, the sgemm-only time of one step's GEMMs, the
 * roofline samples/s that implies and the fraction reached, and the losses of every step (the
 * warm-up first, on the starting parameters: "loss_ce" and "loss_reg" are that step's).
 * bench/run-aft.sh runs this beside bench_aft.py. */
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench/bench_util.h"
#include "nn/cross_entropy.h"
#include "base/safetensors.h"
#include "methods/aft_model.h"
#include "methods/aft_prior.h"

#define MAX_ITERS 32
#define BETA 10.0
#define LR 1e-3
#define WEIGHT_DECAY 0.01
#define PRIOR_LR 1e-2

/* The named F32 tensor of the inputs file with the given rank; dims[i] < 0 takes any size. */
static const st_tensor *input(const st_file *f, const char *name, taca_dtype dt, int ndim, const int64_t *dims,
                              taca_error *err) {
  const st_tensor *t = st_find(f, name);
  if (!t) {
    taca_fail(err, "--inputs: tensor '%s' is missing (write the file with bench_aft.py write)", name);
    return NULL;
  }
  int ok = t->dtype == dt && t->ndim == ndim;
  for (int i = 0; ok && i < ndim; i++) ok = dims[i] < 0 || t->shape[i] == dims[i];
  if (!ok) {
    taca_fail(err, "--inputs: tensor '%s' has another type or shape than expected", name);
    return NULL;
  }
  return t;
}

/* The sgemm roofline of one step: every GEMM the CPU backend issues, in its orientation (forward
 * A.W^T = (0,1); input gradient dY.W = (0,0); weight gradient dY^T.X = (1,0)). The AFT term's
 * double-precision n x n kernels are left out (a few MFLOP). */
static double step_gemms(bench_roofline *r, const clip_config *c, int B, int C) {
  const int S = c->image_size, P = c->patch_size, G2 = (S / P) * (S / P), T = G2 + 1, N = B * T;
  const int W = c->vision.width, M = c->vision.mlp, L = c->vision.layers, H = c->vision.heads;
  const int E = c->embed_dim, K = 3 * P * P;
  double g = bench_gemm(r, 0, 1, B * G2, W, K, 1);                                 /* patch embedding */
  g += bench_gemm(r, 0, 1, N, 3 * W, W, L) + bench_gemm(r, 0, 1, N, W, W, L);      /* qkv, out */
  g += bench_gemm(r, 0, 1, N, M, W, L) + bench_gemm(r, 0, 1, N, W, M, L);          /* fc1, fc2 */
  g += bench_attention_gemms(r, B, H, T, W / H, 0, L);
  g += bench_gemm(r, 0, 1, B, E, W, 1) + bench_gemm(r, 0, 1, B, C, E, 1);          /* proj, classifier */
  /* backward */
  g += bench_gemm(r, 0, 0, B, E, C, 1) + bench_gemm(r, 1, 0, C, E, B, 1);          /* classifier */
  g += bench_gemm(r, 0, 0, B, W, E, 1) + bench_gemm(r, 1, 0, E, W, B, 1);          /* proj */
  g += bench_gemm(r, 0, 0, N, M, W, L) + bench_gemm(r, 1, 0, W, M, N, L);          /* fc2 */
  g += bench_gemm(r, 0, 0, N, W, M, L) + bench_gemm(r, 1, 0, M, W, N, L);          /* fc1 */
  g += bench_gemm(r, 0, 0, N, W, W, L) + bench_gemm(r, 1, 0, W, W, N, L);          /* out */
  g += bench_attention_gemms(r, B, H, T, W / H, 1, L);
  g += bench_gemm(r, 0, 0, N, W, 3 * W, L) + bench_gemm(r, 1, 0, 3 * W, W, N, L);  /* qkv */
  g += bench_gemm(r, 1, 0, W, K, B * G2, 1);                                       /* patch weights */
  return g;
}

int main(int argc, char **argv) {
  const char *model = NULL, *arch = NULL, *inputs = NULL;
  int iters = 5;
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "--model") && i + 1 < argc) model = argv[++i];
    else if (!strcmp(argv[i], "--arch") && i + 1 < argc) arch = argv[++i];
    else if (!strcmp(argv[i], "--inputs") && i + 1 < argc) inputs = argv[++i];
    else if (!strcmp(argv[i], "--iters") && i + 1 < argc) iters = atoi(argv[++i]);
    else {
      fprintf(stderr, "usage: bench_aft --model TOWER.safetensors --arch NAME|JSON --inputs INPUTS.safetensors "
                      "[--iters 5]\n");
      return 2;
    }
  }
  if (!model || !arch || !inputs || iters <= 0 || iters > MAX_ITERS) {
    fprintf(stderr, "bench_aft: --model, --arch and --inputs are required; 1 <= iters <= %d\n", MAX_ITERS);
    return 2;
  }
  taca_error err = {{0}};
  nn_backend *be = nn_backend_cpu_create(0);
  st_file in = {0};
  aft_model *am = NULL;
  aft_prior pr = {0};
  float *F = NULL, *dF = NULL, *logits = NULL, *dlogits = NULL;
  int *labels = NULL, rc = 1, opened = 0;
  if (st_open(&in, inputs, &err)) goto fail;
  opened = 1;
  const int64_t any4[4] = {-1, 3, -1, -1}, any2[2] = {-1, -1};
  const st_tensor *tp = input(&in, "pixels", TACA_DT_F32, 4, any4, &err);
  if (!tp) goto fail;
  const int B = (int)tp->shape[0], S = (int)tp->shape[2];
  const int64_t pshape[2] = {B, -1}, lshape[1] = {B};
  const st_tensor *tP = input(&in, "P", TACA_DT_F32, 2, pshape, &err), *tl, *tw, *tb, *ts;
  if (!tP || !(tl = input(&in, "labels", TACA_DT_I32, 1, lshape, &err)) ||
      !(tw = input(&in, "classifier.weight", TACA_DT_F32, 2, any2, &err)))
    goto fail;
  const int dP = (int)tP->shape[1], C = (int)tw->shape[0];
  const int64_t bshape[1] = {C}, sshape[1] = {dP};
  if (!(tb = input(&in, "classifier.bias", TACA_DT_F32, 1, bshape, &err)) ||
      !(ts = input(&in, "aft.s", TACA_DT_F32, 1, sshape, &err)))
    goto fail;
  if (tp->shape[3] != S) {
    taca_fail(&err, "--inputs: pixels are not square");
    goto fail;
  }
  if (!(am = aft_model_create(arch, S, C, be, B, 1, &err)) || aft_model_load_tower(am, model, arch, &err)) goto fail;
  const int E = am->feat_dim;
  if (tw->shape[1] != E) {
    taca_fail(&err, "--inputs: classifier.weight is [%d, %lld], the tower's features are %d wide", C,
              (long long)tw->shape[1], E);
    goto fail;
  }
  if (aft_prior_init(&pr, AFT_METHOD_AFT, E, dP, B, 1, &err)) goto fail;
  const float *pixels = st_f32_view(tp), *P = st_f32_view(tP);
  float *host_cw = malloc(sizeof(float) * C * E), *host_cb = malloc(sizeof(float) * C);
  F = malloc(sizeof(float) * B * E), dF = malloc(sizeof(float) * B * E);
  logits = malloc(sizeof(float) * B * C), dlogits = malloc(sizeof(float) * B * C);
  labels = malloc(sizeof(int) * B);
  if (!pixels || !P || !host_cw || !host_cb || !F || !dF || !logits || !dlogits || !labels) {
    free(host_cw), free(host_cb);
    taca_fail(&err, pixels && P ? "out of memory" : "--inputs: pixels or P not aligned F32");
    goto fail;
  }
  if (st_to_f32(tw, host_cw, &err) || st_to_f32(tb, host_cb, &err) || st_to_f32(ts, pr.p, &err)) {
    free(host_cw), free(host_cb);
    goto fail;
  }
  be->upload(be, am->p + am->off_cw, host_cw, sizeof(float) * C * E);
  be->upload(be, am->p + am->off_cb, host_cb, sizeof(float) * C);
  free(host_cw), free(host_cb);
  for (int i = 0; i < B; i++) {
    int32_t v;
    memcpy(&v, (const char *)tl->data + 4 * i, 4);
    labels[i] = v;
  }

  double tf[MAX_ITERS], tc[MAX_ITERS], ta[MAX_ITERS], tbw[MAX_ITERS], tu[MAX_ITERS], tstep[MAX_ITERS];
  double losses[MAX_ITERS + 1], ce0 = 0, reg0 = 0;
  for (int r = -1; r < iters; r++) { /* r = -1: warm-up (page faults, OpenBLAS buffers) */
    double t0 = bench_now();
    aft_model_zero_grad(am);
    aft_prior_zero_grad(&pr);
    if (aft_model_forward(am, pixels, B, F, logits, &err)) goto fail;
    double t1 = bench_now();
    ce_result ce;
    if (cross_entropy(logits, labels, B, C, 1.0 / B, dlogits, &ce, &err)) goto fail;
    double t2 = bench_now(), term;
    if (aft_prior_loss(&pr, F, P, B, BETA, &term, dF, &err)) goto fail;
    double t3 = bench_now();
    if (aft_model_backward(am, dF, dlogits, &err)) goto fail;
    double t4 = bench_now();
    aft_model_update(am, LR, WEIGHT_DECAY);
    aft_prior_update(&pr, PRIOR_LR);
    be->synchronize(be);
    double t5 = bench_now();
    losses[r + 1] = ce.loss_sum / B + BETA * term;
    if (r < 0) ce0 = ce.loss_sum / B, reg0 = term;
    else tf[r] = t1 - t0, tc[r] = t2 - t1, ta[r] = t3 - t2, tbw[r] = t5 - t3, tu[r] = t5 - t4, tstep[r] = t5 - t0;
  }
  const double step = bench_median(tstep, iters);
  bench_roofline roof = {0};
  const double g = step_gemms(&roof, &am->tower->cfg, B, C);

  printf("{\"impl\": \"taca-c\", \"arch\": \"%s\", \"batch\": %d, \"classes\": %d, \"pretrained_dim\": %d, "
         "\"threads\": %d, \"samples_per_s\": %.3f, \"step_s\": %.4f, \"forward_s\": %.4f, \"ce_s\": %.5f, "
         "\"aft_s\": %.5f, \"backward_s\": %.4f, \"update_s\": %.4f, \"gflop_per_sample\": %.2f, "
         "\"gflops\": %.1f, \"sgemm_s_per_step\": %.4f, \"roofline_samples_per_s\": %.3f, "
         "\"fraction_of_roofline\": %.3f, \"memory_mib\": %.0f, \"loss_ce\": %.9g, \"loss_reg\": %.9g, "
         "\"loss\": %.9g, \"losses\": [",
         arch, B, C, dP, omp_get_max_threads(), B / step, step, bench_median(tf, iters), bench_median(tc, iters),
         bench_median(ta, iters), bench_median(tbw, iters), bench_median(tu, iters), roof.flops / B * 1e-9,
         roof.flops / step * 1e-9, g, B / g, g / step, clip_train_memory_bytes(am->tower) / 1048576.0, ce0, reg0,
         losses[0]);
  for (int i = 0; i <= iters; i++) printf("%s%.9g", i ? ", " : "", losses[i]);
  printf("]}\n");
  rc = 0;
fail:
  if (rc) fprintf(stderr, "bench_aft: %s\n", err.msg);
  free(F), free(dF), free(logits), free(dlogits), free(labels);
  aft_prior_free(&pr);
  aft_model_free(am);
  if (opened) st_close(&in);
  nn_backend_destroy(be);
  return rc;
}
