/* collectives_nccl.c: the gradient all-reduce of GPU ranks (collectives_nccl.h): NCCL through the
 * CUDA module (nn/backend_cuda.h), bootstrapped through MPI, and the MPI fallbacks. No CUDA header
 * or library here: a CPU run of taca-train never loads them. */
#include "trainer/collectives_nccl.h"

#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nn/backend_cuda.h"

struct taca_nccl {
  void *comm; /* the module's communicator */
};

int comm_nccl_init(taca_nccl **out, const taca_comm *c, nn_backend *be, taca_error *err) {
  *out = NULL;
  if (c->size == 1) return 0;
  /* Every rank must take the same path: NCCL only if all ranks are on GPUs with it, else MPI (a
   * device rank then goes through its host copy). */
  const size_t id_bytes = be->host_memory ? 0 : nn_cuda_nccl_id_bytes(NULL);
  if (comm_any(c, id_bytes == 0)) return 0;
  /* Rank 0's unique id, with whether it could make one, so that no rank waits for a missing id. */
  struct {
    int ok;
    unsigned char id[256];
  } msg;
  if (id_bytes > sizeof msg.id) return taca_fail(err, "NCCL unique id of %zu bytes", id_bytes);
  memset(&msg, 0, sizeof msg);
  taca_error why = {{0}};
  if (c->rank == 0) msg.ok = nn_cuda_nccl_unique_id(msg.id, &why) == 0;
  if (comm_bcast(c, &msg, sizeof msg, 0, err)) return -1;
  if (!msg.ok) {
    if (c->rank == 0) return taca_fail(err, "%s", why.msg);
    return comm_fail_elsewhere(err, "NCCL setup failed on rank 0 (no unique id)");
  }
  taca_nccl *nc = calloc(1, sizeof *nc);
  if (!nc) return taca_fail(err, "out of memory");
  if (nn_cuda_nccl_init(&nc->comm, be, c->size, msg.id, c->rank, err)) {
    free(nc);
    return -1;
  }
  *out = nc;
  return 0;
}

void comm_nccl_free(taca_nccl *nc) {
  if (!nc) return;
  nn_cuda_nccl_destroy(nc->comm);
  free(nc);
}

void comm_fail_fast(const taca_comm *c, taca_nccl *nc, const taca_error *err) {
  if (c->size == 1 || comm_failed_elsewhere()) return;
  fprintf(stderr, "taca-train: rank %d: %s\n", c->rank, err && err->msg[0] ? err->msg : "failed");
  fflush(stderr);
  if (nc) nn_cuda_nccl_abort(nc->comm);
  comm_abort(1);
}

int comm_grads_allreduce_sum(const taca_comm *c, taca_nccl *nc, nn_backend *be, float *buf,
                             size_t n, taca_error *err) {
  if (c->size == 1 || n == 0) return 0;
  if (nc) return nn_cuda_nccl_allreduce_sum(nc->comm, be, buf, n, err);
  if (be->host_memory) return comm_allreduce_sum(c, buf, n, err);
  /* A device buffer without NCCL: through the host (download waits for the gradients). */
  float *host = malloc(sizeof(float) * n);
  if (!host) return taca_fail(err, "out of memory staging %zu gradients for MPI", n);
  be->download(be, host, buf, sizeof(float) * n);
  int rc = comm_allreduce_sum(c, host, n, err);
  if (rc == 0) be->upload(be, buf, host, sizeof(float) * n);
  free(host);
  return rc;
}

int comm_local_rank(const taca_comm *c, taca_error *err) {
  if (c->size == 1) return 0;
  MPI_Comm local;
  int rc = MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, c->rank, MPI_INFO_NULL, &local);
  if (rc != MPI_SUCCESS) {
    taca_fail(err, "MPI_Comm_split_type(MPI_COMM_TYPE_SHARED) failed (error %d)", rc);
    return -1;
  }
  int lr = -1;
  MPI_Comm_rank(local, &lr);
  MPI_Comm_free(&local);
  return lr;
}

int comm_rank_device(const taca_comm *c, const char *device, char *buf, size_t n, taca_error *err) {
  if (!strcmp(device, "cuda") && c->size > 1) {
    int lr = comm_local_rank(c, err);
    if (lr < 0) return -1;
    snprintf(buf, n, "cuda:%d", lr);
  } else {
    snprintf(buf, n, "%s", device);
  }
  return 0;
}
