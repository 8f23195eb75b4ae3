/* fuzz_tar.c: fuzz target for the WebDataset tar shard reader (services/precompute/data_source.c).
 * The input is written to a temporary file, opened as the one input of a one-shard data source
 * (counting pass), then read to the end; every sample's key, caption and image bytes are touched.
 * Checks the reader's own contract on a file that does not change: reading returns exactly the
 * entries the counting pass found, at positions 0, 1, 2, ... (never "changed since it was counted"),
 * and seeking to an entry continues from that entry with the same key. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "services/precompute/data_source.h"

static char g_path[64];

static void remove_file(void) {
  if (g_path[0]) unlink(g_path);
}

static int write_input(const uint8_t *data, size_t size) {
  if (!g_path[0]) {
    snprintf(g_path, sizeof g_path, "/tmp/taca-fuzz-tar-%d.tar", (int)getpid());
    atexit(remove_file);
  }
  FILE *f = fopen(g_path, "wb");
  if (!f) return -1;
  size_t w = size ? fwrite(data, 1, size, f) : 0;
  return fclose(f) == 0 && w == size ? 0 : -1;
}

static volatile uint64_t g_sink;

static void touch(const ds_sample *s) {
  uint64_t h = strlen(s->key) + (s->caption ? strlen(s->caption) : 0) + (uint64_t)s->label;
  for (size_t i = 0; i < s->image_len; i += 97) h += s->image[i];
  if (s->image_len) h += s->image[s->image_len - 1];
  if (s->problem) h += strlen(s->problem);
  g_sink += h;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (write_input(data, size)) return 0;
  char *specs[1] = {g_path};
  data_source *ds;
  taca_error err = {{0}};
  if (ds_open(&ds, specs, 1, 0, 1, &err)) return 0;
  uint64_t total = ds_total_entries(ds), n = 0;
  char mid_key[4096] = "";
  ds_sample s;
  int rc = ds_seek(ds, 0, 0, &err); /* rc after the loop: 0 at the end, -1 on an error */
  if (rc == 0)
    while ((rc = ds_next(ds, &s, &err)) == 1) {
      touch(&s);
      if (s.input != 0 || s.entry != n) abort(); /* positions are what a resumed run seeks to */
      if (n == total / 2) snprintf(mid_key, sizeof mid_key, "%s", s.key);
      n++;
      ds_sample_free(&s);
    }
  /* counting and reading disagree on a file nobody changed */
  if ((rc == 0 && n != total) || (rc < 0 && strstr(err.msg, "changed since it was counted"))) abort();
  if (rc == 0 && total > 0 && ds_seek(ds, 0, total / 2, &err) == 0) {
    if (ds_next(ds, &s, &err) == 1) {
      if (s.entry != total / 2 || strcmp(s.key, mid_key)) abort();
      ds_sample_free(&s);
    }
  }
  ds_close(ds);
  return 0;
}
