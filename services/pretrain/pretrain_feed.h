/* pretrain_feed.h: the batch producer of `taca pretrain`: renders samples of the synthetic
 * captioned-shapes data set (services/synth) on a worker thread, preprocesses the images as
 * precompute does (clip_resize_crop_u8 + clip_normalize_u8 with CLIP's mean and std) and tokenizes
 * the captions with the CLIP tokenizer, one batch ahead of the training step (two slots, so the
 * worker fills the next batch while the step computes on the current one).
 *
 * Order: shuffled (an endless stream of epoch permutations of the index range, Fisher-Yates from
 * splitmix64(shuffle_seed, epoch)) or sequential (each index once, the last batch partial).
 * Deterministic for a given configuration. All buffers are allocated at start. */
#ifndef TACA_PRETRAIN_FEED_H
#define TACA_PRETRAIN_FEED_H

#include <stdint.h>

#include "base/error.h"
#include "text/tokenizer.h"

typedef struct pretrain_batch {
  int n;            /* samples in this batch (<= batch) */
  float *pixels;    /* [n, 3, S, S] normalised */
  int32_t *tokens;  /* [n, context] */
  int32_t *labels;  /* [n] shape * colours + colour */
  int32_t *attrs;   /* [n] everything the caption states: (label * 5 + position) * 2 + large */
  uint64_t *index;  /* [n] data-set indices */
} pretrain_batch;

typedef struct pretrain_feed_config {
  uint64_t data_seed;   /* synth data set seed */
  uint64_t start;       /* first index */
  uint64_t count;       /* indices start .. start + count - 1 (count < 2^32) */
  int render_size;      /* size synth_render draws at */
  int image_size;       /* model input size (CLIP resize + center crop from render_size) */
  int context_len;
  int batch;
  long batches;         /* batches to produce (sequential: at most ceil(count / batch)) */
  int shuffle;
  uint64_t shuffle_seed;
} pretrain_feed_config;

typedef struct pretrain_feed pretrain_feed;

/* Starts the worker. tok must outlive the feed. */
pretrain_feed *pretrain_feed_start(const pretrain_feed_config *c, const clip_tokenizer *tok,
                                   taca_error *err);
/* The next batch (blocks until it is ready), or NULL after the last one or on a worker error
 * (then err says why and *failed is set). Call pretrain_feed_release when done with it. */
const pretrain_batch *pretrain_feed_next(pretrain_feed *f, int *failed, taca_error *err);
void pretrain_feed_release(pretrain_feed *f);
/* Stops the worker and frees everything (also mid-stream). */
void pretrain_feed_stop(pretrain_feed *f);

#endif
