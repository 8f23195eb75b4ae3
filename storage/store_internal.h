/* store_internal.h: structures and helpers shared by the storage sources (not a public API). */
#ifndef TACA_STORAGE_STORE_INTERNAL_H
#define TACA_STORAGE_STORE_INTERNAL_H

#include <lmdb.h>
#include <stdint.h>
#include <string.h>

#include "storage/store.h"

/* Every meta, samples, pixels, keys, emb, captions and metadata value ends in an 8-byte checksum (REC_SUM_BYTES):
 * XXH3-64 of the value's other bytes, seeded with XXH3-64 of the LMDB key seeded with the database's
 * tag, so that a value that moved to another key or database does not verify either. */
#define REC_SUM_BYTES 8
enum { TAG_SAMPLES = 1, TAG_PIXELS = 2, TAG_KEYS = 3, TAG_EMB = 4, TAG_META = 5, TAG_CAPTIONS = 6, TAG_METADATA = 7 };

/* sample record layout v2 (little-endian):
 *   0 u8 layout version (2) | 1 u8 flags | 2 u16 key length | 4 i32 label | 8 u16 tokens[77] | 162 key
 *   | 162+L u64 checksum */
#define SAMPLE_LAYOUT 2
#define SAMPLE_FLAG_TOKENS 0x01
#define SAMPLE_FLAG_LABEL 0x02
#define SAMPLE_HDR (8 + 2 * STORE_CONTEXT_LEN)

/* emb block record layout v2 (little-endian):
 *   0 u8 layout version (2) | 1 u8 dtype (1 = F16, 2 = F32) | 2 u16 zero | 4 u32 block size B
 *   8 u32 dim | 12 u32 rows stored | 16 bitmap ceil(B/8) bytes | zero padding | data B*dim elements
 *   | u64 checksum
 * The data starts at block_header_bytes(B) = round_up(32 + ceil(B/8), 64) - 16, so that it is 64-byte
 * aligned inside an LMDB overflow page (whose value starts 16 bytes into the page). */
#define BLOCK_LAYOUT 2
#define BLOCK_DT_F16 1
#define BLOCK_DT_F32 2
#define EMB_KEY_LEN 8  /* u16 BE model | u8 modality | u8 zero | u32 BE block number */

/* A model table as read from meta (model/<name> records), indexed by id. */
typedef struct model_table {
  int n;
  store_model m[STORE_MAX_MODELS];
} model_table;

struct taca_store {
  MDB_env *env;
  MDB_dbi meta, samples, pixels, keys, emb;
  MDB_dbi captions, metadata;  /* annotations.c; valid only when has_annotations */
  int has_annotations;         /* 0: a store written before these databases existed, opened read-only */
  int readonly;
  uint64_t map_size;
  int fd;                   /* data.mdb */
  const uint8_t *map_base;  /* where data.mdb is mapped (found at open) */
  uint64_t file_len;        /* data.mdb's length as last seen (grows; read and written atomically) */
  char dir[4096];
};

/* A block being modified inside a write transaction (written back on eviction and at commit). */
typedef struct block_slot {
  int used, dirty;
  int model;
  store_modality mod;
  uint32_t number;
  uint32_t stored_count;  /* rows counted in emb_count for this block so far */
  size_t len;
  uint8_t *rec;
  uint64_t lru;
} block_slot;

#define TXN_BLOCK_SLOTS 8

struct store_txn {
  taca_store *s;
  MDB_txn *txn;
  int failed;
  int models_loaded;
  model_table models;
  block_slot slots[TXN_BLOCK_SLOTS];
  uint64_t lru_clock;
  int64_t count_delta[STORE_MAX_MODELS][2];
  int last_sample_known;
  int have_last_sample;
  uint64_t last_sample;   /* highest index in samples (for MDB_APPEND) */
  uint64_t last_pixels;
  int have_last_pixels;
  int range_state;        /* 0 not read yet, 1 none declared, 2 declared (in range) */
  store_range range;
  int pixel_state;        /* 0 not read yet, 1 none set, 2 set (in pixel) */
  store_pixel_format pixel;
  int content_changed;    /* anything but progress/ and content_hash written: the recorded hash goes */
};

struct store_view {
  taca_store *s;
  MDB_txn *txn;
  int models_loaded;
  model_table models;
  int pixel_state;        /* as in store_txn */
  store_pixel_format pixel;
};

/* ---- integrity (integrity.c) ---- */
/* "store corrupt at <what>: <why>" (STORE_CORRUPT_MARK); returns -1. */
int store_corrupt(taca_error *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
uint64_t store_record_sum(int tag, const void *key, size_t klen, const void *body, size_t blen);
/* Appends nothing: writes the checksum of rec[0, len - 8) into its last 8 bytes. */
void store_seal_record(int tag, const void *key, size_t klen, uint8_t *rec, size_t len);
/* 1 when the value lies inside data.mdb (or outside the map: a write transaction's own page) and its
 * last 8 bytes are the checksum of the rest; 0 otherwise. */
int store_value_in_file(taca_store *s, const void *p, size_t len);
int store_record_ok(taca_store *s, int tag, const MDB_val *k, const MDB_val *v);
/* data.mdb's length against the meta page (store_open, before any page is read). */
int store_check_file(taca_store *s, taca_error *err);
/* Every branch and leaf page the newest snapshot reaches, checked before LMDB reads any
 * (pagecheck.c; store_open). */
int store_check_pages(taca_store *s, taca_error *err);
/* Finds where data.mdb is mapped (store_open, after the databases are open). */
int store_locate_map(taca_store *s, taca_error *err);
/* mdb_put of val (len bytes) + its checksum (MDB_RESERVE); fails through store_mdb_fail. */
int store_put_sealed(taca_store *s, MDB_txn *txn, MDB_dbi dbi, int tag, const void *key, size_t klen,
                     const void *val, size_t len, unsigned flags, taca_error *err, const char *what);
/* After MDB_NOTFOUND: 0 when the key's neighbours are intact and on either side of it (the miss is
 * real), else a corrupt error: a damaged key or branch page must not read as "not stored". */
int store_confirm_absent(taca_store *s, MDB_txn *txn, MDB_dbi dbi, int tag, const void *key, size_t klen,
                         const char *what, taca_error *err);
/* Whether an LMDB return code means a damaged file. */
int store_rc_corrupt(int rc);

/* ---- helpers (store.c) ---- */
int store_mdb_fail(taca_store *s, taca_error *err, int rc, const char *what);
int store_view_pixel_format(store_view *v, store_pixel_format *pf, int *found, taca_error *err);
void store_be64(uint8_t out[8], uint64_t v);
uint64_t store_get_be64(const uint8_t in[8]);
int store_load_models(MDB_txn *txn, MDB_dbi meta, model_table *out, taca_error *err);
int store_model_check(const model_table *t, int id, store_modality m, int *dim, taca_error *err);
int store_txn_guard(store_txn *t, taca_error *err);
int store_txn_models(store_txn *t, taca_error *err);
int store_view_models(store_view *v, taca_error *err);
int store_txn_pixel_format(store_txn *t, store_pixel_format *pf, int *found, taca_error *err);
int store_txn_declared_range(store_txn *t, store_range *r, int *found, taca_error *err);
/* Fails naming the declared range if index lies outside it (cached per transaction). */
int store_txn_check_index(store_txn *t, uint64_t index, taca_error *err);
/* The answer for an index with nothing stored: STORE_NOT_STORED and a reason naming the range when
 * index is outside it (-1 when the range cannot be read). */
int store_missing(store_view *v, uint64_t index, const char *what, taca_error *err);
/* A sample record already checked against its checksum, parsed (samples.c). */
int store_parse_sample(uint64_t index, const MDB_val *d, store_sample *out, taca_error *err);
/* A pixel value's length (without its checksum) against the store's pixel format. */
int store_check_pixels(store_view *v, uint64_t index, size_t body_len, taca_error *err);
/* Range [begin, end) known for the snapshot: the declared one, or that of the stored samples. */
int store_effective_range(taca_store *s, MDB_txn *txn, uint64_t *begin, uint64_t *end, int *any,
                          taca_error *err);

/* ---- blocks (embeddings.c) ---- */
size_t block_header_bytes(int block_size);
size_t block_record_bytes(const store_model *m, int dim);
void emb_key(uint8_t out[EMB_KEY_LEN], int model, store_modality mod, uint32_t number);
/* Validates a block record read from the map against its model and fills b. */
int block_parse(taca_store *s, const store_model *m, store_modality mod, int dim, uint32_t number,
                const void *rec, size_t len, store_block *b, taca_error *err);
int store_txn_flush_blocks(store_txn *t, taca_error *err);
void store_txn_free_blocks(store_txn *t);

static inline int block_row_valid(const uint8_t *bitmap, int r) { return (bitmap[r >> 3] >> (r & 7)) & 1; }

static inline uint32_t rd_u32le(const uint8_t *p) { uint32_t v; memcpy(&v, p, 4); return v; }
static inline void wr_u32le(uint8_t *p, uint32_t v) { memcpy(p, &v, 4); }
static inline uint16_t rd_u16le(const uint8_t *p) { uint16_t v; memcpy(&v, p, 2); return v; }
static inline void wr_u16le(uint8_t *p, uint16_t v) { memcpy(p, &v, 2); }

#if __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "the store's records are little-endian; this build assumes a little-endian host"
#endif

#endif
