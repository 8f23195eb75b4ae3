/* wire.h: the protobuf wire format, just enough to walk a message's fields without decoding it:
 * reflection (descriptors) and the checks that must see bytes protobuf-c hides (a string's NUL). */
#ifndef TACA_FEATURED_WIRE_H
#define TACA_FEATURED_WIRE_H

#include <stddef.h>
#include <stdint.h>

typedef struct wire_field {
  uint32_t num;
  int wire;
  uint64_t v;          /* varint value */
  const uint8_t *p;    /* length-delimited payload */
  size_t n;
} wire_field;

/* The next field of [*p, end): 1 read, 0 at the end, -1 malformed. */
int wire_next_field(const uint8_t **p, const uint8_t *end, wire_field *f);

#endif
