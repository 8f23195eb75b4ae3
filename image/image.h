/* image.h: image decoding (JPEG via libjpeg-turbo, PNG via libpng, WebP via libwebp) and CLIP's
 * preprocessing, bit-exact with PIL where stated:
 *   Resize(size, BICUBIC) on the shortest side (long side int(size * long / short)), antialiased
 *   exactly as PIL's ImagingResample does for 8-bit images (separable, fixed-point coefficients,
 *   horizontal pass then vertical, clamped to uint8 between passes);
 *   CenterCrop(size) with torchvision's offset int(round((H - size) / 2.0)) (round half to even);
 *   then convert('RGB'), ToTensor (/255) and Normalize(mean, std).
 * The order is OpenAI CLIP's and open_clip's: the image is resized and cropped in the mode PIL opened it
 * in (image_mode below) and converted to RGB last, so that every mode gives PIL's bytes: RGBA and LA
 * are resized with premultiplied alpha, P and 1 with nearest neighbour (PIL's rule for those modes),
 * CMYK before its conversion, 16-bit gray (PIL's mode I) in 32-bit integers, clipped to 0..255 last. */
#ifndef TACA_IMAGE_IMAGE_H
#define TACA_IMAGE_IMAGE_H

#include <stddef.h>
#include <stdint.h>

#include "base/error.h"

/* Decompression-bomb guard: larger images are refused before pixel memory is allocated. */
#define IMAGE_MAX_SIDE 16384
#define IMAGE_MAX_PIXELS (1LL << 27)

/* The mode PIL 9.4 opens a source in; it decides how CLIP's Resize treats the pixels. */
typedef enum image_mode {
  IMAGE_MODE_RGB = 0, /* also 16-bit RGB PNG (PIL keeps the high byte); images made in memory */
  IMAGE_MODE_L,       /* 8-bit gray (and 2/4-bit gray PNG, scaled): resized like RGB */
  IMAGE_MODE_RGBA,    /* also 16-bit gray+alpha PNG (PIL opens it as RGBA): premultiplied resize */
  IMAGE_MODE_LA,      /* 8-bit gray+alpha: premultiplied resize */
  IMAGE_MODE_P,       /* palette: nearest-neighbour resize (indices, then the palette: the same bytes) */
  IMAGE_MODE_1,       /* 1-bit gray: nearest-neighbour resize */
  IMAGE_MODE_CMYK,    /* 4-component JPEG: resized as CMYK, converted to RGB after the crop */
  IMAGE_MODE_I        /* 16-bit gray PNG: resized in int32, clipped to 0..255 by convert('RGB') */
} image_mode;

/* PIL's name of a mode ("RGB", "L", "RGBA", "LA", "P", "1", "CMYK", "I"). */
const char *image_mode_name(int mode);

typedef struct rgb_image {
  int width, height;
  uint8_t *rgb;   /* height * width * 3, row-major, interleaved RGB: PIL's convert('RGB'); owned */
  int mode;       /* image_mode as decoded; 0 (RGB) for images made in memory */
  uint8_t *alpha; /* RGBA/LA: height * width alpha, not premultiplied; else NULL; owned */
  uint8_t *cmyk;  /* CMYK: height * width * 4, the values PIL holds (Adobe-inverted); else NULL; owned */
  uint16_t *gray16; /* I: height * width 16-bit gray; else NULL; owned */
} rgb_image;

/* Decodes JPEG, PNG or WebP (recognised by magic bytes) from memory: rgb is PIL's
 * Image.open(...).convert('RGB'), and the source's mode and the planes its resize needs are kept
 * (see image_decode.c). Corrupt or truncated data, and images over the bomb limits above, are errors. */
int image_decode(const void *buf, size_t len, rgb_image *out, taca_error *err);
int image_load_file(const char *path, rgb_image *out, taca_error *err);
void rgb_image_free(rgb_image *img);

/* CLIP resize + center crop to size x size in the image's mode, then convert('RGB'), written as uint8
 * planar CHW (3 * size * size): OpenAI CLIP's / open_clip's order, bit-exact with PIL for every mode. */
int clip_resize_crop_u8(const rgb_image *in, int size, uint8_t *out_chw, taca_error *err);

/* The geometry clip_resize_crop_u8 uses for a width x height image: the resized size (*rw, *rh) and the
 * crop's top-left corner (*left, *top) in the resized image. */
int clip_resize_geometry(int width, int height, int size, int *rw, int *rh, int *left, int *top,
                         taca_error *err);

/* PIL's Image.resize((out_w, out_h), BICUBIC) of the whole RGB image (in->rgb, whatever in->mode),
 * bit-exact; out->rgb is allocated. */
int image_resize_bicubic(const rgb_image *in, int out_w, int out_h, rgb_image *out, taca_error *err);

/* Lets the resize use its SIMD kernel (the default, where the CPU has AVX2) or only plain C (on = 0), for
 * tests and benchmarks; both give the same bytes. Returns whether SIMD was in use before the call.
 * Not thread-safe: call it before starting threads. */
int image_simd_enable(int on);

/* PIL's cmyk2rgb of n pixels (the CMYK values PIL holds) into RGB; used by decode and resize. */
void image_cmyk_to_rgb(const uint8_t *cmyk, uint8_t *rgb, size_t n);

/* The OpenAI CLIP normalisation constants. */
extern const float CLIP_MEAN[3];
extern const float CLIP_STD[3];

/* uint8 CHW -> float CHW: (x / 255 - mean[c]) / std[c]. */
void clip_normalize_u8(const uint8_t *chw, int size, const float mean[3], const float std[3],
                       float *out_chw);

#endif
