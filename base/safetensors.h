/* safetensors.h: strict reader (mmap, zero-copy) and atomic writer of the safetensors format.
 *
 * Format: u64 little-endian header length N, N bytes of UTF-8 JSON
 * {"name": {"dtype": "F32", "shape": [...], "data_offsets": [begin, end]}, ..., "__metadata__": {str: str}},
 * then the byte buffer. Validation follows the reference implementation: N <= 100,000,000, no duplicate
 * names, known dtype, shape entries non-negative integers, end - begin == numel * size, tensors sorted by
 * offset are contiguous starting at 0, and 8 + N + last end == file size exactly. */
#ifndef TACA_BASE_SAFETENSORS_H
#define TACA_BASE_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

#include "base/dtype.h"
#include "base/error.h"

#define ST_MAX_DIMS 8

typedef struct st_tensor {
  char *name;
  taca_dtype dtype;
  int ndim;
  int64_t shape[ST_MAX_DIMS];
  size_t numel;
  size_t nbytes;
  const void *data; /* points into the mapping (or the parsed buffer); may be unaligned */
} st_tensor;

typedef struct st_file {
  void *map;          /* mmap of the whole file (NULL when parsed from a caller's buffer) */
  size_t map_size;
  int n;              /* number of tensors */
  st_tensor *tensors; /* in header order */
  int n_meta;
  char **meta_keys, **meta_values; /* __metadata__, string -> string */
} st_file;

/* Maps and validates a file. On error the reason names the file and what is wrong. */
int st_open(st_file *f, const char *path, taca_error *err);
/* Validates a buffer in memory (used by st_open and by the fuzzer). buf must outlive f. */
int st_parse(st_file *f, const void *buf, size_t len, taca_error *err);
void st_close(st_file *f);

const st_tensor *st_find(const st_file *f, const char *name);
const char *st_meta(const st_file *f, const char *key); /* NULL if absent */

/* Zero-copy F32 view: the tensor's data when it is F32 and 4-byte aligned, else NULL. */
const float *st_f32_view(const st_tensor *t);
/* Converts a float tensor (F16/BF16/F32/F64) into dst (numel floats). -1 with a reason otherwise. */
int st_to_f32(const st_tensor *t, float *dst, taca_error *err);

/* Copies tensor `name`, which must be F32 with exactly n elements, into dst (state files this
 * project writes itself). -1 with a reason naming the tensor when it is missing or differs. */
int st_read_f32_exact(const st_file *f, const char *name, size_t n, float *dst, taca_error *err);
/* Metadata `key` as an integer >= 0 (a step count). -1 with a reason when missing or not one. */
int st_meta_count(const st_file *f, const char *key, long *out, taca_error *err);

/* Writer: collect tensors (data is referenced, not copied, until st_writer_save), then save
 * atomically: write PATH.tmp.PID, fsync, rename over PATH, fsync the directory. The header is padded
 * with spaces to a multiple of 8; tensors are laid out in the order added. */
typedef struct st_writer st_writer;
st_writer *st_writer_new(void);
int st_writer_add(st_writer *w, const char *name, taca_dtype dtype, int ndim, const int64_t *shape,
                  const void *data, taca_error *err);
int st_writer_meta(st_writer *w, const char *key, const char *value, taca_error *err);
int st_writer_save(st_writer *w, const char *path, taca_error *err);
void st_writer_free(st_writer *w);

#endif
