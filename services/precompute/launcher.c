/* launcher.c: the shard of this process from its launcher's environment (see launcher.h). */
#include "services/precompute/launcher.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* A non-negative integer variable: 1 with *v set, 0 when unset or empty, -1 when malformed. */
static int env_int(const char *name, long *v, taca_error *err) {
  const char *s = getenv(name);
  if (!s || !*s) return 0;
  char *end;
  long x = strtol(s, &end, 10);
  if (*end || x < 0 || x > 1000000000) return taca_fail(err, "%s='%s' is not a non-negative integer", name, s);
  *v = x;
  return 1;
}

static int pair(const char *rank_var, const char *size_var, int *shard, int *n, taca_error *err) {
  long r = 0, s = 0;
  int a = env_int(rank_var, &r, err), b;
  if (a <= 0) return a;
  if ((b = env_int(size_var, &s, err)) < 0) return -1;
  if (!b) return taca_fail(err, "%s is set but %s is not", rank_var, size_var);
  if (s < 1 || r >= s) return taca_fail(err, "%s=%ld is not below %s=%ld", rank_var, r, size_var, s);
  *shard = (int)r;
  *n = (int)s;
  return 1;
}

int launcher_shard(int count, int *shard, int *nshards, const char **who, taca_error *err) {
  int k;
  if ((k = pair("OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", shard, nshards, err))) return k < 0 ? -1 : (*who = "Open MPI", 0);
  if ((k = pair("PMI_RANK", "PMI_SIZE", shard, nshards, err))) return k < 0 ? -1 : (*who = "PMI", 0);
  long id = 0, cnt = 0, lo = 0, hi = 0;
  if ((k = env_int("SLURM_ARRAY_TASK_ID", &id, err))) {
    if (k < 0) return -1;
    int c = env_int("SLURM_ARRAY_TASK_COUNT", &cnt, err), l = env_int("SLURM_ARRAY_TASK_MIN", &lo, err),
        h = env_int("SLURM_ARRAY_TASK_MAX", &hi, err);
    if (c < 0 || l < 0 || h < 0) return -1;
    if (l <= 0) lo = 0;
    if (c <= 0 && h > 0) cnt = hi - lo + 1, c = 1;
    if (c <= 0 && count > 0) cnt = count, c = 1;
    if (c <= 0) return taca_fail(err, "SLURM_ARRAY_TASK_ID is set but neither SLURM_ARRAY_TASK_COUNT nor SLURM_ARRAY_TASK_MAX: give --shard-count");
    if (id < lo || id - lo >= cnt)
      return taca_fail(err, "SLURM_ARRAY_TASK_ID=%ld is outside the array's %ld tasks from %ld (use --array=0-%ld)", id, cnt, lo, cnt - 1);
    *shard = (int)(id - lo);
    *nshards = (int)cnt;
    *who = "Slurm array";
    return 0;
  }
  if ((k = env_int("JOB_COMPLETION_INDEX", &id, err))) {
    if (k < 0) return -1;
    if (count <= 0)
      return taca_fail(err, "JOB_COMPLETION_INDEX=%ld (a Kubernetes Indexed Job) needs the shard count: give --shard-count N "
                       "(the Job's completions)", id);
    if (id >= count) return taca_fail(err, "JOB_COMPLETION_INDEX=%ld is not below --shard-count %d", id, count);
    *shard = (int)id;
    *nshards = count;
    *who = "Kubernetes Indexed Job";
    return 0;
  }
  return taca_fail(err, "--shard auto: no launcher found (looked for OMPI_COMM_WORLD_RANK/SIZE, PMI_RANK/SIZE, "
                   "SLURM_ARRAY_TASK_ID, JOB_COMPLETION_INDEX); give --shard I/N");
}

int launcher_expand(const char *pattern, int shard, int nshards, char *out, size_t cap, taca_error *err) {
  size_t o = 0;
  for (const char *p = pattern; *p;) {
    char num[16];
    const char *put = NULL;
    if (!strncmp(p, "{shard}", 7)) snprintf(num, sizeof num, "%d", shard), put = num, p += 7;
    else if (!strncmp(p, "{nshards}", 9)) snprintf(num, sizeof num, "%d", nshards), put = num, p += 9;
    size_t l = put ? strlen(put) : 1;
    if (o + l >= cap) return taca_fail(err, "'%s': longer than %zu bytes once expanded", pattern, cap - 1);
    if (put) memcpy(out + o, put, l);
    else out[o] = *p++;
    o += l;
  }
  out[o] = 0;
  return 0;
}
