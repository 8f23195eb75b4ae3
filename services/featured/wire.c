/* wire.c: walking protobuf fields (see wire.h). */
#include "services/featured/wire.h"

static int varint(const uint8_t **p, const uint8_t *end, uint64_t *out) {
  uint64_t v = 0;
  for (int shift = 0; shift < 64; shift += 7) {
    if (*p >= end) return -1;
    uint8_t b = *(*p)++;
    v |= (uint64_t)(b & 0x7f) << shift;
    if (!(b & 0x80)) {
      *out = v;
      return 0;
    }
  }
  return -1;
}

int wire_next_field(const uint8_t **p, const uint8_t *end, wire_field *f) {
  if (*p >= end) return 0;
  uint64_t key;
  if (varint(p, end, &key)) return -1;
  f->num = (uint32_t)(key >> 3);
  f->wire = (int)(key & 7);
  f->p = NULL;
  f->n = 0;
  switch (f->wire) {
    case 0: return varint(p, end, &f->v) ? -1 : 1;
    case 1: if (end - *p < 8) return -1; *p += 8; return 1;
    case 5: if (end - *p < 4) return -1; *p += 4; return 1;
    case 2: {
      uint64_t n;
      if (varint(p, end, &n) || n > (uint64_t)(end - *p)) return -1;
      f->p = *p;
      f->n = (size_t)n;
      *p += n;
      return 1;
    }
    default: return -1;
  }
}
