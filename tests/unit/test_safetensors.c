/* test_safetensors.c: the safetensors reader against files written the reference way
 * (tests/fixtures/gen_formats.py), every validation rule with its reason, and the writer: byte for
 * byte against the Python-written files, round trips, atomic replacement. */
#include <check.h>
#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/safetensors.h"

#define FIX TACA_FIXTURES_DIR "/formats/"

static char tmpdir[256];

static void setup(void) {
  snprintf(tmpdir, sizeof tmpdir, "/tmp/taca_st_XXXXXX");
  ck_assert_ptr_nonnull(mkdtemp(tmpdir));
}

static void teardown(void) {
  DIR *d = opendir(tmpdir);
  if (d) {
    struct dirent *e;
    char p[512];
    while ((e = readdir(d))) {
      if (e->d_name[0] == '.') continue;
      snprintf(p, sizeof p, "%s/%s", tmpdir, e->d_name);
      if (unlink(p) < 0 && errno == EISDIR) rmdir(p);
    }
    closedir(d);
  }
  rmdir(tmpdir);
}

static unsigned char *read_file(const char *path, size_t *len) {
  FILE *fp = fopen(path, "rb");
  ck_assert_msg(fp != NULL, "cannot open %s", path);
  fseek(fp, 0, SEEK_END);
  long n = ftell(fp);
  fseek(fp, 0, SEEK_SET);
  unsigned char *b = malloc((size_t)n + 1);
  ck_assert_uint_eq(fread(b, 1, (size_t)n, fp), (size_t)n);
  fclose(fp);
  *len = (size_t)n;
  return b;
}

static void assert_same_file(const char *a, const char *b) {
  size_t la, lb;
  unsigned char *x = read_file(a, &la), *y = read_file(b, &lb);
  ck_assert_msg(la == lb, "%s is %zu bytes, %s is %zu", a, la, b, lb);
  ck_assert_msg(memcmp(x, y, la) == 0, "%s and %s differ", a, b);
  free(x);
  free(y);
}

START_TEST(test_read_basic) {
  st_file f;
  taca_error err = {{0}};
  ck_assert_msg(st_open(&f, FIX "st_basic.safetensors", &err) == 0, "%s", err.msg);
  /* header order as written by the reference serializer: alignment descending, then name */
  const char *order[] = {"ids", "f64", "empty", "logit_scale", "w.f32", "w.bf16", "w.f16", "u8", "mask"};
  ck_assert_int_eq(f.n, 9);
  for (int i = 0; i < 9; i++) ck_assert_str_eq(f.tensors[i].name, order[i]);
  ck_assert_int_eq(f.n_meta, 2);
  ck_assert_str_eq(st_meta(&f, "format"), "pt");
  ck_assert_str_eq(st_meta(&f, "note"), "taca fixture");
  ck_assert_ptr_null(st_meta(&f, "absent"));
  ck_assert_ptr_null(st_find(&f, "absent"));
  ck_assert_ptr_nonnull(f.map);

  const st_tensor *t = st_find(&f, "w.f32");
  ck_assert_int_eq(t->dtype, TACA_DT_F32);
  ck_assert_int_eq(t->ndim, 2);
  ck_assert(t->shape[0] == 2 && t->shape[1] == 3 && t->numel == 6 && t->nbytes == 24);
  ck_assert_ptr_eq(st_f32_view(t), t->data); /* padded header: aligned, zero-copy into the map */
  ck_assert((const char *)t->data >= (const char *)f.map &&
            (const char *)t->data + t->nbytes <= (const char *)f.map + f.map_size);

  t = st_find(&f, "logit_scale");
  ck_assert(t->ndim == 0 && t->numel == 1 && t->nbytes == 4);
  ck_assert(fabsf(st_f32_view(t)[0] - 4.6051702f) == 0.0f);
  t = st_find(&f, "empty");
  ck_assert(t->ndim == 2 && t->shape[0] == 0 && t->shape[1] == 4 && t->numel == 0 && t->nbytes == 0);
  t = st_find(&f, "ids");
  ck_assert_int_eq(t->dtype, TACA_DT_I64);
  int64_t ids[3];
  memcpy(ids, t->data, sizeof ids);
  ck_assert(ids[0] == 1 && ids[1] == -2 && ids[2] == 49407);
  t = st_find(&f, "u8");
  ck_assert(t->dtype == TACA_DT_U8 && memcmp(t->data, "\x00\x80\xff", 3) == 0);
  t = st_find(&f, "mask");
  ck_assert(t->dtype == TACA_DT_BOOL && memcmp(t->data, "\x01\x00\x01\x01", 4) == 0);
  ck_assert_ptr_null(st_f32_view(st_find(&f, "w.f16")));
  float tmp[4];
  ck_assert_int_eq(st_to_f32(st_find(&f, "ids"), tmp, &err), -1);
  ck_assert_msg(strstr(err.msg, "'ids'") && strstr(err.msg, "I64"), "%s", err.msg);

  /* every float tensor converts bit for bit as torch's .float() did (st_basic_f32: F32 copies) */
  st_file g;
  ck_assert_msg(st_open(&g, FIX "st_basic_f32.safetensors", &err) == 0, "%s", err.msg);
  ck_assert_int_eq(g.n, 6);
  for (int i = 0; i < g.n; i++) {
    const st_tensor *want = &g.tensors[i], *src = st_find(&f, want->name);
    ck_assert_ptr_nonnull(src);
    ck_assert_uint_eq(src->numel, want->numel);
    float *got = malloc(src->numel * 4 + 4);
    ck_assert_msg(st_to_f32(src, got, &err) == 0, "%s", err.msg);
    ck_assert_msg(memcmp(got, want->data, want->nbytes) == 0, "tensor %s differs from torch", want->name);
    free(got);
  }
  /* and those include the edge cases the generator planted */
  float f16v[5], f64v[4];
  st_to_f32(st_find(&f, "w.f16"), f16v, &err);
  ck_assert(f16v[0] == ldexpf(1, -24) && isinf(f16v[1]) && f16v[1] < 0);
  st_to_f32(st_find(&f, "f64"), f64v, &err);
  ck_assert(isinf(f64v[1]) && fpclassify(f64v[2]) == FP_SUBNORMAL && f64v[2] < 0 && f64v[3] == 65504.0f);
  st_close(&g);
  st_close(&f);
  ck_assert_ptr_null(f.map);
  ck_assert_int_eq(f.n, 0);
  st_close(&f); /* closing twice is harmless */
}
END_TEST

START_TEST(test_read_unpadded) {
  st_file f;
  taca_error err = {{0}};
  ck_assert_msg(st_open(&f, FIX "st_unpadded.safetensors", &err) == 0, "%s", err.msg);
  ck_assert_int_eq(f.n, 2);
  const st_tensor *a = &f.tensors[0], *h = st_find(&f, "h");
  ck_assert_int_eq(a->dtype, TACA_DT_F32);
  ck_assert_msg(((uintptr_t)a->data & 3) != 0, "fixture should leave the F32 data misaligned");
  ck_assert_ptr_null(st_f32_view(a));
  float v[3];
  ck_assert_int_eq(st_to_f32(a, v, &err), 0);
  ck_assert(v[0] == -1.5f && v[1] == -0.5f && v[2] == 0.5f);
  ck_assert_int_eq(st_to_f32(h, v, &err), 0);
  ck_assert(v[0] == 0.5f && v[1] == -2.0f);
  st_close(&f);
}
END_TEST

START_TEST(test_read_empty) {
  st_file f;
  taca_error err = {{0}};
  ck_assert_msg(st_open(&f, FIX "st_empty.safetensors", &err) == 0, "%s", err.msg);
  ck_assert(f.n == 0 && f.n_meta == 0);
  st_close(&f);
  ck_assert_msg(st_open(&f, FIX "st_meta_only.safetensors", &err) == 0, "%s", err.msg);
  ck_assert(f.n == 0 && f.n_meta == 1);
  ck_assert_str_eq(st_meta(&f, "framework"), "pt");
  st_close(&f);
}
END_TEST

/* ---- validation: every rule, each with its reason ---- */

/* buffer = u64 N | header | data_len zero bytes (N may be overridden) */
static unsigned char *mk(const char *header, size_t data_len, size_t *len) {
  size_t n = strlen(header);
  *len = 8 + n + data_len;
  unsigned char *b = calloc(1, *len + 1);
  for (int i = 0; i < 8; i++) b[i] = (unsigned char)((uint64_t)n >> (8 * i));
  memcpy(b + 8, header, n);
  return b;
}

static void expect_fail(const void *buf, size_t len, const char *want) {
  st_file f;
  taca_error err = {{0}};
  memset(&f, 0x5A, sizeof f);
  int rc = st_parse(&f, buf, len, &err);
  ck_assert_msg(rc == -1, "accepted, expected failure with '%s'", want);
  ck_assert_msg(strstr(err.msg, want) != NULL, "reason '%s' lacks '%s'", err.msg, want);
  ck_assert_msg(strchr(err.msg, '\n') == NULL, "reason is not one line: %s", err.msg);
  ck_assert(f.n == 0 && f.tensors == NULL && f.n_meta == 0 && f.map == NULL);
  st_close(&f);
}

static void expect_hdr_fail(const char *header, size_t data_len, const char *want) {
  size_t len;
  unsigned char *b = mk(header, data_len, &len);
  expect_fail(b, len, want);
  free(b);
}

static void expect_hdr_ok(const char *header, size_t data_len, int n) {
  size_t len;
  unsigned char *b = mk(header, data_len, &len);
  st_file f;
  taca_error err = {{0}};
  ck_assert_msg(st_parse(&f, b, len, &err) == 0, "refused %s: %s", header, err.msg);
  ck_assert_int_eq(f.n, n);
  st_close(&f);
  free(b);
}

#define T1(dt, shape, offs) "{\"a\":{\"dtype\":\"" dt "\",\"shape\":" shape ",\"data_offsets\":" offs "}}"

START_TEST(test_validation) {
  /* lengths */
  expect_fail("\x02\0\0\0", 4, "truncated");
  expect_fail("", 0, "truncated");
  unsigned char b[16] = {0x10, 0, 0, 0, 0, 0, 0, 0, '{', '}'};
  expect_fail(b, 10, "truncated: header length is 16 but only 2 bytes follow");
  unsigned char big[16] = {0x01, 0xE1, 0xF5, 0x05, 0, 0, 0, 0}; /* 100,000,001 */
  expect_fail(big, 16, "not a safetensors file");
  unsigned char huge[16] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff};
  expect_fail(huge, 16, "not a safetensors file");
  /* JSON */
  expect_hdr_fail("", 0, "not valid JSON");
  expect_hdr_fail("{\"a\":", 0, "not valid JSON");
  expect_hdr_fail("{} x", 0, "not valid JSON");
  expect_hdr_fail("{\"\xff\":{}}", 0, "not valid JSON");              /* invalid UTF-8 */
  expect_hdr_fail("{\"a\\u0000b\":{}}", 0, "not valid JSON");         /* NUL in a name */
  expect_hdr_fail("[1, 2]", 0, "not a JSON object");
  expect_hdr_fail("{\"a\":5}", 0, "entry is not an object");
  expect_hdr_fail("{\"a\\nb\":5}", 0, "tensor 'a?b': entry is not an object"); /* control chars shown as '?' */
  /* dtype */
  expect_hdr_fail("{\"a\":{\"shape\":[],\"data_offsets\":[0,4]}}", 4, "missing \"dtype\"");
  expect_hdr_fail(T1("F8_E4M3", "[1]", "[0,1]"), 1, "unsupported dtype 'F8_E4M3'");
  expect_hdr_fail(T1("f32", "[1]", "[0,4]"), 4, "unsupported dtype 'f32'");
  expect_hdr_fail("{\"a\":{\"dtype\":4,\"shape\":[1],\"data_offsets\":[0,4]}}", 4, "\"dtype\" is not a string");
  /* shape */
  expect_hdr_fail("{\"a\":{\"dtype\":\"F32\",\"data_offsets\":[0,4]}}", 4, "missing \"shape\"");
  expect_hdr_fail(T1("F32", "2", "[0,8]"), 8, "\"shape\" is not an array");
  expect_hdr_fail(T1("F32", "[-1]", "[0,4]"), 4, "shape[0] is not a non-negative integer");
  expect_hdr_fail(T1("F32", "[1,2.0]", "[0,8]"), 8, "shape[1] is not a non-negative integer");
  expect_hdr_fail(T1("F32", "[\"2\"]", "[0,8]"), 8, "shape[0] is not a non-negative integer");
  expect_hdr_fail(T1("F32", "[1,1,1,1,1,1,1,1,1]", "[0,4]"), 4, "9 dims, at most 8");
  expect_hdr_fail(T1("F32", "[4294967296,4294967296,16]", "[0,4]"), 4, "overflows");
  expect_hdr_fail(T1("F32", "[99999999999999999999]", "[0,4]"), 4, "not valid JSON"); /* > int64 */
  /* data_offsets */
  expect_hdr_fail("{\"a\":{\"dtype\":\"F32\",\"shape\":[1]}}", 4, "missing \"data_offsets\"");
  expect_hdr_fail(T1("F32", "[1]", "[4]"), 4, "not two non-negative integers");
  expect_hdr_fail(T1("F32", "[1]", "[0,4,8]"), 4, "not two non-negative integers");
  expect_hdr_fail(T1("F32", "[1]", "[\"0\",4]"), 4, "not two non-negative integers");
  expect_hdr_fail(T1("F32", "[1]", "[-4,0]"), 4, "not two non-negative integers");
  expect_hdr_fail(T1("F32", "[1]", "[0,4.0]"), 4, "not two non-negative integers");
  expect_hdr_fail(T1("F32", "[1]", "{}"), 4, "not two non-negative integers");
  expect_hdr_fail(T1("F32", "[1]", "[8,4]"), 8, "begin > end");
  expect_hdr_fail(T1("F32", "[2]", "[0,4]"), 4, "hold 4 bytes but F32 shape needs 8");
  expect_hdr_fail(T1("BF16", "[3]", "[0,8]"), 8, "hold 8 bytes but BF16 shape needs 6");
  /* layout */
  expect_hdr_fail(T1("F32", "[1]", "[4,8]"), 8, "leave a gap: expected it to begin at 0");
  expect_hdr_fail("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
                  "\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[8,12]}}",
                  12, "tensor 'b': data_offsets [8, 12] leave a gap");
  expect_hdr_fail("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                  "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}",
                  12, "overlap another tensor");
  expect_hdr_fail("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
                  "\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}",
                  8, "overlap");
  expect_hdr_fail(T1("F32", "[1]", "[0,4]"), 8, "buffer is 8 bytes but the tensors cover 4 (trailing bytes)");
  expect_hdr_fail(T1("F32", "[2]", "[0,8]"), 4, "out of range (buffer is 4 bytes)");
  expect_hdr_fail("{}", 1, "trailing bytes");
  /* names, metadata */
  expect_hdr_fail("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
                  "\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}",
                  8, "duplicate");
  expect_hdr_fail("{\"__metadata__\":{\"k\":1}}", 0, "__metadata__ value for key 'k' is not a string");
  expect_hdr_fail("{\"__metadata__\":[\"k\"]}", 0, "__metadata__ is not an object");
  expect_hdr_fail("{\"__metadata__\":{\"k\":\"v\",\"k\":\"w\"}}", 0, "duplicate");

  /* accepted corner cases */
  expect_hdr_ok("{}", 0, 0);
  expect_hdr_ok("  {}  ", 0, 0);
  expect_hdr_ok("{\"__metadata__\":null}", 0, 0);
  /* zero-size tensors at the same offset as others, offsets in any header order */
  expect_hdr_ok("{\"c\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[4,4]},"
                "\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
                "\"a\":{\"dtype\":\"I8\",\"shape\":[3,0],\"data_offsets\":[0,0]},"
                "\"d\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[4,4]}}",
                4, 4);
  /* unknown keys inside an entry are ignored, as the reference's serde does */
  expect_hdr_ok("{\"a\":{\"dtype\":\"U16\",\"shape\":[2],\"data_offsets\":[0,4],\"extra\":[1]}}", 4, 1);
}
END_TEST

START_TEST(test_open_errors) {
  st_file f;
  taca_error err = {{0}};
  ck_assert_int_eq(st_open(&f, "/nonexistent/x.safetensors", &err), -1);
  ck_assert_msg(strstr(err.msg, "/nonexistent/x.safetensors: cannot open"), "%s", err.msg);
  ck_assert_int_eq(st_open(&f, tmpdir, &err), -1);
  ck_assert_msg(strstr(err.msg, "not a regular file"), "%s", err.msg);

  char path[512];
  snprintf(path, sizeof path, "%s/short.safetensors", tmpdir);
  FILE *fp = fopen(path, "wb");
  fwrite("\x08\0\0", 1, 3, fp);
  fclose(fp);
  ck_assert_int_eq(st_open(&f, path, &err), -1);
  ck_assert_msg(strstr(err.msg, path) && strstr(err.msg, "truncated: 3 bytes"), "%s", err.msg);

  /* a validation error carries the file name */
  size_t len;
  unsigned char *b = mk(T1("F32", "[2]", "[0,8]"), 4, &len);
  fp = fopen(path, "wb");
  fwrite(b, 1, len, fp);
  fclose(fp);
  free(b);
  ck_assert_int_eq(st_open(&f, path, &err), -1);
  ck_assert_msg(strncmp(err.msg, path, strlen(path)) == 0 && strstr(err.msg, ": tensor 'a': "), "%s", err.msg);
  ck_assert_ptr_null(f.map);
}
END_TEST

/* ---- writer ---- */

START_TEST(test_writer_matches_reference_bytes) {
  char out[512];
  taca_error err = {{0}};
  /* the reference crate's own test vector */
  st_writer *w = st_writer_new();
  float v[6] = {0, 1, 2, 3, 4, 5};
  int64_t shape[3] = {1, 2, 3};
  ck_assert_int_eq(st_writer_add(w, "attn.0", TACA_DT_F32, 3, shape, v, &err), 0);
  snprintf(out, sizeof out, "%s/attn0.safetensors", tmpdir);
  ck_assert_msg(st_writer_save(w, out, &err) == 0, "%s", err.msg);
  st_writer_free(w);
  assert_same_file(out, FIX "st_attn0.safetensors");

  /* empty and metadata-only files */
  w = st_writer_new();
  snprintf(out, sizeof out, "%s/empty.safetensors", tmpdir);
  ck_assert_int_eq(st_writer_save(w, out, &err), 0);
  st_writer_free(w);
  assert_same_file(out, FIX "st_empty.safetensors");
  w = st_writer_new();
  ck_assert_int_eq(st_writer_meta(w, "framework", "pt", &err), 0);
  snprintf(out, sizeof out, "%s/meta.safetensors", tmpdir);
  ck_assert_int_eq(st_writer_save(w, out, &err), 0);
  st_writer_free(w);
  assert_same_file(out, FIX "st_meta_only.safetensors");

  /* re-writing the Python-written file tensor by tensor, in its order, gives the same bytes */
  st_file f;
  ck_assert_msg(st_open(&f, FIX "st_basic.safetensors", &err) == 0, "%s", err.msg);
  w = st_writer_new();
  for (int i = 0; i < f.n_meta; i++) ck_assert_int_eq(st_writer_meta(w, f.meta_keys[i], f.meta_values[i], &err), 0);
  for (int i = 0; i < f.n; i++) {
    const st_tensor *t = &f.tensors[i];
    ck_assert_int_eq(st_writer_add(w, t->name, t->dtype, t->ndim, t->shape, t->data, &err), 0);
  }
  snprintf(out, sizeof out, "%s/basic.safetensors", tmpdir);
  ck_assert_msg(st_writer_save(w, out, &err) == 0, "%s", err.msg);
  st_writer_free(w);
  st_close(&f);
  assert_same_file(out, FIX "st_basic.safetensors");
}
END_TEST

START_TEST(test_writer_round_trip) {
  char out[512];
  taca_error err = {{0}};
  snprintf(out, sizeof out, "%s/rt.safetensors", tmpdir);
  uint16_t h[3] = {0x3C00, 0x0001, 0xFC00};
  float w2[2][3] = {{1, 2, 3}, {-4, 5.5f, 1e-40f}};
  double d = -0.125;
  int32_t none[1] = {0};
  uint8_t bytes[5] = {1, 2, 3, 4, 5};
  int64_t s_h[1] = {3}, s_w[2] = {2, 3}, s_z[3] = {2, 0, 7}, s_b[2] = {1, 5};
  st_writer *w = st_writer_new();
  ck_assert_int_eq(st_writer_add(w, "half", TACA_DT_F16, 1, s_h, h, &err), 0); /* 6 bytes: F32 after is misaligned */
  ck_assert_int_eq(st_writer_add(w, "w", TACA_DT_F32, 2, s_w, w2, &err), 0);
  ck_assert_int_eq(st_writer_add(w, "scalar", TACA_DT_F64, 0, NULL, &d, &err), 0);
  ck_assert_int_eq(st_writer_add(w, "zero", TACA_DT_I32, 3, s_z, NULL, &err), 0);
  ck_assert_int_eq(st_writer_add(w, "zero2", TACA_DT_I32, 3, s_z, none, &err), 0);
  ck_assert_int_eq(st_writer_add(w, "b\xc3\xa9te", TACA_DT_U8, 2, s_b, bytes, &err), 0); /* UTF-8 name */
  ck_assert_int_eq(st_writer_meta(w, "format", "pt", &err), 0);
  ck_assert_int_eq(st_writer_meta(w, "quote\"and\\slash", "line\nbreak \xe2\x9c\x93", &err), 0);
  ck_assert_msg(st_writer_save(w, out, &err) == 0, "%s", err.msg);
  st_writer_free(w);

  st_file f;
  ck_assert_msg(st_open(&f, out, &err) == 0, "%s", err.msg);
  ck_assert_int_eq(f.n, 6);
  const char *names[] = {"half", "w", "scalar", "zero", "zero2", "b\xc3\xa9te"};
  for (int i = 0; i < 6; i++) ck_assert_str_eq(f.tensors[i].name, names[i]);
  uint64_t hlen;
  memcpy(&hlen, f.map, 8);
  ck_assert_uint_eq(hlen % 8, 0); /* padded header */
  ck_assert(memcmp(f.tensors[0].data, h, 6) == 0);
  const st_tensor *t = st_find(&f, "w");
  ck_assert(t->ndim == 2 && t->shape[0] == 2 && t->shape[1] == 3);
  ck_assert_ptr_null(st_f32_view(t)); /* laid out after 6 bytes of F16: not aligned */
  float back[6];
  ck_assert_int_eq(st_to_f32(t, back, &err), 0);
  ck_assert(memcmp(back, w2, sizeof w2) == 0);
  t = st_find(&f, "scalar");
  ck_assert(t->ndim == 0 && t->numel == 1);
  ck_assert_int_eq(st_to_f32(t, back, &err), 0);
  ck_assert(back[0] == -0.125f);
  t = st_find(&f, "zero");
  ck_assert(t->ndim == 3 && t->numel == 0 && t->shape[2] == 7);
  ck_assert(memcmp(st_find(&f, "b\xc3\xa9te")->data, bytes, 5) == 0);
  ck_assert_str_eq(st_meta(&f, "format"), "pt");
  ck_assert_str_eq(st_meta(&f, "quote\"and\\slash"), "line\nbreak \xe2\x9c\x93");
  st_close(&f);
}
END_TEST

START_TEST(test_writer_errors) {
  taca_error err = {{0}};
  float v[4] = {0};
  int64_t s1[1] = {4}, neg[1] = {-1}, s9[9] = {1, 1, 1, 1, 1, 1, 1, 1, 1};
  int64_t over[3] = {INT64_MAX, INT64_MAX, 2};
  st_writer *w = st_writer_new();
  ck_assert_int_eq(st_writer_add(w, "a", TACA_DT_F32, 1, s1, v, &err), 0);
  ck_assert_int_eq(st_writer_add(w, "a", TACA_DT_F32, 1, s1, v, &err), -1);
  ck_assert_msg(strstr(err.msg, "duplicate tensor 'a'"), "%s", err.msg);
  ck_assert_int_eq(st_writer_add(w, "__metadata__", TACA_DT_F32, 1, s1, v, &err), -1);
  ck_assert_msg(strstr(err.msg, "reserved"), "%s", err.msg);
  ck_assert_int_eq(st_writer_add(w, "b", TACA_DT_F32, 1, neg, v, &err), -1);
  ck_assert_msg(strstr(err.msg, "negative shape[0]"), "%s", err.msg);
  ck_assert_int_eq(st_writer_add(w, "b", TACA_DT_F32, 9, s9, v, &err), -1);
  ck_assert_msg(strstr(err.msg, "ndim 9"), "%s", err.msg);
  ck_assert_int_eq(st_writer_add(w, "b", TACA_DT_F32, 3, over, v, &err), -1);
  ck_assert_msg(strstr(err.msg, "overflows"), "%s", err.msg);
  ck_assert_int_eq(st_writer_add(w, "b", TACA_DT_INVALID, 1, s1, v, &err), -1);
  ck_assert_msg(strstr(err.msg, "invalid dtype"), "%s", err.msg);
  ck_assert_int_eq(st_writer_add(w, "b", TACA_DT_F32, 1, s1, NULL, &err), -1);
  ck_assert_msg(strstr(err.msg, "NULL data"), "%s", err.msg);
  ck_assert_int_eq(st_writer_add(w, "a\nb", TACA_DT_F32, 1, neg, v, &err), -1);
  ck_assert_msg(strstr(err.msg, "'a?b'") && !strchr(err.msg, '\n'), "%s", err.msg);
  ck_assert_int_eq(st_writer_add(w, "\xff", TACA_DT_F32, 1, s1, v, &err), -1);
  ck_assert_msg(strstr(err.msg, "UTF-8"), "%s", err.msg);
  ck_assert_int_eq(st_writer_meta(w, "k", "v", &err), 0);
  ck_assert_int_eq(st_writer_meta(w, "k", "w", &err), -1);
  ck_assert_msg(strstr(err.msg, "duplicate key 'k'"), "%s", err.msg);
  ck_assert_int_eq(st_writer_meta(w, "k2", "\xc3", &err), -1);

  /* a failed save leaves no temporary file behind and names the path */
  char out[512];
  snprintf(out, sizeof out, "%s/missing-dir/x.safetensors", tmpdir);
  ck_assert_int_eq(st_writer_save(w, out, &err), -1);
  ck_assert_msg(strstr(err.msg, out), "%s", err.msg);
  snprintf(out, sizeof out, "%s/adir", tmpdir);
  ck_assert_int_eq(mkdir(out, 0755), 0);
  ck_assert_int_eq(st_writer_save(w, out, &err), -1); /* rename over a directory */
  ck_assert_msg(strstr(err.msg, "rename"), "%s", err.msg);
  struct stat sb;
  ck_assert_int_eq(stat(out, &sb), 0);
  ck_assert(S_ISDIR(sb.st_mode));
  DIR *d = opendir(tmpdir);
  struct dirent *e;
  while ((e = readdir(d))) ck_assert_msg(strstr(e->d_name, ".tmp.") == NULL, "left %s", e->d_name);
  closedir(d);
  st_writer_free(w);
  st_writer_free(NULL);
}
END_TEST

START_TEST(test_writer_replaces_atomically) {
  char out[512];
  taca_error err = {{0}};
  snprintf(out, sizeof out, "%s/ckpt.safetensors", tmpdir);
  float a[2] = {1, 2}, b[3] = {3, 4, 5};
  int64_t s2[1] = {2}, s3[1] = {3};

  st_writer *w = st_writer_new();
  st_writer_add(w, "x", TACA_DT_F32, 1, s2, a, &err);
  ck_assert_int_eq(st_writer_save(w, out, &err), 0);
  st_writer_free(w);

  /* a reader that has the old file mapped keeps seeing it after the replacement */
  st_file old;
  ck_assert_int_eq(st_open(&old, out, &err), 0);
  w = st_writer_new();
  st_writer_add(w, "x", TACA_DT_F32, 1, s3, b, &err);
  ck_assert_int_eq(st_writer_save(w, out, &err), 0);
  st_writer_free(w);
  ck_assert(st_find(&old, "x")->numel == 2 && st_f32_view(st_find(&old, "x"))[1] == 2.0f);
  st_close(&old);

  st_file f;
  ck_assert_int_eq(st_open(&f, out, &err), 0);
  ck_assert(st_find(&f, "x")->numel == 3 && st_f32_view(st_find(&f, "x"))[2] == 5.0f);
  st_close(&f);
  DIR *d = opendir(tmpdir);
  struct dirent *e;
  int files = 0;
  while ((e = readdir(d)))
    if (e->d_name[0] != '.') files++;
  closedir(d);
  ck_assert_int_eq(files, 1);
}
END_TEST

int main(void) {
  Suite *s = suite_create("safetensors");
  TCase *tc = tcase_create("core");
  tcase_add_checked_fixture(tc, setup, teardown);
  tcase_add_test(tc, test_read_basic);
  tcase_add_test(tc, test_read_unpadded);
  tcase_add_test(tc, test_read_empty);
  tcase_add_test(tc, test_validation);
  tcase_add_test(tc, test_open_errors);
  tcase_add_test(tc, test_writer_matches_reference_bytes);
  tcase_add_test(tc, test_writer_round_trip);
  tcase_add_test(tc, test_writer_errors);
  tcase_add_test(tc, test_writer_replaces_atomically);
  suite_add_tcase(s, tc);
  SRunner *sr = srunner_create(s);
  srunner_run_all(sr, CK_NORMAL);
  int failed = srunner_ntests_failed(sr);
  srunner_free(sr);
  return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
