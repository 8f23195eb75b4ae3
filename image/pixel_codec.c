/* pixel_codec.c: raw and JPEG crops of the feature store (see pixel_codec.h). */
#include "image/pixel_codec.h"

#include <stdlib.h>
#include <string.h>

#include "image/image.h"
#include "image/image_encode.h"

int pixel_encode_jpeg(const uint8_t *chw, int S, int quality, uint8_t **out, size_t *len, taca_error *err) {
  const size_t plane = (size_t)S * S;
  rgb_image img = {.width = S, .height = S, .rgb = malloc(3 * plane)};
  if (!img.rgb) return taca_fail(err, "out of memory");
  for (size_t p = 0; p < plane; p++)
    for (int c = 0; c < 3; c++) img.rgb[p * 3 + c] = chw[c * plane + p];
  int rc = image_encode_jpeg(&img, quality, out, len, err);
  free(img.rgb);
  return rc;
}

int pixel_decode(const char *codec, const void *data, size_t len, int S, uint8_t *chw, taca_error *err) {
  const size_t plane = (size_t)S * S;
  if (!strcmp(codec, "raw")) {
    if (len != 3 * plane) return taca_fail(err, "%zu pixel bytes, expected %zu (raw 3 x %d x %d)", len, 3 * plane, S, S);
    memcpy(chw, data, len);
    return 0;
  }
  if (strcmp(codec, "jpeg")) return taca_fail(err, "unknown pixel codec '%.8s'", codec);
  rgb_image img = {0};
  if (image_decode(data, len, &img, err)) return taca_error_prefix(err, "stored JPEG crop");
  int rc = 0;
  if (img.width != S || img.height != S) {
    rc = taca_fail(err, "stored crop is %dx%d, expected %dx%d", img.width, img.height, S, S);
  } else {
    for (int c = 0; c < 3; c++)
      for (size_t p = 0; p < plane; p++) chw[c * plane + p] = img.rgb[p * 3 + c];
  }
  rgb_image_free(&img);
  return rc;
}
