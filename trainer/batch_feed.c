/* batch_feed.c: prefetching of training batches from StreamEpoch on a background thread (the
 * shared prefetch queue, base/prefetch.h: its producer receives and converts step start + k). A run
 * resumed mid-epoch opens the epoch's stream at its batch (start_batch on the wire): no batch
 * before it is sent or decoded. */
#include "trainer/batch_feed.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/clock.h"
#include "base/prefetch.h"
#include "nn/backend.h"
#include "image/image.h"
#include "image/pixel_codec.h"

#define MAX_DEPTH 8

struct feed {
  feed_options o;
  taca_client *client;
  const taca_model_desc *target;
  int dim;
  int aft;                  /* features mode */
  int n_feat;               /* feature models */
  const taca_model_desc *feat_models[TACA_CLIENT_MAX_EMB];
  int feat_dims[TACA_CLIENT_MAX_EMB];
  int feat_dim;             /* sum of feat_dims */
  char features[1024];      /* copy of the names, split in place */
  int image_size;
  char codec[8];            /* the store's pixel codec: "raw" or "jpeg" */
  uint8_t *chw;             /* [3, S, S] decoded JPEG crop (feed thread) */
  long spe;                 /* steps per epoch */
  feed_batch *items[MAX_DEPTH + 1]; /* the batches the prefetch queue fills */
  int nitems;
  taca_prefetch *q;
  taca_epoch *ep;           /* the producer's open epoch stream: epoch cur_epoch, next batch pos */
  long cur_epoch, pos;
};

static void batch_destroy(const feed *f, feed_batch *b) {
  if (!b) return;
  nn_host_free(f->o.be, b->pixels);
  free(b->img), free(b->txt), free(b->labels), free(b->feat), free(b->indices), free(b);
}

static feed_batch *batch_alloc(const feed *f) {
  const size_t B = f->o.local_batch, S = f->image_size;
  feed_batch *b = calloc(1, sizeof *b);
  if (!b) return NULL;
  b->pixels = nn_host_alloc(f->o.be, sizeof(float) * B * 3 * S * S);
  b->indices = malloc(sizeof(uint64_t) * B);
  int ok = b->pixels && b->indices;
  if (f->aft) {
    b->labels = malloc(sizeof(int32_t) * B);
    b->feat = malloc(sizeof(float) * B * f->feat_dim);
    ok = ok && b->labels && b->feat;
  } else {
    b->img = malloc(sizeof(float) * B * f->dim);
    b->txt = malloc(sizeof(float) * B * f->dim);
    ok = ok && b->img && b->txt;
  }
  if (!ok) {
    batch_destroy(f, b);
    return NULL;
  }
  return b;
}

/* AFT rows: labels and the feature models' embeddings side by side. */
static int convert_features(feed *f, const taca_batch *in, feed_batch *b, taca_error *err) {
  if (!in->labels) return taca_fail(err, "the server sent no labels");
  for (size_t i = 0; i < in->n; i++) {
    if (in->labels[i] < 0)
      return taca_fail(err, "sample %llu has no label; AFT trains on labelled data (.cls in shards, the "
                       "third column of captions.tsv)", (unsigned long long)in->indices[i]);
    b->labels[i] = in->labels[i];
  }
  int col = 0;
  for (int e = 0; e < f->n_feat; e++) {
    const taca_embeddings *em = &in->embeddings[e];
    const int d = f->feat_dims[e];
    if (em->dtype != TACA_DT_F32 || em->dim != d)
      return taca_fail(err, "embeddings of '%s' arrived as %s x %d, expected F32 x %d", em->model,
                       taca_dtype_name(em->dtype), em->dim, d);
    const float *src = em->data;
    for (size_t i = 0; i < in->n; i++) {
      if (!em->present[i])
        return taca_fail(err, "sample %llu has no image embedding of '%s' in the store",
                         (unsigned long long)in->indices[i], em->model);
      memcpy(b->feat + i * f->feat_dim + col, src + i * d, sizeof(float) * d);
    }
    col += d;
  }
  return 0;
}

/* Converts a received batch into b (checks shapes and presence). */
static int convert(feed *f, const taca_batch *in, feed_batch *b, taca_error *err) {
  const int S = f->image_size;
  const size_t per = (size_t)3 * S * S;
  if (in->n != (size_t)f->o.local_batch)
    return taca_fail(err, "StreamEpoch sent a batch of %zu rows, expected %d", in->n, f->o.local_batch);
  b->n = (int)in->n;
  for (size_t i = 0; i < in->n; i++) {
    if (!in->pixels || !in->pixel_sizes[i])
      return taca_fail(err, "sample %llu has no stored pixels", (unsigned long long)in->indices[i]);
    const uint8_t *chw = in->pixels[i];
    if (strcmp(f->codec, "raw") || in->pixel_sizes[i] != per) {
      if (pixel_decode(f->codec, in->pixels[i], in->pixel_sizes[i], S, f->chw, err))
        return taca_error_prefix(err, "sample %llu", (unsigned long long)in->indices[i]);
      chw = f->chw;
    }
    clip_normalize_u8(chw, S, CLIP_MEAN, CLIP_STD, b->pixels + per * i);
    b->indices[i] = in->indices[i];
  }
  if (f->aft) return convert_features(f, in, b, err);
  for (int e = 0; e < 2; e++) {
    const taca_embeddings *em = &in->embeddings[e];
    if (em->dtype != TACA_DT_F32 || em->dim != f->dim)
      return taca_fail(err, "embeddings of '%s' arrived as %s x %d, expected F32 x %d", em->model,
                       taca_dtype_name(em->dtype), em->dim, f->dim);
    for (size_t i = 0; i < in->n; i++)
      if (!em->present[i])
        return taca_fail(err, "sample %llu has no %s embedding of '%s' in the store",
                         (unsigned long long)in->indices[i], e ? "text" : "image", em->model);
    memcpy(e ? b->txt : b->img, em->data, sizeof(float) * in->n * f->dim);
  }
  return 0;
}

/* The prefetch producer: batch k is step start_step + k, batch step % spe of epoch step / spe. */
static int fill_step(void *ctx, long k, void *item, taca_error *err) {
  feed *f = ctx;
  feed_batch *b = item;
  const long step = f->o.start_step + k, epoch = step / f->spe, want = step % f->spe;
  if (epoch != f->cur_epoch) {
    if (f->ep) taca_epoch_close(f->ep);
    f->ep = NULL;
    taca_epoch_options eo = {.seed = f->o.seed, .epoch = (uint64_t)epoch, .rank = (uint32_t)f->o.rank,
                             .world_size = (uint32_t)f->o.world, .batch_size = (uint32_t)f->o.local_batch,
                             .drop_last = 1};
    eo.fields.pixels = 1;
    if (f->aft) {
      eo.fields.labels = 1;
      eo.fields.n_embeddings = f->n_feat;
      for (int e = 0; e < f->n_feat; e++) {
        eo.fields.embeddings[e].model = f->feat_models[e]->name;
        eo.fields.embeddings[e].modality = TACA_IMAGE;
      }
    } else {
      eo.fields.n_embeddings = 2;
      eo.fields.embeddings[0].model = f->target->name;
      eo.fields.embeddings[0].modality = TACA_IMAGE;
      eo.fields.embeddings[1].model = f->target->name;
      eo.fields.embeddings[1].modality = TACA_TEXT;
    }
    eo.fields.embeddings_as_f32 = 1;
    /* A run resumed mid-epoch starts the stream at its batch: nothing before it is sent. */
    eo.start_batch = (uint64_t)want;
    if (taca_epoch_open(f->client, &eo, &f->ep, err)) return -1;
    f->cur_epoch = epoch;
    f->pos = want;
  }
  /* This step's batch: the stream's next one (pos == want). */
  taca_batch tb;
  int got = 0;
  while (f->pos <= want) {
    got = taca_epoch_next(f->ep, &tb, err);
    if (got <= 0) break;
    if (f->pos < want) taca_batch_free(&tb);
    f->pos++;
  }
  if (got < 0) return -1;
  if (got == 0)
    return taca_fail(err, "epoch %ld ended after %ld batches, expected %ld (did the store change?)", epoch, f->pos,
                     f->spe);
  const int rc = convert(f, &tb, b, err);
  taca_batch_free(&tb);
  b->step = step;
  return rc ? -1 : 1;
}

int feed_open(feed **out, const feed_options *o, taca_error *err) {
  feed *f = calloc(1, sizeof *f);
  if (!f) return taca_fail(err, "out of memory");
  f->o = *o;
  if (f->o.depth <= 0) f->o.depth = 2;
  if (f->o.depth > MAX_DEPTH) f->o.depth = MAX_DEPTH;
  f->cur_epoch = -1;
  if (taca_client_connect(&f->client, o->servers, &o->client, err)) goto fail;
  const taca_dataset_info *info = taca_client_info(f->client);
  if (o->features) {
    f->aft = 1;
    snprintf(f->features, sizeof f->features, "%s", o->features);
    char *save = NULL;
    for (char *name = strtok_r(f->features, ",", &save); name; name = strtok_r(NULL, ",", &save)) {
      int i = taca_client_find_model(f->client, name);
      if (i < 0) {
        char known[512] = "";
        for (int k = 0; k < info->n_models; k++)
          snprintf(known + strlen(known), sizeof known - strlen(known), "%s'%s'", k ? ", " : "", info->models[k].name);
        taca_fail(err, "--features: '%s' is not stored on the servers (stored: %s)", name, known);
        goto fail;
      }
      if (f->n_feat == TACA_CLIENT_MAX_EMB) {
        taca_fail(err, "--features names more than %d models", TACA_CLIENT_MAX_EMB);
        goto fail;
      }
      for (int k = 0; k < f->n_feat; k++)
        if (f->feat_models[k] == &info->models[i]) {
          taca_fail(err, "--features names '%s' twice", name);
          goto fail;
        }
      if (info->models[i].image_dim <= 0) {
        taca_fail(err, "--features: model '%s' has no image embeddings stored", name);
        goto fail;
      }
      f->feat_models[f->n_feat] = &info->models[i];
      f->feat_dims[f->n_feat] = info->models[i].image_dim;
      f->feat_dim += info->models[i].image_dim;
      f->n_feat++;
    }
    if (!f->n_feat) {
      taca_fail(err, "--features names no model");
      goto fail;
    }
  } else if (o->targets) {
    int i = taca_client_find_model(f->client, o->targets);
    if (i < 0) {
      char known[512] = "";
      for (int k = 0; k < info->n_models; k++)
        snprintf(known + strlen(known), sizeof known - strlen(known), "%s'%s'", k ? ", " : "", info->models[k].name);
      taca_fail(err, "--targets '%s' is not stored on the servers (stored: %s)", o->targets, known);
      goto fail;
    }
    f->target = &info->models[i];
  } else if (info->n_models == 1) {
    f->target = &info->models[0];
  } else {
    taca_fail(err, "the servers store %d models: choose the targets with --targets NAME", info->n_models);
    goto fail;
  }
  if (!f->aft && (f->target->image_dim <= 0 || f->target->text_dim != f->target->image_dim)) {
    taca_fail(err, "target model '%s' needs image and text embeddings of one size (has %d and %d)",
              f->target->name, f->target->image_dim, f->target->text_dim);
    goto fail;
  }
  if (!f->aft) f->dim = f->target->image_dim;
  if (!info->has_pixels || (strcmp(info->pixel_codec, "raw") && strcmp(info->pixel_codec, "jpeg")) ||
      (o->image_size && info->pixel_size != o->image_size)) {
    if (o->image_size)
      taca_fail(err, "the store holds %s pixels of %d px; the model needs %d px crops",
                info->has_pixels ? info->pixel_codec : "no", info->pixel_size, o->image_size);
    else
      taca_fail(err, "the store holds %s pixels; training needs stored crops", info->has_pixels ? info->pixel_codec : "no");
    goto fail;
  }
  f->image_size = info->pixel_size;
  snprintf(f->codec, sizeof f->codec, "%s", info->pixel_codec);
  if (!(f->chw = malloc((size_t)3 * f->image_size * f->image_size))) {
    taca_fail(err, "out of memory");
    goto fail;
  }
  f->spe = (long)(info->samples / ((uint64_t)o->local_batch * o->world));
  if (f->spe < 1) {
    taca_fail(err, "the store has %llu samples, fewer than one global batch of %d",
              (unsigned long long)info->samples, o->local_batch * o->world);
    goto fail;
  }
  for (int i = 0; i < f->o.depth + 1; i++) {
    if (!(f->items[f->nitems] = batch_alloc(f))) {
      taca_fail(err, "out of memory for batches");
      goto fail;
    }
    f->nitems++;
  }
  if (taca_prefetch_start(&f->q, (void *const *)f->items, f->nitems, fill_step, f, err)) goto fail;
  *out = f;
  return 0;
fail:
  feed_close(f);
  return -1;
}

void feed_close(feed *f) {
  if (!f) return;
  taca_prefetch_stop(f->q, NULL); /* the batches are ours again; then the producer's stream */
  if (f->ep) taca_epoch_close(f->ep);
  for (int i = 0; i < f->nitems; i++) batch_destroy(f, f->items[i]);
  taca_client_close(f->client);
  free(f->chw);
  free(f);
}

int feed_next(feed *f, feed_batch **b, double *wait_s, taca_error *err) {
  double t0 = taca_now_s();
  void *item = NULL;
  const int got = taca_prefetch_next(f->q, &item, err);
  if (wait_s) *wait_s = taca_now_s() - t0;
  if (got < 0) return -1;
  if (got == 0) return taca_fail(err, "the batch stream ended");
  *b = item;
  return 0;
}

void feed_release(feed *f, feed_batch *b) { taca_prefetch_release(f->q, b); }

long feed_steps_per_epoch(const feed *f) { return f->spe; }
int feed_image_size(const feed *f) { return f->image_size; }
int feed_feature_dim(const feed *f) { return f->feat_dim; }

int feed_feature_models(const feed *f, const taca_model_desc **models, int *dims, int max) {
  int n = f->n_feat < max ? f->n_feat : max;
  for (int i = 0; i < n; i++) {
    if (models) models[i] = f->feat_models[i];
    if (dims) dims[i] = f->feat_dims[i];
  }
  return f->n_feat;
}
const taca_model_desc *feed_target(const feed *f) { return f->target; }
const taca_dataset_info *feed_info(const feed *f) { return taca_client_info(f->client); }
