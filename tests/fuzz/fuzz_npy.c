/* fuzz_npy.c: libFuzzer target for npy_parse. Any input must either be refused with a one-line
 * reason or yield an owned, 64-byte aligned copy whose size matches shape and dtype exactly. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "base/npy.h"

#define CHECK(c) \
  do {           \
    if (!(c)) abort(); \
  } while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  npy_array a;
  taca_error err;
  err.msg[0] = 0;
  if (npy_parse(data, size, &a, &err) < 0) {
    CHECK(err.msg[0] != 0 && strchr(err.msg, '\n') == NULL);
    CHECK(a.data == NULL);
    return 0;
  }
  CHECK(a.data != NULL && ((uintptr_t)a.data & 63) == 0);
  CHECK(a.ndim >= 0 && a.ndim <= NPY_MAX_DIMS);
  size_t numel = 1;
  for (int d = 0; d < a.ndim; d++) {
    CHECK(a.shape[d] >= 0);
    numel *= (size_t)a.shape[d];
  }
  size_t nbytes = numel * taca_dtype_size(a.dtype);
  CHECK(numel == a.numel && nbytes <= size);
  /* the data is the file's tail, copied */
  CHECK(nbytes == 0 || memcmp(a.data, data + size - nbytes, nbytes) == 0);
  npy_free(&a);
  return 0;
}
