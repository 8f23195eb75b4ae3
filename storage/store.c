/* store.c: the store's environment, write transactions, read views, metadata (schema version, pixel
 * format, range, model records, free-form keys) and the info summary. Samples live in samples.c,
 * embedding blocks in embeddings.c, search in search.c, hashing in hash.c. */
#include "storage/store_internal.h"

#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>

#define DEFAULT_MAP_SIZE (sizeof(void *) >= 8 ? (uint64_t)1 << 40 : (uint64_t)1 << 30)
#define DEFAULT_MAX_READERS 512

/* ---------- small helpers ---------- */

/* The store a transaction belongs to (set as the environment's user context at open). */
static taca_store *store_of_txn(MDB_txn *txn) { return mdb_env_get_userctx(mdb_txn_env(txn)); }

int store_mdb_fail(taca_store *s, taca_error *err, int rc, const char *what) {
  if (store_rc_corrupt(rc)) return store_corrupt(err, "%s: %s", what, mdb_strerror(rc));
  if (rc == MDB_MAP_FULL)
    return taca_fail(err, "%s: store is full (map size %.1f GiB): raise --map-size", what,
                     s ? (double)s->map_size / (1u << 30) : 0.0);
  if (rc == MDB_READERS_FULL)
    return taca_fail(err, "%s: too many concurrent readers: end views sooner or raise max_readers", what);
  if (rc == MDB_MAP_RESIZED)
    return taca_fail(err, "%s: another process grew the store's map: reopen the store", what);
  return taca_fail(err, "%s: %s", what, mdb_strerror(rc));
}

void store_be64(uint8_t out[8], uint64_t v) {
  for (int i = 7; i >= 0; i--) { out[i] = (uint8_t)v; v >>= 8; }
}

uint64_t store_get_be64(const uint8_t in[8]) {
  uint64_t v = 0;
  for (int i = 0; i < 8; i++) v = (v << 8) | in[i];
  return v;
}

const char *store_modality_name(store_modality m) { return m == STORE_TEXT ? "text" : "image"; }

static int mkdir_p(const char *dir, taca_error *err) {
  char buf[4096];
  size_t n = strlen(dir);
  if (n == 0 || n >= sizeof buf) return taca_fail(err, "store directory name '%s' is empty or too long", dir);
  memcpy(buf, dir, n + 1);
  for (size_t i = 1; i <= n; i++) {
    if (buf[i] == '/' || buf[i] == '\0') {
      char c = buf[i];
      buf[i] = '\0';
      if (mkdir(buf, 0775) != 0 && errno != EEXIST)
        return taca_fail(err, "%s: cannot create directory: %s", buf, strerror(errno));
      buf[i] = c;
    }
  }
  return 0;
}

static int dump_json(json_t *j, char **out, taca_error *err, const char *what) {
  *out = json_dumps(j, JSON_COMPACT | JSON_SORT_KEYS | JSON_REAL_PRECISION(17));
  json_decref(j);
  if (!*out) return taca_fail(err, "%s: cannot encode JSON (out of memory)", what);
  return 0;
}

static int get_in(MDB_txn *txn, MDB_dbi dbi, const char *key, MDB_val *val, int *found, taca_error *err) {
  MDB_val k = {strlen(key), (void *)key};
  int rc = mdb_get(txn, dbi, &k, val);
  *found = rc == 0;
  char what[600];
  snprintf(what, sizeof what, "meta '%s'", key);
  if (rc == MDB_NOTFOUND)
    return store_confirm_absent(store_of_txn(txn), txn, dbi, TAG_META, key, strlen(key), what, err);
  if (rc) return store_mdb_fail(NULL, err, rc, key);
  if (!store_record_ok(store_of_txn(txn), TAG_META, &k, val)) {
    *found = 0;
    return store_corrupt(err, "%s: checksum or length mismatch", what);
  }
  val->mv_size -= REC_SUM_BYTES;
  return 0;
}

static json_t *parse_json(const MDB_val *v, const char *what, taca_error *err) {
  json_error_t je;
  json_t *j = json_loadb(v->mv_data, v->mv_size, 0, &je);
  if (!j) store_corrupt(err, "meta '%s': not JSON: %s", what, je.text);
  return j;
}

static int json_u64(json_t *o, const char *field, uint64_t *out, const char *what, taca_error *err) {
  json_t *v = json_object_get(o, field);
  if (!json_is_integer(v) || json_integer_value(v) < 0)
    return store_corrupt(err, "meta '%s': field '%s' missing or not a non-negative integer", what, field);
  *out = (uint64_t)json_integer_value(v);
  return 0;
}

static int json_int(json_t *o, const char *field, int *out, const char *what, taca_error *err) {
  uint64_t v = 0;
  if (json_u64(o, field, &v, what, err)) return -1;
  if (v > INT32_MAX) return store_corrupt(err, "meta '%s': field '%s' = %llu is too large", what, field,
                                      (unsigned long long)v);
  *out = (int)v;
  return 0;
}

static int json_str(json_t *o, const char *field, char *out, size_t cap, const char *what, taca_error *err) {
  const char *s = json_string_value(json_object_get(o, field));
  if (!s || strlen(s) >= cap)
    return store_corrupt(err, "meta '%s': field '%s' missing, not a string or too long", what, field);
  memcpy(out, s, strlen(s) + 1);
  return 0;
}

/* ---------- open / close ---------- */

static int read_schema(taca_store *s, MDB_txn *txn, int write_if_missing, taca_error *err) {
  MDB_val v, k = {strlen("schema_version"), "schema_version"};
  int found;
  int rc = mdb_get(txn, s->meta, &k, &v);
  if (rc == 0 && v.mv_size == 1 && ((const char *)v.mv_data)[0] == '1') /* version 1 had no checksums */
    return taca_fail(err, "%s: store schema version 1 predates per-record checksums (this build reads %d): "
                          "rebuild the store with taca precompute", s->dir, STORE_SCHEMA_VERSION);
  if (get_in(txn, s->meta, "schema_version", &v, &found, err)) return taca_error_prefix(err, "%s", s->dir);
  if (!found) {
    if (!write_if_missing) return taca_fail(err, "%s: not a taca store (no schema_version)", s->dir);
    char buf[16];
    int n = snprintf(buf, sizeof buf, "%d", STORE_SCHEMA_VERSION);
    return store_put_sealed(s, txn, s->meta, TAG_META, k.mv_data, k.mv_size, buf, (size_t)n, 0, err,
                            "writing schema_version");
  }
  char buf[16] = {0};
  if (v.mv_size == 0 || v.mv_size >= sizeof buf) return taca_fail(err, "%s: corrupt schema_version", s->dir);
  memcpy(buf, v.mv_data, v.mv_size);
  long ver = strtol(buf, NULL, 10);
  if (ver != STORE_SCHEMA_VERSION)
    return taca_fail(err, "%s: store schema version %s is not supported (this build reads %d)", s->dir, buf,
                     STORE_SCHEMA_VERSION);
  return 0;
}

static int open_dbs(taca_store *s, taca_error *err) {
  MDB_txn *txn;
  int rc = mdb_txn_begin(s->env, NULL, s->readonly ? MDB_RDONLY : 0, &txn);
  if (rc) return store_mdb_fail(s, err, rc, s->dir);
  static const char *names[] = {"meta", "samples", "pixels", "keys", "emb"};
  MDB_dbi *dbis[] = {&s->meta, &s->samples, &s->pixels, &s->keys, &s->emb};
  for (int i = 0; i < 5; i++) {
    rc = mdb_dbi_open(txn, names[i], s->readonly ? 0 : MDB_CREATE, dbis[i]);
    if (rc == MDB_NOTFOUND) {
      MDB_stat st;
      int empty = mdb_env_stat(s->env, &st) == 0 && st.ms_entries == 0;  /* the main db lists the named ones */
      mdb_txn_abort(txn);
      if (empty)
        return taca_fail(err, "%s: the store is empty (its writer was interrupted before the first commit): "
                              "run the writer again", s->dir);
      return taca_fail(err, "%s: not a taca store (database '%s' missing)", s->dir, names[i]);
    }
    if (rc) {
      mdb_txn_abort(txn);
      return store_mdb_fail(s, err, rc, s->dir);
    }
  }
  /* The annotation databases came later: a read-only open of an older store goes on without them. */
  static const char *opt_names[] = {"captions", "metadata"};
  MDB_dbi *opt_dbis[] = {&s->captions, &s->metadata};
  s->has_annotations = 1;
  for (int i = 0; i < 2; i++) {
    rc = mdb_dbi_open(txn, opt_names[i], s->readonly ? 0 : MDB_CREATE, opt_dbis[i]);
    if (rc == MDB_NOTFOUND && s->readonly) {
      s->has_annotations = 0;
      continue;
    }
    if (rc) {
      mdb_txn_abort(txn);
      return store_mdb_fail(s, err, rc, s->dir);
    }
  }
  if (read_schema(s, txn, !s->readonly, err)) {
    mdb_txn_abort(txn);
    return -1;
  }
  rc = mdb_txn_commit(txn);  /* also makes the dbi handles permanent */
  return rc ? store_mdb_fail(s, err, rc, s->dir) : 0;
}

int store_open(taca_store **out, const char *dir, const store_options *opt, taca_error *err) {
  store_options o = opt ? *opt : (store_options){0};
  *out = NULL;
  if (!dir || !*dir) return taca_fail(err, "store directory not given");
  taca_store *s = calloc(1, sizeof *s);
  if (!s) return taca_fail(err, "out of memory");
  if (strlen(dir) >= sizeof s->dir) {
    free(s);
    return taca_fail(err, "store directory name too long");
  }
  strcpy(s->dir, dir);
  s->readonly = o.readonly;

  struct stat st;
  char path[4200];
  if (stat(dir, &st) != 0) {
    if (o.readonly || !o.create) {
      free(s);
      return taca_fail(err, "%s: no such store directory", dir);
    }
    if (mkdir_p(dir, err)) {
      free(s);
      return -1;
    }
  } else if (!S_ISDIR(st.st_mode)) {
    free(s);
    return taca_fail(err, "%s: not a directory (a store is a directory holding data.mdb)", dir);
  }
  snprintf(path, sizeof path, "%s/data.mdb", dir);
  int have = stat(path, &st) == 0;
  if (!have && (o.readonly || !o.create)) {
    free(s);
    return taca_fail(err, "%s: no store here (data.mdb missing)", dir);
  }
  if (have && o.readonly && st.st_size == 0) {
    free(s);
    return taca_fail(err, "%s: data.mdb is empty (its creation was interrupted): run the writer again", dir);
  }

  int rc = mdb_env_create(&s->env);
  if (rc) {
    free(s);
    return store_mdb_fail(NULL, err, rc, dir);
  }
  s->map_size = o.map_size ? o.map_size : DEFAULT_MAP_SIZE;
  if ((rc = mdb_env_set_maxdbs(s->env, 16)) || (rc = mdb_env_set_mapsize(s->env, (size_t)s->map_size)) ||
      (rc = mdb_env_set_maxreaders(s->env, o.max_readers ? o.max_readers : DEFAULT_MAX_READERS))) {
    store_close(s);
    return store_mdb_fail(NULL, err, rc, dir);
  }
  unsigned flags = MDB_NOTLS | (o.readonly ? MDB_RDONLY : 0) | (o.no_sync ? MDB_NOSYNC : 0);
  rc = mdb_env_open(s->env, dir, flags, 0664);
  if (rc) {
    store_mdb_fail(NULL, err, rc, dir);
    store_close(s);
    return -1;
  }
  int dead = 0;
  mdb_reader_check(s->env, &dead);  /* clear reader slots of crashed processes */
  mdb_env_set_userctx(s->env, s);
  MDB_envinfo info;
  if (mdb_env_info(s->env, &info) == 0) s->map_size = info.me_mapsize;
  int bad = store_check_file(s, err) || store_check_pages(s, err) ? 1 : open_dbs(s, err) ? 2 : store_locate_map(s, err) ? 1 : 0;
  if (bad) {
    if (bad == 1) taca_error_prefix(err, "%s", dir);  /* open_dbs names the directory itself */
    store_close(s);
    return -1;
  }
  *out = s;
  return 0;
}

void store_close(taca_store *s) {
  if (!s) return;
  if (s->env) mdb_env_close(s->env);
  free(s);
}

const char *store_dir(const taca_store *s) { return s->dir; }

/* ---------- model records ---------- */

static int parse_model(const MDB_val *v, store_model *m, const char *what, taca_error *err) {
  json_t *j = parse_json(v, what, err);
  if (!j) return -1;
  char dt[8];
  int rc = json_int(j, "id", &m->id, what, err) || json_str(j, "name", m->name, sizeof m->name, what, err) ||
           json_str(j, "arch", m->arch, sizeof m->arch, what, err) ||
           json_int(j, "image_dim", &m->image_dim, what, err) || json_int(j, "text_dim", &m->text_dim, what, err) ||
           json_str(j, "dtype", dt, sizeof dt, what, err) ||
           json_str(j, "weights_xxh", m->weights_xxh, sizeof m->weights_xxh, what, err) ||
           json_int(j, "image_size", &m->image_size, what, err) ||
           json_int(j, "block_size", &m->block_size, what, err);
  if (!rc) {
    /* optional (records written before it, and every F32 model, have none) */
    json_t *pr = json_object_get(j, "precision");
    const char *ps = pr ? json_string_value(pr) : "f32";
    if (!ps || (strcmp(ps, "f32") && strcmp(ps, "bf16")))
      rc = store_corrupt(err, "meta '%s': field 'precision' is not \"f32\" or \"bf16\"", what);
    else snprintf(m->precision, sizeof m->precision, "%s", ps);
  }
  if (!rc) {
    json_t *ls = json_object_get(j, "logit_scale");
    if (!json_is_number(ls)) rc = store_corrupt(err, "meta '%s': field 'logit_scale' missing or not a number", what);
    else m->logit_scale = (float)json_number_value(ls);
  }
  json_decref(j);
  if (rc) return -1;
  m->dtype = !strcmp(dt, "f16") ? TACA_DT_F16 : !strcmp(dt, "f32") ? TACA_DT_F32 : TACA_DT_INVALID;
  if (m->dtype == TACA_DT_INVALID) return store_corrupt(err, "meta '%s': dtype '%s' is not f16 or f32", what, dt);
  if (m->block_size < 1 || m->block_size > 65536 || m->image_dim > 65536 || m->text_dim > 65536)
    return store_corrupt(err, "meta '%s': block_size or dims out of range", what);
  return 0;
}

static int model_json(const store_model *m, char **out, taca_error *err) {
  json_t *j = json_pack("{s:i, s:s, s:s, s:i, s:i, s:s, s:f, s:s, s:i, s:i}", "id", m->id, "name", m->name,
                        "arch", m->arch, "image_dim", m->image_dim, "text_dim", m->text_dim, "dtype",
                        m->dtype == TACA_DT_F16 ? "f16" : "f32", "logit_scale", (double)m->logit_scale,
                        "weights_xxh", m->weights_xxh, "image_size", m->image_size, "block_size",
                        m->block_size);
  if (!j) return taca_fail(err, "model '%s': cannot encode JSON", m->name);
  /* Only where it is not F32, so that F32 records stay as they were (and so the content hash). */
  if (strcmp(m->precision, "f32") && json_object_set_new(j, "precision", json_string(m->precision))) {
    json_decref(j);
    return taca_fail(err, "model '%s': cannot encode JSON", m->name);
  }
  return dump_json(j, out, err, m->name);
}

int store_load_models(MDB_txn *txn, MDB_dbi meta, model_table *out, taca_error *err) {
  memset(out, 0, sizeof *out);
  MDB_cursor *c;
  int rc = mdb_cursor_open(txn, meta, &c);
  if (rc) return store_mdb_fail(NULL, err, rc, "reading models");
  static const char prefix[] = "model/";
  MDB_val k = {sizeof prefix - 1, (void *)prefix}, v;
  int seen[STORE_MAX_MODELS] = {0};
  for (rc = mdb_cursor_get(c, &k, &v, MDB_SET_RANGE); rc == 0; rc = mdb_cursor_get(c, &k, &v, MDB_NEXT)) {
    if (!store_value_in_file(store_of_txn(txn), k.mv_data, k.mv_size)) {
      rc = MDB_CORRUPTED;
      break;
    }
    if (k.mv_size < sizeof prefix - 1 || memcmp(k.mv_data, prefix, sizeof prefix - 1)) break;
    if (!store_record_ok(store_of_txn(txn), TAG_META, &k, &v)) {
      rc = MDB_CORRUPTED;
      break;
    }
    v.mv_size -= REC_SUM_BYTES;
    char what[600];
    snprintf(what, sizeof what, "%.*s", (int)k.mv_size, (const char *)k.mv_data);
    store_model m;
    if (parse_model(&v, &m, what, err)) {
      mdb_cursor_close(c);
      return -1;
    }
    if (m.id < 0 || m.id >= STORE_MAX_MODELS || seen[m.id]) {
      mdb_cursor_close(c);
      return store_corrupt(err, "meta '%s': model id %d is out of range or duplicated", what, m.id);
    }
    seen[m.id] = 1;
    out->m[m.id] = m;
    out->n++;
  }
  mdb_cursor_close(c);
  if (rc && rc != MDB_NOTFOUND) return store_mdb_fail(NULL, err, rc, "reading models");
  for (int i = 0; i < out->n; i++)
    if (!seen[i]) return store_corrupt(err, "meta: model ids are not dense (id %d missing)", i);
  return 0;
}

int store_model_check(const model_table *t, int id, store_modality m, int *dim, taca_error *err) {
  if (id < 0 || id >= t->n) return taca_fail(err, "model id %d not in store (it has %d models)", id, t->n);
  if (m != STORE_IMAGE && m != STORE_TEXT) return taca_fail(err, "modality %d is not image (0) or text (1)", (int)m);
  *dim = m == STORE_IMAGE ? t->m[id].image_dim : t->m[id].text_dim;
  if (*dim <= 0)
    return taca_fail(err, "model '%s' stores no %s embeddings", t->m[id].name, store_modality_name(m));
  return 0;
}

/* ---------- write transactions ---------- */

int store_txn_begin(taca_store *s, store_txn **out, taca_error *err) {
  *out = NULL;
  if (s->readonly) return taca_fail(err, "%s: store was opened read-only", s->dir);
  store_txn *t = calloc(1, sizeof *t);
  if (!t) return taca_fail(err, "out of memory");
  t->s = s;
  int rc = mdb_txn_begin(s->env, NULL, 0, &t->txn);
  if (rc) {
    free(t);
    return store_mdb_fail(s, err, rc, "beginning a write transaction");
  }
  *out = t;
  return 0;
}

int store_txn_guard(store_txn *t, taca_error *err) {
  if (t->failed) return taca_fail(err, "write transaction had an earlier error: abort it");
  return 0;
}

int store_txn_models(store_txn *t, taca_error *err) {
  if (t->models_loaded) return 0;
  if (store_load_models(t->txn, t->s->meta, &t->models, err)) return -1;
  t->models_loaded = 1;
  return 0;
}

static int apply_count_deltas(store_txn *t, taca_error *err) {
  for (int id = 0; id < t->models.n; id++) {
    if (!t->count_delta[id][0] && !t->count_delta[id][1]) continue;
    char key[128];
    snprintf(key, sizeof key, "emb_count/%s", t->models.m[id].name);
    MDB_val v;
    int found;
    uint64_t cnt[2] = {0, 0};
    if (get_in(t->txn, t->s->meta, key, &v, &found, err)) return -1;
    if (found) {
      json_t *j = parse_json(&v, key, err);
      if (!j) return -1;
      int rc = json_u64(j, "image", &cnt[0], key, err) || json_u64(j, "text", &cnt[1], key, err);
      json_decref(j);
      if (rc) return -1;
    }
    for (int m = 0; m < 2; m++) cnt[m] = (uint64_t)((int64_t)cnt[m] + t->count_delta[id][m]);
    char *s;
    if (dump_json(json_pack("{s:I, s:I}", "image", (json_int_t)cnt[0], "text", (json_int_t)cnt[1]), &s, err, key))
      return -1;
    int rc = store_put_sealed(t->s, t->txn, t->s->meta, TAG_META, key, strlen(key), s, strlen(s), 0, err, key);
    free(s);
    if (rc) return -1;
    t->count_delta[id][0] = t->count_delta[id][1] = 0;
  }
  return 0;
}

/* A commit that changes content writes the record counts and removes the recorded content hash
 * (it describes the content it was computed on; store_record_content_hash writes a new one). */
static int update_content_records(store_txn *t, taca_error *err) {
  if (!t->content_changed) return 0;
  /* the record counts, under a checksum: LMDB's own counts (in its main database) have none */
  MDB_stat st[3];
  MDB_dbi dbis[3] = {t->s->samples, t->s->pixels, t->s->keys};
  for (int i = 0; i < 3; i++) {
    int rc = mdb_stat(t->txn, dbis[i], &st[i]);
    if (rc) return store_mdb_fail(t->s, err, rc, "stat");
  }
  char *cs;
  if (dump_json(json_pack("{s:I, s:I, s:I}", "keys", (json_int_t)st[2].ms_entries, "pixels",
                          (json_int_t)st[1].ms_entries, "samples", (json_int_t)st[0].ms_entries),
                &cs, err, STORE_COUNTS_KEY))
    return -1;
  int prc = store_put_sealed(t->s, t->txn, t->s->meta, TAG_META, STORE_COUNTS_KEY, strlen(STORE_COUNTS_KEY), cs,
                             strlen(cs), 0, err, STORE_COUNTS_KEY);
  free(cs);
  if (prc) return -1;
  MDB_val k = {strlen(STORE_CONTENT_HASH_KEY), (void *)STORE_CONTENT_HASH_KEY};
  int rc = mdb_del(t->txn, t->s->meta, &k, NULL);
  return rc && rc != MDB_NOTFOUND ? store_mdb_fail(t->s, err, rc, STORE_CONTENT_HASH_KEY) : 0;
}

int store_txn_commit(store_txn *t, taca_error *err) {
  if (!t) return taca_fail(err, "no transaction");
  int ret = 0;
  if (store_txn_guard(t, err) || store_txn_flush_blocks(t, err) || apply_count_deltas(t, err) ||
      update_content_records(t, err)) {
    mdb_txn_abort(t->txn);
    ret = -1;
  } else {
    int rc = mdb_txn_commit(t->txn);
    if (rc) ret = store_mdb_fail(t->s, err, rc, "committing");
  }
  store_txn_free_blocks(t);
  free(t);
  return ret;
}

void store_txn_abort(store_txn *t) {
  if (!t) return;
  mdb_txn_abort(t->txn);
  store_txn_free_blocks(t);
  free(t);
}

/* Writes a meta value (internal: no reserved-key check). */
static int put_meta_raw(store_txn *t, const char *key, const void *val, size_t len, taca_error *err) {
  if (strncmp(key, "progress/", 9) && strcmp(key, STORE_CONTENT_HASH_KEY)) t->content_changed = 1;
  if (store_put_sealed(t->s, t->txn, t->s->meta, TAG_META, key, strlen(key), val, len, 0, err, key)) {
    t->failed = 1;
    return -1;
  }
  return 0;
}

static int is_reserved_meta(const char *key) {
  return !strcmp(key, "schema_version") || !strcmp(key, "pixel") || !strcmp(key, "range") ||
         !strncmp(key, "model/", 6) || !strncmp(key, "emb_count/", 10) || !strcmp(key, STORE_CONTENT_HASH_KEY) ||
         !strcmp(key, STORE_COUNTS_KEY);
}

int store_put_meta(store_txn *t, const char *key, const void *val, size_t len, taca_error *err) {
  if (store_txn_guard(t, err)) return -1;
  size_t n = key ? strlen(key) : 0;
  if (n == 0 || n > STORE_MAX_KEY) return taca_fail(err, "meta key is empty or longer than %d bytes", STORE_MAX_KEY);
  if (is_reserved_meta(key))
    return taca_fail(err, "meta key '%s' is reserved by the schema (use the typed setter)", key);
  if (!val && len) return taca_fail(err, "meta '%s': NULL value", key);
  return put_meta_raw(t, key, val ? val : "", len, err);
}

int store_txn_get_meta(store_txn *t, const char *key, const void **val, size_t *len, taca_error *err) {
  *val = NULL;
  *len = 0;
  if (store_txn_guard(t, err)) return -1;
  if (!key || !*key || strlen(key) > STORE_MAX_KEY) return taca_fail(err, "meta key is empty or too long");
  MDB_val v;
  int found;
  if (get_in(t->txn, t->s->meta, key, &v, &found, err)) return -1;
  if (found) {
    *val = v.mv_data;
    *len = v.mv_size;
  }
  return 0;
}

/* ---------- pixel format and range ---------- */

static int pixel_json(const store_pixel_format *pf, char **out, taca_error *err) {
  return dump_json(json_pack("{s:i, s:i, s:s, s:i}", "size", pf->size, "channels", pf->channels, "codec",
                             pf->codec, "quality", pf->quality),
                   out, err, "pixel");
}

static int parse_pixel(const MDB_val *v, store_pixel_format *pf, taca_error *err) {
  json_t *j = parse_json(v, "pixel", err);
  if (!j) return -1;
  memset(pf, 0, sizeof *pf);
  int rc = json_int(j, "size", &pf->size, "pixel", err) || json_int(j, "channels", &pf->channels, "pixel", err) ||
           json_str(j, "codec", pf->codec, sizeof pf->codec, "pixel", err) ||
           json_int(j, "quality", &pf->quality, "pixel", err);
  json_decref(j);
  return rc ? -1 : 0;
}

static int read_pixel_format(taca_store *s, MDB_txn *txn, store_pixel_format *pf, int *found, taca_error *err) {
  MDB_val v;
  if (get_in(txn, s->meta, "pixel", &v, found, err)) return -1;
  return *found ? parse_pixel(&v, pf, err) : 0;
}

int store_view_pixel_format(store_view *v, store_pixel_format *pf, int *found, taca_error *err) {
  if (v->pixel_state == 0) {
    int f;
    if (read_pixel_format(v->s, v->txn, &v->pixel, &f, err)) return -1;
    v->pixel_state = f ? 2 : 1;
  }
  *found = v->pixel_state == 2;
  if (*found) *pf = v->pixel;
  return 0;
}

int store_txn_pixel_format(store_txn *t, store_pixel_format *pf, int *found, taca_error *err) {
  if (t->pixel_state == 0) {
    int f;
    if (read_pixel_format(t->s, t->txn, &t->pixel, &f, err)) return -1;
    t->pixel_state = f ? 2 : 1;
  }
  *found = t->pixel_state == 2;
  if (*found) *pf = t->pixel;
  return 0;
}

int store_set_pixel_format(store_txn *t, const store_pixel_format *pf, taca_error *err) {
  if (store_txn_guard(t, err)) return -1;
  int raw = !strcmp(pf->codec, "raw"), jpeg = !strcmp(pf->codec, "jpeg");
  if (!raw && !jpeg) return taca_fail(err, "pixel codec '%.8s' is not 'raw' or 'jpeg'", pf->codec);
  if (pf->size < 1 || pf->size > 8192) return taca_fail(err, "pixel size %d is not in 1..8192", pf->size);
  if (pf->channels < 1 || pf->channels > 4) return taca_fail(err, "pixel channels %d is not in 1..4", pf->channels);
  if (raw && pf->quality != 0) return taca_fail(err, "pixel quality must be 0 for the raw codec (got %d)", pf->quality);
  if (jpeg && (pf->quality < 1 || pf->quality > 100))
    return taca_fail(err, "JPEG quality %d is not in 1..100", pf->quality);
  char *js;
  if (pixel_json(pf, &js, err)) return -1;
  MDB_val v;
  int found;
  if (get_in(t->txn, t->s->meta, "pixel", &v, &found, err)) {
    free(js);
    return -1;
  }
  if (found && (v.mv_size != strlen(js) || memcmp(v.mv_data, js, v.mv_size))) {
    MDB_stat st;
    int rc = mdb_stat(t->txn, t->s->pixels, &st);
    if (rc || st.ms_entries > 0) {
      taca_fail(err, "pixel format %s differs from the stored %.*s and pixels are already stored", js,
                (int)v.mv_size, (const char *)v.mv_data);
      free(js);
      return -1;
    }
  }
  int rc = put_meta_raw(t, "pixel", js, strlen(js), err);
  free(js);
  if (rc == 0) {
    t->pixel = *pf;
    t->pixel_state = 2;
  }
  return rc;
}

static int parse_range(const MDB_val *v, store_range *r, taca_error *err) {
  json_t *j = parse_json(v, "range", err);
  if (!j) return -1;
  int rc = json_u64(j, "begin", &r->begin, "range", err) || json_u64(j, "end", &r->end, "range", err) ||
           json_int(j, "shard", &r->shard, "range", err) || json_int(j, "nshards", &r->nshards, "range", err);
  json_decref(j);
  return rc ? -1 : 0;
}

static int read_range(taca_store *s, MDB_txn *txn, store_range *r, int *found, taca_error *err) {
  MDB_val v;
  if (get_in(txn, s->meta, "range", &v, found, err)) return -1;
  return *found ? parse_range(&v, r, err) : 0;
}

/* First and last stored sample index. */
static int sample_bounds(taca_store *s, MDB_txn *txn, uint64_t *first, uint64_t *last, int *any, taca_error *err) {
  MDB_cursor *c;
  MDB_val k, v;
  *any = 0;
  int rc = mdb_cursor_open(txn, s->samples, &c);
  if (rc) return store_mdb_fail(s, err, rc, "samples");
  rc = mdb_cursor_get(c, &k, &v, MDB_FIRST);
  if (rc == 0 && (k.mv_size != 8 || !store_record_ok(s, TAG_SAMPLES, &k, &v))) rc = MDB_CORRUPTED;
  if (rc == 0) {
    *first = store_get_be64(k.mv_data);
    rc = mdb_cursor_get(c, &k, &v, MDB_LAST);
    if (rc == 0 && (k.mv_size != 8 || !store_record_ok(s, TAG_SAMPLES, &k, &v))) rc = MDB_CORRUPTED;
    if (rc == 0) {
      *last = store_get_be64(k.mv_data);
      *any = 1;
    }
  }
  mdb_cursor_close(c);
  if (rc && rc != MDB_NOTFOUND) return store_mdb_fail(s, err, rc, "samples");
  return 0;
}

int store_effective_range(taca_store *s, MDB_txn *txn, uint64_t *begin, uint64_t *end, int *any, taca_error *err) {
  store_range r = {0};
  int found;
  if (read_range(s, txn, &r, &found, err)) return -1;
  if (found) {
    *begin = r.begin;
    *end = r.end;
    *any = 1;
    return 0;
  }
  uint64_t first = 0, last = 0;
  if (sample_bounds(s, txn, &first, &last, any, err)) return -1;
  *begin = first;
  *end = *any ? last + 1 : 0;
  return 0;
}

int store_txn_declared_range(store_txn *t, store_range *r, int *found, taca_error *err) {
  return read_range(t->s, t->txn, r, found, err);
}

int store_set_range(store_txn *t, const store_range *r, taca_error *err) {
  if (store_txn_guard(t, err)) return -1;
  if (r->begin > r->end || r->end > (uint64_t)INT64_MAX)
    return taca_fail(err, "range [%llu, %llu) is empty-inverted or too large", (unsigned long long)r->begin,
                     (unsigned long long)r->end);
  if (r->nshards < 1 || r->shard < 0 || r->shard >= r->nshards)
    return taca_fail(err, "shard %d/%d: need 0 <= shard < nshards", r->shard, r->nshards);
  uint64_t first, last;
  int any;
  if (sample_bounds(t->s, t->txn, &first, &last, &any, err)) return -1;
  if (any && (first < r->begin || last >= r->end))
    return taca_fail(err, "range [%llu, %llu) excludes stored samples [%llu, %llu]", (unsigned long long)r->begin,
                     (unsigned long long)r->end, (unsigned long long)first, (unsigned long long)last);
  char *js;
  if (dump_json(json_pack("{s:I, s:I, s:i, s:i}", "begin", (json_int_t)r->begin, "end", (json_int_t)r->end, "shard",
                          r->shard, "nshards", r->nshards),
                &js, err, "range"))
    return -1;
  int rc = put_meta_raw(t, "range", js, strlen(js), err);
  free(js);
  if (rc == 0) {
    t->range = *r;
    t->range_state = 2;
  }
  return rc;
}

int store_txn_check_index(store_txn *t, uint64_t index, taca_error *err) {
  if (index > (uint64_t)INT64_MAX) return taca_fail(err, "index %llu is too large", (unsigned long long)index);
  if (t->range_state == 0) {
    int found;
    if (read_range(t->s, t->txn, &t->range, &found, err)) return -1;
    t->range_state = found ? 2 : 1;
  }
  if (t->range_state == 2 && (index < t->range.begin || index >= t->range.end))
    return taca_fail(err, "index %llu outside this store's range [%llu, %llu)", (unsigned long long)index,
                     (unsigned long long)t->range.begin, (unsigned long long)t->range.end);
  return 0;
}

/* ---------- model registration ---------- */

static int check_name(const char *s, size_t cap, int allow_space, const char *field, taca_error *err) {
  size_t n = strnlen(s, cap);
  if (n == 0 || n >= cap) return taca_fail(err, "model %s is empty or longer than %zu bytes", field, cap - 1);
  for (size_t i = 0; i < n; i++) {
    unsigned char c = (unsigned char)s[i];
    if (c < 0x20 || c > 0x7e || (!allow_space && (c == ' ' || c == '/')))
      return taca_fail(err, "model %s '%s' has a character that is not allowed at byte %zu", field, s, i);
  }
  return 0;
}

static const char *model_diff(const store_model *a, const store_model *b) {
  if (strcmp(a->weights_xxh, b->weights_xxh)) return "weights_xxh";  /* first: other weights explain the rest */
  if (strcmp(a->arch, b->arch)) return "arch";
  if (a->image_dim != b->image_dim) return "image_dim";
  if (a->text_dim != b->text_dim) return "text_dim";
  if (a->dtype != b->dtype) return "dtype";
  if (strcmp(a->precision, b->precision)) return "precision";
  if (memcmp(&a->logit_scale, &b->logit_scale, sizeof(float))) return "logit_scale";
  if (strcmp(a->weights_xxh, b->weights_xxh)) return "weights_xxh";
  if (a->image_size != b->image_size) return "image_size";
  if (a->block_size != b->block_size) return "block_size";
  return NULL;
}

int store_register_model(store_txn *t, const store_model *in, int *id, taca_error *err) {
  *id = -1;
  if (store_txn_guard(t, err) || store_txn_models(t, err)) return -1;
  store_model m = *in;
  if (check_name(m.name, sizeof m.name, 0, "name", err)) return -1;
  if (m.arch[0] && check_name(m.arch, sizeof m.arch, 1, "arch", err)) return -1;
  if (strnlen(m.weights_xxh, sizeof m.weights_xxh) >= sizeof m.weights_xxh)
    return taca_fail(err, "model '%s': weights_xxh too long", m.name);
  if (m.block_size == 0) m.block_size = STORE_DEFAULT_BLOCK;
  if (!m.precision[0]) snprintf(m.precision, sizeof m.precision, "f32");
  if (strcmp(m.precision, "f32") && strcmp(m.precision, "bf16"))
    return taca_fail(err, "model '%s': precision '%s' is not f32 or bf16", m.name, m.precision);
  if (m.block_size < 1 || m.block_size > 65536)
    return taca_fail(err, "model '%s': block_size %d is not in 1..65536", m.name, m.block_size);
  if (m.image_dim < 0 || m.text_dim < 0 || m.image_dim > 65536 || m.text_dim > 65536 || (!m.image_dim && !m.text_dim))
    return taca_fail(err, "model '%s': dims image %d text %d (need 0..65536, not both 0)", m.name, m.image_dim, m.text_dim);
  if (m.dtype != TACA_DT_F16 && m.dtype != TACA_DT_F32)
    return taca_fail(err, "model '%s': stored dtype must be F16 or F32", m.name);
  if (!isfinite(m.logit_scale)) return taca_fail(err, "model '%s': logit_scale is not finite", m.name);
  if (m.image_size < 0) return taca_fail(err, "model '%s': image_size %d is negative", m.name, m.image_size);
  for (int i = 0; i < t->models.n; i++) {
    if (strcmp(t->models.m[i].name, m.name)) continue;
    m.id = i;
    const char *d = model_diff(&t->models.m[i], &m);
    if (d && !strcmp(d, "weights_xxh"))
      return taca_fail(err, "model '%s' is already registered from other weights (weights_xxh %s, these %s): "
                       "choose another name", m.name, t->models.m[i].weights_xxh, m.weights_xxh);
    if (d) return taca_fail(err, "model '%s' is already registered with a different %s", m.name, d);
    *id = i;
    return 0;
  }
  if (t->models.n >= STORE_MAX_MODELS) return taca_fail(err, "store already holds %d models (the maximum)", STORE_MAX_MODELS);
  m.id = t->models.n;
  char *js, key[128];
  if (model_json(&m, &js, err)) return -1;
  snprintf(key, sizeof key, "model/%s", m.name);
  int rc = put_meta_raw(t, key, js, strlen(js), err);
  free(js);
  if (rc) return -1;
  t->models.m[t->models.n++] = m;
  *id = m.id;
  return 0;
}

/* ---------- read views ---------- */

int store_view_begin(taca_store *s, store_view **out, taca_error *err) {
  *out = NULL;
  store_view *v = calloc(1, sizeof *v);
  if (!v) return taca_fail(err, "out of memory");
  v->s = s;
  int rc = mdb_txn_begin(s->env, NULL, MDB_RDONLY, &v->txn);
  if (rc) {
    free(v);
    return store_mdb_fail(s, err, rc, "beginning a read view");
  }
  *out = v;
  return 0;
}

void store_view_end(store_view *v) {
  if (!v) return;
  mdb_txn_abort(v->txn);
  free(v);
}

int store_view_refresh(store_view *v, taca_error *err) {
  mdb_txn_reset(v->txn);
  v->models_loaded = 0;
  v->pixel_state = 0;
  int rc = mdb_txn_renew(v->txn);
  return rc ? store_mdb_fail(v->s, err, rc, "renewing a read view") : 0;
}

int store_view_models(store_view *v, taca_error *err) {
  if (v->models_loaded) return 0;
  if (store_load_models(v->txn, v->s->meta, &v->models, err)) return -1;
  v->models_loaded = 1;
  return 0;
}

int store_find_model(store_view *v, const char *name, store_model *out, taca_error *err) {
  if (store_view_models(v, err)) return -1;
  for (int i = 0; i < v->models.n; i++)
    if (!strcmp(v->models.m[i].name, name)) {
      *out = v->models.m[i];
      return 0;
    }
  char list[256] = "";
  for (int i = 0; i < v->models.n; i++) {
    size_t l = strlen(list);
    snprintf(list + l, sizeof list - l, "%s%s", i ? ", " : "", v->models.m[i].name);
  }
  return taca_fail(err, "model '%s' not in store (it has: %s)", name, v->models.n ? list : "none");
}

int store_get_model(store_view *v, int id, store_model *out, taca_error *err) {
  if (store_view_models(v, err)) return -1;
  if (id < 0 || id >= v->models.n) return taca_fail(err, "model id %d not in store (it has %d models)", id, v->models.n);
  *out = v->models.m[id];
  return 0;
}

int store_get_meta(store_view *v, const char *key, const void **val, size_t *len, taca_error *err) {
  *val = NULL;
  *len = 0;
  if (!key || !*key || strlen(key) > STORE_MAX_KEY) return taca_fail(err, "meta key is empty or too long");
  MDB_val d;
  int found;
  if (get_in(v->txn, v->s->meta, key, &d, &found, err)) return -1;
  if (found) {
    *val = d.mv_data;
    *len = d.mv_size;
  }
  return 0;
}

int store_scan_meta(store_view *v, const char *prefix,
                    int (*fn)(const char *key, size_t key_len, const void *val, size_t len, void *ctx), void *ctx,
                    taca_error *err) {
  size_t pl = prefix ? strlen(prefix) : 0;
  MDB_cursor *c;
  int rc = mdb_cursor_open(v->txn, v->s->meta, &c);
  if (rc) return store_mdb_fail(v->s, err, rc, "meta");
  MDB_val k = {pl, (void *)prefix}, d;
  rc = mdb_cursor_get(c, &k, &d, pl ? MDB_SET_RANGE : MDB_FIRST);
  for (; rc == 0; rc = mdb_cursor_get(c, &k, &d, MDB_NEXT)) {
    if (!store_value_in_file(v->s, k.mv_data, k.mv_size)) {
      rc = MDB_CORRUPTED;
      break;
    }
    if (k.mv_size < pl || memcmp(k.mv_data, prefix, pl)) break;
    if (!store_record_ok(v->s, TAG_META, &k, &d)) {
      rc = MDB_CORRUPTED;
      break;
    }
    d.mv_size -= REC_SUM_BYTES;
    if (fn(k.mv_data, k.mv_size, d.mv_data, d.mv_size, ctx)) break;
  }
  mdb_cursor_close(c);
  if (rc && rc != MDB_NOTFOUND) return store_mdb_fail(v->s, err, rc, "meta");
  return 0;
}

/* LMDB's record counts against the checksummed ones of meta "counts". */
static int check_counts(store_view *v, uint64_t samples, uint64_t pixels, uint64_t keys, taca_error *err) {
  MDB_val d;
  int found;
  if (get_in(v->txn, v->s->meta, STORE_COUNTS_KEY, &d, &found, err)) return -1;
  if (!found) {
    if (samples || pixels || keys) return store_corrupt(err, "meta: record counts missing");
    return 0;
  }
  json_t *j = parse_json(&d, STORE_COUNTS_KEY, err);
  if (!j) return -1;
  uint64_t c[3] = {0, 0, 0};
  int rc = json_u64(j, "samples", &c[0], STORE_COUNTS_KEY, err) || json_u64(j, "pixels", &c[1], STORE_COUNTS_KEY, err) ||
           json_u64(j, "keys", &c[2], STORE_COUNTS_KEY, err);
  json_decref(j);
  if (rc) return -1;
  if (c[0] != samples || c[1] != pixels || c[2] != keys)
    return store_corrupt(err, "the database records: samples %llu, pixels %llu, keys %llu, but meta counts %llu, %llu, "
                         "%llu", (unsigned long long)samples, (unsigned long long)pixels, (unsigned long long)keys,
                         (unsigned long long)c[0], (unsigned long long)c[1], (unsigned long long)c[2]);
  return 0;
}

int store_get_info(store_view *v, store_info *out, taca_error *err) {
  memset(out, 0, sizeof *out);
  taca_store *s = v->s;
  out->schema_version = STORE_SCHEMA_VERSION;  /* checked at open */
  MDB_stat st;
  MDB_dbi dbis[3] = {s->samples, s->pixels, s->keys};
  uint64_t *cnt[3] = {&out->n_samples, &out->n_pixels, &out->n_keys};
  for (int i = 0; i < 3; i++) {
    int rc = mdb_stat(v->txn, dbis[i], &st);
    if (rc) return store_mdb_fail(s, err, rc, "stat");
    *cnt[i] = st.ms_entries;
  }
  int any, found;
  if (check_counts(v, out->n_samples, out->n_pixels, out->n_keys, err)) return -1;
  if (sample_bounds(s, v->txn, &out->first_index, &out->last_index, &any, err)) return -1;
  if (read_range(s, v->txn, &out->range, &found, err)) return -1;
  out->has_range = found;
  if (read_pixel_format(s, v->txn, &out->pixel, &found, err)) return -1;
  out->has_pixel_format = found;
  if (store_view_models(v, err)) return -1;
  out->n_models = v->models.n;
  memcpy(out->models, v->models.m, sizeof out->models);
  for (int id = 0; id < out->n_models; id++) {
    char key[128];
    snprintf(key, sizeof key, "emb_count/%s", out->models[id].name);
    MDB_val d;
    if (get_in(v->txn, s->meta, key, &d, &found, err)) return -1;
    if (!found) continue;
    json_t *j = parse_json(&d, key, err);
    if (!j) return -1;
    int rc = json_u64(j, "image", &out->n_embeddings[id][0], key, err) ||
             json_u64(j, "text", &out->n_embeddings[id][1], key, err);
    json_decref(j);
    if (rc) return -1;
  }
  if (s->has_annotations) {
    MDB_dbi adbis[2] = {s->captions, s->metadata};
    uint64_t *acnt[2] = {&out->n_captions, &out->n_metadata};
    for (int i = 0; i < 2; i++) {
      int rc = mdb_stat(v->txn, adbis[i], &st);
      if (rc) return store_mdb_fail(s, err, rc, "stat");
      *acnt[i] = st.ms_entries;
    }
  }
  MDB_envinfo ei;
  if (mdb_env_info(s->env, &ei) == 0 && mdb_env_stat(s->env, &st) == 0) {
    out->map_size = ei.me_mapsize;
    out->used_bytes = (uint64_t)(ei.me_last_pgno + 1) * st.ms_psize;
  }
  return 0;
}

/* ---------- dropping a model ---------- */

/* Deletes (to = -1) or renumbers to model id `to` every embedding record of model `from`. */
static int move_model_blocks(store_txn *t, int from, int to, taca_error *err) {
  MDB_cursor *c;
  int rc = mdb_cursor_open(t->txn, t->s->emb, &c);
  if (rc) return store_mdb_fail(t->s, err, rc, "emb");
  uint8_t start[EMB_KEY_LEN] = {(uint8_t)(from >> 8), (uint8_t)from};
  uint8_t *buf = NULL;
  size_t cap = 0;
  int ret = 0;
  for (;;) {
    MDB_val k = {EMB_KEY_LEN, start}, v;
    rc = mdb_cursor_get(c, &k, &v, MDB_SET_RANGE);
    if (rc == MDB_NOTFOUND) break;
    if (rc) {
      ret = store_mdb_fail(t->s, err, rc, "emb");
      break;
    }
    if (k.mv_size != EMB_KEY_LEN || memcmp(k.mv_data, start, 2)) break;
    uint8_t oldk[EMB_KEY_LEN], newk[EMB_KEY_LEN];
    memcpy(oldk, k.mv_data, EMB_KEY_LEN);
    if (to >= 0) {
      if (v.mv_size > cap) {
        free(buf);
        if (!(buf = malloc(cap = v.mv_size))) {
          ret = taca_fail(err, "out of memory");
          break;
        }
      }
      memcpy(buf, v.mv_data, v.mv_size);
      memcpy(newk, oldk, EMB_KEY_LEN);
      newk[0] = (uint8_t)(to >> 8);
      newk[1] = (uint8_t)to;
      store_seal_record(TAG_EMB, newk, EMB_KEY_LEN, buf, v.mv_size);
      MDB_val nk = {EMB_KEY_LEN, newk}, nv = {v.mv_size, buf};
      if ((rc = mdb_put(t->txn, t->s->emb, &nk, &nv, 0))) {
        ret = store_mdb_fail(t->s, err, rc, "emb");
        break;
      }
    }
    MDB_val ok = {EMB_KEY_LEN, oldk};
    if ((rc = mdb_del(t->txn, t->s->emb, &ok, NULL))) {
      ret = store_mdb_fail(t->s, err, rc, "emb");
      break;
    }
  }
  free(buf);
  mdb_cursor_close(c);
  return ret;
}

static int del_meta(store_txn *t, const char *key, taca_error *err) {
  MDB_val k = {strlen(key), (void *)key};
  int rc = mdb_del(t->txn, t->s->meta, &k, NULL);
  return rc && rc != MDB_NOTFOUND ? store_mdb_fail(t->s, err, rc, key) : 0;
}

int store_drop_model(store_txn *t, const char *name, taca_error *err) {
  if (store_txn_guard(t, err) || store_txn_models(t, err)) return -1;
  int id = -1;
  for (int i = 0; i < t->models.n; i++)
    if (!strcmp(t->models.m[i].name, name)) id = i;
  if (id < 0) return taca_fail(err, "model '%s' is not in this store", name);
  t->failed = 1;  /* until the end: a half-done drop must not be committed */
  if (store_txn_flush_blocks(t, err) || apply_count_deltas(t, err)) return -1;
  store_txn_free_blocks(t);
  char key[128];
  if (move_model_blocks(t, id, -1, err)) return -1;
  snprintf(key, sizeof key, "model/%s", name);
  if (del_meta(t, key, err)) return -1;
  snprintf(key, sizeof key, "emb_count/%s", name);
  if (del_meta(t, key, err)) return -1;
  snprintf(key, sizeof key, "progress/%s", name);
  if (del_meta(t, key, err)) return -1;
  snprintf(key, sizeof key, "provenance/%s", name);
  if (del_meta(t, key, err)) return -1;
  for (int j = id + 1; j < t->models.n; j++) {
    store_model m = t->models.m[j];
    m.id = j - 1;
    char *js;
    if (move_model_blocks(t, j, j - 1, err) || model_json(&m, &js, err)) return -1;
    snprintf(key, sizeof key, "model/%s", m.name);
    int rc = put_meta_raw(t, key, js, strlen(js), err);
    free(js);
    if (rc) return -1;
    t->models.m[j - 1] = m;
  }
  t->models.n--;
  t->content_changed = 1;
  t->failed = 0;
  return 0;
}

uint64_t store_txn_id(store_txn *t) { return (uint64_t)mdb_txn_id(t->txn); }
uint64_t store_view_txn_id(store_view *v) { return (uint64_t)mdb_txn_id(v->txn); }
