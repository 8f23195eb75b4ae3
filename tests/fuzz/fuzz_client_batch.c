/* fuzz_client_batch.c: libFuzzer target for the client's decoder of Batch messages
 * (client/batch_convert.c: the top-level field walk that keeps pixels in place, protobuf-c
 * for the rest, and the checks that a batch matches what was asked for), i.e. what a hostile or broken
 * server could send. The input is a Batch message; it is parsed, then scattered into a taca_batch
 * asking for every field (one "old" model, image and text, dim 8, F16). Any input must be refused
 * with a one-line reason or yield consistent arrays. Seeds: tests/fuzz/corpus/client_batch. */
#include <grpc/slice.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "client/client_internal.h"

#define CHECK(c)                                                                     \
  do {                                                                               \
    if (!(c)) {                                                                      \
      fprintf(stderr, "fuzz_client_batch: check failed: %s (line %d)\n", #c, __LINE__); \
      abort();                                                                       \
    }                                                                                \
  } while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static taca_client C;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (C.info.n_models == 0) {
    C.info.n_models = 1;
    snprintf(C.info.models[0].name, sizeof C.info.models[0].name, "old");
    C.info.models[0].image_dim = 8;
    C.info.models[0].text_dim = 8;
    C.info.models[0].dtype = TACA_DT_F16;
    C.info.has_pixels = 1;
    C.info.max_batch = 4096;
  }
  rx_batch rx;
  if (rx_batch_parse(grpc_slice_from_copied_buffer((const char *)data, size), &rx)) return 0;
  size_t rows = rx.b->n_indices;
  if (rows > 4096) {
    rx_batch_free(&rx);
    return 0;
  }
  for (size_t i = 0; i < rx.n_pix; i++) /* pixels point inside the received bytes */
    CHECK(rx.pix_len[i] == 0 ||
          (rx.pix[i] >= GRPC_SLICE_START_PTR(rx.raw) &&
           rx.pix[i] + rx.pix_len[i] <= GRPC_SLICE_START_PTR(rx.raw) + GRPC_SLICE_LENGTH(rx.raw)));
  taca_fields f = {.pixels = 1, .tokens = 1, .labels = 1, .keys = 1, .n_embeddings = 2};
  f.embeddings[0].model = "old";
  f.embeddings[1].model = "old";
  f.embeddings[1].modality = TACA_TEXT;
  taca_batch b;
  taca_error err = {{0}};
  CHECK(batch_alloc(&C, &f, rows, &b, &err) == 0);
  if (batch_scatter(&b, &f, &rx, rows, NULL, "fuzz", &err) == 0) {
    for (size_t i = 0; i < rows; i++) {
      CHECK(b.keys[i] != NULL);
      volatile size_t sink = strlen(b.keys[i]) + b.pixel_sizes[i];
      (void)sink;
      CHECK(b.embeddings[1].dim == 8 && b.embeddings[0].dtype == TACA_DT_F16);
    }
  } else {
    CHECK(err.msg[0] && !strchr(err.msg, '\n'));
  }
  taca_batch_free(&b);
  return 0;
}
