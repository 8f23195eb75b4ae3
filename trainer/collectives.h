/* collectives.h: the data-parallel collectives of taca-train over MPI (Open MPI on CPU). A run
 * started without mpirun is a world of one (MPI singleton), so every call works unchanged.
 * Gradients never pass through the feature servers: ranks all-reduce among themselves. */
#ifndef TACA_TRAINER_COLLECTIVES_H
#define TACA_TRAINER_COLLECTIVES_H

#include <stddef.h>

#include "base/error.h"

typedef struct taca_comm {
  int rank, size;
} taca_comm;

int comm_init(taca_comm *c, int *argc, char ***argv, taca_error *err);
void comm_finalize(void);
/* Ends every rank (MPI_Abort) with status: for errors one rank cannot report to the others. */
void comm_abort(int status);

/* In place: buf[i] = sum over ranks of buf[i]. */
int comm_allreduce_sum(const taca_comm *c, float *buf, size_t n, taca_error *err);
/* Every rank contributes n floats; global receives size * n floats in rank order. */
int comm_allgather(const taca_comm *c, const float *local, size_t n, float *global, taca_error *err);
int comm_bcast(const taca_comm *c, void *buf, size_t bytes, int root, taca_error *err);
/* Logical OR of flag over ranks (lockstep decisions: stop, error, checkpoint). */
int comm_any(const taca_comm *c, int flag);
/* Sum over ranks of one double (metrics). */
double comm_sum(const taca_comm *c, double v);

/* Failing fast. A rank whose error is its own (not learned from comm_any) ends the whole run with
 * comm_fail_fast (collectives_nccl.h): its message, then MPI_Abort, so peers never wait in a
 * collective it will not join. A rank that only learned of another's failure records it with
 * comm_fail_elsewhere (formats err like taca_fail, returns -1) and leaves quietly: the failing rank
 * aborts the run. */
int comm_fail_elsewhere(taca_error *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
int comm_failed_elsewhere(void); /* 1 after comm_fail_elsewhere */

#endif
