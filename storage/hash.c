/* hash.c: the store's content hash (XXH3-128 over every database's entries in key order, meta
 * "progress/...", "index/..." and "content_hash" records left out, empty annotation databases too), its
 * record in meta, and the checksum of a weights file. */
#include "base/file_hash.h"
#include "storage/store_internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <jansson.h>
#include <xxhash.h>

static const char PROGRESS[] = "progress/";
static const char CONTENT_HASH[] = STORE_CONTENT_HASH_KEY;
static const char INDEX[] = "index/"; /* search indexes record the hash they were built from */

static void to_hex(XXH128_hash_t h, char hex[33]) {
  XXH128_canonical_t c;
  XXH128_canonicalFromHash(&c, h);
  for (int i = 0; i < 16; i++) snprintf(hex + 2 * i, 3, "%02x", c.digest[i]);
}

static int hash_db(store_view *v, MDB_dbi dbi, int tag, const char *name, int skip_progress, XXH3_state_t *st,
                   taca_error *err) {
  XXH3_128bits_update(st, name, strlen(name) + 1);
  MDB_cursor *c;
  int rc = mdb_cursor_open(v->txn, dbi, &c);
  if (rc) return store_mdb_fail(v->s, err, rc, name);
  MDB_val k, d;
  uint64_t n = 0;
  for (rc = mdb_cursor_get(c, &k, &d, MDB_FIRST); rc == 0; rc = mdb_cursor_get(c, &k, &d, MDB_NEXT)) {
    if (!store_value_in_file(v->s, k.mv_data, k.mv_size) || !store_value_in_file(v->s, d.mv_data, d.mv_size)) {
      mdb_cursor_close(c);
      return store_corrupt(err, "%s: a record runs past the end of data.mdb", name);
    }
    if (!store_record_ok(v->s, tag, &k, &d)) { /* a hash of damaged content would describe nothing */
      mdb_cursor_close(c);
      return store_corrupt(err, "%s: record %llu: checksum mismatch", name, (unsigned long long)n + 1);
    }
    if (skip_progress && ((k.mv_size >= sizeof PROGRESS - 1 && !memcmp(k.mv_data, PROGRESS, sizeof PROGRESS - 1)) ||
                          (k.mv_size == sizeof CONTENT_HASH - 1 && !memcmp(k.mv_data, CONTENT_HASH, k.mv_size)) ||
                          (k.mv_size >= sizeof INDEX - 1 && !memcmp(k.mv_data, INDEX, sizeof INDEX - 1))))
      continue;
    uint8_t len[12];
    wr_u32le(len, (uint32_t)k.mv_size);
    uint64_t dl = d.mv_size;
    memcpy(len + 4, &dl, 8);
    XXH3_128bits_update(st, len, 4);
    XXH3_128bits_update(st, k.mv_data, k.mv_size);
    XXH3_128bits_update(st, len + 4, 8);
    XXH3_128bits_update(st, d.mv_data, d.mv_size);
    n++;
  }
  mdb_cursor_close(c);
  if (rc != MDB_NOTFOUND) return store_mdb_fail(v->s, err, rc, name);
  XXH3_128bits_update(st, &n, sizeof n);
  return 0;
}

int store_content_hash(store_view *v, char hex[33], taca_error *err) {
  XXH3_state_t *st = XXH3_createState();
  if (!st) return taca_fail(err, "out of memory");
  XXH3_128bits_reset(st);
  taca_store *s = v->s;
  int rc = hash_db(v, s->meta, TAG_META, "meta", 1, st, err) || hash_db(v, s->samples, TAG_SAMPLES, "samples", 0, st, err) ||
           hash_db(v, s->pixels, TAG_PIXELS, "pixels", 0, st, err) || hash_db(v, s->keys, TAG_KEYS, "keys", 0, st, err) ||
           hash_db(v, s->emb, TAG_EMB, "emb", 0, st, err);
  /* Annotations only when there are some, so that stores without them keep their earlier hashes. */
  for (int i = 0; !rc && s->has_annotations && i < 2; i++) {
    MDB_dbi dbi = i ? s->metadata : s->captions;
    MDB_stat ms;
    int src = mdb_stat(v->txn, dbi, &ms);
    if (src) rc = store_mdb_fail(s, err, src, "stat");
    else if (ms.ms_entries) rc = hash_db(v, dbi, i ? TAG_METADATA : TAG_CAPTIONS, i ? "metadata" : "captions", 0, st, err);
  }
  if (!rc) to_hex(XXH3_128bits_digest(st), hex);
  XXH3_freeState(st);
  return rc ? -1 : 0;
}

int store_record_content_hash(taca_store *s, const char *by, taca_error *err) {
  store_txn *t;
  if (store_txn_begin(s, &t, err)) return -1;
  store_view inside = {.s = s, .txn = t->txn};  /* hashed in the writing transaction: nothing can intervene */
  char hex[33];
  int rc = store_content_hash(&inside, hex, err);
  json_t *j = rc ? NULL : json_pack("{s:s, s:s}", "by", by ? by : "", "hash", hex);
  char *js = j ? json_dumps(j, JSON_COMPACT | JSON_SORT_KEYS) : NULL;
  json_decref(j);
  if (!rc && !js) rc = taca_fail(err, "out of memory");
  if (!rc) {
    rc = store_put_sealed(s, t->txn, s->meta, TAG_META, CONTENT_HASH, sizeof CONTENT_HASH - 1, js, strlen(js), 0, err,
                          CONTENT_HASH);
  }
  free(js);
  if (rc) {
    store_txn_abort(t);
    return -1;
  }
  return store_txn_commit(t, err);
}

int store_file_checksum(const char *path, char hex[33], taca_error *err) {
  return taca_file_xxh3(path, hex, err); /* one file hash for the whole tree (base/file_hash.h) */
}
