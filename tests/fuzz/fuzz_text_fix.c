/* fuzz_text_fix.c: fuzz target for text/text_fix (ftfy.fix_text in C). Any bytes: invalid UTF-8 must
 * be refused with a one-line reason; valid UTF-8 must come out as valid, NUL-free UTF-8 that holds
 * none of what ftfy's character-level fixes remove (control characters, CR and Unicode line
 * separators, curly quotes, Latin ligatures, full-width ASCII, U+3000). Every single fix and the
 * badness count run on the input too. Inputs over 16 KiB are skipped to keep each run cheap. */
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "text/text_fix.h"

#define CHECK(c)                                                                                   \
  do {                                                                                             \
    if (!(c)) abort();                                                                             \
  } while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Decodes one UTF-8 sequence (strict); returns its length, 0 if invalid. */
static size_t next_cp(const uint8_t *s, size_t n, uint32_t *c) {
  uint8_t b = s[0];
  if (b < 0x80) {
    *c = b;
    return 1;
  }
  size_t len = b >= 0xF0 ? 4 : b >= 0xE0 ? 3 : b >= 0xC2 ? 2 : 0;
  if (!len || len > n || b > 0xF4) return 0;
  uint32_t v = b & (0x7F >> len);
  for (size_t k = 1; k < len; k++) {
    if ((s[k] & 0xC0) != 0x80) return 0;
    v = (v << 6) | (s[k] & 0x3F);
  }
  static const uint32_t min[5] = {0, 0, 0x80, 0x800, 0x10000};
  if (v < min[len] || v > 0x10FFFF || (v >= 0xD800 && v <= 0xDFFF)) return 0;
  *c = v;
  return len;
}

static bool removed_by_ftfy(uint32_t c) {
  return c <= 0x08 || c == 0x0B || (c >= 0x0D && c <= 0x1F) || c == 0x7F || c == 0x85 ||
         c == 0x2028 || c == 0x2029 || (c >= 0x206A && c <= 0x206F) || c == 0xFEFF ||
         (c >= 0xFFF9 && c <= 0xFFFC) || c == 0x02BC || (c >= 0x2018 && c <= 0x201F) ||
         (c >= 0xFB00 && c <= 0xFB06) || c == 0x3000 || (c >= 0xFF01 && c <= 0xFF5E);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size > 16384) return 0;
  taca_error err;
  err.msg[0] = 0;
  char *out = NULL;
  size_t n = 0;
  if (text_fix((const char *)data, size, &out, &n, &err) != 0) {
    CHECK(err.msg[0] != 0 && strchr(err.msg, '\n') == NULL && strstr(err.msg, "invalid UTF-8"));
    CHECK(text_fix_badness((const char *)data, size, &err) == -1);
    return 0;
  }
  CHECK(out != NULL && out[n] == 0 && strlen(out) == n);
  for (size_t i = 0; i < n;) {
    uint32_t c;
    size_t k = next_cp((const uint8_t *)out + i, n - i, &c);
    CHECK(k > 0);
    CHECK(!removed_by_ftfy(c));
    i += k;
  }
  free(out);
  CHECK(text_fix_badness((const char *)data, size, &err) >= 0);
  for (int step = TEXT_FIX_UNESCAPE_HTML; step <= TEXT_FIX_NFC; step++) {
    CHECK(text_fix_apply((text_fix_step)step, (const char *)data, size, &out, &n, &err) == 0);
    CHECK(out[n] == 0);
    free(out);
  }
  /* the byte transcoders take any bytes */
  uint8_t *buf = malloc(3 * size + 1);
  CHECK(buf != NULL);
  CHECK(text_fix_restore_byte_a0(data, size, buf) <= size + size / 2);
  CHECK(text_fix_replace_lossy_sequences(data, size, buf) <= 3 * size);
  free(buf);
  return 0;
}
