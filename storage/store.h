/* store.h: the LMDB feature store — samples (pixels, token ids, label, source key), a key->index
 * table, per-model embeddings packed in blocks, metadata, and a content hash (search over
 * the embeddings is search/search.h).
 *
 * One store = one LMDB environment in a directory (DIR/data.mdb + DIR/lock.mdb). The on-disk schema
 * is described in storage/README.md. Usage:
 *
 *   writer:  store_open(rw) -> store_txn_begin -> store_put_* ... -> store_txn_commit (or _abort)
 *   reader:  store_open(ro) -> store_view_begin -> store_get_* / store_scan_blocks ... -> store_view_end
 *
 * Everything returns 0 on success and -1 on failure with a one-line reason in the taca_error.
 * The getters of one sample's data (store_get_sample, store_get_pixels, store_lookup_key,
 * store_get_embedding[_raw]) say "not stored" one way: they return STORE_NOT_STORED (1) with the
 * reason in err (a caller that treats any non-zero as failure needs nothing else). A damaged store
 * (a checksum mismatch, a value past the end of the file, an LMDB corruption code, meta that does
 * not parse) is -1 with a reason "store corrupt at ..." (store_error_is_corrupt tells it from other
 * failures, also after taca_error_prefix): never "not stored", never wrong bytes.
 * LMDB rules that apply: open a store once per process (share the handle between threads), never use
 * it across fork(), one write transaction at a time (across processes too), keep views short-lived
 * (a view pins its snapshot; a writer cannot reuse pages while it lives). A view may move between
 * threads (MDB_NOTLS) but must be used by one thread at a time. Pointers a view returns stay valid
 * until store_view_end / store_view_refresh. */
#ifndef TACA_STORAGE_STORE_H
#define TACA_STORAGE_STORE_H

#include <stddef.h>
#include <stdint.h>

#include "base/dtype.h"
#include "base/error.h"

#define STORE_SCHEMA_VERSION 2       /* 2: every record carries a checksum */
#define STORE_NOT_STORED 1           /* a getter's "nothing stored there" (see above) */
#define STORE_CORRUPT_MARK "store corrupt at "
#define STORE_CONTENT_HASH_KEY "content_hash" /* meta: the hash recorded by a finished writer */
#define STORE_COUNTS_KEY "counts"    /* meta: records per database, checked against LMDB's at info */
#define STORE_CONTEXT_LEN 77        /* token ids per sample (CLIP context length) */
#define STORE_MAX_KEY 511           /* longest sample key in bytes (LMDB's key limit) */
#define STORE_MAX_MODELS 32         /* models per store */
#define STORE_NAME_MAX 64           /* model names and arch strings, including the NUL */
#define STORE_DEFAULT_BLOCK 256     /* embeddings per block record */
#define STORE_MAX_CAPTION 4096      /* longest stored caption in bytes (longer ones are cut, UTF-8-safe) */
#define STORE_MAX_METADATA 16384    /* longest stored metadata JSON object in bytes */

typedef struct taca_store taca_store;
typedef struct store_txn store_txn;   /* a write transaction */
typedef struct store_view store_view; /* a read snapshot */

typedef enum store_modality { STORE_IMAGE = 0, STORE_TEXT = 1 } store_modality;
typedef enum store_metric { STORE_METRIC_IP = 0, STORE_METRIC_COSINE = 1 } store_metric;

typedef struct store_options {
  int readonly;          /* open read-only (the default for zero-initialised options is read-write) */
  int create;            /* read-write only: create DIR (and parents) and the store if missing */
  uint64_t map_size;     /* bytes of address space to map; 0 = 1 TiB (the file grows sparsely) */
  unsigned max_readers;  /* concurrent views across all processes; 0 = 512 */
  int no_sync;           /* MDB_NOSYNC: commits survive a killed process, not an OS crash */
} store_options;

/* Pixel storage of the whole store. codec "raw": uint8 C x size x size (CHW) per sample, exactly
 * channels*size*size bytes; codec "jpeg": a JPEG of the preprocessed crop (any length). */
typedef struct store_pixel_format {
  int size;        /* crop side in pixels (e.g. 224) */
  int channels;    /* 3 */
  char codec[8];   /* "raw" or "jpeg" */
  int quality;     /* JPEG quality 1..100; 0 for raw */
} store_pixel_format;

/* The dense index range [begin, end) this store (shard `shard` of `nshards`) serves. */
typedef struct store_range {
  uint64_t begin, end;
  int shard, nshards;
} store_range;

typedef struct store_model {
  int id;                        /* assigned by store_register_model; dense from 0 */
  char name[STORE_NAME_MAX];     /* unique in the store; printable ASCII, no '/' or spaces */
  char arch[STORE_NAME_MAX];     /* free text, e.g. "ViT-B-16" or "hf:openai/clip-vit-base-patch16" */
  int image_dim, text_dim;       /* embedding widths; 0 when that modality is not stored */
  taca_dtype dtype;              /* TACA_DT_F16 or TACA_DT_F32, as stored */
  float logit_scale;             /* the checkpoint's logit_scale parameter (log form, before exp) */
  char weights_xxh[40];          /* checksum of the weights file(s) (store_file_checksum), may be "" */
  int image_size;                /* the vision tower's input side */
  int block_size;                /* embeddings per block record; 0 at registration = default 256 */
  char precision[8];             /* arithmetic the embeddings were computed in: "f32" or "bf16"
                                  * (--precision); "" at registration = "f32" */
} store_model;

typedef struct store_info {
  int schema_version;
  uint64_t n_samples, n_pixels, n_keys;
  uint64_t first_index, last_index;      /* of stored samples; only meaningful when n_samples > 0 */
  int has_range;  store_range range;     /* as declared by the writer (store_set_range) */
  int has_pixel_format;  store_pixel_format pixel;
  int n_models;
  store_model models[STORE_MAX_MODELS];  /* by id */
  uint64_t n_embeddings[STORE_MAX_MODELS][2];  /* [id][modality] vectors stored */
  uint64_t map_size;                     /* bytes mapped */
  uint64_t used_bytes;                   /* pages in use x page size */
  uint64_t n_captions, n_metadata;       /* annotation records (0 in stores without those databases) */
} store_info;

/* One block record of embeddings, zero-copy from the map: rows [first_index, first_index+size) of
 * one model and modality. Row r is stored iff bit r of `bitmap` is set (bitmap[r/8] >> (r%8) & 1);
 * missing rows are all-zero. `data` is size*dim elements of dtype, row-major, little-endian; it is
 * 64-byte aligned when the record lives on its own overflow pages (records over ~2 KB), otherwise
 * possibly unaligned (use memcpy or taca_convert_to_f32). */
typedef struct store_block {
  uint32_t number;
  uint64_t first_index;
  int size, dim;
  taca_dtype dtype;
  uint32_t count;            /* rows stored */
  const uint8_t *bitmap;
  const void *data;
} store_block;

typedef struct store_sample {
  uint64_t index;
  int32_t label;                        /* -1 when the sample has none */
  int has_tokens;
  int32_t tokens[STORE_CONTEXT_LEN];    /* zeros when !has_tokens */
  const char *key;                      /* zero-copy, not NUL-terminated */
  size_t key_len;
} store_sample;

/* ---- the environment ---- */
int store_open(taca_store **out, const char *dir, const store_options *opt, taca_error *err);
void store_close(taca_store *s);
const char *store_dir(const taca_store *s);

/* ---- writing ----
 * After any failed call the transaction is unusable: abort it (commit refuses). Commit and abort
 * free the transaction in all cases. */
int store_txn_begin(taca_store *s, store_txn **out, taca_error *err);
int store_txn_commit(store_txn *t, taca_error *err);
void store_txn_abort(store_txn *t);

/* Setting the pixel format again with different values fails once pixels are stored. */
int store_set_pixel_format(store_txn *t, const store_pixel_format *pf, taca_error *err);
/* Setting the range again fails if a stored sample falls outside the new range. */
int store_set_range(store_txn *t, const store_range *r, taca_error *err);
/* Registers a model (m->id is ignored) and writes its id to *id. Registering a name again with the
 * same record returns the existing id (resumed runs); with any field different it fails. */
int store_register_model(store_txn *t, const store_model *m, int *id, taca_error *err);
/* A sample key the store accepts: 1..STORE_MAX_KEY bytes of UTF-8 without NUL (keys travel in proto3
 * string fields, which every protobuf client rejects when they are not UTF-8). */
int store_check_key(const char *key, size_t len, taca_error *err);
/* Writes (or replaces) sample `index`: its key (unique across the store), label (< 0 = none),
 * STORE_CONTEXT_LEN token ids (NULL = none; each must fit in 16 bits) and pixel bytes (NULL = none;
 * raw codec: exactly channels*size*size bytes). A replaced sample's old key and pixels are removed. */
int store_put_sample(store_txn *t, uint64_t index, const char *key, size_t key_len, int32_t label,
                     const int32_t *tokens, const void *pixels, size_t pixel_len, taca_error *err);
/* Writes n consecutive embeddings (n x dim F32, row-major) for indices first..first+n-1, converted
 * to the model's stored dtype (F16: round to nearest even). Rewriting an index replaces it. */
int store_put_embeddings(store_txn *t, int model, store_modality m, uint64_t first, size_t n,
                         const float *vecs, taca_error *err);
int store_put_embedding(store_txn *t, int model, store_modality m, uint64_t index, const float *vec,
                        taca_error *err);
/* Free-form metadata: "dataset" (a JSON description), "progress/<name>" (resume records, left out of
 * the content hash) or any key not reserved by the schema (schema_version, pixel, range, model/...,
 * emb_count/...). */
int store_put_meta(store_txn *t, const char *key, const void *val, size_t len, taca_error *err);
/* *val = NULL, *len = 0 when absent (not an error). The value lives until the transaction ends. */
int store_txn_get_meta(store_txn *t, const char *key, const void **val, size_t *len, taca_error *err);

/* ---- reading ---- */
int store_view_begin(taca_store *s, store_view **out, taca_error *err);
void store_view_end(store_view *v);
/* Drops the snapshot and takes a fresh one (sees later commits); earlier pointers become invalid. */
int store_view_refresh(store_view *v, taca_error *err);

int store_get_info(store_view *v, store_info *out, taca_error *err);
int store_find_model(store_view *v, const char *name, store_model *out, taca_error *err);
int store_get_model(store_view *v, int id, store_model *out, taca_error *err);
int store_get_meta(store_view *v, const char *key, const void **val, size_t *len, taca_error *err);
/* Calls fn on every meta record whose key starts with prefix ("" = all), in key order; fn returns 0 to
 * go on, non-zero to stop. Keys are not NUL-terminated. */
int store_scan_meta(store_view *v, const char *prefix,
                    int (*fn)(const char *key, size_t key_len, const void *val, size_t len, void *ctx), void *ctx,
                    taca_error *err);

int store_get_sample(store_view *v, uint64_t index, store_sample *out, taca_error *err);
int store_get_pixels(store_view *v, uint64_t index, const uint8_t **data, size_t *len, taca_error *err);
int store_lookup_key(store_view *v, const char *key, size_t key_len, uint64_t *index, taca_error *err);
/* out: dim floats (the modality's dim), converted from the stored dtype. */
int store_get_embedding(store_view *v, int model, store_modality m, uint64_t index, float *out,
                        taca_error *err);
/* The same without hashing the row's block (its length, place in the file and header are still
 * checked): for reading many scattered rows of which few are kept, as ANN rescoring does (hashing a
 * 256-row block per row read cost ~18 us, 18 ms for 1000 candidates). A caller must read the rows it
 * keeps again with store_get_embedding, so that a corrupt block among them still fails. */
int store_peek_embedding(store_view *v, int model, store_modality m, uint64_t index, float *out,
                         taca_error *err);
/* Zero-copy: *data points at dim elements of the model's dtype (alignment as for store_block). */
int store_get_embedding_raw(store_view *v, int model, store_modality m, uint64_t index,
                            const void **data, taca_error *err);
/* Calls fn on every block of (model, modality) in index order; fn returns 0 to go on, non-zero to
 * stop (store_scan_blocks then returns 0). */
int store_scan_blocks(store_view *v, int model, store_modality m,
                      int (*fn)(const store_block *b, void *ctx), void *ctx, taca_error *err);

/* The LMDB transaction id of a write transaction, and of the last commit a view sees: a store whose
 * last commit is the one a record was written in has not changed since (search/ann.c uses it). */
uint64_t store_txn_id(store_txn *t);
uint64_t store_view_txn_id(store_view *v);

/* ---- annotations (annotations.c): a sample's caption text and source metadata (a JSON object, e.g.
 * the KEY.json img2dataset writes), in databases of their own beside `samples`. Stores written before
 * they existed have neither: reads then find nothing (not an error). ---- */
/* Writes (or replaces) the caption and metadata of sample `index`; NULL (or length 0) removes that
 * record, so calling it with every sample write keeps "rewriting a sample replaces it". A caption
 * longer than STORE_MAX_CAPTION is cut at a UTF-8 character boundary; metadata must be one JSON
 * object of at most STORE_MAX_METADATA bytes (stored as given: canonicalise before, if wanted). */
int store_put_annotations(store_txn *t, uint64_t index, const char *caption, size_t caption_len,
                          const char *metadata, size_t metadata_len, taca_error *err);
/* Zero-copy (valid until the view ends); *found = 0 when the sample has no such record. */
int store_get_caption(store_view *v, uint64_t index, const char **text, size_t *len, int *found, taca_error *err);
int store_get_metadata(store_view *v, uint64_t index, const char **json, size_t *len, int *found, taca_error *err);
/* Calls fn(index, sample) for the stored samples with index >= from, in index order, until fn returns
 * non-zero or `limit` samples were visited (0 = no limit). */
int store_scan_samples(store_view *v, uint64_t from, uint64_t limit,
                       int (*fn)(const store_sample *s, void *ctx), void *ctx, taca_error *err);

/* XXH3-128 over every database except meta "progress/...", "index/..." and "content_hash", as 32 hex digits + NUL.
 * Equal for stores with equal content whatever the transaction boundaries that wrote them. */
int store_content_hash(store_view *v, char hex[33], taca_error *err);
/* XXH3-128 of a file's bytes as 32 hex digits + NUL ("xxh3-128:" is not prefixed). */
int store_file_checksum(const char *path, char hex[33], taca_error *err);

/* Records the current content hash in meta "content_hash" ({"by": by, "hash": ...}); a later commit
 * that changes content removes the record, so a present record always describes the store. */
int store_record_content_hash(taca_store *s, const char *by, taca_error *err);

/* Removes a model: its embeddings, model/ and emb_count/ records, progress/<name> and
 * provenance/<name> (the JSON record precompute writes: kind, space, hashes, preprocessing); models
 * registered after it move down one id (their embedding records are rewritten). */
int store_drop_model(store_txn *t, const char *name, taca_error *err);

/* taca verify: every record of every database checked (checksums, layouts, lengths, the key table
 * against the sample records, embedding counts) and the recorded content hash compared. */
typedef struct store_db_report {
  char name[16];
  uint64_t records, bad;
  char first_problem[320];  /* the first bad record, "" when none */
} store_db_report;

typedef struct store_verify_report {
  int n_db;
  store_db_report db[8];   /* meta, samples, pixels, keys, emb, [captions, metadata], the content hash */
  int hash_recorded;       /* a finished writer recorded a content hash */
  int hash_equal;          /* ... and it matches the content */
  char hash[33], recorded[33], recorded_by[96];
  uint64_t problems;       /* bad records + a hash mismatch */
} store_verify_report;

/* Fails only when the walk itself cannot run; damage is counted in the report. */
int store_verify(store_view *v, store_verify_report *out, taca_error *err);

/* 1 when err says the store is damaged (its reason, or the reason after any "prefix: ", starts with
 * STORE_CORRUPT_MARK): a server answers DATA_LOSS, not NOT_FOUND or INTERNAL. */
int store_error_is_corrupt(const taca_error *err);

const char *store_modality_name(store_modality m);  /* "image" / "text" */

#endif
