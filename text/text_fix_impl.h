/* text_fix_impl.h: what the parts of the ftfy port share (internal to text/text_fix*.c):
 *   text_fix.c          the pipeline, HTML entities and the character-level fixes, the public API
 *   text_fix_encoding.c fix_encoding: re-decoding mojibake through ftfy's single-byte encodings
 *   text_fix_badness.c  ftfy's badness heuristic and character classes
 * Text is handled as arrays of code points; functions returning int give 0, or -1 when out of
 * memory. */
#ifndef TACA_TEXT_TEXT_FIX_IMPL_H
#define TACA_TEXT_TEXT_FIX_IMPL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* A growable array of code points. */
typedef struct {
  uint32_t *p;
  size_t n, cap;
} tf_buf;

int tf_reserve(tf_buf *b, size_t extra);
int tf_append(tf_buf *b, const uint32_t *s, size_t n);
static inline int tf_push(tf_buf *b, uint32_t c) {
  if (b->n == b->cap && tf_reserve(b, 1) != 0) return -1;
  b->p[b->n++] = c;
  return 0;
}
void tf_free(tf_buf *b);

/* Strict UTF-8 decoding as Python's codec does it; with `variants`, also ftfy's "utf-8-variants"
 * (C0 80 is U+0000, CESU-8 surrogate pairs are one character). Appends to out.
 * Returns 1 when decoded, 0 when the bytes are not valid (out then holds a partial result and
 * *bad_at, if not NULL, the offset of the first bad sequence), -1 when out of memory. */
int tf_utf8_decode(const uint8_t *b, size_t n, bool variants, tf_buf *out, size_t *bad_at);

/* Python's str.isspace() (what the re module's \s matches in str patterns). */
bool tf_isspace(uint32_t c);

/* The character classes of text_fix_tables.h (TF_C_* bits), plus TF_C_C1 for U+0080..U+009F. */
#define TF_C_C1 (1u << 18)
uint32_t tf_char_class(uint32_t c);

/* ftfy.badness: is_bad() and badness(). */
bool tf_is_bad(const uint32_t *s, size_t n);
size_t tf_badness(const uint32_t *s, size_t n);

/* ftfy.fix_encoding() of s into out (out is reset first). depth counts nested calls through
 * decode_inconsistent_utf8 (the top call passes 0). */
int tf_fix_encoding(const uint32_t *s, size_t n, tf_buf *out, int depth);
/* fixes.decode_inconsistent_utf8 and fixes.fix_c1_controls, into out (reset first). */
int tf_decode_inconsistent_utf8(const uint32_t *s, size_t n, tf_buf *out, int depth);
int tf_fix_c1_controls(const uint32_t *s, size_t n, tf_buf *out);

#endif
