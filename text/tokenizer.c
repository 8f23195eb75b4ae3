/* tokenizer.c: CLIP's byte-level BPE tokenizer, giving the ids of openai/CLIP's simple_tokenizer.py
 * (the same code as open_clip's SimpleTokenizer) and open_clip's tokenize() truncation.
 *
 * The reference, step by step, and where each step lives here:
 *   basic_clean: ftfy.fix_text                                          -> text/text_fix.c
 *                html.unescape(html.unescape(t)); strip()                -> clean_text()
 *   whitespace_clean: regex.sub(r'\s+', ' ', t); strip()                -> clean_text()
 *   .lower() (full mapping, final sigma)                                 -> py_lower()
 *   regex.findall(PAT, t, IGNORECASE)                                    -> split_and_encode()
 *   bpe() on each piece's bytes mapped through bytes_to_unicode()        -> bpe_piece()
 * ftfy.fix_text is text/text_fix.c (a C port of ftfy 6.3.1's default pipeline: HTML entities,
 * mojibake, C1 controls, Latin ligatures, full-width forms, curly quotes, line breaks, terminal
 * escapes, control characters, NFC); see there for what it reproduces.
 *
 * Unicode semantics follow the libraries the reference runs on: Python's str (isspace, lower) and
 * the `regex` module (\s, \p{L}, \p{N}, IGNORECASE with simple case folding). Categories and simple
 * case mappings come from libutf8proc; the few things it does not expose (HTML5 entity names,
 * Python's Case_Ignorable/Cased tables for the final sigma) are in the generated
 * text/tokenizer_tables.h.
 *
 * The merges file is embedded with .incbin (TACA_BPE_VOCAB_GZ, set by nn/CMakeLists.txt). After
 * loading, the tokenizer is read-only: every call keeps its state on its own stack/heap, so
 * concurrent calls on one tokenizer are safe. */
#include "text/tokenizer.h"

#include "base/file.h"

#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>
#include <zlib.h>

#include "text/html_charref.h"
#include "text/text_fix.h"
#include "text/tokenizer_tables.h"

/* -------------------------------------------------------------------------------------------------
 * The embedded merges file. */
#ifndef TACA_BPE_VOCAB_GZ
#error "TACA_BPE_VOCAB_GZ (path of bpe_simple_vocab_16e6.txt.gz) must be defined by the build"
#endif
__asm__(".pushsection .rodata\n"
        ".balign 16\n"
        ".globl taca_bpe_vocab_gz_start\n"
        ".hidden taca_bpe_vocab_gz_start\n"
        ".globl taca_bpe_vocab_gz_end\n"
        ".hidden taca_bpe_vocab_gz_end\n"
        "taca_bpe_vocab_gz_start:\n"
        ".incbin \"" TACA_BPE_VOCAB_GZ "\"\n"
        "taca_bpe_vocab_gz_end:\n"
        ".popsection\n");
extern const unsigned char taca_bpe_vocab_gz_start[] __attribute__((visibility("hidden")));
extern const unsigned char taca_bpe_vocab_gz_end[] __attribute__((visibility("hidden")));

/* simple_tokenizer: merges = merges[1:49152-256-2+1]. */
#define CLIP_NUM_MERGES (CLIP_VOCAB_SIZE - 2 * 256 - 2)

/* bpe_ranks as an open-addressing table: ids < 65536, so a pair is one 32-bit key and a slot is 8
 * bytes (the whole table is 1 MiB). */
typedef struct {
  uint32_t key; /* (first id << 16) | second id; PAIR_EMPTY when the slot is free */
  uint16_t rank;
  uint16_t merged; /* id of first+second */
} pair_slot;
#define PAIR_EMPTY UINT32_MAX
#define PAIR_BITS 17

_Static_assert(CLIP_VOCAB_SIZE <= 65535, "ids must fit 16 bits");

struct clip_tokenizer {
  int32_t byte_id[256];     /* id of bytes_to_unicode()[b] */
  int32_t byte_end_id[256]; /* id of bytes_to_unicode()[b] + "</w>" */
  int32_t sot_id, eot_id;
  pair_slot *pairs; /* 1 << PAIR_BITS slots */
};

static inline uint32_t pair_hash(uint32_t key) {
  return (uint32_t)(((uint64_t)key * 0x9E3779B97F4A7C15ull) >> (64 - PAIR_BITS));
}

static const pair_slot *pair_find(const clip_tokenizer *tok, int32_t a, int32_t b) {
  uint32_t key = ((uint32_t)a << 16) | (uint32_t)b;
  for (uint32_t i = pair_hash(key);; i = (i + 1) & ((1u << PAIR_BITS) - 1)) {
    const pair_slot *s = &tok->pairs[i];
    if (s->key == key) return s;
    if (s->key == PAIR_EMPTY) return NULL;
  }
}

/* -------------------------------------------------------------------------------------------------
 * Loading. */

/* A string -> id map used only while loading (Python's `encoder` dict: the last duplicate wins).
 * Slots hold a hash and an id; the id's string is in str/len. */
#define STR_BITS 17
typedef struct {
  uint32_t hash; /* 0: free */
  int32_t id;
} str_slot;

typedef struct {
  str_slot *slots;
  const char *str[CLIP_VOCAB_SIZE];
  uint32_t len[CLIP_VOCAB_SIZE];
} str_map;

static uint32_t str_hash(const char *s, size_t n) {
  uint64_t h = 0xcbf29ce484222325ull; /* FNV-1a, finished like MurmurHash3's fmix64 */
  for (size_t i = 0; i < n; i++) h = (h ^ (unsigned char)s[i]) * 0x100000001b3ull;
  h ^= h >> 33;
  h *= 0xff51afd7ed558ccdull;
  h ^= h >> 33;
  return (uint32_t)h | 1u;
}

static str_slot *str_map_slot(str_map *m, const char *s, size_t n, uint32_t h) {
  for (uint32_t i = h >> (32 - STR_BITS);; i = (i + 1) & ((1u << STR_BITS) - 1)) {
    str_slot *e = &m->slots[i];
    if (!e->hash) return e;
    if (e->hash == h && m->len[e->id] == n && memcmp(m->str[e->id], s, n) == 0) return e;
  }
}

static void str_map_put(str_map *m, const char *s, size_t n, int32_t id) {
  uint32_t h = str_hash(s, n);
  str_slot *e = str_map_slot(m, s, n, h);
  m->str[id] = s;
  m->len[id] = (uint32_t)n;
  e->hash = h;
  e->id = id;
}

static int32_t str_map_get(str_map *m, const char *s, size_t n) {
  str_slot *e = str_map_slot(m, s, n, str_hash(s, n));
  return e->hash ? e->id : -1;
}

/* bytes_to_unicode(): printable Latin-1 bytes map to themselves, the other 68 to 256+n in byte
 * order. Fills the code points in the dict's insertion order (the vocabulary's order) and their
 * bytes. */
static void bytes_to_unicode(uint8_t order_byte[256], uint32_t order_cp[256]) {
  int k = 0;
  for (int b = 0; b < 256; b++)
    if ((b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF)) {
      order_byte[k] = (uint8_t)b;
      order_cp[k++] = (uint32_t)b;
    }
  int n = 0;
  for (int b = 0; b < 256; b++)
    if (!((b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF))) {
      order_byte[k] = (uint8_t)b;
      order_cp[k++] = 256u + (uint32_t)n++;
    }
}

static size_t count_newlines(const unsigned char *p, size_t n) {
  size_t c = 0;
  for (const unsigned char *q = p, *end = p + n; (q = memchr(q, '\n', (size_t)(end - q))); q++) c++;
  return c;
}

/* Inflates gzip data until it holds at least want_lines newlines (or ends). Plain text is returned
 * as is (*owned = false). */
static int read_text(const unsigned char *src, size_t n, size_t want_lines, const char *what,
                     unsigned char **text, size_t *text_len, bool *owned, taca_error *err) {
  if (n < 2 || src[0] != 0x1f || src[1] != 0x8b) {
    *text = (unsigned char *)src;
    *text_len = n;
    *owned = false;
    return 0;
  }
  z_stream zs;
  memset(&zs, 0, sizeof zs);
  if (inflateInit2(&zs, 16 + MAX_WBITS) != Z_OK)
    return taca_fail(err, "%s: zlib init failed", what);
  size_t cap = 1u << 20, len = 0, lines = 0;
  unsigned char *buf = malloc(cap);
  if (!buf) {
    inflateEnd(&zs);
    return taca_fail(err, "%s: out of memory", what);
  }
  zs.next_in = (unsigned char *)src;
  int rc = Z_OK;
  size_t in_left = n;
  while (lines < want_lines) {
    if (cap - len < (1u << 16)) {
      unsigned char *nb = realloc(buf, cap * 2);
      if (!nb) {
        free(buf);
        inflateEnd(&zs);
        return taca_fail(err, "%s: out of memory", what);
      }
      buf = nb;
      cap *= 2;
    }
    if (zs.avail_in == 0 && in_left > 0) {
      zs.avail_in = in_left > (1u << 30) ? (1u << 30) : (uInt)in_left;
      in_left -= zs.avail_in;
    }
    zs.next_out = buf + len;
    zs.avail_out = (uInt)(cap - len > (1u << 30) ? (1u << 30) : cap - len);
    size_t before = len;
    rc = inflate(&zs, Z_NO_FLUSH);
    len = (size_t)(zs.next_out - buf);
    lines += count_newlines(buf + before, len - before);
    if (rc == Z_STREAM_END) break;
    const char *why = NULL;
    if (rc == Z_BUF_ERROR && len == before)
      why = "truncated data"; /* no progress: input used up */
    else if (rc != Z_OK && rc != Z_BUF_ERROR)
      why = zs.msg ? zs.msg : "corrupt data";
    else if (len > ((size_t)64 << 20))
      why = "no merges in the first 64 MiB";
    if (why) {
      taca_fail(err, "%s: gzip: %s", what, why);
      free(buf);
      inflateEnd(&zs);
      return -1;
    }
  }
  inflateEnd(&zs);
  *text = buf;
  *text_len = len;
  *owned = true;
  return 0;
}

/* Python's str.isspace() (Py_UNICODE_ISSPACE): category Zs or bidirectional class WS, B or S. */
static bool py_isspace(uint32_t c) {
  if (c < 128) return c == ' ' || (c >= 0x09 && c <= 0x0D) || (c >= 0x1C && c <= 0x1F);
  const utf8proc_property_t *p = utf8proc_get_property((utf8proc_int32_t)c);
  return p->category == UTF8PROC_CATEGORY_ZS || p->bidi_class == UTF8PROC_BIDI_CLASS_WS ||
         p->bidi_class == UTF8PROC_BIDI_CLASS_B || p->bidi_class == UTF8PROC_BIDI_CLASS_S;
}

/* Splits one merges line like Python's str.split(): returns the number of fields (keeps 3). */
static int split_fields(const unsigned char *s, size_t n, const unsigned char *f[3],
                        size_t flen[3]) {
  int nf = 0;
  size_t i = 0;
  while (i < n) {
    utf8proc_int32_t c;
    utf8proc_ssize_t k = utf8proc_iterate(s + i, (utf8proc_ssize_t)(n - i), &c);
    if (k < 0) return -1;
    if (py_isspace((uint32_t)c)) {
      i += (size_t)k;
      continue;
    }
    size_t start = i;
    while (i < n) {
      k = utf8proc_iterate(s + i, (utf8proc_ssize_t)(n - i), &c);
      if (k < 0) return -1;
      if (py_isspace((uint32_t)c)) break;
      i += (size_t)k;
    }
    if (nf < 3) {
      f[nf] = s + start;
      flen[nf] = i - start;
    }
    nf++;
  }
  return nf;
}

typedef struct {
  const unsigned char *a, *b; /* the two symbols of one merge line */
  size_t alen, blen;
} merge_rec;

/* Reads merges[1 : 1 + CLIP_NUM_MERGES] (line 0 is the "#version" header) like
 * `text.split('\n')` then `tuple(line.split())`. */
static merge_rec *parse_merges(const unsigned char *text, size_t text_len, const char *what,
                               taca_error *err) {
  const unsigned char *end = text + text_len;
  const unsigned char *nl = memchr(text, '\n', text_len);
  if (!nl) {
    taca_fail(err, "%s: no merges after the header line", what);
    return NULL;
  }
  merge_rec *mr = malloc(CLIP_NUM_MERGES * sizeof *mr);
  if (!mr) {
    taca_fail(err, "%s: out of memory", what);
    return NULL;
  }
  const unsigned char *p = nl + 1;
  int r = 0;
  while (r < CLIP_NUM_MERGES) {
    nl = memchr(p, '\n', (size_t)(end - p));
    const unsigned char *e = nl ? nl : end;
    if (!nl && e == p) break; /* the empty string after a final newline is not a merge */
    const unsigned char *f[3];
    size_t flen[3];
    int nf = split_fields(p, (size_t)(e - p), f, flen);
    if (nf < 0) {
      taca_fail(err, "%s: line %d is not valid UTF-8", what, r + 2);
      goto fail;
    }
    if (nf != 2) {
      taca_fail(err, "%s: line %d: expected two symbols separated by a space, got %d fields", what,
                r + 2, nf);
      goto fail;
    }
    mr[r++] = (merge_rec){.a = f[0], .alen = flen[0], .b = f[1], .blen = flen[1]};
    if (!nl) break;
    p = nl + 1;
  }
  if (r < CLIP_NUM_MERGES) {
    taca_fail(err, "%s: expected at least %d merge lines after the header, found %d", what,
              CLIP_NUM_MERGES, r);
    goto fail;
  }
  return mr;
fail:
  free(mr);
  return NULL;
}

static clip_tokenizer *build(const unsigned char *text, size_t text_len, const char *what,
                             taca_error *err) {
  merge_rec *mr = parse_merges(text, text_len, what, err);
  if (!mr) return NULL;
  clip_tokenizer *tok = calloc(1, sizeof *tok);
  str_map *m = calloc(1, sizeof *m);
  char *arena = NULL;
  if (!tok || !m) goto oom;
  m->slots = calloc((size_t)1 << STR_BITS, sizeof *m->slots);
  tok->pairs = malloc(sizeof *tok->pairs << PAIR_BITS);
  /* The base symbols (256 * at most 2+2+4 bytes), then the merged strings (at most the text). */
  size_t arena_cap = 256 * 8 + text_len, arena_len = 0;
  arena = malloc(arena_cap);
  if (!m->slots || !tok->pairs || !arena) goto oom;
  memset(tok->pairs, 0xff, sizeof *tok->pairs << PAIR_BITS); /* every key PAIR_EMPTY */

  /* The vocabulary: 1. the byte-unicode symbols, 2. the same with "</w>", in bytes_to_unicode()
   * order, 3. each merge's concatenation, 4. the two specials. */
  uint8_t order_byte[256];
  uint32_t order_cp[256];
  bytes_to_unicode(order_byte, order_cp);
  char *base[256], *base_end[256];
  size_t base_len[256];
  for (int k = 0; k < 256; k++) {
    base[k] = arena + arena_len;
    base_len[k] = (size_t)utf8proc_encode_char((utf8proc_int32_t)order_cp[k], (uint8_t *)base[k]);
    arena_len += base_len[k];
    str_map_put(m, base[k], base_len[k], k);
  }
  for (int k = 0; k < 256; k++) {
    base_end[k] = arena + arena_len;
    memcpy(base_end[k], base[k], base_len[k]);
    memcpy(base_end[k] + base_len[k], "</w>", 4);
    arena_len += base_len[k] + 4;
    str_map_put(m, base_end[k], base_len[k] + 4, 256 + k);
  }
  const size_t merged_off = arena_len; /* the concatenations follow, in merge order */
  for (int r = 0; r < CLIP_NUM_MERGES; r++) {
    char *s = arena + arena_len;
    memcpy(s, mr[r].a, mr[r].alen);
    memcpy(s + mr[r].alen, mr[r].b, mr[r].blen);
    arena_len += mr[r].alen + mr[r].blen;
    str_map_put(m, s, mr[r].alen + mr[r].blen, 512 + r);
  }
  str_map_put(m, "<|startoftext|>", 15, CLIP_VOCAB_SIZE - 2);
  str_map_put(m, "<|endoftext|>", 13, CLIP_VOCAB_SIZE - 1);

  for (int k = 0; k < 256; k++) {
    tok->byte_id[order_byte[k]] = str_map_get(m, base[k], base_len[k]);
    tok->byte_end_id[order_byte[k]] = str_map_get(m, base_end[k], base_len[k] + 4);
  }
  tok->sot_id = str_map_get(m, "<|startoftext|>", 15);
  tok->eot_id = str_map_get(m, "<|endoftext|>", 13);

  /* bpe_ranks: (first, second) -> rank, the last duplicate winning. A pair whose symbols are not in
   * the vocabulary can never occur in a word and is left out. */
  const char *cat = arena + merged_off;
  for (int r = 0; r < CLIP_NUM_MERGES; r++) {
    size_t clen = mr[r].alen + mr[r].blen;
    int32_t a = str_map_get(m, (const char *)mr[r].a, mr[r].alen);
    int32_t b = str_map_get(m, (const char *)mr[r].b, mr[r].blen);
    int32_t merged = str_map_get(m, cat, clen);
    cat += clen;
    if (a < 0 || b < 0) continue;
    uint32_t key = ((uint32_t)a << 16) | (uint32_t)b;
    uint32_t i = pair_hash(key);
    while (tok->pairs[i].key != PAIR_EMPTY && tok->pairs[i].key != key)
      i = (i + 1) & ((1u << PAIR_BITS) - 1);
    tok->pairs[i] = (pair_slot){.key = key, .rank = (uint16_t)r, .merged = (uint16_t)merged};
  }
  free(m->slots);
  free(m);
  free(arena);
  free(mr);
  return tok;

oom:
  taca_fail(err, "%s: out of memory", what);
  if (m) free(m->slots);
  free(m);
  free(arena);
  free(mr);
  clip_tokenizer_free(tok);
  return NULL;
}

clip_tokenizer *clip_tokenizer_load(const char *path, taca_error *err) {
  const char *what = path ? path : "embedded bpe_simple_vocab_16e6.txt.gz";
  unsigned char *file = NULL;
  size_t file_len = 0;
  if (path) {
    if (taca_read_file(path, 0, &file, &file_len, err) != 0) return NULL;
  } else {
    file = (unsigned char *)taca_bpe_vocab_gz_start;
    file_len = (size_t)(taca_bpe_vocab_gz_end - taca_bpe_vocab_gz_start);
  }
  unsigned char *text = NULL;
  size_t text_len = 0;
  bool owned = false;
  clip_tokenizer *tok = NULL;
  if (read_text(file, file_len, (size_t)CLIP_NUM_MERGES + 1, what, &text, &text_len, &owned, err) ==
      0) {
    tok = build(text, text_len, what, err);
    if (tok && (tok->sot_id != CLIP_SOT_ID || tok->eot_id != CLIP_EOT_ID)) {
      taca_fail(err, "%s: special tokens got ids %d/%d, expected %d/%d", what, tok->sot_id,
                tok->eot_id, CLIP_SOT_ID, CLIP_EOT_ID);
      clip_tokenizer_free(tok);
      tok = NULL;
    }
    if (owned) free(text);
  }
  if (path) free(file);
  return tok;
}

void clip_tokenizer_free(clip_tokenizer *tok) {
  if (!tok) return;
  free(tok->pairs);
  free(tok);
}

/* -------------------------------------------------------------------------------------------------
 * Cleaning: html.unescape (Python 3.11 html/__init__.py), whitespace folding, str.lower(). */

static bool in_ranges(uint32_t c, const uint32_t (*r)[2], size_t n) {
  size_t lo = 0, hi = n;
  while (lo < hi) {
    size_t mid = (lo + hi) / 2;
    if (c < r[mid][0])
      hi = mid;
    else if (c > r[mid][1])
      lo = mid + 1;
    else
      return true;
  }
  return false;
}
#define IN_TABLE(c, t) in_ranges((c), (t), sizeof(t) / sizeof((t)[0]))

static const char *entity_find(const char *name, size_t len) {
  size_t lo = 0, hi = sizeof HTML_ENTITIES / sizeof HTML_ENTITIES[0];
  while (lo < hi) {
    size_t mid = (lo + hi) / 2;
    const char *e = HTML_ENTITIES[mid].name;
    int c = strncmp(name, e, len);
    if (c == 0 && e[len] != '\0') c = -1;
    if (c < 0)
      hi = mid;
    else if (c > 0)
      lo = mid + 1;
    else
      return HTML_ENTITIES[mid].value;
  }
  return NULL;
}

static size_t put_utf8(uint32_t *out, const char *s) {
  size_t n = 0;
  for (size_t i = 0, len = strlen(s); i < len;) {
    utf8proc_int32_t c;
    utf8proc_ssize_t k = utf8proc_iterate((const uint8_t *)s + i, (utf8proc_ssize_t)(len - i), &c);
    if (k <= 0) break; /* the tables are valid UTF-8 */
    out[n++] = (uint32_t)c;
    i += (size_t)k;
  }
  return n;
}

size_t html_numeric_charref(uint32_t num, uint32_t out[2]) {
  for (size_t i = 0; i < sizeof HTML_INVALID_CHARREFS / sizeof HTML_INVALID_CHARREFS[0]; i++)
    if (HTML_INVALID_CHARREFS[i].num == num) return put_utf8(out, HTML_INVALID_CHARREFS[i].value);
  if ((num >= 0xD800 && num <= 0xDFFF) || num > 0x10FFFF) {
    out[0] = 0xFFFD;
    return 1;
  }
  if (IN_TABLE(num, HTML_INVALID_CODEPOINTS)) return 0;
  out[0] = num;
  return 1;
}

static bool is_digit(uint32_t c) { return c >= '0' && c <= '9'; }
static bool is_xdigit(uint32_t c) {
  return is_digit(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}
static uint32_t xdigit_value(uint32_t c) { return is_digit(c) ? c - '0' : (c | 0x20) - 'a' + 10; }

/* One match of html._charref at s[0] == '&':
 *   &(#[0-9]+;?|#[xX][0-9a-fA-F]+;?|[^\t\n\f <&#;]{1,32};?)
 * Returns the number of code points consumed (0: no match) and appends the replacement to out. */
static size_t charref(const uint32_t *s, size_t n, uint32_t *out, size_t *o) {
  if (n > 1 && s[1] == '#') {
    size_t j = 2;
    uint32_t num = 0;
    /* Saturating: any value past U+10FFFF gives U+FFFD. (Python 3.11's int() refuses more than 4300
     * decimal digits, so for such input the reference raises instead.) */
    if (j < n && is_digit(s[j])) {
      for (; j < n && is_digit(s[j]); j++) num = num > 0x10FFFF ? num : num * 10 + (s[j] - '0');
    } else if (j + 1 < n && (s[j] == 'x' || s[j] == 'X') && is_xdigit(s[j + 1])) {
      for (j++; j < n && is_xdigit(s[j]); j++)
        num = num > 0x10FFFF ? num : num * 16 + xdigit_value(s[j]);
    } else {
      return 0;
    }
    if (j < n && s[j] == ';') j++;
    *o += html_numeric_charref(num, out + *o);
    return j;
  }
  size_t j = 1;
  while (j < n && j <= 32 && s[j] != '\t' && s[j] != '\n' && s[j] != '\f' && s[j] != ' ' &&
         s[j] != '<' && s[j] != '&' && s[j] != '#' && s[j] != ';')
    j++;
  if (j == 1) return 0;
  if (j < n && s[j] == ';') j++;
  /* s[1..j) is the name; look it up, then its prefixes of length len-1 down to 2. Only ASCII can
   * match (the names are ASCII), so the search covers the ASCII prefix. */
  size_t len = j - 1, ascii = 0;
  char name[64];
  while (ascii < len && s[1 + ascii] < 128) {
    name[ascii] = (char)s[1 + ascii];
    ascii++;
  }
  const char *v = ascii == len ? entity_find(name, len) : NULL;
  size_t x = len;
  for (size_t k = len - 1; !v && k >= 2; k--) {
    if (k > ascii) continue;
    v = entity_find(name, k);
    x = k;
  }
  if (!v) return 0; /* '&' + s: unchanged (s holds no '&', so rescanning it changes nothing) */
  *o += put_utf8(out + *o, v);
  for (size_t k = 1 + x; k < j; k++) out[(*o)++] = s[k];
  return j;
}

/* html.unescape(); the result is never longer than the input. */
static size_t html_unescape(const uint32_t *s, size_t n, uint32_t *out) {
  size_t o = 0;
  for (size_t i = 0; i < n;) {
    size_t used = s[i] == '&' ? charref(s + i, n - i, out, &o) : 0;
    if (used) {
      i += used;
    } else {
      out[o++] = s[i++];
    }
  }
  return o;
}

/* The `regex` module's \s: the White_Space property. */
static bool regex_isspace(uint32_t c) {
  if (c < 128) return c == ' ' || (c >= 0x09 && c <= 0x0D);
  if (c == 0x85) return true;
  utf8proc_category_t cat = utf8proc_category((utf8proc_int32_t)c);
  return cat == UTF8PROC_CATEGORY_ZS || cat == UTF8PROC_CATEGORY_ZL || cat == UTF8PROC_CATEGORY_ZP;
}

/* Python's handle_capital_sigma(): is s[i] (U+03A3) in the Final_Sigma context? */
static bool final_sigma(const uint32_t *s, size_t n, size_t i) {
  size_t j = i;
  while (j > 0 && IN_TABLE(s[j - 1], CASE_IGNORABLE)) j--;
  if (j == 0 || !IN_TABLE(s[j - 1], CASED)) return false;
  j = i + 1;
  while (j < n && IN_TABLE(s[j], CASE_IGNORABLE)) j++;
  return j == n || !IN_TABLE(s[j], CASED);
}

/* Python's str.lower(): full lowercase mapping (the only unconditional multi-character one is
 * U+0130) and the final sigma. Writes at most 2n code points. */
static size_t py_lower(const uint32_t *s, size_t n, uint32_t *out) {
  size_t o = 0;
  for (size_t i = 0; i < n; i++) {
    uint32_t c = s[i];
    if (c < 128) {
      out[o++] = (c >= 'A' && c <= 'Z') ? c + 32 : c;
    } else if (c == 0x3A3) {
      out[o++] = final_sigma(s, n, i) ? 0x3C2 : 0x3C3;
    } else if (c == 0x130) {
      out[o++] = 0x69;
      out[o++] = 0x307;
    } else {
      out[o++] = (uint32_t)utf8proc_tolower((utf8proc_int32_t)c);
    }
  }
  return o;
}

/* -------------------------------------------------------------------------------------------------
 * BPE. */

/* Where the ids go: only the first `cap` are wanted, and encoding stops once they are known. */
typedef struct {
  int32_t *ids;
  int n, cap;
} id_sink;

static inline bool sink_full(const id_sink *k) { return k->n >= k->cap; }
static inline void sink_put(id_sink *k, int32_t id) {
  if (k->n < k->cap) k->ids[k->n++] = id;
}

typedef struct {
  int32_t *id, *prev, *next;
  uint64_t *heap;  /* (rank << 32) | position, a min-heap */
  uint32_t *batch; /* positions of the rank being merged */
  uint8_t *bytes;
  size_t cap; /* nodes (bytes) the buffers hold */
} bpe_scratch;

static void scratch_free(bpe_scratch *sc) {
  free(sc->id);
  free(sc->prev);
  free(sc->next);
  free(sc->heap);
  free(sc->batch);
  free(sc->bytes);
  memset(sc, 0, sizeof *sc);
}

static int scratch_reserve(bpe_scratch *sc, size_t m) {
  if (m <= sc->cap) return 0;
  size_t cap = sc->cap ? sc->cap : 64;
  while (cap < m) cap *= 2;
  scratch_free(sc);
  sc->id = malloc(cap * sizeof *sc->id);
  sc->prev = malloc(cap * sizeof *sc->prev);
  sc->next = malloc(cap * sizeof *sc->next);
  sc->heap = malloc(3 * cap * sizeof *sc->heap);
  sc->batch = malloc(3 * cap * sizeof *sc->batch);
  sc->bytes = malloc(cap);
  if (!sc->id || !sc->prev || !sc->next || !sc->heap || !sc->batch || !sc->bytes) {
    scratch_free(sc);
    return -1;
  }
  sc->cap = cap;
  return 0;
}

static void heap_push(uint64_t *h, size_t *n, uint64_t v) {
  size_t i = (*n)++;
  while (i > 0) {
    size_t p = (i - 1) / 2;
    if (h[p] <= v) break;
    h[i] = h[p];
    i = p;
  }
  h[i] = v;
}

static uint64_t heap_pop(uint64_t *h, size_t *n) {
  uint64_t top = h[0], v = h[--(*n)];
  size_t i = 0;
  for (;;) {
    size_t c = 2 * i + 1;
    if (c >= *n) break;
    if (c + 1 < *n && h[c + 1] < h[c]) c++;
    if (v <= h[c]) break;
    h[i] = h[c];
    i = c;
  }
  if (*n > 0) h[i] = v;
  return top;
}

static void push_pair(const clip_tokenizer *tok, bpe_scratch *sc, size_t *hn, int32_t pos) {
  const pair_slot *s = pair_find(tok, sc->id[pos], sc->id[sc->next[pos]]);
  if (s) heap_push(sc->heap, hn, ((uint64_t)(uint32_t)s->rank << 32) | (uint32_t)pos);
}

/* simple_tokenizer.bpe() on one piece of m bytes in sc->bytes: repeatedly take the lowest-ranked
 * adjacent pair and merge all its occurrences left to right. The heap holds every adjacent pair
 * (stale entries are skipped when popped); all entries of the lowest rank are taken out before any
 * is merged, so pairs created by those merges (which always have another rank) wait for the next
 * round, exactly like Python's loop. */
static void bpe_piece(const clip_tokenizer *tok, bpe_scratch *sc, size_t m, id_sink *sink) {
  int32_t *id = sc->id, *prev = sc->prev, *next = sc->next;
  for (size_t k = 0; k < m; k++) {
    id[k] = k + 1 < m ? tok->byte_id[sc->bytes[k]] : tok->byte_end_id[sc->bytes[k]];
    prev[k] = (int32_t)k - 1;
    next[k] = k + 1 < m ? (int32_t)k + 1 : -1;
  }
  size_t hn = 0;
  for (size_t k = 0; k + 1 < m; k++) push_pair(tok, sc, &hn, (int32_t)k);
  while (hn > 0) {
    uint64_t top = heap_pop(sc->heap, &hn);
    uint32_t rank = (uint32_t)(top >> 32);
    size_t nb = 0;
    sc->batch[nb++] = (uint32_t)top;
    while (hn > 0 && (uint32_t)(sc->heap[0] >> 32) == rank)
      sc->batch[nb++] = (uint32_t)heap_pop(sc->heap, &hn);
    for (size_t b = 0; b < nb; b++) {
      int32_t p = (int32_t)sc->batch[b];
      if (id[p] < 0) continue; /* merged into its left neighbour */
      int32_t q = next[p];
      if (q < 0) continue;
      const pair_slot *s = pair_find(tok, id[p], id[q]);
      if (!s || (uint32_t)s->rank != rank) continue;
      id[p] = s->merged;
      id[q] = -1;
      next[p] = next[q];
      if (next[q] >= 0) prev[next[q]] = p;
      if (prev[p] >= 0) push_pair(tok, sc, &hn, prev[p]);
      if (next[p] >= 0) push_pair(tok, sc, &hn, p);
    }
  }
  for (int32_t k = 0; k >= 0 && !sink_full(sink); k = next[k]) sink_put(sink, id[k]);
}

/* -------------------------------------------------------------------------------------------------
 * Splitting:
 * <\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+ with
 * the `regex` module's IGNORECASE (simple case folding). */

enum { CL_SPACE, CL_LETTER, CL_NUMBER, CL_OTHER, CL_NONE };

static int split_class(uint32_t c) {
  if (c < 128) {
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')) return CL_LETTER;
    if (c >= '0' && c <= '9') return CL_NUMBER;
    return regex_isspace(c) ? CL_SPACE : CL_OTHER;
  }
  /* U+0345 COMBINING GREEK YPOGEGRAMMENI case-folds to a letter (iota): under IGNORECASE the regex
   * module leaves it out of [^\s\p{L}\p{N}] while [\p{L}] does not take it, so no branch matches it
   * and it is skipped like a space (checked against regex 2022.10.31 over every code point). */
  if (c == 0x345) return CL_NONE;
  switch (utf8proc_category((utf8proc_int32_t)c)) {
  case UTF8PROC_CATEGORY_LU:
  case UTF8PROC_CATEGORY_LL:
  case UTF8PROC_CATEGORY_LT:
  case UTF8PROC_CATEGORY_LM:
  case UTF8PROC_CATEGORY_LO:
    return CL_LETTER;
  case UTF8PROC_CATEGORY_ND:
  case UTF8PROC_CATEGORY_NL:
  case UTF8PROC_CATEGORY_NO:
    return CL_NUMBER;
  default:
    return regex_isspace(c) ? CL_SPACE : CL_OTHER;
  }
}

/* Case-insensitive equality of text character c with pattern character p (simple case folding; the
 * only non-ASCII characters folding onto ASCII letters are U+017F LONG S -> s and U+212A KELVIN ->
 * k). */
static bool fold_eq(uint32_t c, char p) {
  if (c == (uint32_t)p) return true;
  if (p >= 'a' && p <= 'z')
    return c == (uint32_t)(p - 32) || (p == 's' && c == 0x17F) || (p == 'k' && c == 0x212A);
  return false;
}

static size_t match_literal(const uint32_t *s, size_t n, const char *lit) {
  size_t k = 0;
  for (; lit[k]; k++)
    if (k >= n || !fold_eq(s[k], lit[k])) return 0;
  return k;
}

/* Whether the n code points at s are exactly the ASCII string lit. */
static bool memcmp_cp(const uint32_t *s, const char *lit, size_t n) {
  for (size_t q = 0; q < n; q++)
    if (s[q] != (uint32_t)(unsigned char)lit[q]) return false;
  return true;
}

static int encode_piece(const clip_tokenizer *tok, const uint32_t *s, size_t n, bpe_scratch *sc,
                        id_sink *sink) {
  size_t m = 0;
  for (size_t i = 0; i < n; i++) m += s[i] < 0x80 ? 1 : s[i] < 0x800 ? 2 : s[i] < 0x10000 ? 3 : 4;
  if (scratch_reserve(sc, m) != 0) return -1;
  m = 0;
  for (size_t i = 0; i < n; i++)
    m += (size_t)utf8proc_encode_char((utf8proc_int32_t)s[i], sc->bytes + m);
  bpe_piece(tok, sc, m, sink);
  return 0;
}

static int split_and_encode(const clip_tokenizer *tok, const uint32_t *t, size_t n, id_sink *sink,
                            taca_error *err) {
  static const char *const contractions[] = {"'s", "'t", "'re", "'ve", "'m", "'ll", "'d"};
  static const char *const specials[] = {"<|startoftext|>", "<|endoftext|>"};
  bpe_scratch sc = {0};
  size_t i = 0;
  while (i < n && !sink_full(sink)) {
    size_t len = 0;
    if (t[i] == '<') {
      int k = 0;
      for (; k < 2 && !len; k++) len = match_literal(t + i, n - i, specials[k]);
      /* The exact text is in the BPE cache as itself (the special id); a case variant such as
       * "<|U+017Ftartoftext|>" goes through BPE like any other piece. */
      if (len && memcmp_cp(t + i, specials[k - 1], len)) {
        sink_put(sink, k == 1 ? tok->sot_id : tok->eot_id);
        i += len;
        continue;
      }
    }
    if (!len && t[i] == '\'')
      for (int k = 0; k < 7 && !len; k++) len = match_literal(t + i, n - i, contractions[k]);
    if (!len) {
      int cl = split_class(t[i]);
      if (cl == CL_SPACE || cl == CL_NONE) {
        i++;
        continue;
      }
      len = 1;
      if (cl != CL_NUMBER)
        while (i + len < n && split_class(t[i + len]) == cl) len++;
    }
    if (encode_piece(tok, t + i, len, &sc, sink) != 0) {
      scratch_free(&sc);
      return taca_fail(err, "tokenize: out of memory for a %zu-character piece", len);
    }
    i += len;
  }
  scratch_free(&sc);
  return 0;
}

/* The rest of basic_clean (after ftfy) + whitespace_clean + lower, on n code points. Returns the
 * length of the result in out (capacity 2n). */
static size_t clean_text(uint32_t *a, size_t n, uint32_t *tmp, uint32_t *out) {
  n = html_unescape(a, n, tmp);
  n = html_unescape(tmp, n, a);
  size_t lo = 0, hi = n;
  while (lo < hi && py_isspace(a[lo])) lo++;
  while (hi > lo && py_isspace(a[hi - 1])) hi--;
  size_t m = 0;
  for (size_t i = lo; i < hi;) {
    if (regex_isspace(a[i])) {
      tmp[m++] = ' ';
      while (i < hi && regex_isspace(a[i])) i++;
    } else {
      tmp[m++] = a[i++];
    }
  }
  lo = 0, hi = m;
  while (lo < hi && py_isspace(tmp[lo])) lo++;
  while (hi > lo && py_isspace(tmp[hi - 1])) hi--;
  return py_lower(tmp + lo, hi - lo, out);
}

/* Longer captions are refused, which keeps every position inside a piece within int32. */
#define TOKENIZE_MAX_BYTES ((size_t)64 << 20)

int clip_tokenize(const clip_tokenizer *tok, const char *text, int32_t *out, int context_len,
                  taca_error *err) {
  if (!tok || !text || !out) return taca_fail(err, "tokenize: NULL argument");
  if (context_len < 1)
    return taca_fail(err, "tokenize: context length %d must be >= 1", context_len);
  size_t len = strnlen(text, TOKENIZE_MAX_BYTES + 1);
  if (len > TOKENIZE_MAX_BYTES)
    return taca_fail(err, "tokenize: caption longer than %zu bytes", TOKENIZE_MAX_BYTES);
  for (size_t i = 0; i < len;) {
    utf8proc_int32_t c;
    utf8proc_ssize_t k =
        utf8proc_iterate((const uint8_t *)text + i, (utf8proc_ssize_t)(len - i), &c);
    if (k < 0) return taca_fail(err, "tokenize: invalid UTF-8 at byte %zu", i);
    i += (size_t)k;
  }

  /* basic_clean: ftfy.fix_text. */
  char *fixed = NULL;
  size_t fixed_len = 0;
  if (text_fix(text, len, &fixed, &fixed_len, err) != 0) return taca_error_prefix(err, "tokenize");
  const uint8_t *nfc = (const uint8_t *)fixed; /* ftfy's output is in NFC */
  utf8proc_ssize_t nfc_len = (utf8proc_ssize_t)fixed_len;
  size_t n = 0, cap = (size_t)nfc_len + 1;
  uint32_t *a = malloc(cap * sizeof *a), *tmp = malloc(cap * sizeof *tmp),
           *low = malloc(2 * cap * sizeof *low);
  int rc = 0;
  if (!a || !tmp || !low) {
    rc = taca_fail(err, "tokenize: out of memory for a %zu-byte caption", len);
    goto done;
  }
  for (utf8proc_ssize_t i = 0; i < nfc_len;) {
    utf8proc_int32_t c;
    utf8proc_ssize_t k = utf8proc_iterate(nfc + i, nfc_len - i, &c);
    if (k < 0) {
      rc = taca_fail(err, "tokenize: text_fix produced invalid UTF-8");
      goto done;
    }
    a[n++] = (uint32_t)c;
    i += k;
  }
  n = clean_text(a, n, tmp, low);

  /* open_clip: [sot] + ids + [eot], cut to context_len with the last id set to eot, zero-padded;
   * i.e. [sot] + ids[:context_len-2] + [eot] (or just [eot] when context_len is 1). */
  if (context_len == 1) {
    out[0] = tok->eot_id;
    goto done;
  }
  id_sink sink = {.ids = out + 1, .n = 0, .cap = context_len - 2};
  if (split_and_encode(tok, low, n, &sink, err) != 0) {
    rc = -1;
    goto done;
  }
  out[0] = tok->sot_id;
  out[1 + sink.n] = tok->eot_id;
  for (int k = 2 + sink.n; k < context_len; k++) out[k] = 0;

done:
  free(fixed);
  free(a);
  free(tmp);
  free(low);
  return rc;
}
