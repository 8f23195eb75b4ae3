/* featured_synth.h: a synthetic feature store for the taca-featured tests and load test, written with
 * the storage API, whose every value follows a closed formula so that tests (C and Python) can check
 * what a server returns without reading the store themselves.
 *
 * For sample index i (begin <= i < begin + n):
 *   key     "s%07llu"
 *   label   -1 when i % 13 == 5, else i % 10
 *   tokens  [49406, 320 + i % 1000, 1000 + i % 7, 49407, 0 x 73]
 *   pixels  codec raw, 3 x S x S bytes, byte j = (i * 31 + j * 7) mod 256 (when S > 0)
 *   models  "old"  F16, image_dim = text_dim = D (default 32), logit_scale ln(100);
 *                  text embeddings missing where i % 17 == 3
 *           "wide" F32, image_dim 64, no text
 *           "tiny" (optional) F32 image_dim = text_dim = 16, weights_xxh of the tiny CLIP fixture
 *   embedding element j of (model m, modality t) = ((i*7 + j*3 + m*11 + t*5) mod 97 - 48) / 64,
 *   exactly representable in F16; m = 0 old, 1 wide, 2 tiny; t = 0 image, 1 text. */
#ifndef TACA_TESTS_FEATURED_SYNTH_H
#define TACA_TESTS_FEATURED_SYNTH_H

#include <stddef.h>
#include <stdint.h>

#include "base/error.h"

typedef struct synth_opts {
  uint64_t begin, n;
  int pixel_size;          /* 0: no pixels */
  int dim;                 /* "old" width; 0 = 32 */
  int shard, nshards;      /* declared range; nshards 0 = 1 */
  const char *tiny_model;  /* HF CLIP directory to register as "tiny", or NULL */
  int quiet;
} synth_opts;

int synth_store_create(const char *dir, const synth_opts *o, taca_error *err);

void synth_key(uint64_t i, char *buf, size_t cap);
int32_t synth_label(uint64_t i);
void synth_tokens(uint64_t i, int32_t out[77]);
uint8_t synth_pixel(uint64_t i, size_t j);
float synth_value(uint64_t i, int j, int model, int modality);
int synth_has_text(uint64_t i); /* "old" text embedding stored */

#endif
