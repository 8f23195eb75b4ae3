/* textenc.h: the text towers loaded with --model NAME=PATH[:ARCH], which encode captions for Search.
 * Each is checked against the store's model record (name, embedding width, weights checksum) at
 * load. Encoding is serialised (one CPU backend for all towers). */
#ifndef TACA_FEATURED_TEXTENC_H
#define TACA_FEATURED_TEXTENC_H

#include "base/error.h"
#include "services/featured/featured.h"

int text_towers_load(text_towers **out, const featured_config *cfg, const store_info *info, taca_error *err);
void text_towers_free(text_towers *t);
/* 1 when the store model `name` has its text tower loaded. */
int text_towers_has(const text_towers *t, const char *name);
/* Comma-separated names of the loaded towers into buf ("none" when there are none). */
void text_towers_list(const text_towers *t, char *buf, size_t cap);
/* Tokenizes and encodes n captions with the tower of `name` into out [n, dim]; dim must be the
 * tower's embedding width. */
int text_towers_encode(text_towers *t, const char *name, const char *const *captions, int n, float *out, int dim,
                       taca_error *err);

#endif
