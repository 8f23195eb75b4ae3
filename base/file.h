/* file.h: reading a whole (small) file into memory: configs, PEM files, vocabularies, test inputs.
 * Large inputs (weights, arrays) are mapped instead (base/mapfile.h). */
#ifndef TACA_BASE_FILE_H
#define TACA_BASE_FILE_H

#include <stddef.h>

#include "base/error.h"

/* Reads the file at `path` into a new buffer (*data, freed by the caller), *len bytes plus a NUL
 * after them, so text can be used as a C string. Files over max_bytes (0 = no limit) fail with a
 * message naming the file and the limit, as do unreadable ones and directories. */
int taca_read_file(const char *path, size_t max_bytes, unsigned char **data, size_t *len, taca_error *err);

#endif
