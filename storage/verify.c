/* verify.c: `taca verify` — walks every record of every database, checks each against its checksum,
 * layout and length, the key table against the sample records, the embedding counts against the
 * blocks, and the content hash against the one a finished writer recorded. Damage is counted per
 * database (the first problem named); only a walk that cannot start fails. */
#include "storage/store_internal.h"

#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>

static store_db_report *db_begin(store_verify_report *r, const char *name) {
  store_db_report *d = &r->db[r->n_db++];
  memset(d, 0, sizeof *d);
  snprintf(d->name, sizeof d->name, "%s", name);
  return d;
}

static void problem(store_db_report *d, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void problem(store_db_report *d, const char *fmt, ...) {
  if (d->bad++ == 0) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(d->first_problem, sizeof d->first_problem, fmt, ap);
    va_end(ap);
  }
}

/* Walks one database; fn checks a record (its key and value already inside the file). */
typedef void (*check_fn)(store_view *v, store_db_report *d, const MDB_val *k, const MDB_val *val, void *ctx);

static void walk(store_view *v, MDB_dbi dbi, store_db_report *d, check_fn fn, void *ctx) {
  MDB_cursor *c;
  int rc = mdb_cursor_open(v->txn, dbi, &c);
  if (rc) {
    problem(d, "cannot walk: %s", mdb_strerror(rc));
    return;
  }
  MDB_val k, val;
  for (rc = mdb_cursor_get(c, &k, &val, MDB_FIRST); rc == 0; rc = mdb_cursor_get(c, &k, &val, MDB_NEXT)) {
    d->records++;
    if (!store_value_in_file(v->s, k.mv_data, k.mv_size) || !store_value_in_file(v->s, val.mv_data, val.mv_size)) {
      problem(d, "record %llu runs past the end of data.mdb", (unsigned long long)d->records);
      break;  /* the page is damaged: what follows on it cannot be trusted to be read safely */
    }
    fn(v, d, &k, &val, ctx);
  }
  if (rc && rc != MDB_NOTFOUND) problem(d, "walk stopped after %llu records: %s", (unsigned long long)d->records,
                                       mdb_strerror(rc));
  mdb_cursor_close(c);
}

static void check_meta(store_view *v, store_db_report *d, const MDB_val *k, const MDB_val *sealed, void *ctx) {
  (void)ctx;
  if (!store_record_ok(v->s, TAG_META, k, sealed)) {
    problem(d, "'%.*s': checksum mismatch", (int)(k->mv_size < 100 ? k->mv_size : 100), (const char *)k->mv_data);
    return;
  }
  MDB_val body = {sealed->mv_size - REC_SUM_BYTES, sealed->mv_data}, *val = &body;
  static const char *json_prefixes[] = {"pixel", "range", "model/", "emb_count/", STORE_CONTENT_HASH_KEY, STORE_COUNTS_KEY};
  for (size_t i = 0; i < sizeof json_prefixes / sizeof *json_prefixes; i++) {
    size_t n = strlen(json_prefixes[i]);
    int prefix = json_prefixes[i][n - 1] == '/';
    if (prefix ? (k->mv_size <= n || memcmp(k->mv_data, json_prefixes[i], n))
               : (k->mv_size != n || memcmp(k->mv_data, json_prefixes[i], n)))
      continue;
    json_error_t je;
    json_t *j = json_loadb(val->mv_data, val->mv_size, 0, &je);
    if (!j) problem(d, "'%.*s': not JSON (%s)", (int)(k->mv_size < 100 ? k->mv_size : 100), (const char *)k->mv_data,
                    je.text);
    json_decref(j);
  }
}

typedef struct sample_ctx {
  MDB_dbi keys;
} sample_ctx;

static void check_sample(store_view *v, store_db_report *d, const MDB_val *k, const MDB_val *val, void *ctx) {
  sample_ctx *sc = ctx;
  if (k->mv_size != 8) {
    problem(d, "a key of %zu bytes (indices are 8)", k->mv_size);
    return;
  }
  uint64_t index = store_get_be64(k->mv_data);
  taca_error err;
  store_sample smp;
  if (!store_record_ok(v->s, TAG_SAMPLES, k, val)) {
    problem(d, "samples[%llu]: checksum mismatch", (unsigned long long)index);
    return;
  }
  if (store_parse_sample(index, val, &smp, &err)) {
    problem(d, "%s", err.msg);
    return;
  }
  MDB_val kk = {smp.key_len, (void *)smp.key}, kv;
  if (mdb_get(v->txn, sc->keys, &kk, &kv) || kv.mv_size != 8 + REC_SUM_BYTES ||
      !store_value_in_file(v->s, kv.mv_data, kv.mv_size) || store_get_be64(kv.mv_data) != index)
    problem(d, "samples[%llu]: its key is not in the key table", (unsigned long long)index);
}

static void check_pixels(store_view *v, store_db_report *d, const MDB_val *k, const MDB_val *val, void *ctx) {
  MDB_dbi samples = *(MDB_dbi *)ctx;
  if (k->mv_size != 8) {
    problem(d, "a key of %zu bytes (indices are 8)", k->mv_size);
    return;
  }
  uint64_t index = store_get_be64(k->mv_data);
  taca_error err;
  MDB_val sv;
  if (!store_record_ok(v->s, TAG_PIXELS, k, val)) problem(d, "pixels[%llu]: checksum mismatch", (unsigned long long)index);
  else if (store_check_pixels(v, index, val->mv_size - REC_SUM_BYTES, &err)) problem(d, "%s", err.msg);
  else if (mdb_get(v->txn, samples, (MDB_val *)k, &sv))
    problem(d, "pixels[%llu]: no sample record at this index", (unsigned long long)index);
}

static void check_key(store_view *v, store_db_report *d, const MDB_val *k, const MDB_val *val, void *ctx) {
  MDB_dbi samples = *(MDB_dbi *)ctx;
  int n = (int)(k->mv_size < 100 ? k->mv_size : 100);
  if (val->mv_size != 8 + REC_SUM_BYTES || !store_record_ok(v->s, TAG_KEYS, k, val)) {
    problem(d, "keys['%.*s']: checksum or length mismatch", n, (const char *)k->mv_data);
    return;
  }
  MDB_val sk = {8, val->mv_data}, sv;
  store_sample smp;
  if (mdb_get(v->txn, samples, &sk, &sv) || !store_value_in_file(v->s, sv.mv_data, sv.mv_size) ||
      store_parse_sample(store_get_be64(val->mv_data), &sv, &smp, NULL) || smp.key_len != k->mv_size ||
      memcmp(smp.key, k->mv_data, k->mv_size))
    problem(d, "keys['%.*s']: the sample it names does not carry this key", n, (const char *)k->mv_data);
}

static void check_annotation(store_view *v, store_db_report *d, const MDB_val *k, const MDB_val *val, void *ctx) {
  int tag = *(int *)ctx;
  if (k->mv_size != 8 || !store_record_ok(v->s, tag, k, val) || val->mv_size == REC_SUM_BYTES)
    problem(d, "%s[%llu]: checksum or length mismatch", d->name,
            k->mv_size == 8 ? (unsigned long long)store_get_be64(k->mv_data) : 0ULL);
}

typedef struct emb_ctx {
  uint64_t count[STORE_MAX_MODELS][2];
} emb_ctx;

static void check_block(store_view *v, store_db_report *d, const MDB_val *k, const MDB_val *val, void *ctx) {
  emb_ctx *ec = ctx;
  const uint8_t *kp = k->mv_data;
  if (k->mv_size != EMB_KEY_LEN || kp[3] != 0 || kp[2] > 1) {
    problem(d, "a key of %zu bytes that is not (model, modality, block)", k->mv_size);
    return;
  }
  int model = kp[0] << 8 | kp[1];
  store_modality mod = kp[2];
  uint32_t number = (uint32_t)kp[4] << 24 | (uint32_t)kp[5] << 16 | (uint32_t)kp[6] << 8 | kp[7];
  int dim;
  taca_error err;
  if (store_model_check(&v->models, model, mod, &dim, &err)) {
    problem(d, "block %u: %s", number, err.msg);
    return;
  }
  store_block b;
  if (block_parse(v->s, &v->models.m[model], mod, dim, number, val->mv_data, val->mv_size, &b, &err)) {
    problem(d, "%s", err.msg);
    return;
  }
  uint32_t bits = 0;
  for (int r = 0; r < b.size; r++) bits += (uint32_t)block_row_valid(b.bitmap, r);
  if (bits != b.count) problem(d, "model '%s' block %u: %u rows marked, %u counted", v->models.m[model].name, number,
                               bits, b.count);
  ec->count[model][mod] += bits;
}

int store_verify(store_view *v, store_verify_report *r, taca_error *err) {
  memset(r, 0, sizeof *r);
  taca_store *s = v->s;
  store_db_report *meta = db_begin(r, "meta");
  walk(v, s->meta, meta, check_meta, NULL);
  store_info info;
  int have_info = store_get_info(v, &info, err) == 0;
  if (!have_info) problem(meta, "%s", err->msg);

  sample_ctx sc = {s->keys};
  walk(v, s->samples, db_begin(r, "samples"), check_sample, &sc);
  walk(v, s->pixels, db_begin(r, "pixels"), check_pixels, &s->samples);
  walk(v, s->keys, db_begin(r, "keys"), check_key, &s->samples);
  store_db_report *emb = db_begin(r, "emb");
  static emb_ctx ec_zero;
  emb_ctx ec = ec_zero;
  if (have_info) {
    walk(v, s->emb, emb, check_block, &ec);
    for (int id = 0; id < info.n_models; id++)
      for (int m = 0; m < 2; m++)
        if (ec.count[id][m] != info.n_embeddings[id][m])
          problem(emb, "model '%s' %s: %llu vectors in the blocks, %llu counted in meta", info.models[id].name,
                  store_modality_name((store_modality)m), (unsigned long long)ec.count[id][m],
                  (unsigned long long)info.n_embeddings[id][m]);
  } else {
    problem(emb, "not checked: the model records cannot be read");
  }

  if (s->has_annotations) {
    int tc = TAG_CAPTIONS, tm = TAG_METADATA;
    walk(v, s->captions, db_begin(r, "captions"), check_annotation, &tc);
    walk(v, s->metadata, db_begin(r, "metadata"), check_annotation, &tm);
  }
  store_db_report *h = db_begin(r, "content hash");
  taca_error herr;
  if (store_content_hash(v, r->hash, &herr)) {
    problem(h, "%s", herr.msg);
  } else {
    const void *val;
    size_t len;
    if (store_get_meta(v, STORE_CONTENT_HASH_KEY, &val, &len, &herr) == 0 && val) {
      json_t *j = json_loadb(val, len, 0, NULL);
      const char *hx = json_string_value(json_object_get(j, "hash")), *by = json_string_value(json_object_get(j, "by"));
      if (hx && strlen(hx) == 32) {
        r->hash_recorded = 1;
        memcpy(r->recorded, hx, 33);
        snprintf(r->recorded_by, sizeof r->recorded_by, "%s", by ? by : "");
        r->hash_equal = !strcmp(hx, r->hash);
        h->records = 1;
        if (!r->hash_equal)
          problem(h, "content hash %s differs from %s recorded by %s", r->hash, hx, by ? by : "the last writer");
      } else {
        problem(h, "the recorded content hash does not parse");
      }
      json_decref(j);
    }
  }
  for (int i = 0; i < r->n_db; i++) r->problems += r->db[i].bad;
  return 0;
}
