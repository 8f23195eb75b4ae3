/* atomicfile.c: temp file + fsync + rename + directory fsync (see atomicfile.h). */
#include "base/atomicfile.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static int write_all(int fd, const void *buf, size_t len) {
  const char *p = buf;
  while (len > 0) {
    ssize_t w = write(fd, p, len);
    if (w < 0) {
      if (errno == EINTR) continue;
      return -1;
    }
    if (w == 0) {
      errno = EIO;
      return -1;
    }
    p += w;
    len -= (size_t)w;
  }
  return 0;
}

/* fsyncs the directory that holds path ("." when path has no slash). */
static int fsync_parent_dir(const char *path) {
  const char *slash = strrchr(path, '/');
  char *dir;
  if (!slash)
    dir = strdup(".");
  else if (slash == path)
    dir = strdup("/");
  else
    dir = strndup(path, (size_t)(slash - path));
  if (!dir) return -1;
  int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  free(dir);
  if (fd < 0) return -1;
  int rc = fsync(fd);
  /* some filesystems cannot fsync a directory; the rename is then as durable as they allow */
  if (rc < 0 && (errno == EINVAL || errno == ENOTSUP)) rc = 0;
  int saved = errno;
  close(fd);
  errno = saved;
  return rc;
}

int taca_write_file_atomic(const char *path, const taca_chunk *chunks, int n, taca_error *err) {
  if (!path || !*path) return taca_fail(err, "atomic write: empty path");
  size_t tlen = strlen(path) + 32;
  char *tmp = malloc(tlen);
  if (!tmp) return taca_fail(err, "%s: out of memory", path);
  snprintf(tmp, tlen, "%s.tmp.%ld", path, (long)getpid());

  int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) {
    taca_fail(err, "%s: cannot create temporary file %s: %s", path, tmp, strerror(errno));
    free(tmp);
    return -1;
  }
  const char *step = NULL;
  for (int i = 0; i < n && !step; i++)
    if (chunks[i].len && write_all(fd, chunks[i].data, chunks[i].len) < 0) step = "write";
  if (!step && fsync(fd) < 0) step = "fsync";
  int saved = errno;
  if (close(fd) < 0 && !step) {
    step = "close";
    saved = errno;
  }
  if (!step && rename(tmp, path) < 0) {
    step = "rename";
    saved = errno;
  }
  if (step) {
    unlink(tmp);
    taca_fail(err, "%s: %s of %s failed: %s", path, step, tmp, strerror(saved));
    free(tmp);
    return -1;
  }
  free(tmp);
  if (fsync_parent_dir(path) < 0)
    return taca_fail(err, "%s: fsync of its directory failed: %s", path, strerror(errno));
  return 0;
}
