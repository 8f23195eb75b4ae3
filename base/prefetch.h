/* prefetch.h: one producer thread filling items ahead of one consumer: the prefetch queue that the
 * precompute reader, the pretraining feed and the trainer's batch feed share.
 *
 * The caller owns the items (allocated up front, any type) and hands them to taca_prefetch_start;
 * the producer thread calls fill(ctx, k, item) for k = 0, 1, 2, ... on a free item, in order, and
 * queues it; the consumer takes items in the same order with taca_prefetch_next and gives each back
 * with taca_prefetch_release once done with it. So at most n_items - (items the consumer holds) are
 * prepared ahead, and a full queue blocks the producer, not memory.
 *
 * fill returns 1 (the item holds element k), 0 (the stream has ended: the item is unused and fill is
 * not called again) or -1 (failed, err set: the consumer gets the error after the items already
 * queued). taca_prefetch_stop stops the producer at its next item (a fill under way finishes),
 * joins it, calls drop(ctx, item) for each item filled and not yet taken (when drop is not NULL:
 * to free what such an item holds) and frees the queue; the items are the caller's again. fill runs
 * on the producer thread only, drop on the caller's. */
#ifndef TACA_BASE_PREFETCH_H
#define TACA_BASE_PREFETCH_H

#include "base/error.h"

typedef struct taca_prefetch taca_prefetch;
typedef int (*taca_prefetch_fill)(void *ctx, long k, void *item, taca_error *err);

#define TACA_PREFETCH_MAX_ITEMS 16

/* Starts the producer over items[0 .. n_items) (1 <= n_items <= TACA_PREFETCH_MAX_ITEMS). */
int taca_prefetch_start(taca_prefetch **out, void *const *items, int n_items, taca_prefetch_fill fill, void *ctx,
                        taca_error *err);
/* The next item in order (blocks): 1 and *item, 0 at the end of the stream, -1 with the producer's
 * error. */
int taca_prefetch_next(taca_prefetch *q, void **item, taca_error *err);
/* Gives an item taken by taca_prefetch_next back to the producer. */
void taca_prefetch_release(taca_prefetch *q, void *item);
void taca_prefetch_stop(taca_prefetch *q, void (*drop)(void *ctx, void *item));

#endif
