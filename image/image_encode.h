/* image_encode.h: encoding RGB8 images to PNG (libpng) and JPEG (libjpeg-turbo) in memory. Used by
 * the synthetic data generator and the store's JPEG pixel codec. */
#ifndef TACA_IMAGE_IMAGE_ENCODE_H
#define TACA_IMAGE_IMAGE_ENCODE_H

#include <stddef.h>
#include <stdint.h>

#include "base/error.h"
#include "image/image.h"

/* *out is malloc'ed (free it); *len its size. quality 1..100 for JPEG (4:4:4 sampling above 90). */
int image_encode_png(const rgb_image *img, uint8_t **out, size_t *len, taca_error *err);
int image_encode_jpeg(const rgb_image *img, int quality, uint8_t **out, size_t *len, taca_error *err);

#endif
