/* reply.c: handler results (status + packed message) and the request arena. */
#include "services/featured/reply.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Length of the valid UTF-8 sequence at p (at most n bytes), 0 if invalid. */
static size_t utf8_len(const unsigned char *p, size_t n) {
  size_t len = p[0] < 0x80 ? 1 : (p[0] & 0xE0) == 0xC0 ? 2 : (p[0] & 0xF0) == 0xE0 ? 3 : (p[0] & 0xF8) == 0xF0 ? 4 : 0;
  if (len == 0 || len > n || (len == 2 && p[0] < 0xC2)) return 0;
  for (size_t i = 1; i < len; i++)
    if ((p[i] & 0xC0) != 0x80) return 0;
  return len;
}

/* Status messages echo request strings (keys, model and service names): keep them one printable,
 * valid UTF-8 line whatever the client sent. */
static void sanitize(char *s) {
  unsigned char *p = (unsigned char *)s;
  size_t n = strlen(s);
  for (size_t i = 0; i < n;) {
    size_t l = utf8_len(p + i, n - i);
    if (l == 1 && (p[i] < 0x20 || p[i] == 0x7F)) l = 0;
    if (l == 0) {
      p[i++] = '?';
      continue;
    }
    i += l;
  }
}

int reply_fail(reply *r, grpc_status_code code, const char *fmt, ...) {
  r->code = code;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(r->msg, sizeof r->msg, fmt, ap);
  va_end(ap);
  sanitize(r->msg);
  free(r->buf);
  r->buf = NULL;
  r->len = 0;
  reply_tail_clear(&r->tail);
  return -1;
}

static size_t varint_len(uint64_t v) {
  size_t n = 1;
  while (v >= 0x80) v >>= 7, n++;
  return n;
}

static size_t tag_len(int field) { return varint_len((uint64_t)field << 3 | 2); }

size_t reply_tail_bytes(const reply_tail *t) {
  size_t n = 0;
  for (size_t i = 0; i < t->n; i++) n += tag_len(t->field) + varint_len(t->len[i]) + t->len[i];
  return n;
}

static uint8_t *put_varint(uint8_t *p, uint64_t v) {
  while (v >= 0x80) {
    *p++ = (uint8_t)(v | 0x80);
    v >>= 7;
  }
  *p++ = (uint8_t)v;
  return p;
}

size_t reply_tail_header(const reply_tail *t, size_t i, uint8_t out[20]) {
  uint8_t *p = put_varint(out, (uint64_t)t->field << 3 | 2);
  p = put_varint(p, t->len[i]);
  return (size_t)(p - out);
}

void reply_tail_encode(const reply_tail *t, uint8_t *out) {
  for (size_t i = 0; i < t->n; i++) {
    out = put_varint(out, (uint64_t)t->field << 3 | 2);
    out = put_varint(out, t->len[i]);
    if (t->len[i]) memcpy(out, t->data[i], t->len[i]);
    out += t->len[i];
  }
}

void reply_tail_clear(reply_tail *t) {
  if (t->release) t->release(t->owner);
  free(t->data);
  free(t->len);
  memset(t, 0, sizeof *t);
}

int reply_pack(reply *r, const ProtobufCMessage *m, size_t max) {
  size_t sz = protobuf_c_message_get_packed_size(m), total = sz + reply_tail_bytes(&r->tail);
  if (total > max)
    return reply_fail(r, GRPC_STATUS_RESOURCE_EXHAUSTED,
                      "response would be %zu bytes, over the %zu-byte message limit (--max-message): ask for fewer "
                      "samples or fields",
                      total, max);
  free(r->buf);
  r->buf = NULL;
  r->len = 0;
  if (sz) {
    r->buf = malloc(sz);
    if (!r->buf) return reply_fail(r, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory for a %zu-byte response", sz);
    protobuf_c_message_pack(m, r->buf);
  }
  r->len = sz;
  r->code = GRPC_STATUS_OK;
  r->msg[0] = '\0';
  return 0;
}

void reply_clear(reply *r) {
  free(r->buf);
  reply_tail_clear(&r->tail);
  memset(r, 0, sizeof *r);
}

struct arena_chunk {
  arena_chunk *next;
  size_t used, cap;
  _Alignas(16) unsigned char data[];
};

void *arena_alloc(arena *a, size_t n) {
  n = (n + 15) & ~(size_t)15;
  if (n == 0) n = 16;
  arena_chunk *c = a->head;
  if (!c || c->cap - c->used < n) {
    size_t cap = n > 65536 ? n : 65536;
    c = malloc(sizeof *c + cap);
    if (!c) return NULL;
    c->used = 0;
    c->cap = cap;
    c->next = a->head;
    a->head = c;
  }
  void *p = c->data + c->used;
  c->used += n;
  return p;
}

void *arena_calloc(arena *a, size_t n) {
  void *p = arena_alloc(a, n);
  if (p) memset(p, 0, n);
  return p;
}

void arena_free(arena *a) {
  arena_chunk *c = a->head;
  while (c) {
    arena_chunk *next = c->next;
    free(c);
    c = next;
  }
  a->head = NULL;
}
