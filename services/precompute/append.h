/* append.h: `taca precompute --append`: new inputs ingested after the samples of a store, finished
 * or not, with the indices continuing. The recorded inputs must still match (size, fingerprint,
 * entries: checked on disk whether given again or not); an input whose size and fingerprint equal an
 * ingested one (the same shard under another path, or given twice) is refused, and so is an append
 * with nothing new on a finished store. Only the model that ingested the store appends (it embeds the
 * new samples as it reads them); every other model of the store is named afterwards with the command
 * that embeds the new samples (precompute resumes a model's embed record from where it stopped). */
#ifndef TACA_PRECOMPUTE_APPEND_H
#define TACA_PRECOMPUTE_APPEND_H

#include <jansson.h>
#include <stdint.h>

#include "base/error.h"
#include "services/precompute/precompute.h"
#include "storage/store.h"

typedef struct append_plan {
  precompute_opts run; /* the options of the ingest: data = the recorded inputs, then the new ones */
  char **paths;        /* run.data, owned */
  int npaths;
  json_t *prog;        /* the ingest record to continue from (inputs extended, not done) */
  int n_new;           /* inputs added by this run (0: the resume of an unfinished append) */
  uint64_t new_entries;
  int extend_range;    /* the store declares a range: it becomes [begin, range_end) */
  store_range range;
} append_plan;

/* Checks and plans an append onto the store whose ingest record is prog (model = the ingesting
 * model's name, image_size its input side). Writes nothing. */
int append_prepare(taca_store *s, const precompute_opts *o, const char *model, int image_size, json_t *prog,
                   append_plan *p, taca_error *err);
/* Commits the plan's ingest record and range in one transaction, so that a run killed before its
 * first batch resumes the append. */
int append_commit(taca_store *s, const append_plan *p, taca_error *err);
void append_plan_free(append_plan *p);

/* After an append: every other model of the store without embeddings of all samples, with what to
 * run (to stderr). Returns how many such models there are. */
int append_report_models(taca_store *s, const char *model, const char *db);

#endif
