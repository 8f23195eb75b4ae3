/* mapfile.h: mapping a whole regular file read-only (the zero-copy read side of safetensors and
 * .npy; atomicfile.h is the write side). */
#ifndef TACA_BASE_MAPFILE_H
#define TACA_BASE_MAPFILE_H

#include <stddef.h>

#include "base/error.h"

/* Maps path read-only. Files shorter than min_size fail with "truncated: N bytes, shorter than
 * <what>". The reason names the path. Release with taca_unmap_file. */
int taca_map_file(const char *path, size_t min_size, const char *what, void **map, size_t *size,
                  taca_error *err);
void taca_unmap_file(void *map, size_t size);

#endif
