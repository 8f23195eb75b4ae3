/* backend.c: backend-independent entry points: choosing a backend by device name, host buffers. */
#include "nn/backend.h"

#include <errno.h>
#include <stddef.h>
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
  if (be) return be->host_alloc(be, bytes);
  void *p = NULL;
  if (posix_memalign(&p, 64, bytes ? bytes : 64)) return NULL;
  return p;
}

void nn_host_free(nn_backend *be, void *p) {
  if (!p) return;
  if (be) be->host_free(be, p);
  else free(p);
}

const char *nn_backend_missing_op(const nn_backend *be) {
#define SLOT(name) {#name, offsetof(nn_backend, name)}
  static const struct {
    const char *name;
    size_t offset;
  } slots[] = {SLOT(alloc), SLOT(free), SLOT(upload), SLOT(download), SLOT(synchronize),
               SLOT(linear_forward), SLOT(layernorm_forward), SLOT(bias_act_forward),
               SLOT(attention_forward), SLOT(im2col_patches), SLOT(vit_embed), SLOT(text_embed),
               SLOT(gather_rows), SLOT(zero), SLOT(copy), SLOT(scale), SLOT(linear_backward),
               SLOT(layernorm_backward), SLOT(bias_act_forward_pre), SLOT(act_backward),
               SLOT(attention_backward), SLOT(scatter_rows_add), SLOT(adamw_update),
               SLOT(host_alloc), SLOT(host_free), SLOT(destroy)};
#undef SLOT
  /* Every slot between alloc and impl is a function pointer: the list must cover them all. */
  _Static_assert(sizeof slots / sizeof slots[0] ==
                     (offsetof(nn_backend, impl) - offsetof(nn_backend, alloc)) / sizeof(void (*)(void)),
                 "nn_backend_missing_op: a slot of nn_backend is not listed");
  for (size_t i = 0; i < sizeof slots / sizeof slots[0]; i++) {
    void (*fn)(void);
    memcpy(&fn, (const char *)be + slots[i].offset, sizeof fn);
    if (!fn) return slots[i].name;
  }
  return NULL;
}

int nn_precision_parse(const char *s, nn_precision *p, taca_error *err) {
  if (s && !strcmp(s, "f32")) *p = NN_PRECISION_F32;
  else if (s && !strcmp(s, "bf16")) *p = NN_PRECISION_BF16;
  else return taca_fail(err, "precision '%s': expected f32 or bf16", s ? s : "");
  return 0;
}

const char *nn_precision_name(nn_precision p) { return p == NN_PRECISION_BF16 ? "bf16" : "f32"; }

int nn_backend_check_precision(const nn_backend *be, nn_precision p, taca_error *err) {
  if (p == NN_PRECISION_BF16 && (!be->bf16_register || !be->bf16_unregister))
    return taca_fail(err, "--precision bf16: the %s backend has no BF16 matrix multiplies (use "
                          "--precision f32 or --device cpu%s)", be->name,
                     strcmp(be->name, "cuda") ? "" : "; on a GPU, TACA_CUDA_MATH=bf16 is its own BF16 mode");
  return 0;
}
