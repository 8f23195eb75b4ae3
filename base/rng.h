/* rng.h: the project's deterministic random numbers for initialisation: splitmix64 (Steele et al.;
 * the state advances by the golden-ratio increment), uniforms from its top 53 bits, and standard
 * normals by Box-Muller. Header-only (static inline): every user gets the same sequence. */
#ifndef TACA_BASE_RNG_H
#define TACA_BASE_RNG_H

#include <math.h>
#include <stdint.h>

static inline uint64_t splitmix64(uint64_t *s) {
  uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

/* Uniform in [0, 1). */
static inline double rng_uniform01(uint64_t *s) { return (double)(splitmix64(s) >> 11) * 0x1p-53; }

/* Standard normal by Box-Muller (one draw per two uniforms; u1 in (0, 1]). */
static inline double rng_normal01(uint64_t *s) {
  const double u1 = (double)((splitmix64(s) >> 11) + 1) * 0x1p-53, u2 = rng_uniform01(s);
  return sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
}

#endif
