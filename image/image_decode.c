/* image_decode.c: JPEG (libjpeg-turbo), PNG (libpng) and WebP (libwebp) decoding from memory,
 * pixel-identical to PIL 9.4's Image.open(...) on the same system libraries: the mode PIL opens the
 * file in, the planes that mode's resize needs, and convert('RGB') of it.
 *
 * What "as PIL does" means per format:
 *   JPEG  libjpeg defaults (JDCT_ISLOW, fancy upsampling, no DCT scaling). Grayscale is mode L.
 *         4-component files are read as CMYK (libjpeg turns YCCK into CMYK), taken to follow Adobe's
 *         inverted convention as PIL always assumes ("CMYK;I": PIL holds 255 - each sample, kept in
 *         `cmyk`), and converted with PIL's cmyk2rgb: R = clip(k' - MULDIV255(c, k')), k' = 255 - K.
 *         Any truncation (even a missing EOI marker) is an error, as in PIL; other libjpeg warnings
 *         ("corrupt JPEG data: extraneous bytes") are ignored, as in PIL.
 *   PNG   PIL's modes: gray 1 bit -> "1", 2/4/8 bit -> L (scaled by bit replication), 16 bit -> I
 *         (kept in `gray16`; convert('RGB') clips every value above 255 to white, as PIL does);
 *         gray+alpha 8 bit -> LA, 16 bit -> RGBA (PIL's LA;16B); palette -> P (expanded through the
 *         palette: a nearest-neighbour resize of indices or of their colours gives the same bytes;
 *         tRNS ignored, as convert('RGB') ignores it); RGB/RGBA 16-bit samples reduced to their high
 *         byte (PIL's RGB;16B / RGBA;16B). tRNS of gray and RGB images is ignored (mode L / RGB).
 *   WebP  lossy and lossless; RGBA when the file has alpha (libwebp's non-premultiplied output, as
 *         PIL's), else RGB. Animated WebP is refused.
 * Alpha (RGBA, LA) is kept in `alpha`; `rgb` holds the colour without it (convert('RGB') drops it).
 * Images wider or taller than IMAGE_MAX_SIDE or larger than IMAGE_MAX_PIXELS are refused before any
 * pixel memory is allocated (decompression bombs). */
#include "image/image.h"

#include <errno.h>
#include <limits.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jpeglib.h>
#include <jerror.h>
#include <png.h>
#include <webp/decode.h>

static int check_dims(const char *fmt, long w, long h, taca_error *err) {
  if (w <= 0 || h <= 0) return taca_fail(err, "%s: invalid image size %ldx%ld", fmt, w, h);
  if (w > IMAGE_MAX_SIDE || h > IMAGE_MAX_SIDE)
    return taca_fail(err, "%s: image size %ldx%ld exceeds the limit of %d pixels per side (decompression bomb?)",
                     fmt, w, h, IMAGE_MAX_SIDE);
  if ((long long)w * h > IMAGE_MAX_PIXELS)
    return taca_fail(err, "%s: image size %ldx%ld (%lld pixels) exceeds the limit of %lld pixels (decompression bomb?)",
                     fmt, w, h, (long long)w * h, (long long)IMAGE_MAX_PIXELS);
  return 0;
}

static int alloc_rgb(const char *fmt, int w, int h, rgb_image *out, taca_error *err) {
  out->width = w;
  out->height = h;
  out->rgb = malloc((size_t)w * (size_t)h * 3);
  if (!out->rgb) return taca_fail(err, "%s: out of memory for a %dx%d image", fmt, w, h);
  return 0;
}

void rgb_image_free(rgb_image *img) {
  if (!img) return;
  free(img->rgb);
  free(img->alpha);
  free(img->cmyk);
  free(img->gray16);
  memset(img, 0, sizeof *img);
}

const char *image_mode_name(int mode) {
  static const char *const names[] = {"RGB", "L", "RGBA", "LA", "P", "1", "CMYK", "I"};
  return mode >= 0 && mode <= IMAGE_MODE_I ? names[mode] : "?";
}

static void reset_image(rgb_image *out) { memset(out, 0, sizeof *out); }

/* Splits interleaved 4-channel rows (RGBA, or gray replicated + alpha) into out->rgb and out->alpha. */
static void split_alpha(const uint8_t *rgba, size_t npix, uint8_t *rgb, uint8_t *alpha) {
  for (size_t i = 0; i < npix; i++, rgba += 4, rgb += 3) {
    rgb[0] = rgba[0], rgb[1] = rgba[1], rgb[2] = rgba[2];
    alpha[i] = rgba[3];
  }
}

/* ------------------------------------------------------------------------------------------- JPEG */

typedef struct jpeg_err {
  struct jpeg_error_mgr pub;
  jmp_buf jb;
  char msg[JMSG_LENGTH_MAX];
} jpeg_err;

static void jpeg_on_error(j_common_ptr c) {
  jpeg_err *e = (jpeg_err *)c->err;
  c->err->format_message(c, e->msg);
  longjmp(e->jb, 1);
}

/* Warnings are ignored, except running out of data: PIL refuses truncated files and so do we. */
static void jpeg_on_message(j_common_ptr c, int level) {
  if (level < 0 && c->err->msg_code == JWRN_JPEG_EOF) {
    jpeg_err *e = (jpeg_err *)c->err;
    snprintf(e->msg, sizeof e->msg, "truncated data (premature end of file)");
    longjmp(e->jb, 1);
  }
  if (level < 0) c->err->num_warnings++;
}

static void jpeg_no_output(j_common_ptr c) { (void)c; }

/* PIL's Convert.c cmyk2rgb on the values PIL holds (it unpacks JPEG CMYK as "CMYK;I": 255 - raw). */
void image_cmyk_to_rgb(const uint8_t *in, uint8_t *out, size_t n) {
  for (size_t x = 0; x < n; x++, in += 4, out += 3) {
    int nk = 255 - in[3];
    for (int c = 0; c < 3; c++) {
      int t = in[c] * nk + 128;
      int m = ((t >> 8) + t) >> 8; /* MULDIV255 */
      int r = nk - m;
      out[c] = (uint8_t)(r < 0 ? 0 : r > 255 ? 255 : r);
    }
  }
}

static int decode_jpeg(const uint8_t *buf, size_t len, rgb_image *out, taca_error *err) {
  struct jpeg_decompress_struct cinfo;
  jpeg_err jerr;
  uint8_t *volatile pix = NULL;
  uint8_t *volatile row4 = NULL;
  uint8_t *volatile cmyk_all = NULL;

  memset(&cinfo, 0, sizeof cinfo);
  cinfo.err = jpeg_std_error(&jerr.pub);
  jerr.pub.error_exit = jpeg_on_error;
  jerr.pub.emit_message = jpeg_on_message;
  jerr.pub.output_message = jpeg_no_output;
  jerr.msg[0] = 0;
  if (setjmp(jerr.jb)) {
    jpeg_destroy_decompress(&cinfo);
    free(pix);
    free(row4);
    free(cmyk_all);
    return taca_fail(err, "JPEG: %s", jerr.msg);
  }
  jpeg_create_decompress(&cinfo);
  if (len > ULONG_MAX) len = ULONG_MAX;
  jpeg_mem_src(&cinfo, buf, (unsigned long)len);
  jpeg_read_header(&cinfo, TRUE);
  if (check_dims("JPEG", (long)cinfo.image_width, (long)cinfo.image_height, err)) {
    jpeg_destroy_decompress(&cinfo);
    return -1;
  }
  int cmyk = 0, gray = cinfo.jpeg_color_space == JCS_GRAYSCALE;
  switch (cinfo.jpeg_color_space) {
    case JCS_GRAYSCALE:
    case JCS_YCbCr:
    case JCS_RGB:
      cinfo.out_color_space = JCS_RGB; /* gray is replicated, as PIL's L -> RGB */
      break;
    case JCS_CMYK:
    case JCS_YCCK:
      cinfo.out_color_space = JCS_CMYK;
      cmyk = 1;
      break;
    default:
      jpeg_destroy_decompress(&cinfo);
      return taca_fail(err, "JPEG: unsupported color space %d with %d components", (int)cinfo.jpeg_color_space,
                       cinfo.num_components);
  }
  /* libjpeg's defaults, which PIL uses; set explicitly so that nobody "optimises" them away:
   * exactness with PIL depends on them (no scale_num/scale_denom, no JDCT_IFAST). */
  cinfo.dct_method = JDCT_ISLOW;
  cinfo.do_fancy_upsampling = TRUE;
  cinfo.do_block_smoothing = TRUE;
  cinfo.scale_num = cinfo.scale_denom = 1;

  jpeg_start_decompress(&cinfo);
  int w = (int)cinfo.output_width, h = (int)cinfo.output_height;
  if (cinfo.output_components != (cmyk ? 4 : 3)) {
    jpeg_destroy_decompress(&cinfo);
    return taca_fail(err, "JPEG: decoder gave %d components, expected %d", cinfo.output_components, cmyk ? 4 : 3);
  }
  pix = malloc((size_t)w * (size_t)h * 3);
  if (cmyk) row4 = malloc((size_t)w * 4), cmyk_all = malloc((size_t)w * h * 4);
  if (!pix || (cmyk && (!row4 || !cmyk_all))) {
    jpeg_destroy_decompress(&cinfo);
    free(pix);
    free(row4);
    free(cmyk_all);
    return taca_fail(err, "JPEG: out of memory for a %dx%d image", w, h);
  }
  while (cinfo.output_scanline < cinfo.output_height) {
    unsigned y = cinfo.output_scanline;
    if (cmyk) {
      JSAMPROW r = row4;
      jpeg_read_scanlines(&cinfo, &r, 1);
      uint8_t *c = cmyk_all + (size_t)y * w * 4;
      for (size_t i = 0; i < (size_t)w * 4; i++) c[i] = (uint8_t)(255 - row4[i]);
      image_cmyk_to_rgb(c, pix + (size_t)y * w * 3, (size_t)w);
    } else {
      JSAMPROW rows[16];
      int n = 0;
      for (; n < 16 && y + n < cinfo.output_height; n++) rows[n] = pix + (size_t)(y + n) * w * 3;
      jpeg_read_scanlines(&cinfo, rows, (JDIMENSION)n);
    }
  }
  jpeg_finish_decompress(&cinfo); /* reads up to EOI: a missing EOI is truncation, as in PIL */
  jpeg_destroy_decompress(&cinfo);
  free(row4);
  out->width = w;
  out->height = h;
  out->rgb = pix;
  out->mode = cmyk ? IMAGE_MODE_CMYK : gray ? IMAGE_MODE_L : IMAGE_MODE_RGB;
  out->cmyk = cmyk_all;
  return 0;
}

/* -------------------------------------------------------------------------------------------- PNG */

typedef struct png_ctx {
  const uint8_t *buf;
  size_t len, pos;
  char msg[256];
} png_ctx;

static void png_on_error(png_structp png, png_const_charp msg) {
  png_ctx *c = png_get_error_ptr(png);
  if (!c->msg[0]) snprintf(c->msg, sizeof c->msg, "%s", msg);
  png_longjmp(png, 1);
}

static void png_on_warning(png_structp png, png_const_charp msg) {
  (void)png;
  (void)msg;
}

static void png_read_mem(png_structp png, png_bytep dst, size_t n) {
  png_ctx *c = png_get_io_ptr(png);
  if (n > c->len - c->pos) {
    snprintf(c->msg, sizeof c->msg, "truncated data (needed %zu bytes at offset %zu of %zu)", n, c->pos, c->len);
    png_error(png, c->msg);
  }
  memcpy(dst, c->buf + c->pos, n);
  c->pos += n;
}

static int decode_png(const uint8_t *buf, size_t len, rgb_image *out, taca_error *err) {
  png_ctx ctx = {.buf = buf, .len = len, .pos = 0, .msg = {0}};
  png_structp png = png_create_read_struct(PNG_LIBPNG_VER_STRING, &ctx, png_on_error, png_on_warning);
  if (!png) return taca_fail(err, "PNG: cannot create libpng reader");
  png_infop info = png_create_info_struct(png);
  uint8_t *volatile pix = NULL;
  png_bytep *volatile rows = NULL;
  if (!info) {
    png_destroy_read_struct(&png, NULL, NULL);
    return taca_fail(err, "PNG: cannot create libpng info struct");
  }
  if (setjmp(png_jmpbuf(png))) {
    png_destroy_read_struct(&png, &info, NULL);
    free(pix);
    free(rows);
    return taca_fail(err, "PNG: %s", ctx.msg[0] ? ctx.msg : "decoding failed");
  }
  png_set_read_fn(png, &ctx, png_read_mem);
  png_read_info(png, info);
  png_uint_32 w, h;
  int depth, ctype, interlace;
  png_get_IHDR(png, info, &w, &h, &depth, &ctype, &interlace, NULL, NULL);
  if (check_dims("PNG", (long)w, (long)h, err)) {
    png_destroy_read_struct(&png, &info, NULL);
    return -1;
  }
  /* PIL's mode (PngImagePlugin's _MODES): what the channels below hold. */
  /* volatile: set between the setjmp above and a possible longjmp */
  volatile int gray16 = ctype == PNG_COLOR_TYPE_GRAY && depth == 16;
  volatile int has_alpha = ctype == PNG_COLOR_TYPE_GRAY_ALPHA || ctype == PNG_COLOR_TYPE_RGB_ALPHA;
  volatile int mode = ctype == PNG_COLOR_TYPE_PALETTE ? IMAGE_MODE_P
             : ctype == PNG_COLOR_TYPE_GRAY   ? (depth == 1 ? IMAGE_MODE_1 : depth == 16 ? IMAGE_MODE_I : IMAGE_MODE_L)
             : ctype == PNG_COLOR_TYPE_GRAY_ALPHA ? (depth == 16 ? IMAGE_MODE_RGBA : IMAGE_MODE_LA)
             : ctype == PNG_COLOR_TYPE_RGB_ALPHA  ? IMAGE_MODE_RGBA
                                                  : IMAGE_MODE_RGB;
  const int nch = gray16 ? 1 : has_alpha ? 4 : 3, bps = gray16 ? 2 : 1;
  if (depth == 16 && !gray16) png_set_strip_16(png); /* high byte, as PIL's ;16B unpackers */
  if (ctype == PNG_COLOR_TYPE_PALETTE) png_set_palette_to_rgb(png);
  if (ctype == PNG_COLOR_TYPE_GRAY && depth < 8) png_set_expand_gray_1_2_4_to_8(png);
  if (!gray16 && (ctype == PNG_COLOR_TYPE_GRAY || ctype == PNG_COLOR_TYPE_GRAY_ALPHA)) png_set_gray_to_rgb(png);
  if (!has_alpha) png_set_strip_alpha(png); /* also drops tRNS that the palette expansion turned into alpha */
  png_set_interlace_handling(png);
  png_read_update_info(png, info);
  if (png_get_channels(png, info) != nch || png_get_bit_depth(png, info) != 8 * bps ||
      png_get_rowbytes(png, info) != (size_t)w * nch * bps) {
    int ch = png_get_channels(png, info), bd = png_get_bit_depth(png, info);
    png_destroy_read_struct(&png, &info, NULL);
    return taca_fail(err, "PNG: color type %d depth %d gave %d channels of %d bits, expected %d of %d", ctype, depth,
                     ch, bd, nch, 8 * bps);
  }
  const size_t npix = (size_t)w * h;
  pix = malloc(npix * nch * bps);
  rows = malloc(sizeof(png_bytep) * h);
  uint8_t *volatile rgb = nch == 3 ? NULL : malloc(npix * 3);
  uint8_t *volatile alpha = has_alpha ? malloc(npix) : NULL;
  uint16_t *volatile g16 = gray16 ? malloc(npix * 2) : NULL;
  if (!pix || !rows || (nch != 3 && !rgb) || (has_alpha && !alpha) || (gray16 && !g16)) {
    png_destroy_read_struct(&png, &info, NULL);
    free(pix);
    free(rows);
    free(rgb), free(alpha), free(g16);
    return taca_fail(err, "PNG: out of memory for a %ux%u image", (unsigned)w, (unsigned)h);
  }
  for (png_uint_32 y = 0; y < h; y++) rows[y] = pix + (size_t)y * w * nch * bps;
  if (setjmp(png_jmpbuf(png))) { /* the same cleanup, with the buffers allocated since */
    png_destroy_read_struct(&png, &info, NULL);
    free(pix);
    free(rows);
    free(rgb), free(alpha), free(g16);
    return taca_fail(err, "PNG: %s", ctx.msg[0] ? ctx.msg : "decoding failed");
  }
  png_read_image(png, rows); /* chunks after the image data are not read, as PIL does not need them */
  png_destroy_read_struct(&png, &info, NULL);
  free(rows);
  if (gray16) { /* PIL's I;16B; convert('RGB') clips to 0..255 */
    for (size_t i = 0; i < npix; i++) {
      g16[i] = (uint16_t)(pix[2 * i] << 8 | pix[2 * i + 1]);
      rgb[3 * i] = rgb[3 * i + 1] = rgb[3 * i + 2] = (uint8_t)(g16[i] > 255 ? 255 : g16[i]);
    }
    free(pix);
  } else if (has_alpha) {
    split_alpha(pix, npix, rgb, alpha);
    free(pix);
  } else {
    rgb = pix;
  }
  out->width = (int)w;
  out->height = (int)h;
  out->rgb = rgb;
  out->mode = mode;
  out->alpha = alpha;
  out->gray16 = g16;
  return 0;
}

/* ------------------------------------------------------------------------------------------- WebP */

static const char *webp_status(VP8StatusCode s) {
  switch (s) {
    case VP8_STATUS_OK: return "ok";
    case VP8_STATUS_OUT_OF_MEMORY: return "out of memory";
    case VP8_STATUS_INVALID_PARAM: return "invalid parameter";
    case VP8_STATUS_BITSTREAM_ERROR: return "corrupt bitstream";
    case VP8_STATUS_UNSUPPORTED_FEATURE: return "unsupported feature";
    case VP8_STATUS_SUSPENDED: return "corrupt or truncated bitstream (decoder suspended)";
    case VP8_STATUS_USER_ABORT: return "aborted";
    case VP8_STATUS_NOT_ENOUGH_DATA: return "truncated data (not enough data)";
  }
  return "unknown error";
}

/* A WebP with alpha: PIL's mode RGBA, libwebp's non-premultiplied RGBA split into rgb + alpha. */
static int decode_webp_rgba(const uint8_t *buf, size_t len, int w, int h, rgb_image *out, taca_error *err) {
  const size_t npix = (size_t)w * h;
  uint8_t *rgba = malloc(npix * 4), *rgb = malloc(npix * 3), *alpha = malloc(npix);
  if (!rgba || !rgb || !alpha) {
    free(rgba), free(rgb), free(alpha);
    return taca_fail(err, "WebP: out of memory for a %dx%d image", w, h);
  }
  WebPDecoderConfig cfg;
  if (!WebPInitDecoderConfig(&cfg)) {
    free(rgba), free(rgb), free(alpha);
    return taca_fail(err, "WebP: library version mismatch");
  }
  cfg.output.colorspace = MODE_RGBA;
  cfg.output.is_external_memory = 1;
  cfg.output.u.RGBA.rgba = rgba;
  cfg.output.u.RGBA.stride = w * 4;
  cfg.output.u.RGBA.size = npix * 4;
  VP8StatusCode s = WebPDecode(buf, len, &cfg);
  WebPFreeDecBuffer(&cfg.output);
  if (s != VP8_STATUS_OK) {
    free(rgba), free(rgb), free(alpha);
    return taca_fail(err, "WebP: decoding failed: %s", webp_status(s));
  }
  split_alpha(rgba, npix, rgb, alpha);
  free(rgba);
  out->width = w;
  out->height = h;
  out->rgb = rgb;
  out->alpha = alpha;
  out->mode = IMAGE_MODE_RGBA;
  return 0;
}

static int decode_webp(const uint8_t *buf, size_t len, rgb_image *out, taca_error *err) {
  WebPBitstreamFeatures f;
  VP8StatusCode s = WebPGetFeatures(buf, len, &f);
  if (s != VP8_STATUS_OK) return taca_fail(err, "WebP: cannot read header: %s", webp_status(s));
  if (f.has_animation) return taca_fail(err, "WebP: animated images are not supported");
  if (check_dims("WebP", f.width, f.height, err)) return -1;
  if (f.has_alpha) return decode_webp_rgba(buf, len, f.width, f.height, out, err);
  if (alloc_rgb("WebP", f.width, f.height, out, err)) return -1;
  WebPDecoderConfig cfg;
  if (!WebPInitDecoderConfig(&cfg)) {
    rgb_image_free(out);
    return taca_fail(err, "WebP: library version mismatch");
  }
  cfg.output.colorspace = MODE_RGB;
  cfg.output.is_external_memory = 1;
  cfg.output.u.RGBA.rgba = out->rgb;
  cfg.output.u.RGBA.stride = f.width * 3;
  cfg.output.u.RGBA.size = (size_t)f.width * f.height * 3;
  s = WebPDecode(buf, len, &cfg);
  WebPFreeDecBuffer(&cfg.output);
  if (s != VP8_STATUS_OK) {
    rgb_image_free(out);
    return taca_fail(err, "WebP: decoding failed: %s", webp_status(s));
  }
  return 0;
}

/* ------------------------------------------------------------------------------------------ entry */

int image_decode(const void *data, size_t len, rgb_image *out, taca_error *err) {
  const uint8_t *b = data;
  reset_image(out);
  if (!b || len == 0) return taca_fail(err, "empty input (0 bytes), not an image");
  if (len >= 3 && b[0] == 0xFF && b[1] == 0xD8 && b[2] == 0xFF) return decode_jpeg(b, len, out, err);
  if (len >= 8 && !memcmp(b, "\x89PNG\r\n\x1a\n", 8)) return decode_png(b, len, out, err);
  if (len >= 12 && !memcmp(b, "RIFF", 4) && !memcmp(b + 8, "WEBP", 4)) return decode_webp(b, len, out, err);
  const char *what = NULL;
  if (len >= 6 && (!memcmp(b, "GIF87a", 6) || !memcmp(b, "GIF89a", 6))) what = "GIF";
  else if (len >= 2 && !memcmp(b, "BM", 2)) what = "BMP";
  else if (len >= 4 && (!memcmp(b, "II*\0", 4) || !memcmp(b, "MM\0*", 4))) what = "TIFF";
  else if (b[0] == '<') what = "text/HTML";
  char hex[32] = {0};
  for (size_t i = 0, o = 0; i < len && i < 8; i++)
    o += (size_t)snprintf(hex + o, sizeof hex - o, "%s%02x", i ? " " : "", b[i]);
  if (what)
    return taca_fail(err, "unrecognised image format: looks like %s (first bytes %s); only JPEG, PNG and WebP "
                     "are supported", what, hex);
  return taca_fail(err, "unrecognised image format (first bytes %s); only JPEG, PNG and WebP are supported", hex);
}

int image_load_file(const char *path, rgb_image *out, taca_error *err) {
  reset_image(out);
  FILE *f = fopen(path, "rb");
  if (!f) return taca_fail(err, "%s: cannot open: %s", path, strerror(errno));
  uint8_t *buf = NULL;
  size_t len = 0, cap = 0;
  for (;;) {
    if (len == cap) {
      size_t ncap = cap ? cap * 2 : 1 << 16;
      uint8_t *nb = realloc(buf, ncap);
      if (!nb) {
        free(buf);
        fclose(f);
        return taca_fail(err, "%s: out of memory reading the file", path);
      }
      buf = nb;
      cap = ncap;
    }
    size_t n = fread(buf + len, 1, cap - len, f);
    len += n;
    if (n == 0) break;
  }
  int rerr = ferror(f);
  fclose(f);
  if (rerr) {
    free(buf);
    return taca_fail(err, "%s: read error", path);
  }
  int rc = image_decode(buf, len, out, err);
  free(buf);
  if (rc) return taca_error_prefix(err, "%s", path);
  return 0;
}
