/* add_features.h: `taca add-features`: stores embeddings computed elsewhere as one more model of a
 * finished store, for AFT's pre-trained features: rows of a .npy file (in the store's index order,
 * or matched by sample key), or deterministic random vectors (a "noise" feature set, the control of
 * the AFT paper's Figure 4b: AFT should learn to down-weight it).
 *
 * Random rows: component k of sample `index` is a standard normal from splitmix64 seeded with
 * (seed, index) (base/rng.h: the state is seed * 0x9E3779B97F4A7C15 + index, two uniforms per normal),
 * so the vectors do not depend on batching and a rerun writes the same bytes.
 * Writing: one LMDB transaction per 4096 samples; an interrupted run is simply run again (the
 * rows it rewrites are identical). */
#ifndef TACA_PRECOMPUTE_ADD_FEATURES_H
#define TACA_PRECOMPUTE_ADD_FEATURES_H

#include <stdint.h>

#include "base/dtype.h"
#include "base/error.h"

typedef struct add_features_opts {
  const char *db;
  const char *name;      /* the model name in the store (new, or resumed when it has this dim) */
  const char *arch;      /* free text for Info (default "npy:FILE" or "random") */
  const char *npy;       /* F32/F16/F64 [N, D] */
  const char *keys;      /* text file, one sample key per line, aligned with the .npy rows; NULL:
                          * the rows are the store's samples in index order (N = the sample count) */
  int random_dim;        /* > 0: random vectors of this width instead of a .npy */
  uint64_t seed;
  taca_dtype dtype;      /* stored dtype: TACA_DT_F16 (default) or TACA_DT_F32 */
  int quiet;
} add_features_opts;

/* Returns 0 with *written = rows stored. */
int add_features_run(const add_features_opts *o, uint64_t *written, taca_error *err);

#endif
