/* backend_cuda_backward.cu: the CUDA backend's training kernels: column sums (bias gradients),
 * LayerNorm backward, bias + activation keeping the pre-activation, activation backward, the
 * attention softmax backward, scatter-add of rows, and AdamW.
 *
 * Shapes as in backend_cuda_kernels.cu: grid-stride elementwise loops, one warp per row for row
 * reductions. Reductions over rows (bias, LayerNorm weight and bias gradients) are deterministic:
 * a block of 32 x 32 threads owns 32 columns; thread (x, y) sums rows y, y + 32, ... of column x
 * in double (coalesced: a warp reads 32 adjacent floats of one row), then the 32 partial sums of
 * each column are added in a fixed order from shared memory. No atomics anywhere, so two runs give
 * the same bits. */
#include <math.h>

#include "nn/backend_cuda_impl.h"

#define THREADS 256
#define WARPS_PER_BLOCK (THREADS / 32)
#define FULL_MASK 0xffffffffu
#define TILE 32 /* columns per block, and row groups per block, of the column reductions */

__device__ __forceinline__ float warp_sum(float v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(FULL_MASK, v, o);
  return v;
}

__device__ __forceinline__ long long warp_id(void) {
  return (long long)blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32;
}
__device__ __forceinline__ long long warp_count(void) {
  return (long long)gridDim.x * (blockDim.x / 32);
}

#define GRID_STRIDE(i, n)                                                                    \
  for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < (n);                    \
       i += (size_t)gridDim.x * blockDim.x)

__device__ __forceinline__ float gelu(float x) {
  return 0.5f * x * (1.f + erff(x * 0.70710678118654752f));
}
__device__ __forceinline__ float quick_gelu(float x) { return x / (1.f + expf(-1.702f * x)); }

/* Exact derivatives: GELU' = Phi(x) + x phi(x); QuickGELU' = s + 1.702 x s (1 - s). */
__device__ __forceinline__ float gelu_grad(float x) {
  const float cdf = 0.5f * (1.f + erff(x * 0.70710678118654752f));
  const float pdf = 0.39894228040143268f * expf(-0.5f * x * x);
  return cdf + x * pdf;
}
__device__ __forceinline__ float quick_gelu_grad(float x) {
  const float s = 1.f / (1.f + expf(-1.702f * x));
  return s + 1.702f * x * s * (1.f - s);
}

/* ---- db[j] += sum over n < N of x[n, j] (row stride ld), j < OC. Block: TILE x TILE threads. */

__global__ void column_sums_kernel(float *db, const float *x, int ld, int N, int OC) {
  __shared__ double part[TILE][TILE + 1];
  const int tx = threadIdx.x, ty = threadIdx.y, j = blockIdx.x * TILE + tx;
  double acc = 0;
  if (j < OC)
    for (int n = ty; n < N; n += TILE) acc += x[(size_t)n * ld + j];
  part[ty][tx] = acc;
  __syncthreads();
  if (ty == 0 && j < OC) {
    double s = 0;
    for (int k = 0; k < TILE; k++) s += part[k][tx];
    db[j] += (float)s;
  }
}

void cuda_column_sums(cuda_impl *im, float *db, const float *x, int ld, int N, int OC) {
  if (N <= 0 || OC <= 0) return;
  const dim3 block(TILE, TILE);
  column_sums_kernel<<<(OC + TILE - 1) / TILE, block, 0, im->compute>>>(db, x, ld, N, OC);
  CUDA_LAUNCHED(im, "column_sums_kernel");
}

/* ---- LayerNorm backward. dinp (one warp per row):
 *   dx += (dy w - mean(dy w) - xhat mean(dy w xhat)) rstd,  xhat = (x - mean) rstd;
 * dw += sum_n dy xhat, db += sum_n dy (column reductions as above). */

__global__ void layernorm_dx_kernel(float *dinp, const float *dout, const float *inp,
                                    const float *mean, const float *rstd, const float *w, int N,
                                    int C) {
  const int lane = threadIdx.x % 32;
  for (long long n = warp_id(); n < N; n += warp_count()) {
    const float *x = inp + (size_t)n * C, *dy = dout + (size_t)n * C;
    float *dx = dinp + (size_t)n * C;
    const float m = mean[n], r = rstd[n];
    float s1 = 0.f, s2 = 0.f;
    for (int i = lane; i < C; i += 32) {
      const float dn = dy[i] * w[i];
      s1 += dn;
      s2 += dn * (x[i] - m) * r;
    }
    s1 = warp_sum(s1) / C;
    s2 = warp_sum(s2) / C;
    for (int i = lane; i < C; i += 32) dx[i] += (dy[i] * w[i] - s1 - (x[i] - m) * r * s2) * r;
  }
}

__global__ void layernorm_dwdb_kernel(float *dw, float *db, const float *dout, const float *inp,
                                      const float *mean, const float *rstd, int N, int C) {
  __shared__ double pw[TILE][TILE + 1], pb[TILE][TILE + 1];
  const int tx = threadIdx.x, ty = threadIdx.y, c = blockIdx.x * TILE + tx;
  double aw = 0, ab = 0;
  if (c < C)
    for (int n = ty; n < N; n += TILE) {
      const size_t at = (size_t)n * C + c;
      const float dy = dout[at], xhat = (inp[at] - mean[n]) * rstd[n];
      aw += dy * xhat;
      ab += dy;
    }
  pw[ty][tx] = aw, pb[ty][tx] = ab;
  __syncthreads();
  if (ty == 0 && c < C) {
    double sw = 0, sb = 0;
    for (int k = 0; k < TILE; k++) sw += pw[k][tx], sb += pb[k][tx];
    if (dw) dw[c] += (float)sw;
    if (db) db[c] += (float)sb;
  }
}

void cu_layernorm_backward(nn_backend *be, float *dinp, float *dw, float *db,
                                  const float *dout, const float *inp, const float *mean,
                                  const float *rstd, const float *w, int N, int C) {
  cuda_impl *im = cuda_enter(be);
  if (!im || N <= 0 || C <= 0) return;
  if (dinp) {
    layernorm_dx_kernel<<<cuda_grid(im, (size_t)N, WARPS_PER_BLOCK), THREADS, 0, im->compute>>>(
        dinp, dout, inp, mean, rstd, w, N, C);
    if (!CUDA_LAUNCHED(im, "layernorm_dx_kernel")) return;
  }
  if (dw || db) {
    const dim3 block(TILE, TILE);
    layernorm_dwdb_kernel<<<(C + TILE - 1) / TILE, block, 0, im->compute>>>(dw, db, dout, inp, mean,
                                                                            rstd, N, C);
    CUDA_LAUNCHED(im, "layernorm_dwdb_kernel");
  }
}

/* ---- pre[i] += bias[i % C]; out[i] = act(pre[i]). */

__global__ void bias_act_pre_kernel(float *out, float *pre, const float *bias, size_t total, int C,
                                    int quick) {
  GRID_STRIDE(i, total) {
    float v = pre[i];
    if (bias) v += bias[i % C];
    pre[i] = v;
    out[i] = quick ? quick_gelu(v) : gelu(v);
  }
}

void cu_bias_act_forward_pre(nn_backend *be, float *out, float *pre, const float *bias,
                                    size_t N, int C, nn_act act) {
  cuda_impl *im = cuda_enter(be);
  const size_t total = N * (size_t)C;
  if (!im || !total) return;
  bias_act_pre_kernel<<<cuda_grid(im, total, THREADS), THREADS, 0, im->compute>>>(
      out, pre, bias, total, C, act == NN_ACT_QUICK_GELU);
  CUDA_LAUNCHED(im, "bias_act_pre_kernel");
}

/* ---- dinp[i] = dout[i] act'(pre[i]) (dinp may alias dout: each element is read, then written,
 * by the same thread). */

__global__ void act_backward_kernel(float *dinp, const float *dout, const float *pre, size_t n,
                                    int quick) {
  GRID_STRIDE(i, n) {
    const float x = pre[i];
    dinp[i] = dout[i] * (quick ? quick_gelu_grad(x) : gelu_grad(x));
  }
}

void cu_act_backward(nn_backend *be, float *dinp, const float *dout, const float *pre,
                            size_t n, nn_act act) {
  cuda_impl *im = cuda_enter(be);
  if (!im || !n) return;
  act_backward_kernel<<<cuda_grid(im, n, THREADS), THREADS, 0, im->compute>>>(
      dinp, dout, pre, n, act == NN_ACT_QUICK_GELU);
  CUDA_LAUNCHED(im, "act_backward_kernel");
}

/* ---- Softmax backward over rows of B matrices [T, T] (matrix b at + b bstride): dS holds dP and
 * becomes P * (dP - sum_j P dP) for j < len, 0 beyond (causal). One warp per row. */

__global__ void softmax_backward_kernel(float *dS, const float *P, long long bstride, int B, int T,
                                        int causal) {
  const int lane = threadIdx.x % 32;
  const long long rows = (long long)B * T;
  for (long long r = warp_id(); r < rows; r += warp_count()) {
    const long long b = r / T;
    const int i = (int)(r % T);
    const long long off = b * bstride + (long long)i * T;
    const float *p = P + off;
    float *d = dS + off;
    const int len = causal ? i + 1 : T;
    float dot = 0.f;
    for (int j = lane; j < len; j += 32) dot += p[j] * d[j];
    dot = warp_sum(dot);
    for (int j = lane; j < len; j += 32) d[j] = p[j] * (d[j] - dot);
    for (int j = len + lane; j < T; j += 32) d[j] = 0.f;
  }
}

void cuda_softmax_rows_backward(cuda_impl *im, float *dS, const float *P, long long bstride, int B,
                                int T, int causal) {
  const size_t rows = (size_t)B * T;
  if (!rows) return;
  softmax_backward_kernel<<<cuda_grid(im, rows, WARPS_PER_BLOCK), THREADS, 0, im->compute>>>(
      dS, P, bstride, B, T, causal);
  CUDA_LAUNCHED(im, "softmax_backward_kernel");
}

/* ---- out[rows[i], :] += inp[i, :] (rows distinct, so no two threads write one element). */

__global__ void scatter_rows_add_kernel(float *out, const float *inp, const int64_t *rows, int n,
                                        int C) {
  const size_t total = (size_t)n * C;
  GRID_STRIDE(i, total) {
    const size_t r = i / C, c = i % C;
    out[(size_t)rows[r] * C + c] += inp[i];
  }
}

void cu_scatter_rows_add(nn_backend *be, float *out, const float *inp, const int64_t *rows,
                                int n, int C) {
  cuda_impl *im = cuda_enter(be);
  if (!im || n <= 0 || C <= 0) return;
  const int64_t *d_rows = cuda_upload_rows(be, rows, n);
  if (!d_rows) return;
  const size_t total = (size_t)n * C;
  scatter_rows_add_kernel<<<cuda_grid(im, total, THREADS), THREADS, 0, im->compute>>>(out, inp,
                                                                                      d_rows, n, C);
  CUDA_LAUNCHED(im, "scatter_rows_add_kernel");
}

/* ---- AdamW (torch.optim.AdamW, amsgrad off). The scalars are computed on the host exactly as the
 * CPU backend does (doubles rounded to float where they meet float tensors). */

__global__ void adamw_kernel(float *p, const float *g, float *m, float *v, size_t n, float decay,
                             float step_size, float bc2_sqrt, float b1, float b2, float a1,
                             float a2, float eps) {
  GRID_STRIDE(i, n) {
    const float gi = g[i];
    const float mi = m[i] * b1 + a1 * gi;
    const float vi = v[i] * b2 + a2 * gi * gi;
    m[i] = mi;
    v[i] = vi;
    p[i] = p[i] * decay - step_size * (mi / (sqrtf(vi) / bc2_sqrt + eps));
  }
}

void cu_adamw_update(nn_backend *be, float *p, const float *g, float *m, float *v, size_t n,
                            double lr, double beta1, double beta2, double eps, double weight_decay,
                            long t) {
  cuda_impl *im = cuda_enter(be);
  if (!im || !n) return;
  const float decay = (float)(1.0 - lr * weight_decay);
  const double bc1 = 1.0 - pow(beta1, (double)t), bc2 = 1.0 - pow(beta2, (double)t);
  const float step_size = (float)(lr / bc1), bc2_sqrt = (float)sqrt(bc2);
  adamw_kernel<<<cuda_grid(im, n, THREADS), THREADS, 0, im->compute>>>(
      p, g, m, v, n, decay, step_size, bc2_sqrt, (float)beta1, (float)beta2, (float)(1.0 - beta1),
      (float)(1.0 - beta2), (float)eps);
  CUDA_LAUNCHED(im, "adamw_kernel");
}
