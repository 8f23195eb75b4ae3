/* import.h: `taca import`: an embeddings-only store (no pixels, no token ids) from features computed
 * elsewhere, e.g. clip-retrieval's img_emb_N.npy / text_emb_N.npy files, imported in order.
 *
 * Rows become samples first_index, first_index+1, ... in file order; each sample's key is the
 * matching line of the keys file, or the index in 12 decimal digits. The store's range is set to the
 * rows imported so far, so shards of one corpus import into disjoint ranges (--first-index). The
 * files are mapped, never loaded whole: a file may be larger than memory.
 *
 * Resumable and extendable: a progress record (meta "progress/import/NAME") in the same transaction
 * as each chunk lists the inputs (path, size, fingerprint, rows) and the rows done. A rerun with the
 * same inputs continues where the last commit ended; with more inputs appended it imports the new
 * ones; with an input that differs from the one imported before (size, content) it fails naming it. */
#ifndef TACA_PRECOMPUTE_IMPORT_H
#define TACA_PRECOMPUTE_IMPORT_H

#include <stdint.h>

#include "base/dtype.h"
#include "base/error.h"
#include "storage/store.h"

#define IMPORT_MAX_FILES 4096

typedef struct import_opts {
  const char *db;                        /* created when missing */
  const char *name;                      /* the model name in the store */
  const char *arch;                      /* free text recorded with the model (default "import") */
  const char *npy[IMPORT_MAX_FILES];     /* [rows, dim] F16/F32/BF16 arrays, in order */
  int n_npy;
  store_modality modality;               /* of npy[] */
  const char *text_npy[IMPORT_MAX_FILES]; /* optional: text embeddings of the same rows (npy[] are then images) */
  int n_text_npy;
  const char *keys;                      /* optional: one key per row, all files together */
  uint64_t first_index;
  int shard, nshards;                    /* recorded in the range (default 0 of 1) */
  taca_dtype dtype;                      /* stored dtype: F16 (default) or F32 */
  uint64_t chunk_rows;                   /* rows per transaction; 0 = 65536 */
  int quiet;
} import_opts;

typedef struct import_result {
  uint64_t rows_total;    /* rows of all inputs */
  uint64_t rows_before;   /* already imported when the run started */
  uint64_t rows_written;  /* by this run */
  int dim, text_dim;
} import_result;

int import_run(const import_opts *o, import_result *r, taca_error *err);

#endif
