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

#include "base/error.h"

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

  /* ---- Training (nn/backend_cpu_backward.c on the CPU). Backward ops follow llm.c: each is the
   * pair of a forward op above; gradients of weights are ACCUMULATED (+=) so that the caller zeroes
   * them once per step; every weight-gradient output is optional (NULL: not computed, as for frozen
   * weights, which then cost only their input-gradient GEMM). */

  /* Device memory helpers: p[0:bytes] = 0; dst[0:bytes] = src[0:bytes] (both backend memory, no
   * overlap); x[0:n] *= alpha. */
  void (*zero)(nn_backend *be, void *p, size_t bytes);
  void (*copy)(nn_backend *be, void *dst, const void *src, size_t bytes);
  void (*scale)(nn_backend *be, float *x, size_t n, float alpha);

  /* Backward of linear_forward (out = inp . W^T + bias), with dout [N, OC] (row stride ldd):
   *   dinp [N, C] (row stride lddi)  = or += (accumulate) dout . W       (skipped when dinp NULL)
   *   dw   [OC, C]                  += dout^T . inp (inp row stride ldi) (skipped when dw NULL)
   *   db   [OC]                     += sum over rows of dout             (skipped when db NULL) */
  void (*linear_backward)(nn_backend *be, float *dinp, int lddi, float *dw, float *db,
                          const float *dout, int ldd, const float *inp, int ldi, const float *w,
                          int N, int C, int OC, int accumulate);

  /* Backward of layernorm_forward, from the forward's input and its saved mean/rstd [N]:
   *   dinp [N, C] += dL/dinp (accumulates: the residual stream's gradient is added to in place);
   *   dw, db [C]  += dL/dw, dL/db (each may be NULL). */
  void (*layernorm_backward)(nn_backend *be, float *dinp, float *dw, float *db, const float *dout,
                             const float *inp, const float *mean, const float *rstd, const float *w,
                             int N, int C);

  /* Training variant of bias_act_forward that keeps the pre-activation for act_backward:
   * pre[n] += bias[n % C] (bias may be NULL), then out[n] = act(pre[n]), n < N*C. */
  void (*bias_act_forward_pre)(nn_backend *be, float *out, float *pre, const float *bias, size_t N,
                               int C, nn_act act);
  /* dinp[i] = dout[i] * act'(pre[i]) for i < n, exact derivatives (GELU: Phi(x) + x phi(x);
   * QuickGELU: s + 1.702 x s (1 - s), s = sigmoid(1.702 x)). dinp may alias dout. The gradient of
   * the bias of bias_act_forward_pre is the column sum of dinp (linear_backward's db does it). */
  void (*act_backward)(nn_backend *be, float *dinp, const float *dout, const float *pre, size_t n,
                       nn_act act);

  /* Backward of attention_forward: dqkv [B, T, 3C] (overwritten) from dout [B, T, C], the forward's
   * qkv and its softmax probabilities att [B, NH, T, T]. datt [B, NH, T, T] is scratch (must not
   * alias att). Per head: dV = P^T dO; dP = dO V^T; dS = P * (dP - rowsum(P * dP));
   * dQ = scale dS K; dK = scale dS^T Q. Causal needs no mask here: P is 0 above the diagonal. */
  void (*attention_backward)(nn_backend *be, float *dqkv, float *datt, const float *dout,
                             const float *qkv, const float *att, int B, int T, int C, int NH,
                             int causal);

  /* Backward of gather_rows: out[rows[i]] += inp[i] for i < n (row length C, rows distinct; rows is
   * a host array). */
  void (*scatter_rows_add)(nn_backend *be, float *out, const float *inp, const int64_t *rows, int n,
                           int C);

  /* One torch.optim.AdamW step (amsgrad off) over n parameters, t = the step number counted from 1:
   *   p *= 1 - lr wd;  m = b1 m + (1 - b1) g;  v = b2 v + (1 - b2) g^2;
   *   p -= lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps). */
  /* The hyperparameters are doubles, as torch's are Python floats: 1 - 0.999f is not 1 - 0.999. */
  void (*adamw_update)(nn_backend *be, float *p, const float *g, float *m, float *v, size_t n,
                       double lr, double beta1, double beta2, double eps, double weight_decay,
                       long t);

  /* Host memory for buffers the backend uploads often (the trainer's batches): page-locked on a
   * GPU, so that copies run asynchronously at full bus speed; aligned malloc on the CPU. */
  void *(*host_alloc)(nn_backend *be, size_t bytes);
  void (*host_free)(nn_backend *be, void *p);

  void (*destroy)(nn_backend *be);
  void *impl;

  /* ---- Optional: BF16 matrix multiplies (NULL where a backend has none: only the CPU backend has
   * them now; nn_backend_missing_op does not ask for them). The F32 path never changes: a backend
   * on which nothing is registered computes exactly what it computes without these slots.
   *
   * bf16_register: weight region w[0:n] (backend memory, F32, left unchanged while registered) is
   * converted once to BF16 (round to nearest even, as torch's .bfloat16()). From then on, a
   * linear_forward whose W lies wholly inside a registered region, and the dinp GEMM of a
   * linear_backward on such a W, multiply in BF16 with F32 accumulation: the activation operand is
   * rounded to BF16 at the GEMM, the output, bias, accumulation and every other op stay F32 (what
   * torch.autocast("cpu", dtype=torch.bfloat16) does to nn.Linear, with F32 outputs). Weights that
   * are never registered (trainable adapters, projectors) stay F32. Returns 0, or -1 when out of
   * memory (err says so). Registering a region twice is a no-op.
   * bf16_unregister: forgets the region registered at w (before its memory is freed). */
  int (*bf16_register)(nn_backend *be, const float *w, size_t n, taca_error *err);
  void (*bf16_unregister)(nn_backend *be, const float *w);
};

/* The arithmetic of a model's matrix multiplies (--precision, TACA_PRECISION). */
typedef enum nn_precision {
  NN_PRECISION_F32 = 0,  /* the default: everything F32 */
  NN_PRECISION_BF16 = 1, /* GEMMs on registered (frozen) weights in BF16, F32 accumulation */
} nn_precision;

/* Parses "f32" or "bf16" into *p; fails naming the value otherwise. */
int nn_precision_parse(const char *s, nn_precision *p, taca_error *err);
/* "f32" or "bf16". */
const char *nn_precision_name(nn_precision p);
/* Fails, naming the backend, when p is BF16 and be has no BF16 GEMMs; 0 otherwise. */
int nn_backend_check_precision(const nn_backend *be, nn_precision p, taca_error *err);

/* Every backend fills all the slots above from a static const table of its own (no slot is NULL;
 * test_backend_ops checks). */

/* The CPU backend (OpenBLAS sgemm + OpenMP). threads <= 0: all cores. Its vectorised ops exist for
 * the portable baseline and, on x86-64, for x86-64-v3 (AVX2/FMA/F16C), chosen at run time by the
 * CPU (nn/backend_cpu_dispatch.c); TACA_CPU_ISA=baseline in the environment forces the baseline. */
nn_backend *nn_backend_cpu_create(int threads);
/* The instruction set the CPU backend's vectorised ops use here: "x86-64-v3" or "baseline". */
const char *nn_backend_cpu_isa(void);
/* What the CPU backend's BF16 GEMMs run on here: "oneDNN <implementation>" (for instance "oneDNN
 * brg:avx512_core_amx_bf16" or "oneDNN brg:avx512_core_bf16", the kernel oneDNN picks for this
 * CPU), or "portable" (inputs rounded to BF16, products in F32 by sgemm: the same arithmetic, for
 * CPUs or builds where oneDNN has no BF16 matmul). TACA_BF16_GEMM=portable forces the portable
 * path (tests compare the two). */
const char *nn_backend_cpu_bf16_impl(void);
/* The slot name of the first NULL function pointer in be, or NULL when every slot is set. */
const char *nn_backend_missing_op(const nn_backend *be);
void nn_backend_destroy(nn_backend *be); /* be->destroy(be); NULL is a no-op */

/* The backend a --device option names: "cpu" (threads as above), "cuda" (= "cuda:0") or "cuda:N".
 * Fails with a reason for an unknown name, a build without the CUDA backend, or no such GPU. */
nn_backend *nn_backend_create(const char *device, int threads, taca_error *err);

/* Host buffers for data the backend will upload: be->host_alloc where it has one, else malloc
 * (64-byte aligned). Free with nn_host_free on the same backend; NULL is a no-op. */
void *nn_host_alloc(nn_backend *be, size_t bytes);
void nn_host_free(nn_backend *be, void *p);

#endif
