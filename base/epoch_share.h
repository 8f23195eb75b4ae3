/* epoch_share.h: how one epoch is split between ranks, the arithmetic the server (StreamEpoch) and
 * the client (its epoch iterator) must agree on. Rank r of W takes the permutation's positions
 * r, r+W, r+2W, ... (shares differ by at most one and partition the epoch), in batches of
 * batch_size, the last one shorter unless drop_last. docs/featured.md, "StreamEpoch", states it. */
#ifndef TACA_BASE_EPOCH_SHARE_H
#define TACA_BASE_EPOCH_SHARE_H

#include <stdint.h>

/* Samples of an n-sample epoch that rank `rank` of `world` receives. */
static inline uint64_t epoch_share_size(uint64_t n, uint32_t rank, uint32_t world) {
  if (world == 0 || rank >= n) return 0;
  return (n - rank + world - 1) / world;
}

/* Batches a share of `share` samples makes. */
static inline uint64_t epoch_batch_count(uint64_t share, uint32_t batch_size, int drop_last) {
  if (batch_size == 0) return 0;
  return drop_last ? share / batch_size : (share + batch_size - 1) / batch_size;
}

#endif
