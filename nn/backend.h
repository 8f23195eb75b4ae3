/* backend.h: the compute backend interface of nn/.
 *
 * Models (nn/clip*.c, the trainer) do all arithmetic through these functions, over flat buffers that
 * live where the backend keeps memory (host for CPU, device for CUDA). Each op is a plain function of
 * (outputs, inputs, weights, sizes), as in llm.c; optional outputs that only a backward pass needs
 * (LayerNorm statistics, attention probabilities) may be NULL at inference.
 *
 * Conventions: activations are row-major [N, C] (N = batch * tokens); linear weights use PyTorch's
 * nn.Linear layout W[OC, C]; every buffer is F32. */
#ifndef TACA_NN_BACKEND_H
#define TACA_NN_BACKEND_H

#include <stddef.h>
#include <stdint.h>

typedef enum nn_act {
  NN_ACT_GELU = 0,       /* exact: 0.5 x (1 + erf(x / sqrt 2)) */
  NN_ACT_QUICK_GELU = 1, /* x * sigmoid(1.702 x), OpenAI CLIP */
} nn_act;

typedef struct nn_backend nn_backend;

struct nn_backend {
  const char *name;
  int host_memory; /* 1: buffers are plain host memory (host pointers may be used directly) */

  /* Memory (bytes). alloc returns 64-byte aligned memory, or NULL. */
  void *(*alloc)(nn_backend *be, size_t bytes);
  void (*free)(nn_backend *be, void *p);
  void (*upload)(nn_backend *be, void *dst_dev, const void *src_host, size_t bytes);
  void (*download)(nn_backend *be, void *dst_host, const void *src_dev, size_t bytes);
  void (*synchronize)(nn_backend *be);

  /* out[n, 0:OC] (row stride ldo) (+)= inp[N, C] (row stride ldi) . W[OC, C]^T + bias[OC].
   * accumulate != 0 adds into out (residual connections); bias may be NULL. */
  void (*linear_forward)(nn_backend *be, float *out, int ldo, const float *inp, int ldi,
                         const float *w, const float *bias, int N, int C, int OC, int accumulate);

  /* out[N, C] = LayerNorm(inp) * w + b, eps 1e-5, biased variance. mean/rstd [N] may be NULL. */
  void (*layernorm_forward)(nn_backend *be, float *out, float *mean, float *rstd, const float *inp,
                            const float *w, const float *b, int N, int C);

  /* In place: x[n] = act(x[n] + bias[n % C]) for n < N*C (bias may be NULL). */
  void (*bias_act_forward)(nn_backend *be, float *x, const float *bias, size_t N, int C, nn_act act);

  /* Multi-head self-attention core. qkv [B, T, 3C] holds q | k | v per token (heads contiguous
   * within each of q, k, v); out [B, T, C]. att [B, NH, T, T] receives the softmax probabilities
   * when non-NULL. causal masks keys after the query position. Scale 1/sqrt(C/NH). */
  void (*attention_forward)(nn_backend *be, float *out, float *att, const float *qkv, int B, int T,
                            int C, int NH, int causal);

  /* ViT input: patches of pixels [B, 3, S, S] (host layout CHW) rearranged to [B * G*G, 3*P*P]
   * in (channel, ky, kx) order, G = S / P. */
  void (*im2col_patches)(nn_backend *be, float *out, const float *pixels, int B, int S, int P);

  /* ViT token assembly: x[b, 0] = cls + pos[0]; x[b, 1 + p] = patch_emb[b, p] + pos[1 + p]. */
  void (*vit_embed)(nn_backend *be, float *x, const float *patch_emb, const float *cls,
                    const float *pos, int B, int G2, int C);

  /* Text input: x[b, t] = tok_emb[tokens[b, t]] + pos[t] for t < T (tokens [B, ctx] int32). */
  void (*text_embed)(nn_backend *be, float *x, const int32_t *tokens, int ctx, const float *tok_emb,
                     const float *pos, int B, int T, int C);

  /* out[i] = inp[rows[i]] for i < n (row length C); rows is a host array. */
  void (*gather_rows)(nn_backend *be, float *out, const float *inp, const int64_t *rows, int n, int C);

  void (*destroy)(nn_backend *be);
  void *impl;
};

/* The CPU backend (OpenBLAS sgemm + OpenMP). threads <= 0: all cores. */
nn_backend *nn_backend_cpu_create(int threads);
void nn_backend_destroy(nn_backend *be); /* be->destroy(be); NULL is a no-op */

#endif
