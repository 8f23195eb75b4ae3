/* file_hash.h: the content hash of a file, XXH3-128 over its bytes as 32 lower-case hex digits.
 * It is the "weights_xxh" a store records for a model (storage/README.md) and the source hashes an
 * exported adapted model records (methods/encoder.h), so the two compare as strings. */
#ifndef TACA_BASE_FILE_HASH_H
#define TACA_BASE_FILE_HASH_H

#include "base/error.h"

/* hex receives 32 hex digits and a NUL. Errors name the file. */
int taca_file_xxh3(const char *path, char hex[33], taca_error *err);

/* The weights file of a model path: PATH/model.safetensors for a directory, PATH itself otherwise. */
void taca_model_weights_path(const char *model_path, char *out, size_t cap);

#endif
