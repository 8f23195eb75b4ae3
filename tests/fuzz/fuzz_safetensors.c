/* fuzz_safetensors.c: libFuzzer target for st_parse. Any input must either be refused with a
 * one-line reason or parse into tensors that all lie inside the buffer and cover it exactly; the
 * float tensors are then converted, so the sanitizers see every byte the reader would touch. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "base/safetensors.h"

#define CHECK(c) \
  do {           \
    if (!(c)) abort(); \
  } while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  st_file f;
  taca_error err;
  err.msg[0] = 0;
  if (st_parse(&f, data, size, &err) < 0) {
    CHECK(err.msg[0] != 0 && strchr(err.msg, '\n') == NULL);
    CHECK(f.n == 0 && f.tensors == NULL && f.meta_keys == NULL);
    return 0;
  }
  uint64_t hlen = 0;
  for (int i = 7; i >= 0; i--) hlen = (hlen << 8) | data[i];
  const uint8_t *buf = data + 8 + hlen, *end = data + size;
  size_t covered = 0;
  for (int i = 0; i < f.n; i++) {
    const st_tensor *t = &f.tensors[i];
    CHECK(t->ndim >= 0 && t->ndim <= ST_MAX_DIMS);
    size_t numel = 1;
    for (int d = 0; d < t->ndim; d++) {
      CHECK(t->shape[d] >= 0);
      numel *= (size_t)t->shape[d];
    }
    CHECK(numel == t->numel && t->nbytes == numel * taca_dtype_size(t->dtype));
    const uint8_t *p = t->data;
    CHECK(p >= buf && p <= end && (size_t)(end - p) >= t->nbytes);
    covered += t->nbytes;
    CHECK(st_find(&f, t->name) == t);
    if (taca_dtype_is_float(t->dtype)) {
      float *out = malloc(t->numel ? t->numel * sizeof(float) : 1);
      CHECK(out != NULL);
      CHECK(st_to_f32(t, out, &err) == 0);
      const float *v = st_f32_view(t);
      if (v) CHECK(t->numel == 0 || memcmp(v, out, t->nbytes) == 0);
      free(out);
    } else {
      CHECK(st_to_f32(t, NULL, &err) == -1);
    }
  }
  CHECK(covered == (size_t)(end - buf));
  for (int i = 0; i < f.n_meta; i++) CHECK(st_meta(&f, f.meta_keys[i]) == f.meta_values[i]);
  st_close(&f);
  return 0;
}
