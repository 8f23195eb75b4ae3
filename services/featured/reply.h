/* reply.h: what a request handler produces (a gRPC status code with its message, and the packed
 * response), and the per-request arena that response messages are built in. No gRPC calls here:
 * handlers are plain functions of bytes (the fuzzer drives them directly). */
#ifndef TACA_FEATURED_REPLY_H
#define TACA_FEATURED_REPLY_H

#include <grpc/status.h>
#include <protobuf-c/protobuf-c.h>
#include <stddef.h>
#include <stdint.h>

/* Bulk bytes that go out without being copied (pixels straight from the LMDB map): n entries of the
 * length-delimited field `field`, appended after the packed message (protobuf concatenates repeated
 * fields), pointing into memory that stays valid until release(owner) is called. */
typedef struct reply_tail {
  int field;
  size_t n;
  const uint8_t **data;
  size_t *len;
  void *owner;
  void (*release)(void *owner);
} reply_tail;

typedef struct reply {
  grpc_status_code code;
  char msg[512];  /* status details when code != OK */
  uint8_t *buf;   /* packed response (malloc'd) when code == OK; NULL when len == 0 */
  size_t len;
  reply_tail tail; /* on OK: more of the response, after buf (tail.n == 0: none) */
} reply;

/* Sets code and message (made one printable line); drops buf and tail; returns -1. */
int reply_fail(reply *r, grpc_status_code code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* Packs m into r->buf; RESOURCE_EXHAUSTED (naming the sizes) when it and r->tail exceed max bytes. */
int reply_pack(reply *r, const ProtobufCMessage *m, size_t max);
/* Bytes the tail adds to the message (tags, lengths and data). */
size_t reply_tail_bytes(const reply_tail *t);
/* Writes the tail's encoding (tag, length, data of each entry) to out (reply_tail_bytes of room). */
void reply_tail_encode(const reply_tail *t, uint8_t *out);
/* Writes entry i's tag and length (at most 20 bytes) to out; returns their size. */
size_t reply_tail_header(const reply_tail *t, size_t i, uint8_t out[20]);
/* Releases the tail (calls release(owner)), frees r->buf, resets r. */
void reply_clear(reply *r);
void reply_tail_clear(reply_tail *t);

/* A bump allocator: many small allocations, one free. Memory is 16-byte aligned, not zeroed. */
typedef struct arena_chunk arena_chunk;
typedef struct arena {
  arena_chunk *head;
} arena;
void *arena_alloc(arena *a, size_t n);  /* NULL when out of memory */
void *arena_calloc(arena *a, size_t n);
void arena_free(arena *a);

#endif
