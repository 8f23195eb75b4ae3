/* file_hash.c: XXH3-128 of a file's bytes (see file_hash.h). */
#include "base/file_hash.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <xxhash.h>

int taca_file_xxh3(const char *path, char hex[33], taca_error *err) {
  FILE *f = fopen(path, "rb");
  if (!f) return taca_fail(err, "%s: %s", path, strerror(errno));
  XXH3_state_t *st = XXH3_createState();
  enum { CHUNK = 1 << 20 };
  uint8_t *buf = malloc(CHUNK);
  if (!st || !buf) {
    fclose(f);
    XXH3_freeState(st);
    free(buf);
    return taca_fail(err, "out of memory");
  }
  XXH3_128bits_reset(st);
  size_t n;
  while ((n = fread(buf, 1, CHUNK, f)) > 0) XXH3_128bits_update(st, buf, n);
  int bad = ferror(f);
  fclose(f);
  free(buf);
  if (!bad) {
    XXH128_canonical_t c;
    XXH128_canonicalFromHash(&c, XXH3_128bits_digest(st));
    for (int i = 0; i < 16; i++) snprintf(hex + 2 * i, 3, "%02x", c.digest[i]);
  }
  XXH3_freeState(st);
  return bad ? taca_fail(err, "%s: read error", path) : 0;
}

void taca_model_weights_path(const char *model_path, char *out, size_t cap) {
  struct stat sb;
  if (stat(model_path, &sb) == 0 && S_ISDIR(sb.st_mode))
    snprintf(out, cap, "%s/model.safetensors", model_path);
  else
    snprintf(out, cap, "%s", model_path);
}
