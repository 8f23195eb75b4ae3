/* safetensors.c: strict safetensors reader (mmap, zero-copy) and atomic writer (see safetensors.h).
 *
 * The reader applies the reference implementation's rules (huggingface/safetensors, tensor.rs
 * `read_metadata` + `validate`) and refuses anything else with a one-line reason. Unknown keys
 * inside a tensor entry are ignored, as serde does there. */
#include "base/safetensors.h"

#include <errno.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "base/atomicfile.h"
#include "base/mapfile.h"

#define ST_MAX_HEADER 100000000ull
#define NAME_FMT "'%.200s'"

static uint64_t le64(const uint8_t *p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; i--) v = (v << 8) | p[i];
  return v;
}

/* Names and JSON text may hold control characters: keep the reason on one printable line. */
static int one_line(taca_error *err) {
  if (err)
    for (char *c = err->msg; *c; c++)
      if ((unsigned char)*c < 0x20 || *c == 0x7F) *c = '?';
  return -1;
}

static void st_free_contents(st_file *f) {
  for (int i = 0; i < f->n; i++) free(f->tensors[i].name);
  free(f->tensors);
  for (int i = 0; i < f->n_meta; i++) {
    free(f->meta_keys[i]);
    free(f->meta_values[i]);
  }
  free(f->meta_keys);
  free(f->meta_values);
}

void st_close(st_file *f) {
  if (!f) return;
  st_free_contents(f);
  taca_unmap_file(f->map, f->map_size);
  memset(f, 0, sizeof *f);
}

/* Reads a JSON integer that must be >= 0 into *out. */
static int json_u64(const json_t *v, uint64_t *out) {
  if (!json_is_integer(v)) return -1;
  json_int_t x = json_integer_value(v);
  if (x < 0) return -1;
  *out = (uint64_t)x;
  return 0;
}

static int parse_metadata(st_file *f, json_t *meta, taca_error *err) {
  if (json_is_null(meta)) return 0;
  if (!json_is_object(meta)) return taca_fail(err, "__metadata__ is not an object");
  size_t cnt = json_object_size(meta);
  f->meta_keys = calloc(cnt ? cnt : 1, sizeof(char *));
  f->meta_values = calloc(cnt ? cnt : 1, sizeof(char *));
  if (!f->meta_keys || !f->meta_values) return taca_fail(err, "out of memory");
  const char *key;
  json_t *val;
  json_object_foreach(meta, key, val) {
    if (!json_is_string(val))
      return taca_fail(err, "__metadata__ value for key " NAME_FMT " is not a string", key);
    char *k = strdup(key), *v = strdup(json_string_value(val));
    if (!k || !v) {
      free(k);
      free(v);
      return taca_fail(err, "out of memory");
    }
    f->meta_keys[f->n_meta] = k;
    f->meta_values[f->n_meta] = v;
    f->n_meta++;
  }
  return 0;
}

/* Parses one tensor entry; begin/end are the data_offsets. */
static int parse_entry(st_tensor *t, const char *name, json_t *e, uint64_t *begin, uint64_t *end,
                       taca_error *err) {
  if (!json_is_object(e)) return taca_fail(err, "tensor " NAME_FMT ": entry is not an object", name);

  json_t *jd = json_object_get(e, "dtype");
  if (!jd) return taca_fail(err, "tensor " NAME_FMT ": missing \"dtype\"", name);
  if (!json_is_string(jd)) return taca_fail(err, "tensor " NAME_FMT ": \"dtype\" is not a string", name);
  t->dtype = taca_dtype_from_name(json_string_value(jd));
  if (t->dtype == TACA_DT_INVALID)
    return taca_fail(err, "tensor " NAME_FMT ": unknown or unsupported dtype '%.40s'", name,
                     json_string_value(jd));

  json_t *js = json_object_get(e, "shape");
  if (!js) return taca_fail(err, "tensor " NAME_FMT ": missing \"shape\"", name);
  if (!json_is_array(js)) return taca_fail(err, "tensor " NAME_FMT ": \"shape\" is not an array", name);
  size_t nd = json_array_size(js);
  if (nd > ST_MAX_DIMS)
    return taca_fail(err, "tensor " NAME_FMT ": shape has %zu dims, at most %d supported", name, nd,
                     ST_MAX_DIMS);
  t->ndim = (int)nd;
  size_t numel = 1;
  for (size_t i = 0; i < nd; i++) {
    uint64_t d;
    if (json_u64(json_array_get(js, i), &d) < 0)
      return taca_fail(err, "tensor " NAME_FMT ": shape[%zu] is not a non-negative integer", name, i);
    t->shape[i] = (int64_t)d;
    if (d != 0 && numel > SIZE_MAX / d)
      return taca_fail(err, "tensor " NAME_FMT ": shape overflows the element count", name);
    numel *= (size_t)d;
  }
  size_t esize = taca_dtype_size(t->dtype);
  if (numel > SIZE_MAX / esize)
    return taca_fail(err, "tensor " NAME_FMT ": shape overflows the byte count", name);
  t->numel = numel;
  t->nbytes = numel * esize;

  json_t *jo = json_object_get(e, "data_offsets");
  if (!jo) return taca_fail(err, "tensor " NAME_FMT ": missing \"data_offsets\"", name);
  if (!json_is_array(jo) || json_array_size(jo) != 2 || json_u64(json_array_get(jo, 0), begin) < 0 ||
      json_u64(json_array_get(jo, 1), end) < 0)
    return taca_fail(err, "tensor " NAME_FMT ": \"data_offsets\" is not two non-negative integers", name);
  if (*begin > *end)
    return taca_fail(err, "tensor " NAME_FMT ": data_offsets [%llu, %llu] begin > end", name,
                     (unsigned long long)*begin, (unsigned long long)*end);
  if (*end - *begin != (uint64_t)t->nbytes)
    return taca_fail(err,
                     "tensor " NAME_FMT ": data_offsets [%llu, %llu] hold %llu bytes but %s shape needs %zu",
                     name, (unsigned long long)*begin, (unsigned long long)*end,
                     (unsigned long long)(*end - *begin), taca_dtype_name(t->dtype), t->nbytes);
  return 0;
}

typedef struct span {
  uint64_t begin, end;
  int idx;
} span;

static int span_cmp(const void *a, const void *b) {
  const span *x = a, *y = b;
  if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
  if (x->end != y->end) return x->end < y->end ? -1 : 1;
  return x->idx - y->idx;
}

static int parse_header(st_file *f, json_t *root, const uint8_t *data, size_t data_len,
                        taca_error *err) {
  if (!json_is_object(root)) return taca_fail(err, "header is not a JSON object");
  size_t cnt = json_object_size(root);
  f->tensors = calloc(cnt ? cnt : 1, sizeof(st_tensor));
  span *spans = calloc(cnt ? cnt : 1, sizeof(span));
  if (!f->tensors || !spans) {
    free(spans);
    return taca_fail(err, "out of memory");
  }
  int rc = -1;
  const char *key;
  json_t *val;
  json_object_foreach(root, key, val) {
    if (strcmp(key, "__metadata__") == 0) {
      if (parse_metadata(f, val, err) < 0) goto out;
      continue;
    }
    st_tensor *t = &f->tensors[f->n];
    if (!(t->name = strdup(key))) {
      taca_fail(err, "out of memory");
      goto out;
    }
    f->n++;
    spans[f->n - 1].idx = f->n - 1;
    if (parse_entry(t, key, val, &spans[f->n - 1].begin, &spans[f->n - 1].end, err) < 0) goto out;
  }

  qsort(spans, (size_t)f->n, sizeof(span), span_cmp);
  uint64_t pos = 0;
  for (int i = 0; i < f->n; i++) {
    const char *name = f->tensors[spans[i].idx].name;
    if (spans[i].begin != pos) {
      taca_fail(err, "tensor " NAME_FMT ": data_offsets [%llu, %llu] %s: expected it to begin at %llu",
                name, (unsigned long long)spans[i].begin, (unsigned long long)spans[i].end,
                spans[i].begin > pos ? "leave a gap" : "overlap another tensor",
                (unsigned long long)pos);
      goto out;
    }
    if (spans[i].end > data_len) {
      taca_fail(err, "tensor " NAME_FMT ": data_offsets [%llu, %llu] out of range (buffer is %zu bytes)",
                name, (unsigned long long)spans[i].begin, (unsigned long long)spans[i].end, data_len);
      goto out;
    }
    pos = spans[i].end;
    f->tensors[spans[i].idx].data = data + spans[i].begin;
  }
  if (pos != data_len) {
    taca_fail(err, "buffer is %zu bytes but the tensors cover %llu (trailing bytes)", data_len,
              (unsigned long long)pos);
    goto out;
  }
  rc = 0;
out:
  free(spans);
  return rc;
}

int st_parse(st_file *f, const void *buf, size_t len, taca_error *err) {
  memset(f, 0, sizeof *f);
  const uint8_t *p = buf;
  if (len < 8) return taca_fail(err, "truncated: %zu bytes, shorter than the 8-byte header length", len);
  uint64_t n = le64(p);
  if (n > ST_MAX_HEADER) /* e.g. a zip, a pickle, an image: their first bytes make a huge length */
    return taca_fail(err, "not a safetensors file (its first 8 bytes, read as the header length, give %llu, "
                     "over the limit of %llu bytes)", (unsigned long long)n, ST_MAX_HEADER);
  if (n > len - 8)
    return taca_fail(err, "truncated: header length is %llu but only %zu bytes follow it",
                     (unsigned long long)n, len - 8);
  json_error_t je;
  json_t *root = json_loadb((const char *)p + 8, (size_t)n, JSON_REJECT_DUPLICATES, &je);
  if (!root) {
    if (n > 0 && p[8] != '{' && p[8] != ' ')
      return taca_fail(err, "not a safetensors file (no JSON header after the 8-byte header length)");
    taca_fail(err, "header is not valid JSON: %s (line %d, column %d)", je.text, je.line, je.column);
    return one_line(err);
  }
  int rc = parse_header(f, root, p + 8 + n, len - 8 - (size_t)n, err);
  json_decref(root);
  if (rc < 0) {
    st_free_contents(f);
    memset(f, 0, sizeof *f);
    return one_line(err);
  }
  return 0;
}

int st_open(st_file *f, const char *path, taca_error *err) {
  memset(f, 0, sizeof *f);
  void *map;
  size_t size;
  if (taca_map_file(path, 8, "the 8-byte header length", &map, &size, err)) return -1;
  if (st_parse(f, map, size, err) < 0) {
    taca_unmap_file(map, size);
    return taca_error_prefix(err, "%s", path);
  }
  f->map = map;
  f->map_size = size;
  return 0;
}

const st_tensor *st_find(const st_file *f, const char *name) {
  for (int i = 0; i < f->n; i++)
    if (strcmp(f->tensors[i].name, name) == 0) return &f->tensors[i];
  return NULL;
}

const char *st_meta(const st_file *f, const char *key) {
  for (int i = 0; i < f->n_meta; i++)
    if (strcmp(f->meta_keys[i], key) == 0) return f->meta_values[i];
  return NULL;
}

const float *st_f32_view(const st_tensor *t) {
  if (t->dtype != TACA_DT_F32 || ((uintptr_t)t->data & 3u)) return NULL;
  return t->data;
}

int st_read_f32_exact(const st_file *f, const char *name, size_t n, float *dst, taca_error *err) {
  const st_tensor *t = st_find(f, name);
  if (!t || t->dtype != TACA_DT_F32 || t->numel != n)
    return taca_fail(err, "%s: %s, expected F32 x %zu (a checkpoint of another model?)", name,
                     t ? "has another size or type" : "missing", n);
  memcpy(dst, t->data, sizeof(float) * n);
  return 0;
}

int st_meta_count(const st_file *f, const char *key, long *out, taca_error *err) {
  const char *s = st_meta(f, key);
  char *end = NULL;
  errno = 0;
  long v = s ? strtol(s, &end, 10) : -1;
  if (!s || end == s || *end || errno || v < 0)
    return taca_fail(err, "metadata '%s' is %s%s%s, expected a count >= 0", key, s ? "'" : "missing", s ? s : "",
                     s ? "'" : "");
  *out = v;
  return 0;
}

int st_to_f32(const st_tensor *t, float *dst, taca_error *err) {
  if (taca_convert_to_f32(dst, t->data, t->dtype, t->numel) < 0) {
    taca_fail(err, "tensor " NAME_FMT ": dtype %s is not a float dtype", t->name, taca_dtype_name(t->dtype));
    return one_line(err);
  }
  return 0;
}

/* ---- writer ---- */

typedef struct wtensor {
  char *name;
  taca_dtype dtype;
  int ndim;
  int64_t shape[ST_MAX_DIMS];
  size_t nbytes;
  const void *data;
} wtensor;

struct st_writer {
  wtensor *t;
  int n, cap;
  char **mk, **mv;
  int n_meta, cap_meta;
};

st_writer *st_writer_new(void) { return calloc(1, sizeof(st_writer)); }

void st_writer_free(st_writer *w) {
  if (!w) return;
  for (int i = 0; i < w->n; i++) free(w->t[i].name);
  free(w->t);
  for (int i = 0; i < w->n_meta; i++) {
    free(w->mk[i]);
    free(w->mv[i]);
  }
  free(w->mk);
  free(w->mv);
  free(w);
}

/* 1 if s is valid UTF-8 that JSON can carry (jansson refuses anything else). */
static int utf8_ok(const char *s) {
  json_t *j = json_string(s);
  if (!j) return 0;
  json_decref(j);
  return 1;
}

static int writer_add(st_writer *w, const char *name, taca_dtype dtype, int ndim, const int64_t *shape,
                      const void *data, taca_error *err);

int st_writer_add(st_writer *w, const char *name, taca_dtype dtype, int ndim, const int64_t *shape,
                  const void *data, taca_error *err) {
  if (writer_add(w, name, dtype, ndim, shape, data, err) < 0) return one_line(err);
  return 0;
}

static int writer_add(st_writer *w, const char *name, taca_dtype dtype, int ndim, const int64_t *shape,
                      const void *data, taca_error *err) {
  if (!name) return taca_fail(err, "st_writer_add: NULL tensor name");
  if (strcmp(name, "__metadata__") == 0)
    return taca_fail(err, "st_writer_add: '__metadata__' is reserved, not a tensor name");
  if (!utf8_ok(name)) return taca_fail(err, "st_writer_add: tensor name is not valid UTF-8");
  for (int i = 0; i < w->n; i++)
    if (strcmp(w->t[i].name, name) == 0)
      return taca_fail(err, "st_writer_add: duplicate tensor " NAME_FMT, name);
  size_t esize = taca_dtype_size(dtype);
  if (!esize) return taca_fail(err, "st_writer_add: tensor " NAME_FMT ": invalid dtype", name);
  if (ndim < 0 || ndim > ST_MAX_DIMS)
    return taca_fail(err, "st_writer_add: tensor " NAME_FMT ": ndim %d outside [0, %d]", name, ndim,
                     ST_MAX_DIMS);
  size_t numel = 1;
  for (int i = 0; i < ndim; i++) {
    if (shape[i] < 0)
      return taca_fail(err, "st_writer_add: tensor " NAME_FMT ": negative shape[%d] = %lld", name, i,
                       (long long)shape[i]);
    uint64_t d = (uint64_t)shape[i];
    if (d != 0 && numel > SIZE_MAX / d)
      return taca_fail(err, "st_writer_add: tensor " NAME_FMT ": shape overflows", name);
    numel *= (size_t)d;
  }
  if (numel > SIZE_MAX / esize) return taca_fail(err, "st_writer_add: tensor " NAME_FMT ": shape overflows", name);
  if (numel && !data) return taca_fail(err, "st_writer_add: tensor " NAME_FMT ": NULL data", name);
  if (w->n == w->cap) {
    int cap = w->cap ? 2 * w->cap : 16;
    wtensor *t = realloc(w->t, (size_t)cap * sizeof *t);
    if (!t) return taca_fail(err, "st_writer_add: out of memory");
    w->t = t;
    w->cap = cap;
  }
  wtensor *t = &w->t[w->n];
  memset(t, 0, sizeof *t);
  if (!(t->name = strdup(name))) return taca_fail(err, "st_writer_add: out of memory");
  t->dtype = dtype;
  t->ndim = ndim;
  for (int i = 0; i < ndim; i++) t->shape[i] = shape[i];
  t->nbytes = numel * esize;
  t->data = data;
  w->n++;
  return 0;
}

int st_writer_meta(st_writer *w, const char *key, const char *value, taca_error *err) {
  if (!key || !value) return taca_fail(err, "st_writer_meta: NULL key or value");
  for (int i = 0; i < w->n_meta; i++)
    if (strcmp(w->mk[i], key) == 0) {
      taca_fail(err, "st_writer_meta: duplicate key " NAME_FMT, key);
      return one_line(err);
    }
  if (!utf8_ok(key) || !utf8_ok(value))
    return taca_fail(err, "st_writer_meta: key or value is not valid UTF-8");
  if (w->n_meta == w->cap_meta) {
    int cap = w->cap_meta ? 2 * w->cap_meta : 8;
    char **mk = realloc(w->mk, (size_t)cap * sizeof *mk);
    if (!mk) return taca_fail(err, "st_writer_meta: out of memory");
    w->mk = mk;
    char **mv = realloc(w->mv, (size_t)cap * sizeof *mv);
    if (!mv) return taca_fail(err, "st_writer_meta: out of memory");
    w->mv = mv;
    w->cap_meta = cap;
  }
  char *k = strdup(key), *v = strdup(value);
  if (!k || !v) {
    free(k);
    free(v);
    return taca_fail(err, "st_writer_meta: out of memory");
  }
  w->mk[w->n_meta] = k;
  w->mv[w->n_meta] = v;
  w->n_meta++;
  return 0;
}

/* Builds the JSON header (metadata first, then tensors in the order added). NULL on failure. */
static json_t *build_header(const st_writer *w) {
  json_t *root = json_object();
  if (!root) return NULL;
  if (w->n_meta) {
    json_t *m = json_object();
    if (json_object_set_new(root, "__metadata__", m) < 0) goto fail;
    for (int i = 0; i < w->n_meta; i++)
      if (json_object_set_new(m, w->mk[i], json_string(w->mv[i])) < 0) goto fail;
  }
  uint64_t off = 0;
  for (int i = 0; i < w->n; i++) {
    const wtensor *t = &w->t[i];
    json_t *e = json_object(), *shape = json_array(), *offs = json_array();
    if (json_object_set_new(root, t->name, e) < 0) {
      json_decref(shape);
      json_decref(offs);
      goto fail;
    }
    if (json_object_set_new(e, "dtype", json_string(taca_dtype_name(t->dtype))) < 0) goto fail;
    if (json_object_set_new(e, "shape", shape) < 0) {
      json_decref(offs);
      goto fail;
    }
    for (int d = 0; d < t->ndim; d++)
      if (json_array_append_new(shape, json_integer((json_int_t)t->shape[d])) < 0) goto fail;
    if (json_object_set_new(e, "data_offsets", offs) < 0) goto fail;
    if (json_array_append_new(offs, json_integer((json_int_t)off)) < 0) goto fail;
    off += t->nbytes;
    if (json_array_append_new(offs, json_integer((json_int_t)off)) < 0) goto fail;
  }
  return root;
fail:
  json_decref(root);
  return NULL;
}

int st_writer_save(st_writer *w, const char *path, taca_error *err) {
  uint64_t total = 0;
  for (int i = 0; i < w->n; i++) {
    if (w->t[i].nbytes > (uint64_t)INT64_MAX - total)
      return taca_fail(err, "%s: tensors total more than 2^63 bytes", path);
    total += w->t[i].nbytes;
  }
  json_t *root = build_header(w);
  if (!root) return taca_fail(err, "%s: cannot build the JSON header (out of memory)", path);
  char *json = json_dumps(root, JSON_COMPACT);
  json_decref(root);
  if (!json) return taca_fail(err, "%s: cannot serialise the JSON header (out of memory)", path);
  size_t jlen = strlen(json), hlen = (jlen + 7) & ~(size_t)7;
  if (hlen > ST_MAX_HEADER) {
    free(json);
    return taca_fail(err, "%s: header of %zu bytes exceeds the limit of %llu", path, hlen, ST_MAX_HEADER);
  }
  char *hdr = realloc(json, hlen);
  if (!hdr) {
    free(json);
    return taca_fail(err, "%s: out of memory", path);
  }
  memset(hdr + jlen, ' ', hlen - jlen);
  uint8_t lenbuf[8];
  for (int i = 0; i < 8; i++) lenbuf[i] = (uint8_t)((uint64_t)hlen >> (8 * i));

  taca_chunk *chunks = malloc((size_t)(w->n + 2) * sizeof *chunks);
  if (!chunks) {
    free(hdr);
    return taca_fail(err, "%s: out of memory", path);
  }
  chunks[0] = (taca_chunk){lenbuf, 8};
  chunks[1] = (taca_chunk){hdr, hlen};
  for (int i = 0; i < w->n; i++) chunks[i + 2] = (taca_chunk){w->t[i].data, w->t[i].nbytes};
  int rc = taca_write_file_atomic(path, chunks, w->n + 2, err);
  free(chunks);
  free(hdr);
  return rc;
}
