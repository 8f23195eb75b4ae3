/* image_encode.c: PNG and JPEG encoders over RGB8 buffers, writing to memory. */
#include "image/image_encode.h"

#include <stdio.h> /* before jpeglib.h, which uses FILE */

#include <jpeglib.h>
#include <png.h>
#include <setjmp.h>
#include <stdlib.h>
#include <string.h>

typedef struct membuf {
  uint8_t *data;
  size_t len, cap;
  int oom;
} membuf;

static void png_write_mem(png_structp png, png_bytep data, png_size_t n) {
  membuf *m = png_get_io_ptr(png);
  if (m->oom) return;
  if (m->len + n > m->cap) {
    size_t cap = (m->len + n) * 2;
    uint8_t *d = realloc(m->data, cap);
    if (!d) {
      m->oom = 1;
      return;
    }
    m->data = d, m->cap = cap;
  }
  memcpy(m->data + m->len, data, n);
  m->len += n;
}

static void png_flush_mem(png_structp png) { (void)png; }

int image_encode_png(const rgb_image *img, uint8_t **out, size_t *len, taca_error *err) {
  png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, NULL, NULL, NULL);
  png_infop info = png ? png_create_info_struct(png) : NULL;
  if (!info) {
    png_destroy_write_struct(&png, NULL);
    return taca_fail(err, "png: out of memory");
  }
  membuf m = {0};
  if (setjmp(png_jmpbuf(png))) {
    png_destroy_write_struct(&png, &info);
    free(m.data);
    return taca_fail(err, "png: encoding failed");
  }
  png_set_write_fn(png, &m, png_write_mem, png_flush_mem);
  png_set_IHDR(png, info, img->width, img->height, 8, PNG_COLOR_TYPE_RGB, PNG_INTERLACE_NONE,
               PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
  png_write_info(png, info);
  for (int y = 0; y < img->height; y++) png_write_row(png, img->rgb + (size_t)y * img->width * 3);
  png_write_end(png, NULL);
  png_destroy_write_struct(&png, &info);
  if (m.oom) {
    free(m.data);
    return taca_fail(err, "png: out of memory");
  }
  *out = m.data, *len = m.len;
  return 0;
}

typedef struct jpeg_err {
  struct jpeg_error_mgr pub;
  jmp_buf jb;
  char msg[JMSG_LENGTH_MAX];
} jpeg_err;

static void jpeg_error_exit(j_common_ptr cinfo) {
  jpeg_err *e = (jpeg_err *)cinfo->err;
  (*cinfo->err->format_message)(cinfo, e->msg);
  longjmp(e->jb, 1);
}

int image_encode_jpeg(const rgb_image *img, int quality, uint8_t **out, size_t *len, taca_error *err) {
  if (quality < 1 || quality > 100) return taca_fail(err, "jpeg: quality %d outside 1..100", quality);
  struct jpeg_compress_struct c;
  jpeg_err je;
  unsigned char *buf = NULL;
  unsigned long size = 0;
  c.err = jpeg_std_error(&je.pub);
  je.pub.error_exit = jpeg_error_exit;
  if (setjmp(je.jb)) {
    jpeg_destroy_compress(&c);
    free(buf);
    return taca_fail(err, "jpeg: %s", je.msg);
  }
  jpeg_create_compress(&c);
  jpeg_mem_dest(&c, &buf, &size);
  c.image_width = (JDIMENSION)img->width;
  c.image_height = (JDIMENSION)img->height;
  c.input_components = 3;
  c.in_color_space = JCS_RGB;
  jpeg_set_defaults(&c);
  jpeg_set_quality(&c, quality, TRUE);
  if (quality > 90) /* no chroma subsampling for high-quality re-encodes of preprocessed crops */
    for (int i = 0; i < c.num_components; i++) c.comp_info[i].h_samp_factor = c.comp_info[i].v_samp_factor = 1;
  jpeg_start_compress(&c, TRUE);
  while (c.next_scanline < c.image_height) {
    JSAMPROW row = img->rgb + (size_t)c.next_scanline * img->width * 3;
    jpeg_write_scanlines(&c, &row, 1);
  }
  jpeg_finish_compress(&c);
  jpeg_destroy_compress(&c);
  *out = buf, *len = size;
  return 0;
}
