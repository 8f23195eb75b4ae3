/* html_charref.h: Python's html.unescape rule for a numeric character reference (&#NNN; / &#xHH;,
 * html._replace_charref), shared by the tokenizer's html.unescape and text_fix's unescape_html.
 * Defined in text/tokenizer.c beside its tables (html._invalid_charrefs / _invalid_codepoints, made
 * by text/gen_tokenizer_tables.py). */
#ifndef TACA_TEXT_HTML_CHARREF_H
#define TACA_TEXT_HTML_CHARREF_H

#include <stddef.h>
#include <stdint.h>

/* The replacement of the reference to code point num (saturated above U+10FFFF by the caller):
 * a fixed value for html._invalid_charrefs, U+FFFD for surrogates and values past U+10FFFF,
 * nothing for html._invalid_codepoints, else num itself. Writes at most 2 code points to out and
 * returns how many. */
size_t html_numeric_charref(uint32_t num, uint32_t out[2]);

#endif
