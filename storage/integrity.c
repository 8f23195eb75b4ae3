/* integrity.c: what keeps a damaged data.mdb from crashing a reader or being served as data:
 * the per-record checksums (XXH3-64, seeded by database and key), the check that a value returned
 * by LMDB lies inside the file before anything reads it, the file length against the meta page at
 * open, and the "store corrupt at ..." error kind. */
#include "storage/store_internal.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <sys/stat.h>
#include <xxhash.h>

int store_corrupt(taca_error *err, const char *fmt, ...) {
  if (!err) return -1;
  char what[sizeof err->msg];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(what, sizeof what, fmt, ap);
  va_end(ap);
  return taca_fail(err, STORE_CORRUPT_MARK "%s", what);
}

int store_error_is_corrupt(const taca_error *err) {
  if (!err) return 0;
  static const char mark[] = STORE_CORRUPT_MARK;
  for (const char *p = err->msg; (p = strstr(p, mark)); p++)
    if (p == err->msg || (p >= err->msg + 2 && p[-2] == ':' && p[-1] == ' ')) return 1;
  return 0;
}

int store_rc_corrupt(int rc) {
  return rc == MDB_CORRUPTED || rc == MDB_PAGE_NOTFOUND || rc == MDB_INVALID || rc == MDB_BAD_TXN ||
         rc == MDB_BAD_VALSIZE;
}

uint64_t store_record_sum(int tag, const void *key, size_t klen, const void *body, size_t blen) {
  return XXH3_64bits_withSeed(body, blen, XXH3_64bits_withSeed(key, klen, (XXH64_hash_t)tag));
}

void store_seal_record(int tag, const void *key, size_t klen, uint8_t *rec, size_t len) {
  uint64_t sum = store_record_sum(tag, key, klen, rec, len - REC_SUM_BYTES);
  memcpy(rec + len - REC_SUM_BYTES, &sum, REC_SUM_BYTES);
}

static uint64_t file_len_now(taca_store *s) {
  struct stat st;
  if (fstat(s->fd, &st) != 0) return __atomic_load_n(&s->file_len, __ATOMIC_RELAXED);
  uint64_t n = (uint64_t)st.st_size;
  __atomic_store_n(&s->file_len, n, __ATOMIC_RELAXED);
  return n;
}

int store_value_in_file(taca_store *s, const void *p, size_t len) {
  const uint8_t *q = p;
  if (!s->map_base || q < s->map_base || q >= s->map_base + s->map_size) return 1; /* a write txn's own page */
  uint64_t off = (uint64_t)(q - s->map_base);
  uint64_t fl = __atomic_load_n(&s->file_len, __ATOMIC_RELAXED);
  if (len <= fl && off <= fl - len) return 1;
  fl = file_len_now(s); /* a writer may have grown the file since */
  return len <= fl && off <= fl - len;
}

int store_record_ok(taca_store *s, int tag, const MDB_val *k, const MDB_val *v) {
  if (!store_value_in_file(s, k->mv_data, k->mv_size) || !store_value_in_file(s, v->mv_data, v->mv_size) ||
      v->mv_size < REC_SUM_BYTES)
    return 0;
  uint64_t want;
  memcpy(&want, (const uint8_t *)v->mv_data + v->mv_size - REC_SUM_BYTES, REC_SUM_BYTES);
  return store_record_sum(tag, k->mv_data, k->mv_size, v->mv_data, v->mv_size - REC_SUM_BYTES) == want;
}

int store_check_file(taca_store *s, taca_error *err) {
  if (mdb_env_get_fd(s->env, &s->fd)) return taca_fail(err, "cannot get data.mdb's descriptor");
  MDB_envinfo ei;
  MDB_stat st;
  if (mdb_env_info(s->env, &ei) || mdb_env_stat(s->env, &st)) return taca_fail(err, "cannot read the meta page");
  uint64_t need = ((uint64_t)ei.me_last_pgno + 1) * st.ms_psize, have = file_len_now(s);
  if (have < need)
    return store_corrupt(err, "data.mdb: the file is %llu bytes but its meta page says %llu (truncated?)",
                         (unsigned long long)have, (unsigned long long)need);
  return 0;
}

static int locate(taca_store *s, MDB_txn *txn, const MDB_envinfo *ei, const MDB_stat *st, taca_error *err);

int store_locate_map(taca_store *s, taca_error *err) {
  MDB_envinfo ei;
  MDB_stat st;
  if (mdb_env_info(s->env, &ei) || mdb_env_stat(s->env, &st)) return taca_fail(err, "cannot read the meta page");
  MDB_txn *txn;
  int rc = mdb_txn_begin(s->env, NULL, MDB_RDONLY, &txn);
  if (rc) return store_mdb_fail(s, err, rc, "beginning a read view");
  rc = locate(s, txn, &ei, &st, err);
  mdb_txn_abort(txn);
  return rc;
}

static int locate(taca_store *s, MDB_txn *txn, const MDB_envinfo *ei, const MDB_stat *st, taca_error *err) {
  /* The map's address: a value of the main database points into one of its pages, and every page
   * starts with its own page number. */
  MDB_dbi main_db;
  int rc = mdb_dbi_open(txn, NULL, 0, &main_db);
  if (rc) return store_mdb_fail(s, err, rc, "main database");
  MDB_val k = {4, "meta"}, v;
  rc = mdb_get(txn, main_db, &k, &v);
  if (rc) return store_corrupt(err, "main database: %s", mdb_strerror(rc));
  uintptr_t page = (uintptr_t)v.mv_data & ~((uintptr_t)st->ms_psize - 1);
  uint64_t pgno;
  memcpy(&pgno, (const void *)page, sizeof pgno);
  if (pgno > ei->me_last_pgno)
    return store_corrupt(err, "main database: page number %llu beyond the last page %llu", (unsigned long long)pgno,
                         (unsigned long long)ei->me_last_pgno);
  s->map_base = (const uint8_t *)(page - (uintptr_t)(pgno * st->ms_psize));
  return 0;
}

int store_put_sealed(taca_store *s, MDB_txn *txn, MDB_dbi dbi, int tag, const void *key, size_t klen,
                     const void *val, size_t len, unsigned flags, taca_error *err, const char *what) {
  MDB_val k = {klen, (void *)key}, d = {len + REC_SUM_BYTES, NULL};
  int rc = mdb_put(txn, dbi, &k, &d, flags | MDB_RESERVE);
  if (rc) return store_mdb_fail(s, err, rc, what);
  if (len) memcpy(d.mv_data, val, len);
  store_seal_record(tag, key, klen, d.mv_data, len + REC_SUM_BYTES);
  return 0;
}

/* A neighbour of a key that was not found: inside the file, on the right side of it, and intact. */
static int neighbour_ok(taca_store *s, MDB_txn *txn, MDB_dbi dbi, int tag, const MDB_val *key, const MDB_val *nk,
                        const MDB_val *nv, int side) {
  if (!store_value_in_file(s, nk->mv_data, nk->mv_size)) return 0;
  int c = mdb_cmp(txn, dbi, nk, key);
  return (side > 0 ? c > 0 : c < 0) && store_record_ok(s, tag, nk, nv);
}

int store_confirm_absent(taca_store *s, MDB_txn *txn, MDB_dbi dbi, int tag, const void *key, size_t klen,
                         const char *what, taca_error *err) {
  MDB_cursor *c;
  int rc = mdb_cursor_open(txn, dbi, &c);
  if (rc) return store_mdb_fail(s, err, rc, what);
  MDB_val want = {klen, (void *)key}, k = want, v;
  int ok = 1;
  rc = mdb_cursor_get(c, &k, &v, MDB_SET_RANGE);
  if (rc == 0) {
    ok = neighbour_ok(s, txn, dbi, tag, &want, &k, &v, 1);
    if (ok) rc = mdb_cursor_get(c, &k, &v, MDB_PREV);
  } else if (rc == MDB_NOTFOUND) {
    rc = mdb_cursor_get(c, &k, &v, MDB_LAST);
  }
  if (ok && rc == 0) ok = neighbour_ok(s, txn, dbi, tag, &want, &k, &v, -1);
  mdb_cursor_close(c);
  if (rc && rc != MDB_NOTFOUND) return store_mdb_fail(s, err, rc, what);
  if (!ok) return store_corrupt(err, "%s: a lookup missed where the B-tree around it is damaged or out of order", what);
  return 0;
}
