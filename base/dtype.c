/* dtype.c: element-type names and sizes, and exact F16/BF16/F64 <-> F32 conversion.
 *
 * The conversions work on bit patterns, so they are exact for every input, subnormals included, and
 * do not depend on the FPU's flush-to-zero mode. They match PyTorch:
 *  - F16 -> F32 is exact; a NaN keeps its sign and payload and comes out quiet (as c10::Half and the
 *    F16C instructions do).
 *  - F32 -> F16 rounds to nearest, ties to even; overflow gives inf; NaN gives sign | 0x7E00.
 *  - BF16 -> F32 is the 16-bit shift; F32 -> BF16 rounds to nearest even; NaN gives 0x7FC0, as
 *    c10::BFloat16 does for a scalar (torch's AVX2 tensor path writes 0xFFFF, also a NaN). */
#include "base/dtype.h"

#include <string.h>

_Static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "file formats are read as little-endian");

static const struct {
  taca_dtype dt;
  const char *name;
  size_t size;
} dtype_table[] = {
    {TACA_DT_BOOL, "BOOL", 1}, {TACA_DT_U8, "U8", 1},    {TACA_DT_I8, "I8", 1},
    {TACA_DT_I16, "I16", 2},   {TACA_DT_U16, "U16", 2},  {TACA_DT_I32, "I32", 4},
    {TACA_DT_U32, "U32", 4},   {TACA_DT_I64, "I64", 8},  {TACA_DT_U64, "U64", 8},
    {TACA_DT_F16, "F16", 2},   {TACA_DT_BF16, "BF16", 2}, {TACA_DT_F32, "F32", 4},
    {TACA_DT_F64, "F64", 8},
};
#define N_DTYPES (sizeof dtype_table / sizeof dtype_table[0])

size_t taca_dtype_size(taca_dtype dt) {
  for (size_t i = 0; i < N_DTYPES; i++)
    if (dtype_table[i].dt == dt) return dtype_table[i].size;
  return 0;
}

const char *taca_dtype_name(taca_dtype dt) {
  for (size_t i = 0; i < N_DTYPES; i++)
    if (dtype_table[i].dt == dt) return dtype_table[i].name;
  return "INVALID";
}

taca_dtype taca_dtype_from_name(const char *s) {
  if (!s) return TACA_DT_INVALID;
  for (size_t i = 0; i < N_DTYPES; i++)
    if (strcmp(dtype_table[i].name, s) == 0) return dtype_table[i].dt;
  return TACA_DT_INVALID;
}

int taca_dtype_is_float(taca_dtype dt) {
  return dt == TACA_DT_F16 || dt == TACA_DT_BF16 || dt == TACA_DT_F32 || dt == TACA_DT_F64;
}

static inline float f32_from_bits(uint32_t u) {
  float f;
  memcpy(&f, &u, sizeof f);
  return f;
}

static inline uint32_t f32_bits(float f) {
  uint32_t u;
  memcpy(&u, &f, sizeof u);
  return u;
}

float taca_f16_to_f32(uint16_t h) {
  uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
  uint32_t exp = (h >> 10) & 0x1Fu;
  uint32_t man = h & 0x3FFu;
  if (exp == 0x1F) /* inf, or NaN made quiet */
    return f32_from_bits(sign | 0x7F800000u | (man << 13) | (man ? 0x00400000u : 0));
  if (exp == 0) {
    if (man == 0) return f32_from_bits(sign);
    /* subnormal: man * 2^-24; normalise so the leading 1 sits at bit 10 */
    uint32_t e = 113; /* biased F32 exponent of 2^-14 */
    while (!(man & 0x400u)) {
      man <<= 1;
      e--;
    }
    return f32_from_bits(sign | (e << 23) | ((man & 0x3FFu) << 13));
  }
  return f32_from_bits(sign | ((exp + 112) << 23) | (man << 13));
}

uint16_t taca_f32_to_f16(float f) {
  uint32_t x = f32_bits(f);
  uint16_t sign = (uint16_t)((x >> 16) & 0x8000u);
  x &= 0x7FFFFFFFu;
  if (x >= 0x7F800000u) return sign | (x > 0x7F800000u ? 0x7E00u : 0x7C00u);
  if (x >= 0x477FF000u) return sign | 0x7C00u; /* >= 65520, the midpoint above 65504: inf */
  uint32_t exp = x >> 23;
  if (exp < 113) { /* below 2^-14: an F16 subnormal (or zero) */
    if (exp < 102) return sign; /* below 2^-25, half the smallest subnormal (exactly half ties to 0) */
    uint32_t man = (x & 0x7FFFFFu) | 0x800000u;
    uint32_t shift = 126 - exp; /* value * 2^24 = man >> shift, shift in [14, 24] */
    uint32_t q = man >> shift, rem = man & ((1u << shift) - 1), half = 1u << (shift - 1);
    if (rem > half || (rem == half && (q & 1))) q++;
    return sign | (uint16_t)q;
  }
  uint32_t q = ((exp - 112) << 10) | ((x >> 13) & 0x3FFu);
  uint32_t rem = x & 0x1FFFu;
  if (rem > 0x1000u || (rem == 0x1000u && (q & 1))) q++; /* a carry moves into the exponent */
  return sign | (uint16_t)q;
}

float taca_bf16_to_f32(uint16_t h) { return f32_from_bits((uint32_t)h << 16); }

uint16_t taca_f32_to_bf16(float f) {
  uint32_t x = f32_bits(f);
  if ((x & 0x7FFFFFFFu) > 0x7F800000u) return 0x7FC0u;
  return (uint16_t)((x + 0x7FFFu + ((x >> 16) & 1u)) >> 16);
}

int taca_convert_to_f32(float *dst, const void *src, taca_dtype dt, size_t n) {
  const unsigned char *s = src;
  switch (dt) {
  case TACA_DT_F32:
    if (n) memmove(dst, src, n * sizeof(float));
    return 0;
  case TACA_DT_F16:
    for (size_t i = 0; i < n; i++) {
      uint16_t h = (uint16_t)(s[2 * i] | (s[2 * i + 1] << 8));
      dst[i] = taca_f16_to_f32(h);
    }
    return 0;
  case TACA_DT_BF16:
    for (size_t i = 0; i < n; i++) {
      uint16_t h = (uint16_t)(s[2 * i] | (s[2 * i + 1] << 8));
      dst[i] = taca_bf16_to_f32(h);
    }
    return 0;
  case TACA_DT_F64:
    for (size_t i = 0; i < n; i++) {
      double d;
      memcpy(&d, s + 8 * i, sizeof d);
      dst[i] = (float)d; /* round to nearest even, as torch's .float() */
    }
    return 0;
  default:
    return -1;
  }
}
