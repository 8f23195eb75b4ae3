/* mapfile.c: read-only mapping of whole regular files. */
#include "base/mapfile.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

int taca_map_file(const char *path, size_t min_size, const char *what, void **map, size_t *size,
                  taca_error *err) {
  *map = NULL;
  *size = 0;
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return taca_fail(err, "%s: cannot open: %s", path, strerror(errno));
  struct stat sb;
  if (fstat(fd, &sb) < 0) {
    int e = errno;
    close(fd);
    return taca_fail(err, "%s: cannot stat: %s", path, strerror(e));
  }
  if (!S_ISREG(sb.st_mode)) {
    close(fd);
    return taca_fail(err, "%s: not a regular file", path);
  }
  size_t n = (size_t)sb.st_size;
  if (n < min_size || n == 0) {
    close(fd);
    return taca_fail(err, "%s: truncated: %zu bytes, shorter than %s", path, n, what);
  }
  void *m = mmap(NULL, n, PROT_READ, MAP_PRIVATE, fd, 0);
  int e = errno;
  close(fd);
  if (m == MAP_FAILED) return taca_fail(err, "%s: cannot mmap %zu bytes: %s", path, n, strerror(e));
  *map = m;
  *size = n;
  return 0;
}

void taca_unmap_file(void *map, size_t size) {
  if (map) munmap(map, size);
}
