/* file.c: whole-file reads (base/file.h). */
#include "base/file.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

int taca_read_file(const char *path, size_t max_bytes, unsigned char **data, size_t *len, taca_error *err) {
  *data = NULL;
  *len = 0;
  FILE *fp = fopen(path, "rb");
  if (!fp) return taca_fail(err, "%s: cannot open: %s", path, strerror(errno));
  struct stat sb;
  if (fstat(fileno(fp), &sb) == 0 && S_ISDIR(sb.st_mode)) {
    fclose(fp);
    return taca_fail(err, "%s: is a directory, not a file", path);
  }
  size_t cap = 0, n = 0;
  unsigned char *buf = NULL;
  for (;;) {
    if (cap - n < 4096) {
      size_t ncap = cap ? cap * 2 : 65536;
      unsigned char *nb = realloc(buf, ncap + 1);
      if (!nb) {
        free(buf);
        fclose(fp);
        return taca_fail(err, "%s: out of memory reading it", path);
      }
      buf = nb;
      cap = ncap;
    }
    size_t got = fread(buf + n, 1, cap - n, fp);
    n += got;
    if (max_bytes && n > max_bytes) {
      free(buf);
      fclose(fp);
      return taca_fail(err, "%s: larger than %zu bytes", path, max_bytes);
    }
    if (got == 0) break;
  }
  int bad = ferror(fp);
  fclose(fp);
  if (bad) {
    free(buf);
    return taca_fail(err, "%s: read error", path);
  }
  buf[n] = 0;
  *data = buf;
  *len = n;
  return 0;
}
