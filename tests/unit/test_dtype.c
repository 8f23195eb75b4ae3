/* test_dtype.c: dtype names/sizes, and F16/BF16 <-> F32 conversion checked two ways:
 * exhaustively over all 65536 patterns against the IEEE definition computed here with ldexp, and
 * bit for bit against torch 1.13's results in tests/fixtures/formats/conversions.txt. */
#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/dtype.h"

static uint32_t bits_of(float f) {
  uint32_t u;
  memcpy(&u, &f, 4);
  return u;
}

static float from_bits(uint32_t u) {
  float f;
  memcpy(&f, &u, 4);
  return f;
}

START_TEST(test_names_sizes) {
  const struct {
    taca_dtype dt;
    const char *name;
    size_t size;
    int is_float;
  } t[] = {{TACA_DT_BOOL, "BOOL", 1, 0}, {TACA_DT_U8, "U8", 1, 0},    {TACA_DT_I8, "I8", 1, 0},
           {TACA_DT_I16, "I16", 2, 0},   {TACA_DT_U16, "U16", 2, 0},  {TACA_DT_I32, "I32", 4, 0},
           {TACA_DT_U32, "U32", 4, 0},   {TACA_DT_I64, "I64", 8, 0},  {TACA_DT_U64, "U64", 8, 0},
           {TACA_DT_F16, "F16", 2, 1},   {TACA_DT_BF16, "BF16", 2, 1}, {TACA_DT_F32, "F32", 4, 1},
           {TACA_DT_F64, "F64", 8, 1}};
  for (size_t i = 0; i < sizeof t / sizeof t[0]; i++) {
    ck_assert_uint_eq(taca_dtype_size(t[i].dt), t[i].size);
    ck_assert_str_eq(taca_dtype_name(t[i].dt), t[i].name);
    ck_assert_int_eq(taca_dtype_from_name(t[i].name), t[i].dt);
    ck_assert_int_eq(taca_dtype_is_float(t[i].dt), t[i].is_float);
  }
  ck_assert_uint_eq(taca_dtype_size(TACA_DT_INVALID), 0);
  ck_assert_int_eq(taca_dtype_from_name("F8_E4M3"), TACA_DT_INVALID);
  ck_assert_int_eq(taca_dtype_from_name("f32"), TACA_DT_INVALID);
  ck_assert_int_eq(taca_dtype_from_name(""), TACA_DT_INVALID);
  ck_assert_int_eq(taca_dtype_from_name(NULL), TACA_DT_INVALID);
  ck_assert_int_eq(taca_dtype_is_float(TACA_DT_INVALID), 0);
}
END_TEST

/* The value of a binary16 pattern by definition: (-1)^s 2^(e-15) (1 + m/1024), subnormal 2^-14 m/1024. */
static double f16_definition(uint16_t h) {
  int s = h >> 15, e = (h >> 10) & 31, m = h & 1023;
  double v = e == 0 ? ldexp(m, -24) : e == 31 ? (m ? NAN : INFINITY) : ldexp(1024 + m, e - 25);
  return s ? -v : v;
}

/* bfloat16: (-1)^s 2^(e-127) (1 + m/128), subnormal 2^-126 m/128. */
static double bf16_definition(uint16_t h) {
  int s = h >> 15, e = (h >> 7) & 255, m = h & 127;
  double v = e == 0 ? ldexp(m, -133) : e == 255 ? (m ? NAN : INFINITY) : ldexp(128 + m, e - 134);
  return s ? -v : v;
}

START_TEST(test_f16_to_f32_exhaustive) {
  for (uint32_t h = 0; h < 65536; h++) {
    float f = taca_f16_to_f32((uint16_t)h);
    double want = f16_definition((uint16_t)h);
    if (isnan(want)) {
      /* quiet NaN with sign and payload kept, as torch (c10::Half / F16C) gives */
      uint32_t exp = ((h & 0x8000u) << 16) | 0x7FC00000u | ((h & 0x3FFu) << 13);
      ck_assert_msg(bits_of(f) == exp, "f16 %04x -> %08x, want %08x", h, bits_of(f), exp);
    } else {
      ck_assert_msg((double)f == want, "f16 %04x -> %.10g, want %.10g", h, f, want);
      ck_assert_int_eq(signbit(f) != 0, (h & 0x8000u) != 0); /* -0 stays -0 */
    }
  }
}
END_TEST

START_TEST(test_bf16_to_f32_exhaustive) {
  for (uint32_t h = 0; h < 65536; h++) {
    float f = taca_bf16_to_f32((uint16_t)h);
    double want = bf16_definition((uint16_t)h);
    if (isnan(want))
      ck_assert_uint_eq(bits_of(f), h << 16); /* torch keeps the payload as is */
    else {
      ck_assert_msg((double)f == want, "bf16 %04x -> %.10g, want %.10g", h, f, want);
      ck_assert_int_eq(signbit(f) != 0, (h & 0x8000u) != 0);
    }
  }
}
END_TEST

/* Round trip of every representable F16, and round-to-nearest-even at every midpoint between two
 * adjacent F16 values (the midpoint is exact in F32), one F32 ulp either side of it, for both signs. */
START_TEST(test_f32_to_f16_exhaustive) {
  for (uint32_t h = 0; h < 65536; h++) {
    if ((h & 0x7C00u) == 0x7C00u && (h & 0x3FFu)) continue; /* NaN: below */
    ck_assert_uint_eq(taca_f32_to_f16(taca_f16_to_f32((uint16_t)h)), h);
  }
  for (uint32_t h = 0; h < 0x7C00; h++) { /* h and h + 1 adjacent, h + 1 may be inf */
    for (int neg = 0; neg < 2; neg++) {
      uint16_t s = neg ? 0x8000 : 0;
      float a = taca_f16_to_f32((uint16_t)h);
      /* the next value up; above 65504 the "next" is 65536 (where inf takes over) */
      double b = h == 0x7BFF ? 65536.0 : (double)taca_f16_to_f32((uint16_t)(h + 1));
      float mid = (float)(((double)a + b) / 2);
      ck_assert(((double)a + b) / 2 == (double)mid);
      if (neg) mid = -mid;
      uint16_t even = (h & 1) ? (uint16_t)(h + 1) : (uint16_t)h;
      ck_assert_msg(taca_f32_to_f16(mid) == (s | even), "midpoint above %04x -> %04x", h, taca_f32_to_f16(mid));
      float up = nextafterf(mid, neg ? -INFINITY : INFINITY), down = nextafterf(mid, 0);
      ck_assert_msg(taca_f32_to_f16(up) == (s | (h + 1)), "above midpoint of %04x", h);
      ck_assert_msg(taca_f32_to_f16(down) == (s | h), "below midpoint of %04x", h);
    }
  }
  /* overflow and underflow ends */
  ck_assert_uint_eq(taca_f32_to_f16(1e30f), 0x7C00);
  ck_assert_uint_eq(taca_f32_to_f16(-1e30f), 0xFC00);
  ck_assert_uint_eq(taca_f32_to_f16(INFINITY), 0x7C00);
  ck_assert_uint_eq(taca_f32_to_f16(-INFINITY), 0xFC00);
  ck_assert_uint_eq(taca_f32_to_f16(1e-30f), 0x0000);
  ck_assert_uint_eq(taca_f32_to_f16(-1e-30f), 0x8000);
  ck_assert_uint_eq(taca_f32_to_f16(from_bits(1)), 0x0000);
  ck_assert_uint_eq(taca_f32_to_f16(NAN), 0x7E00);
  ck_assert_uint_eq(taca_f32_to_f16(-NAN), 0xFE00);
}
END_TEST

/* BF16 is the top half of F32: for every finite pattern h, F32 bits h<<16 | low round to nearest
 * even on the low half, exhaustively at the tie and either side of it. */
START_TEST(test_f32_to_bf16_exhaustive) {
  for (uint32_t h = 0; h < 65536; h++) {
    if ((h & 0x7F80u) == 0x7F80u) { /* inf / NaN */
      if (h & 0x7Fu) ck_assert(isnan(taca_bf16_to_f32(taca_f32_to_bf16(from_bits(h << 16)))));
      else ck_assert_uint_eq(taca_f32_to_bf16(from_bits(h << 16)), h);
      continue;
    }
    uint32_t u = h << 16;
    ck_assert_uint_eq(taca_f32_to_bf16(from_bits(u)), h);
    ck_assert_uint_eq(taca_f32_to_bf16(from_bits(u | 0x7FFFu)), h);
    ck_assert_uint_eq(taca_f32_to_bf16(from_bits(u | 0x8000u)), (h & 1) ? h + 1 : h);
    ck_assert_uint_eq(taca_f32_to_bf16(from_bits(u | 0x8001u)), h + 1);
    ck_assert_uint_eq(taca_f32_to_bf16(from_bits(u | 0xFFFFu)), h + 1);
  }
  ck_assert_uint_eq(taca_f32_to_bf16(NAN), 0x7FC0);
  ck_assert_uint_eq(taca_f32_to_bf16(from_bits(0x7F7FFFFFu)), 0x7F80); /* FLT_MAX rounds to inf */
}
END_TEST

/* torch's own outputs, bit for bit. torch's F32->BF16 tensor path writes 0xFFFF for every NaN while
 * its scalar path (and this code) writes 0x7FC0: for NaN inputs only NaN-ness is compared. */
START_TEST(test_against_torch) {
  FILE *fp = fopen(TACA_FIXTURES_DIR "/formats/conversions.txt", "r");
  ck_assert_msg(fp != NULL, "missing fixture conversions.txt");
  char line[256], tag[8];
  int n_f32 = 0, n_h = 0, n_b = 0, n_nan = 0;
  while (fgets(line, sizeof line, fp)) {
    if (line[0] == '#') continue;
    unsigned a, b, c;
    int k = sscanf(line, "%7s %x %x %x", tag, &a, &b, &c);
    if (strcmp(tag, "f32") == 0) {
      ck_assert_int_eq(k, 4);
      float f = from_bits(a);
      ck_assert_msg(taca_f32_to_f16(f) == b, "f32 %08x -> f16 %04x, torch %04x", a, taca_f32_to_f16(f), b);
      if (isnan(f)) {
        ck_assert(isnan(taca_bf16_to_f32((uint16_t)c)));
        ck_assert(isnan(taca_bf16_to_f32(taca_f32_to_bf16(f))));
        n_nan++;
      } else {
        ck_assert_msg(taca_f32_to_bf16(f) == c, "f32 %08x -> bf16 %04x, torch %04x", a, taca_f32_to_bf16(f), c);
      }
      n_f32++;
    } else if (strcmp(tag, "h2f") == 0) {
      ck_assert_int_eq(k, 3);
      uint32_t got = bits_of(taca_f16_to_f32((uint16_t)a));
      ck_assert_msg(got == b, "f16 %04x -> %08x, torch %08x", a, got, b);
      n_h++;
    } else if (strcmp(tag, "b2f") == 0) {
      ck_assert_int_eq(k, 3);
      uint32_t got = bits_of(taca_bf16_to_f32((uint16_t)a));
      ck_assert_msg(got == b, "bf16 %04x -> %08x, torch %08x", a, got, b);
      n_b++;
    } else {
      ck_abort_msg("bad fixture line: %s", line);
    }
  }
  fclose(fp);
  ck_assert_int_ge(n_f32, 400);
  ck_assert_int_ge(n_h, 130);
  ck_assert_int_ge(n_b, 130);
  ck_assert_int_ge(n_nan, 6);
}
END_TEST

START_TEST(test_convert_to_f32) {
  /* unaligned sources: bytes start at offset 1 */
  unsigned char buf[1 + 4 * 8];
  float out[4];
  const uint16_t h[4] = {0x3C00, 0xC000, 0x0001, 0x7C00}; /* 1, -2, 2^-24, inf */
  for (int i = 0; i < 4; i++) {
    buf[1 + 2 * i] = (unsigned char)(h[i] & 0xFF);
    buf[2 + 2 * i] = (unsigned char)(h[i] >> 8);
  }
  ck_assert_int_eq(taca_convert_to_f32(out, buf + 1, TACA_DT_F16, 4), 0);
  ck_assert(out[0] == 1.0f && out[1] == -2.0f && out[2] == ldexpf(1, -24) && isinf(out[3]));

  const uint16_t b[4] = {0x3F80, 0xC040, 0x0001, 0xFF80}; /* 1, -3, 2^-133, -inf */
  for (int i = 0; i < 4; i++) {
    buf[1 + 2 * i] = (unsigned char)(b[i] & 0xFF);
    buf[2 + 2 * i] = (unsigned char)(b[i] >> 8);
  }
  ck_assert_int_eq(taca_convert_to_f32(out, buf + 1, TACA_DT_BF16, 4), 0);
  ck_assert(out[0] == 1.0f && out[1] == -3.0f && out[2] == ldexpf(1, -133) && isinf(out[3]) && out[3] < 0);

  const double d[4] = {1.0 / 3, 1e40, -1e-50, 0.1};
  memcpy(buf + 1, d, sizeof d);
  ck_assert_int_eq(taca_convert_to_f32(out, buf + 1, TACA_DT_F64, 4), 0);
  ck_assert(out[0] == (float)(1.0 / 3) && isinf(out[1]) && out[2] == 0.0f && signbit(out[2]) && out[3] == 0.1f);

  const float f[4] = {1.5f, -0.0f, 3e38f, 1e-45f};
  memcpy(buf + 1, f, sizeof f);
  ck_assert_int_eq(taca_convert_to_f32(out, buf + 1, TACA_DT_F32, 4), 0);
  ck_assert(memcmp(out, f, sizeof f) == 0);

  float guard = 42.0f;
  ck_assert_int_eq(taca_convert_to_f32(&guard, buf, TACA_DT_I32, 1), -1);
  ck_assert_int_eq(taca_convert_to_f32(&guard, buf, TACA_DT_U8, 1), -1);
  ck_assert_int_eq(taca_convert_to_f32(&guard, buf, TACA_DT_INVALID, 1), -1);
  ck_assert(guard == 42.0f); /* converts nothing on failure */
  ck_assert_int_eq(taca_convert_to_f32(out, buf, TACA_DT_F16, 0), 0);
}
END_TEST

int main(void) {
  Suite *s = suite_create("dtype");
  TCase *tc = tcase_create("core");
  tcase_add_test(tc, test_names_sizes);
  tcase_add_test(tc, test_f16_to_f32_exhaustive);
  tcase_add_test(tc, test_bf16_to_f32_exhaustive);
  tcase_add_test(tc, test_f32_to_f16_exhaustive);
  tcase_add_test(tc, test_f32_to_bf16_exhaustive);
  tcase_add_test(tc, test_against_torch);
  tcase_add_test(tc, test_convert_to_f32);
  suite_add_tcase(s, tc);
  SRunner *sr = srunner_create(s);
  srunner_run_all(sr, CK_NORMAL);
  int failed = srunner_ntests_failed(sr);
  srunner_free(sr);
  return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
