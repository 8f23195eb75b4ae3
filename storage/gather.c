/* gather.c: many-row reads for the feature server (see gather.h), on the block records of
 * embeddings.c; the last block read is reused for neighbouring indices. */
#include "storage/gather.h"

#include <stdio.h>

#include "storage/store_internal.h"

int store_gather_embeddings(store_view *v, int model, store_modality mod, const uint64_t *idx, size_t n,
                            int as_f32, void *out, uint8_t *present, taca_error *err) {
  int dim;
  if (store_view_models(v, err) || store_model_check(&v->models, model, mod, &dim, err)) return -1;
  const store_model *m = &v->models.m[model];
  size_t esz = taca_dtype_size(m->dtype);
  size_t row_out = (size_t)dim * (as_f32 ? sizeof(float) : esz);
  uint8_t *dst = out;
  store_block b = {0};
  int have = 0;
  for (size_t i = 0; i < n; i++, dst += row_out) {
    uint64_t number = idx[i] / (uint64_t)m->block_size;
    int row = (int)(idx[i] % (uint64_t)m->block_size);
    if (!have || b.number != number) {
      have = 0;
      if (number <= UINT32_MAX) {
        uint8_t k[EMB_KEY_LEN];
        emb_key(k, model, mod, (uint32_t)number);
        MDB_val key = {EMB_KEY_LEN, k}, val;
        int rc = mdb_get(v->txn, v->s->emb, &key, &val);
        if (rc && rc != MDB_NOTFOUND) {
          char what[128];
          snprintf(what, sizeof what, "model '%s' %s embeddings", m->name, store_modality_name(mod));
          return store_mdb_fail(v->s, err, rc, what);
        }
        if (rc == 0) {
          if (block_parse(m, dim, (uint32_t)number, val.mv_data, val.mv_size, &b, err)) return -1;
          have = 1;
        }
      }
    }
    if (!have || !block_row_valid(b.bitmap, row)) {
      present[i] = 0;
      memset(dst, 0, row_out);
      continue;
    }
    present[i] = 1;
    const uint8_t *src = (const uint8_t *)b.data + (size_t)row * dim * esz;
    if (as_f32) {
      if (taca_convert_to_f32((float *)dst, src, m->dtype, (size_t)dim))
        return taca_fail(err, "model '%s': cannot convert stored dtype to F32", m->name);
    } else {
      memcpy(dst, src, row_out);
    }
  }
  return 0;
}

int store_get_pixels_opt(store_view *v, uint64_t index, const uint8_t **data, size_t *len, int *found,
                         taca_error *err) {
  uint8_t ik[8];
  store_be64(ik, index);
  MDB_val k = {8, ik}, d;
  int rc = mdb_get(v->txn, v->s->pixels, &k, &d);
  *found = rc == 0;
  *data = NULL;
  *len = 0;
  if (rc == MDB_NOTFOUND) return 0;
  if (rc) return store_mdb_fail(v->s, err, rc, "pixels");
  *data = d.mv_data;
  *len = d.mv_size;
  return 0;
}

int store_sample_exists(store_view *v, uint64_t index, int *exists, taca_error *err) {
  uint8_t ik[8];
  store_be64(ik, index);
  MDB_val k = {8, ik}, d;
  int rc = mdb_get(v->txn, v->s->samples, &k, &d);
  *exists = rc == 0;
  if (rc && rc != MDB_NOTFOUND) return store_mdb_fail(v->s, err, rc, "samples");
  return 0;
}

int store_lookup_key_opt(store_view *v, const char *key, size_t key_len, uint64_t *index, int *found,
                         taca_error *err) {
  *found = 0;
  if (!key || key_len == 0 || key_len > STORE_MAX_KEY)
    return taca_fail(err, "key is empty or longer than %d bytes", STORE_MAX_KEY);
  MDB_val k = {key_len, (void *)key}, d;
  int rc = mdb_get(v->txn, v->s->keys, &k, &d);
  if (rc == MDB_NOTFOUND) return 0;
  if (rc) return store_mdb_fail(v->s, err, rc, "keys");
  if (d.mv_size != 8) return taca_fail(err, "key index entry of %zu bytes (corrupt)", d.mv_size);
  *index = store_get_be64(d.mv_data);
  *found = 1;
  return 0;
}
