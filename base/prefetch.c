/* prefetch.c: the producer thread and the two item lists of taca_prefetch (see prefetch.h). */
#include "base/prefetch.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

struct taca_prefetch {
  taca_prefetch_fill fill;
  void *ctx;
  pthread_t thread;
  pthread_mutex_t mu;
  pthread_cond_t cv;
  void *free_items[TACA_PREFETCH_MAX_ITEMS];
  int nfree;
  void *ready[TACA_PREFETCH_MAX_ITEMS]; /* in fill order */
  int nready;
  int stop, ended, failed;
  taca_error err;
};

static void *producer(void *arg) {
  taca_prefetch *q = arg;
  for (long k = 0;; k++) {
    pthread_mutex_lock(&q->mu);
    while (q->nfree == 0 && !q->stop) pthread_cond_wait(&q->cv, &q->mu);
    void *item = q->stop ? NULL : q->free_items[--q->nfree];
    pthread_mutex_unlock(&q->mu);
    if (!item) return NULL;
    taca_error err = {{0}};
    const int rc = q->fill(q->ctx, k, item, &err);
    pthread_mutex_lock(&q->mu);
    if (rc > 0) {
      q->ready[q->nready++] = item;
    } else {
      q->free_items[q->nfree++] = item;
      if (rc < 0) q->failed = 1, q->err = err;
      q->ended = 1;
    }
    pthread_cond_broadcast(&q->cv);
    pthread_mutex_unlock(&q->mu);
    if (rc <= 0) return NULL;
  }
}

int taca_prefetch_start(taca_prefetch **out, void *const *items, int n_items, taca_prefetch_fill fill, void *ctx,
                        taca_error *err) {
  *out = NULL;
  if (n_items < 1 || n_items > TACA_PREFETCH_MAX_ITEMS || !fill)
    return taca_fail(err, "prefetch: %d items (1..%d) and a fill function needed", n_items, TACA_PREFETCH_MAX_ITEMS);
  taca_prefetch *q = calloc(1, sizeof *q);
  if (!q) return taca_fail(err, "out of memory");
  q->fill = fill;
  q->ctx = ctx;
  for (int i = 0; i < n_items; i++) q->free_items[n_items - 1 - i] = items[i]; /* items[0] filled first */
  q->nfree = n_items;
  pthread_mutex_init(&q->mu, NULL);
  pthread_cond_init(&q->cv, NULL);
  if (pthread_create(&q->thread, NULL, producer, q)) {
    pthread_mutex_destroy(&q->mu);
    pthread_cond_destroy(&q->cv);
    free(q);
    return taca_fail(err, "prefetch: cannot start its thread");
  }
  *out = q;
  return 0;
}

int taca_prefetch_next(taca_prefetch *q, void **item, taca_error *err) {
  pthread_mutex_lock(&q->mu);
  while (q->nready == 0 && !q->ended) pthread_cond_wait(&q->cv, &q->mu);
  int rc;
  if (q->nready > 0) {
    *item = q->ready[0];
    memmove(q->ready, q->ready + 1, sizeof q->ready[0] * --q->nready);
    rc = 1;
  } else if (q->failed) {
    if (err) *err = q->err;
    rc = -1;
  } else {
    rc = 0;
  }
  pthread_mutex_unlock(&q->mu);
  return rc;
}

void taca_prefetch_release(taca_prefetch *q, void *item) {
  pthread_mutex_lock(&q->mu);
  q->free_items[q->nfree++] = item;
  pthread_cond_broadcast(&q->cv);
  pthread_mutex_unlock(&q->mu);
}

void taca_prefetch_stop(taca_prefetch *q, void (*drop)(void *ctx, void *item)) {
  if (!q) return;
  pthread_mutex_lock(&q->mu);
  q->stop = 1;
  pthread_cond_broadcast(&q->cv);
  pthread_mutex_unlock(&q->mu);
  pthread_join(q->thread, NULL);
  if (drop)
    for (int i = 0; i < q->nready; i++) drop(q->ctx, q->ready[i]);
  pthread_mutex_destroy(&q->mu);
  pthread_cond_destroy(&q->cv);
  free(q);
}
