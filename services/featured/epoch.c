/* epoch.c: splitmix64-seeded xoshiro256**, Fisher-Yates epoch permutations, and a small
 * reference-counted cache of them (see epoch.h for the exact algorithm). */
#include "services/featured/epoch.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

static uint64_t splitmix64(uint64_t *x) {
  uint64_t z = (*x += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

static inline uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

void epoch_rng_seed(epoch_rng *r, uint64_t seed, uint64_t epoch) {
  uint64_t x = seed;
  uint64_t y = splitmix64(&x) ^ epoch;
  for (int i = 0; i < 4; i++) r->s[i] = splitmix64(&y);
}

uint64_t epoch_rng_next(epoch_rng *r) {
  uint64_t *s = r->s;
  uint64_t result = rotl(s[1] * 5, 7) * 9;
  uint64_t t = s[1] << 17;
  s[2] ^= s[0];
  s[3] ^= s[1];
  s[1] ^= s[2];
  s[0] ^= s[3];
  s[2] ^= t;
  s[3] = rotl(s[3], 45);
  return result;
}

uint64_t epoch_rng_bounded(epoch_rng *r, uint64_t range) {
  unsigned __int128 m = (unsigned __int128)epoch_rng_next(r) * range;
  uint64_t l = (uint64_t)m;
  if (l < range) {
    uint64_t t = (0 - range) % range;
    while (l < t) {
      m = (unsigned __int128)epoch_rng_next(r) * range;
      l = (uint64_t)m;
    }
  }
  return (uint64_t)(m >> 64);
}

void epoch_permute(uint32_t *perm, uint32_t n, uint64_t seed, uint64_t epoch) {
  for (uint32_t i = 0; i < n; i++) perm[i] = i;
  epoch_rng r;
  epoch_rng_seed(&r, seed, epoch);
  for (uint32_t i = n; i-- > 1;) {
    uint32_t j = (uint32_t)epoch_rng_bounded(&r, (uint64_t)i + 1);
    uint32_t t = perm[i];
    perm[i] = perm[j];
    perm[j] = t;
  }
}

/* ---- cache ---- */

typedef struct entry {
  epoch_perm p;
  uint32_t *buf;
  int refs;
  uint64_t used;  /* LRU clock */
} entry;

struct epoch_cache {
  pthread_mutex_t mu;
  int cap, n;
  uint64_t clock;
  entry **e;
};

epoch_cache *epoch_cache_create(int capacity) {
  epoch_cache *c = calloc(1, sizeof *c);
  if (!c) return NULL;
  c->cap = capacity < 1 ? 1 : capacity;
  c->e = calloc((size_t)c->cap, sizeof *c->e);
  if (!c->e) {
    free(c);
    return NULL;
  }
  pthread_mutex_init(&c->mu, NULL);
  return c;
}

static void entry_free(entry *e) {
  if (!e) return;
  free(e->buf);
  free(e);
}

void epoch_cache_free(epoch_cache *c) {
  if (!c) return;
  for (int i = 0; i < c->n; i++) entry_free(c->e[i]);
  free(c->e);
  pthread_mutex_destroy(&c->mu);
  free(c);
}

static entry *find(epoch_cache *c, uint64_t seed, uint64_t epoch, uint64_t n) {
  for (int i = 0; i < c->n; i++)
    if (c->e[i]->p.seed == seed && c->e[i]->p.epoch == epoch && c->e[i]->p.n == n) return c->e[i];
  return NULL;
}

/* Frees unreferenced entries, least recently used first, until there is room for one more. */
static void make_room(epoch_cache *c) {
  while (c->n >= c->cap) {
    int victim = -1;
    for (int i = 0; i < c->n; i++)
      if (c->e[i]->refs == 0 && (victim < 0 || c->e[i]->used < c->e[victim]->used)) victim = i;
    if (victim < 0) return;  /* all in use: grow past capacity rather than fail */
    entry_free(c->e[victim]);
    c->e[victim] = c->e[--c->n];
  }
}

const epoch_perm *epoch_cache_get(epoch_cache *c, uint64_t seed, uint64_t epoch, uint64_t n, taca_error *err) {
  if (n >= UINT32_MAX)
    return taca_fail(err, "%llu samples on one server: epoch permutations need fewer than 2^32 (shard the store)",
                     (unsigned long long)n), NULL;
  pthread_mutex_lock(&c->mu);
  entry *e = find(c, seed, epoch, n);
  if (e) {
    e->refs++;
    e->used = ++c->clock;
    pthread_mutex_unlock(&c->mu);
    return &e->p;
  }
  pthread_mutex_unlock(&c->mu);

  /* Compute outside the lock; if another thread got there first, keep its copy. */
  entry *ne = calloc(1, sizeof *ne);
  uint32_t *buf = n ? malloc(n * sizeof *buf) : NULL;
  if (!ne || (n && !buf)) {
    free(ne);
    free(buf);
    return taca_fail(err, "out of memory for the epoch permutation of %llu samples", (unsigned long long)n), NULL;
  }
  epoch_permute(buf, (uint32_t)n, seed, epoch);
  ne->buf = buf;
  ne->p = (epoch_perm){.seed = seed, .epoch = epoch, .n = n, .perm = buf};

  pthread_mutex_lock(&c->mu);
  e = find(c, seed, epoch, n);
  if (e) {
    entry_free(ne);
  } else {
    make_room(c);
    if (c->n >= c->cap) {
      entry **grown = realloc(c->e, (size_t)(c->cap * 2) * sizeof *grown);
      if (!grown) {
        pthread_mutex_unlock(&c->mu);
        entry_free(ne);
        return taca_fail(err, "out of memory growing the epoch cache"), NULL;
      }
      c->e = grown;
      c->cap *= 2;
    }
    c->e[c->n++] = e = ne;
  }
  e->refs++;
  e->used = ++c->clock;
  pthread_mutex_unlock(&c->mu);
  return &e->p;
}

void epoch_cache_release(epoch_cache *c, const epoch_perm *p) {
  if (!p) return;
  pthread_mutex_lock(&c->mu);
  for (int i = 0; i < c->n; i++)
    if (&c->e[i]->p == p) {
      c->e[i]->refs--;
      break;
    }
  pthread_mutex_unlock(&c->mu);
}
