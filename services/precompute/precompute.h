/* precompute.h: `taca precompute`: run an old CLIP model over image-caption data once and store the
 * preprocessed pixels, token ids, labels and the model's image and text embeddings in the store.
 *
 * Crash safety: every batch is one LMDB transaction holding its samples, their embeddings and the
 * progress record (input position, next index, reject counts). A run killed at any moment and
 * started again continues after the last committed batch and ends with the same content as an
 * uninterrupted run (same indices, same bytes).
 *
 * Modes: `ingest` (the store has no finished ingest: reads --data, writes samples + this model's
 * embeddings), `embed` (ingest is finished and this model is new to the store, or the store grew
 * since it embedded: embeds the stored pixels and token ids it lacks, without reading the data
 * again) and, with `append`, an ingest of new inputs after the stored samples (append.h). */
#ifndef TACA_PRECOMPUTE_PRECOMPUTE_H
#define TACA_PRECOMPUTE_PRECOMPUTE_H

#include <jansson.h>
#include <stdint.h>

#include "base/dtype.h"
#include "base/error.h"
#include "nn/backend.h"

typedef struct precompute_opts {
  const char *model_path;
  const char *arch;        /* NULL for HF directories */
  const char *name;        /* model name in the store; NULL = derived from the path */
  char *const *data;       /* data specs */
  int ndata;
  const char *db;
  int shard, nshards;      /* 0/1 = everything */
  int batch;               /* samples per batch and per transaction */
  taca_dtype dtype;        /* TACA_DT_F16 (default) or TACA_DT_F32 */
  int store_pixels;        /* 1 = store the crops, 0 = none */
  int jpeg_quality;        /* 0: crops stored raw (uint8 CHW); 1..100: as JPEG of that quality */
  int pixel_size;          /* side of the stored crops; 0 = the model's input size. A store for
                            * training a new tower at another resolution keeps crops at the new
                            * tower's size while the old model embeds its own-size crop. */
  int threads;             /* compute threads (0 = all cores) */
  nn_precision precision;  /* of the model's GEMMs (--precision); recorded with the model */
  int workers;             /* decode threads (0 = all cores) */
  uint64_t map_size;       /* 0 = store default */
  int64_t index_base;      /* < 0: computed from the entries of lower shards */
  int quiet;               /* no progress output */
  int append;              /* --append: ingest the inputs not yet ingested after the stored samples */
  /* A second model on a finished store: embed only the stored samples with index in [begin, end)
   * (a partial re-embedding: the rest stays with the older model; Search's gallery_fallback serves
   * the mix as one gallery). Runs of different ranges add up. */
  int has_range;
  uint64_t range_begin, range_end;
} precompute_opts;

/* How the stored crops were made (meta "dataset".preprocessing_order; absent in stores written
 * before: those converted to RGB first, which differs for RGBA, LA, P, 1, CMYK and I sources). */
#define PRECOMPUTE_PREPROCESSING_ORDER "pil-mode resize, crop, then convert RGB (OpenAI CLIP / open_clip)"

typedef struct precompute_stats {
  uint64_t stored;         /* samples in the store from this data (all runs) */
  uint64_t rejected;       /* entries rejected (all runs) */
  uint64_t embedded;       /* embeddings computed by this run */
  double seconds;
  const char *mode;        /* "ingest" or "embed" */
} precompute_stats;

int precompute_run(const precompute_opts *o, precompute_stats *st, taca_error *err);

/* An ingest record (progress/ingest) with samples accepted under another preprocessing order than
 * this build's (or none recorded: a record written before preprocessing_order) is refused: resuming
 * or appending would store crops made two ways. 0 when the record may be continued. */
int precompute_check_order(json_t *prog, const char *db, taca_error *err);

#endif
