/* replay_main.c: runs a fuzz target's LLVMFuzzerTestOneInput over files, without libFuzzer.
 *   fuzz_replay_TARGET PATH...   each PATH a file or a directory of files (not recursive)
 * Used by CTest to replay the committed seed corpora (tests/fuzz/corpus/TARGET/) in every build, and
 * by hand to replay a crash artifact. Each input is copied into a buffer of exactly its size, so a
 * sanitizer build catches any read past the end. Exits non-zero if a path cannot be read or no input
 * was found; a bug in the target aborts. */
#include <dirent.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int run_file(const char *path) {
  FILE *fp = fopen(path, "rb");
  if (!fp) {
    fprintf(stderr, "replay: cannot open %s: %s\n", path, strerror(errno));
    return -1;
  }
  size_t cap = 4096, n = 0;
  uint8_t *buf = malloc(cap);
  size_t r;
  while (buf && (r = fread(buf + n, 1, cap - n, fp)) > 0) {
    n += r;
    if (n == cap) {
      uint8_t *nb = realloc(buf, cap *= 2);
      if (!nb) free(buf);
      buf = nb;
    }
  }
  fclose(fp);
  if (!buf) {
    fprintf(stderr, "replay: out of memory reading %s\n", path);
    return -1;
  }
  uint8_t *exact = malloc(n ? n : 1);
  if (!exact) {
    free(buf);
    return -1;
  }
  memcpy(exact, buf, n);
  free(buf);
  LLVMFuzzerTestOneInput(exact, n);
  free(exact);
  return 0;
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

int main(int argc, char **argv) {
  if (argc < 2) {
    fprintf(stderr, "usage: %s FILE|DIR...\n", argv[0]);
    return 2;
  }
  int count = 0;
  for (int i = 1; i < argc; i++) {
    struct stat sb;
    if (stat(argv[i], &sb) < 0) {
      fprintf(stderr, "replay: %s: %s\n", argv[i], strerror(errno));
      return 1;
    }
    if (!S_ISDIR(sb.st_mode)) {
      if (run_file(argv[i]) < 0) return 1;
      count++;
      continue;
    }
    DIR *d = opendir(argv[i]);
    if (!d) {
      fprintf(stderr, "replay: cannot list %s: %s\n", argv[i], strerror(errno));
      return 1;
    }
    char **names = NULL;
    size_t nn = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
      if (e->d_name[0] == '.') continue;
      char **nn2 = realloc(names, (nn + 1) * sizeof *names);
      if (!nn2) return 1;
      names = nn2;
      size_t l = strlen(argv[i]) + strlen(e->d_name) + 2;
      names[nn] = malloc(l);
      if (!names[nn]) return 1;
      snprintf(names[nn++], l, "%s/%s", argv[i], e->d_name);
    }
    closedir(d);
    qsort(names, nn, sizeof *names, cmp_str);
    for (size_t k = 0; k < nn; k++) {
      struct stat fs;
      if (stat(names[k], &fs) == 0 && S_ISREG(fs.st_mode)) {
        if (run_file(names[k]) < 0) return 1;
        count++;
      }
      free(names[k]);
    }
    free(names);
  }
  if (count == 0) {
    fprintf(stderr, "replay: no inputs found\n");
    return 1;
  }
  printf("replay: %d inputs ran cleanly\n", count);
  return 0;
}
