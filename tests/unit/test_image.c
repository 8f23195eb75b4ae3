/* test_image.c: image decoding and CLIP preprocessing (image/image.h) against PIL 9.4 + torch references
 * made by tests/fixtures/gen_images.py (manifest tests/fixtures/images/manifest.json).
 *   - decoding: every fixture source decodes to PIL's convert('RGB') pixels exactly (CRC-32 of all bytes),
 *     in the mode PIL opens it in (RGB, L, RGBA, LA, P, 1, CMYK, I);
 *   - CLIP resize + center crop at sizes 224, 32 and 7: exact uint8 equality (stored bytes or CRC-32),
 *     geometry equal to torchvision's, for every source in CLIP's own transform order (resize and crop in
 *     the source's mode, then convert('RGB')): premultiplied RGBA/LA, NEAREST P/1, CMYK resized before its
 *     conversion, mode I in 32 bits (the "modes_*" sources exercise each);
 *   - plain bicubic resizes to many sizes (up, down, one axis only, 1-pixel): exact;
 *   - crops and resizes both with the SIMD horizontal kernel (where the CPU has AVX2) and in plain C;
 *   - normalisation: bit-identical to torch float32 (tolerance asserted: max |error| <= 1e-6; reached: 0),
 *     exhaustively for all 256 values of every channel;
 *   - corrupt, truncated, unrecognised and oversized inputs: -1 with a message naming the problem;
 *   - robustness: fixtures of every mode cut at many lengths and with bytes flipped decode (and then
 *     resize in their mode) or fail cleanly (meant to be run under ASan/UBSan too). */
#include <check.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <zlib.h>

#include "image/image.h"

#define IMG_DIR TACA_FIXTURES_DIR "/images"

static json_t *manifest;

static void load_manifest(void) {
  json_error_t je;
  manifest = json_load_file(IMG_DIR "/manifest.json", 0, &je);
  if (!manifest) {
    fprintf(stderr, "test_image: cannot load %s/manifest.json: %s (line %d)\n", IMG_DIR, je.text, je.line);
    exit(1);
  }
}

static uint8_t *read_all(const char *rel, size_t *len) {
  char path[1024];
  snprintf(path, sizeof path, "%s/%s", IMG_DIR, rel);
  FILE *f = fopen(path, "rb");
  ck_assert_msg(f != NULL, "cannot open fixture %s", path);
  fseek(f, 0, SEEK_END);
  long n = ftell(f);
  fseek(f, 0, SEEK_SET);
  uint8_t *buf = malloc(n > 0 ? (size_t)n : 1);
  ck_assert_ptr_nonnull(buf);
  ck_assert_uint_eq(fread(buf, 1, (size_t)n, f), (size_t)n);
  fclose(f);
  *len = (size_t)n;
  return buf;
}

static uint32_t crc_of(const uint8_t *p, size_t n) { return (uint32_t)crc32(crc32(0L, Z_NULL, 0), p, (uInt)n); }

static void decode_source(const char *name, rgb_image *img) {
  char path[1024];
  taca_error err = {{0}};
  snprintf(path, sizeof path, "%s/%s", IMG_DIR, name);
  int rc = image_load_file(path, img, &err);
  ck_assert_msg(rc == 0, "decoding %s failed: %s", name, err.msg);
}

/* Exact comparison of got against an expected file (reports how many bytes differ and by how much) or,
 * when the manifest stores no file, against a CRC-32. */
static void expect_bytes(json_t *e, const uint8_t *got, size_t n, const char *what) {
  json_t *file = json_object_get(e, "file");
  if (file) {
    size_t len;
    uint8_t *want = read_all(json_string_value(file), &len);
    ck_assert_msg(len == n, "%s: expected file holds %zu bytes, output has %zu", what, len, n);
    size_t ndiff = 0;
    int maxd = 0;
    for (size_t i = 0; i < n; i++) {
      int d = abs((int)got[i] - (int)want[i]);
      if (d) ndiff++;
      if (d > maxd) maxd = d;
    }
    free(want);
    ck_assert_msg(ndiff == 0, "%s: %zu of %zu bytes differ from PIL, max |diff| %d", what, ndiff, n, maxd);
  }
  uint32_t want_crc = (uint32_t)json_integer_value(json_object_get(e, "crc32"));
  ck_assert_msg(crc_of(got, n) == want_crc, "%s: CRC-32 %08x differs from PIL's %08x", what, crc_of(got, n),
                want_crc);
}

START_TEST(test_decode_sources) {
  json_t *srcs = json_object_get(manifest, "sources");
  ck_assert_int_ge((int)json_array_size(srcs), 20);
  size_t i;
  json_t *s;
  json_array_foreach(srcs, i, s) {
    const char *name = json_string_value(json_object_get(s, "name"));
    rgb_image img;
    decode_source(name, &img);
    ck_assert_int_eq(img.width, (int)json_integer_value(json_object_get(s, "width")));
    ck_assert_int_eq(img.height, (int)json_integer_value(json_object_get(s, "height")));
    uint32_t got = crc_of(img.rgb, (size_t)img.width * img.height * 3);
    uint32_t want = (uint32_t)json_integer_value(json_object_get(s, "decoded_crc32"));
    const char *pil_mode = json_string_value(json_object_get(s, "pil_mode"));
    ck_assert_msg(got == want, "%s (PIL mode %s): decoded pixels differ from PIL's convert('RGB') (CRC %08x vs %08x)",
                  name, pil_mode, got, want);
    ck_assert_msg(!strcmp(image_mode_name(img.mode), pil_mode), "%s: decoded as mode %s, PIL opens it as %s", name,
                  image_mode_name(img.mode), pil_mode);
    rgb_image_free(&img);
  }
}
END_TEST

START_TEST(test_decode_from_memory) {
  size_t len;
  uint8_t *buf = read_all("photo_500x375.jpg", &len);
  rgb_image a, b;
  taca_error err = {{0}};
  ck_assert_int_eq(image_decode(buf, len, &a, &err), 0);
  decode_source("photo_500x375.jpg", &b);
  ck_assert_int_eq(a.width, 500);
  ck_assert_int_eq(a.height, 375);
  ck_assert(memcmp(a.rgb, b.rgb, 500 * 375 * 3) == 0);
  rgb_image_free(&a);
  rgb_image_free(&b);
  ck_assert_ptr_null(a.rgb);
  free(buf);
}
END_TEST

/* The resize has a SIMD kernel (AVX2, chosen at run time) and a plain-C one: both are checked. */
static void check_clip_crops(int simd) {
  image_simd_enable(simd);
  json_t *crops = json_object_get(manifest, "crops");
  ck_assert_int_ge((int)json_array_size(crops), 60);
  size_t i;
  json_t *e;
  int clip_order = 0;
  json_array_foreach(crops, i, e) {
    const char *name = json_string_value(json_object_get(e, "source"));
    int size = (int)json_integer_value(json_object_get(e, "size"));
    rgb_image img;
    decode_source(name, &img);
    int rw, rh, left, top;
    taca_error err = {{0}};
    ck_assert_int_eq(clip_resize_geometry(img.width, img.height, size, &rw, &rh, &left, &top, &err), 0);
    json_t *rs = json_object_get(e, "resized");
    ck_assert_int_eq(rw, (int)json_integer_value(json_array_get(rs, 0)));
    ck_assert_int_eq(rh, (int)json_integer_value(json_array_get(rs, 1)));
    ck_assert_int_eq(left, (int)json_integer_value(json_object_get(e, "left")));
    ck_assert_int_eq(top, (int)json_integer_value(json_object_get(e, "top")));
    uint8_t *out = malloc((size_t)3 * size * size);
    ck_assert_int_eq(clip_resize_crop_u8(&img, size, out, &err), 0);
    char what[256];
    snprintf(what, sizeof what, "%s crop %d (resized %dx%d, left %d, top %d, %s)", name, size, rw, rh, left, top,
             simd ? "SIMD" : "plain C");
    expect_bytes(e, out, (size_t)3 * size * size, what);
    free(out);
    rgb_image_free(&img);
  }
  /* Every reference is CLIP's own transform order, whatever the source's mode. */
  json_t *s;
  json_array_foreach(json_object_get(manifest, "sources"), i, s) {
    clip_order += !strcmp(json_string_value(json_object_get(s, "reference_order")), "clip");
  }
  ck_assert_int_eq(clip_order, (int)json_array_size(json_object_get(manifest, "sources")));
  image_simd_enable(1);
}

START_TEST(test_clip_crops) { check_clip_crops(1); }
END_TEST

START_TEST(test_clip_crops_plain) { check_clip_crops(0); }
END_TEST

static void check_resize_sweep(int simd) {
  image_simd_enable(simd);
  json_t *sw = json_object_get(manifest, "resize_sweep");
  ck_assert_int_ge((int)json_array_size(sw), 40);
  size_t i;
  json_t *e;
  json_array_foreach(sw, i, e) {
    const char *name = json_string_value(json_object_get(e, "source"));
    int w = (int)json_integer_value(json_object_get(e, "width"));
    int h = (int)json_integer_value(json_object_get(e, "height"));
    rgb_image img, out;
    taca_error err = {{0}};
    decode_source(name, &img);
    ck_assert_msg(image_resize_bicubic(&img, w, h, &out, &err) == 0, "%s -> %dx%d: %s", name, w, h, err.msg);
    ck_assert_int_eq(out.width, w);
    ck_assert_int_eq(out.height, h);
    char what[256];
    snprintf(what, sizeof what, "%s (%dx%d) resized to %dx%d (%s)", name, img.width, img.height, w, h,
             simd ? "SIMD" : "plain C");
    expect_bytes(e, out.rgb, (size_t)w * h * 3, what);
    rgb_image_free(&out);
    rgb_image_free(&img);
  }
  image_simd_enable(1);
}

START_TEST(test_resize_sweep) { check_resize_sweep(1); }
END_TEST

START_TEST(test_resize_sweep_plain) { check_resize_sweep(0); }
END_TEST

START_TEST(test_geometry) {
  /* torchvision's _compute_resized_output_size and center_crop offsets, computed in Python. */
  static const int cases[][7] = {
      {500, 375, 224, 298, 224, 37, 0},   {375, 500, 224, 224, 298, 0, 37},
      {299, 224, 224, 299, 224, 38, 0},   {224, 297, 224, 224, 297, 0, 36},
      {301, 299, 224, 225, 224, 0, 0},    {1, 40, 224, 224, 8960, 0, 4368},
      {640, 480, 32, 42, 32, 5, 0},       {1000, 999, 224, 224, 224, 0, 0},
      {333, 100, 224, 745, 224, 260, 0},  {7, 3, 5, 11, 5, 3, 0},
      {16384, 1, 224, 3670016, 224, 1834896, 0}, {224, 224, 224, 224, 224, 0, 0},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    const int *c = cases[i];
    int rw, rh, l, t;
    taca_error err = {{0}};
    ck_assert_int_eq(clip_resize_geometry(c[0], c[1], c[2], &rw, &rh, &l, &t, &err), 0);
    ck_assert_msg(rw == c[3] && rh == c[4] && l == c[5] && t == c[6],
                  "%dx%d size %d: got %dx%d +%d+%d, want %dx%d +%d+%d", c[0], c[1], c[2], rw, rh, l, t, c[3], c[4],
                  c[5], c[6]);
  }
}
END_TEST

START_TEST(test_thin_image_crop) {
  /* 16384 x 1 resizes to 3670016 x 224; only the crop's coefficients are computed. Every column equal
   * means every output pixel equals the source value (bicubic weights sum to one). */
  rgb_image img = {.width = 16384, .height = 1, .rgb = malloc(16384 * 3)};
  for (int i = 0; i < 16384 * 3; i++) img.rgb[i] = (uint8_t)(i % 3 == 0 ? 200 : i % 3 == 1 ? 17 : 99);
  uint8_t *out = malloc(3 * 224 * 224);
  taca_error err = {{0}};
  ck_assert_int_eq(clip_resize_crop_u8(&img, 224, out, &err), 0);
  for (int i = 0; i < 224 * 224; i++) {
    ck_assert_int_eq(out[i], 200);
    ck_assert_int_eq(out[224 * 224 + i], 17);
    ck_assert_int_eq(out[2 * 224 * 224 + i], 99);
  }
  free(out);
  rgb_image_free(&img);
}
END_TEST

static float max_abs_diff(const float *a, const float *b, size_t n) {
  float m = 0;
  for (size_t i = 0; i < n; i++) {
    float d = fabsf(a[i] - b[i]);
    if (!(d <= m)) m = d; /* NaN counts as the worst */
  }
  return m;
}

START_TEST(test_normalize) {
  /* Tolerance: 1e-6 is asserted; the C code performs torch's float32 operations in torch's order and
   * reaches 0 (bit-identical), which is checked too. */
  json_t *nm = json_object_get(manifest, "normalized");
  int size = (int)json_integer_value(json_object_get(nm, "size"));
  ck_assert_int_eq(size, 32);
  json_t *mean = json_object_get(nm, "mean"), *std = json_object_get(nm, "std");
  for (int c = 0; c < 3; c++) {
    ck_assert(CLIP_MEAN[c] == (float)json_real_value(json_array_get(mean, c)));
    ck_assert(CLIP_STD[c] == (float)json_real_value(json_array_get(std, c)));
  }
  rgb_image img;
  decode_source(json_string_value(json_object_get(nm, "source")), &img);
  uint8_t u8[3 * 32 * 32];
  float got[3 * 32 * 32];
  taca_error err = {{0}};
  ck_assert_int_eq(clip_resize_crop_u8(&img, 32, u8, &err), 0);
  clip_normalize_u8(u8, 32, CLIP_MEAN, CLIP_STD, got);
  size_t len;
  float *want = (float *)read_all(json_string_value(json_object_get(nm, "file")), &len);
  ck_assert_uint_eq(len, sizeof got);
  float md = max_abs_diff(got, want, 3 * 32 * 32);
  ck_assert_msg(md <= 1e-6f, "normalised crop: max |C - torch| = %g > 1e-6", md);
  ck_assert_msg(memcmp(got, want, sizeof got) == 0, "normalised crop not bit-identical to torch (max diff %g)", md);
  free(want);
  rgb_image_free(&img);

  /* Every uint8 value in every channel: a 16x16 "image" per plane holding 0..255. */
  uint8_t all[3 * 256];
  float tab[3 * 256];
  for (int c = 0; c < 3; c++)
    for (int v = 0; v < 256; v++) all[c * 256 + v] = (uint8_t)v;
  clip_normalize_u8(all, 16, CLIP_MEAN, CLIP_STD, tab);
  float *want_tab = (float *)read_all(json_string_value(json_object_get(json_object_get(manifest, "normalize_table"),
                                                                        "file")),
                                      &len);
  ck_assert_uint_eq(len, sizeof tab);
  md = max_abs_diff(tab, want_tab, 3 * 256);
  ck_assert_msg(md <= 1e-6f, "normalisation table: max |C - torch| = %g > 1e-6", md);
  ck_assert_msg(memcmp(tab, want_tab, sizeof tab) == 0, "normalisation table not bit-identical (max diff %g)", md);
  free(want_tab);
}
END_TEST

START_TEST(test_corrupt) {
  json_t *cs = json_object_get(manifest, "corrupt");
  ck_assert_int_ge((int)json_array_size(cs), 10);
  size_t i;
  json_t *e;
  json_array_foreach(cs, i, e) {
    const char *name = json_string_value(json_object_get(e, "name"));
    const char *expect = json_string_value(json_object_get(e, "expect"));
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", IMG_DIR, name);
    rgb_image img = {.width = 1, .height = 1, .rgb = (uint8_t *)path}; /* must be reset by the call */
    taca_error err = {{0}};
    int rc = image_load_file(path, &img, &err);
    ck_assert_msg(rc == -1, "%s decoded although it is corrupt", name);
    ck_assert_ptr_null(img.rgb);
    ck_assert_msg(strstr(err.msg, path) != NULL, "%s: message does not name the file: %s", name, err.msg);
    ck_assert_msg(strcasestr(err.msg, expect) != NULL, "%s: message lacks '%s': %s", name, expect, err.msg);
    fprintf(stderr, "  %-28s -> %s\n", name, err.msg + strlen(path) + 2);
  }
}
END_TEST

START_TEST(test_api_errors) {
  taca_error err = {{0}};
  rgb_image img;
  ck_assert_int_eq(image_load_file("/nonexistent/dir/x.jpg", &img, &err), -1);
  ck_assert_ptr_nonnull(strstr(err.msg, "/nonexistent/dir/x.jpg"));
  ck_assert_int_eq(image_decode(NULL, 0, &img, &err), -1);
  ck_assert_ptr_nonnull(strstr(err.msg, "empty"));
  ck_assert_int_eq(image_decode("GIF89a\1\0\1\0", 10, &img, &err), -1);
  ck_assert_ptr_nonnull(strstr(err.msg, "GIF"));
  uint8_t px[3] = {1, 2, 3}, out[3 * 4];
  rgb_image one = {.width = 1, .height = 1, .rgb = px};
  ck_assert_int_eq(clip_resize_crop_u8(&one, 0, out, &err), -1);
  ck_assert_ptr_nonnull(strstr(err.msg, "crop size 0"));
  rgb_image none = {.width = 0};
  ck_assert_int_eq(clip_resize_crop_u8(&none, 2, out, &err), -1);
  ck_assert_int_eq(image_resize_bicubic(&one, 0, 5, &img, &err), -1);
  ck_assert_ptr_null(img.rgb);
  /* A 1x1 image upscaled: constant output. */
  ck_assert_int_eq(clip_resize_crop_u8(&one, 2, out, &err), 0);
  ck_assert(out[0] == 1 && out[3] == 1 && out[4] == 2 && out[7] == 2 && out[8] == 3 && out[11] == 3);
}
END_TEST

/* Cuts and flipped bytes: never a crash, a leak or an unexplained failure. */
START_TEST(test_robustness) {
  static const char *names[] = {"photo_500x375.jpg", "odd_301x299_progressive.jpg", "cmyk_120x90.jpg",
                                "small_37x53.png",   "interlaced_77x41.png",        "palette4_90x70.png",
                                "rgba16_20x30.png",  "lossy_160x120.webp",          "lossless_alpha_96x80.webp",
                                "modes_la_160x40.png", "modes_gray16_low_70x50.png", "modes_graya16_40x30.png",
                                "modes_palette1_61x45.png", "modes_rgba_up_31x23.png"};
  uint32_t seed = 12345;
  for (size_t f = 0; f < sizeof names / sizeof names[0]; f++) {
    size_t len;
    uint8_t *orig = read_all(names[f], &len);
    uint8_t *buf = malloc(len);
    int fails = 0;
    for (int t = 0; t < 96; t++) {
      size_t n = len;
      memcpy(buf, orig, len);
      if (t < 48) {
        n = len * (size_t)t / 48; /* a prefix */
      } else {
        for (int k = 0; k < 1 + t % 4; k++) { /* a few random bytes flipped */
          seed = seed * 1664525u + 1013904223u;
          buf[(seed >> 8) % len] ^= (uint8_t)(1 + (seed >> 24) % 255);
        }
      }
      rgb_image img;
      taca_error err = {{0}};
      int rc = image_decode(buf, n, &img, &err);
      if (rc == 0) { /* what decodes also resizes in its mode */
        ck_assert_ptr_nonnull(img.rgb);
        uint8_t crop[3 * 9 * 9];
        ck_assert_msg(clip_resize_crop_u8(&img, 9, crop, &err) == 0, "%s: %s", names[f], err.msg);
        rgb_image_free(&img);
      } else {
        ck_assert_int_eq(rc, -1);
        ck_assert_ptr_null(img.rgb);
        ck_assert_msg(err.msg[0] != 0, "%s: failure without a message", names[f]);
        fails++;
      }
    }
    ck_assert_msg(fails >= 48, "%s: only %d of 48 truncations were refused", names[f], fails);
    free(buf);
    free(orig);
  }
}
END_TEST

int main(void) {
  load_manifest();
  Suite *s = suite_create("image");
  TCase *tc = tcase_create("image");
  tcase_set_timeout(tc, 300);
  tcase_add_test(tc, test_decode_sources);
  tcase_add_test(tc, test_decode_from_memory);
  tcase_add_test(tc, test_clip_crops);
  tcase_add_test(tc, test_clip_crops_plain);
  tcase_add_test(tc, test_resize_sweep);
  tcase_add_test(tc, test_resize_sweep_plain);
  tcase_add_test(tc, test_geometry);
  tcase_add_test(tc, test_thin_image_crop);
  tcase_add_test(tc, test_normalize);
  tcase_add_test(tc, test_corrupt);
  tcase_add_test(tc, test_api_errors);
  tcase_add_test(tc, test_robustness);
  suite_add_tcase(s, tc);
  SRunner *sr = srunner_create(s);
  srunner_run_all(sr, CK_NORMAL);
  int failed = srunner_ntests_failed(sr);
  srunner_free(sr);
  json_decref(manifest);
  return failed ? 1 : 0;
}
