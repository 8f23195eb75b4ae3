/* backend_cuda_loader.c: the public CUDA API (nn/backend_cuda.h) in every program: loads the CUDA
 * module lib/libtaca_cuda.so with dlopen on first use and forwards to its function table
 * (nn/backend_cuda_module.h). Programs that never ask for a GPU never load CUDA libraries. */
#include "nn/backend_cuda.h"

#include <dlfcn.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "nn/backend_cuda_module.h"

#define MODULE_FILE "libtaca_cuda.so"

#ifdef TACA_HAVE_CUDA
static pthread_once_t once = PTHREAD_ONCE_INIT;
static const nn_cuda_module *mod;
static char why[400]; /* why the module is not there, when mod is NULL */

/* dlopen of one candidate; on failure appends the reason to why. */
static void *try_open(const char *path) {
  void *h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
  if (!h) {
    const char *e = dlerror();
    size_t len = strlen(why);
    if (len < sizeof why - 160)
      snprintf(why + len, sizeof why - len, "%s%.150s", len ? "; " : "", e ? e : path);
  }
  return h;
}

static void load(void) {
  void *h = NULL;
  const char *env = getenv("TACA_CUDA_MODULE");
  if (env && *env) {
    h = try_open(env); /* an explicit choice: no fallback to another file */
  } else {
    char exe[PATH_MAX], path[PATH_MAX + 32];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n > 0) {
      exe[n] = 0;
      char *slash = strrchr(exe, '/');
      if (slash) {
        *slash = 0;
        snprintf(path, sizeof path, "%s/../lib/" MODULE_FILE, exe);
        if (access(path, F_OK) == 0) h = try_open(path);
      }
    }
#ifdef TACA_CUDA_MODULE_PATH
    if (!h && access(TACA_CUDA_MODULE_PATH, F_OK) == 0) h = try_open(TACA_CUDA_MODULE_PATH);
#endif
    if (!h) h = try_open(MODULE_FILE);
  }
  if (!h) return;
  nn_cuda_module_fn fn;
  *(void **)&fn = dlsym(h, NN_CUDA_MODULE_SYMBOL);
  const nn_cuda_module *m = fn ? fn() : NULL;
  if (!m || m->abi != NN_CUDA_MODULE_ABI) {
    snprintf(why, sizeof why, "%s is not a taca CUDA module of this version (ABI %d, expected %d)",
             MODULE_FILE, m ? m->abi : -1, NN_CUDA_MODULE_ABI);
    dlclose(h);
    return;
  }
  mod = m;
}
#endif

/* The module, or NULL with the reason in err. */
static const nn_cuda_module *module(taca_error *err) {
#ifndef TACA_HAVE_CUDA
  taca_fail(err, "this build has no CUDA backend (configure where the CUDA toolkit is installed)");
  return NULL;
#else
  pthread_once(&once, load);
  if (!mod) taca_fail(err, "the CUDA backend module could not be loaded (%s)", why);
  return mod;
#endif
}

/* The module that made be, or NULL (be is another backend, or no module is loaded). */
static const nn_cuda_module *owner(nn_backend *be) {
  if (!be || be->host_memory) return NULL;
  const nn_cuda_module *m = module(NULL);
  return m && m->is_ours(be) ? m : NULL;
}

int nn_cuda_math_parse(const char *s, nn_cuda_math *out, taca_error *err) {
  if (!s || !*s || !strcmp(s, "f32")) *out = NN_CUDA_MATH_F32;
  else if (!strcmp(s, "tf32")) *out = NN_CUDA_MATH_TF32;
  else if (!strcmp(s, "bf16")) *out = NN_CUDA_MATH_BF16;
  else return taca_fail(err, "CUDA math mode '%s': expected f32, tf32 or bf16", s);
  return 0;
}

const char *nn_cuda_math_name(nn_cuda_math m) {
  return m == NN_CUDA_MATH_TF32 ? "tf32" : m == NN_CUDA_MATH_BF16 ? "bf16" : "f32";
}

int nn_cuda_device_count(taca_error *err) {
  const nn_cuda_module *m = module(err);
  return m ? m->device_count(err) : 0;
}

nn_backend *nn_backend_cuda_create_math(int ordinal, nn_cuda_math math, taca_error *err) {
  const nn_cuda_module *m = module(err);
  if (!m) {
    taca_error_prefix(err, "device cuda:%d", ordinal);
    return NULL;
  }
  return m->create(ordinal, math, err);
}

nn_backend *nn_backend_cuda_create(int ordinal, taca_error *err) {
  nn_cuda_math math = NN_CUDA_MATH_F32;
  const char *env = getenv("TACA_CUDA_MATH");
  if (nn_cuda_math_parse(env, &math, NULL)) {
    taca_fail(err, "TACA_CUDA_MATH=%.64s: expected f32, tf32 or bf16", env);
    return NULL;
  }
  return nn_backend_cuda_create_math(ordinal, math, err);
}

void *nn_backend_cuda_stream(nn_backend *be) {
  const nn_cuda_module *m = owner(be);
  return m ? m->stream(be) : NULL;
}

int nn_backend_cuda_device(nn_backend *be) {
  const nn_cuda_module *m = owner(be);
  return m ? m->device(be) : -1;
}

nn_cuda_math nn_backend_cuda_math(nn_backend *be) {
  const nn_cuda_module *m = owner(be);
  return m ? m->math(be) : NN_CUDA_MATH_F32;
}

int nn_backend_cuda_check(nn_backend *be, taca_error *err) {
  const nn_cuda_module *m = owner(be);
  return m ? m->check(be, err) : 0;
}

void nn_backend_cuda_memory(nn_backend *be, size_t *held, size_t *in_use) {
  const nn_cuda_module *m = owner(be);
  if (m) {
    m->memory(be, held, in_use);
    return;
  }
  if (held) *held = 0;
  if (in_use) *in_use = 0;
}

size_t nn_cuda_nccl_id_bytes(taca_error *err) {
  const nn_cuda_module *m = module(err);
  if (!m) return 0;
  if (!m->nccl_id_bytes) {
    taca_fail(err, "the CUDA backend module was built without NCCL");
    return 0;
  }
  return m->nccl_id_bytes(err);
}

int nn_cuda_nccl_unique_id(void *id, taca_error *err) {
  const nn_cuda_module *m = module(err);
  if (!m) return -1;
  if (!m->nccl_unique_id) return taca_fail(err, "the CUDA backend module was built without NCCL");
  return m->nccl_unique_id(id, err);
}

int nn_cuda_nccl_init(void **comm, nn_backend *be, int nranks, const void *id, int rank,
                      taca_error *err) {
  *comm = NULL;
  const nn_cuda_module *m = owner(be);
  if (!m) return taca_fail(err, "NCCL needs a CUDA backend (got '%s')", be ? be->name : "none");
  if (!m->nccl_init) return taca_fail(err, "the CUDA backend module was built without NCCL");
  return m->nccl_init(comm, be, nranks, id, rank, err);
}

int nn_cuda_nccl_allreduce_sum(void *comm, nn_backend *be, float *buf, size_t n, taca_error *err) {
  const nn_cuda_module *m = owner(be);
  if (!m || !m->nccl_allreduce_sum || !comm)
    return taca_fail(err, "NCCL all-reduce without a CUDA backend and an NCCL communicator");
  return m->nccl_allreduce_sum(comm, be, buf, n, err);
}

void nn_cuda_nccl_destroy(void *comm) {
  if (!comm) return;
  const nn_cuda_module *m = module(NULL);
  if (m && m->nccl_destroy) m->nccl_destroy(comm);
}

void nn_cuda_nccl_abort(void *comm) {
  if (!comm) return;
  const nn_cuda_module *m = module(NULL);
  if (m && m->nccl_abort) m->nccl_abort(comm);
}
