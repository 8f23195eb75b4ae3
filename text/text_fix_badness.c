/* text_fix_badness.c: ftfy's "badness" heuristic (python-ftfy 6.3.1, ftfy/badness.py), the test
 * fix_encoding uses to decide whether text looks like mojibake at all.
 *
 * ftfy writes it as one regular expression, BADNESS_RE: 37 alternatives, each a short sequence of
 * character classes (MOJIBAKE_CATEGORIES) or literal characters. bad_match_len() below tries them
 * in ftfy's order at one position, so that badness() counts the same non-overlapping matches as
 * len(BADNESS_RE.findall(text)) and is_bad() agrees with BADNESS_RE.search(text). The classes are
 * in text_fix_tables.h (generated from ftfy's lists by text/gen_text_fix_tables.py); the literal
 * characters of single alternatives are written out below. Regex semantics used: [a-z] and
 * [A-Za-z] are ASCII only, \s is str.isspace(), \w is a letter, a number or '_' (Unicode categories
 * L* and N*; Python's str.isalnum() differs only for a few characters outside them), '.' is any
 * character but '\n', '^' is the start of the text. */
#include <utf8proc.h>

#include "text/text_fix_impl.h"
#include "text/text_fix_tables.h"

uint32_t tf_char_class(uint32_t c) {
  /* Only the space is classed below U+0080 (it may stand for U+00A0 in a UTF-8 sequence). */
  if (c < 0x80) return c == ' ' ? TF_C_UTF8_CONTINUATION : 0;
  size_t lo = 0, hi = sizeof TF_CHAR_CLASSES / sizeof TF_CHAR_CLASSES[0];
  while (lo < hi) {
    size_t mid = lo + (hi - lo) / 2;
    if (TF_CHAR_CLASSES[mid].cp < c)
      lo = mid + 1;
    else
      hi = mid;
  }
  uint32_t m =
      lo < sizeof TF_CHAR_CLASSES / sizeof TF_CHAR_CLASSES[0] && TF_CHAR_CLASSES[lo].cp == c
          ? TF_CHAR_CLASSES[lo].mask
          : 0;
  return c <= 0x9F ? m | TF_C_C1 : m;
}

bool tf_isspace(uint32_t c) {
  if (c < 128) return c == ' ' || (c >= 0x09 && c <= 0x0D) || (c >= 0x1C && c <= 0x1F);
  const utf8proc_property_t *p = utf8proc_get_property((utf8proc_int32_t)c);
  return p->category == UTF8PROC_CATEGORY_ZS || p->bidi_class == UTF8PROC_BIDI_CLASS_WS ||
         p->bidi_class == UTF8PROC_BIDI_CLASS_B || p->bidi_class == UTF8PROC_BIDI_CLASS_S;
}

static bool is_word(uint32_t c) {
  if (c < 128)
    return c == '_' || (c >= '0' && c <= '9') || ((c | 0x20) >= 'a' && (c | 0x20) <= 'z');
  switch (utf8proc_category((utf8proc_int32_t)c)) {
  case UTF8PROC_CATEGORY_LU:
  case UTF8PROC_CATEGORY_LL:
  case UTF8PROC_CATEGORY_LT:
  case UTF8PROC_CATEGORY_LM:
  case UTF8PROC_CATEGORY_LO:
  case UTF8PROC_CATEGORY_ND:
  case UTF8PROC_CATEGORY_NL:
  case UTF8PROC_CATEGORY_NO:
    return true;
  default:
    return false;
  }
}

static bool ascii_alpha(uint32_t c) { return (c | 0x20) >= 'a' && (c | 0x20) <= 'z'; }
static bool ascii_lower(uint32_t c) { return c >= 'a' && c <= 'z'; }

static bool in(uint32_t c, const uint32_t *set, size_t n) {
  for (size_t i = 0; i < n; i++)
    if (set[i] == c) return true;
  return false;
}
#define IN(c, ...)                                                                                 \
  in((c), (const uint32_t[]){__VA_ARGS__},                                                         \
     sizeof((const uint32_t[]){__VA_ARGS__}) / sizeof(uint32_t))

/* Shorthands for the category unions BADNESS_RE uses. */
enum {
  BAD = TF_C_BAD,
  LAW = TF_C_LAW,
  CUR = TF_C_CURRENCY,
  START = TF_C_START_PUNCTUATION,
  END = TF_C_END_PUNCTUATION,
  NUM = TF_C_NUMERIC,
  KAO = TF_C_KAOMOJI,
  UACC = TF_C_UPPER_ACCENTED,
  LACC = TF_C_LOWER_ACCENTED,
  UCOM = TF_C_UPPER_COMMON,
  LCOM = TF_C_LOWER_COMMON,
  BOX = TF_C_BOX,
  COMMON = TF_C_COMMON,
  C1 = TF_C_C1,
};

/* The length of the first BADNESS_RE alternative matching at s[i] (0: none). m[k & 7] is the class
 * mask of s[k] for k in [i, i + 8). */
static size_t bad_match_len(const uint32_t *s, const uint32_t *m, size_t n, size_t i) {
#define CH(k) ((i + (k)) < n ? s[i + (k)] : 0xFFFFFFFFu)
#define IS(k, bits) ((i + (k)) < n && (m[(i + (k)) & 7] & (bits)) != 0)
  uint32_t c0 = s[i], c1 = CH(1), c2 = CH(2);
  /* [c1] */
  if (IS(0, C1)) return 1;
  /* [bad lower_accented upper_accented box start end currency numeric law] [bad] */
  if (IS(0, BAD | LACC | UACC | BOX | START | END | CUR | NUM | LAW) && IS(1, BAD)) return 2;
  /* [a-zA-Z] [lower_common upper_common] [bad] */
  if (ascii_alpha(c0) && IS(1, LCOM | UCOM) && IS(2, BAD)) return 3;
  /* [bad] [lower_accented upper_accented box start end currency numeric law] */
  if (IS(0, BAD) && IS(1, LACC | UACC | BOX | START | END | CUR | NUM | LAW)) return 2;
  /* [lower_accented lower_common box end currency numeric] [upper_accented] */
  if (IS(0, LACC | LCOM | BOX | END | CUR | NUM) && IS(1, UACC)) return 2;
  /* [box end currency numeric] [lower_accented] */
  if (IS(0, BOX | END | CUR | NUM) && IS(1, LACC)) return 2;
  /* [lower_accented box end] [currency] */
  if (IS(0, LACC | BOX | END) && IS(1, CUR)) return 2;
  /* \s [upper_accented] [currency] */
  if (tf_isspace(c0) && IS(1, UACC) && IS(2, CUR)) return 3;
  /* [upper_accented box] [numeric law] */
  if (IS(0, UACC | BOX) && IS(1, NUM | LAW)) return 2;
  /* [lower_accented upper_accented box currency end] [start] [numeric] */
  if (IS(0, LACC | UACC | BOX | CUR | END) && IS(1, START) && IS(2, NUM)) return 3;
  /* [lower_accented upper_accented currency numeric box law] [end] [start] */
  if (IS(0, LACC | UACC | CUR | NUM | BOX | LAW) && IS(1, END) && IS(2, START)) return 3;
  /* [currency numeric box] [start] */
  if (IS(0, CUR | NUM | BOX) && IS(1, START)) return 2;
  /* [a-z] [upper_accented] [start currency] */
  if (ascii_lower(c0) && IS(1, UACC) && IS(2, START | CUR)) return 3;
  /* [box] [kaomoji] */
  if (IS(0, BOX) && IS(1, KAO)) return 2;
  /* [lower_accented upper_accented currency numeric start end law] [box] */
  if (IS(0, LACC | UACC | CUR | NUM | START | END | LAW) && IS(1, BOX)) return 2;
  /* [box] [end] */
  if (IS(0, BOX) && IS(1, END)) return 2;
  /* [lower_accented upper_accented] [start end] \w */
  if (IS(0, LACC | UACC) && IS(1, START | END) && i + 2 < n && is_word(c2)) return 3;
  /* [Œœ][^A-Za-z] */
  if ((c0 == 0x152 || c0 == 0x153) && i + 1 < n && !ascii_alpha(c1)) return 2;
  /* [upper_accented]° */
  if (IS(0, UACC) && c1 == 0xB0) return 2;
  /* [ÂÃÎÐ][€œŠš¢£Ÿž\xa0\xad®©°·» start end –—´] */
  if (IN(c0, 0xC2, 0xC3, 0xCE, 0xD0) &&
      (IN(c1, 0x20AC, 0x153, 0x160, 0x161, 0xA2, 0xA3, 0x178, 0x17E, 0xA0, 0xAD, 0xAE, 0xA9, 0xB0,
          0xB7, 0xBB, 0x2013, 0x2014, 0xB4) ||
       IS(1, START | END)))
    return 2;
  /* × [²³] */
  if (c0 == 0xD7 && (c1 == 0xB2 || c1 == 0xB3)) return 2;
  /* ([ØÙ] [common currency bad numeric start ŸŠ®°µ»]){2} */
  if (IN(c0, 0xD8, 0xD9) && IN(c2, 0xD8, 0xD9) && i + 3 < n &&
      (IS(1, COMMON | CUR | BAD | NUM | START) || IN(c1, 0x178, 0x160, 0xAE, 0xB0, 0xB5, 0xBB)) &&
      (IS(3, COMMON | CUR | BAD | NUM | START) ||
       IN(s[i + 3], 0x178, 0x160, 0xAE, 0xB0, 0xB5, 0xBB)))
    return 4;
  /* à[²µ¹¼½¾] */
  if (c0 == 0xE0 && IN(c1, 0xB2, 0xB5, 0xB9, 0xBC, 0xBD, 0xBE)) return 2;
  /* √[±∂†≠®™´≤≥¥µø] */
  if (c0 == 0x221A &&
      IN(c1, 0xB1, 0x2202, 0x2020, 0x2260, 0xAE, 0x2122, 0xB4, 0x2264, 0x2265, 0xA5, 0xB5, 0xF8))
    return 2;
  /* ≈[°¢] */
  if (c0 == 0x2248 && (c1 == 0xB0 || c1 == 0xA2)) return 2;
  /* ‚Ä[ìîïòôúùû†°¢π] */
  if (c0 == 0x201A && c1 == 0xC4 &&
      IN(c2, 0xEC, 0xEE, 0xEF, 0xF2, 0xF4, 0xFA, 0xF9, 0xFB, 0x2020, 0xB0, 0xA2, 0x3C0))
    return 3;
  /* ‚[âó][àä°ê] */
  if (c0 == 0x201A && (c1 == 0xE2 || c1 == 0xF3) && IN(c2, 0xE0, 0xE4, 0xB0, 0xEA)) return 3;
  /* вЂ */
  if (c0 == 0x432 && c1 == 0x402) return 2;
  /* [ВГРС][c1 bad start end currency °µ][ВГРС] */
  if (IN(c0, 0x412, 0x413, 0x420, 0x421) &&
      (IS(1, C1 | BAD | START | END | CUR) || c1 == 0xB0 || c1 == 0xB5) &&
      IN(c2, 0x412, 0x413, 0x420, 0x421))
    return 3;
  /* ГўВЂВ.[A-Za-z ] */
  if (c0 == 0x413 && c1 == 0x45E && c2 == 0x412 && CH(3) == 0x402 && CH(4) == 0x412 && i + 6 < n &&
      s[i + 5] != '\n' && (ascii_alpha(s[i + 6]) || s[i + 6] == ' '))
    return 7;
  /* Ã[\xa0¡] */
  if (c0 == 0xC3 && (c1 == 0xA0 || c1 == 0xA1)) return 2;
  /* [a-z]\s?[ÃÂ][ ] */
  if (ascii_lower(c0)) {
    if (i + 1 < n && tf_isspace(c1) && (c2 == 0xC3 || c2 == 0xC2) && CH(3) == ' ') return 4;
    if ((c1 == 0xC3 || c1 == 0xC2) && c2 == ' ') return 3;
  }
  /* ^[ÃÂ][ ] */
  if (i == 0 && (c0 == 0xC3 || c0 == 0xC2) && c1 == ' ') return 2;
  /* [a-z.,?! end] Â [ start end] */
  if ((ascii_lower(c0) || IN(c0, '.', ',', '?', '!') || IS(0, END)) && c1 == 0xC2 &&
      (c2 == ' ' || IS(2, START | END)))
    return 3;
  /* β€[™\xa0Ά\xad®°] */
  if (c0 == 0x3B2 && c1 == 0x20AC && IN(c2, 0x2122, 0xA0, 0x386, 0xAD, 0xAE, 0xB0)) return 3;
  /* [ΒΓΞΟ][c1 bad start end currency °][ΒΓΞΟ] */
  if (IN(c0, 0x392, 0x393, 0x39E, 0x39F) && (IS(1, C1 | BAD | START | END | CUR) || c1 == 0xB0) &&
      IN(c2, 0x392, 0x393, 0x39E, 0x39F))
    return 3;
  /* ā€ */
  if (c0 == 0x101 && c1 == 0x20AC) return 2;
  return 0;
#undef CH
#undef IS
}

/* Counts BADNESS_RE matches (stops at the first unless count_all). The class masks of the next 8
 * characters live in a ring indexed by position & 7 (no alternative looks more than 6 ahead). */
static size_t scan(const uint32_t *s, size_t n, bool count_all) {
  uint32_t ring[8];
  size_t filled = 0, count = 0;
  for (size_t i = 0; i < n;) {
    for (; filled < n && filled < i + 8; filled++) ring[filled & 7] = tf_char_class(s[filled]);
    size_t len = bad_match_len(s, ring, n, i);
    if (len) {
      count++;
      if (!count_all) break;
      i += len;
    } else {
      i++;
    }
  }
  return count;
}

bool tf_is_bad(const uint32_t *s, size_t n) { return scan(s, n, false) > 0; }
size_t tf_badness(const uint32_t *s, size_t n) { return scan(s, n, true); }
