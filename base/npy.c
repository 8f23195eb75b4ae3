/* npy.c: NumPy .npy reader and atomic writer (see npy.h).
 *
 * The header is a Python dict literal, e.g. {'descr': '<f4', 'fortran_order': False, 'shape': (3, 4), }
 * padded with spaces and a final newline. The parser below reads exactly that subset of Python literal
 * syntax (strings, True/False, tuples of integers), requires the three keys numpy requires and no
 * others, and refuses everything else with a reason. The writer produces the bytes numpy 1.24's
 * np.save writes for the same array. */
#include "base/npy.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/atomicfile.h"
#include "base/mapfile.h"

static const char NPY_MAGIC[6] = {'\x93', 'N', 'U', 'M', 'P', 'Y'};

/* descr without its byte-order mark, e.g. "f4" */
static const struct {
  const char *code;
  taca_dtype dt;
} npy_codes[] = {
    {"b1", TACA_DT_BOOL}, {"u1", TACA_DT_U8},  {"i1", TACA_DT_I8},  {"i2", TACA_DT_I16},
    {"u2", TACA_DT_U16},  {"i4", TACA_DT_I32}, {"u4", TACA_DT_U32}, {"i8", TACA_DT_I64},
    {"u8", TACA_DT_U64},  {"f2", TACA_DT_F16}, {"f4", TACA_DT_F32}, {"f8", TACA_DT_F64},
};
#define N_CODES (sizeof npy_codes / sizeof npy_codes[0])

/* ---- header parsing ---- */

typedef struct hparser {
  const char *p, *end;
  taca_error *err;
} hparser;

static void skip_ws(hparser *h) {
  while (h->p < h->end && (*h->p == ' ' || *h->p == '\t' || *h->p == '\n' || *h->p == '\r')) h->p++;
}

static int expect(hparser *h, char c) {
  skip_ws(h);
  if (h->p >= h->end)
    return taca_fail(h->err, "header: expected '%c' but the header ends", c);
  unsigned char got = (unsigned char)*h->p;
  if (got != (unsigned char)c) {
    if (got < 0x20 || got >= 0x7F)
      return taca_fail(h->err, "header: expected '%c' but found byte 0x%02x", c, got);
    return taca_fail(h->err, "header: expected '%c' but found '%c'", c, got);
  }
  h->p++;
  return 0;
}

/* A quoted string without escapes; copied (truncated) into out. */
static int parse_string(hparser *h, char *out, size_t cap) {
  skip_ws(h);
  if (h->p >= h->end || (*h->p != '\'' && *h->p != '"'))
    return taca_fail(h->err, "header: expected a quoted string");
  char q = *h->p++;
  size_t n = 0;
  while (h->p < h->end && *h->p != q) {
    if (*h->p == '\\') return taca_fail(h->err, "header: escape sequences are not supported");
    if (*h->p == '\n') return taca_fail(h->err, "header: newline inside a string");
    if (n + 1 < cap) out[n++] = *h->p;
    else return taca_fail(h->err, "header: string too long");
    h->p++;
  }
  if (h->p >= h->end) return taca_fail(h->err, "header: unterminated string");
  h->p++;
  out[n] = 0;
  return 0;
}

static int parse_bool(hparser *h, int *out) {
  skip_ws(h);
  size_t left = (size_t)(h->end - h->p);
  if (left >= 4 && memcmp(h->p, "True", 4) == 0) {
    h->p += 4;
    *out = 1;
    return 0;
  }
  if (left >= 5 && memcmp(h->p, "False", 5) == 0) {
    h->p += 5;
    *out = 0;
    return 0;
  }
  return taca_fail(h->err, "header: 'fortran_order' is not True or False");
}

/* A tuple of non-negative integers, e.g. (), (5,), (3, 4). A one-element tuple needs its comma. */
static int parse_shape(hparser *h, int64_t *shape, int *ndim) {
  if (expect(h, '(') < 0) return -1;
  int n = 0, trailing_comma = 0;
  for (;;) {
    skip_ws(h);
    if (h->p < h->end && *h->p == ')') {
      h->p++;
      break;
    }
    if (h->p < h->end && *h->p == '-') return taca_fail(h->err, "header: shape has a negative dimension");
    if (h->p >= h->end || *h->p < '0' || *h->p > '9')
      return taca_fail(h->err, "header: shape is not a tuple of integers");
    uint64_t v = 0;
    while (h->p < h->end && *h->p >= '0' && *h->p <= '9') {
      unsigned dig = (unsigned)(*h->p - '0');
      if (v > ((uint64_t)INT64_MAX - dig) / 10)
        return taca_fail(h->err, "header: shape dimension overflows 64 bits");
      v = v * 10 + dig;
      h->p++;
    }
    if (h->p < h->end && *h->p == 'L') h->p++; /* Python 2 long suffix */
    if (n == NPY_MAX_DIMS)
      return taca_fail(h->err, "header: shape has more than %d dimensions", NPY_MAX_DIMS);
    shape[n++] = (int64_t)v;
    skip_ws(h);
    trailing_comma = 0;
    if (h->p < h->end && *h->p == ',') {
      h->p++;
      trailing_comma = 1;
      continue;
    }
    if (expect(h, ')') < 0) return -1;
    break;
  }
  if (n == 1 && !trailing_comma) return taca_fail(h->err, "header: shape '(N)' is not a tuple (need '(N,)')");
  *ndim = n;
  return 0;
}

typedef struct npy_header {
  taca_dtype dtype;
  int ndim;
  int64_t shape[NPY_MAX_DIMS];
  size_t numel, nbytes;
  size_t data_off; /* where the data begins */
} npy_header;

static int parse_descr(const char *d, taca_dtype *dt, taca_error *err) {
  char bo = d[0];
  if (bo != '<' && bo != '>' && bo != '|' && bo != '=')
    return taca_fail(err, "header: descr '%s' has no byte-order mark", d);
  for (size_t i = 0; i < N_CODES; i++) {
    if (strcmp(d + 1, npy_codes[i].code) != 0) continue;
    if (bo == '>' && taca_dtype_size(npy_codes[i].dt) > 1)
      return taca_fail(err, "big-endian dtype '%s' is not supported (use '<')", d);
    *dt = npy_codes[i].dt;
    return 0;
  }
  if (strcmp(d + 1, "O") == 0) return taca_fail(err, "object arrays ('%s') are not supported", d);
  return taca_fail(err, "unsupported dtype '%s'", d);
}

/* Parses the dict text [p, end). */
static int parse_dict(const char *p, const char *end, npy_header *hd, taca_error *err) {
  hparser h = {p, end, err};
  int have_descr = 0, have_fortran = 0, have_shape = 0, fortran = 0;
  char descr[32] = "";
  if (expect(&h, '{') < 0) return -1;
  for (;;) {
    skip_ws(&h);
    if (h.p < h.end && *h.p == '}') {
      h.p++;
      break;
    }
    char key[32];
    if (parse_string(&h, key, sizeof key) < 0) return -1;
    if (expect(&h, ':') < 0) return -1;
    if (strcmp(key, "descr") == 0) {
      if (have_descr) return taca_fail(err, "header: duplicate key 'descr'");
      skip_ws(&h);
      if (h.p < h.end && *h.p == '[')
        return taca_fail(err, "structured dtypes (a list descr) are not supported");
      if (parse_string(&h, descr, sizeof descr) < 0) return -1;
      have_descr = 1;
    } else if (strcmp(key, "fortran_order") == 0) {
      if (have_fortran) return taca_fail(err, "header: duplicate key 'fortran_order'");
      if (parse_bool(&h, &fortran) < 0) return -1;
      have_fortran = 1;
    } else if (strcmp(key, "shape") == 0) {
      if (have_shape) return taca_fail(err, "header: duplicate key 'shape'");
      if (parse_shape(&h, hd->shape, &hd->ndim) < 0) return -1;
      have_shape = 1;
    } else {
      return taca_fail(err, "header: unexpected key '%s'", key);
    }
    skip_ws(&h);
    if (h.p < h.end && *h.p == ',') {
      h.p++;
      continue;
    }
    if (expect(&h, '}') < 0) return -1;
    break;
  }
  skip_ws(&h);
  if (h.p != h.end) return taca_fail(err, "header: unexpected text after the dict");
  if (!have_descr || !have_fortran || !have_shape)
    return taca_fail(err, "header: missing key '%s'",
                     !have_descr ? "descr" : !have_fortran ? "fortran_order" : "shape");
  if (fortran) return taca_fail(err, "Fortran-order arrays are not supported (save C order)");
  if (parse_descr(descr, &hd->dtype, err) < 0) return -1;
  size_t numel = 1;
  for (int i = 0; i < hd->ndim; i++) {
    uint64_t d = (uint64_t)hd->shape[i];
    if (d != 0 && numel > SIZE_MAX / d) return taca_fail(err, "shape's element count overflows");
    numel *= (size_t)d;
  }
  size_t es = taca_dtype_size(hd->dtype);
  if (numel > SIZE_MAX / es) return taca_fail(err, "shape's byte count overflows");
  hd->numel = numel;
  hd->nbytes = numel * es;
  return 0;
}

/* Validates magic, version and header; len is the whole file. */
static int parse_npy_header(const uint8_t *b, size_t len, npy_header *hd, taca_error *err) {
  memset(hd, 0, sizeof *hd);
  if (len < 10) return taca_fail(err, "truncated: %zu bytes, shorter than the .npy preamble", len);
  if (memcmp(b, NPY_MAGIC, 6) != 0) return taca_fail(err, "not a .npy file (bad magic)");
  unsigned major = b[6], minor = b[7];
  size_t hlen, pre;
  if (major == 1) {
    hlen = (size_t)b[8] | (size_t)b[9] << 8;
    pre = 10;
  } else if (major == 2 || major == 3) {
    if (len < 12) return taca_fail(err, "truncated: %zu bytes, shorter than the v%u preamble", len, major);
    hlen = (size_t)b[8] | (size_t)b[9] << 8 | (size_t)b[10] << 16 | (size_t)b[11] << 24;
    pre = 12;
  } else {
    return taca_fail(err, "unsupported .npy format version %u.%u", major, minor);
  }
  if (minor != 0) return taca_fail(err, "unsupported .npy format version %u.%u", major, minor);
  if (hlen > len - pre)
    return taca_fail(err, "truncated: header length %zu but only %zu bytes follow", hlen, len - pre);
  if (parse_dict((const char *)b + pre, (const char *)b + pre + hlen, hd, err) < 0) return -1;
  hd->data_off = pre + hlen;
  size_t have = len - hd->data_off;
  if (have != hd->nbytes)
    return taca_fail(err, "data is %zu bytes but shape and dtype %s need %zu (%s)", have,
                     taca_dtype_name(hd->dtype), hd->nbytes, have < hd->nbytes ? "truncated" : "trailing bytes");
  return 0;
}

int npy_parse(const void *buf, size_t len, npy_array *out, taca_error *err) {
  memset(out, 0, sizeof *out);
  npy_header hd;
  if (parse_npy_header(buf, len, &hd, err) < 0) {
    /* quoted header text may hold control characters: keep the reason on one printable line */
    if (err)
      for (char *c = err->msg; *c; c++)
        if ((unsigned char)*c < 0x20 || *c == 0x7F) *c = '?';
    return -1;
  }
  void *data = NULL;
  if (posix_memalign(&data, 64, hd.nbytes ? hd.nbytes : 64) != 0)
    return taca_fail(err, "out of memory for %zu bytes", hd.nbytes);
  if (hd.nbytes) memcpy(data, (const uint8_t *)buf + hd.data_off, hd.nbytes);
  out->dtype = hd.dtype;
  out->ndim = hd.ndim;
  memcpy(out->shape, hd.shape, sizeof hd.shape);
  out->numel = hd.numel;
  out->data = data;
  return 0;
}

int npy_load(const char *path, npy_array *out, taca_error *err) {
  memset(out, 0, sizeof *out);
  void *map;
  size_t size;
  if (taca_map_file(path, 10, "the .npy preamble", &map, &size, err)) return -1;
  int rc = npy_parse(map, size, out, err);
  taca_unmap_file(map, size);
  if (rc < 0) return taca_error_prefix(err, "%s", path);
  return 0;
}

int npy_map(const char *path, npy_view *out, taca_error *err) {
  memset(out, 0, sizeof *out);
  void *map;
  size_t size;
  if (taca_map_file(path, 10, "the .npy preamble", &map, &size, err)) return -1;
  npy_header hd;
  if (parse_npy_header(map, size, &hd, err) < 0) {
    taca_unmap_file(map, size);
    if (err)
      for (char *c = err->msg; *c; c++)
        if ((unsigned char)*c < 0x20 || *c == 0x7F) *c = '?';
    return taca_error_prefix(err, "%s", path);
  }
  out->dtype = hd.dtype;
  out->ndim = hd.ndim;
  memcpy(out->shape, hd.shape, sizeof out->shape);
  out->numel = hd.numel;
  out->data = (const uint8_t *)map + hd.data_off;
  out->map_ = map;
  out->map_size_ = size;
  return 0;
}

void npy_unmap(npy_view *v) {
  if (v->map_) taca_unmap_file(v->map_, v->map_size_);
  memset(v, 0, sizeof *v);
}

int npy_load_f32_matrix(const char *path, npy_array *out, taca_error *err) {
  npy_array a;
  if (npy_load(path, &a, err) < 0) {
    memset(out, 0, sizeof *out);
    return -1;
  }
  memset(out, 0, sizeof *out);
  int ndim = a.ndim;
  taca_dtype dt = a.dtype;
  if (ndim != 1 && ndim != 2) {
    npy_free(&a);
    return taca_fail(err, "%s: expected a 1-D or 2-D array, got %d-D", path, ndim);
  }
  if (!taca_dtype_is_float(dt)) {
    npy_free(&a);
    return taca_fail(err, "%s: expected a float array, got %s", path, taca_dtype_name(dt));
  }
  if (a.ndim == 1) {
    a.shape[1] = a.shape[0];
    a.shape[0] = 1;
    a.ndim = 2;
  }
  if (a.dtype != TACA_DT_F32) {
    void *f = NULL;
    if (posix_memalign(&f, 64, a.numel ? a.numel * sizeof(float) : 64) != 0) {
      npy_free(&a);
      return taca_fail(err, "%s: out of memory", path);
    }
    taca_convert_to_f32(f, a.data, a.dtype, a.numel);
    free(a.data);
    a.data = f;
    a.dtype = TACA_DT_F32;
  }
  *out = a;
  return 0;
}

void npy_free(npy_array *a) {
  if (!a) return;
  free(a->data);
  memset(a, 0, sizeof *a);
}

/* ---- writer ---- */

#define NPY_ALIGN 64
#define GROWTH_AXIS_MAX_DIGITS 21 /* numpy pads the header so the first axis can grow in place */

int npy_save(const char *path, taca_dtype dtype, int ndim, const int64_t *shape, const void *data,
             taca_error *err) {
  const char *code = NULL;
  for (size_t i = 0; i < N_CODES; i++)
    if (npy_codes[i].dt == dtype) code = npy_codes[i].code;
  if (!code) return taca_fail(err, "%s: dtype %s has no .npy equivalent", path, taca_dtype_name(dtype));
  if (ndim < 0 || ndim > NPY_MAX_DIMS)
    return taca_fail(err, "%s: ndim %d outside [0, %d]", path, ndim, NPY_MAX_DIMS);
  size_t es = taca_dtype_size(dtype), numel = 1;
  for (int i = 0; i < ndim; i++) {
    if (shape[i] < 0) return taca_fail(err, "%s: negative shape[%d] = %lld", path, i, (long long)shape[i]);
    uint64_t d = (uint64_t)shape[i];
    if (d != 0 && numel > SIZE_MAX / d) return taca_fail(err, "%s: shape overflows", path);
    numel *= (size_t)d;
  }
  if (numel > SIZE_MAX / es) return taca_fail(err, "%s: shape overflows", path);
  size_t nbytes = numel * es;
  if (nbytes && !data) return taca_fail(err, "%s: NULL data", path);

  /* "{'descr': '<f4', 'fortran_order': False, 'shape': (3, 4), }" + growth padding */
  char dict[512];
  int n = snprintf(dict, sizeof dict, "{'descr': '%c%s', 'fortran_order': False, 'shape': (",
                   es == 1 ? '|' : '<', code);
  for (int i = 0; i < ndim; i++)
    n += snprintf(dict + n, sizeof dict - (size_t)n, i ? ", %lld" : "%lld", (long long)shape[i]);
  n += snprintf(dict + n, sizeof dict - (size_t)n, "%s), }", ndim == 1 ? "," : "");
  if (ndim > 0) {
    int digits = snprintf(NULL, 0, "%lld", (long long)shape[0]);
    for (int i = digits; i < GROWTH_AXIS_MAX_DIGITS; i++) dict[n++] = ' ';
  }
  /* version 1 has a 2-byte length; numpy pads to a multiple of 64 with spaces and ends with '\n' */
  size_t dlen = (size_t)n + 1, pre = 10;
  size_t pad = NPY_ALIGN - (pre + dlen) % NPY_ALIGN;
  int major = 1;
  if (dlen + pad > 65535) {
    major = 2;
    pre = 12;
    pad = NPY_ALIGN - (pre + dlen) % NPY_ALIGN;
  }
  size_t hlen = dlen + pad;
  size_t total = pre + hlen;
  uint8_t *hdr = malloc(total);
  if (!hdr) return taca_fail(err, "%s: out of memory", path);
  memcpy(hdr, NPY_MAGIC, 6);
  hdr[6] = (uint8_t)major;
  hdr[7] = 0;
  for (size_t i = 0; i < pre - 8; i++) hdr[8 + i] = (uint8_t)(hlen >> (8 * i));
  memcpy(hdr + pre, dict, (size_t)n);
  memset(hdr + pre + n, ' ', pad);
  hdr[total - 1] = '\n';
  taca_chunk chunks[2] = {{hdr, total}, {data, nbytes}};
  int rc = taca_write_file_atomic(path, chunks, 2, err);
  free(hdr);
  return rc;
}
