/* encoders.h: the encoders loaded with --model NAME=PATH[:ARCH] (methods/encoder.h: a plain CLIP
 * model or an exported adapted one), which embed new data for Embed and for Search by caption or by
 * image, in the space of the store's model NAME.
 *
 * Each is checked against the store's model record at load (the weights checksum it recorded, the
 * embedding widths), so served features of new data are those precompute would have stored. All
 * encoders share one CPU backend; calls are serialised (one forward at a time), which bounds the
 * server's memory for them to one batch of one model. */
#ifndef TACA_FEATURED_ENCODERS_H
#define TACA_FEATURED_ENCODERS_H

#include <stddef.h>
#include <stdint.h>

#include "base/error.h"
#include "services/featured/featured.h"

int featured_encoders_load(featured_encoders **out, const featured_config *cfg, const store_info *info,
                           taca_error *err);
void featured_encoders_free(featured_encoders *e);
/* 1 when the store model `name` has its image encoder (resp. its text tower) loaded. */
int featured_encoders_has_images(const featured_encoders *e, const char *name);
int featured_encoders_has_texts(const featured_encoders *e, const char *name);
/* 1 when an encoder of `name` is loaded at all (it may lack a text tower). */
int featured_encoders_loaded(const featured_encoders *e, const char *name);
/* Comma-separated names of the loaded encoders into buf ("none" when there are none). */
void featured_encoders_list(const featured_encoders *e, char *buf, size_t cap);
/* Tokenizes and encodes n captions with the text tower of `name` into out [n, dim] (dim must be the
 * tower's width). A bad caption fails the call, naming it. */
int featured_encoders_embed_captions(featured_encoders *e, const char *name, const char *const *captions, int n,
                                     float *out, int dim, taca_error *err);
/* Decodes, preprocesses (the model's own preprocessing, as precompute does) and embeds n encoded
 * images into out [n, dim]. An image that does not decode is not fatal: ok[i] = 0, item_err[i] says
 * why and row i is zero; the others are embedded. Returns -1 only when the call itself fails. */
int featured_encoders_embed_images(featured_encoders *e, const char *name, const uint8_t *const *bufs,
                                   const size_t *lens, int n, float *out, int dim, uint8_t *ok, taca_error *item_err,
                                   taca_error *err);

#endif
