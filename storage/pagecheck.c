/* pagecheck.c: the structure of every B-tree page a store's snapshot can reach, checked before
 * LMDB walks it. LMDB trusts its pages: a flipped node offset, key size or flag makes it read
 * outside the page or follow a NULL sub-cursor (SIGSEGV), so a damaged page must be found first.
 * From the newest meta page: the free and main databases and each named database reached through
 * the main one, every branch and leaf page read with pread (nothing mapped is touched): header
 * bounds, node offsets, key and data sizes inside the page, flags this schema uses, child and
 * overflow page numbers inside the file (overflow pages themselves are not read), each page reached once, keys in order within a page and
 * within the separators of the parent. Layout: LMDB 0.9 (lmdb/mdb.c, 64-bit pgno_t). */
#include "storage/store_internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

enum { P_BRANCH = 0x01, P_LEAF = 0x02, P_OVERFLOW = 0x04, P_META = 0x08, P_LEAF2 = 0x20 };
enum { F_BIGDATA = 0x01, F_SUBDATA = 0x02, F_DUPDATA = 0x04 };
enum { PAGEHDR = 16, NODEHDR = 8, DB_RECORD = 48, MAX_DEPTH = 32 };
#define P_INVALID (~(uint64_t)0)

typedef struct walker {
  int fd;
  size_t psize;
  uint64_t npages;  /* pages of the snapshot: last_pg + 1 */
  uint8_t *seen;    /* a bit per page */
  uint8_t *buf[MAX_DEPTH + 1];
  char where[64];
  taca_error *err;
} walker;

static uint16_t u16at(const uint8_t *p) { uint16_t v; memcpy(&v, p, 2); return v; }
static uint64_t u64at(const uint8_t *p) { uint64_t v; memcpy(&v, p, 8); return v; }

static int bad(walker *w, uint64_t pgno, const char *why) {
  return store_corrupt(w->err, "data.mdb page %llu (%s): %s", (unsigned long long)pgno, w->where, why);
}

static int read_page(walker *w, uint64_t pgno, uint8_t *out) {
  if (pgno >= w->npages) return bad(w, pgno, "page number beyond the last page");
  ssize_t got = pread(w->fd, out, w->psize, (off_t)(pgno * w->psize));
  if (got != (ssize_t)w->psize)
    return got < 0 ? taca_fail(w->err, "data.mdb: %s", strerror(errno)) : bad(w, pgno, "past the end of the file");
  return 0;
}

/* lexicographic, then shorter first: LMDB's default order */
static int key_cmp(const uint8_t *a, size_t la, const uint8_t *b, size_t lb) {
  int c = memcmp(a, b, la < lb ? la : lb);
  return c ? c : (la > lb) - (la < lb);
}

typedef struct bound {
  const uint8_t *key;  /* NULL: unbounded */
  size_t len;
} bound;

static int walk_tree(walker *w, uint64_t pgno, int depth, int is_main, int ordered, bound lo, bound hi);

/* An overflow run that holds a big value: inside the file and reached once. Its pages are not read
 * here (one read per pixel record would cost as much as the data); every read of the value is
 * checked inside the file and against its checksum instead. */
static int check_overflow(walker *w, uint64_t pgno, uint64_t dsize) {
  uint64_t pages = (PAGEHDR + dsize + w->psize - 1) / w->psize;
  if (pgno < 2 || pgno >= w->npages || pages > w->npages - pgno) return bad(w, pgno, "overflow run outside the file");
  for (uint64_t p = pgno; p < pgno + pages; p++) {
    if (w->seen[p >> 3] & (1u << (p & 7))) return bad(w, p, "page reached twice");
    w->seen[p >> 3] |= (uint8_t)(1u << (p & 7));
  }
  return 0;
}

static int walk_tree(walker *w, uint64_t pgno, int depth, int is_main, int ordered, bound lo, bound hi) {
  if (depth >= MAX_DEPTH) return bad(w, pgno, "tree deeper than LMDB allows");
  if (pgno >= w->npages) return bad(w, pgno, "page number beyond the last page");
  if (w->seen[pgno >> 3] & (1u << (pgno & 7))) return bad(w, pgno, "page reached twice");
  w->seen[pgno >> 3] |= (uint8_t)(1u << (pgno & 7));
  uint8_t *pg = w->buf[depth];
  if (read_page(w, pgno, pg)) return -1;
  uint16_t flags = u16at(pg + 10), lower = u16at(pg + 12), upper = u16at(pg + 14);
  int leaf = (flags & (P_BRANCH | P_LEAF | P_OVERFLOW | P_META | P_LEAF2)) == P_LEAF;
  int branch = (flags & (P_BRANCH | P_LEAF | P_OVERFLOW | P_META | P_LEAF2)) == P_BRANCH;
  if (u64at(pg) != pgno) return bad(w, pgno, "its header names another page");
  if (!leaf && !branch) return bad(w, pgno, "neither a branch nor a leaf page");
  if (lower < PAGEHDR || lower > upper || upper > w->psize || (lower - PAGEHDR) % 2)
    return bad(w, pgno, "free-space bounds out of the page");
  int n = (lower - PAGEHDR) / 2;
  if (n == 0 || (branch && n < 2)) return bad(w, pgno, "too few nodes");
  const uint8_t *prev = NULL;
  size_t prev_len = 0;
  for (int i = 0; i < n; i++) {
    uint16_t off = u16at(pg + PAGEHDR + 2 * i);
    if (off < upper || (size_t)off + NODEHDR > w->psize) return bad(w, pgno, "node offset out of the page");
    const uint8_t *nd = pg + off;
    uint16_t lo16 = u16at(nd), hi16 = u16at(nd + 2), nflags = u16at(nd + 4), ksize = u16at(nd + 6);
    const uint8_t *key = nd + NODEHDR;
    if ((size_t)off + NODEHDR + ksize > w->psize) return bad(w, pgno, "key runs past the page");
    if (branch && i == 0 && ksize != 0) return bad(w, pgno, "first branch key not empty");
    int keyed = !(branch && i == 0);
    if (keyed && ordered) {
      if (prev && key_cmp(prev, prev_len, key, ksize) >= 0) return bad(w, pgno, "keys out of order");
      if (lo.key && key_cmp(key, ksize, lo.key, lo.len) < 0) return bad(w, pgno, "key below its parent's separator");
      if (hi.key && key_cmp(key, ksize, hi.key, hi.len) >= 0) return bad(w, pgno, "key above its parent's separator");
    }
    if (keyed) prev = key, prev_len = ksize;
    if (branch) {
      uint64_t child = (uint64_t)lo16 | (uint64_t)hi16 << 16 | (uint64_t)nflags << 32;
      bound clo = i == 0 ? lo : (bound){key, ksize}, chi = hi;
      if (i + 1 < n) {
        uint16_t noff = u16at(pg + PAGEHDR + 2 * (i + 1));
        if (noff < upper || (size_t)noff + NODEHDR > w->psize ||
            (size_t)noff + NODEHDR + u16at(pg + noff + 6) > w->psize)
          return bad(w, pgno, "node offset out of the page");
        chi = (bound){pg + noff + NODEHDR, u16at(pg + noff + 6)};
      }
      /* the child walk reuses deeper buffers only, so key pointers into this page stay valid */
      if (walk_tree(w, child, depth + 1, is_main, ordered, clo, chi)) return -1;
      continue;
    }
    uint64_t dsize = (uint64_t)lo16 | (uint64_t)hi16 << 16;
    if (nflags & ~(F_BIGDATA | F_SUBDATA)) return bad(w, pgno, "node flags this store never writes (dup data)");
    if ((nflags & F_SUBDATA) && !is_main) return bad(w, pgno, "a sub-database record outside the main database");
    size_t inline_len = (nflags & F_BIGDATA) ? 8 : dsize;
    if ((size_t)off + NODEHDR + ksize + inline_len > w->psize) return bad(w, pgno, "value runs past the page");
    if (nflags & F_BIGDATA) {
      if (nflags & F_SUBDATA) return bad(w, pgno, "a sub-database record on overflow pages");
      if (check_overflow(w, u64at(key + ksize), dsize)) return -1;
    }
    if (nflags & F_SUBDATA) {
      const uint8_t *db = key + ksize;
      if (dsize != DB_RECORD) return bad(w, pgno, "sub-database record of the wrong size");
      uint64_t root = u64at(db + 40);
      if (u16at(db + 4) != 0) return bad(w, pgno, "a named database with flags this store never sets");
      char saved[64];
      memcpy(saved, w->where, sizeof saved);
      snprintf(w->where, sizeof w->where, "database '%.*s'", (int)(ksize < 32 ? ksize : 32), (const char *)key);
      if (root != P_INVALID && walk_tree(w, root, depth + 1, 0, 1, (bound){0}, (bound){0})) return -1;
      memcpy(w->where, saved, sizeof saved);
    }
  }
  return 0;
}

int store_check_pages(taca_store *s, taca_error *err) {
  MDB_stat st;
  if (mdb_env_stat(s->env, &st)) return taca_fail(err, "cannot read the meta page");
  MDB_txn *txn; /* pins the snapshot: no page it can reach is reused while the walk runs */
  int rc = mdb_txn_begin(s->env, NULL, MDB_RDONLY, &txn);
  if (rc) return store_mdb_fail(s, err, rc, "beginning a read view");
  walker w = {.fd = s->fd, .psize = st.ms_psize, .err = err};
  snprintf(w.where, sizeof w.where, "meta");
  uint8_t *meta[2] = {malloc(w.psize), malloc(w.psize)};
  int ret = -1, cur = -1;
  uint64_t best = 0;
  if (!meta[0] || !meta[1]) {
    taca_fail(err, "out of memory");
    goto done;
  }
  w.npages = 2;
  for (int i = 0; i < 2; i++) {
    if (read_page(&w, (uint64_t)i, meta[i])) goto done;
    const uint8_t *m = meta[i] + PAGEHDR;
    uint32_t magic;
    memcpy(&magic, m, 4);
    if (magic != 0xBEEFC0DE || !(u16at(meta[i] + 10) & P_META)) continue;
    uint64_t txnid = u64at(m + 128);
    if (cur < 0 || txnid > best) cur = i, best = txnid;
  }
  if (cur < 0) {
    store_corrupt(err, "data.mdb: no valid meta page");
    goto done;
  }
  const uint8_t *m = meta[cur] + PAGEHDR;
  w.npages = u64at(m + 120) + 1;
  if (w.npages < 2 || w.npages > ((uint64_t)1 << 40) / w.psize) {
    store_corrupt(err, "data.mdb: meta page %d: last page %llu out of range", cur, (unsigned long long)(w.npages - 1));
    goto done;
  }
  if (!(w.seen = calloc((size_t)(w.npages + 7) / 8, 1))) {
    taca_fail(err, "out of memory");
    goto done;
  }
  for (int d = 0; d <= MAX_DEPTH; d++)
    if (!(w.buf[d] = malloc(w.psize))) {
      taca_fail(err, "out of memory");
      goto done;
    }
  w.seen[0] |= 3;
  uint64_t free_root = u64at(m + 24 + 40), main_root = u64at(m + 72 + 40);
  snprintf(w.where, sizeof w.where, "free list");
  if (free_root != P_INVALID && walk_tree(&w, free_root, 0, 0, 0, (bound){0}, (bound){0})) goto done;
  snprintf(w.where, sizeof w.where, "main database");
  if (main_root != P_INVALID && walk_tree(&w, main_root, 0, 1, 1, (bound){0}, (bound){0})) goto done;
  ret = 0;
done:
  mdb_txn_abort(txn);
  free(meta[0]);
  free(meta[1]);
  free(w.seen);
  for (int d = 0; d <= MAX_DEPTH; d++) free(w.buf[d]);
  return ret;
}
