/* pixel_codec.h: the feature store's two encodings of a preprocessed crop (storage/README.md):
 * "raw" (uint8 planar CHW, 3 x S x S bytes) and "jpeg" (a JPEG of the crop, 4:4:4 above quality 90;
 * several times smaller, lossy). Writers (precompute) encode, readers (the trainer's feed, eval,
 * precompute's embed mode) decode back to CHW uint8 through these two functions. */
#ifndef TACA_IMAGE_PIXEL_CODEC_H
#define TACA_IMAGE_PIXEL_CODEC_H

#include <stddef.h>
#include <stdint.h>

#include "base/error.h"

/* A JPEG of the crop chw [3, S, S]; *out is malloc'ed (free it). */
int pixel_encode_jpeg(const uint8_t *chw, int S, int quality, uint8_t **out, size_t *len, taca_error *err);

/* Stored bytes of codec "raw" or "jpeg" -> chw [3, S, S]. Fails with a reason on a wrong length,
 * corrupt JPEG data, a crop of another size, or an unknown codec. */
int pixel_decode(const char *codec, const void *data, size_t len, int S, uint8_t *chw, taca_error *err);

#endif
