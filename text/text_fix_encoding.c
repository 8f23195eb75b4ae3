/* text_fix_encoding.c: ftfy's fix_encoding (python-ftfy 6.3.1: ftfy/__init__.py
 * _fix_encoding_one_step_and_explain, with the transcoders of ftfy/fixes.py and the byte patterns
 * of ftfy/chardata.py): mojibake, UTF-8 that was decoded in a single-byte encoding, is re-encoded
 * in that encoding and decoded as UTF-8 again, when ftfy's badness heuristic says the text looks
 * wrong.
 *
 * One step, on text that is not ASCII and is_bad():
 *   1. for each of ftfy's CHARMAP_ENCODINGS in order (latin-1, sloppy-windows-1252/1251/1250/1253/
 *      1254/1257, iso-8859-2, macroman, cp437) that can encode the text: encode it; if the bytes
 *      hold ALTERED_UTF8_RE (and the encoding is not macroman), restore_byte_a0; for the sloppy
 *      encodings, replace_lossy_sequences; decode as strict UTF-8 ("utf-8-variants" when a byte
 *      C0 or ED is present). The first that decodes is the result.
 *   2. otherwise, where UTF8_DETECTOR_RE finds UTF-8-looking runs, decode_inconsistent_utf8.
 *   3. otherwise, text that fits Latin-1 and has C1 controls is read as Windows-1252 (strictly: not
 *      when it holds one of the five C1 bytes Windows-1252 leaves undefined).
 *   4. otherwise fix_c1_controls, if there are C1 controls; else the text stays.
 * fix_encoding repeats the step until the text stops changing. Every table comes from
 * text_fix_tables.h; the byte patterns (ALTERED_UTF8_RE, A_GRAVE_WORD_RE, LOSSY_UTF8_RE,
 * UTF8_DETECTOR_RE) are matched by hand below, alternatives in ftfy's order.
 *
 * Bound (not in ftfy): decode_inconsistent_utf8 calls fix_encoding on each run it fixes, which may
 * call decode_inconsistent_utf8 again on a shorter run; past MAX_DEPTH nested calls a run is left
 * as it is. Real mojibake nests two or three deep; the bound keeps hostile input from using the
 * stack without limit. */
#include <stdlib.h>
#include <string.h>

#include "text/text_fix.h"
#include "text/text_fix_impl.h"
#include "text/text_fix_tables.h"

#define MAX_DEPTH 16
/* fix_encoding's own loop ends when a step changes nothing; every change shortens the text or
 * removes C1 controls, so it ends anyway, but a bound keeps its cost linear in the worst case. */
#define MAX_STEPS 64

/* ---------------------------------------------------------------------------------------------
 * Strict UTF-8, as Python decodes it, and ftfy's utf-8-variants. */

static bool cont(uint8_t b) { return (b & 0xC0) == 0x80; }

int tf_utf8_decode(const uint8_t *b, size_t n, bool variants, tf_buf *out, size_t *bad_at) {
  if (tf_reserve(out, n) != 0) return -1;
  for (size_t i = 0; i < n;) {
    uint8_t b0 = b[i];
    if (b0 < 0x80) {
      out->p[out->n++] = b0;
      i++;
      continue;
    }
    if (variants) {
      if (b0 == 0xC0 && i + 1 < n && b[i + 1] == 0x80) { /* Java's encoding of U+0000 */
        out->p[out->n++] = 0;
        i += 2;
        continue;
      }
      /* CESU-8: 11101101 1010abcd 10efghij 11101101 1011klmn 10opqrst */
      if (b0 == 0xED && i + 5 < n && b[i + 1] >= 0xA0 && b[i + 1] <= 0xAF && cont(b[i + 2]) &&
          b[i + 3] == 0xED && b[i + 4] >= 0xB0 && b[i + 4] <= 0xBF && cont(b[i + 5])) {
        out->p[out->n++] = 0x10000 + ((uint32_t)(b[i + 1] & 0x0F) << 16) +
                           ((uint32_t)(b[i + 2] & 0x3F) << 10) +
                           ((uint32_t)(b[i + 4] & 0x0F) << 6) + (b[i + 5] & 0x3F);
        i += 6;
        continue;
      }
    }
    uint32_t c = 0;
    size_t len;
    uint8_t lo = 0x80, hi = 0xBF; /* the allowed range of the second byte */
    if (b0 >= 0xC2 && b0 <= 0xDF) {
      len = 2;
      c = b0 & 0x1F;
    } else if (b0 >= 0xE0 && b0 <= 0xEF) {
      len = 3;
      c = b0 & 0x0F;
      if (b0 == 0xE0) lo = 0xA0;
      if (b0 == 0xED) hi = 0x9F;
    } else if (b0 >= 0xF0 && b0 <= 0xF4) {
      len = 4;
      c = b0 & 0x07;
      if (b0 == 0xF0) lo = 0x90;
      if (b0 == 0xF4) hi = 0x8F;
    } else {
      len = 0;
    }
    bool ok = len > 0 && i + len <= n && b[i + 1] >= lo && b[i + 1] <= hi;
    for (size_t k = 1; ok && k < len; k++) {
      ok = cont(b[i + k]);
      c = (c << 6) | (b[i + k] & 0x3F);
    }
    if (!ok) {
      if (bad_at) *bad_at = i;
      return 0;
    }
    out->p[out->n++] = c;
    i += len;
  }
  return 1;
}

/* ---------------------------------------------------------------------------------------------
 * The single-byte encodings. */

/* The byte that encodes c in charmap `cm`, or -1. */
static int charmap_byte(int cm, uint32_t c) {
  if (c < 0x80 && c != 0x1A) return (int)c;
  size_t lo = 0, hi = 129;
  while (lo < hi) {
    size_t mid = lo + (hi - lo) / 2;
    if (TF_CHARMAP_ENCODE[cm][mid].cp < c)
      lo = mid + 1;
    else
      hi = mid;
  }
  return lo < 129 && TF_CHARMAP_ENCODE[cm][lo].cp == c ? TF_CHARMAP_ENCODE[cm][lo].byte : -1;
}

/* chardata.possible_encoding + str.encode: the bytes of s in charmap cm, or false if some
 * character has none. */
static bool charmap_encode(int cm, const uint32_t *s, size_t n, uint8_t *out) {
  for (size_t i = 0; i < n; i++) {
    int b = charmap_byte(cm, s[i]);
    if (b < 0) return false;
    out[i] = (uint8_t)b;
  }
  return true;
}

/* ---------------------------------------------------------------------------------------------
 * Byte transcoders (ftfy/fixes.py) and their patterns (ftfy/chardata.py). */

/* [\x80-\x84\x86-\x9f\xa1-\xbf]: a continuation byte other than 85 and A0. */
static bool altered_cont(uint8_t b) { return b >= 0x80 && b <= 0xBF && b != 0x85 && b != 0xA0; }

/* ALTERED_UTF8_RE at b[i]: the length of the first alternative that matches (0: none). */
static size_t altered_utf8_at(const uint8_t *b, size_t n, size_t i) {
  uint8_t b0 = b[i];
  uint8_t b1 = i + 1 < n ? b[i + 1] : 0, b2 = i + 2 < n ? b[i + 2] : 0,
          b3 = i + 3 < n ? b[i + 3] : 0;
  bool h2 = i + 2 < n, h3 = i + 3 < n;
  /* [\xc2\xc3\xc5\xce\xd0\xd9][ ] */
  if ((b0 == 0xC2 || b0 == 0xC3 || b0 == 0xC5 || b0 == 0xCE || b0 == 0xD0 || b0 == 0xD9) &&
      i + 1 < n && b1 == ' ')
    return 2;
  /* [\xe2\xe3][ ][\x80-\x84\x86-\x9f\xa1-\xbf] */
  if ((b0 == 0xE2 || b0 == 0xE3) && h2 && b1 == ' ' && altered_cont(b2)) return 3;
  /* [\xe0-\xe3][\x80-\x84\x86-\x9f\xa1-\xbf][ ] */
  if (b0 >= 0xE0 && b0 <= 0xE3 && h2 && altered_cont(b1) && b2 == ' ') return 3;
  /* [\xf0][ ][\x80-\xbf][\x80-\xbf] | [\xf0][\x80-\xbf][ ][\x80-\xbf] |
   * [\xf0][\x80-\xbf][\x80-\xbf][ ] */
  if (b0 == 0xF0 && h3) {
    if (b1 == ' ' && cont(b2) && cont(b3)) return 4;
    if (cont(b1) && b2 == ' ' && cont(b3)) return 4;
    if (cont(b1) && cont(b2) && b3 == ' ') return 4;
  }
  return 0;
}

static bool altered_utf8_search(const uint8_t *b, size_t n) {
  for (size_t i = 0; i < n; i++)
    if (altered_utf8_at(b, n, i)) return true;
  return false;
}

static bool starts_with(const uint8_t *b, size_t n, size_t i, const char *lit) {
  size_t k = strlen(lit);
  return i + k <= n && memcmp(b + i, lit, k) == 0;
}

size_t text_fix_restore_byte_a0(const uint8_t *in, size_t n, uint8_t *out) {
  /* A_GRAVE_WORD_RE = b"\xc3 (?! |quele|quela|quilo|s )" -> b"\xc3\xa0 ": "Ã" standing alone is
   * "à" followed by a space (but not in Portuguese "às", "àquele", ...). Grows by at most n/2. */
  size_t m = 0;
  for (size_t i = 0; i < n;) {
    if (in[i] == 0xC3 && i + 1 < n && in[i + 1] == ' ' && !starts_with(in, n, i + 2, " ") &&
        !starts_with(in, n, i + 2, "quele") && !starts_with(in, n, i + 2, "quela") &&
        !starts_with(in, n, i + 2, "quilo") && !starts_with(in, n, i + 2, "s ")) {
      out[m++] = 0xC3;
      out[m++] = 0xA0;
      out[m++] = ' ';
      i += 2;
    } else {
      out[m++] = in[i++];
    }
  }
  /* ALTERED_UTF8_RE: in each match, every space becomes A0 (in place: same length). */
  for (size_t i = 0; i < m;) {
    size_t len = altered_utf8_at(out, m, i);
    if (!len) {
      i++;
      continue;
    }
    for (size_t k = i; k < i + len; k++)
      if (out[k] == ' ') out[k] = 0xA0;
    i += len;
  }
  return m;
}

/* [\x1a?] and [\x1a\x80-\xbf] and [\x1a?\x80-\xbf] of LOSSY_UTF8_RE. */
static bool lossy_q(uint8_t b) { return b == 0x1A || b == '?'; }
static bool lossy_c(uint8_t b) { return b == 0x1A || cont(b); }
static bool lossy_qc(uint8_t b) { return b == 0x1A || b == '?' || cont(b); }

/* LOSSY_UTF8_RE at b[i]: the length of the first alternative that matches (0: none). */
static size_t lossy_at(const uint8_t *b, size_t n, size_t i) {
  uint8_t x[6] = {0};
  for (size_t k = 0; k < 6 && i + k < n; k++) x[k] = b[i + k];
  size_t left = n - i;
  if (left >= 2 && x[0] >= 0xC2 && x[0] <= 0xDF && x[1] == 0x1A) return 2;
  if (left >= 2 && (x[0] == 0xC2 || x[0] == 0xC3) && x[1] == '?') return 2;
  if (left >= 6 && x[0] == 0xED && x[1] >= 0xA0 && x[1] <= 0xAF && x[3] == 0xED && x[4] >= 0xB0 &&
      x[4] <= 0xBF) {
    if (lossy_q(x[2]) && lossy_qc(x[5])) return 6;
    if (lossy_qc(x[2]) && lossy_q(x[5])) return 6;
  }
  if (left >= 3 && x[0] >= 0xE0 && x[0] <= 0xEF) {
    if (lossy_q(x[1]) && lossy_c(x[2])) return 3;
    if (lossy_c(x[1]) && lossy_q(x[2])) return 3;
  }
  if (left >= 4 && x[0] >= 0xF0 && x[0] <= 0xF4) {
    if (lossy_q(x[1]) && lossy_c(x[2]) && lossy_c(x[3])) return 4;
    if (lossy_c(x[1]) && lossy_q(x[2]) && lossy_c(x[3])) return 4;
    if (lossy_c(x[1]) && lossy_c(x[2]) && lossy_q(x[3])) return 4;
  }
  if (x[0] == 0x1A) return 1;
  return 0;
}

size_t text_fix_replace_lossy_sequences(const uint8_t *in, size_t n, uint8_t *out) {
  size_t m = 0;
  for (size_t i = 0; i < n;) {
    size_t len = lossy_at(in, n, i);
    if (len) {
      out[m++] = 0xEF; /* U+FFFD */
      out[m++] = 0xBF;
      out[m++] = 0xBD;
      i += len;
    } else {
      out[m++] = in[i++];
    }
  }
  return m;
}

/* ---------------------------------------------------------------------------------------------
 * decode_inconsistent_utf8 and fix_c1_controls. */

/* UTF8_DETECTOR_RE at s[i]:
 *   (?<![utf8_continuation_strict]) ( [first_of_2][cont] | [first_of_3][cont]{2} |
 *                                     [first_of_4][cont]{3} )+
 * Returns the match length (0: none). Nothing follows the group, so the greedy repetition is
 * exact: each round takes the first alternative that fits. */
static size_t utf8_detector_at(const uint32_t *s, size_t n, size_t i) {
  if (i > 0 && (tf_char_class(s[i - 1]) & TF_C_UTF8_CONTINUATION_STRICT)) return 0;
  size_t j = i;
  for (;;) {
    if (j >= n) break;
    uint32_t m = tf_char_class(s[j]);
    size_t k = 0;
    if ((m & TF_C_UTF8_FIRST_OF_2) && j + 1 < n &&
        (tf_char_class(s[j + 1]) & TF_C_UTF8_CONTINUATION))
      k = 2;
    else if ((m & TF_C_UTF8_FIRST_OF_3) && j + 2 < n &&
             (tf_char_class(s[j + 1]) & TF_C_UTF8_CONTINUATION) &&
             (tf_char_class(s[j + 2]) & TF_C_UTF8_CONTINUATION))
      k = 3;
    else if ((m & TF_C_UTF8_FIRST_OF_4) && j + 3 < n &&
             (tf_char_class(s[j + 1]) & TF_C_UTF8_CONTINUATION) &&
             (tf_char_class(s[j + 2]) & TF_C_UTF8_CONTINUATION) &&
             (tf_char_class(s[j + 3]) & TF_C_UTF8_CONTINUATION))
      k = 4;
    if (!k) break;
    j += k;
  }
  return j - i;
}

static bool utf8_detector_search(const uint32_t *s, size_t n) {
  for (size_t i = 0; i < n; i++)
    if (utf8_detector_at(s, n, i)) return true;
  return false;
}

int tf_decode_inconsistent_utf8(const uint32_t *s, size_t n, tf_buf *out, int depth) {
  out->n = 0;
  tf_buf fixed = {0};
  int rc = 0;
  for (size_t i = 0; i < n && rc == 0;) {
    size_t len = utf8_detector_at(s, n, i);
    if (!len) {
      rc = tf_push(out, s[i++]);
      continue;
    }
    /* Require the run to be shorter than the text, so that this does not recurse forever. */
    if (len < n && depth < MAX_DEPTH && tf_is_bad(s + i, len)) {
      rc = tf_fix_encoding(s + i, len, &fixed, depth + 1);
      if (rc == 0) rc = tf_append(out, fixed.p, fixed.n);
    } else {
      rc = tf_append(out, s + i, len);
    }
    i += len;
  }
  tf_free(&fixed);
  return rc;
}

int tf_fix_c1_controls(const uint32_t *s, size_t n, tf_buf *out) {
  out->n = 0;
  if (tf_reserve(out, n) != 0) return -1;
  for (size_t i = 0; i < n; i++)
    out->p[out->n++] =
        s[i] >= 0x80 && s[i] <= 0x9F ? TF_CHARMAP_DECODE[TF_CM_SLOPPY_WINDOWS_1252][s[i]] : s[i];
  return 0;
}

/* ---------------------------------------------------------------------------------------------
 * fix_encoding. */

static bool same(const uint32_t *a, size_t na, const uint32_t *b, size_t nb) {
  return na == nb && (na == 0 || memcmp(a, b, na * sizeof *a) == 0);
}

/* One step; out receives the result (a copy of s when nothing applies). */
static int one_step(const uint32_t *s, size_t n, tf_buf *out, int depth) {
  out->n = 0;
  bool ascii = true;
  for (size_t i = 0; i < n && ascii; i++) ascii = s[i] < 0x80;
  if (ascii || !tf_is_bad(s, n)) return tf_append(out, s, n);

  /* 1. UTF-8 decoded as one of the single-byte encodings. */
  /* n bytes, at most 1.5 n after restore_byte_a0, at most 3 times that after replace_lossy. */
  size_t cap = n * 5 + 8;
  uint8_t *bytes = malloc(cap), *tmp = malloc(cap);
  if (!bytes || !tmp) {
    free(bytes);
    free(tmp);
    return -1;
  }
  int rc = 0;
  bool latin1_possible = false;
  for (int cm = 0; cm < TF_NUM_CHARMAPS; cm++) {
    if (!charmap_encode(cm, s, n, bytes)) continue;
    if (cm == TF_CM_LATIN_1) latin1_possible = true;
    size_t len = n;
    if (cm != TF_CM_MACROMAN && altered_utf8_search(bytes, len)) {
      len = text_fix_restore_byte_a0(bytes, len, tmp);
      memcpy(bytes, tmp, len);
    }
    if (TF_CHARMAP_SLOPPY[cm]) {
      len = text_fix_replace_lossy_sequences(bytes, len, tmp);
      memcpy(bytes, tmp, len);
    }
    bool variants = memchr(bytes, 0xED, len) || memchr(bytes, 0xC0, len);
    out->n = 0;
    int ok = tf_utf8_decode(bytes, len, variants, out, NULL);
    if (ok != 0) {
      rc = ok < 0 ? -1 : 0;
      goto done;
    }
  }

  /* 2. UTF-8 runs inside text of another encoding. */
  if (utf8_detector_search(s, n)) {
    if (tf_decode_inconsistent_utf8(s, n, out, depth) != 0) {
      rc = -1;
      goto done;
    }
    if (!same(out->p, out->n, s, n)) goto done;
  }

  /* 3. Latin-1 that was meant as Windows-1252 (strict: no undefined byte). */
  if (latin1_possible) {
    bool undefined = false, c1 = false;
    for (size_t i = 0; i < n; i++) {
      uint32_t c = s[i];
      if (c == 0x81 || c == 0x8D || c == 0x8F || c == 0x90 || c == 0x9D) undefined = true;
      if (c >= 0x80 && c <= 0x9F) c1 = true;
    }
    if (!undefined && c1) {
      rc = tf_fix_c1_controls(s, n, out);
      goto done;
    }
  }

  /* 4. Remaining C1 controls, one by one as Windows-1252. */
  for (size_t i = 0; i < n; i++)
    if (s[i] >= 0x80 && s[i] <= 0x9F) {
      rc = tf_fix_c1_controls(s, n, out);
      goto done;
    }
  out->n = 0;
  rc = tf_append(out, s, n);
done:
  free(bytes);
  free(tmp);
  return rc;
}

int tf_fix_encoding(const uint32_t *s, size_t n, tf_buf *out, int depth) {
  tf_buf cur = {0};
  int rc = tf_append(&cur, s, n);
  for (int step = 0; rc == 0 && step < MAX_STEPS; step++) {
    rc = one_step(cur.p, cur.n, out, depth);
    if (rc != 0 || same(out->p, out->n, cur.p, cur.n)) break;
    tf_buf t = cur;
    cur = *out;
    *out = t;
  }
  if (rc == 0 && !same(out->p, out->n, cur.p, cur.n)) {
    /* MAX_STEPS reached: the last result is in cur */
    out->n = 0;
    rc = tf_append(out, cur.p, cur.n);
  }
  tf_free(&cur);
  return rc;
}
