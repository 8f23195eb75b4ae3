/* text_fix.h: ftfy.fix_text() in C, on UTF-8: what OpenAI CLIP's basic_clean() runs before it
 * html-unescapes, folds whitespace and lowercases a caption. It follows python-ftfy 6.3.1 with its
 * default TextFixerConfig; text/text_fix.c says, fix by fix, what is reproduced and where it differs.
 *
 * The pipeline, per line ("segment") of the text, repeated until nothing changes:
 *   unescape_html (unless a '<' was seen) -> fix_encoding (mojibake, with ftfy's "badness"
 *   heuristic) -> fix_c1_controls -> fix_latin_ligatures -> fix_character_width -> uncurl_quotes ->
 *   fix_line_breaks -> fix_surrogates -> remove_terminal_escapes -> remove_control_chars -> NFC.
 * All functions are pure (no global state) and safe to call from several threads. */
#ifndef TACA_TEXT_TEXT_FIX_H
#define TACA_TEXT_TEXT_FIX_H

#include <stddef.h>
#include <stdint.h>

#include "base/error.h"

/* ftfy.fix_text(text). text is len bytes of UTF-8 (NUL bytes allowed; invalid UTF-8 is an error).
 * On success *out is a malloc'd, NUL-terminated UTF-8 string of *out_len bytes (the caller frees).
 */
int text_fix(const char *text, size_t len, char **out, size_t *out_len, taca_error *err);

/* One of ftfy's fixes on its own, as the function of that name in ftfy.fixes (or ftfy.fix_encoding)
 * would apply it. Same contract as text_fix(). */
typedef enum {
  TEXT_FIX_UNESCAPE_HTML,            /* fixes.unescape_html */
  TEXT_FIX_REMOVE_TERMINAL_ESCAPES,  /* fixes.remove_terminal_escapes */
  TEXT_FIX_ENCODING,                 /* ftfy.fix_encoding */
  TEXT_FIX_DECODE_INCONSISTENT_UTF8, /* fixes.decode_inconsistent_utf8 */
  TEXT_FIX_C1_CONTROLS,              /* fixes.fix_c1_controls */
  TEXT_FIX_LATIN_LIGATURES,          /* fixes.fix_latin_ligatures */
  TEXT_FIX_CHARACTER_WIDTH,          /* fixes.fix_character_width */
  TEXT_FIX_UNCURL_QUOTES,            /* fixes.uncurl_quotes */
  TEXT_FIX_LINE_BREAKS,              /* fixes.fix_line_breaks */
  TEXT_FIX_REMOVE_CONTROL_CHARS,     /* fixes.remove_control_chars */
  TEXT_FIX_REMOVE_BOM,               /* fixes.remove_bom */
  TEXT_FIX_NFC,                      /* unicodedata.normalize('NFC', text) */
} text_fix_step;
int text_fix_apply(text_fix_step step, const char *text, size_t len, char **out, size_t *out_len,
                   taca_error *err);

/* ftfy.badness.badness(text): the number of BADNESS_RE matches (> 0 means "looks like mojibake").
 * Returns -1 (with a reason) on invalid UTF-8 or out of memory. */
long text_fix_badness(const char *text, size_t len, taca_error *err);

/* fixes.fix_surrogates on code points (UTF-8 cannot carry surrogates, so this one takes UTF-32):
 * pairs become the character they encode, lone surrogates U+FFFD. In place; returns the new length.
 */
size_t text_fix_surrogates_utf32(uint32_t *s, size_t n);

/* The byte-level transcoders fix_encoding uses. out must have room for 2n (restore_byte_a0) or 3n
 * (replace_lossy_sequences) bytes; returns the number of bytes written. */
size_t text_fix_restore_byte_a0(const uint8_t *in, size_t n, uint8_t *out);
size_t text_fix_replace_lossy_sequences(const uint8_t *in, size_t n, uint8_t *out);

#endif
