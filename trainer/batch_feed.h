/* batch_feed.h: the trainer's input: this rank's batches of every epoch, streamed from the feature
 * servers (StreamEpoch) and prepared on a background thread while the current step computes:
 * pixels normalised to F32, and either (TaCA) the old image and text embeddings of the target model
 * as F32, or (AFT, options.features set) the labels and the image embeddings of several stored
 * models concatenated per row. Batch buffers come from nn_host_alloc (pinned on a GPU backend).
 *
 * Steps are global: every rank takes exactly steps_per_epoch = floor(samples / (B_local * world))
 * batches from each epoch, so ranks stay in lockstep; with the server's strided rank shares, the
 * union of the ranks' batches at step s is the single-rank batch of size B_local * world at step s.
 * Step s reads epoch s / steps_per_epoch, batch s % steps_per_epoch: a resumed run starts at its
 * step and lands on the same data. */
#ifndef TACA_TRAINER_BATCH_FEED_H
#define TACA_TRAINER_BATCH_FEED_H

#include <stdint.h>

#include "base/error.h"
#include "client/taca_client.h"

typedef struct feed_batch {
  long step;
  int n;              /* rows of this rank */
  float *pixels;      /* n x 3 x S x S, normalised */
  float *img, *txt;   /* TaCA: n x dim each: the target model's stored embeddings */
  int32_t *labels;    /* AFT: n class ids (>= 0) */
  float *feat;        /* AFT: n x feat_dim, the --features models' image embeddings side by side */
  uint64_t *indices;
} feed_batch;

typedef struct feed_options {
  const char *servers;
  taca_client_options client;
  const char *targets;  /* stored model whose embeddings are the targets; NULL = the only one */
  const char *features; /* AFT: "M1,M2,...": labels + these models' image embeddings instead */
  struct nn_backend *be;/* allocates the batch buffers (NULL: plain host memory) */
  uint64_t seed;
  int rank, world, local_batch;
  int image_size;       /* the model's input size: stored pixels must match (0: any size) */
  long start_step;
  int depth;            /* batches prepared ahead (default 2) */
} feed_options;

typedef struct feed feed;

int feed_open(feed **out, const feed_options *o, taca_error *err);
void feed_close(feed *f);

/* The next step's batch (blocks). *wait_s: seconds spent waiting for it. Release after use. */
int feed_next(feed *f, feed_batch **b, double *wait_s, taca_error *err);
void feed_release(feed *f, feed_batch *b);

long feed_steps_per_epoch(const feed *f);
int feed_image_size(const feed *f);      /* side of the stored crops */
/* AFT: the --features models in order, and their image embedding widths (sum = feat_dim). */
int feed_feature_models(const feed *f, const taca_model_desc **models, int *dims, int max);
int feed_feature_dim(const feed *f);
const taca_model_desc *feed_target(const feed *f);
const taca_dataset_info *feed_info(const feed *f);

#endif
