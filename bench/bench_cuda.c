/* bench_cuda.c: GPU throughput of taca's CUDA backend: the CLIP vision tower's forward (ViT-L/14 by
 * default; images/s) and one TaCA training step (frozen tower with adapters in every block,
 * projector, loss, backward, AdamW; samples/s). bench/run-cuda.sh runs it beside PyTorch on the same
 * GPU and weights (bench/bench_cuda.py).
 *
 *   bench_cuda --model W.safetensors [--arch ViT-L-14] [--device cuda:0] [--math f32|tf32|bf16]
 *              [--batch 64] [--train-batch 32] [--iters 10] [--e-old 512] [--hidden 4096]
 *              [--bottleneck 128] [--recompute]
 *
 * Like the PyTorch side, inputs come from page-locked host memory and the host-to-device copy of
 * each batch is inside the timed region (the trainer's path); the loss runs on the host after a
 * download of the [B, E] features, as in taca-train. Each figure is the median of --iters timed
 * runs after one warm-up run. --batch 0 or --train-batch 0 skips that part.
 * Prints one JSON line. The math mode is passed to the backend through TACA_CUDA_MATH. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "nn/clip.h"
#include "methods/taca_loss.h"
#include "methods/taca_params.h"
#include "methods/taca_step.h"

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

static double median(double *v, int n) {
  qsort(v, n, sizeof *v, cmp_double);
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

/* GEMM FLOPs of one image through the vision tower (patch embedding, qkv, out, MLP, attention's two
 * products, projection); the elementwise work is not counted. */
static double forward_flops(const clip_config *c) {
  const double S = c->image_size, P = c->patch_size, G2 = (S / P) * (S / P), T = G2 + 1;
  const double W = c->vision.width, M = c->vision.mlp, L = c->vision.layers;
  double f = 2 * G2 * W * 3 * P * P;
  f += L * 2 * T * (3 * W * W + W * W + 2 * W * M);
  f += L * 2 * 2 * T * T * W; /* Q K^T and P V over all heads */
  return f + 2 * W * c->embed_dim;
}

int main(int argc, char **argv) {
  const char *model = NULL, *arch = "ViT-L-14", *device = "cuda:0", *math = "f32";
  int batch = 64, train_batch = 32, iters = 10, e_old = 512, hidden = 4096, bottleneck = 128;
  int recompute = 0;
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "--model") && i + 1 < argc) model = argv[++i];
    else if (!strcmp(argv[i], "--arch") && i + 1 < argc) arch = argv[++i];
    else if (!strcmp(argv[i], "--device") && i + 1 < argc) device = argv[++i];
    else if (!strcmp(argv[i], "--math") && i + 1 < argc) math = argv[++i];
    else if (!strcmp(argv[i], "--batch") && i + 1 < argc) batch = atoi(argv[++i]);
    else if (!strcmp(argv[i], "--train-batch") && i + 1 < argc) train_batch = atoi(argv[++i]);
    else if (!strcmp(argv[i], "--iters") && i + 1 < argc) iters = atoi(argv[++i]);
    else if (!strcmp(argv[i], "--e-old") && i + 1 < argc) e_old = atoi(argv[++i]);
    else if (!strcmp(argv[i], "--hidden") && i + 1 < argc) hidden = atoi(argv[++i]);
    else if (!strcmp(argv[i], "--bottleneck") && i + 1 < argc) bottleneck = atoi(argv[++i]);
    else if (!strcmp(argv[i], "--recompute")) recompute = 1;
    else {
      fprintf(stderr, "usage: bench_cuda --model W.safetensors [--arch ViT-L-14] [--device cuda:0] "
                      "[--math f32|tf32|bf16] [--batch 64] [--train-batch 32] [--iters 10] "
                      "[--e-old 512] [--hidden 4096] [--bottleneck 128] [--recompute]\n");
      return 2;
    }
  }
  if (!model || batch < 0 || train_batch < 0 || iters <= 0 || iters > 64 || e_old <= 0 ||
      hidden <= 0 || bottleneck <= 0) {
    fprintf(stderr, "bench_cuda: --model is required; batches >= 0; e-old, hidden, bottleneck > 0; "
                    "1 <= iters <= 64\n");
    return 2;
  }
  setenv("TACA_CUDA_MATH", math, 1);
  taca_error err = {{0}};
  nn_backend *be = nn_backend_create(device, 0, &err);
  if (!be) {
    fprintf(stderr, "bench_cuda: %s\n", err.msg);
    return 1;
  }
  clip_model *m = clip_model_load(model, arch, be, &err);
  if (!m) {
    fprintf(stderr, "bench_cuda: %s\n", err.msg);
    nn_backend_destroy(be);
    return 1;
  }
  const clip_config *c = &m->cfg;
  const int S = c->image_size, E = c->embed_dim;
  const int maxb = batch > train_batch ? batch : train_batch;
  const size_t npix = (size_t)(maxb ? maxb : 1) * 3 * S * S;
  float *pix = nn_host_alloc(be, sizeof(float) * npix);
  float *feats = malloc(sizeof(float) * (size_t)(batch ? batch : 1) * E);
  if (!pix || !feats) {
    fprintf(stderr, "bench_cuda: out of memory for %d images\n", maxb);
    return 1;
  }
  srand(1);
  for (size_t i = 0; i < npix; i++) pix[i] = (float)rand() / RAND_MAX * 2 - 1;
  double t[64];

  /* Forward: pixels (page-locked) -> features (host), synchronised by the download. */
  double fwd_ips = 0;
  if (batch > 0) {
    for (int r = -1; r < iters; r++) {
      const double t0 = now();
      if (clip_encode_image(m, pix, batch, feats, &err)) goto fail;
      if (r >= 0) t[r] = now() - t0;
    }
    fwd_ips = batch / median(t, iters);
  }

  /* TaCA step: zero_grad, forward, host loss, backward, AdamW, synchronised at the end. */
  double step_sps = 0, loss = 0, mem_mib = 0;
  if (train_batch > 0) {
    taca_param_config pc;
    taca_param_config_default(&pc, c, e_old);
    pc.proj_hidden = hidden;
    pc.peft.bottleneck = bottleneck;
    taca_params P;
    if (taca_params_create(&P, &pc, be, 1, &err)) goto fail;
    taca_model *tm = taca_model_create(m, &P, train_batch, recompute, &err);
    if (!tm) goto fail;
    mem_mib = taca_model_memory_bytes(tm) / 1048576.0;
    float *img = malloc(sizeof(float) * train_batch * e_old);
    float *txt = malloc(sizeof(float) * train_batch * e_old);
    if (!img || !txt) {
      fprintf(stderr, "bench_cuda: out of memory\n");
      return 1;
    }
    for (int i = 0; i < train_batch * e_old; i++) {
      img[i] = (float)rand() / RAND_MAX - 0.5f;
      txt[i] = (float)rand() / RAND_MAX - 0.5f;
    }
    const taca_loss_config lc = {taca_loss_scale(4.6052f), 1.0f, 2.0f};
    const taca_adamw_config opt = {2e-4, 0.9, 0.999, 1e-8, 0.01};
    taca_loss_terms terms = {0};
    for (int r = -1; r < iters; r++) {
      const double t0 = now();
      if (taca_step_forward_backward(tm, &P, pix, img, txt, train_batch, &lc, &terms, &err)) goto fail;
      taca_params_adamw(&P, &opt);
      be->synchronize(be);
      if (r >= 0) t[r] = now() - t0;
    }
    step_sps = train_batch / median(t, iters);
    loss = terms.loss;
    taca_model_free(tm);
    taca_params_free(&P);
    free(img), free(txt);
  }
  if (!isfinite(loss) && train_batch > 0) {
    fprintf(stderr, "bench_cuda: the step's loss is not finite (a backend failure? see above)\n");
    return 1;
  }
  const double gflop = forward_flops(c) * 1e-9;
  printf("{\"impl\": \"taca-c\", \"arch\": \"%s\", \"device\": \"%s\", \"math\": \"%s\", "
         "\"batch\": %d, \"images_per_s\": %.2f, \"forward_gflop_per_image\": %.1f, "
         "\"forward_tflops\": %.2f, \"train_batch\": %d, \"recompute\": %d, \"samples_per_s\": %.2f, "
         "\"loss\": %.4f, \"train_memory_mib\": %.0f}\n",
         arch, device, math, batch, fwd_ips, gflop, fwd_ips * gflop * 1e-3, train_batch, recompute,
         step_sps, loss, mem_mib);
  nn_host_free(be, pix);
  free(feats);
  clip_model_free(m);
  nn_backend_destroy(be);
  return 0;
fail:
  fprintf(stderr, "bench_cuda: %s\n", err.msg);
  return 1;
}
