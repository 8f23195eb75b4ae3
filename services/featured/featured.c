/* featured.c: opening the store for serving, and the periodically refreshed snapshot of its info. */
#include "services/featured/featured.h"

#include <grpc/status.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "services/featured/encoders.h"
#include "services/featured/epoch.h"
#include "services/featured/log.h"
#include "services/featured/metrics.h"

int snapshot_resolve(const featured_snapshot *s, const char *name) {
  for (int m = 0; m < s->info.n_models; m++)
    if (!strcmp(s->info.models[m].name, name)) return m;
  const featured_alias *a = alias_find(&s->aliases, name);
  if (!a) return -1;
  for (int m = 0; m < s->info.n_models; m++)
    if (!strcmp(s->info.models[m].name, a->target)) return m;
  return -1;
}

/* The space and kind of every model, from its provenance record (precompute writes
 * "provenance/NAME"); stores without one: the weights hash, else the model's own name. */
static void read_spaces(store_view *v, featured_snapshot *s) {
  for (int i = 0; i < s->info.n_models; i++) {
    const store_model *m = &s->info.models[i];
    char key[96];
    snprintf(key, sizeof key, "provenance/%s", m->name);
    const void *val = NULL;
    size_t len = 0;
    taca_error e;
    s->kind[i][0] = '\0';
    char own[FEATURED_SPACE_MAX]; /* through a local: the compiler cannot tell the fields of s apart */
    if (m->weights_xxh[0]) snprintf(own, sizeof own, "%.*s", (int)sizeof m->weights_xxh, m->weights_xxh);
    else snprintf(own, sizeof own, "model:%.40s", m->name);
    memcpy(s->space[i], own, sizeof own);
    if (store_get_meta(v, key, &val, &len, &e) || !val) continue;
    json_t *j = json_loadb(val, len, 0, NULL);
    const char *sp = json_string_value(json_object_get(j, "space")), *kd = json_string_value(json_object_get(j, "kind"));
    if (sp && sp[0]) snprintf(s->space[i], sizeof s->space[i], "%s", sp);
    if (kd) snprintf(s->kind[i], sizeof s->kind[i], "%s", kd);
    json_decref(j);
  }
}

int featured_refresh(featured *f, taca_error *err) {
  store_view *v;
  if (store_view_begin(f->store, &v, err)) return -1;
  featured_snapshot *s = malloc(sizeof *s);
  if (!s) {
    store_view_end(v);
    return taca_fail(err, "out of memory");
  }
  int rc = store_get_info(v, &s->info, err);
  if (rc == 0) read_spaces(v, s);
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
  s->aliases = f->snap.aliases; /* SetAlias owns the table */
  f->snap = *s;
  pthread_rwlock_unlock(&f->snap_lock);
  free(s);
  return 0;
}

int featured_set_alias(featured *f, const char *name, const char *target, int allow_space_change, uint64_t if_version,
                       featured_alias *now, char previous[STORE_NAME_MAX], int *code, taca_error *err) {
  featured_snapshot *s = malloc(sizeof *s);
  if (!s) {
    *code = GRPC_STATUS_RESOURCE_EXHAUSTED;
    return taca_fail(err, "out of memory");
  }
  int rc = -1;
  memset(now, 0, sizeof *now);
  previous[0] = '\0';
  pthread_mutex_lock(&f->alias_mu);
  featured_snapshot_get(f, s);
  *code = GRPC_STATUS_INVALID_ARGUMENT;
  if (alias_check_name(name, err)) goto out;
  for (int m = 0; m < s->info.n_models; m++)
    if (!strcmp(s->info.models[m].name, name)) {
      taca_fail(err, "'%s' is a stored model's name; an alias needs a name of its own", name);
      goto out;
    }
  const featured_alias *cur = alias_find(&s->aliases, name);
  if (cur) snprintf(previous, STORE_NAME_MAX, "%s", cur->target);
  if (if_version && (!cur || cur->version != if_version)) {
    *code = GRPC_STATUS_ABORTED;
    taca_fail(err, "alias '%s' is at version %llu, not %llu (changed meanwhile: read Info and retry)", name,
              cur ? (unsigned long long)cur->version : 0ULL, (unsigned long long)if_version);
    goto out;
  }
  if (target[0]) {
    int to = -1;
    for (int m = 0; m < s->info.n_models; m++)
      if (!strcmp(s->info.models[m].name, target)) to = m;
    if (to < 0) { /* a model precompute added since the last refresh: look again now */
      taca_error rerr;
      if (featured_refresh(f, &rerr) == 0) {
        featured_snapshot_get(f, s);
        for (int m = 0; m < s->info.n_models; m++)
          if (!strcmp(s->info.models[m].name, target)) to = m;
      }
    }
    if (to < 0) {
      *code = alias_find(&s->aliases, target) ? GRPC_STATUS_INVALID_ARGUMENT : GRPC_STATUS_NOT_FOUND;
      taca_fail(err, "%s '%s' %s", "alias target", target,
                alias_find(&s->aliases, target) ? "is an alias: point at a stored model" : "is not a model in this store");
      goto out;
    }
    int from = cur ? snapshot_resolve(s, name) : -1;
    if (from >= 0 && strcmp(s->space[from], s->space[to]) && !allow_space_change) {
      *code = GRPC_STATUS_FAILED_PRECONDITION;
      taca_fail(err, "alias '%s': '%s' (space %s) and '%s' (space %s) live in different embedding spaces; clients of "
                "'%s' would get incomparable vectors (allow_space_change to do it anyway)", name, s->info.models[from].name,
                s->space[from], target, s->space[to], name);
      goto out;
    }
  } else if (!cur) {
    *code = GRPC_STATUS_NOT_FOUND;
    taca_fail(err, "alias '%s' does not exist (nothing to remove)", name);
    goto out;
  }
  alias_table t = s->aliases;
  if (alias_table_set(&t, name, target, err)) goto out;
  if (alias_table_save(f->alias_path, &t, err)) {
    *code = GRPC_STATUS_INTERNAL;
    taca_error_prefix(err, "the alias table was not changed");
    goto out;
  }
  pthread_rwlock_wrlock(&f->snap_lock);
  f->snap.aliases = t;
  pthread_rwlock_unlock(&f->snap_lock);
  const featured_alias *a = alias_find(&t, name);
  if (a) *now = *a;
  else snprintf(now->name, sizeof now->name, "%s", name);
  now->version = a ? a->version : t.version;
  rc = 0;
  *code = GRPC_STATUS_OK;
out:
  pthread_mutex_unlock(&f->alias_mu);
  free(s);
  return rc;
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
  pthread_mutex_init(&f->alias_mu, NULL);
  /* LMDB reader slots: every open StreamEpoch holds a view for its life, every unary call one for
   * its duration on a completion-queue thread, the HTTP pool one per search; plus the other
   * processes on the store (precompute, taca query). The table is sized when the lock file is
   * created: the first process to open the store sets it. */
  unsigned readers = (unsigned)(2 * cfg->max_streams + 16 * cfg->threads + 128);
  store_options so = {.readonly = 1, .max_readers = readers < 512 ? 512 : readers};
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
  if (cfg->aliases_path) snprintf(f->alias_path, sizeof f->alias_path, "%s", cfg->aliases_path);
  else snprintf(f->alias_path, sizeof f->alias_path, "%s/aliases.json", cfg->db);
  if (alias_table_load(f->alias_path, &f->snap.aliases, err)) {
    taca_error_prefix(err, "--aliases");
    featured_close(f);
    return -1;
  }
  if (featured_refresh(f, err) || featured_encoders_load(&f->encoders, cfg, &f->snap.info, err)) {
    featured_close(f);
    return -1;
  }
  for (int i = 0; i < f->snap.aliases.n; i++) {
    const featured_alias *a = &f->snap.aliases.a[i];
    if (snapshot_resolve(&f->snap, a->name) < 0)
      log_msg(LOG_WARN, "alias '%s' points at '%s', which is not in this store: calls naming it fail until SetAlias "
              "repoints it", a->name, a->target);
    else
      log_msg(LOG_INFO, "alias '%s' -> '%s' (version %llu)", a->name, a->target, (unsigned long long)a->version);
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
  featured_encoders_free(f->encoders);
  epoch_cache_free(f->epochs);
  metrics_free(f->metrics);
  store_close(f->store);
  pthread_rwlock_destroy(&f->snap_lock);
  pthread_mutex_destroy(&f->alias_mu);
  f->encoders = NULL;
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
