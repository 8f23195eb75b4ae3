/* backend_cpu_impl.h: the CPU backend's private state, shared by backend_cpu.c (inference ops) and
 * backend_cpu_backward.c (training ops). Not part of the backend interface. */
#ifndef TACA_NN_BACKEND_CPU_IMPL_H
#define TACA_NN_BACKEND_CPU_IMPL_H

#include <stddef.h>

#include "nn/backend.h"

typedef struct cpu_impl {
  int threads;         /* OpenMP threads every op uses (OpenBLAS itself runs single-threaded) */
  float *scratch;      /* per-thread attention score rows: threads * scratch_per */
  size_t scratch_per;  /* floats per thread */
} cpu_impl;

/* Registers the training ops (backend_cpu_backward.c) into a CPU backend. */
void nn_backend_cpu_add_training_ops(nn_backend *be);

#endif
