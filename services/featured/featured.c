/* featured.c: opening the store for serving, and the periodically refreshed snapshot of its info. */
#include "services/featured/featured.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "services/featured/epoch.h"
#include "services/featured/log.h"
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
  featured_load_ann(f);
  return 0;
}

void featured_load_ann(featured *f) {
  const store_info *si = &f->snap.info;
  for (int i = 0; i < si->n_models; i++)
    for (int m = 0; m < 2; m++) {
      const store_model *sm = &si->models[i];
      if ((m == STORE_IMAGE ? sm->image_dim : sm->text_dim) <= 0) continue;
      taca_error e = {{0}};
      if (ann_open(f->store, sm->name, (store_modality)m, &f->ann[i][m], &e)) {
        snprintf(f->ann_error[i][m], sizeof f->ann_error[i][m], "%s", e.msg);
        log_msg(LOG_WARN, "ANN index not loaded, Search with ann will fail: %s", e.msg);
      } else if (f->ann[i][m]) {
        const ann_info *ai = ann_index_info(f->ann[i][m]);
        log_msg(LOG_INFO, "ANN index of '%s' (%s): %s, %lld vectors, %s%s", sm->name,
                store_modality_name((store_modality)m), ai->factory, (long long)ai->vectors, ai->metric,
                ai->mapped ? ", memory-mapped" : "");
      } else {
        snprintf(f->ann_error[i][m], sizeof f->ann_error[i][m],
                 "model '%s' has no %s ANN index on this server (build one with taca index --model %s, then restart)",
                 sm->name, store_modality_name((store_modality)m), sm->name);
      }
    }
}

void featured_close(featured *f) {
  for (int i = 0; i < STORE_MAX_MODELS; i++)
    for (int m = 0; m < 2; m++) {
      ann_close(f->ann[i][m]);
      f->ann[i][m] = NULL;
    }
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

featured_state featured_advance(featured *f, featured_state to) {
  int cur = atomic_load(&f->state);
  while (cur < (int)to && !atomic_compare_exchange_weak(&f->state, &cur, (int)to)) {
  }
  return (featured_state)cur;
}
