/* atomicfile.h: write a whole file atomically, so readers see either the old file or the new one.
 *
 * The bytes go to PATH.tmp.PID, which is fsync'ed, renamed over PATH, and then the directory is
 * fsync'ed so the rename itself survives a crash. On failure the temporary file is removed and PATH
 * is left as it was. Used by the safetensors and .npy writers. */
#ifndef TACA_BASE_ATOMICFILE_H
#define TACA_BASE_ATOMICFILE_H

#include <stddef.h>

#include "base/error.h"

typedef struct taca_chunk {
  const void *data;
  size_t len;
} taca_chunk;

/* Writes the concatenation of chunks[0..n) to path. The reason names the path and the failing step. */
int taca_write_file_atomic(const char *path, const taca_chunk *chunks, int n, taca_error *err);

#endif
