/* image_resize.c: CLIP's image preprocessing on decoded RGB8 images, bit-exact with PIL + torchvision.
 *
 * Resize replicates Pillow 9.4's libImaging/Resample.c for 8-bit images with the BICUBIC filter:
 *   - filter: Keys cubic with a = -0.5, support 2, widened by the downscale factor (antialiasing);
 *   - per output index: center = (i + 0.5) * scale, window [(int)(center - support + 0.5),
 *     (int)(center + support + 0.5)) clamped to the image, weights filter((x - center + 0.5) / filterscale)
 *     divided by their sum (all in double, the same operations in the same order as PIL);
 *   - fixed point: weights rounded away from zero to PRECISION_BITS = 22 fractional bits, accumulators
 *     start at 1 << 21 and are shifted right by 22 then clipped to 0..255;
 *   - horizontal pass first (only when the width changes), into 8-bit rows, then vertical (only when the
 *     height changes).
 * Each output pixel depends only on its own coefficients, so the CLIP path computes just the cropped
 * window (and just the source rows that window needs) instead of the whole resized image: same bytes.
 * Coefficient tables are built once per call, never per pixel. The horizontal pass, the costly one, has
 * an AVX2 kernel chosen at run time (image_simd_enable turns it off); all sums are integers, so it gives
 * the same bytes as the plain loop, and the tests check both.
 *
 * Floating-point contraction (FMA) would change the double-precision coefficients; this file relies on
 * the project's ISO C mode (-std=c17), in which GCC does not contract (-ffp-contract=off).
 *
 * Geometry follows torchvision 0.14: Resize(size) sets the short side to size and the long side to
 * int(size * long / short); CenterCrop(size) starts at int(round((H - size) / 2.0)), round half to even.
 * Normalisation follows ToTensor + Normalize in float32: (x / 255.0f - mean[c]) / std[c], each operation
 * rounded to float as torch does, so the result is bit-identical.
 *
 * Modes: CLIP (OpenAI's _transform, open_clip's image_transform) resizes the image in whatever mode PIL
 * opened it in and converts to RGB only after the crop; clip_resize_crop_u8 does the same, as Pillow 9.4's
 * Image.resize does per mode (the decoder keeps what that needs, image/image_decode.c):
 *   RGB, L      the 8-bit resample above (L is RGB with equal channels: the same bytes per channel);
 *   RGBA, LA    RGBA -> RGBa (c = MULDIV255(c, a)), the 8-bit resample of 4 channels, RGBa -> RGBA
 *               (c = CLIP8(255 * c / a) in integers, unchanged where a is 0 or 255), then alpha dropped;
 *               LA is RGBA with equal colour channels (PIL's La resample computes bands 0 and 3 only,
 *               with the same arithmetic);
 *   P, 1        NEAREST whatever filter is asked for (PIL's rule): ImagingScaleAffine's sampling,
 *               source x = (int)(x0 + a * 0.5 + x * a) accumulated in double as PIL adds it, a = in / out;
 *               on palette colours, which gives the bytes of the indices looked up after the resize;
 *   CMYK        the 8-bit resample of the 4 CMYK channels, then PIL's cmyk2rgb;
 *   I           (16-bit gray PNG) PIL's 32-bit resample: double weights (not fixed point), sums in double
 *               rounded with ROUND_UP into int32 after each pass, then convert('RGB') clips to 0..255.
 * An image whose size does not change is not resampled at all (PIL copies it: no premultiply round trip).
 * The SIMD kernel serves the RGB/L path; the other modes use the plain loops. */
#include "image/image.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* The horizontal pass has an AVX2 kernel, compiled whatever -march says and chosen at run time. */
#if defined(__x86_64__) && defined(__GNUC__)
#define HAVE_AVX2_KERNEL 1
#include <immintrin.h>
#endif

#define PRECISION_BITS (32 - 8 - 2)
#define CLIP_MAX_SIZE 8192

const float CLIP_MEAN[3] = {0.48145466f, 0.4578275f, 0.40821073f};
const float CLIP_STD[3] = {0.26862954f, 0.26130258f, 0.27577711f};

/* PIL's bicubic_filter, a = -0.5, written with the same operations. */
static double bicubic_filter(double x) {
  const double a = -0.5;
  if (x < 0.0) x = -x;
  if (x < 1.0) return ((a + 2.0) * x - (a + 3.0)) * x * x + 1;
  if (x < 2.0) return (((x - 5) * x + 8) * x - 4) * a;
  return 0.0;
}

/* Fixed-point coefficients for output indices [first, first + n) of a resize in_size -> out_size. */
typedef struct coeffs {
  int ksize;  /* stride of k */
  int *start; /* n: first source index */
  int *count; /* n: number of taps */
  int32_t *k; /* n * ksize */
  double *kd; /* n * ksize: the normalised double weights (PIL's 32-bit resample uses them as they are) */
} coeffs;

static void coeffs_free(coeffs *c) {
  free(c->start);
  free(c->count);
  free(c->k);
  free(c->kd);
  memset(c, 0, sizeof *c);
}

static int coeffs_make(int in_size, int out_size, int first, int n, coeffs *c, taca_error *err) {
  memset(c, 0, sizeof *c);
  /* PIL: box = (0, in_size) as floats; scale = (double)(in1 - in0) / outSize. */
  double scale = (double)((float)in_size - 0.0f) / out_size;
  double filterscale = scale < 1.0 ? 1.0 : scale;
  double support = 2.0 * filterscale;
  int ksize = (int)ceil(support) * 2 + 1;
  c->ksize = ksize;
  c->start = malloc(sizeof(int) * (size_t)n);
  c->count = malloc(sizeof(int) * (size_t)n);
  c->k = malloc(sizeof(int32_t) * (size_t)n * (size_t)ksize);
  c->kd = malloc(sizeof(double) * (size_t)n * (size_t)ksize);
  double *pre = malloc(sizeof(double) * (size_t)ksize);
  if (!c->start || !c->count || !c->k || !c->kd || !pre) {
    free(pre);
    coeffs_free(c);
    return taca_fail(err, "resize: out of memory for %d x %d coefficients", n, ksize);
  }
  for (int i = 0; i < n; i++) {
    int xx = first + i;
    double center = 0.0f + (xx + 0.5) * scale;
    double ww = 0.0;
    double ss = 1.0 / filterscale;
    int xmin = (int)(center - support + 0.5);
    if (xmin < 0) xmin = 0;
    int xmax = (int)(center + support + 0.5);
    if (xmax > in_size) xmax = in_size;
    xmax -= xmin;
    for (int x = 0; x < xmax; x++) {
      double w = bicubic_filter((x + xmin - center + 0.5) * ss);
      pre[x] = w;
      ww += w;
    }
    for (int x = 0; x < xmax; x++)
      if (ww != 0.0) pre[x] /= ww;
    int32_t *k = c->k + (size_t)i * ksize;
    double *kd = c->kd + (size_t)i * ksize;
    for (int x = 0; x < ksize; x++) {
      double p = x < xmax ? pre[x] : 0.0;
      kd[x] = p;
      k[x] = p < 0 ? (int)(-0.5 + p * (1 << PRECISION_BITS)) : (int)(0.5 + p * (1 << PRECISION_BITS));
    }
    c->start[i] = xmin;
    c->count[i] = xmax;
  }
  free(pre);
  return 0;
}

/* The vertical coefficients of an output window of ch rows from y0, and the source rows they read,
 * [*row0, *row0 + *nrows). */
static int coeffs_rows(int in_size, int out_size, int y0, int ch, coeffs *cy, int *row0, int *nrows, taca_error *err) {
  if (coeffs_make(in_size, out_size, y0, ch, cy, err)) return -1;
  *row0 = cy->start[0];
  int last = 0;
  for (int i = 0; i < ch; i++)
    if (cy->start[i] + cy->count[i] > last) last = cy->start[i] + cy->count[i];
  *nrows = last - *row0;
  return 0;
}

static inline uint8_t clip8(int32_t ss) {
  int32_t v = ss >> PRECISION_BITS;
  return (uint8_t)(v < 0 ? 0 : v > 255 ? 255 : v);
}

static int simd_enabled = 1;

int image_simd_enable(int on) {
  int was = simd_enabled;
  simd_enabled = on != 0;
#ifdef HAVE_AVX2_KERNEL
  return was && __builtin_cpu_supports("avx2");
#else
  (void)was;
  return 0;
#endif
}

/* One row of the horizontal pass, plain C: PIL's loop. */
static void horizontal_row(const uint8_t *row, const coeffs *cx, int ncols, uint8_t *out) {
  const int32_t half = 1 << (PRECISION_BITS - 1);
  for (int xx = 0; xx < ncols; xx++) {
    const int32_t *k = cx->k + (size_t)xx * cx->ksize;
    const uint8_t *p = row + (size_t)cx->start[xx] * 3;
    int32_t s0 = half, s1 = half, s2 = half;
    for (int x = 0; x < cx->count[xx]; x++, p += 3) {
      s0 += p[0] * k[x];
      s1 += p[1] * k[x];
      s2 += p[2] * k[x];
    }
    out[xx * 3 + 0] = clip8(s0);
    out[xx * 3 + 1] = clip8(s1);
    out[xx * 3 + 2] = clip8(s2);
  }
}

#ifdef HAVE_AVX2_KERNEL
/* The horizontal pass with AVX2, two taps per instruction: 8 source bytes [R0 G0 B0 R1 G1 B1 R2 G2] widened
 * to int32 lanes times [k0 k0 k0 k1 k1 k1 0 0], accumulated; at the end lanes 0-2 and 3-5 are added.
 * kx holds those expanded coefficient vectors, npairs per output column (taps padded with zeros).
 * The 8-byte loads read up to 5 bytes past a window's last pixel, so the caller keeps rows whose loads
 * would leave the image out of here. Integer sums in another order: the same bytes as the plain loop. */
__attribute__((target("avx2"))) static void horizontal_row_avx2(const uint8_t *row, const coeffs *cx,
                                                                const int32_t *kx, int npairs, int ncols,
                                                                uint8_t *out) {
  const __m256i half = _mm256_setr_epi32(1 << (PRECISION_BITS - 1), 1 << (PRECISION_BITS - 1),
                                         1 << (PRECISION_BITS - 1), 0, 0, 0, 0, 0);
  const __m256i fold = _mm256_setr_epi32(3, 4, 5, 7, 7, 7, 7, 7);
  for (int xx = 0; xx < ncols; xx++) {
    const uint8_t *p = row + (size_t)cx->start[xx] * 3;
    const int32_t *k = kx + (size_t)xx * npairs * 8;
    int np = (cx->count[xx] + 1) / 2;
    __m256i acc = half;
    for (int j = 0; j < np; j++, p += 6, k += 8) {
      long long v;
      memcpy(&v, p, 8);
      __m256i px = _mm256_cvtepu8_epi32(_mm_cvtsi64_si128(v));
      acc = _mm256_add_epi32(acc, _mm256_mullo_epi32(px, _mm256_loadu_si256((const __m256i *)k)));
    }
    acc = _mm256_add_epi32(acc, _mm256_permutevar8x32_epi32(acc, fold));
    /* >> 22, then saturate to int16 and to uint8: exactly clip8 for these ranges */
    __m128i w32 = _mm_srai_epi32(_mm256_castsi256_si128(acc), PRECISION_BITS);
    __m128i w16 = _mm_packs_epi32(w32, w32);
    uint32_t v = (uint32_t)_mm_cvtsi128_si32(_mm_packus_epi16(w16, w16));
    if (xx + 1 < ncols) { /* a 4-byte store; the spare byte is overwritten by the next pixel */
      memcpy(out + xx * 3, &v, 4);
    } else {
      out[xx * 3] = (uint8_t)v, out[xx * 3 + 1] = (uint8_t)(v >> 8), out[xx * 3 + 2] = (uint8_t)(v >> 16);
    }
  }
}

/* kx for horizontal_row_avx2, or NULL when out of memory (the caller then uses the plain loop).
 * *reach: how many bytes from the start of a row the 8-byte loads touch at most. */
static int32_t *expand_coeffs(const coeffs *cx, int ncols, int *npairs, size_t *reach) {
  int np = (cx->ksize + 1) / 2;
  int32_t *kx = calloc((size_t)ncols * np * 8, sizeof(int32_t));
  if (!kx) return NULL;
  *reach = 0;
  for (int xx = 0; xx < ncols; xx++) {
    const int32_t *k = cx->k + (size_t)xx * cx->ksize;
    for (int x = 0; x < cx->count[xx]; x++) {
      int32_t *dst = kx + ((size_t)xx * np + x / 2) * 8 + (x % 2) * 3;
      dst[0] = dst[1] = dst[2] = k[x];
    }
    size_t end = (size_t)cx->start[xx] * 3 + (size_t)((cx->count[xx] + 1) / 2) * 6 + 2;
    if (end > *reach) *reach = end;
  }
  *npairs = np;
  return kx;
}
#endif

/* Horizontal pass: rows [y0, y0 + nrows) of the src_w x src_h image src, output columns described by cx
 * (ncols), into dst (nrows x ncols x 3). */
static void resample_horizontal(const uint8_t *src, int src_w, int src_h, int y0, int nrows, const coeffs *cx,
                                int ncols, uint8_t *dst) {
  size_t in_stride = (size_t)src_w * 3, out_stride = (size_t)ncols * 3;
  int r = 0;
#ifdef HAVE_AVX2_KERNEL
  int npairs;
  size_t reach, total = in_stride * (size_t)src_h;
  int32_t *kx = simd_enabled && __builtin_cpu_supports("avx2") ? expand_coeffs(cx, ncols, &npairs, &reach) : NULL;
  if (kx) /* rows whose loads would run past the end of the image (the last one or few) use the plain loop */
    for (; r < nrows && (y0 + r) * in_stride + reach <= total; r++)
      horizontal_row_avx2(src + (y0 + r) * in_stride, cx, kx, npairs, ncols, dst + r * out_stride);
  free(kx);
#else
  (void)src_h;
#endif
  for (; r < nrows; r++) horizontal_row(src + (y0 + r) * in_stride, cx, ncols, dst + r * out_stride);
}

/* Writes one output row of ncols interleaved pixels either interleaved (HWC) or into three planes. */
static void store_row(const uint8_t *row, int ncols, int nrows, int yy, int planar, uint8_t *dst) {
  if (!planar) {
    memcpy(dst + (size_t)yy * ncols * 3, row, (size_t)ncols * 3);
    return;
  }
  size_t plane = (size_t)ncols * nrows;
  uint8_t *r = dst + (size_t)yy * ncols, *g = r + plane, *b = g + plane;
  for (int x = 0; x < ncols; x++) {
    r[x] = row[3 * x + 0];
    g[x] = row[3 * x + 1];
    b[x] = row[3 * x + 2];
  }
}

/* The (x0, y0, cw, ch) window of PIL's resize of `in` to out_w x out_h, into dst as HWC or planar CHW. */
static int resize_window(const rgb_image *in, int out_w, int out_h, int x0, int y0, int cw, int ch, int planar,
                         uint8_t *dst, taca_error *err) {
  int need_h = out_w != in->width, need_v = out_h != in->height;
  coeffs cx = {0}, cy = {0};
  uint8_t *tmp = NULL, *line = NULL;
  int32_t *acc = NULL;
  int rc = -1;

  /* Source rows the window needs (all of them relative to row0). */
  int row0 = y0, nrows = ch;
  if (need_v && coeffs_rows(in->height, out_h, y0, ch, &cy, &row0, &nrows, err)) goto done;
  /* Rows after the horizontal pass: either a fresh buffer, or the source itself (column offset x0). */
  const uint8_t *rows;
  size_t stride;
  if (need_h) {
    if (coeffs_make(in->width, out_w, x0, cw, &cx, err)) goto done;
    tmp = malloc((size_t)nrows * cw * 3);
    if (!tmp) {
      taca_fail(err, "resize: out of memory for a %dx%d intermediate", cw, nrows);
      goto done;
    }
    resample_horizontal(in->rgb, in->width, in->height, row0, nrows, &cx, cw, tmp);
    rows = tmp;
    stride = (size_t)cw * 3;
  } else {
    rows = in->rgb + (size_t)row0 * in->width * 3 + (size_t)x0 * 3;
    stride = (size_t)in->width * 3;
  }

  size_t nv = (size_t)cw * 3;
  line = malloc(nv);
  if (need_v) acc = malloc(sizeof(int32_t) * nv);
  if (!line || (need_v && !acc)) {
    taca_fail(err, "resize: out of memory for a %d pixel row", cw);
    goto done;
  }
  for (int yy = 0; yy < ch; yy++) {
    if (need_v) {
      const int32_t *k = cy.k + (size_t)yy * cy.ksize;
      const uint8_t *base = rows + (size_t)(cy.start[yy] - row0) * stride;
      for (size_t i = 0; i < nv; i++) acc[i] = 1 << (PRECISION_BITS - 1);
      for (int y = 0; y < cy.count[yy]; y++) {
        const uint8_t *src = base + (size_t)y * stride;
        int32_t ky = k[y];
        for (size_t i = 0; i < nv; i++) acc[i] += src[i] * ky;
      }
      for (size_t i = 0; i < nv; i++) line[i] = clip8(acc[i]);
      store_row(line, cw, ch, yy, planar, dst);
    } else {
      store_row(rows + (size_t)yy * stride, cw, ch, yy, planar, dst);
    }
  }
  rc = 0;
done:
  coeffs_free(&cx);
  coeffs_free(&cy);
  free(tmp);
  free(line);
  free(acc);
  return rc;
}

/* ---------- the other PIL modes (plain C) ---------- */

/* The (x0, y0, cw, ch) window of PIL's 8-bit resize of an nch-channel interleaved w x h image to
 * out_w x out_h, interleaved into dst (ch * cw * nch). */
static int resize_window_n(const uint8_t *src, int w, int h, int nch, int out_w, int out_h, int x0, int y0, int cw,
                           int ch, uint8_t *dst, taca_error *err) {
  int need_h = out_w != w, need_v = out_h != h;
  coeffs cx = {0}, cy = {0};
  uint8_t *tmp = NULL;
  int32_t *acc = NULL;
  int rc = -1;
  int row0 = y0, nrows = ch;
  if (need_v && coeffs_rows(h, out_h, y0, ch, &cy, &row0, &nrows, err)) goto done;
  const uint8_t *rows;
  size_t stride;
  if (need_h) {
    if (coeffs_make(w, out_w, x0, cw, &cx, err)) goto done;
    tmp = malloc((size_t)nrows * cw * nch);
    if (!tmp) {
      taca_fail(err, "resize: out of memory for a %dx%d intermediate", cw, nrows);
      goto done;
    }
    const int32_t half = 1 << (PRECISION_BITS - 1);
    for (int r = 0; r < nrows; r++) {
      const uint8_t *row = src + (size_t)(row0 + r) * w * nch;
      uint8_t *o = tmp + (size_t)r * cw * nch;
      for (int xx = 0; xx < cw; xx++) {
        const int32_t *k = cx.k + (size_t)xx * cx.ksize;
        const uint8_t *p = row + (size_t)cx.start[xx] * nch;
        int32_t ss[4] = {half, half, half, half};
        for (int x = 0; x < cx.count[xx]; x++, p += nch)
          for (int c = 0; c < nch; c++) ss[c] += p[c] * k[x];
        for (int c = 0; c < nch; c++) o[xx * nch + c] = clip8(ss[c]);
      }
    }
    rows = tmp;
    stride = (size_t)cw * nch;
  } else {
    rows = src + (size_t)row0 * w * nch + (size_t)x0 * nch;
    stride = (size_t)w * nch;
  }
  const size_t nv = (size_t)cw * nch;
  if (need_v && !(acc = malloc(sizeof(int32_t) * nv))) {
    taca_fail(err, "resize: out of memory for a %d pixel row", cw);
    goto done;
  }
  for (int yy = 0; yy < ch; yy++) {
    uint8_t *o = dst + (size_t)yy * nv;
    if (!need_v) {
      memcpy(o, rows + (size_t)yy * stride, nv);
      continue;
    }
    const int32_t *k = cy.k + (size_t)yy * cy.ksize;
    const uint8_t *base = rows + (size_t)(cy.start[yy] - row0) * stride;
    for (size_t i = 0; i < nv; i++) acc[i] = 1 << (PRECISION_BITS - 1);
    for (int y = 0; y < cy.count[yy]; y++) { /* row by row: integer sums, any order gives the same bytes */
      const uint8_t *src_row = base + (size_t)y * stride;
      int32_t ky = k[y];
      for (size_t i = 0; i < nv; i++) acc[i] += src_row[i] * ky;
    }
    for (size_t i = 0; i < nv; i++) o[i] = clip8(acc[i]);
  }
  rc = 0;
done:
  coeffs_free(&cx);
  coeffs_free(&cy);
  free(tmp);
  free(acc);
  return rc;
}

/* PIL's ROUND_UP (libImaging/Resample.c) for the 32-bit passes. */
static inline int32_t round_up(double f) { return (int32_t)(f >= 0.0 ? f + 0.5F : f - 0.5F); }

/* Mode I: the (x0, y0, cw, ch) window of PIL's 32-bit resize of a 16-bit gray w x h image, then
 * convert('RGB')'s clip to 0..255, one byte per pixel into dst (ch * cw). */
static int resize_window_i32(const uint16_t *src, int w, int h, int out_w, int out_h, int x0, int y0, int cw,
                             int ch, uint8_t *dst, taca_error *err) {
  int need_h = out_w != w, need_v = out_h != h;
  coeffs cx = {0}, cy = {0};
  int32_t *tmp = NULL;
  double *ssv = NULL;
  int rc = -1;
  int row0 = y0, nrows = ch;
  if (need_v && coeffs_rows(h, out_h, y0, ch, &cy, &row0, &nrows, err)) goto done;
  if (need_h && coeffs_make(w, out_w, x0, cw, &cx, err)) goto done;
  /* The rows after the horizontal pass (or the source's window of them), as int32. */
  tmp = malloc(sizeof(int32_t) * (size_t)nrows * cw);
  if (!tmp) {
    taca_fail(err, "resize: out of memory for a %dx%d intermediate", cw, nrows);
    goto done;
  }
  for (int r = 0; r < nrows; r++) {
    const uint16_t *row = src + (size_t)(row0 + r) * w;
    int32_t *o = tmp + (size_t)r * cw;
    for (int xx = 0; xx < cw; xx++) {
      if (!need_h) {
        o[xx] = row[x0 + xx];
        continue;
      }
      const double *k = cx.kd + (size_t)xx * cx.ksize;
      double ss = 0.0;
      for (int x = 0; x < cx.count[xx]; x++) ss += (int32_t)row[cx.start[xx] + x] * k[x];
      o[xx] = round_up(ss);
    }
  }
  if (need_v && !(ssv = malloc(sizeof(double) * (size_t)cw))) {
    taca_fail(err, "resize: out of memory for a %d pixel row", cw);
    goto done;
  }
  for (int yy = 0; yy < ch; yy++) {
    uint8_t *o = dst + (size_t)yy * cw;
    if (!need_v) {
      for (int xx = 0; xx < cw; xx++) {
        int32_t v = tmp[(size_t)yy * cw + xx];
        o[xx] = (uint8_t)(v <= 0 ? 0 : v >= 255 ? 255 : v);
      }
      continue;
    }
    const double *k = cy.kd + (size_t)yy * cy.ksize;
    for (int xx = 0; xx < cw; xx++) ssv[xx] = 0.0;
    for (int y = 0; y < cy.count[yy]; y++) { /* row by row; each sum still adds its taps in PIL's order */
      const int32_t *r = tmp + (size_t)(cy.start[yy] - row0 + y) * cw;
      for (int xx = 0; xx < cw; xx++) ssv[xx] += r[xx] * k[y];
    }
    for (int xx = 0; xx < cw; xx++) {
      int32_t v = round_up(ssv[xx]);
      o[xx] = (uint8_t)(v <= 0 ? 0 : v >= 255 ? 255 : v);
    }
  }
  rc = 0;
done:
  coeffs_free(&cx);
  coeffs_free(&cy);
  free(tmp);
  free(ssv);
  return rc;
}

/* ImagingScaleAffine's source positions for out_n outputs of an in_n axis, -1 where it fills. */
static int *nearest_positions(int in_n, int out_n) {
  int *t = malloc(sizeof(int) * (size_t)out_n);
  if (!t) return NULL;
  double a = (double)((float)in_n - 0.0f) / out_n; /* _resize: (double)(box[2] - box[0]) / xsize, box floats */
  double o = 0.0 + a * 0.5;
  for (int i = 0; i < out_n; i++) {
    int v = o < 0.0 ? -1 : (int)o; /* COORD */
    t[i] = v >= 0 && v < in_n ? v : -1;
    o += a;
  }
  return t;
}

/* Planar CHW from ch x cw pixels of 3 interleaved bytes. */
static void to_planar(const uint8_t *rgb, int cw, int ch, uint8_t *out_chw) {
  for (int y = 0; y < ch; y++) store_row(rgb + (size_t)y * cw * 3, cw, ch, y, 1, out_chw);
}

static int crop_other_mode(const rgb_image *in, int rw, int rh, int left, int top, int size, uint8_t *out_chw,
                           taca_error *err) {
  const int w = in->width, h = in->height, same = rw == w && rh == h;
  const size_t npix = (size_t)size * size, spix = (size_t)w * h;
  int rc = -1;
  uint8_t *win = NULL, *rgb = malloc(npix * 3), *src4 = NULL;
  if (!rgb) return taca_fail(err, "resize: out of memory for a %d pixel crop", size);
  switch (in->mode) {
    case IMAGE_MODE_P:
    case IMAGE_MODE_1: {
      int *xs = nearest_positions(w, rw), *ys = nearest_positions(h, rh);
      if (!xs || !ys) {
        free(xs), free(ys);
        taca_fail(err, "resize: out of memory");
        goto done;
      }
      for (int y = 0; y < size; y++)
        for (int x = 0; x < size; x++) {
          int sy = ys[top + y], sx = xs[left + x];
          uint8_t *o = rgb + ((size_t)y * size + x) * 3;
          if (sx < 0 || sy < 0) o[0] = o[1] = o[2] = 0;
          else memcpy(o, in->rgb + ((size_t)sy * w + sx) * 3, 3);
        }
      free(xs), free(ys);
      break;
    }
    case IMAGE_MODE_RGBA:
    case IMAGE_MODE_LA: {
      if (!in->alpha) {
        taca_fail(err, "resize: %s image without its alpha plane", image_mode_name(in->mode));
        goto done;
      }
      win = malloc(npix * 4);
      if (!win || (!same && !(src4 = malloc(spix * 4)))) {
        taca_fail(err, "resize: out of memory for a %dx%d image", w, h);
        goto done;
      }
      if (same) { /* PIL copies an image of the right size: no premultiply round trip */
        for (int y = 0; y < size; y++)
          memcpy(rgb + (size_t)y * size * 3, in->rgb + ((size_t)(top + y) * w + left) * 3, (size_t)size * 3);
        break;
      }
      for (size_t i = 0; i < spix; i++) { /* RGBA -> RGBa */
        unsigned a = in->alpha[i], t;
        for (int c = 0; c < 3; c++) t = in->rgb[3 * i + c] * a + 128, src4[4 * i + c] = (uint8_t)(((t >> 8) + t) >> 8);
        src4[4 * i + 3] = (uint8_t)a;
      }
      if (resize_window_n(src4, w, h, 4, rw, rh, left, top, size, size, win, err)) goto done;
      for (size_t i = 0; i < npix; i++) { /* RGBa -> RGBA, alpha dropped */
        unsigned a = win[4 * i + 3];
        for (int c = 0; c < 3; c++) {
          unsigned v = win[4 * i + c];
          if (a != 0 && a != 255) v = 255 * v / a, v = v > 255 ? 255 : v;
          rgb[3 * i + c] = (uint8_t)v;
        }
      }
      break;
    }
    case IMAGE_MODE_CMYK:
      if (!in->cmyk) {
        taca_fail(err, "resize: CMYK image without its CMYK plane");
        goto done;
      }
      win = malloc(npix * 4);
      if (!win) {
        taca_fail(err, "resize: out of memory for a %d pixel crop", size);
        goto done;
      }
      if (resize_window_n(in->cmyk, w, h, 4, rw, rh, left, top, size, size, win, err)) goto done;
      image_cmyk_to_rgb(win, rgb, npix);
      break;
    case IMAGE_MODE_I:
      if (!in->gray16) {
        taca_fail(err, "resize: mode I image without its 16-bit plane");
        goto done;
      }
      win = malloc(npix);
      if (!win) {
        taca_fail(err, "resize: out of memory for a %d pixel crop", size);
        goto done;
      }
      if (resize_window_i32(in->gray16, w, h, rw, rh, left, top, size, size, win, err)) goto done;
      for (size_t i = 0; i < npix; i++) rgb[3 * i] = rgb[3 * i + 1] = rgb[3 * i + 2] = win[i];
      break;
    default:
      taca_fail(err, "resize: unknown image mode %d", in->mode);
      goto done;
  }
  to_planar(rgb, size, size, out_chw);
  rc = 0;
done:
  free(rgb);
  free(win);
  free(src4);
  return rc;
}

static int check_input(const rgb_image *in, taca_error *err) {
  if (!in || !in->rgb || in->width <= 0 || in->height <= 0)
    return taca_fail(err, "resize: empty input image (%dx%d)", in ? in->width : 0, in ? in->height : 0);
  if (in->width > IMAGE_MAX_SIDE || in->height > IMAGE_MAX_SIDE)
    return taca_fail(err, "resize: input %dx%d exceeds %d pixels per side", in->width, in->height, IMAGE_MAX_SIDE);
  return 0;
}

int clip_resize_geometry(int width, int height, int size, int *rw, int *rh, int *left, int *top,
                         taca_error *err) {
  if (width <= 0 || height <= 0) return taca_fail(err, "resize: invalid image size %dx%d", width, height);
  if (size <= 0 || size > CLIP_MAX_SIZE)
    return taca_fail(err, "resize: crop size %d not in [1, %d]", size, CLIP_MAX_SIZE);
  int w_short = width <= height;
  long long s = w_short ? width : height, l = w_short ? height : width;
  /* Python: int(size * long / short), an exactly rounded double division truncated toward zero. */
  double nl = (double)((long long)size * l) / (double)s;
  if (nl > (double)INT32_MAX / 4)
    return taca_fail(err, "resize: %dx%d is too elongated to resize its short side to %d", width, height, size);
  int new_long = (int)nl;
  int nw = w_short ? size : new_long, nh = w_short ? new_long : size;
  /* torchvision: int(round((H - size) / 2.0)); the half is odd differences, rounded to even. */
  int dw = nw - size, dh = nh - size;
  int lx = dw / 2 + ((dw & 1) && ((dw / 2) & 1)), ty = dh / 2 + ((dh & 1) && ((dh / 2) & 1));
  *rw = nw;
  *rh = nh;
  *left = lx;
  *top = ty;
  return 0;
}

int clip_resize_crop_u8(const rgb_image *in, int size, uint8_t *out_chw, taca_error *err) {
  if (check_input(in, err)) return -1;
  int rw, rh, left, top;
  if (clip_resize_geometry(in->width, in->height, size, &rw, &rh, &left, &top, err)) return -1;
  if (in->mode != IMAGE_MODE_RGB && in->mode != IMAGE_MODE_L)
    return crop_other_mode(in, rw, rh, left, top, size, out_chw, err);
  return resize_window(in, rw, rh, left, top, size, size, 1, out_chw, err);
}

int image_resize_bicubic(const rgb_image *in, int out_w, int out_h, rgb_image *out, taca_error *err) {
  memset(out, 0, sizeof *out); /* an RGB image: no other planes */
  if (check_input(in, err)) return -1;
  if (out_w <= 0 || out_h <= 0 || out_w > IMAGE_MAX_SIDE * 4 || out_h > IMAGE_MAX_SIDE * 4 ||
      (long long)out_w * out_h > IMAGE_MAX_PIXELS)
    return taca_fail(err, "resize: output size %dx%d out of range", out_w, out_h);
  uint8_t *dst = malloc((size_t)out_w * out_h * 3);
  if (!dst) return taca_fail(err, "resize: out of memory for a %dx%d image", out_w, out_h);
  if (resize_window(in, out_w, out_h, 0, 0, out_w, out_h, 0, dst, err)) {
    free(dst);
    return -1;
  }
  out->width = out_w;
  out->height = out_h;
  out->rgb = dst;
  return 0;
}

void clip_normalize_u8(const uint8_t *chw, int size, const float mean[3], const float std[3], float *out_chw) {
  size_t n = (size_t)size * size;
  for (int c = 0; c < 3; c++) {
    float lut[256];
    for (int v = 0; v < 256; v++) {
      float x = (float)v / 255.0f; /* ToTensor: float division */
      x = x - mean[c];              /* Normalize: sub then div, each rounded to float */
      lut[v] = x / std[c];
    }
    const uint8_t *src = chw + c * n;
    float *dst = out_chw + c * n;
    for (size_t i = 0; i < n; i++) dst[i] = lut[src[i]];
  }
}
