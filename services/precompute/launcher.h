/* launcher.h: which shard of a job this process is, taken from the launcher that started it, for
 * `--shard auto` (each shard of a precompute writes its own store with its own dense range):
 *   Open MPI             OMPI_COMM_WORLD_RANK / OMPI_COMM_WORLD_SIZE  (mpirun -np N)
 *   MPICH, Intel MPI     PMI_RANK / PMI_SIZE
 *   Slurm job arrays     SLURM_ARRAY_TASK_ID, and SLURM_ARRAY_TASK_COUNT (or MIN/MAX)  (sbatch --array)
 *   Kubernetes           JOB_COMPLETION_INDEX (Indexed Jobs), with the count from `count` (the Job's
 *                        completions; the pod is not told it)
 * The first launcher found wins, in that order. */
#ifndef TACA_PRECOMPUTE_LAUNCHER_H
#define TACA_PRECOMPUTE_LAUNCHER_H

#include "base/error.h"

/* count: the number of shards when the launcher does not say it (0 = none given). *who names the
 * launcher found ("Open MPI", ...). Fails naming the variables looked for. */
int launcher_shard(int count, int *shard, int *nshards, const char **who, taca_error *err);

/* Copies pattern into out with "{shard}" replaced by the shard number and "{nshards}" by the count
 * (for one store directory per shard: --db stores/shard-{shard}). */
int launcher_expand(const char *pattern, int shard, int nshards, char *out, size_t cap, taca_error *err);

#endif
