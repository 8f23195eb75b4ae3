/* backend_cuda_nccl.cu: NCCL for the CUDA module: unique ids, one communicator per rank on its
 * backend's GPU, and the in-place sum all-reduce on the backend's compute stream (so it is ordered
 * after the backward that produced the gradients and before the AdamW that reads them). The MPI
 * bootstrap is the caller's (trainer/collectives_nccl.c). Built where nccl.h is found.
 *
 * libnccl is loaded lazily (dlopen of $TACA_NCCL_LIBRARY, else libnccl.so.2 by the module's rpath
 * and the usual search), on the first NCCL call: a machine without NCCL still runs the CUDA
 * backend, and GPU ranks without it all-reduce through MPI on the host (trainer/collectives_nccl.h).
 *
 * Communicators are non-blocking (ncclConfig_t.blocking = 0): initialisation is polled against a
 * deadline (TACA_NCCL_INIT_TIMEOUT_S, default 120 s) and aborted (ncclCommAbort) when it passes, so
 * a rank whose peers never join fails with a message instead of waiting for ever; a failed rank
 * aborts its communicator on the way out (cuda_nccl_abort). */
#include <dlfcn.h>
#include <nccl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "nn/backend_cuda_impl.h"

static_assert(sizeof(ncclUniqueId) == CUDA_NCCL_ID_BYTES, "NCCL unique id size changed");

/* The NCCL entry points this module uses, resolved from the loaded library. */
static struct nccl_api {
  int loaded;                 /* 1 ok, -1 failed (why in error) */
  char error[400];
  ncclResult_t (*GetUniqueId)(ncclUniqueId *);
  ncclResult_t (*CommInitRankConfig)(ncclComm_t *, int, ncclUniqueId, int, ncclConfig_t *);
  ncclResult_t (*CommGetAsyncError)(ncclComm_t, ncclResult_t *);
  ncclResult_t (*AllReduce)(const void *, void *, size_t, ncclDataType_t, ncclRedOp_t, ncclComm_t,
                            cudaStream_t);
  ncclResult_t (*CommDestroy)(ncclComm_t);
  ncclResult_t (*CommAbort)(ncclComm_t);
  const char *(*GetErrorString)(ncclResult_t);
  const char *(*GetLastError)(ncclComm_t);
} api;
static pthread_once_t api_once = PTHREAD_ONCE_INIT;

static void api_load(void) {
  const char *path = getenv("TACA_NCCL_LIBRARY");
  if (!path || !*path) path = "libnccl.so.2";
  void *h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
  if (!h) {
    snprintf(api.error, sizeof api.error, "NCCL not available (%s): %s", path, dlerror());
    api.loaded = -1;
    return;
  }
  struct {
    const char *name;
    void **slot;
  } syms[] = {{"ncclGetUniqueId", (void **)&api.GetUniqueId},
              {"ncclCommInitRankConfig", (void **)&api.CommInitRankConfig},
              {"ncclCommGetAsyncError", (void **)&api.CommGetAsyncError},
              {"ncclAllReduce", (void **)&api.AllReduce},
              {"ncclCommDestroy", (void **)&api.CommDestroy},
              {"ncclCommAbort", (void **)&api.CommAbort},
              {"ncclGetErrorString", (void **)&api.GetErrorString},
              {"ncclGetLastError", (void **)&api.GetLastError}};
  for (size_t i = 0; i < sizeof syms / sizeof syms[0]; i++) {
    if (!(*syms[i].slot = dlsym(h, syms[i].name))) {
      snprintf(api.error, sizeof api.error, "NCCL library %s lacks %s (NCCL 2.14 or newer needed)", path,
               syms[i].name);
      api.loaded = -1;
      return;
    }
  }
  api.loaded = 1;
}

static int api_ready(taca_error *err) {
  pthread_once(&api_once, api_load);
  if (api.loaded == 1) return 1;
  if (err) cuda_fail(err, "%s", api.error);
  return 0;
}

size_t cuda_nccl_id_bytes(taca_error *err) { return api_ready(err) ? CUDA_NCCL_ID_BYTES : 0; }

typedef struct cuda_nccl {
  ncclComm_t comm;
  int device;
} cuda_nccl;

static int nccl_fail(taca_error *err, const char *what, ncclResult_t r, ncclComm_t comm) {
  const char *last = api.GetLastError(comm);
  return cuda_fail(err, "%s failed: %s%s%s", what, api.GetErrorString(r), last && *last ? ": " : "",
                   last ? last : "");
}

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* Polls a non-blocking communicator until its last call is complete, up to timeout_s. */
static ncclResult_t nccl_wait(ncclComm_t comm, double timeout_s, int *timed_out) {
  const double deadline = now_s() + timeout_s;
  *timed_out = 0;
  for (;;) {
    ncclResult_t state = ncclSuccess;
    ncclResult_t r = api.CommGetAsyncError(comm, &state);
    if (r != ncclSuccess) return r;
    if (state != ncclInProgress) return state;
    if (now_s() > deadline) {
      *timed_out = 1;
      return ncclInProgress;
    }
    struct timespec ts = {0, 1000000};
    nanosleep(&ts, NULL);
  }
}

static double init_timeout_s(void) {
  const char *s = getenv("TACA_NCCL_INIT_TIMEOUT_S");
  double t = s && *s ? atof(s) : 120.0;
  return t > 0 ? t : 120.0;
}

int cuda_nccl_unique_id(void *id, taca_error *err) {
  if (!api_ready(err)) return -1;
  ncclResult_t r = api.GetUniqueId((ncclUniqueId *)id);
  return r == ncclSuccess ? 0 : nccl_fail(err, "ncclGetUniqueId", r, NULL);
}

int cuda_nccl_init(void **comm, nn_backend *be, int nranks, const void *id, int rank,
                   taca_error *err) {
  *comm = NULL;
  if (!api_ready(err)) return -1;
  cuda_impl *im = cuda_enter(be);
  if (!im) return cuda_fail(err, "NCCL init: the CUDA backend failed before: %s",
                            ((cuda_impl *)be->impl)->error);
  cuda_nccl *nc = (cuda_nccl *)calloc(1, sizeof *nc);
  if (!nc) return cuda_fail(err, "out of memory");
  nc->device = im->device;
  ncclUniqueId uid;
  memcpy(&uid, id, sizeof uid);
  ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
  config.blocking = 0;
  ncclResult_t r = api.CommInitRankConfig(&nc->comm, nranks, uid, rank, &config);
  const double timeout = init_timeout_s();
  int timed_out = 0;
  if (r == ncclInProgress || r == ncclSuccess) r = nccl_wait(nc->comm, timeout, &timed_out);
  if (r != ncclSuccess) {
    int rc = timed_out ? cuda_fail(err, "ncclCommInitRank: rank %d of %d: the other ranks did not join within %.0f s "
                                        "(TACA_NCCL_INIT_TIMEOUT_S)", rank, nranks, timeout)
                       : nccl_fail(err, "ncclCommInitRank", r, nc->comm);
    if (nc->comm) api.CommAbort(nc->comm);
    free(nc);
    return rc;
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
  ncclResult_t r = api.AllReduce(buf, buf, n, ncclFloat, ncclSum, nc->comm, im->compute);
  if (r != ncclSuccess && r != ncclInProgress) return nccl_fail(err, "ncclAllReduce", r, nc->comm);
  /* Non-blocking communicator: wait until the all-reduce is enqueued (not until it is done). */
  int timed_out = 0;
  ncclResult_t async = nccl_wait(nc->comm, init_timeout_s(), &timed_out);
  if (timed_out) return cuda_fail(err, "ncclAllReduce: not enqueued within %.0f s", init_timeout_s());
  if (async != ncclSuccess) return nccl_fail(err, "the NCCL communicator", async, nc->comm);
  return 0;
}

void cuda_nccl_destroy(void *comm) {
  cuda_nccl *nc = (cuda_nccl *)comm;
  if (!nc) return;
  cudaSetDevice(nc->device);
  api.CommDestroy(nc->comm);
  free(nc);
}

void cuda_nccl_abort(void *comm) {
  cuda_nccl *nc = (cuda_nccl *)comm;
  if (!nc) return;
  cudaSetDevice(nc->device);
  api.CommAbort(nc->comm);
  free(nc);
}
