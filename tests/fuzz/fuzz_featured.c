/* fuzz_featured.c: libFuzzer target for the request decoders and handlers of taca-featured
 * (services/featured/handlers.c: protobuf-c unpacking, field selection, index checks, batch assembly,
 * Search by vector and by caption, StreamEpoch, Health.Check).
 *
 * Input: byte 0 picks the method (mod 6: Info, GetBatch, Lookup, Search, Health.Check, StreamEpoch),
 * the rest is the request message. A synthetic store of 64 samples (tests/integration/featured_synth.h)
 * and, when the fixture is there, the tiny CLIP text tower for caption search are set up once in a
 * temporary directory. Every reply must be either OK with a response that unpacks as the method's
 * response message, or an error status with a one-line message; StreamEpoch is followed for at most
 * 16 batches. Seeds: tests/fuzz/corpus/featured (tests/fuzz/gen_featured_corpus.py). */
#include <ftw.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "grpc/health/v1/health.pb-c.h"
#include "services/featured/featured.h"
#include "services/featured/handlers.h"
#include "services/featured/log.h"
#include "taca/v1/feature_cache.pb-c.h"
#include "tests/integration/featured_synth.h"

#ifndef TACA_FIXTURES_DIR
#define TACA_FIXTURES_DIR "tests/fixtures"
#endif
#define TINY TACA_FIXTURES_DIR "/clip/hf_gelu_f16"

#define CHECK(c)                                                         \
  do {                                                                   \
    if (!(c)) {                                                          \
      fprintf(stderr, "fuzz_featured: check failed: %s (line %d)\n", #c, __LINE__); \
      abort();                                                           \
    }                                                                    \
  } while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static featured F;
static char dir[64];

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw) {
  (void)sb, (void)flag, (void)ftw;
  return remove(path);
}

static void teardown(void) {
  featured_close(&F);
  nftw(dir, rm_entry, 8, FTW_DEPTH | FTW_PHYS);
}

static void init_once(void) {
  static int ready;
  if (ready) return;
  ready = 1;
  snprintf(dir, sizeof dir, "/tmp/taca-fuzz-featured-XXXXXX");
  CHECK(mkdtemp(dir) != NULL);
  char db[128];
  snprintf(db, sizeof db, "%s/db", dir);
  struct stat sb;
  int tiny = stat(TINY "/model.safetensors", &sb) == 0;
  synth_opts o = {.n = 64, .pixel_size = 4, .tiny_model = tiny ? TINY : NULL, .quiet = 1};
  taca_error err = {{0}};
  if (synth_store_create(db, &o, &err)) {
    fprintf(stderr, "fuzz_featured: %s\n", err.msg);
    abort();
  }
  featured_config cfg = {0};
  cfg.db = db;
  cfg.threads = 1;
  cfg.max_batch = 128;
  cfg.max_streams = 4;
  cfg.max_k = 50;
  cfg.max_message = 1u << 20;
  cfg.refresh_ms = 1000;
  if (tiny) {
    cfg.n_models = 1;
    snprintf(cfg.models[0].name, sizeof cfg.models[0].name, "tiny");
    cfg.models[0].path = TINY;
  }
  log_open("/dev/null", &err);
  if (featured_open(&F, &cfg, &err)) {
    fprintf(stderr, "fuzz_featured: %s\n", err.msg);
    abort();
  }
  atexit(teardown);
}

/* The whole response as the client receives it (packed message + zero-copy tail), unpacked. */
static ProtobufCMessage *unpack_reply(const reply *r, const ProtobufCMessageDescriptor *desc) {
  size_t tl = reply_tail_bytes(&r->tail);
  uint8_t *all = malloc(r->len + tl + 1);
  CHECK(all != NULL);
  if (r->len) memcpy(all, r->buf, r->len);
  reply_tail_encode(&r->tail, all + r->len);
  ProtobufCMessage *m = protobuf_c_message_unpack(desc, NULL, r->len + tl, all);
  free(all);
  return m;
}

/* OK with a response that unpacks, or a one-line error. */
static void check_reply(reply *r, const ProtobufCMessageDescriptor *desc) {
  if (r->code == GRPC_STATUS_OK) {
    ProtobufCMessage *m = unpack_reply(r, desc);
    CHECK(m != NULL);
    protobuf_c_message_free_unpacked(m, NULL);
  } else {
    CHECK(r->buf == NULL && r->len == 0 && r->tail.n == 0 && r->tail.owner == NULL);
    CHECK(r->msg[0] != '\0' && strchr(r->msg, '\n') == NULL);
  }
  reply_clear(r);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  init_once();
  if (size < 1) return 0;
  const uint8_t *req = data + 1;
  size_t len = size - 1;
  reply r = {0};
  switch (data[0] % 8) {
    case 0:
      handle_info(&F, req, len, &r);
      CHECK(r.code == GRPC_STATUS_OK || r.code == GRPC_STATUS_INVALID_ARGUMENT);
      check_reply(&r, &taca__v1__info_response__descriptor);
      break;
    case 1:
      handle_get_batch(&F, req, len, &r);
      check_reply(&r, &taca__v1__batch__descriptor);
      break;
    case 2:
      handle_lookup(&F, req, len, &r);
      check_reply(&r, &taca__v1__lookup_response__descriptor);
      break;
    case 3:
      handle_search(&F, req, len, &r);
      check_reply(&r, &taca__v1__search_response__descriptor);
      break;
    case 6:
      handle_embed(&F, req, len, &r);
      check_reply(&r, &taca__v1__embed_response__descriptor);
      break;
    case 7:
      handle_set_alias(&F, req, len, &r);
      check_reply(&r, &taca__v1__set_alias_response__descriptor);
      break;
    case 4:
      handle_health_check(&F, req, len, &r);
      check_reply(&r, &grpc__health__v1__health_check_response__descriptor);
      break;
    case 5: {
      epoch_stream *s;
      if (epoch_stream_open(&F, req, len, &s, &r)) {
        check_reply(&r, &taca__v1__batch__descriptor);
        break;
      }
      for (int i = 0; i < 16; i++) {
        uint64_t pos = epoch_stream_position(s);
        int rc = epoch_stream_next(s, &r);
        if (rc == 0) {
          CHECK(pos == epoch_stream_count(s));
          break;
        }
        if (rc == 1) {
          Taca__V1__Batch *b = (Taca__V1__Batch *)unpack_reply(&r, &taca__v1__batch__descriptor);
          CHECK(b != NULL && b->sequence == pos && b->batch_count == epoch_stream_count(s));
          CHECK(b->n_pixels == 0 || b->n_pixels == b->n_indices);
          for (size_t k = 0; k < b->n_indices; k++) CHECK(b->indices[k] < 64);
          taca__v1__batch__free_unpacked(b, NULL);
          reply_clear(&r);
        } else {
          check_reply(&r, &taca__v1__batch__descriptor);
          break;
        }
      }
      epoch_stream_close(s);
      break;
    }
  }
  return 0;
}
