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
        if (rc == MDB_NOTFOUND &&
            store_confirm_absent(v->s, v->txn, v->s->emb, TAG_EMB, k, EMB_KEY_LEN, "emb", err))
          return -1;
        if (rc == 0) {
          if (block_parse(v->s, m, mod, dim, (uint32_t)number, val.mv_data, val.mv_size, &b, err)) return -1;
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
