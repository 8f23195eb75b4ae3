/* collectives_nccl.h: the gradient all-reduce of GPU ranks. With a device backend (CUDA) whose
 * module has NCCL, the ranks all-reduce the gradient buffer where it lives, with NCCL on the
 * backend's compute stream (one GPU per rank; the communicator is bootstrapped through MPI: rank 0
 * creates the NCCL unique id and broadcasts it). Otherwise the same call falls back to MPI
 * (collectives.h): directly on host memory (CPU backend), or through a host copy (a device backend
 * without NCCL; Debian's Open MPI is not CUDA-aware). */
#ifndef TACA_TRAINER_COLLECTIVES_NCCL_H
#define TACA_TRAINER_COLLECTIVES_NCCL_H

#include <stddef.h>

#include "nn/backend.h"
#include "base/error.h"
#include "trainer/collectives.h"

typedef struct taca_nccl taca_nccl;

/* Collective (every rank calls it, after comm_init and the backend's creation). Creates the NCCL
 * communicator over all ranks on the backend's GPU when, in a world of more than one rank, every
 * rank has a CUDA backend whose module has NCCL; *out = NULL otherwise (returns 0: the all-reduce
 * goes through MPI). A rank whose NCCL setup fails returns -1 with the reason; ranks
 * must then stop (comm_any). The initialisation is non-blocking with a deadline
 * (TACA_NCCL_INIT_TIMEOUT_S, default 120 s): a rank whose peers never join fails instead of
 * waiting for ever. */
int comm_nccl_init(taca_nccl **out, const taca_comm *c, nn_backend *be, taca_error *err);
void comm_nccl_free(taca_nccl *nc); /* NULL is a no-op */

/* The way out of a failed rank (collectives.h, "Failing fast"): in a world of more than one rank,
 * when err is this rank's own failure (not comm_failed_elsewhere()), aborts the NCCL communicator
 * (ncclCommAbort: no peer waits on it), prints "taca-train: rank R: MESSAGE" and ends every rank
 * with MPI_Abort (status 1); never returns then. Otherwise returns and the caller cleans up. */
void comm_fail_fast(const taca_comm *c, taca_nccl *nc, const taca_error *err);

/* In place: buf[i] = sum over ranks of buf[i], for n floats of backend memory (the trainer's flat
 * gradient). With nc: ncclAllReduce on the backend's stream, asynchronous, ordered before the
 * backend's next ops (AdamW) and completed by its next download/synchronize. Without: MPI, as the
 * file comment says. */
int comm_grads_allreduce_sum(const taca_comm *c, taca_nccl *nc, nn_backend *be, float *buf,
                             size_t n, taca_error *err);

/* This rank's index among the ranks on its node (MPI_COMM_TYPE_SHARED), e.g. the GPU it takes
 * (cuda:LOCAL_RANK) when --device cuda names none. -1 with the reason on failure. */
int comm_local_rank(const taca_comm *c, taca_error *err);

/* The device this rank computes on for a --device value: "cuda" in a world of several ranks
 * becomes "cuda:LOCAL_RANK" (one GPU per rank on each node); anything else is kept. buf receives
 * the name (n bytes). -1 with the reason on failure. */
int comm_rank_device(const taca_comm *c, const char *device, char *buf, size_t n, taca_error *err);

#endif
