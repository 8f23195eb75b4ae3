/* bench_preprocess.c: images/s of CLIP preprocessing on one core (decode from memory + resize + center
 * crop + normalise), the C side of bench/bench_preprocess.py, which runs PIL + torch on the same file and
 * prints both side by side.
 *
 *   bench_preprocess [--image FILE] [--size N] [--seconds S] [--dump OUT.f32]
 *
 * Prints one human-readable line per stage and a final JSON line for the Python driver. --dump writes
 * the normalised float32 CHW crop so that the driver can check both pipelines give the same numbers. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* sched_setaffinity */
#endif
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "image/image.h"

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static unsigned char *read_file(const char *path, size_t *len) {
  FILE *f = fopen(path, "rb");
  if (!f) return NULL;
  fseek(f, 0, SEEK_END);
  long n = ftell(f);
  fseek(f, 0, SEEK_SET);
  unsigned char *buf = n > 0 ? malloc((size_t)n) : NULL;
  if (buf && fread(buf, 1, (size_t)n, f) != (size_t)n) {
    free(buf);
    buf = NULL;
  }
  fclose(f);
  *len = (size_t)n;
  return buf;
}

int main(int argc, char **argv) {
  const char *image = "tests/fixtures/images/photo_500x375.jpg", *dump = NULL;
  int size = 224;
  double seconds = 3.0;
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "--image") && i + 1 < argc) image = argv[++i];
    else if (!strcmp(argv[i], "--size") && i + 1 < argc) size = atoi(argv[++i]);
    else if (!strcmp(argv[i], "--seconds") && i + 1 < argc) seconds = atof(argv[++i]);
    else if (!strcmp(argv[i], "--dump") && i + 1 < argc) dump = argv[++i];
    else {
      fprintf(stderr, "usage: %s [--image FILE] [--size N] [--seconds S] [--dump OUT.f32]\n", argv[0]);
      return !strcmp(argv[i], "--help") ? 0 : 2;
    }
  }
  if (size < 1 || size > 4096 || seconds <= 0) {
    fprintf(stderr, "bench_preprocess: --size must be in [1, 4096] and --seconds positive\n");
    return 2;
  }
  /* One core, as the Python side (which pins itself before starting us). */
  cpu_set_t one;
  CPU_ZERO(&one);
  if (sched_getaffinity(0, sizeof one, &one) == 0) {
    int first = -1;
    for (int c = 0; c < CPU_SETSIZE && first < 0; c++)
      if (CPU_ISSET(c, &one)) first = c;
    CPU_ZERO(&one);
    CPU_SET(first, &one);
    sched_setaffinity(0, sizeof one, &one);
  }
  size_t len;
  unsigned char *data = read_file(image, &len);
  if (!data) {
    fprintf(stderr, "bench_preprocess: cannot read %s\n", image);
    return 1;
  }
  uint8_t *u8 = malloc((size_t)3 * size * size);
  float *f32 = malloc(sizeof(float) * 3 * size * size);
  taca_error err;
  rgb_image img;
  if (!u8 || !f32 || image_decode(data, len, &img, &err)) {
    fprintf(stderr, "bench_preprocess: %s: %s\n", image, u8 && f32 ? err.msg : "out of memory");
    return 1;
  }
  int w = img.width, h = img.height;
  rgb_image_free(&img);

  /* Each stage alone, then the whole pipeline; each for about `seconds` / 4 (the pipeline: / 2). */
  double t_dec = 0, t_rs = 0, t_norm = 0, t_all = 0;
  long n_dec = 0, n_rs = 0, n_norm = 0, n_all = 0;
  rgb_image keep;
  if (image_decode(data, len, &keep, &err)) return 1;
  double t0 = now();
  while ((t_dec = now() - t0) < seconds / 4) {
    if (image_decode(data, len, &img, &err)) return 1;
    rgb_image_free(&img);
    n_dec++;
  }
  t0 = now();
  while ((t_rs = now() - t0) < seconds / 4) {
    if (clip_resize_crop_u8(&keep, size, u8, &err)) return 1;
    n_rs++;
  }
  t0 = now();
  while ((t_norm = now() - t0) < seconds / 4) {
    clip_normalize_u8(u8, size, CLIP_MEAN, CLIP_STD, f32);
    n_norm++;
  }
  rgb_image_free(&keep);
  t0 = now();
  while ((t_all = now() - t0) < seconds / 2) {
    if (image_decode(data, len, &img, &err) || clip_resize_crop_u8(&img, size, u8, &err)) {
      fprintf(stderr, "bench_preprocess: %s\n", err.msg);
      return 1;
    }
    rgb_image_free(&img);
    clip_normalize_u8(u8, size, CLIP_MEAN, CLIP_STD, f32);
    n_all++;
  }
  double ms_dec = 1e3 * t_dec / n_dec, ms_rs = 1e3 * t_rs / n_rs, ms_norm = 1e3 * t_norm / n_norm;
  double ips = n_all / t_all;
  printf("C (libjpeg-turbo/libpng/libwebp + image/image_resize.c), %s %dx%d -> %d, one core\n", image, w, h, size);
  printf("  decode          %8.3f ms\n  resize+crop     %8.3f ms\n  normalize       %8.3f ms\n", ms_dec, ms_rs,
         ms_norm);
  printf("  whole pipeline  %8.1f images/s\n", ips);
  printf("{\"impl\": \"c\", \"images_per_s\": %.2f, \"decode_ms\": %.4f, \"resize_crop_ms\": %.4f, "
         "\"normalize_ms\": %.4f}\n",
         ips, ms_dec, ms_rs, ms_norm);
  if (dump) {
    FILE *f = fopen(dump, "wb");
    if (!f || fwrite(f32, sizeof(float), (size_t)3 * size * size, f) != (size_t)3 * size * size) {
      fprintf(stderr, "bench_preprocess: cannot write %s\n", dump);
      return 1;
    }
    fclose(f);
  }
  free(u8);
  free(f32);
  free(data);
  return 0;
}
