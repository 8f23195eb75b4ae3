/* embeddings.c: embeddings packed in block records of B vectors per (model, modality, block number):
 * the record layout, the write transaction's block cache (read-modify-write of whole blocks), single
 * embedding reads and whole-block scans. */
#include "storage/store_internal.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>

size_t block_header_bytes(int block_size) {
  size_t need = 32 + ((size_t)block_size + 7) / 8;
  return (need + 63) / 64 * 64 - 16;
}

size_t block_record_bytes(const store_model *m, int dim) {
  return block_header_bytes(m->block_size) + (size_t)m->block_size * dim * taca_dtype_size(m->dtype) + REC_SUM_BYTES;
}

void emb_key(uint8_t out[EMB_KEY_LEN], int model, store_modality mod, uint32_t number) {
  out[0] = (uint8_t)(model >> 8);
  out[1] = (uint8_t)model;
  out[2] = (uint8_t)mod;
  out[3] = 0;
  out[4] = (uint8_t)(number >> 24);
  out[5] = (uint8_t)(number >> 16);
  out[6] = (uint8_t)(number >> 8);
  out[7] = (uint8_t)number;
}

static uint8_t dtype_code(taca_dtype dt) { return dt == TACA_DT_F16 ? BLOCK_DT_F16 : BLOCK_DT_F32; }

/* verify 0: the record's length, place in the file and header only, not its checksum */
static int block_parse_opt(taca_store *s, const store_model *m, store_modality mod, int dim, uint32_t number,
                           const void *rec, size_t len, store_block *b, int verify, taca_error *err) {
  const uint8_t *p = rec;
  size_t want = block_record_bytes(m, dim);
  uint8_t k[EMB_KEY_LEN];
  emb_key(k, m->id, mod, number);
  MDB_val kv = {EMB_KEY_LEN, k}, vv = {len, (void *)rec};
  if (len != want || (verify ? !store_record_ok(s, TAG_EMB, &kv, &vv) : !store_value_in_file(s, rec, len)))
    return store_corrupt(err, "emb[model '%s' %s block %u]: checksum or length mismatch (%zu bytes, expected %zu)",
                         m->name, store_modality_name(mod), number, len, want);
  if (p[0] != BLOCK_LAYOUT || p[1] != dtype_code(m->dtype) || rd_u32le(p + 4) != (uint32_t)m->block_size ||
      rd_u32le(p + 8) != (uint32_t)dim || rd_u32le(p + 12) > (uint32_t)m->block_size)
    return store_corrupt(err, "emb[model '%s' %s block %u]: header does not match the model", m->name,
                         store_modality_name(mod), number);
  b->number = number;
  b->first_index = (uint64_t)number * (uint64_t)m->block_size;
  b->size = m->block_size;
  b->dim = dim;
  b->dtype = m->dtype;
  b->count = rd_u32le(p + 12);
  b->bitmap = p + 16;
  b->data = p + block_header_bytes(m->block_size);
  return 0;
}

int block_parse(taca_store *s, const store_model *m, store_modality mod, int dim, uint32_t number, const void *rec,
                size_t len, store_block *b, taca_error *err) {
  return block_parse_opt(s, m, mod, dim, number, rec, len, b, 1, err);
}

/* ---------- write side: the block cache ---------- */

static int flush_slot(store_txn *t, block_slot *sl, taca_error *err) {
  if (!sl->dirty) return 0;
  uint8_t k[EMB_KEY_LEN];
  emb_key(k, sl->model, sl->mod, sl->number);
  store_seal_record(TAG_EMB, k, EMB_KEY_LEN, sl->rec, sl->len);
  MDB_val key = {EMB_KEY_LEN, k}, val = {sl->len, sl->rec};
  int rc = mdb_put(t->txn, t->s->emb, &key, &val, 0);
  if (rc) {
    t->failed = 1;
    char what[128];
    snprintf(what, sizeof what, "model '%s': writing %s block %u", t->models.m[sl->model].name,
             store_modality_name(sl->mod), sl->number);
    return store_mdb_fail(t->s, err, rc, what);
  }
  uint32_t count = rd_u32le(sl->rec + 12);
  t->count_delta[sl->model][sl->mod] += (int64_t)count - (int64_t)sl->stored_count;
  sl->stored_count = count;
  sl->dirty = 0;
  return 0;
}

int store_txn_flush_blocks(store_txn *t, taca_error *err) {
  for (int i = 0; i < TXN_BLOCK_SLOTS; i++)
    if (t->slots[i].used && flush_slot(t, &t->slots[i], err)) return -1;
  return 0;
}

void store_txn_free_blocks(store_txn *t) {
  for (int i = 0; i < TXN_BLOCK_SLOTS; i++) {
    free(t->slots[i].rec);
    t->slots[i].rec = NULL;
    t->slots[i].used = 0;
  }
}

/* The cached copy of a block, loading it (or starting an empty one) on a miss. */
static block_slot *get_slot(store_txn *t, int model, store_modality mod, uint32_t number, int dim, taca_error *err) {
  block_slot *victim = NULL;
  for (int i = 0; i < TXN_BLOCK_SLOTS; i++) {
    block_slot *sl = &t->slots[i];
    if (sl->used && sl->model == model && sl->mod == mod && sl->number == number) {
      sl->lru = ++t->lru_clock;
      return sl;
    }
    if (!sl->used) {
      if (!victim || victim->used) victim = sl;  /* prefer a free slot */
    } else if (!victim || (victim->used && sl->lru < victim->lru)) {
      victim = sl;  /* else the least recently used */
    }
  }
  if (victim->used && flush_slot(t, victim, err)) return NULL;
  const store_model *m = &t->models.m[model];
  size_t len = block_record_bytes(m, dim);
  if (victim->len != len || !victim->rec) {
    free(victim->rec);
    victim->rec = malloc(len);
    victim->len = victim->rec ? len : 0;
    if (!victim->rec) {
      victim->used = 0;
      taca_fail(err, "out of memory for a %zu-byte embedding block", len);
      return NULL;
    }
  }
  victim->used = 0;
  uint8_t k[EMB_KEY_LEN];
  emb_key(k, model, mod, number);
  MDB_val key = {EMB_KEY_LEN, k}, val;
  int rc = mdb_get(t->txn, t->s->emb, &key, &val);
  if (rc == 0) {
    store_block b;
    if (block_parse(t->s, m, mod, dim, number, val.mv_data, val.mv_size, &b, err)) return NULL;
    memcpy(victim->rec, val.mv_data, len);
    victim->stored_count = b.count;
  } else if (rc == MDB_NOTFOUND) {
    memset(victim->rec, 0, len);
    victim->rec[0] = BLOCK_LAYOUT;
    victim->rec[1] = dtype_code(m->dtype);
    wr_u32le(victim->rec + 4, (uint32_t)m->block_size);
    wr_u32le(victim->rec + 8, (uint32_t)dim);
    victim->stored_count = 0;
  } else {
    store_mdb_fail(t->s, err, rc, "reading an embedding block");
    return NULL;
  }
  victim->used = 1;
  victim->dirty = 0;
  victim->model = model;
  victim->mod = mod;
  victim->number = number;
  victim->lru = ++t->lru_clock;
  return victim;
}

int store_put_embeddings(store_txn *t, int model, store_modality mod, uint64_t first, size_t n, const float *vecs,
                         taca_error *err) {
  int dim;
  if (store_txn_guard(t, err) || store_txn_models(t, err) || store_model_check(&t->models, model, mod, &dim, err))
    return -1;
  if (n == 0) return 0;
  const store_model *m = &t->models.m[model];
  t->content_changed = 1;
  if (!vecs) return taca_fail(err, "model '%s': no embeddings given", m->name);
  uint64_t last = first + n - 1;
  if (last < first || last / (uint64_t)m->block_size > UINT32_MAX)
    return taca_fail(err, "model '%s': indices %llu.. overflow the block numbering", m->name, (unsigned long long)first);
  if (store_txn_check_index(t, first, err) || store_txn_check_index(t, last, err))
    return taca_error_prefix(err, "model '%s' %s embeddings", m->name, store_modality_name(mod));
  for (size_t i = 0; i < n * (size_t)dim; i++)
    if (!isfinite(vecs[i]))
      return taca_fail(err, "model '%s': %s embedding for sample %llu has a non-finite value at element %zu", m->name,
                       store_modality_name(mod), (unsigned long long)(first + i / dim), i % dim);
  size_t esz = taca_dtype_size(m->dtype), hdr = block_header_bytes(m->block_size);
  block_slot *sl = NULL;
  for (size_t i = 0; i < n; i++) {
    uint64_t index = first + i;
    uint32_t number = (uint32_t)(index / (uint64_t)m->block_size);
    int row = (int)(index % (uint64_t)m->block_size);
    if (!sl || sl->number != number) {
      sl = get_slot(t, model, mod, number, dim, err);
      if (!sl) {
        t->failed = 1;
        return -1;
      }
    }
    uint8_t *dst = sl->rec + hdr + (size_t)row * dim * esz;
    const float *src = vecs + i * (size_t)dim;
    if (m->dtype == TACA_DT_F16) {
      uint16_t *h = (uint16_t *)dst;  /* hdr and row stride keep this 2-byte aligned in the malloc'd copy */
      for (int j = 0; j < dim; j++) h[j] = taca_f32_to_f16(src[j]);
    } else {
      memcpy(dst, src, (size_t)dim * sizeof(float));
    }
    uint8_t *bm = sl->rec + 16;
    if (!block_row_valid(bm, row)) {
      bm[row >> 3] |= (uint8_t)(1u << (row & 7));
      wr_u32le(sl->rec + 12, rd_u32le(sl->rec + 12) + 1);
    }
    sl->dirty = 1;
  }
  return 0;
}

int store_put_embedding(store_txn *t, int model, store_modality m, uint64_t index, const float *vec, taca_error *err) {
  return store_put_embeddings(t, model, m, index, 1, vec, err);
}

/* ---------- read side ---------- */

static int get_embedding_raw(store_view *v, int model, store_modality mod, uint64_t index, const void **data,
                             int verify, taca_error *err) {
  int dim;
  if (store_view_models(v, err) || store_model_check(&v->models, model, mod, &dim, err)) return -1;
  const store_model *m = &v->models.m[model];
  uint64_t number = index / (uint64_t)m->block_size;
  int row = (int)(index % (uint64_t)m->block_size);
  char what[128];
  snprintf(what, sizeof what, "model '%s' %s embedding", m->name, store_modality_name(mod));
  if (number > UINT32_MAX) return store_missing(v, index, what, err);
  uint8_t k[EMB_KEY_LEN];
  emb_key(k, model, mod, (uint32_t)number);
  MDB_val key = {EMB_KEY_LEN, k}, val;
  int rc = mdb_get(v->txn, v->s->emb, &key, &val);
  if (rc == MDB_NOTFOUND && store_confirm_absent(v->s, v->txn, v->s->emb, TAG_EMB, k, EMB_KEY_LEN, "emb", err))
    return -1;
  if (rc == MDB_NOTFOUND) return store_missing(v, index, what, err);
  if (rc) return store_mdb_fail(v->s, err, rc, what);
  store_block b;
  if (block_parse_opt(v->s, m, mod, dim, (uint32_t)number, val.mv_data, val.mv_size, &b, verify, err)) return -1;
  if (!block_row_valid(b.bitmap, row)) return store_missing(v, index, what, err);
  *data = (const uint8_t *)b.data + (size_t)row * dim * taca_dtype_size(m->dtype);
  return 0;
}

int store_get_embedding_raw(store_view *v, int model, store_modality mod, uint64_t index, const void **data,
                            taca_error *err) {
  return get_embedding_raw(v, model, mod, index, data, 1, err);
}

static int get_embedding(store_view *v, int model, store_modality mod, uint64_t index, float *out, int verify,
                         taca_error *err) {
  const void *p;
  int rc = get_embedding_raw(v, model, mod, index, &p, verify, err);
  if (rc) return rc;
  const store_model *m = &v->models.m[model];
  int dim = mod == STORE_IMAGE ? m->image_dim : m->text_dim;
  if (taca_convert_to_f32(out, p, m->dtype, (size_t)dim))
    return taca_fail(err, "model '%s': cannot convert stored dtype to F32", m->name);
  return 0;
}

int store_get_embedding(store_view *v, int model, store_modality mod, uint64_t index, float *out, taca_error *err) {
  return get_embedding(v, model, mod, index, out, 1, err);
}

int store_peek_embedding(store_view *v, int model, store_modality mod, uint64_t index, float *out, taca_error *err) {
  return get_embedding(v, model, mod, index, out, 0, err);
}

int store_scan_blocks(store_view *v, int model, store_modality mod, int (*fn)(const store_block *b, void *ctx),
                      void *ctx, taca_error *err) {
  int dim;
  if (store_view_models(v, err) || store_model_check(&v->models, model, mod, &dim, err)) return -1;
  const store_model *m = &v->models.m[model];
  MDB_cursor *c;
  int rc = mdb_cursor_open(v->txn, v->s->emb, &c);
  if (rc) return store_mdb_fail(v->s, err, rc, "emb");
  uint8_t k0[EMB_KEY_LEN];
  emb_key(k0, model, mod, 0);
  MDB_val key = {EMB_KEY_LEN, k0}, val;
  int ret = 0;
  for (rc = mdb_cursor_get(c, &key, &val, MDB_SET_RANGE); rc == 0; rc = mdb_cursor_get(c, &key, &val, MDB_NEXT)) {
    if (!store_value_in_file(v->s, key.mv_data, key.mv_size)) {
      ret = store_corrupt(err, "emb: a key runs past the end of data.mdb");
      break;
    }
    if (key.mv_size != EMB_KEY_LEN || memcmp(key.mv_data, k0, 4)) break;
    const uint8_t *kp = key.mv_data;
    uint32_t number = (uint32_t)kp[4] << 24 | (uint32_t)kp[5] << 16 | (uint32_t)kp[6] << 8 | kp[7];
    store_block b;
    if (block_parse(v->s, m, mod, dim, number, val.mv_data, val.mv_size, &b, err)) {
      ret = -1;
      break;
    }
    if (fn(&b, ctx)) break;
  }
  mdb_cursor_close(c);
  if (ret == 0 && rc && rc != MDB_NOTFOUND) ret = store_mdb_fail(v->s, err, rc, "emb");
  return ret;
}
