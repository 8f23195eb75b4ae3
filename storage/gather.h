/* gather.h: batch reads for the feature server (services/featured): gather the embedding rows of many
 * indices at once, telling "not stored" apart from real errors, without an error per missing row
 * (single records: the store.h getters, whose STORE_NOT_STORED says "not stored").
 * An addition beside store.h (same rules: a view is used by one thread at a time). */
#ifndef TACA_STORAGE_GATHER_H
#define TACA_STORAGE_GATHER_H

#include <stddef.h>
#include <stdint.h>

#include "storage/store.h"

/* Copies the (model, modality) embeddings of idx[0..n) into out as n x dim elements: of the stored
 * dtype (as_f32 = 0) or converted to F32 (as_f32 = 1). present[i] = 1 where the row is stored, else 0
 * and the row is zero-filled. Fails only on a bad model/modality or a corrupt or unreadable record. */
int store_gather_embeddings(store_view *v, int model, store_modality m, const uint64_t *idx, size_t n,
                            int as_f32, void *out, uint8_t *present, taca_error *err);

#endif
