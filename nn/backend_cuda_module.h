/* backend_cuda_module.h: the interface between nn/backend_cuda_loader.c (in every program, plain C)
 * and the CUDA module lib/libtaca_cuda.so (nn/backend_cuda*.cu) it loads: the module exports one
 * function, taca_cuda_module(), returning this table. The public API is nn/backend_cuda.h; the
 * loader implements it by forwarding here. Bump NN_CUDA_MODULE_ABI when the table changes. */
#ifndef TACA_NN_BACKEND_CUDA_MODULE_H
#define TACA_NN_BACKEND_CUDA_MODULE_H

#include <stddef.h>

#include "nn/backend.h"
#include "nn/backend_cuda.h"
#include "base/error.h"

#define NN_CUDA_MODULE_ABI 2
#define NN_CUDA_MODULE_SYMBOL "taca_cuda_module"

typedef struct nn_cuda_module {
  int abi;  /* NN_CUDA_MODULE_ABI */
  int (*device_count)(taca_error *err);
  nn_backend *(*create)(int ordinal, nn_cuda_math math, taca_error *err);
  void *(*stream)(nn_backend *be);          /* these four: be is a backend this module made */
  int (*device)(nn_backend *be);
  nn_cuda_math (*math)(nn_backend *be);
  int (*check)(nn_backend *be, taca_error *err);
  void (*memory)(nn_backend *be, size_t *held, size_t *in_use);
  int (*is_ours)(nn_backend *be);           /* 1 if be was made by this module */
  /* NCCL: the functions NULL when the module was built without it; nccl_id_bytes returns 0 with
   * the reason when libnccl (loaded lazily) is missing. */
  size_t (*nccl_id_bytes)(taca_error *err);
  int (*nccl_unique_id)(void *id, taca_error *err);
  int (*nccl_init)(void **comm, nn_backend *be, int nranks, const void *id, int rank,
                   taca_error *err);
  int (*nccl_allreduce_sum)(void *comm, nn_backend *be, float *buf, size_t n, taca_error *err);
  void (*nccl_destroy)(void *comm);
  void (*nccl_abort)(void *comm);
} nn_cuda_module;

typedef const nn_cuda_module *(*nn_cuda_module_fn)(void);

#endif
