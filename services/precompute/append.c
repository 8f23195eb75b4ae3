/* append.c: `taca precompute --append` (see append.h). */
#include "services/precompute/append.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "services/precompute/data_source.h"
#include "services/precompute/inputs.h"

static uint64_t jget_u64(json_t *o, const char *k) {
  json_t *v = json_object_get(o, k);
  return json_is_integer(v) ? (uint64_t)json_integer_value(v) : 0;
}

/* The ingest record's preprocessing order against this build's (precompute.h). */
int precompute_check_order(json_t *prog, const char *db, taca_error *err) {
  const char *order = json_string_value(json_object_get(prog, "preprocessing_order"));
  json_t *acc = json_object_get(prog, "accepted");
  if ((order && !strcmp(order, PRECOMPUTE_PREPROCESSING_ORDER)) || !json_is_integer(acc) || !json_integer_value(acc))
    return 0;
  return taca_fail(err, "%s: the stored samples were preprocessed %s; this taca resizes images in their PIL mode "
                   "before the RGB conversion (%s), which differs for RGBA, LA, P, 1, CMYK and 16-bit gray sources: "
                   "finish or grow this store with the taca that started it, or ingest everything into a new store",
                   db, order ? order : "with the RGB conversion first (an ingest record without preprocessing_order)",
                   PRECOMPUTE_PREPROCESSING_ORDER);
}

static const char *jget_str(json_t *o, const char *k) {
  const char *s = json_string_value(json_object_get(o, k));
  return s ? s : "";
}

static int same_content(json_t *a, json_t *b) {
  return jget_u64(a, "size") == jget_u64(b, "size") && !strcmp(jget_str(a, "fingerprint"), jget_str(b, "fingerprint"));
}

void append_plan_free(append_plan *p) {
  for (int i = 0; p->paths && i < p->npaths; i++) free(p->paths[i]);
  free(p->paths);
  json_decref(p->prog);
  memset(p, 0, sizeof *p);
}

static int add_path(append_plan *p, const char *path, taca_error *err) {
  char **np = realloc(p->paths, sizeof *np * (size_t)(p->npaths + 1));
  if (!np) return taca_fail(err, "out of memory");
  p->paths = np;
  if (!(p->paths[p->npaths] = strdup(path))) return taca_fail(err, "out of memory");
  p->npaths++;
  return 0;
}

static int has_path(const append_plan *p, const char *path) {
  for (int i = 0; i < p->npaths; i++)
    if (!strcmp(p->paths[i], path)) return 1;
  return 0;
}

/* The store's stored pixels against what this run would store. */
static int check_pixels(const store_info *info, const precompute_opts *o, int image_size, taca_error *err) {
  const int sp = o->pixel_size > 0 ? o->pixel_size : image_size;
  const char *codec = o->jpeg_quality > 0 ? "jpeg" : "raw";
  if (!info->has_pixel_format && o->store_pixels && info->n_samples)
    return taca_fail(err, "%s: the store keeps no pixels (ingested with --no-pixels): append with --no-pixels", o->db);
  if (info->has_pixel_format && !o->store_pixels)
    return taca_fail(err, "%s: the store keeps %s crops of %d pixels: append without --no-pixels", o->db,
                     info->pixel.codec, info->pixel.size);
  if (info->has_pixel_format && (info->pixel.size != sp || strcmp(info->pixel.codec, codec)))
    return taca_fail(err, "%s: the store keeps %s crops of %d pixels, this run would store %s crops of %d: append "
                     "with the --pixel-size/--pixel-codec of the ingest", o->db, info->pixel.codec, info->pixel.size,
                     codec, sp);
  return 0;
}

int append_prepare(taca_store *s, const precompute_opts *o, const char *model, int image_size, json_t *prog,
                   append_plan *p, taca_error *err) {
  memset(p, 0, sizeof *p);
  p->run = *o;
  const char *pm = jget_str(prog, "model");
  if (o->nshards != 1 || jget_u64(prog, "nshards") != 1)
    return taca_fail(err, "%s: --append works on a store of one shard (this is shard %d/%d, recorded %llu/%llu): "
                     "the indices of the next shard's store would follow", o->db, o->shard, o->nshards,
                     (unsigned long long)jget_u64(prog, "shard"), (unsigned long long)jget_u64(prog, "nshards"));
  if (strcmp(pm, model))
    return taca_fail(err, "%s: append with the model that ingested the store ('%s', this run is '%s'): it embeds the "
                     "new samples as it reads them; the store's other models embed them afterwards "
                     "(taca precompute --db %s --model PATH --name NAME)", o->db, pm, model, o->db);
  json_t *rec = json_object_get(prog, "inputs");
  if (!json_is_array(rec)) return taca_fail(err, "%s: the ingest record lists no inputs", o->db);
  const int done = json_is_true(json_object_get(prog, "done"));

  /* What is stored: pixels, range, and how the samples were preprocessed. */
  store_view *v;
  store_info info;
  if (store_view_begin(s, &v, err)) return -1;
  int rc = store_get_info(v, &info, err);
  store_view_end(v);
  if (rc) return -1;
  if (precompute_check_order(prog, o->db, err)) return -1;
  if (check_pixels(&info, o, image_size, err)) return -1;

  /* The inputs of the run: the recorded ones, then those given that are not among them. */
  size_t i;
  json_t *r;
  json_array_foreach(rec, i, r) if (add_path(p, jget_str(r, "path"), err)) goto fail;
  const int n_rec = p->npaths;
  for (int k = 0; k < o->ndata; k++) {
    char **exp = NULL;
    int n = ds_expand_braces(o->data[k], &exp, err);
    if (n < 0) goto fail;
    int bad = 0;
    for (int j = 0; j < n; j++) {
      if (!bad && !has_path(p, exp[j])) bad = add_path(p, exp[j], err);
      free(exp[j]);
    }
    free(exp);
    if (bad) goto fail;
  }
  p->n_new = p->npaths - n_rec;
  if (p->n_new == 0 && done) {
    taca_fail(err, "%s: nothing to append: %s already ingested (a store takes each input once)", o->db,
              o->ndata == 1 ? "the input given is" : "every input given is");
    goto fail;
  }

  /* Every input read again: the recorded ones must not have changed, the new ones must be new. */
  data_source *ds;
  if (ds_open(&ds, p->paths, p->npaths, 0, 1, err)) goto fail;
  json_t *now = inputs_record(ds);
  ds_close(ds);
  json_t *old = json_array();
  if (!now || !old) {
    json_decref(now), json_decref(old);
    taca_fail(err, "out of memory");
    goto fail;
  }
  for (int k = 0; k < n_rec; k++) json_array_append(old, json_array_get(now, (size_t)k));
  char why[768];
  if (inputs_differ(rec, old, why, sizeof why)) {
    json_decref(now), json_decref(old);
    taca_fail(err, "%s: an ingested input changed: %s (appending keeps the ingested inputs as they were)", o->db, why);
    goto fail;
  }
  json_decref(old);
  for (int k = n_rec; k < p->npaths; k++) {
    json_t *a = json_array_get(now, (size_t)k);
    for (int j = 0; j < k; j++) {
      json_t *b = json_array_get(now, (size_t)j);
      if (!same_content(a, b)) continue;
      if (j < n_rec)
        taca_fail(err, "%s: '%s' is already ingested: it has the size and content fingerprint of '%s'", o->db,
                  p->paths[k], p->paths[j]);
      else
        taca_fail(err, "%s: '%s' and '%s' have the same size and content fingerprint: append each input once", o->db,
                  p->paths[j], p->paths[k]);
      json_decref(now);
      goto fail;
    }
    p->new_entries += jget_u64(a, "entries");
  }
  if (p->n_new && p->new_entries == 0) {
    json_decref(now);
    taca_fail(err, "%s: nothing to append: the new inputs hold no entry", o->db);
    goto fail;
  }

  /* The record to continue from. */
  if (!(p->prog = json_deep_copy(prog))) {
    json_decref(now);
    taca_fail(err, "out of memory");
    goto fail;
  }
  json_object_set_new(p->prog, "inputs", now);
  if (done && p->n_new) {
    json_object_set_new(p->prog, "done", json_false());
    json_object_set_new(p->prog, "input", json_integer(n_rec));
    json_object_set_new(p->prog, "entry", json_integer(0));
  }
  if (info.has_range && p->n_new) {
    p->extend_range = 1;
    p->range = info.range;
    p->range.end += p->new_entries; /* an upper bound; the end of the ingest sets the exact end */
  }
  p->run.data = p->paths;
  p->run.ndata = p->npaths;
  p->run.index_base = (int64_t)jget_u64(prog, "base");
  return 0;
fail:
  append_plan_free(p);
  return -1;
}

int append_commit(taca_store *s, const append_plan *p, taca_error *err) {
  if (!p->n_new) return 0;
  store_txn *t;
  char *js = json_dumps(p->prog, JSON_COMPACT | JSON_SORT_KEYS);
  if (!js) return taca_fail(err, "out of memory");
  if (store_txn_begin(s, &t, err)) {
    free(js);
    return -1;
  }
  int ok = store_put_meta(t, "progress/ingest", js, strlen(js), err) == 0 &&
           (!p->extend_range || store_set_range(t, &p->range, err) == 0);
  free(js);
  if (!ok) {
    store_txn_abort(t);
    return -1;
  }
  return store_txn_commit(t, err);
}

int append_report_models(taca_store *s, const char *model, const char *db) {
  store_view *v;
  store_info info;
  taca_error e = {{0}};
  if (store_view_begin(s, &v, &e)) return 0;
  int rc = store_get_info(v, &info, &e);
  store_view_end(v);
  if (rc) return 0;
  int n = 0;
  for (int id = 0; id < info.n_models; id++) {
    const store_model *m = &info.models[id];
    if (!strcmp(m->name, model)) continue;
    uint64_t have = info.n_embeddings[id][m->image_dim ? STORE_IMAGE : STORE_TEXT];
    if (have >= info.n_samples) continue;
    n++;
    unsigned long long miss = (unsigned long long)(info.n_samples - have);
    if (!strcmp(m->arch, "external") || !strcmp(m->arch, "random"))
      fprintf(stderr, "precompute: model '%s' (from add-features) has no embeddings of %llu samples: drop it "
              "(taca drop-model --db %s --name %s) and add it again with rows for every sample\n", m->name, miss, db,
              m->name);
    else
      fprintf(stderr, "precompute: model '%s' has no embeddings of %llu samples: run "
              "`taca precompute --db %s --model PATH --name %s` with its weights (%s) to embed them\n", m->name, miss,
              db, m->name, m->arch);
  }
  return n;
}
