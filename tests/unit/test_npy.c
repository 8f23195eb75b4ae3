/* test_npy.c: the .npy reader on files numpy wrote (v1/v2/v3, every supported dtype, 0-D to 3-D,
 * zero-size), refusal of malformed and unsupported files with a reason, and the writer: byte for byte
 * what numpy 1.24's np.save writes, atomically. */
#include <check.h>
#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/npy.h"

#define FIX TACA_FIXTURES_DIR "/formats/"

static char tmpdir[256];

static void setup(void) {
  snprintf(tmpdir, sizeof tmpdir, "/tmp/taca_npy_XXXXXX");
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
      unlink(p);
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

static void load_ok(const char *name, npy_array *a, taca_dtype dt, int ndim, const int64_t *shape) {
  taca_error err = {{0}};
  ck_assert_msg(npy_load(name, a, &err) == 0, "%s: %s", name, err.msg);
  ck_assert_msg(a->dtype == dt, "%s: dtype %s", name, taca_dtype_name(a->dtype));
  ck_assert_int_eq(a->ndim, ndim);
  size_t numel = 1;
  for (int i = 0; i < ndim; i++) {
    ck_assert_int_eq(a->shape[i], shape[i]);
    numel *= (size_t)shape[i];
  }
  ck_assert_uint_eq(a->numel, numel);
  ck_assert_ptr_nonnull(a->data);
  ck_assert_uint_eq((uintptr_t)a->data % 64, 0);
}

START_TEST(test_load_numpy_files) {
  npy_array a;
  {
    int64_t s[2] = {3, 4};
    load_ok(FIX "npy_f4_2d.npy", &a, TACA_DT_F32, 2, s);
    const float *v = a.data;
    for (int i = 0; i < 12; i++) ck_assert(v[i] == i * 0.5f - 3);
    npy_free(&a);
    ck_assert_ptr_null(a.data);
  }
  {
    int64_t s[1] = {5};
    load_ok(FIX "npy_f2_1d.npy", &a, TACA_DT_F16, 1, s);
    const uint16_t want[5] = {0xC000, 0xB800, 0x0000, 0x3400, 0x7BFF}; /* -2 -0.5 0 0.25 65504 */
    ck_assert(memcmp(a.data, want, sizeof want) == 0);
    npy_free(&a);
  }
  {
    int64_t s[3] = {2, 3, 4};
    load_ok(FIX "npy_f8_3d.npy", &a, TACA_DT_F64, 3, s);
    const double *v = a.data;
    for (int i = 0; i < 24; i++) ck_assert(v[i] == i / 8.0);
    npy_free(&a);
  }
  {
    int64_t s[2] = {2, 2};
    load_ok(FIX "npy_i4.npy", &a, TACA_DT_I32, 2, s);
    const int32_t want[4] = {-1, 2, -3, 2147483647};
    ck_assert(memcmp(a.data, want, sizeof want) == 0);
    npy_free(&a);
  }
  {
    int64_t s[1] = {3};
    load_ok(FIX "npy_i8.npy", &a, TACA_DT_I64, 1, s);
    const int64_t want[3] = {-(INT64_C(1) << 40), 0, INT64_C(1) << 62};
    ck_assert(memcmp(a.data, want, sizeof want) == 0);
    npy_free(&a);
  }
  {
    int64_t s[3] = {2, 3, 4};
    load_ok(FIX "npy_u1_3d.npy", &a, TACA_DT_U8, 3, s);
    for (int i = 0; i < 24; i++) ck_assert_uint_eq(((uint8_t *)a.data)[i], i);
    npy_free(&a);
  }
  {
    int64_t s[1] = {4};
    load_ok(FIX "npy_i1.npy", &a, TACA_DT_I8, 1, s);
    const int8_t want[4] = {-128, -1, 0, 127};
    ck_assert(memcmp(a.data, want, sizeof want) == 0);
    npy_free(&a);
  }
  {
    int64_t s[1] = {3};
    load_ok(FIX "npy_u2.npy", &a, TACA_DT_U16, 1, s);
    const uint16_t want[3] = {0, 1, 65535};
    ck_assert(memcmp(a.data, want, sizeof want) == 0);
    npy_free(&a);
    load_ok(FIX "npy_i2.npy", &a, TACA_DT_I16, 1, s);
    const int16_t want2[3] = {-32768, 0, 32767};
    ck_assert(memcmp(a.data, want2, sizeof want2) == 0);
    npy_free(&a);
  }
  {
    int64_t s2[1] = {2}, s1[1] = {1};
    load_ok(FIX "npy_u4.npy", &a, TACA_DT_U32, 1, s2);
    ck_assert(((uint32_t *)a.data)[1] == UINT32_MAX);
    npy_free(&a);
    load_ok(FIX "npy_u8.npy", &a, TACA_DT_U64, 1, s1);
    ck_assert(((uint64_t *)a.data)[0] == UINT64_MAX);
    npy_free(&a);
  }
  {
    int64_t s[1] = {5};
    load_ok(FIX "npy_b1.npy", &a, TACA_DT_BOOL, 1, s);
    ck_assert(memcmp(a.data, "\1\0\1\1\0", 5) == 0);
    npy_free(&a);
  }
  {
    load_ok(FIX "npy_scalar.npy", &a, TACA_DT_F32, 0, NULL);
    ck_assert(a.numel == 1 && ((float *)a.data)[0] == 3.5f);
    npy_free(&a);
  }
  {
    int64_t s[2] = {0, 3};
    load_ok(FIX "npy_empty.npy", &a, TACA_DT_F32, 2, s);
    npy_free(&a);
  }
  {
    int64_t s[2] = {2, 3};
    load_ok(FIX "npy_v2.npy", &a, TACA_DT_F32, 2, s);
    for (int i = 0; i < 6; i++) ck_assert(((float *)a.data)[i] == i - 2.0f);
    npy_free(&a);
    load_ok(FIX "npy_v3.npy", &a, TACA_DT_F32, 2, s);
    for (int i = 0; i < 6; i++) ck_assert(((float *)a.data)[i] == i - 2.0f);
    npy_free(&a);
  }
  npy_free(NULL);
}
END_TEST

static void expect_load_fail(const char *path, const char *want) {
  npy_array a;
  taca_error err = {{0}};
  ck_assert_msg(npy_load(path, &a, &err) == -1, "%s accepted", path);
  ck_assert_msg(strstr(err.msg, want) && strstr(err.msg, path), "reason '%s' lacks '%s' or the path", err.msg, want);
  ck_assert_ptr_null(a.data);
}

START_TEST(test_refuse_unsupported) {
  expect_load_fail(FIX "npy_fortran.npy", "Fortran-order");
  expect_load_fail(FIX "npy_bigendian.npy", "big-endian dtype '>f4'");
  expect_load_fail(FIX "npy_object.npy", "object arrays");
  expect_load_fail(FIX "npy_structured.npy", "structured dtypes");
  expect_load_fail("/nonexistent.npy", "cannot open");
  expect_load_fail(tmpdir, "not a regular file");
}
END_TEST

/* magic | major minor | header length (2 or 4 bytes) | dict | data_len bytes */
static unsigned char *mk(int major, int minor, const char *dict, size_t data_len, size_t *len) {
  size_t d = strlen(dict), pre = major == 1 ? 10 : 12;
  *len = pre + d + data_len;
  unsigned char *b = calloc(1, *len + 1);
  memcpy(b, "\x93NUMPY", 6);
  b[6] = (unsigned char)major;
  b[7] = (unsigned char)minor;
  for (size_t i = 0; i < pre - 8; i++) b[8 + i] = (unsigned char)(d >> (8 * i));
  memcpy(b + pre, dict, d);
  return b;
}

static void expect_fail(const void *buf, size_t len, const char *want) {
  npy_array a;
  taca_error err = {{0}};
  memset(&a, 0x5A, sizeof a);
  ck_assert_msg(npy_parse(buf, len, &a, &err) == -1, "accepted, expected '%s'", want);
  ck_assert_msg(strstr(err.msg, want) != NULL, "reason '%s' lacks '%s'", err.msg, want);
  ck_assert_msg(strchr(err.msg, '\n') == NULL, "reason is not one line: %s", err.msg);
  ck_assert_ptr_null(a.data);
}

static void expect_dict_fail(const char *dict, size_t data_len, const char *want) {
  size_t len;
  unsigned char *b = mk(1, 0, dict, data_len, &len);
  expect_fail(b, len, want);
  free(b);
}

static void expect_dict_ok(int major, const char *dict, size_t data_len, taca_dtype dt, int ndim) {
  size_t len;
  unsigned char *b = mk(major, 0, dict, data_len, &len);
  npy_array a;
  taca_error err = {{0}};
  ck_assert_msg(npy_parse(b, len, &a, &err) == 0, "refused %s: %s", dict, err.msg);
  ck_assert_int_eq(a.dtype, dt);
  ck_assert_int_eq(a.ndim, ndim);
  npy_free(&a);
  free(b);
}

#define D(descr, fortran, shape) "{'descr': '" descr "', 'fortran_order': " fortran ", 'shape': " shape ", }"

START_TEST(test_malformed) {
  /* preamble */
  expect_fail("\x93NUMPY\x01", 7, "truncated: 7 bytes");
  expect_fail("", 0, "truncated");
  size_t len;
  unsigned char *b = mk(1, 0, D("<f4", "False", "(2,)"), 8, &len);
  b[1] = 'n';
  expect_fail(b, len, "bad magic");
  b[1] = 'N';
  b[6] = 4;
  expect_fail(b, len, "unsupported .npy format version 4.0");
  b[6] = 1;
  b[7] = 1;
  expect_fail(b, len, "version 1.1");
  b[7] = 0;
  b[8] = 0xFF;
  expect_fail(b, len, "truncated: header length");
  free(b);
  expect_fail("\x93NUMPY\x02\x00\x10\x00", 10, "shorter than the v2 preamble");
  b = mk(2, 0, D("<f4", "False", "(2,)"), 8, &len);
  b[11] = 0x80; /* header length > 2 GiB */
  expect_fail(b, len, "truncated: header length");
  free(b);

  /* dict syntax and keys */
  expect_dict_fail("", 0, "expected '{' but the header ends");
  expect_dict_fail("[1]", 0, "expected '{' but found '['");
  expect_dict_fail("{'descr': '<f4'\x01}", 0, "expected '}' but found byte 0x01");
  expect_dict_fail("{'descr': '<f4\r', 'fortran_order': False, 'shape': (1,)}", 4, "unsupported dtype '<f4?'"); /* one printable line */
  expect_dict_fail("{'descr': '<f4', 'fortran_order': False}", 0, "missing key 'shape'");
  expect_dict_fail("{'fortran_order': False, 'shape': (1,)}", 4, "missing key 'descr'");
  expect_dict_fail("{'descr': '<f4', 'shape': (1,)}", 4, "missing key 'fortran_order'");
  expect_dict_fail("{'descr': '<f4', 'fortran_order': False, 'shape': (1,), 'x': 1}", 4, "unexpected key 'x'");
  expect_dict_fail("{'descr': '<f4', 'descr': '<f4', 'fortran_order': False, 'shape': (1,)}", 4, "duplicate key 'descr'");
  expect_dict_fail("{'descr': '<f4 , 'fortran_order': False, 'shape': (1,)}", 4, "expected '}' but found 'f'");
  expect_dict_fail("{'descr': '<f4', 'fortran_order': False, 'shape': (1,)", 4, "expected '}' but the header ends");
  expect_dict_fail("{'descr': '<f4', 'fortran_order': False, 'shape': (1,)} x", 4, "unexpected text after the dict");
  expect_dict_fail("{'descr': '<f4', 'fortran_order': false, 'shape': (1,)}", 4, "not True or False");
  expect_dict_fail("{'descr': '<f\\x34', 'fortran_order': False, 'shape': (1,)}", 4, "escape");
  expect_dict_fail("{'descr': '<f4', 'fortran_order': False, 'shape': [1]}", 4, "expected '('");
  expect_dict_fail("{descr: '<f4', 'fortran_order': False, 'shape': (1,)}", 4, "expected a quoted string");
  expect_dict_fail("{'descr': '<f4', 'fortran_order': False, 'shape': ('1',)}", 4, "not a tuple of integers");
  expect_dict_fail("{'descr': '<f4', 'fortran_order': False, 'shape': (1 2)}", 8, "expected ')'");
  /* shapes */
  expect_dict_fail(D("<f4", "False", "(-1,)"), 4, "negative dimension");
  expect_dict_fail(D("<f4", "False", "(2, -3)"), 4, "negative dimension");
  expect_dict_fail(D("<f4", "False", "(99999999999999999999,)"), 4, "overflows 64 bits");
  expect_dict_fail(D("<f4", "False", "(9223372036854775808,)"), 4, "overflows 64 bits");
  expect_dict_fail(D("<f4", "False", "(4294967296, 4294967296, 16)"), 4, "element count overflows");
  expect_dict_fail(D("<f4", "False", "(4611686018427387904,)"), 4, "byte count overflows");
  expect_dict_fail(D("<f4", "False", "(1, 1, 1, 1, 1, 1, 1, 1, 1)"), 4, "more than 8 dimensions");
  expect_dict_fail(D("<f4", "False", "(5)"), 20, "is not a tuple");
  /* dtypes */
  expect_dict_fail(D("f4", "False", "(1,)"), 4, "no byte-order mark");
  expect_dict_fail(D("", "False", "(1,)"), 4, "no byte-order mark");
  expect_dict_fail(D("<c8", "False", "(1,)"), 8, "unsupported dtype '<c8'");
  expect_dict_fail(D("<U3", "False", "(1,)"), 12, "unsupported dtype '<U3'");
  expect_dict_fail(D(">i8", "False", "(1,)"), 8, "big-endian");
  expect_dict_fail(D("|O", "False", "(1,)"), 8, "object arrays");
  expect_dict_fail(D("<f4", "True", "(2, 2)"), 16, "Fortran-order");
  /* data length */
  expect_dict_fail(D("<f4", "False", "(3, 2)"), 23, "data is 23 bytes but shape and dtype F32 need 24 (truncated)");
  expect_dict_fail(D("<f4", "False", "(3, 2)"), 25, "data is 25 bytes but shape and dtype F32 need 24 (trailing bytes)");
  expect_dict_fail(D("<f4", "False", "()"), 0, "need 4 (truncated)");
  expect_dict_fail(D("<f4", "False", "(0, 5)"), 1, "trailing bytes");

  /* accepted variants */
  expect_dict_ok(1, D("<f4", "False", "(2,)") "   \n", 8, TACA_DT_F32, 1);
  expect_dict_ok(1, D("<f4", "False", "(2,)"), 8, TACA_DT_F32, 1); /* no trailing newline */
  expect_dict_ok(1, "{\"descr\": \"=f8\", \"fortran_order\": False, \"shape\": (1, 2)}", 16, TACA_DT_F64, 2);
  expect_dict_ok(1, "{'shape':(3L,4L),'fortran_order':False,'descr':'<i2'}", 24, TACA_DT_I16, 2); /* py2 */
  expect_dict_ok(1, D("|u1", "False", "(0,)"), 0, TACA_DT_U8, 1);
  expect_dict_ok(1, D(">u1", "False", "(3,)"), 3, TACA_DT_U8, 1); /* byte order is moot for 1 byte */
  expect_dict_ok(1, D("|b1", "False", "( 2 , 3 , )"), 6, TACA_DT_BOOL, 2);
  expect_dict_ok(2, D("<u4", "False", "()"), 4, TACA_DT_U32, 0);
  expect_dict_ok(3, D("<f2", "False", "(1, 1, 1, 1, 1, 1, 1, 1)"), 2, TACA_DT_F16, 8);
}
END_TEST

/* npy_save writes exactly what numpy 1.24's np.save wrote for the same array. */
START_TEST(test_save_matches_numpy) {
  const char *files[] = {"npy_f4_2d.npy", "npy_f2_1d.npy", "npy_f8_3d.npy", "npy_i4.npy", "npy_i8.npy",
                         "npy_u1_3d.npy", "npy_i1.npy",    "npy_u2.npy",    "npy_i2.npy", "npy_u4.npy",
                         "npy_u8.npy",    "npy_b1.npy",    "npy_scalar.npy", "npy_empty.npy"};
  for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
    char in[512], out[512];
    snprintf(in, sizeof in, FIX "%s", files[i]);
    snprintf(out, sizeof out, "%s/%s", tmpdir, files[i]);
    npy_array a;
    taca_error err = {{0}};
    ck_assert_msg(npy_load(in, &a, &err) == 0, "%s", err.msg);
    ck_assert_msg(npy_save(out, a.dtype, a.ndim, a.shape, a.data, &err) == 0, "%s", err.msg);
    npy_free(&a);
    size_t la, lb;
    unsigned char *x = read_file(in, &la), *y = read_file(out, &lb);
    ck_assert_msg(la == lb && memcmp(x, y, la) == 0, "%s: npy_save output differs from numpy's", files[i]);
    free(x);
    free(y);
  }
}
END_TEST

START_TEST(test_save_round_trip_and_errors) {
  char out[512];
  taca_error err = {{0}};
  snprintf(out, sizeof out, "%s/big.npy", tmpdir);
  /* a long first axis and 8 dims: header still v1 and 64-byte aligned */
  int64_t shape[8] = {1234567890123LL, 0, 1, 2, 3, 4, 5, 6};
  ck_assert_int_eq(npy_save(out, TACA_DT_F32, 8, shape, NULL, &err), 0);
  size_t len;
  unsigned char *b = read_file(out, &len);
  ck_assert_uint_eq(len % 64, 0);
  ck_assert(b[6] == 1 && b[len - 1] == '\n');
  free(b);
  npy_array a;
  ck_assert_msg(npy_load(out, &a, &err) == 0, "%s", err.msg);
  ck_assert(a.ndim == 8 && a.shape[0] == 1234567890123LL && a.shape[7] == 6 && a.numel == 0);
  npy_free(&a);

  double v[6] = {1, -2, 3.5, 1e300, -0.0, 1e-310};
  int64_t s2[2] = {2, 3};
  ck_assert_int_eq(npy_save(out, TACA_DT_F64, 2, s2, v, &err), 0); /* replaces the file */
  ck_assert_int_eq(npy_load(out, &a, &err), 0);
  ck_assert(a.dtype == TACA_DT_F64 && memcmp(a.data, v, sizeof v) == 0);
  npy_free(&a);

  ck_assert_int_eq(npy_save(out, TACA_DT_BF16, 2, s2, v, &err), -1);
  ck_assert_msg(strstr(err.msg, "BF16 has no .npy equivalent"), "%s", err.msg);
  int64_t neg[1] = {-2};
  ck_assert_int_eq(npy_save(out, TACA_DT_F32, 1, neg, v, &err), -1);
  ck_assert_msg(strstr(err.msg, "negative shape[0]"), "%s", err.msg);
  ck_assert_int_eq(npy_save(out, TACA_DT_F32, 9, shape, v, &err), -1);
  ck_assert_msg(strstr(err.msg, "ndim 9"), "%s", err.msg);
  ck_assert_int_eq(npy_save(out, TACA_DT_F32, 2, s2, NULL, &err), -1);
  ck_assert_msg(strstr(err.msg, "NULL data"), "%s", err.msg);
  char bad[512];
  snprintf(bad, sizeof bad, "%s/no/such/dir.npy", tmpdir);
  ck_assert_int_eq(npy_save(bad, TACA_DT_F64, 2, s2, v, &err), -1);
  ck_assert_msg(strstr(err.msg, bad), "%s", err.msg);
  /* the failed saves left the previous file and no temporary files */
  ck_assert_int_eq(npy_load(out, &a, &err), 0);
  ck_assert(a.dtype == TACA_DT_F64 && a.numel == 6);
  npy_free(&a);
  DIR *d = opendir(tmpdir);
  struct dirent *e;
  int files = 0;
  while ((e = readdir(d)))
    if (e->d_name[0] != '.') files++;
  closedir(d);
  ck_assert_int_eq(files, 1);
}
END_TEST

START_TEST(test_load_f32_matrix) {
  npy_array m;
  taca_error err = {{0}};
  ck_assert_msg(npy_load_f32_matrix(FIX "npy_f2_1d.npy", &m, &err) == 0, "%s", err.msg);
  ck_assert(m.dtype == TACA_DT_F32 && m.ndim == 2 && m.shape[0] == 1 && m.shape[1] == 5 && m.numel == 5);
  const float want[5] = {-2, -0.5f, 0, 0.25f, 65504};
  ck_assert(memcmp(m.data, want, sizeof want) == 0);
  ck_assert_uint_eq((uintptr_t)m.data % 64, 0);
  npy_free(&m);

  ck_assert_int_eq(npy_load_f32_matrix(FIX "npy_f4_2d.npy", &m, &err), 0);
  ck_assert(m.shape[0] == 3 && m.shape[1] == 4 && ((float *)m.data)[11] == 2.5f);
  npy_free(&m);

  char out[512];
  snprintf(out, sizeof out, "%s/d.npy", tmpdir);
  double v[4] = {1.0 / 3, -1e40, 2.5, 1e-50};
  int64_t s[2] = {2, 2};
  ck_assert_int_eq(npy_save(out, TACA_DT_F64, 2, s, v, &err), 0);
  ck_assert_int_eq(npy_load_f32_matrix(out, &m, &err), 0);
  const float *f = m.data;
  ck_assert(f[0] == (float)(1.0 / 3) && isinf(f[1]) && f[1] < 0 && f[2] == 2.5f && f[3] == 0.0f);
  npy_free(&m);

  ck_assert_int_eq(npy_load_f32_matrix(FIX "npy_f8_3d.npy", &m, &err), -1);
  ck_assert_msg(strstr(err.msg, "expected a 1-D or 2-D array, got 3-D"), "%s", err.msg);
  ck_assert_int_eq(npy_load_f32_matrix(FIX "npy_scalar.npy", &m, &err), -1);
  ck_assert_msg(strstr(err.msg, "got 0-D"), "%s", err.msg);
  ck_assert_int_eq(npy_load_f32_matrix(FIX "npy_i4.npy", &m, &err), -1);
  ck_assert_msg(strstr(err.msg, "expected a float array, got I32"), "%s", err.msg);
  ck_assert_ptr_null(m.data);
  ck_assert_int_eq(npy_load_f32_matrix(FIX "npy_fortran.npy", &m, &err), -1);
  ck_assert_msg(strstr(err.msg, "Fortran"), "%s", err.msg);
}
END_TEST

int main(void) {
  Suite *s = suite_create("npy");
  TCase *tc = tcase_create("core");
  tcase_add_checked_fixture(tc, setup, teardown);
  tcase_add_test(tc, test_load_numpy_files);
  tcase_add_test(tc, test_refuse_unsupported);
  tcase_add_test(tc, test_malformed);
  tcase_add_test(tc, test_save_matches_numpy);
  tcase_add_test(tc, test_save_round_trip_and_errors);
  tcase_add_test(tc, test_load_f32_matrix);
  suite_add_tcase(s, tc);
  SRunner *sr = srunner_create(s);
  srunner_run_all(sr, CK_NORMAL);
  int failed = srunner_ntests_failed(sr);
  srunner_free(sr);
  return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
