/* featured.c: opening the store for serving, and the periodically refreshed snapshot of its info. */
#include "services/featured/featured.h"

#include <stdlib.h>
#include <string.h>

#include "services/featured/epoch.h"
#include "services/featured/metrics.h"
#include "services/featured/textenc.h"

int featured_refresh(featured *f, taca_error *err) {
  store_view *v;
  if (store_view_begin(f->store, &v, err)) return -1;
  featured_snapshot *s = malloc(sizeof *s);
  if (!s) {
    store_view_end(v);
    return taca_fail(err, "out of memory");
  }
  int rc = store_get_info(v, &s->info, err);
  store_view_end(v);
  if (rc) {
    free(s);
    return -1;
  }
  const store_info *in = &s->info;
  if (in->has_range) {
    s->begin = in->range.begin;
    s->end = in->range.end;
  } else if (in->n_samples) {
    s->begin = in->first_index;
    s->end = in->last_index + 1;
  } else {
    s->begin = s->end = 0;
  }
  pthread_rwlock_wrlock(&f->snap_lock);
  f->snap = *s;
  pthread_rwlock_unlock(&f->snap_lock);
  free(s);
  return 0;
}

void featured_snapshot_get(featured *f, featured_snapshot *out) {
  pthread_rwlock_rdlock(&f->snap_lock);
  *out = f->snap;
  pthread_rwlock_unlock(&f->snap_lock);
}

int featured_open(featured *f, const featured_config *cfg, taca_error *err) {
  memset(f, 0, sizeof *f);
  f->cfg = *cfg;
  pthread_rwlock_init(&f->snap_lock, NULL);
  store_options so = {.readonly = 1};
  if (store_open(&f->store, cfg->db, &so, err)) {
    taca_error_prefix(err, "--db %s", cfg->db);
    featured_close(f);
    return -1;
  }
  f->metrics = metrics_create();
  f->epochs = epoch_cache_create(4);
  if (!f->metrics || !f->epochs) {
    featured_close(f);
    return taca_fail(err, "out of memory");
  }
  if (featured_refresh(f, err) || text_towers_load(&f->towers, cfg, &f->snap.info, err)) {
    featured_close(f);
    return -1;
  }
  return 0;
}

void featured_close(featured *f) {
  text_towers_free(f->towers);
  epoch_cache_free(f->epochs);
  metrics_free(f->metrics);
  store_close(f->store);
  pthread_rwlock_destroy(&f->snap_lock);
  f->towers = NULL;
  f->epochs = NULL;
  f->metrics = NULL;
  f->store = NULL;
}
