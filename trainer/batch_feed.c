/* batch_feed.c: prefetching of training batches from StreamEpoch on a background thread. A run
 * resumed mid-epoch opens the epoch's stream at its batch (start_batch on the wire): no batch
 * before it is sent or decoded. */
#include "base/clock.h"
#include "trainer/batch_feed.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

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
  pthread_t thread;
  int started;
  pthread_mutex_t mu;
  pthread_cond_t cv;
  feed_batch *ready[MAX_DEPTH];
  int nready, stop, failed;
  taca_error err;
  feed_batch *pool[MAX_DEPTH + 1]; /* free batches */
  int npool;
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

static void *feed_main(void *arg) {
  feed *f = arg;
  taca_error err = {{0}};
  taca_epoch *ep = NULL;
  long cur_epoch = -1, pos = 0;
  int rc = 0;
  for (long step = f->o.start_step;; step++) {
    long epoch = step / f->spe, want = step % f->spe;
    if (epoch != cur_epoch) {
      if (ep) taca_epoch_close(ep);
      ep = NULL;
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
      if ((rc = taca_epoch_open(f->client, &eo, &ep, &err))) break;
      cur_epoch = epoch;
      pos = want;
    }
    /* This step's batch: the stream's next one (pos == want). */
    taca_batch tb;
    int got = 0;
    while (pos <= want) {
      got = taca_epoch_next(ep, &tb, &err);
      if (got <= 0) break;
      if (pos < want) taca_batch_free(&tb);
      pos++;
    }
    if (got < 0) {
      rc = -1;
      break;
    }
    if (got == 0) {
      rc = taca_fail(&err, "epoch %ld ended after %ld batches, expected %ld (did the store change?)", epoch, pos, f->spe);
      break;
    }
    pthread_mutex_lock(&f->mu);
    while (f->npool == 0 && !f->stop) pthread_cond_wait(&f->cv, &f->mu);
    feed_batch *b = f->stop ? NULL : f->pool[--f->npool];
    pthread_mutex_unlock(&f->mu);
    if (!b) {
      taca_batch_free(&tb);
      break;
    }
    rc = convert(f, &tb, b, &err);
    taca_batch_free(&tb);
    b->step = step;
    pthread_mutex_lock(&f->mu);
    if (rc) f->pool[f->npool++] = b;
    else f->ready[f->nready++] = b;
    pthread_cond_broadcast(&f->cv);
    int stop = f->stop;
    pthread_mutex_unlock(&f->mu);
    if (rc || stop) break;
  }
  if (ep) taca_epoch_close(ep);
  pthread_mutex_lock(&f->mu);
  if (rc) {
    f->failed = 1;
    f->err = err;
  }
  f->stop = 1;
  pthread_cond_broadcast(&f->cv);
  pthread_mutex_unlock(&f->mu);
  return NULL;
}

int feed_open(feed **out, const feed_options *o, taca_error *err) {
  feed *f = calloc(1, sizeof *f);
  if (!f) return taca_fail(err, "out of memory");
  f->o = *o;
  if (f->o.depth <= 0) f->o.depth = 2;
  if (f->o.depth > MAX_DEPTH) f->o.depth = MAX_DEPTH;
  pthread_mutex_init(&f->mu, NULL);
  pthread_cond_init(&f->cv, NULL);
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
    if (!(f->pool[f->npool] = batch_alloc(f))) {
      taca_fail(err, "out of memory for batches");
      goto fail;
    }
    f->npool++;
  }
  if (pthread_create(&f->thread, NULL, feed_main, f)) {
    taca_fail(err, "cannot start the batch thread");
    goto fail;
  }
  f->started = 1;
  *out = f;
  return 0;
fail:
  feed_close(f);
  return -1;
}

void feed_close(feed *f) {
  if (!f) return;
  if (f->started) {
    pthread_mutex_lock(&f->mu);
    f->stop = 1;
    pthread_cond_broadcast(&f->cv);
    pthread_mutex_unlock(&f->mu);
    pthread_join(f->thread, NULL);
  }
  for (int i = 0; i < f->nready; i++) batch_destroy(f, f->ready[i]);
  for (int i = 0; i < f->npool; i++) batch_destroy(f, f->pool[i]);
  taca_client_close(f->client);
  free(f->chw);
  pthread_mutex_destroy(&f->mu);
  pthread_cond_destroy(&f->cv);
  free(f);
}

int feed_next(feed *f, feed_batch **b, double *wait_s, taca_error *err) {
  double t0 = taca_now_s();
  pthread_mutex_lock(&f->mu);
  while (f->nready == 0 && !f->stop) pthread_cond_wait(&f->cv, &f->mu);
  int rc = 0;
  if (f->nready > 0) {
    *b = f->ready[0];
    memmove(f->ready, f->ready + 1, sizeof f->ready[0] * --f->nready);
  } else {
    rc = f->failed ? (*err = f->err, -1) : taca_fail(err, "the batch stream ended");
  }
  pthread_mutex_unlock(&f->mu);
  if (wait_s) *wait_s = taca_now_s() - t0;
  return rc;
}

void feed_release(feed *f, feed_batch *b) {
  pthread_mutex_lock(&f->mu);
  f->pool[f->npool++] = b;
  pthread_cond_broadcast(&f->cv);
  pthread_mutex_unlock(&f->mu);
}

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
