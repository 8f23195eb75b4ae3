/* fuzz_clip_config.c: fuzz target for the JSON model configurations (nn/clip_config.c): the input is
 * written to a temporary .json file and read both as an open_clip model config and as a HuggingFace
 * config.json. A configuration either parser accepts must pass clip_config_validate or be rejected by
 * it with a reason, and its parameter counts must be computable (no overflow traps under UBSan). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "nn/clip_config.h"

static char g_path[64];

static void remove_file(void) {
  if (g_path[0]) unlink(g_path);
}

static volatile long long g_sink;

static void check(const clip_config *c) {
  taca_error err = {{0}};
  if (clip_config_validate(c, &err)) {
    if (!err.msg[0]) abort(); /* a rejection names its reason */
    return;
  }
  g_sink += clip_config_vision_params(c) + (c->has_text ? clip_config_text_params(c) : 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (!g_path[0]) {
    snprintf(g_path, sizeof g_path, "/tmp/taca-fuzz-config-%d.json", (int)getpid());
    atexit(remove_file);
  }
  FILE *f = fopen(g_path, "wb");
  if (!f) return 0;
  size_t w = size ? fwrite(data, 1, size, f) : 0;
  if (fclose(f) || w != size) return 0;
  clip_config c;
  taca_error err = {{0}};
  memset(&c, 0, sizeof c);
  if (clip_config_open_clip_json(&c, g_path, &err) == 0) check(&c);
  else if (!err.msg[0]) abort();
  memset(&c, 0, sizeof c);
  err.msg[0] = '\0';
  if (clip_config_hf_json(&c, g_path, &err) == 0) check(&c);
  else if (!err.msg[0]) abort();
  return 0;
}
