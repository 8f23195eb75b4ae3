/* backend_cuda_nccl.cu: NCCL for the CUDA module: unique ids, one communicator per rank on its
 * backend's GPU, and the in-place sum all-reduce on the backend's compute stream (so it is ordered
 * after the backward that produced the gradients and before the AdamW that reads them). The MPI
 * bootstrap is the caller's (trainer/collectives_nccl.c). Built where NCCL is found. */
#include <nccl.h>
#include <stdlib.h>
#include <string.h>

#include "nn/backend_cuda_impl.h"

static_assert(sizeof(ncclUniqueId) == CUDA_NCCL_ID_BYTES, "NCCL unique id size changed");

typedef struct cuda_nccl {
  ncclComm_t comm;
  int device;
} cuda_nccl;

static int nccl_fail(taca_error *err, const char *what, ncclResult_t r, ncclComm_t comm) {
  const char *last = ncclGetLastError(comm);
  return cuda_fail(err, "%s failed: %s%s%s", what, ncclGetErrorString(r), last && *last ? ": " : "",
                   last ? last : "");
}

int cuda_nccl_unique_id(void *id, taca_error *err) {
  ncclResult_t r = ncclGetUniqueId((ncclUniqueId *)id);
  return r == ncclSuccess ? 0 : nccl_fail(err, "ncclGetUniqueId", r, NULL);
}

int cuda_nccl_init(void **comm, nn_backend *be, int nranks, const void *id, int rank,
                   taca_error *err) {
  *comm = NULL;
  cuda_impl *im = cuda_enter(be);
  if (!im) return cuda_fail(err, "NCCL init: the CUDA backend failed before: %s",
                            ((cuda_impl *)be->impl)->error);
  cuda_nccl *nc = (cuda_nccl *)calloc(1, sizeof *nc);
  if (!nc) return cuda_fail(err, "out of memory");
  nc->device = im->device;
  ncclUniqueId uid;
  memcpy(&uid, id, sizeof uid);
  ncclResult_t r = ncclCommInitRank(&nc->comm, nranks, uid, rank);
  if (r != ncclSuccess) {
    free(nc);
    return nccl_fail(err, "ncclCommInitRank", r, NULL);
  }
  *comm = nc;
  return 0;
}

int cuda_nccl_allreduce_sum(void *comm, nn_backend *be, float *buf, size_t n, taca_error *err) {
  cuda_nccl *nc = (cuda_nccl *)comm;
  cuda_impl *im = cuda_enter(be);
  if (!im) return cuda_fail(err, "NCCL all-reduce: the CUDA backend failed before: %s",
                            ((cuda_impl *)be->impl)->error);
  if (!n) return 0;
  ncclResult_t r = ncclAllReduce(buf, buf, n, ncclFloat, ncclSum, nc->comm, im->compute);
  if (r != ncclSuccess) return nccl_fail(err, "ncclAllReduce", r, nc->comm);
  ncclResult_t async = ncclSuccess;
  r = ncclCommGetAsyncError(nc->comm, &async);
  if (r != ncclSuccess) return nccl_fail(err, "ncclCommGetAsyncError", r, nc->comm);
  if (async != ncclSuccess && async != ncclInProgress)
    return nccl_fail(err, "the NCCL communicator", async, nc->comm);
  return 0;
}

void cuda_nccl_destroy(void *comm) {
  cuda_nccl *nc = (cuda_nccl *)comm;
  if (!nc) return;
  cudaSetDevice(nc->device);
  ncclCommDestroy(nc->comm);
  free(nc);
}
