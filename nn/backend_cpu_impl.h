/* backend_cpu_impl.h: the CPU backend's private state and the names shared by backend_cpu.c
 * (inference ops, the ops table) and backend_cpu_backward.c (training ops). Not part of the backend
 * interface.
 *
 * Both files, and backend_cpu_bf16.c (the BF16 GEMMs), are compiled twice (nn/CMakeLists.txt): for the portable baseline (NN_CPU_ISA base,
 * the build's -march) and, on x86-64, for x86-64-v3 (AVX2, FMA, F16C: NN_CPU_ISA v3); the
 * dispatcher (backend_cpu_dispatch.c) creates one or the other at run time. Every function of the
 * two files carries its ISA in its symbol (cpu_layernorm_forward_v3, ..._base, through the defines
 * below), so that tests/integration/test_portable.sh can tell dispatched code from baseline code in
 * the binaries. A function added to either file gets a line here. */
#ifndef TACA_NN_BACKEND_CPU_IMPL_H
#define TACA_NN_BACKEND_CPU_IMPL_H

#include <stddef.h>
#include <stdint.h>

#include "nn/backend.h"

#ifndef NN_CPU_ISA
#define NN_CPU_ISA base
#endif
#define NN_CPU_CAT_(a, b) a##_##b
#define NN_CPU_CAT(a, b) NN_CPU_CAT_(a, b)
#define NN_CPU_FN(name) NN_CPU_CAT(name, NN_CPU_ISA)

/* backend_cpu.c */
#define nn_backend_cpu_create_isa NN_CPU_FN(nn_backend_cpu_create_isa)
#define cpu_alloc NN_CPU_FN(cpu_alloc)
#define cpu_free NN_CPU_FN(cpu_free)
#define cpu_copy NN_CPU_FN(cpu_copy)
#define cpu_synchronize NN_CPU_FN(cpu_synchronize)
#define cpu_host_alloc NN_CPU_FN(cpu_host_alloc)
#define cpu_host_free NN_CPU_FN(cpu_host_free)
#define linear_part NN_CPU_FN(linear_part)
#define cpu_linear_forward NN_CPU_FN(cpu_linear_forward)
#define cpu_linear_forward_f32 NN_CPU_FN(cpu_linear_forward_f32)
#define cpu_layernorm_forward NN_CPU_FN(cpu_layernorm_forward)
#define cpu_bias_act_forward NN_CPU_FN(cpu_bias_act_forward)
#define softmax_row NN_CPU_FN(softmax_row)
#define cpu_attention_forward NN_CPU_FN(cpu_attention_forward)
#define cpu_im2col_patches NN_CPU_FN(cpu_im2col_patches)
#define cpu_vit_embed NN_CPU_FN(cpu_vit_embed)
#define cpu_text_embed NN_CPU_FN(cpu_text_embed)
#define cpu_gather_rows NN_CPU_FN(cpu_gather_rows)
#define cpu_destroy NN_CPU_FN(cpu_destroy)
#define cpu_ops NN_CPU_FN(cpu_ops)
/* backend_cpu_backward.c */
#define cpu_zero NN_CPU_FN(cpu_zero)
#define cpu_copy_dev NN_CPU_FN(cpu_copy_dev)
#define cpu_scale NN_CPU_FN(cpu_scale)
#define column_sums NN_CPU_FN(column_sums)
#define par_sgemm NN_CPU_FN(par_sgemm)
#define cpu_linear_backward NN_CPU_FN(cpu_linear_backward)
#define cpu_layernorm_backward NN_CPU_FN(cpu_layernorm_backward)
#define cpu_bias_act_forward_pre NN_CPU_FN(cpu_bias_act_forward_pre)
#define gelu_grad_f NN_CPU_FN(gelu_grad_f)
#define quick_gelu_grad_f NN_CPU_FN(quick_gelu_grad_f)
#define cpu_act_backward NN_CPU_FN(cpu_act_backward)
#define cpu_attention_backward NN_CPU_FN(cpu_attention_backward)
#define cpu_scatter_rows_add NN_CPU_FN(cpu_scatter_rows_add)
#define cpu_adamw_update NN_CPU_FN(cpu_adamw_update)
/* backend_cpu_bf16.c */
#define cpu_bf16_register NN_CPU_FN(cpu_bf16_register)
#define cpu_bf16_unregister NN_CPU_FN(cpu_bf16_unregister)
#define cpu_bf16_find NN_CPU_FN(cpu_bf16_find)
#define cpu_bf16_linear_forward NN_CPU_FN(cpu_bf16_linear_forward)
#define cpu_bf16_linear_dinp NN_CPU_FN(cpu_bf16_linear_dinp)
#define cpu_bf16_destroy NN_CPU_FN(cpu_bf16_destroy)
#define cpu_bf16_probe NN_CPU_FN(cpu_bf16_probe)
#define bf16_state NN_CPU_FN(bf16_state)
#define bf16_round NN_CPU_FN(bf16_round)
#define bf16_widen NN_CPU_FN(bf16_widen)
#define bf16_grow NN_CPU_FN(bf16_grow)
#define bf16_rows NN_CPU_FN(bf16_rows)
#define bf16_mm_free NN_CPU_FN(bf16_mm_free)
#define bf16_mm_create NN_CPU_FN(bf16_mm_create)
#define bf16_mm_get NN_CPU_FN(bf16_mm_get)
#define bf16_mm_run NN_CPU_FN(bf16_mm_run)
#define bf16_dnnl_free NN_CPU_FN(bf16_dnnl_free)
#define bf16_portable_forced NN_CPU_FN(bf16_portable_forced)

struct cpu_bf16;

typedef struct cpu_impl {
  int threads;         /* OpenMP threads every op uses (OpenBLAS itself runs single-threaded) */
  float *scratch;      /* per-thread attention score rows: threads * scratch_per */
  size_t scratch_per;  /* floats per thread */
  struct cpu_bf16 *bf16; /* BF16 weight registry and GEMM state (backend_cpu_bf16.c); NULL: none */
} cpu_impl;

/* The thread count of a CPU backend's parallel loops: every `omp parallel` of an op names it, so that
 * --threads holds for the whole op (OpenMP's default would be all cores, whatever --threads says). */
#define CPU_NT(be) (((const cpu_impl *)(be)->impl)->threads)

/* The training ops (backend_cpu_backward.c), in backend_cpu.c's ops table. */
void cpu_zero(nn_backend *be, void *p, size_t bytes);
void cpu_copy_dev(nn_backend *be, void *dst, const void *src, size_t bytes);
void cpu_scale(nn_backend *be, float *x, size_t n, float alpha);
void cpu_linear_backward(nn_backend *be, float *dinp, int lddi, float *dw, float *db,
                         const float *dout, int ldd, const float *inp, int ldi, const float *w,
                         int N, int C, int OC, int accumulate);
void cpu_layernorm_backward(nn_backend *be, float *dinp, float *dw, float *db, const float *dout,
                            const float *inp, const float *mean, const float *rstd, const float *w,
                            int N, int C);
void cpu_bias_act_forward_pre(nn_backend *be, float *out, float *pre, const float *bias, size_t N,
                              int C, nn_act act);
void cpu_act_backward(nn_backend *be, float *dinp, const float *dout, const float *pre, size_t n,
                      nn_act act);
void cpu_attention_backward(nn_backend *be, float *dqkv, float *datt, const float *dout,
                            const float *qkv, const float *att, int B, int T, int C, int NH,
                            int causal);
void cpu_scatter_rows_add(nn_backend *be, float *out, const float *inp, const int64_t *rows, int n,
                          int C);
void cpu_adamw_update(nn_backend *be, float *p, const float *g, float *m, float *v, size_t n,
                      double lr, double beta1, double beta2, double eps, double weight_decay,
                      long t);

/* The F32 linear_forward (backend_cpu.c), also the portable BF16 path's product. */
void cpu_linear_forward_f32(nn_backend *be, float *out, int ldo, const float *inp, int ldi,
                            const float *w, const float *bias, int N, int C, int OC, int accumulate);

/* backend_cpu_bf16.c: the bf16_register/bf16_unregister slots; the BF16 copy of W[rows, cols] when
 * it lies inside a registered region (else NULL); the BF16 GEMMs of linear_forward and of
 * linear_backward's dinp on that copy; freeing the state; the implementation's name. */
int cpu_bf16_register(nn_backend *be, const float *w, size_t n, taca_error *err);
void cpu_bf16_unregister(nn_backend *be, const float *w);
const uint16_t *cpu_bf16_find(nn_backend *be, const float *w, size_t rows, size_t cols);
void cpu_bf16_linear_forward(nn_backend *be, float *out, int ldo, const float *inp, int ldi,
                             const uint16_t *h, const float *bias, int N, int C, int OC,
                             int accumulate);
void cpu_bf16_linear_dinp(nn_backend *be, float *dinp, int lddi, const float *dout, int ldd,
                          const uint16_t *h, int N, int C, int OC, int accumulate);
void cpu_bf16_destroy(nn_backend *be);
void cpu_bf16_probe(char *buf, size_t n);

/* The backend of this file pair's ISA (nn_backend_cpu_create_isa_base / _v3). */
nn_backend *nn_backend_cpu_create_isa(int threads);
/* The ISAs compiled in: nn_backend_cpu_create_isa_base always; _v3 where TACA_CPU_V3 is defined. */
nn_backend *nn_backend_cpu_create_isa_base(int threads);
nn_backend *nn_backend_cpu_create_isa_v3(int threads);

#endif
