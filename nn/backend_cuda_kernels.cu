/* backend_cuda_kernels.cu: the CUDA backend's forward kernels: bias add (after the linear GEMM),
 * LayerNorm, bias + GELU/QuickGELU, the attention softmax fused with its scale and causal mask,
 * ViT patch extraction and token assembly, text embedding, row gather, scaling.
 *
 * Every kernel is one of two textbook shapes:
 *  - elementwise: a grid-stride loop over a flat index (size_t), decoded into coordinates;
 *  - per-row reductions: one warp per row (rows in a grid-stride loop, so every lane of a warp
 *    takes the same rows and the shuffles always see all 32 lanes), lane-strided over the row,
 *    sums and maxima combined with __shfl_xor_sync butterflies.
 * Arithmetic is F32 with the library's accurate expf/erff (no fast-math), matching the CPU
 * backend's formulas term by term. */
#include <math.h>

#include "nn/backend_cuda_impl.h"

#define THREADS 256
#define WARPS_PER_BLOCK (THREADS / 32)
#define FULL_MASK 0xffffffffu

__device__ __forceinline__ float warp_sum(float v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(FULL_MASK, v, o);
  return v;
}

__device__ __forceinline__ float warp_max(float v) {
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(FULL_MASK, v, o));
  return v;
}

__device__ __forceinline__ float gelu(float x) {
  return 0.5f * x * (1.f + erff(x * 0.70710678118654752f));
}

__device__ __forceinline__ float quick_gelu(float x) { return x / (1.f + expf(-1.702f * x)); }

/* Index of this warp among all warps of the grid, and their number. */
__device__ __forceinline__ long long warp_id(void) {
  return (long long)blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32;
}
__device__ __forceinline__ long long warp_count(void) {
  return (long long)gridDim.x * (blockDim.x / 32);
}

#define GRID_STRIDE(i, n)                                                                    \
  for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < (n);                    \
       i += (size_t)gridDim.x * blockDim.x)

/* ---- Linear: out[n, j] += bias[j] (row stride ldo). */

__global__ void bias_add_kernel(float *out, int ldo, const float *bias, int N, int OC) {
  const size_t total = (size_t)N * OC;
  GRID_STRIDE(i, total) {
    const size_t n = i / OC, j = i % OC;
    out[n * ldo + j] += bias[j];
  }
}

void cuda_bias_add(cuda_impl *im, float *out, int ldo, const float *bias, int N, int OC) {
  const size_t total = (size_t)N * OC;
  if (!total) return;
  bias_add_kernel<<<cuda_grid(im, total, THREADS), THREADS, 0, im->compute>>>(out, ldo, bias, N, OC);
  CUDA_LAUNCHED(im, "bias_add_kernel");
}

/* ---- LayerNorm: one warp per row; mean, then the biased variance around it (two passes, as the
 * CPU backend does), rstd = 1 / sqrt(var + 1e-5). */

__global__ void layernorm_kernel(float *out, float *mean, float *rstd, const float *inp,
                                 const float *w, const float *b, int N, int C) {
  const int lane = threadIdx.x % 32;
  for (long long n = warp_id(); n < N; n += warp_count()) {
    const float *x = inp + (size_t)n * C;
    float *o = out + (size_t)n * C;
    float s = 0.f;
    for (int i = lane; i < C; i += 32) s += x[i];
    const float m = warp_sum(s) / C;
    float v = 0.f;
    for (int i = lane; i < C; i += 32) {
      const float d = x[i] - m;
      v += d * d;
    }
    const float r = 1.0f / sqrtf(warp_sum(v) / C + 1e-5f);
    /* Every lane has read its elements of the row above: writing in place is safe. */
    for (int i = lane; i < C; i += 32) o[i] = (x[i] - m) * r * w[i] + b[i];
    if (lane == 0) {
      if (mean) mean[n] = m;
      if (rstd) rstd[n] = r;
    }
  }
}

void cu_layernorm_forward(nn_backend *be, float *out, float *mean, float *rstd,
                                 const float *inp, const float *w, const float *b, int N, int C) {
  cuda_impl *im = cuda_enter(be);
  if (!im || N <= 0 || C <= 0) return;
  layernorm_kernel<<<cuda_grid(im, (size_t)N, WARPS_PER_BLOCK), THREADS, 0, im->compute>>>(
      out, mean, rstd, inp, w, b, N, C);
  CUDA_LAUNCHED(im, "layernorm_kernel");
}

/* ---- Bias + activation, in place. */

__global__ void bias_act_kernel(float *x, const float *bias, size_t total, int C, int quick) {
  GRID_STRIDE(i, total) {
    float v = x[i];
    if (bias) v += bias[i % C];
    x[i] = quick ? quick_gelu(v) : gelu(v);
  }
}

void cu_bias_act_forward(nn_backend *be, float *x, const float *bias, size_t N, int C,
                                nn_act act) {
  cuda_impl *im = cuda_enter(be);
  const size_t total = N * (size_t)C;
  if (!im || !total) return;
  bias_act_kernel<<<cuda_grid(im, total, THREADS), THREADS, 0, im->compute>>>(
      x, bias, total, C, act == NN_ACT_QUICK_GELU);
  CUDA_LAUNCHED(im, "bias_act_kernel");
}

/* ---- Attention softmax: rows of B matrices [T, T], matrix b at S + b bstride. Row i holds raw
 * scores q_i . k_j; it becomes softmax_j(scale * score) over j < len (len = i + 1 when causal,
 * else T), and 0 for j >= len. One warp per row. */

__global__ void softmax_kernel(float *S, long long bstride, int B, int T, float scale,
                               int causal) {
  const int lane = threadIdx.x % 32;
  const long long rows = (long long)B * T;
  for (long long r = warp_id(); r < rows; r += warp_count()) {
    const long long b = r / T;
    const int i = (int)(r % T);
    float *row = S + b * bstride + (long long)i * T;
    const int len = causal ? i + 1 : T;
    float mx = -INFINITY;
    for (int j = lane; j < len; j += 32) mx = fmaxf(mx, row[j] * scale);
    mx = warp_max(mx);
    float s = 0.f;
    for (int j = lane; j < len; j += 32) {
      const float e = expf(row[j] * scale - mx);
      row[j] = e;
      s += e;
    }
    const float inv = 1.f / warp_sum(s);
    for (int j = lane; j < len; j += 32) row[j] *= inv;
    for (int j = len + lane; j < T; j += 32) row[j] = 0.f;
  }
}

void cuda_softmax_rows(cuda_impl *im, float *S, long long bstride, int B, int T, float scale,
                       int causal) {
  const size_t rows = (size_t)B * T;
  if (!rows) return;
  softmax_kernel<<<cuda_grid(im, rows, WARPS_PER_BLOCK), THREADS, 0, im->compute>>>(
      S, bstride, B, T, scale, causal);
  CUDA_LAUNCHED(im, "softmax_kernel");
}

/* ---- ViT input. out[(b G + gy) G + gx, (c P + ky) P + kx] = pixels[b, c, gy P + ky, gx P + kx]. */

__global__ void im2col_kernel(float *out, const float *pixels, int B, int S, int P, int G) {
  const size_t K = (size_t)3 * P * P, total = (size_t)B * G * G * K;
  GRID_STRIDE(i, total) {
    const size_t row = i / K, k = i % K;
    const size_t b = row / ((size_t)G * G), g = row % ((size_t)G * G);
    const size_t gy = g / G, gx = g % G;
    const size_t c = k / ((size_t)P * P), ky = (k / P) % P, kx = k % P;
    out[i] = pixels[((b * 3 + c) * S + gy * P + ky) * S + gx * P + kx];
  }
}

void cu_im2col_patches(nn_backend *be, float *out, const float *pixels, int B, int S, int P) {
  cuda_impl *im = cuda_enter(be);
  if (!im || B <= 0 || P <= 0) return;
  const int G = S / P;
  const size_t total = (size_t)B * G * G * 3 * P * P;
  if (!total) return;
  im2col_kernel<<<cuda_grid(im, total, THREADS), THREADS, 0, im->compute>>>(out, pixels, B, S, P, G);
  CUDA_LAUNCHED(im, "im2col_kernel");
}

/* x[b, t, i] = (t == 0 ? cls[i] : patch_emb[b, t - 1, i]) + pos[t, i], T = G2 + 1 tokens. */
__global__ void vit_embed_kernel(float *x, const float *patch_emb, const float *cls,
                                 const float *pos, int B, int G2, int C) {
  const size_t T = (size_t)G2 + 1, total = (size_t)B * T * C;
  GRID_STRIDE(i, total) {
    const size_t c = i % C, t = (i / C) % T, b = i / (T * C);
    const float src = t == 0 ? cls[c] : patch_emb[(b * G2 + t - 1) * C + c];
    x[i] = src + pos[t * C + c];
  }
}

void cu_vit_embed(nn_backend *be, float *x, const float *patch_emb, const float *cls,
                         const float *pos, int B, int G2, int C) {
  cuda_impl *im = cuda_enter(be);
  const size_t total = (size_t)(B > 0 ? B : 0) * ((size_t)G2 + 1) * (size_t)(C > 0 ? C : 0);
  if (!im || !total) return;
  vit_embed_kernel<<<cuda_grid(im, total, THREADS), THREADS, 0, im->compute>>>(x, patch_emb, cls,
                                                                               pos, B, G2, C);
  CUDA_LAUNCHED(im, "vit_embed_kernel");
}

/* x[b, t, i] = tok_emb[tokens[b, t], i] + pos[t, i] (tokens [B, ctx], device memory). */
__global__ void text_embed_kernel(float *x, const int32_t *tokens, int ctx, const float *tok_emb,
                                  const float *pos, int B, int T, int C) {
  const size_t total = (size_t)B * T * C;
  GRID_STRIDE(i, total) {
    const size_t c = i % C, t = (i / C) % T, b = i / ((size_t)T * C);
    const size_t id = (size_t)tokens[b * ctx + t];
    x[i] = tok_emb[id * C + c] + pos[t * C + c];
  }
}

void cu_text_embed(nn_backend *be, float *x, const int32_t *tokens, int ctx,
                          const float *tok_emb, const float *pos, int B, int T, int C) {
  cuda_impl *im = cuda_enter(be);
  if (!im || B <= 0 || T <= 0 || C <= 0) return;
  const size_t total = (size_t)B * T * C;
  text_embed_kernel<<<cuda_grid(im, total, THREADS), THREADS, 0, im->compute>>>(x, tokens, ctx,
                                                                                tok_emb, pos, B, T, C);
  CUDA_LAUNCHED(im, "text_embed_kernel");
}

/* ---- out[i, :] = inp[rows[i], :] (rows: device copy of the host array). */

__global__ void gather_rows_kernel(float *out, const float *inp, const int64_t *rows, int n, int C) {
  const size_t total = (size_t)n * C;
  GRID_STRIDE(i, total) {
    const size_t r = i / C, c = i % C;
    out[i] = inp[(size_t)rows[r] * C + c];
  }
}

void cu_gather_rows(nn_backend *be, float *out, const float *inp, const int64_t *rows, int n,
                           int C) {
  cuda_impl *im = cuda_enter(be);
  if (!im || n <= 0 || C <= 0) return;
  const int64_t *d_rows = cuda_upload_rows(be, rows, n);
  if (!d_rows) return;
  const size_t total = (size_t)n * C;
  gather_rows_kernel<<<cuda_grid(im, total, THREADS), THREADS, 0, im->compute>>>(out, inp, d_rows,
                                                                                 n, C);
  CUDA_LAUNCHED(im, "gather_rows_kernel");
}

/* ---- x[i] *= alpha. */

__global__ void scale_kernel(float *x, size_t n, float alpha) {
  GRID_STRIDE(i, n) x[i] *= alpha;
}

void cu_scale(nn_backend *be, float *x, size_t n, float alpha) {
  cuda_impl *im = cuda_enter(be);
  if (!im || !n) return;
  scale_kernel<<<cuda_grid(im, n, THREADS), THREADS, 0, im->compute>>>(x, n, alpha);
  CUDA_LAUNCHED(im, "scale_kernel");
}

const void *cuda_probe_kernel(void) { return (const void *)scale_kernel; }
