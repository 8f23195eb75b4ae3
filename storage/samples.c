/* samples.c: per-sample records (label, token ids, source key), their pixel bytes and the
 * key -> index table: writing, reading (every value checked against its checksum) and the
 * "not stored / out of range" answers. */
#include "storage/store_internal.h"

#include <stdio.h>

/* Key text for messages: printable bytes as is, others as '?', at most 120 bytes. */
static const char *show_key(const char *key, size_t len, char buf[128]) {
  size_t n = len < 120 ? len : 120;
  for (size_t i = 0; i < n; i++) buf[i] = (key[i] >= 0x20 && key[i] < 0x7f) ? key[i] : '?';
  if (len > n) memcpy(buf + n, "...", 4);
  else buf[n] = '\0';
  return buf;
}

static int last_key(store_txn *t, MDB_dbi dbi, uint64_t *last, int *have, taca_error *err) {
  MDB_cursor *c;
  MDB_val k, v;
  int rc = mdb_cursor_open(t->txn, dbi, &c);
  if (rc) return store_mdb_fail(t->s, err, rc, "cursor");
  rc = mdb_cursor_get(c, &k, &v, MDB_LAST);
  mdb_cursor_close(c);
  *have = rc == 0 && k.mv_size == 8;
  if (*have) *last = store_get_be64(k.mv_data);
  if (rc && rc != MDB_NOTFOUND) return store_mdb_fail(t->s, err, rc, "cursor");
  return 0;
}

/* Puts an index-keyed value and its checksum, appending (dense pages) when the index is past the
 * last one. */
static int put_indexed(store_txn *t, MDB_dbi dbi, int tag, uint64_t index, const void *val, size_t len,
                       uint64_t *last, int *have, const char *what, taca_error *err) {
  uint8_t ik[8];
  store_be64(ik, index);
  MDB_val k = {8, ik}, d = {len + REC_SUM_BYTES, NULL};
  unsigned flags = (!*have || index > *last) ? MDB_APPEND : 0;
  int rc = mdb_put(t->txn, dbi, &k, &d, flags | MDB_RESERVE);
  if (rc == 0) {
    memcpy(d.mv_data, val, len);
    store_seal_record(tag, ik, 8, d.mv_data, len + REC_SUM_BYTES);
  }
  if (rc) {
    t->failed = 1;
    char w[96];
    snprintf(w, sizeof w, "sample %llu: writing %s", (unsigned long long)index, what);
    return store_mdb_fail(t->s, err, rc, w);
  }
  if (flags) {
    *last = index;
    *have = 1;
  }
  return 0;
}

int store_check_key(const char *key, size_t len, taca_error *err) {
  if (!key || len == 0) return taca_fail(err, "key is empty");
  if (len > STORE_MAX_KEY) return taca_fail(err, "key of %zu bytes is longer than %d bytes", len, STORE_MAX_KEY);
  const unsigned char *p = (const unsigned char *)key;
  for (size_t i = 0; i < len;) {
    unsigned c = p[i];
    size_t n = c < 0x80 ? 1 : (c & 0xe0) == 0xc0 ? 2 : (c & 0xf0) == 0xe0 ? 3 : (c & 0xf8) == 0xf0 ? 4 : 0;
    unsigned cp = n == 1 ? c : n == 2 ? c & 0x1f : n == 3 ? c & 0x0f : c & 0x07;
    if (n == 0 || i + n > len) return taca_fail(err, "key is not UTF-8 (byte %zu)", i);
    for (size_t j = 1; j < n; j++) {
      if ((p[i + j] & 0xc0) != 0x80) return taca_fail(err, "key is not UTF-8 (byte %zu)", i + j);
      cp = cp << 6 | (p[i + j] & 0x3f);
    }
    if ((n == 2 && cp < 0x80) || (n == 3 && cp < 0x800) || (n == 4 && (cp < 0x10000 || cp > 0x10ffff)) ||
        (cp >= 0xd800 && cp <= 0xdfff))
      return taca_fail(err, "key is not UTF-8 (byte %zu)", i);
    if (cp == 0) return taca_fail(err, "key has a NUL byte at %zu", i);
    i += n;
  }
  return 0;
}

int store_put_sample(store_txn *t, uint64_t index, const char *key, size_t key_len, int32_t label,
                     const int32_t *tokens, const void *pixels, size_t pixel_len, taca_error *err) {
  if (store_txn_guard(t, err)) return -1;
  unsigned long long ix = (unsigned long long)index;
  if (store_check_key(key, key_len, err)) return taca_error_prefix(err, "sample %llu", ix);
  if (store_txn_check_index(t, index, err)) return taca_error_prefix(err, "sample %llu", ix);
  t->content_changed = 1;

  uint8_t rec[SAMPLE_HDR + STORE_MAX_KEY];
  memset(rec, 0, SAMPLE_HDR);
  rec[0] = SAMPLE_LAYOUT;
  rec[1] = (uint8_t)((tokens ? SAMPLE_FLAG_TOKENS : 0) | (label >= 0 ? SAMPLE_FLAG_LABEL : 0));
  wr_u16le(rec + 2, (uint16_t)key_len);
  wr_u32le(rec + 4, (uint32_t)(label >= 0 ? label : -1));
  if (tokens)
    for (int i = 0; i < STORE_CONTEXT_LEN; i++) {
      if (tokens[i] < 0 || tokens[i] > 0xffff)
        return taca_fail(err, "sample %llu: token id %d at position %d does not fit in 16 bits", ix, tokens[i], i);
      wr_u16le(rec + 8 + 2 * i, (uint16_t)tokens[i]);
    }
  memcpy(rec + SAMPLE_HDR, key, key_len);

  if (pixels) {
    store_pixel_format pf;
    int found;
    if (store_txn_pixel_format(t, &pf, &found, err)) return -1;
    if (!found) return taca_fail(err, "sample %llu: pixels given but the store has no pixel format set", ix);
    size_t want = (size_t)pf.channels * pf.size * pf.size;
    if (!strcmp(pf.codec, "raw") && pixel_len != want)
      return taca_fail(err, "sample %llu: %zu pixel bytes, expected %zu (raw uint8 %dx%dx%d)", ix, pixel_len, want,
                       pf.channels, pf.size, pf.size);
    if (pixel_len == 0) return taca_fail(err, "sample %llu: empty pixel data", ix);
  }

  char shown[128];
  uint8_t ik[8];
  store_be64(ik, index);
  MDB_val kk = {key_len, (void *)key}, kv;
  int rc = mdb_get(t->txn, t->s->keys, &kk, &kv);
  if (rc == 0) {
    if (kv.mv_size != 8 + REC_SUM_BYTES || !store_record_ok(t->s, TAG_KEYS, &kk, &kv)) {
      t->failed = 1;
      return store_corrupt(err, "keys['%s']: checksum or length mismatch", show_key(key, key_len, shown));
    }
    uint64_t other = store_get_be64(kv.mv_data);
    if (other != index)
      return taca_fail(err, "sample %llu: key '%s' already belongs to sample %llu", ix, show_key(key, key_len, shown),
                       (unsigned long long)other);
  } else if (rc != MDB_NOTFOUND) {
    return store_mdb_fail(t->s, err, rc, "keys");
  }

  /* A replaced sample's old key goes away. */
  MDB_val sk = {8, ik}, old;
  rc = mdb_get(t->txn, t->s->samples, &sk, &old);
  if (rc == 0 && (old.mv_size < SAMPLE_HDR + REC_SUM_BYTES || !store_record_ok(t->s, TAG_SAMPLES, &sk, &old))) {
    t->failed = 1;
    return store_corrupt(err, "samples[%llu]: checksum or length mismatch", ix);
  }
  if (rc == 0) {
    size_t ol = rd_u16le((const uint8_t *)old.mv_data + 2);
    const char *okey = (const char *)old.mv_data + SAMPLE_HDR;
    if (SAMPLE_HDR + ol + REC_SUM_BYTES == old.mv_size && (ol != key_len || memcmp(okey, key, key_len))) {
      char okbuf[STORE_MAX_KEY];
      memcpy(okbuf, okey, ol);  /* the map page may change under the delete */
      MDB_val ok = {ol, okbuf};
      rc = mdb_del(t->txn, t->s->keys, &ok, NULL);
      if (rc && rc != MDB_NOTFOUND) {
        t->failed = 1;
        return store_mdb_fail(t->s, err, rc, "keys");
      }
    }
  } else if (rc && rc != MDB_NOTFOUND) {
    return store_mdb_fail(t->s, err, rc, "samples");
  }

  uint8_t kval[8 + REC_SUM_BYTES];
  memcpy(kval, ik, 8);
  store_seal_record(TAG_KEYS, key, key_len, kval, sizeof kval);
  MDB_val kd = {sizeof kval, kval};
  rc = mdb_put(t->txn, t->s->keys, &kk, &kd, 0);
  if (rc) {
    t->failed = 1;
    return store_mdb_fail(t->s, err, rc, "keys");
  }
  if (!t->last_sample_known) {
    if (last_key(t, t->s->samples, &t->last_sample, &t->have_last_sample, err) ||
        last_key(t, t->s->pixels, &t->last_pixels, &t->have_last_pixels, err)) {
      t->failed = 1;
      return -1;
    }
    t->last_sample_known = 1;
  }
  if (put_indexed(t, t->s->samples, TAG_SAMPLES, index, rec, SAMPLE_HDR + key_len, &t->last_sample,
                  &t->have_last_sample, "record", err))
    return -1;
  if (pixels)
    return put_indexed(t, t->s->pixels, TAG_PIXELS, index, pixels, pixel_len, &t->last_pixels, &t->have_last_pixels,
                       "pixels", err);
  MDB_val pk = {8, ik};
  rc = mdb_del(t->txn, t->s->pixels, &pk, NULL);
  if (rc && rc != MDB_NOTFOUND) {
    t->failed = 1;
    return store_mdb_fail(t->s, err, rc, "pixels");
  }
  return 0;
}

int store_missing(store_view *v, uint64_t index, const char *what, taca_error *err) {
  uint64_t b, e;
  int any;
  if (store_effective_range(v->s, v->txn, &b, &e, &any, err)) return -1;
  unsigned long long ix = (unsigned long long)index;
  if (!any) taca_fail(err, "index %llu: the store holds no samples", ix);
  else if (index < b || index >= e)
    taca_fail(err, "index %llu outside this store's range [%llu, %llu)", ix, (unsigned long long)b,
              (unsigned long long)e);
  else
    taca_fail(err, "%s for sample %llu not stored (range [%llu, %llu))", what, ix, (unsigned long long)b,
              (unsigned long long)e);
  return STORE_NOT_STORED;
}

int store_parse_sample(uint64_t index, const MDB_val *d, store_sample *out, taca_error *err) {
  const uint8_t *p = d->mv_data;
  if (d->mv_size < SAMPLE_HDR + REC_SUM_BYTES || p[0] != SAMPLE_LAYOUT ||
      SAMPLE_HDR + (size_t)rd_u16le(p + 2) + REC_SUM_BYTES != d->mv_size || rd_u16le(p + 2) == 0)
    return store_corrupt(err, "samples[%llu]: bad record (%zu bytes, layout %d)", (unsigned long long)index,
                         d->mv_size, d->mv_size ? p[0] : -1);
  out->index = index;
  out->label = (p[1] & SAMPLE_FLAG_LABEL) ? (int32_t)rd_u32le(p + 4) : -1;
  out->has_tokens = (p[1] & SAMPLE_FLAG_TOKENS) != 0;
  for (int i = 0; i < STORE_CONTEXT_LEN; i++) out->tokens[i] = rd_u16le(p + 8 + 2 * i);
  out->key = (const char *)p + SAMPLE_HDR;
  out->key_len = d->mv_size - SAMPLE_HDR - REC_SUM_BYTES;
  return 0;
}

int store_check_pixels(store_view *v, uint64_t index, size_t body_len, taca_error *err) {
  store_pixel_format pf;
  int found;
  if (store_view_pixel_format(v, &pf, &found, err)) return -1;
  if (!found) return store_corrupt(err, "pixels[%llu]: pixels stored but no pixel format", (unsigned long long)index);
  size_t want = (size_t)pf.channels * pf.size * pf.size;
  if (strcmp(pf.codec, "raw") ? body_len == 0 : body_len != want)
    return store_corrupt(err, "pixels[%llu]: %zu bytes for pixel format %s %dx%dx%d", (unsigned long long)index,
                         body_len, pf.codec, pf.channels, pf.size, pf.size);
  return 0;
}

int store_get_sample(store_view *v, uint64_t index, store_sample *out, taca_error *err) {
  uint8_t ik[8];
  store_be64(ik, index);
  MDB_val k = {8, ik}, d;
  int rc = mdb_get(v->txn, v->s->samples, &k, &d);
  if (rc == MDB_NOTFOUND && store_confirm_absent(v->s, v->txn, v->s->samples, TAG_SAMPLES, ik, 8, "samples", err))
    return -1;
  if (rc == MDB_NOTFOUND) return store_missing(v, index, "record", err);
  if (rc) return store_mdb_fail(v->s, err, rc, "samples");
  if (!store_record_ok(v->s, TAG_SAMPLES, &k, &d))
    return store_corrupt(err, "samples[%llu]: checksum mismatch", (unsigned long long)index);
  return store_parse_sample(index, &d, out, err);
}

int store_get_pixels(store_view *v, uint64_t index, const uint8_t **data, size_t *len, taca_error *err) {
  uint8_t ik[8];
  store_be64(ik, index);
  MDB_val k = {8, ik}, d;
  *data = NULL;
  *len = 0;
  int rc = mdb_get(v->txn, v->s->pixels, &k, &d);
  if (rc == MDB_NOTFOUND && store_confirm_absent(v->s, v->txn, v->s->pixels, TAG_PIXELS, ik, 8, "pixels", err))
    return -1;
  if (rc == MDB_NOTFOUND) return store_missing(v, index, "pixels", err);
  if (rc) return store_mdb_fail(v->s, err, rc, "pixels");
  if (!store_record_ok(v->s, TAG_PIXELS, &k, &d))
    return store_corrupt(err, "pixels[%llu]: checksum or length mismatch", (unsigned long long)index);
  if (store_check_pixels(v, index, d.mv_size - REC_SUM_BYTES, err)) return -1;
  *data = d.mv_data;
  *len = d.mv_size - REC_SUM_BYTES;
  return 0;
}

int store_lookup_key(store_view *v, const char *key, size_t key_len, uint64_t *index, taca_error *err) {
  char shown[128];
  if (!key || key_len == 0 || key_len > STORE_MAX_KEY)
    return taca_fail(err, "key is empty or longer than %d bytes", STORE_MAX_KEY);
  MDB_val k = {key_len, (void *)key}, d;
  int rc = mdb_get(v->txn, v->s->keys, &k, &d);
  if (rc == MDB_NOTFOUND && store_confirm_absent(v->s, v->txn, v->s->keys, TAG_KEYS, key, key_len, "keys", err))
    return -1;
  if (rc == MDB_NOTFOUND) {
    taca_fail(err, "key '%s' not found", show_key(key, key_len, shown));
    return STORE_NOT_STORED;
  }
  if (rc) return store_mdb_fail(v->s, err, rc, "keys");
  if (d.mv_size != 8 + REC_SUM_BYTES || !store_record_ok(v->s, TAG_KEYS, &k, &d))
    return store_corrupt(err, "keys['%s']: checksum or length mismatch", show_key(key, key_len, shown));
  *index = store_get_be64(d.mv_data);
  return 0;
}
