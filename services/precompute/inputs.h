/* inputs.h: the record of an ingest's inputs (path, entries, size, content fingerprint, damage) as
 * kept in progress/ingest and meta "dataset", and its comparison with the inputs of a later run,
 * finished or not: a run on other data is refused naming the first difference. */
#ifndef TACA_PRECOMPUTE_INPUTS_H
#define TACA_PRECOMPUTE_INPUTS_H

#include <jansson.h>
#include <stddef.h>

#include "services/precompute/data_source.h"

/* [{"entries","fingerprint","path","size"[,"problem"]}, ...] of this shard's inputs (new ref). */
json_t *inputs_record(const data_source *ds);

/* 0 when `now` matches `recorded`; otherwise 1 with the first difference in why ("'b.tar' is not
 * in the recorded ingest", "'a.tar' changed: size 10240 was 20480", ...). */
int inputs_differ(json_t *recorded, json_t *now, char *why, size_t cap);

#endif
