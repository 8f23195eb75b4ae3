/* annotations.c: what analysts read beside a sample's record: its caption text (`captions`) and its
 * source metadata, one JSON object such as the KEY.json img2dataset writes (`metadata`); both keyed
 * by the big-endian index like `samples`. Also the in-order walk over the stored samples (listing
 * keys). Stores written before these databases existed have neither (see store_open). */
#include "storage/store_internal.h"

#include <jansson.h>
#include <stdio.h>

/* Longest prefix of s[0..n) that does not end inside a UTF-8 sequence. */
static size_t utf8_cut(const char *s, size_t n) {
  size_t i = n;
  while (i > 0 && ((unsigned char)s[i - 1] & 0xC0) == 0x80) i--;  /* continuation bytes */
  if (i == 0) return 0;
  unsigned char lead = (unsigned char)s[i - 1];
  size_t need = lead < 0x80 ? 1 : (lead & 0xE0) == 0xC0 ? 2 : (lead & 0xF0) == 0xE0 ? 3 : 4;
  return n - (i - 1) >= need ? n : i - 1;
}

static int put_or_del(store_txn *t, MDB_dbi dbi, int tag, uint64_t index, const void *val, size_t len,
                      const char *what, taca_error *err) {
  uint8_t ik[8];
  store_be64(ik, index);
  MDB_val k = {8, ik}, d = {len + REC_SUM_BYTES, NULL}; /* the value and its checksum (store_internal.h) */
  int rc = len ? mdb_put(t->txn, dbi, &k, &d, MDB_RESERVE) : mdb_del(t->txn, dbi, &k, NULL);
  if (rc == 0 && len) {
    memcpy(d.mv_data, val, len);
    store_seal_record(tag, ik, 8, d.mv_data, len + REC_SUM_BYTES);
  }
  if (rc && !(rc == MDB_NOTFOUND && !len)) {
    t->failed = 1;
    char w[96];
    snprintf(w, sizeof w, "sample %llu: writing its %s", (unsigned long long)index, what);
    return store_mdb_fail(t->s, err, rc, w);
  }
  return 0;
}

int store_put_annotations(store_txn *t, uint64_t index, const char *caption, size_t caption_len,
                          const char *metadata, size_t metadata_len, taca_error *err) {
  if (store_txn_guard(t, err)) return -1;
  unsigned long long ix = (unsigned long long)index;
  if (store_txn_check_index(t, index, err)) return taca_error_prefix(err, "sample %llu", ix);
  if (!caption) caption_len = 0;
  if (!metadata) metadata_len = 0;
  if (caption_len > STORE_MAX_CAPTION) caption_len = utf8_cut(caption, STORE_MAX_CAPTION);
  if (metadata_len > STORE_MAX_METADATA)
    return taca_fail(err, "sample %llu: metadata of %zu bytes (at most %d)", ix, metadata_len, STORE_MAX_METADATA);
  if (metadata_len) {
    json_error_t je;
    json_t *j = json_loadb(metadata, metadata_len, 0, &je);
    int is_obj = json_is_object(j);
    json_decref(j);
    if (!is_obj) return taca_fail(err, "sample %llu: metadata is not one JSON object", ix);
  }
  t->content_changed = 1;
  if (put_or_del(t, t->s->captions, TAG_CAPTIONS, index, caption, caption_len, "caption", err)) return -1;
  return put_or_del(t, t->s->metadata, TAG_METADATA, index, metadata, metadata_len, "metadata", err);
}

static int get_annotation(store_view *v, MDB_dbi dbi, int tag, uint64_t index, const char **val, size_t *len,
                          int *found, taca_error *err) {
  *val = NULL;
  *len = 0;
  *found = 0;
  if (!v->s->has_annotations) return 0;
  uint8_t ik[8];
  store_be64(ik, index);
  MDB_val k = {8, ik}, d;
  const char *what = tag == TAG_CAPTIONS ? "captions" : "metadata";
  int rc = mdb_get(v->txn, dbi, &k, &d);
  if (rc == MDB_NOTFOUND) return store_confirm_absent(v->s, v->txn, dbi, tag, ik, 8, what, err);
  if (rc) return store_mdb_fail(v->s, err, rc, what);
  if (!store_record_ok(v->s, tag, &k, &d) || d.mv_size == REC_SUM_BYTES)
    return store_corrupt(err, "%s[%llu]: checksum or length mismatch", what, (unsigned long long)index);
  *val = d.mv_data;
  *len = d.mv_size - REC_SUM_BYTES;
  *found = 1;
  return 0;
}

int store_get_caption(store_view *v, uint64_t index, const char **text, size_t *len, int *found, taca_error *err) {
  return get_annotation(v, v->s->captions, TAG_CAPTIONS, index, text, len, found, err);
}

int store_get_metadata(store_view *v, uint64_t index, const char **json, size_t *len, int *found, taca_error *err) {
  return get_annotation(v, v->s->metadata, TAG_METADATA, index, json, len, found, err);
}

int store_scan_samples(store_view *v, uint64_t from, uint64_t limit,
                       int (*fn)(const store_sample *s, void *ctx), void *ctx, taca_error *err) {
  MDB_cursor *c;
  int rc = mdb_cursor_open(v->txn, v->s->samples, &c);
  if (rc) return store_mdb_fail(v->s, err, rc, "samples");
  uint8_t ik[8];
  store_be64(ik, from);
  MDB_val k = {8, ik}, d;
  uint64_t seen = 0;
  int ret = 0;
  for (rc = mdb_cursor_get(c, &k, &d, MDB_SET_RANGE); rc == 0; rc = mdb_cursor_get(c, &k, &d, MDB_NEXT)) {
    if (k.mv_size != 8 || !store_value_in_file(v->s, k.mv_data, 8)) {
      ret = store_corrupt(err, "samples: a key that is not an index");
      break;
    }
    store_sample smp;
    if (store_get_sample(v, store_get_be64(k.mv_data), &smp, err)) {
      ret = -1;
      break;
    }
    if (fn(&smp, ctx) || (limit && ++seen >= limit)) break;
  }
  mdb_cursor_close(c);
  if (!ret && rc && rc != MDB_NOTFOUND) return store_mdb_fail(v->s, err, rc, "samples");
  return ret;
}
