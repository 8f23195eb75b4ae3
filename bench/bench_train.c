/* bench_train.c: CPU throughput of one TaCA training step (frozen new vision tower with adapters in
 * every block, projector, loss, backward to every adapter and the projector, AdamW), beside the
 * OpenBLAS sgemm roofline measured on the step's own GEMM shapes in the same process.
 *
 *   bench_train --model WEIGHTS.safetensors --arch ViT-B-16 [--batch 8] [--iters 5] [--e-old 512]
 *               [--hidden 4096] [--bottleneck 128] [--layers all|A-B] [--recompute]
 *
 * Prints one JSON line: samples/s, forward and backward seconds, GFLOP per sample, the sgemm-only
 * time of one step's GEMMs, the roofline samples/s that implies and the fraction of it reached.
 * bench/run-train.sh runs this beside PyTorch (bench/bench_train.py) on the same weights. */
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench/bench_util.h"
#include "nn/clip.h"
#include "methods/taca_loss.h"
#include "methods/taca_params.h"
#include "methods/taca_step.h"

static bench_roofline roof;

static double gemm(int ta, int tb, int M, int N, int K, int count) { return bench_gemm(&roof, ta, tb, M, N, K, count); }

static double attention_gemms(int B, int H, int T, int hd, int bwd, int count) {
  return bench_attention_gemms(&roof, B, H, T, hd, bwd, count);
}

int main(int argc, char **argv) {
  const char *model = NULL, *arch = "ViT-B-16", *layers = "all";
  int batch = 8, iters = 5, e_old = 512, hidden = 4096, bottleneck = 128, recompute = 0;
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "--model") && i + 1 < argc) model = argv[++i];
    else if (!strcmp(argv[i], "--arch") && i + 1 < argc) arch = argv[++i];
    else if (!strcmp(argv[i], "--batch") && i + 1 < argc) batch = atoi(argv[++i]);
    else if (!strcmp(argv[i], "--iters") && i + 1 < argc) iters = atoi(argv[++i]);
    else if (!strcmp(argv[i], "--e-old") && i + 1 < argc) e_old = atoi(argv[++i]);
    else if (!strcmp(argv[i], "--hidden") && i + 1 < argc) hidden = atoi(argv[++i]);
    else if (!strcmp(argv[i], "--bottleneck") && i + 1 < argc) bottleneck = atoi(argv[++i]);
    else if (!strcmp(argv[i], "--layers") && i + 1 < argc) layers = argv[++i];
    else if (!strcmp(argv[i], "--recompute")) recompute = 1;
    else {
      fprintf(stderr, "usage: bench_train --model W.safetensors [--arch ViT-B-16] [--batch 8] "
                      "[--iters 5] [--e-old 512] [--hidden 4096] [--bottleneck 128] "
                      "[--layers all|A-B] [--recompute]\n");
      return 2;
    }
  }
  if (!model || batch <= 0 || iters <= 0 || iters > 32 || e_old <= 0 || hidden <= 0 || bottleneck <= 0) {
    fprintf(stderr, "bench_train: --model is required; batch, e-old, hidden, bottleneck > 0; "
                    "1 <= iters <= 32\n");
    return 2;
  }
  taca_error err;
  nn_backend *be = nn_backend_cpu_create(0);
  clip_model *m = clip_model_load(model, arch, be, &err);
  if (!m) {
    fprintf(stderr, "bench_train: %s\n", err.msg);
    return 1;
  }
  taca_param_config pc;
  taca_param_config_default(&pc, &m->cfg, e_old);
  pc.proj_hidden = hidden;
  pc.peft.bottleneck = bottleneck;
  taca_params P;
  taca_model *tm = NULL;
  if (taca_parse_layer_range(layers, pc.layers, &pc.peft.first, &pc.peft.last, &err) ||
      taca_params_create(&P, &pc, be, 1, &err) ||
      !(tm = taca_model_create(m, &P, batch, recompute, &err))) {
    fprintf(stderr, "bench_train: %s\n", err.msg);
    return 1;
  }
  /* Non-zero up-projections, as after some training (zeros would make nothing special, but this is
   * the steady state). */
  for (int l = pc.peft.first; l <= pc.peft.last; l++)
    for (int i = 0; i < pc.width * bottleneck; i++) P.p.blocks[l].up_w[i] = 1e-3f * ((i % 7) - 3);
  const clip_config *c = &m->cfg;
  const int S = c->image_size, Pp = c->patch_size, G2 = (S / Pp) * (S / Pp), T = G2 + 1;
  const int W = c->vision.width, Mw = c->vision.mlp, L = c->vision.layers, H = c->vision.heads;
  const int E = c->embed_dim, K = bottleneck, first = pc.peft.first;
  size_t npix = (size_t)batch * 3 * S * S;
  float *pix = malloc(sizeof(float) * npix), *img = malloc(sizeof(float) * batch * e_old);
  float *txt = malloc(sizeof(float) * batch * e_old), *f = malloc(sizeof(float) * batch * e_old);
  float *df = malloc(sizeof(float) * batch * e_old);
  double *work = malloc(sizeof(double) * taca_loss_work_size(batch, e_old));
  srand(1);
  for (size_t i = 0; i < npix; i++) pix[i] = (float)rand() / RAND_MAX * 2 - 1;
  for (int i = 0; i < batch * e_old; i++) {
    img[i] = (float)rand() / RAND_MAX - 0.5f;
    txt[i] = (float)rand() / RAND_MAX - 0.5f;
  }
  const taca_loss_config lc = {taca_loss_scale(4.6052f), 1.0f, 2.0f};
  const taca_adamw_config opt = {2e-4, 0.9, 0.999, 1e-8, 0.01};

  double tf[32], tb[32], ts[32];
  taca_loss_terms terms;
  for (int r = -1; r < iters; r++) { /* r = -1: warm-up (page faults, OpenBLAS buffers) */
    double t0 = bench_now();
    taca_params_zero_grad(&P);
    if (taca_model_forward(tm, &P, pix, batch, f, &err)) goto fail;
    double t1 = bench_now();
    if (taca_loss(&lc, f, txt, img, batch, e_old, 0, batch, &terms, df, work, &err) ||
        taca_model_backward(tm, &P, df, &err))
      goto fail;
    taca_params_adamw(&P, &opt);
    double t2 = bench_now();
    if (r >= 0) tf[r] = t1 - t0, tb[r] = t2 - t1, ts[r] = t2 - t0;
  }
  double step = bench_median(ts, iters), fwd = bench_median(tf, iters), bwd = bench_median(tb, iters);

  /* The step's GEMMs (backend's orientation: forward A.W^T = (0,1); input gradient dY.W = (0,0);
   * weight gradient dY^T.X = (1,0)), timed alone with sgemm. */
  const int N = batch * T;
  const int na = pc.peft.last - first + 1; /* blocks with an adapter */
  const int nb = L - 1 - first;            /* blocks backpropagated through (above the first) */
  double g = gemm(0, 1, batch * G2, W, 3 * Pp * Pp, 1);                   /* patch embedding */
  g += gemm(0, 1, N, 3 * W, W, L) + gemm(0, 1, N, W, W, L);                /* qkv, out */
  g += gemm(0, 1, N, Mw, W, L) + gemm(0, 1, N, W, Mw, L);                  /* fc1, fc2 */
  g += attention_gemms(batch, H, T, W / H, 0, L);
  g += gemm(0, 1, N, K, W, na) + gemm(0, 1, N, W, K, na);                  /* adapters */
  g += gemm(0, 1, batch, E, W, 1) + gemm(0, 1, batch, hidden, E, 1) + gemm(0, 1, batch, e_old, hidden, 1);
  /* backward */
  g += gemm(0, 0, batch, hidden, e_old, 1) + gemm(1, 0, e_old, hidden, batch, 1); /* projector fc2 */
  g += gemm(0, 0, batch, E, hidden, 1) + gemm(1, 0, hidden, E, batch, 1);         /* projector fc1 */
  g += gemm(0, 0, batch, W, E, 1);                                                /* visual proj */
  g += gemm(0, 0, N, K, W, na) + gemm(1, 0, W, K, N, na);                  /* adapter up */
  g += gemm(0, 0, N, W, K, na) + gemm(1, 0, K, W, N, na);                  /* adapter down */
  g += gemm(0, 0, N, Mw, W, nb) + gemm(0, 0, N, W, Mw, nb);                /* fc2, fc1 dinp */
  g += gemm(0, 0, N, W, W, nb) + gemm(0, 0, N, W, 3 * W, nb);              /* out, qkv dinp */
  g += attention_gemms(batch, H, T, W / H, 1, nb);
  if (recompute) { /* the forward of the blocks above the first, once more */
    g += gemm(0, 1, N, 3 * W, W, nb + 1) + gemm(0, 1, N, W, W, nb + 1);
    g += gemm(0, 1, N, Mw, W, nb + 1) + gemm(0, 1, N, W, Mw, nb + 1);
    g += attention_gemms(batch, H, T, W / H, 0, nb + 1);
    g += gemm(0, 1, N, K, W, na) + gemm(0, 1, N, W, K, na);
  }

  printf("{\"impl\": \"taca-c\", \"arch\": \"%s\", \"batch\": %d, \"threads\": %d, \"recompute\": %d, "
         "\"samples_per_s\": %.3f, \"step_s\": %.3f, \"forward_s\": %.3f, \"backward_s\": %.3f, "
         "\"loss\": %.4f, \"gflop_per_sample\": %.2f, \"gflops\": %.1f, \"sgemm_s_per_step\": %.4f, "
         "\"roofline_samples_per_s\": %.3f, \"fraction_of_roofline\": %.3f, \"memory_mib\": %.0f}\n",
         arch, batch, omp_get_max_threads(), recompute, batch / step, step, fwd, bwd, terms.loss,
         roof.flops / batch * 1e-9, roof.flops / step * 1e-9, g, batch / g, g / step,
         taca_model_memory_bytes(tm) / 1048576.0);
  taca_model_free(tm);
  taca_params_free(&P);
  clip_model_free(m);
  nn_backend_destroy(be);
  free(pix), free(img), free(txt), free(f), free(df), free(work);
  return 0;
fail:
  fprintf(stderr, "bench_train: %s\n", err.msg);
  return 1;
}
