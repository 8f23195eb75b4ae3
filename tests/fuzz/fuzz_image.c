/* fuzz_image.c: fuzz target for image decoding (image/image_decode.c: JPEG via libjpeg-turbo, PNG via
 * libpng, WebP via libwebp, recognised by magic bytes) and, for images that decode, CLIP's resize and
 * center crop (image/image_resize.c) in the image's mode. Checks that a decoded image is within the bomb
 * limits of image.h and carries the planes its mode needs. */
#include <stdint.h>
#include <stdlib.h>

#include "image/image.h"

static volatile unsigned g_sink;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  rgb_image img = {0};
  taca_error err = {{0}};
  if (image_decode(data, size, &img, &err)) return 0;
  if (img.width < 1 || img.height < 1 || img.width > IMAGE_MAX_SIDE || img.height > IMAGE_MAX_SIDE ||
      (long long)img.width * img.height > IMAGE_MAX_PIXELS || !img.rgb)
    abort();
  /* the planes the mode's resize needs are there (image.h) */
  if (((img.mode == IMAGE_MODE_RGBA || img.mode == IMAGE_MODE_LA) && !img.alpha) ||
      (img.mode == IMAGE_MODE_CMYK && !img.cmyk) || (img.mode == IMAGE_MODE_I && !img.gray16))
    abort();
  size_t n = (size_t)img.width * (size_t)img.height * 3;
  g_sink += img.rgb[0] + img.rgb[n - 1];
  /* resize + crop: small sizes keep the target fast; big images only to the smallest size */
  int size_out = (long long)img.width * img.height <= (1 << 20) ? 7 + (int)(size % 40) : 4;
  uint8_t *chw = malloc((size_t)3 * size_out * size_out);
  if (chw && clip_resize_crop_u8(&img, size_out, chw, &err) == 0) g_sink += chw[0];
  free(chw);
  rgb_image_free(&img);
  return 0;
}
