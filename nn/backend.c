/* backend.c: backend-independent entry points: choosing a backend by device name, host buffers. */
#include "nn/backend.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#ifdef TACA_HAVE_CUDA
#include "nn/backend_cuda.h"
#endif

void nn_backend_destroy(nn_backend *be) {
  if (be) be->destroy(be);
}

nn_backend *nn_backend_create(const char *device, int threads, taca_error *err) {
  if (!device || !strcmp(device, "cpu")) {
    nn_backend *be = nn_backend_cpu_create(threads);
    if (!be) taca_fail(err, "out of memory creating the CPU backend");
    return be;
  }
  if (!strncmp(device, "cuda", 4) && (device[4] == 0 || device[4] == ':')) {
    long ordinal = 0;
    if (device[4] == ':') {
      char *end;
      errno = 0;
      ordinal = strtol(device + 5, &end, 10);
      if (errno || end == device + 5 || *end || ordinal < 0 || ordinal > 1023) {
        taca_fail(err, "device '%s': expected cuda:N with N a GPU number", device);
        return NULL;
      }
    }
#ifdef TACA_HAVE_CUDA
    return nn_backend_cuda_create((int)ordinal, err);
#else
    taca_fail(err, "device '%s': this build has no CUDA backend (configure with the CUDA toolkit "
                   "installed, e.g. cmake -DTACA_CUDA=ON)", device);
    return NULL;
#endif
  }
  taca_fail(err, "unknown device '%s' (expected cpu, cuda or cuda:N)", device);
  return NULL;
}

void *nn_host_alloc(nn_backend *be, size_t bytes) {
  if (be && be->host_alloc) return be->host_alloc(be, bytes);
  void *p = NULL;
  if (posix_memalign(&p, 64, bytes ? bytes : 64)) return NULL;
  return p;
}

void nn_host_free(nn_backend *be, void *p) {
  if (!p) return;
  if (be && be->host_alloc) be->host_free(be, p);
  else free(p);
}
