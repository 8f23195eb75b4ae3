/* pretrain_feed.c: the synthetic-data batch producer of `taca pretrain` (see pretrain_feed.h), on
 * the shared prefetch queue (base/prefetch.h) over two batch slots. */
#include "services/pretrain/pretrain_feed.h"

#include <stdlib.h>
#include <string.h>

#include "base/prefetch.h"
#include "image/image.h"
#include "services/synth/synth.h"

struct pretrain_feed {
  pretrain_feed_config c;
  const clip_tokenizer *tok;
  taca_prefetch *q;
  pretrain_batch slot[2];
  pretrain_batch *held; /* the batch the consumer holds (pretrain_feed_next .. _release) */
  int ended;       /* the producer has filled a partial (the last) batch */
  uint32_t *perm;  /* shuffle: the current epoch's permutation of [0, count) */
  long perm_epoch;
  uint8_t *chw;    /* [3, S, S] one preprocessed image */
  void *mem;       /* the slots' buffers */
};

static uint64_t splitmix64(uint64_t *s) {
  uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

static void make_perm(pretrain_feed *f, long epoch) {
  const uint32_t n = (uint32_t)f->c.count;
  uint64_t s = f->c.shuffle_seed * 0xD1B54A32D192ED03ull ^ ((uint64_t)epoch + 1) * 0x9E3779B97F4A7C15ull;
  for (uint32_t i = 0; i < n; i++) f->perm[i] = i;
  for (uint32_t i = n - 1; i > 0; i--) {
    const uint32_t j = (uint32_t)(splitmix64(&s) % ((uint64_t)i + 1));
    const uint32_t t = f->perm[i];
    f->perm[i] = f->perm[j], f->perm[j] = t;
  }
  f->perm_epoch = epoch;
}

/* Renders, preprocesses and tokenizes batch k into b. */
static int fill(pretrain_feed *f, long k, pretrain_batch *b, taca_error *err) {
  const pretrain_feed_config *c = &f->c;
  const size_t pix = 3 * (size_t)c->image_size * c->image_size;
  b->n = 0;
  for (int j = 0; j < c->batch; j++) {
    const uint64_t p = (uint64_t)k * c->batch + j;
    uint64_t idx;
    if (c->shuffle) {
      const long epoch = (long)(p / c->count);
      if (epoch != f->perm_epoch) make_perm(f, epoch);
      idx = c->start + f->perm[p % c->count];
    } else {
      if (p >= c->count) break;
      idx = c->start + p;
    }
    synth_sample s;
    if (synth_render(c->data_seed, idx, c->render_size, &s))
      return taca_fail(err, "out of memory rendering sample %llu", (unsigned long long)idx);
    int rc = clip_resize_crop_u8(&s.img, c->image_size, f->chw, err);
    if (rc == 0) {
      clip_normalize_u8(f->chw, c->image_size, CLIP_MEAN, CLIP_STD, b->pixels + (size_t)j * pix);
      rc = clip_tokenize(f->tok, s.caption, b->tokens + (size_t)j * c->context_len, c->context_len,
                         err);
    }
    b->labels[j] = s.label;
    b->attrs[j] = (s.label * 5 + s.position) * 2 + s.large;
    b->index[j] = idx;
    synth_sample_free(&s);
    if (rc) return taca_error_prefix(err, "synthetic sample %llu", (unsigned long long)idx);
    b->n = j + 1;
  }
  return 0;
}

/* The prefetch producer: batch k into a free slot, until c.batches or a partial batch. */
static int fill_batch(void *ctx, long k, void *item, taca_error *err) {
  pretrain_feed *f = ctx;
  pretrain_batch *b = item;
  if (k >= f->c.batches || f->ended) return 0;
  if (fill(f, k, b, err)) return -1;
  if (b->n < f->c.batch) f->ended = 1;
  return b->n > 0 ? 1 : 0;
}

pretrain_feed *pretrain_feed_start(const pretrain_feed_config *c, const clip_tokenizer *tok,
                                   taca_error *err) {
  if (c->count == 0 || c->count >= (1ull << 32) || c->batch <= 0 || c->batches < 0 ||
      c->image_size <= 0 || c->render_size < 8 || c->context_len <= 0) {
    taca_fail(err, "pretrain feed: bad configuration (count %llu, batch %d, image %d, render %d)",
              (unsigned long long)c->count, c->batch, c->image_size, c->render_size);
    return NULL;
  }
  pretrain_feed *f = calloc(1, sizeof *f);
  if (!f) goto oom;
  f->c = *c;
  f->tok = tok;
  f->perm_epoch = -1;
  const size_t B = c->batch, pix = 3 * (size_t)c->image_size * c->image_size;
  const size_t per = B * (pix * sizeof(float) + c->context_len * sizeof(int32_t) +
                          2 * sizeof(int32_t) + sizeof(uint64_t));
  f->mem = malloc(2 * per);
  f->chw = malloc(pix);
  f->perm = c->shuffle ? malloc(sizeof *f->perm * c->count) : NULL;
  if (!f->mem || !f->chw || (c->shuffle && !f->perm)) goto oom;
  char *p = f->mem;
  for (int s = 0; s < 2; s++) {
    pretrain_batch *b = &f->slot[s];
    b->index = (uint64_t *)p, p += B * sizeof(uint64_t);
    b->pixels = (float *)p, p += B * pix * sizeof(float);
    b->tokens = (int32_t *)p, p += B * c->context_len * sizeof(int32_t);
    b->labels = (int32_t *)p, p += B * sizeof(int32_t);
    b->attrs = (int32_t *)p, p += B * sizeof(int32_t);
  }
  void *const items[2] = {&f->slot[0], &f->slot[1]};
  if (taca_prefetch_start(&f->q, items, 2, fill_batch, f, err)) {
    free(f->mem), free(f->chw), free(f->perm), free(f);
    return NULL;
  }
  return f;
oom:
  if (f) free(f->mem), free(f->chw), free(f->perm);
  free(f);
  taca_fail(err, "pretrain feed: out of memory for batches of %d", c->batch);
  return NULL;
}

const pretrain_batch *pretrain_feed_next(pretrain_feed *f, int *failed, taca_error *err) {
  void *item = NULL;
  taca_error e = {{0}};
  const int got = taca_prefetch_next(f->q, &item, &e);
  *failed = got < 0;
  if (got < 0 && err) *err = e;
  f->held = got > 0 ? item : NULL;
  return f->held;
}

void pretrain_feed_release(pretrain_feed *f) {
  if (f->held) taca_prefetch_release(f->q, f->held);
  f->held = NULL;
}

void pretrain_feed_stop(pretrain_feed *f) {
  if (!f) return;
  taca_prefetch_stop(f->q, NULL);
  free(f->mem), free(f->chw), free(f->perm);
  free(f);
}
