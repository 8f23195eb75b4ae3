/* dtype.h: element types shared by safetensors, .npy and the store, and F16/BF16 <-> F32 conversion. */
#ifndef TACA_BASE_DTYPE_H
#define TACA_BASE_DTYPE_H

#include <stddef.h>
#include <stdint.h>

typedef enum taca_dtype {
  TACA_DT_INVALID = 0,
  TACA_DT_BOOL, TACA_DT_U8, TACA_DT_I8, TACA_DT_I16, TACA_DT_U16, TACA_DT_I32, TACA_DT_U32,
  TACA_DT_I64, TACA_DT_U64, TACA_DT_F16, TACA_DT_BF16, TACA_DT_F32, TACA_DT_F64,
} taca_dtype;

size_t taca_dtype_size(taca_dtype dt);          /* bytes per element, 0 for INVALID */
const char *taca_dtype_name(taca_dtype dt);     /* safetensors spelling: "F32", "BF16", ... */
taca_dtype taca_dtype_from_name(const char *s); /* inverse of taca_dtype_name; INVALID if unknown */
int taca_dtype_is_float(taca_dtype dt);         /* F16, BF16, F32, F64 */

float taca_f16_to_f32(uint16_t h);
uint16_t taca_f32_to_f16(float f);   /* round to nearest even, as torch .half() */
float taca_bf16_to_f32(uint16_t h);
uint16_t taca_f32_to_bf16(float f);  /* round to nearest even, as torch .bfloat16() */

/* Converts n elements of a float dtype (F16/BF16/F32/F64, little-endian, any alignment) to F32.
 * Returns -1 (and converts nothing) if dt is not a float dtype. */
int taca_convert_to_f32(float *dst, const void *src, taca_dtype dt, size_t n);

#endif
