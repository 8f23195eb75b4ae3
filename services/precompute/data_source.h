/* data_source.h: the image-caption inputs of precompute: WebDataset tar shards (KEY.jpg|jpeg|png|webp
 * + KEY.txt + optional KEY.cls and KEY.json (img2dataset's metadata), grouped by key in archive order, as img2dataset writes them) and
 * folders with a captions.tsv (relative/path<TAB>caption[<TAB>label]).
 *
 * A SPEC is a tar path (brace ranges like shards/{00000..00099}.tar and lists like {a,b} expand,
 * in order), or a folder. `--shard i/n` keeps every n-th input file starting at i. Samples are
 * numbered by position: (input number within the shard, entry number within the input), which is
 * what a resumed run seeks to. An entry is one key of a tar, or one non-empty line of a TSV. */
#ifndef TACA_PRECOMPUTE_DATA_SOURCE_H
#define TACA_PRECOMPUTE_DATA_SOURCE_H

#include <stddef.h>
#include <stdint.h>

#include "base/error.h"

typedef enum ds_kind { DS_TAR = 1, DS_FOLDER = 2 } ds_kind;

typedef struct ds_input {
  char *path;        /* the tar file, or the folder */
  ds_kind kind;
  uint64_t entries;  /* samples in this input (after ds_count) */
  int shard;         /* which shard the input belongs to */
  uint64_t size;     /* bytes (of captions.tsv for a folder) */
  char fingerprint[17]; /* XXH3-64, hex: of the size and the first and last 64 KiB of a tar, of the
                         * whole captions.tsv of a folder */
  char *problem;     /* a tar that ends early (truncated, or not readable past some point): why; its
                      * complete entries before that point are `entries`, read as usual. NULL if whole */
} ds_input;

/* One raw sample. `problem` is non-NULL when the entry is unusable at the container level (no image,
 * no caption, unparsable label, oversize member): the caller counts it and skips it. */
typedef struct ds_sample {
  char *key;
  uint8_t *image;
  size_t image_len;
  char *caption;
  char *metadata;        /* KEY.json bytes (NUL-terminated; unparsed), or NULL */
  size_t metadata_len;
  int metadata_oversize; /* a KEY.json over the member limit was skipped (the sample is kept) */
  int has_label;
  int32_t label;
  const char *problem;   /* static reason string, or NULL */
  int input;             /* position of this sample: input number within the shard ... */
  uint64_t entry;        /* ... and entry within that input */
} ds_sample;

typedef struct data_source data_source;

/* Expands specs, assigns inputs to shards (input k goes to shard k % nshards), and counts the
 * entries of every input (all shards: the shard's first index is the count before it). */
int ds_open(data_source **out, char *const *specs, int nspecs, int shard, int nshards,
            taca_error *err);
void ds_close(data_source *ds);

int ds_num_inputs(const data_source *ds);              /* inputs of this shard */
const ds_input *ds_get_input(const data_source *ds, int i);
uint64_t ds_total_entries(const data_source *ds);      /* entries of this shard */
uint64_t ds_entries_before_shard(const data_source *ds); /* entries of inputs of lower shards */

/* Positions the reader at (input, entry) of this shard; entries before it are skipped. */
int ds_seek(data_source *ds, int input, uint64_t entry, taca_error *err);
/* Reads the next sample: 1 = a sample (release with ds_sample_free), 0 = end, -1 = I/O error. */
int ds_next(data_source *ds, ds_sample *out, taca_error *err);
void ds_sample_free(ds_sample *s);

/* Brace expansion of one spec ({0000..0099} zero-padded ranges, {a,b,c} lists, nested).
 * Returns the count (>= 1) and a malloc'ed array of malloc'ed strings, or -1. */
int ds_expand_braces(const char *spec, char ***out, taca_error *err);

#endif
