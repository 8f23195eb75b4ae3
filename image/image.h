/* image.h: image decoding (JPEG via libjpeg-turbo, PNG via libpng, WebP via libwebp) and CLIP's
 * preprocessing, bit-exact with PIL where stated:
 *   Resize(size, BICUBIC) on the shortest side (long side int(size * long / short)), antialiased
 *   exactly as PIL's ImagingResample does for 8-bit images (separable, fixed-point coefficients,
 *   horizontal pass then vertical, clamped to uint8 between passes);
 *   CenterCrop(size) with torchvision's offset int(round((H - size) / 2.0)) (round half to even);
 *   then ToTensor (/255) and Normalize(mean, std). */
#ifndef TACA_IMAGE_IMAGE_H
#define TACA_IMAGE_IMAGE_H

#include <stddef.h>
#include <stdint.h>

#include "base/error.h"

/* Decompression-bomb guard: larger images are refused before pixel memory is allocated. */
#define IMAGE_MAX_SIDE 16384
#define IMAGE_MAX_PIXELS (1LL << 27)

typedef struct rgb_image {
  int width, height;
  uint8_t *rgb; /* height * width * 3, row-major, interleaved RGB; owned */
} rgb_image;

/* Decodes JPEG, PNG or WebP (recognised by magic bytes) from memory into RGB8.
 * Grayscale is replicated, alpha is dropped (before any resize: see image_resize.c for how that differs
 * from CLIP's PIL pipeline), 16-bit PNG is reduced to 8 bits, palette expanded (see image_decode.c).
 * Corrupt or truncated data, and images over the bomb limits above, are errors. */
int image_decode(const void *buf, size_t len, rgb_image *out, taca_error *err);
int image_load_file(const char *path, rgb_image *out, taca_error *err);
void rgb_image_free(rgb_image *img);

/* CLIP resize + center crop to size x size, written as uint8 planar CHW (3 * size * size). */
int clip_resize_crop_u8(const rgb_image *in, int size, uint8_t *out_chw, taca_error *err);

/* The geometry clip_resize_crop_u8 uses for a width x height image: the resized size (*rw, *rh) and the
 * crop's top-left corner (*left, *top) in the resized image. */
int clip_resize_geometry(int width, int height, int size, int *rw, int *rh, int *left, int *top,
                         taca_error *err);

/* PIL's Image.resize((out_w, out_h), BICUBIC) of the whole image, bit-exact; out->rgb is allocated. */
int image_resize_bicubic(const rgb_image *in, int out_w, int out_h, rgb_image *out, taca_error *err);

/* Lets the resize use its SIMD kernel (the default, where the CPU has AVX2) or only plain C (on = 0), for
 * tests and benchmarks; both give the same bytes. Returns whether SIMD was in use before the call.
 * Not thread-safe: call it before starting threads. */
int image_simd_enable(int on);

/* The OpenAI CLIP normalisation constants. */
extern const float CLIP_MEAN[3];
extern const float CLIP_STD[3];

/* uint8 CHW -> float CHW: (x / 255 - mean[c]) / std[c]. */
void clip_normalize_u8(const uint8_t *chw, int size, const float mean[3], const float std[3],
                       float *out_chw);

#endif
