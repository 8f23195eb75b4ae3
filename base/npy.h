/* npy.h: NumPy .npy arrays in and out (format v1.0/v2.0/v3.0 header, little-endian, C order).
 *
 * Loading accepts dtypes '<f4' '<f2' '<f8' '<i4' '<i8' '|u1' '|i1' '<u2' '<i2' '|b1' (and '=' / '|'
 * byte-order marks where the size is 1 or native little-endian), refuses big-endian, Fortran order,
 * object arrays, shapes whose product overflows or does not match the data length, with a reason. */
#ifndef TACA_BASE_NPY_H
#define TACA_BASE_NPY_H

#include <stddef.h>
#include <stdint.h>

#include "base/dtype.h"
#include "base/error.h"

#define NPY_MAX_DIMS 8

typedef struct npy_array {
  taca_dtype dtype;
  int ndim;
  int64_t shape[NPY_MAX_DIMS];
  size_t numel;
  void *data;  /* owned, 64-byte aligned, numel * taca_dtype_size(dtype) bytes */
} npy_array;

int npy_load(const char *path, npy_array *out, taca_error *err);
/* Parses an in-memory .npy (used by npy_load and by the fuzzer); copies the data. */
int npy_parse(const void *buf, size_t len, npy_array *out, taca_error *err);
/* Loads as F32 [rows, cols] whatever float dtype the file holds; ndim must be 2 (or 1 -> [1, n]). */
int npy_load_f32_matrix(const char *path, npy_array *out, taca_error *err);
/* Writes atomically (temp file + rename). */
int npy_save(const char *path, taca_dtype dtype, int ndim, const int64_t *shape, const void *data,
             taca_error *err);
void npy_free(npy_array *a);

/* A .npy file mapped read-only, data not copied (for arrays larger than memory): `data` points into
 * the map (aligned as the file's header makes it: 64 bytes for files numpy writes). Same checks as
 * npy_load. Release with npy_unmap. */
typedef struct npy_view {
  taca_dtype dtype;
  int ndim;
  int64_t shape[NPY_MAX_DIMS];
  size_t numel;
  const void *data;
  void *map_;
  size_t map_size_;
} npy_view;
int npy_map(const char *path, npy_view *out, taca_error *err);
void npy_unmap(npy_view *v);

#endif
