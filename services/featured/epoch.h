/* epoch.h: the deterministic epoch permutation behind StreamEpoch, and each rank's share of it.
 *
 * Algorithm (the contract; bench and tests reproduce it in Python):
 *   1. Seeding. x = seed; a = splitmix64(x) (the first output of splitmix64 started at seed);
 *      y = a XOR epoch; the xoshiro256** state s[0..3] are the next four outputs of splitmix64
 *      started at y.  splitmix64: x += 0x9E3779B97F4A7C15; z = x; z = (z ^ z>>30) * 0xBF58476D1CE4E5B9;
 *      z = (z ^ z>>27) * 0x94D049BB133111EB; return z ^ z>>31 (all mod 2^64).
 *   2. Shuffle. perm = [0, 1, ..., n-1]; for i = n-1 down to 1: j = bounded(i + 1); swap perm[i],
 *      perm[j]. bounded(r) is Lemire's unbiased multiply-shift: m = next() * r (128-bit);
 *      if low64(m) < r: t = (2^64 - r) mod r; while low64(m) < t: m = next() * r; return m >> 64.
 *   3. The epoch visits sample index_begin + perm[p] at position p = 0..n-1.
 *   4. Rank r of W takes positions r, r + W, r + 2W, ... (ceil((n - r) / W) samples, the shares of
 *      all ranks partition the positions), cut into batches of B consecutive share elements; the
 *      last batch is shorter unless drop_last (then it is dropped).
 * Permutations are cached (a few, reference-counted) since every rank of an epoch needs the same
 * one. n must be below 2^32 per server (shard the store beyond that). */
#ifndef TACA_FEATURED_EPOCH_H
#define TACA_FEATURED_EPOCH_H

#include <stddef.h>
#include <stdint.h>

#include "base/epoch_share.h"
#include "base/error.h"

typedef struct epoch_rng {
  uint64_t s[4];
} epoch_rng;

void epoch_rng_seed(epoch_rng *r, uint64_t seed, uint64_t epoch);
uint64_t epoch_rng_next(epoch_rng *r);
uint64_t epoch_rng_bounded(epoch_rng *r, uint64_t range);  /* uniform in [0, range), range >= 1 */

/* Fills perm[0..n) with the shuffled offsets 0..n-1. */
void epoch_permute(uint32_t *perm, uint32_t n, uint64_t seed, uint64_t epoch);

/* A cached, shared permutation. */
typedef struct epoch_perm {
  uint64_t seed, epoch, n;
  const uint32_t *perm;
} epoch_perm;

typedef struct epoch_cache epoch_cache;
epoch_cache *epoch_cache_create(int capacity);
void epoch_cache_free(epoch_cache *c);
/* Returns the permutation for (seed, epoch, n), computing it if not cached; release it after use. */
const epoch_perm *epoch_cache_get(epoch_cache *c, uint64_t seed, uint64_t epoch, uint64_t n, taca_error *err);
void epoch_cache_release(epoch_cache *c, const epoch_perm *p);

#endif
