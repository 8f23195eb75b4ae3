/* text_fix.c: ftfy.fix_text() (python-ftfy 6.3.1, default TextFixerConfig) on UTF-8, for the CLIP
 * tokenizer's basic_clean(). This file holds the pipeline, the HTML unescaping and the
 * character-level fixes; text_fix_encoding.c the mojibake fixer, text_fix_badness.c the heuristic
 * it relies on; the tables are generated from Python and ftfy's lists (text/gen_text_fix_tables.py).
 *
 * As ftfy/__init__.py does it: the text is cut into segments after each '\n' (and every 10^6 code
 * points); unescape_html is on ("auto") until a segment containing '<' is met, then off for that
 * segment and all later ones. Each segment goes through these fixes, in this order, and through
 * them again until a round changes nothing:
 *   unescape_html            HTML_ENTITY_RE &#?[0-9A-Za-z]{1,24}; -> HTML_ENTITIES (html5
 *                            names with ';', plus all-caps forms of lowercase ones), or a numeric
 *                            reference as html.unescape reads it, when that uses the whole match
 *   fix_encoding             mojibake (text_fix_encoding.c)
 *   fix_c1_controls          U+0080..U+009F -> their Windows-1252 characters (where it has them)
 *   fix_latin_ligatures      LIGATURES
 *   fix_character_width      WIDTH_MAP (full-width ASCII, U+3000, half-width katakana, ...)
 *   uncurl_quotes            SINGLE_QUOTE_RE [\u02bc\u2018-\u201b] -> ', DOUBLE_QUOTE_RE
 *                            [\u201c-\u201f] -> "
 *   fix_line_breaks          \r\n, \r, U+2028, U+2029, U+0085 -> \n
 *   fix_surrogates           (nothing to do: valid UTF-8 holds no surrogates)
 *   remove_terminal_escapes  ANSI_RE \033\[((?:\d|;)*)([a-zA-Z]) removed
 *   remove_control_chars     CONTROL_CHARS removed: U+00..08, 0B, 0E..1F, 7F, 206A..206F, FEFF,
 *                            FFF9..FFFC (this also covers remove_bom)
 *   NFC                      utf8proc
 *
 * Where this can differ from ftfy (nothing here differs on text a caption realistically holds):
 *   - Unicode data: the tables come from Python 3.11 (Unicode 14); NFC, \s, \d and \w use
 *     utf8proc's Unicode version, so characters assigned after Unicode 14 may be treated
 *     differently from a given Python. \w (one BADNESS_RE alternative) is taken as categories L*,
 *     N* and '_'.
 *   - Bounds ftfy does not have: at most MAX_ROUNDS rounds per segment (each round can peel one
 *     more layer of "&amp;amp;..."), and the fix_encoding bounds in text_fix_encoding.c.
 *   - Input must be valid UTF-8, so Python's lone surrogates cannot occur; ftfy's fix_surrogates is
 *     available on UTF-32 only (text_fix_surrogates_utf32). */
#include "text/text_fix.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

#include "text/html_charref.h"
#include "text/text_fix_impl.h"
#include "text/text_fix_tables.h"

#define MAX_ROUNDS 64
#define MAX_DECODE_LENGTH 1000000 /* TextFixerConfig.max_decode_length */

/* ---------------------------------------------------------------------------------------------
 * Code point buffers and UTF-8. */

int tf_reserve(tf_buf *b, size_t extra) {
  /* An empty buffer gets memory too: p is never NULL once reserved. */
  if (b->p && b->cap - b->n >= extra) return 0;
  size_t cap = b->cap ? b->cap : 64;
  while (cap - b->n < extra) {
    if (cap > SIZE_MAX / 2 / sizeof *b->p) return -1;
    cap *= 2;
  }
  uint32_t *p = realloc(b->p, cap * sizeof *p);
  if (!p) return -1;
  b->p = p;
  b->cap = cap;
  return 0;
}

int tf_append(tf_buf *b, const uint32_t *s, size_t n) {
  if (tf_reserve(b, n) != 0) return -1;
  if (n) memcpy(b->p + b->n, s, n * sizeof *s);
  b->n += n;
  return 0;
}

void tf_free(tf_buf *b) {
  free(b->p);
  *b = (tf_buf){0};
}

static bool same(const tf_buf *a, const tf_buf *b) {
  return a->n == b->n && (a->n == 0 || memcmp(a->p, b->p, a->n * sizeof *a->p) == 0);
}

/* UTF-8 of s[0..n) (valid code points, no surrogates) into a new NUL-terminated string. */
static int utf8_encode(const uint32_t *s, size_t n, char **out, size_t *out_len) {
  size_t len = 0;
  for (size_t i = 0; i < n; i++) len += s[i] < 0x80 ? 1 : s[i] < 0x800 ? 2 : s[i] < 0x10000 ? 3 : 4;
  unsigned char *p = malloc(len + 1);
  if (!p) return -1;
  size_t o = 0;
  for (size_t i = 0; i < n; i++) {
    uint32_t c = s[i];
    if (c < 0x80) {
      p[o++] = (unsigned char)c;
    } else if (c < 0x800) {
      p[o++] = (unsigned char)(0xC0 | (c >> 6));
      p[o++] = (unsigned char)(0x80 | (c & 0x3F));
    } else if (c < 0x10000) {
      p[o++] = (unsigned char)(0xE0 | (c >> 12));
      p[o++] = (unsigned char)(0x80 | ((c >> 6) & 0x3F));
      p[o++] = (unsigned char)(0x80 | (c & 0x3F));
    } else {
      p[o++] = (unsigned char)(0xF0 | (c >> 18));
      p[o++] = (unsigned char)(0x80 | ((c >> 12) & 0x3F));
      p[o++] = (unsigned char)(0x80 | ((c >> 6) & 0x3F));
      p[o++] = (unsigned char)(0x80 | (c & 0x3F));
    }
  }
  p[o] = 0;
  *out = (char *)p;
  *out_len = o;
  return 0;
}

/* Appends a table value (valid UTF-8). */
static int push_utf8(tf_buf *out, const char *v) {
  return tf_utf8_decode((const uint8_t *)v, strlen(v), false, out, NULL) == 1 ? 0 : -1;
}

/* ---------------------------------------------------------------------------------------------
 * unescape_html (ftfy/fixes.py). */

static const char *entity_find(const char *name) {
  size_t lo = 0, hi = sizeof TF_ENTITIES / sizeof TF_ENTITIES[0];
  while (lo < hi) {
    size_t mid = lo + (hi - lo) / 2;
    int c = strcmp(name, TF_ENTITIES[mid].name);
    if (c == 0) return TF_ENTITIES[mid].value;
    if (c < 0)
      hi = mid;
    else
      lo = mid + 1;
  }
  return NULL;
}

/* html.unescape of a numeric reference to num (html._replace_charref). */
static int numeric_ref(tf_buf *out, uint32_t num) {
  uint32_t cp[2];
  const size_t n = html_numeric_charref(num, cp);
  return n ? tf_append(out, cp, n) : 0;
}

static bool ascii_alnum(uint32_t c) {
  return (c >= '0' && c <= '9') || ((c | 0x20) >= 'a' && (c | 0x20) <= 'z');
}
static bool ascii_alpha(uint32_t c) { return (c | 0x20) >= 'a' && (c | 0x20) <= 'z'; }

/* _unescape_fixup of the match s[0..len) = "&" ["#"] body ";": the replacement, or the match
 * itself. */
static int unescape_one(const uint32_t *s, size_t len, tf_buf *out) {
  char name[32];
  size_t body = s[1] == '#' ? 2 : 1, nb = len - 1 - body;
  if (nb >= sizeof name) return tf_append(out, s, len); /* not reached: HTML_ENTITY_RE allows 24 */
  for (size_t k = 0; k < nb; k++) name[k] = (char)s[body + k];
  name[nb] = 0;
  if (body == 1) {
    const char *v = entity_find(name);
    return v ? push_utf8(out, v) : tf_append(out, s, len);
  }
  /* "&#...;": html.unescape reads "#[0-9]+;?" or "#[xX][0-9a-fA-F]+;?"; unless that uses up the
   * whole match (so that no ';' is left over), ftfy keeps the match. */
  bool hex = name[0] == 'x' || name[0] == 'X';
  size_t k = hex ? 1 : 0;
  if (k == nb) return tf_append(out, s, len);
  uint32_t num = 0;
  for (; k < nb; k++) {
    char c = name[k];
    int d = c >= '0' && c <= '9'                            ? c - '0'
            : hex && (c | 0x20) >= 'a' && (c | 0x20) <= 'f' ? (c | 0x20) - 'a' + 10
                                                            : -1;
    if (d < 0) return tf_append(out, s, len);
    num = num > 0x10FFFF ? num : num * (hex ? 16 : 10) + (uint32_t)d; /* saturating */
  }
  if (num == ';') return tf_append(out, s, len); /* the result would hold a ';' */
  return numeric_ref(out, num);
}

static int unescape_html(const uint32_t *s, size_t n, tf_buf *out) {
  out->n = 0;
  for (size_t i = 0; i < n;) {
    if (s[i] == '&') {
      size_t j = i + 1 + (i + 1 < n && s[i + 1] == '#'), run = 0;
      while (j + run < n && run <= 24 && ascii_alnum(s[j + run])) run++;
      if (run >= 1 && run <= 24 && j + run < n && s[j + run] == ';') {
        if (unescape_one(s + i, j + run + 1 - i, out) != 0) return -1;
        i = j + run + 1;
        continue;
      }
    }
    if (tf_push(out, s[i++]) != 0) return -1;
  }
  return 0;
}

/* ---------------------------------------------------------------------------------------------
 * The character-level fixes (ftfy/fixes.py, tables of ftfy/chardata.py). */

/* ftfy/chardata.py LIGATURES (6.3.1). */
static const struct {
  uint32_t from, to[3];
} LIGATURES[] = {
    {0x0132, {'I', 'J'}},      {0x0133, {'i', 'j'}},      {0x0149, {0x02BC, 'n'}},
    {0x01C4, {'D', 0x017D}},   {0x01C5, {'D', 0x017E}},   {0x01C6, {'d', 0x017E}},
    {0x01C7, {'L', 'J'}},      {0x01C8, {'L', 'j'}},      {0x01C9, {'l', 'j'}},
    {0x01CA, {'N', 'J'}},      {0x01CB, {'N', 'j'}},      {0x01CC, {'n', 'j'}},
    {0x01F1, {'D', 'Z'}},      {0x01F2, {'D', 'z'}},      {0x01F3, {'d', 'z'}},
    {0xFB00, {'f', 'f'}},      {0xFB01, {'f', 'i'}},      {0xFB02, {'f', 'l'}},
    {0xFB03, {'f', 'f', 'i'}}, {0xFB04, {'f', 'f', 'l'}}, {0xFB05, {0x017F, 't'}},
    {0xFB06, {'s', 't'}},
};

static int fix_latin_ligatures(const uint32_t *s, size_t n, tf_buf *out) {
  out->n = 0;
  for (size_t i = 0; i < n; i++) {
    uint32_t c = s[i];
    size_t k = 0;
    if ((c >= 0x0132 && c <= 0x01F3) || (c >= 0xFB00 && c <= 0xFB06))
      while (k < sizeof LIGATURES / sizeof LIGATURES[0] && LIGATURES[k].from != c) k++;
    if (k < sizeof LIGATURES / sizeof LIGATURES[0] && LIGATURES[k].from == c) {
      for (int j = 0; j < 3 && LIGATURES[k].to[j]; j++)
        if (tf_push(out, LIGATURES[k].to[j]) != 0) return -1;
    } else if (tf_push(out, c) != 0) {
      return -1;
    }
  }
  return 0;
}

static int fix_character_width(const uint32_t *s, size_t n, tf_buf *out) {
  out->n = 0;
  for (size_t i = 0; i < n; i++) {
    uint32_t c = s[i];
    if (c == 0x3000 || (c >= 0xFF01 && c <= 0xFFEF)) {
      size_t lo = 0, hi = sizeof TF_WIDTH_MAP / sizeof TF_WIDTH_MAP[0];
      while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (TF_WIDTH_MAP[mid].cp < c)
          lo = mid + 1;
        else
          hi = mid;
      }
      if (lo < sizeof TF_WIDTH_MAP / sizeof TF_WIDTH_MAP[0] && TF_WIDTH_MAP[lo].cp == c) {
        if (tf_push(out, TF_WIDTH_MAP[lo].to[0]) != 0) return -1;
        if (TF_WIDTH_MAP[lo].to[1] && tf_push(out, TF_WIDTH_MAP[lo].to[1]) != 0) return -1;
        continue;
      }
    }
    if (tf_push(out, c) != 0) return -1;
  }
  return 0;
}

static int uncurl_quotes(const uint32_t *s, size_t n, tf_buf *out) {
  out->n = 0;
  if (tf_reserve(out, n) != 0) return -1;
  for (size_t i = 0; i < n; i++) {
    uint32_t c = s[i];
    out->p[out->n++] = c == 0x02BC || (c >= 0x2018 && c <= 0x201B) ? '\''
                       : c >= 0x201C && c <= 0x201F                ? '"'
                                                                   : c;
  }
  return 0;
}

static int fix_line_breaks(const uint32_t *s, size_t n, tf_buf *out) {
  out->n = 0;
  if (tf_reserve(out, n) != 0) return -1;
  for (size_t i = 0; i < n; i++) {
    uint32_t c = s[i];
    if (c == '\r' && i + 1 < n && s[i + 1] == '\n') continue; /* CRLF: keep the LF */
    out->p[out->n++] = c == '\r' || c == 0x2028 || c == 0x2029 || c == 0x85 ? '\n' : c;
  }
  return 0;
}

size_t text_fix_surrogates_utf32(uint32_t *s, size_t n) {
  size_t o = 0;
  for (size_t i = 0; i < n; i++) {
    uint32_t c = s[i];
    if (c >= 0xD800 && c <= 0xDBFF && i + 1 < n && s[i + 1] >= 0xDC00 && s[i + 1] <= 0xDFFF) {
      s[o++] = 0x10000 + (c - 0xD800) * 0x400 + (s[i + 1] - 0xDC00);
      i++;
    } else {
      s[o++] = c >= 0xD800 && c <= 0xDFFF ? 0xFFFD : c;
    }
  }
  return o;
}

static bool is_decimal(uint32_t c) {
  if (c < 0x80) return c >= '0' && c <= '9';
  return utf8proc_category((utf8proc_int32_t)c) == UTF8PROC_CATEGORY_ND;
}

static int remove_terminal_escapes(const uint32_t *s, size_t n, tf_buf *out) {
  out->n = 0;
  for (size_t i = 0; i < n;) {
    if (s[i] == 0x1B && i + 1 < n && s[i + 1] == '[') {
      size_t j = i + 2;
      while (j < n && (s[j] == ';' || is_decimal(s[j]))) j++;
      if (j < n && ascii_alpha(s[j])) {
        i = j + 1;
        continue;
      }
    }
    if (tf_push(out, s[i++]) != 0) return -1;
  }
  return 0;
}

/* ftfy/chardata.py CONTROL_CHARS (6.3.1). */
static bool is_control_char(uint32_t c) {
  return c <= 0x08 || c == 0x0B || (c >= 0x0E && c <= 0x1F) || c == 0x7F ||
         (c >= 0x206A && c <= 0x206F) || c == 0xFEFF || (c >= 0xFFF9 && c <= 0xFFFC);
}

static int remove_control_chars(const uint32_t *s, size_t n, tf_buf *out) {
  out->n = 0;
  if (tf_reserve(out, n) != 0) return -1;
  for (size_t i = 0; i < n; i++)
    if (!is_control_char(s[i])) out->p[out->n++] = s[i];
  return 0;
}

static int remove_bom(const uint32_t *s, size_t n, tf_buf *out) {
  size_t i = 0;
  while (i < n && s[i] == 0xFEFF) i++;
  out->n = 0;
  return tf_append(out, s + i, n - i);
}

static int nfc(const uint32_t *s, size_t n, tf_buf *out) {
  out->n = 0;
  bool trivial = true; /* text below U+0300 is always in NFC */
  for (size_t i = 0; i < n && trivial; i++) trivial = s[i] < 0x300;
  if (trivial) return tf_append(out, s, n);
  char *u8;
  size_t len;
  if (utf8_encode(s, n, &u8, &len) != 0) return -1;
  uint8_t *norm = NULL;
  utf8proc_ssize_t m = utf8proc_map((const uint8_t *)u8, (utf8proc_ssize_t)len, &norm,
                                    UTF8PROC_STABLE | UTF8PROC_COMPOSE);
  free(u8);
  if (m < 0) return -1; /* only out of memory: the input is valid */
  int rc = tf_utf8_decode(norm, (size_t)m, false, out, NULL) == 1 ? 0 : -1;
  free(norm);
  return rc;
}

static int fix_c1_controls(const uint32_t *s, size_t n, tf_buf *out) {
  return tf_fix_c1_controls(s, n, out);
}
static int fix_encoding(const uint32_t *s, size_t n, tf_buf *out) {
  return tf_fix_encoding(s, n, out, 0);
}
static int decode_inconsistent_utf8(const uint32_t *s, size_t n, tf_buf *out) {
  return tf_decode_inconsistent_utf8(s, n, out, 0);
}

/* ---------------------------------------------------------------------------------------------
 * The pipeline. */

typedef int (*fixer)(const uint32_t *s, size_t n, tf_buf *out);

/* ftfy/__init__.py fix_and_explain, 6.3.1 order. */
static const fixer PIPELINE[] = {
    unescape_html,        fix_encoding,  fix_c1_controls, fix_latin_ligatures,
    fix_character_width,  uncurl_quotes, fix_line_breaks, remove_terminal_escapes,
    remove_control_chars, nfc,
};

/* Fixes one segment (appended to out). */
static int fix_segment(const uint32_t *s, size_t n, bool unescape, tf_buf *out) {
  tf_buf cur = {0}, next = {0}, orig = {0};
  int rc = tf_append(&cur, s, n);
  for (int round = 0; rc == 0 && round < MAX_ROUNDS; round++) {
    orig.n = 0;
    rc = tf_append(&orig, cur.p, cur.n);
    for (size_t k = 0; rc == 0 && k < sizeof PIPELINE / sizeof PIPELINE[0]; k++) {
      if (PIPELINE[k] == unescape_html && !unescape) continue;
      rc = PIPELINE[k](cur.p, cur.n, &next);
      tf_buf t = cur;
      cur = next;
      next = t;
    }
    if (rc == 0 && same(&cur, &orig)) break;
  }
  if (rc == 0) rc = tf_append(out, cur.p, cur.n);
  tf_free(&cur);
  tf_free(&next);
  tf_free(&orig);
  return rc;
}

/* Text nothing in ftfy can change: ASCII without '&', '\r', ESC or other removed controls. */
static bool inert_ascii(const char *t, size_t n) {
  for (size_t i = 0; i < n; i++) {
    unsigned char c = (unsigned char)t[i];
    if (c >= 0x7F || c == '&' || (c < 0x20 && c != '\t' && c != '\n' && c != '\f')) return false;
  }
  return true;
}

static int decode_input(const char *text, size_t len, tf_buf *a, taca_error *err) {
  size_t bad = 0;
  int ok = tf_utf8_decode((const uint8_t *)text, len, false, a, &bad);
  if (ok < 0) return taca_fail(err, "text_fix: out of memory for a %zu-byte text", len);
  if (ok == 0) return taca_fail(err, "text_fix: invalid UTF-8 at byte %zu", bad);
  return 0;
}

static int finish(tf_buf *r, int rc, size_t len, char **out, size_t *out_len, taca_error *err) {
  if (rc == 0 && utf8_encode(r->p, r->n, out, out_len) != 0) rc = -1;
  tf_free(r);
  return rc == 0 ? 0 : taca_fail(err, "text_fix: out of memory for a %zu-byte text", len);
}

int text_fix(const char *text, size_t len, char **out, size_t *out_len, taca_error *err) {
  if (!text || !out || !out_len) return taca_fail(err, "text_fix: NULL argument");
  if (inert_ascii(text, len)) {
    char *copy = malloc(len + 1);
    if (!copy) return taca_fail(err, "text_fix: out of memory for a %zu-byte text", len);
    memcpy(copy, text, len);
    copy[len] = 0;
    *out = copy;
    *out_len = len;
    return 0;
  }
  tf_buf a = {0}, r = {0};
  if (decode_input(text, len, &a, err) != 0) {
    tf_free(&a);
    return -1;
  }
  int rc = 0;
  bool unescape = true; /* unescape_html="auto" */
  for (size_t pos = 0; rc == 0 && pos < a.n;) {
    size_t end = pos;
    while (end < a.n && a.p[end] != '\n') end++;
    end = end < a.n ? end + 1 : a.n;
    if (end - pos > MAX_DECODE_LENGTH) end = pos + MAX_DECODE_LENGTH;
    for (size_t i = pos; unescape && i < end; i++)
      if (a.p[i] == '<') unescape = false;
    rc = fix_segment(a.p + pos, end - pos, unescape, &r);
    pos = end;
  }
  tf_free(&a);
  return finish(&r, rc, len, out, out_len, err);
}

int text_fix_apply(text_fix_step step, const char *text, size_t len, char **out, size_t *out_len,
                   taca_error *err) {
  static const fixer STEPS[] = {
      [TEXT_FIX_UNESCAPE_HTML] = unescape_html,
      [TEXT_FIX_REMOVE_TERMINAL_ESCAPES] = remove_terminal_escapes,
      [TEXT_FIX_ENCODING] = fix_encoding,
      [TEXT_FIX_DECODE_INCONSISTENT_UTF8] = decode_inconsistent_utf8,
      [TEXT_FIX_C1_CONTROLS] = fix_c1_controls,
      [TEXT_FIX_LATIN_LIGATURES] = fix_latin_ligatures,
      [TEXT_FIX_CHARACTER_WIDTH] = fix_character_width,
      [TEXT_FIX_UNCURL_QUOTES] = uncurl_quotes,
      [TEXT_FIX_LINE_BREAKS] = fix_line_breaks,
      [TEXT_FIX_REMOVE_CONTROL_CHARS] = remove_control_chars,
      [TEXT_FIX_REMOVE_BOM] = remove_bom,
      [TEXT_FIX_NFC] = nfc,
  };
  if (!text || !out || !out_len) return taca_fail(err, "text_fix: NULL argument");
  if ((unsigned)step >= sizeof STEPS / sizeof STEPS[0])
    return taca_fail(err, "text_fix: unknown step %d", (int)step);
  tf_buf a = {0}, r = {0};
  if (decode_input(text, len, &a, err) != 0) {
    tf_free(&a);
    return -1;
  }
  int rc = STEPS[step](a.p, a.n, &r);
  tf_free(&a);
  return finish(&r, rc, len, out, out_len, err);
}

long text_fix_badness(const char *text, size_t len, taca_error *err) {
  if (!text) return taca_fail(err, "text_fix: NULL argument");
  tf_buf a = {0};
  if (decode_input(text, len, &a, err) != 0) {
    tf_free(&a);
    return -1;
  }
  long n = (long)tf_badness(a.p, a.n);
  tf_free(&a);
  return n;
}
