/* nccl_allreduce.c: the GPU ranks' gradient all-reduce (trainer/collectives_nccl.c) end to end, for
 * tests/integration/test_nccl.sh. Every rank (mpirun -np K, one GPU each: cuda:LOCAL_RANK) fills a
 * device buffer with rank-dependent small integers, all-reduces it with NCCL on the backend's stream,
 * then once more through the host (the MPI fallback), and checks both sums exactly (integers are
 * exact in F32). Prints "ok" on rank 0.
 *   nccl-allreduce --count   prints how many GPUs the CUDA runtime sees (0 when none) and exits */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nn/backend.h"
#include "nn/backend_cuda.h"
#include "trainer/collectives.h"
#include "trainer/collectives_nccl.h"

static float value(int rank, size_t i) { return (float)((rank + 1) * ((int)(i % 7) - 3)); }

int main(int argc, char **argv) {
  if (argc > 1 && !strcmp(argv[1], "--count")) {
    printf("%d\n", nn_cuda_device_count(NULL));
    return 0;
  }
  taca_error err = {{0}};
  taca_comm c;
  if (comm_init(&c, &argc, &argv, &err)) {
    fprintf(stderr, "nccl-allreduce: %s\n", err.msg);
    return 1;
  }
  int rc = 1;
  nn_backend *be = NULL;
  taca_nccl *nc = NULL;
  float *dev = NULL, *host = NULL;
  const size_t n = 1000003; /* odd, several MB */
  const int lr = comm_local_rank(&c, &err);
  char device[32];
  snprintf(device, sizeof device, "cuda:%d", lr);
  if (lr < 0 || !(be = nn_backend_create(device, 0, &err)) || comm_nccl_init(&nc, &c, be, &err))
    goto done;
  if (!nc) {
    taca_fail(&err, "no NCCL communicator (a world of %d rank(s))", c.size);
    goto done;
  }
  host = malloc(sizeof(float) * n);
  dev = be->alloc(be, sizeof(float) * n);
  if (!host || !dev) {
    taca_fail(&err, "out of memory");
    goto done;
  }
  const float ranks_sum = (float)c.size * (c.size + 1) / 2; /* sum of rank + 1 */
  for (int pass = 0; pass < 2; pass++) {
    for (size_t i = 0; i < n; i++) host[i] = value(c.rank, i);
    be->upload(be, dev, host, sizeof(float) * n);
    if (comm_grads_allreduce_sum(&c, pass == 0 ? nc : NULL, be, dev, n, &err)) goto done;
    be->download(be, host, dev, sizeof(float) * n);
    if (nn_backend_cuda_check(be, &err)) goto done;
    for (size_t i = 0; i < n; i++) {
      const float want = ranks_sum * (float)((int)(i % 7) - 3);
      if (host[i] != want) {
        taca_fail(&err, "%s all-reduce: element %zu is %g, expected %g", pass ? "MPI" : "NCCL", i,
                  host[i], want);
        goto done;
      }
    }
  }
  rc = 0;
done:
  if (rc) fprintf(stderr, "nccl-allreduce rank %d: %s\n", c.rank, err.msg);
  else if (c.rank == 0) printf("ok: %d ranks, %zu floats, NCCL and MPI sums exact\n", c.size, n);
  if (dev) be->free(be, dev);
  free(host);
  comm_nccl_free(nc);
  nn_backend_destroy(be);
  if (comm_any(&c, rc != 0)) rc = 1;
  comm_finalize();
  return rc;
}
