/* ds4 — small deterministic random numbers (splitmix64 seeding + xoshiro256**).
 * Used by the synthetic-model tool, the tests and the sampler; the same seed
 * gives the same stream on every machine. */
#ifndef DS4_UTIL_RNG_H
#define DS4_UTIL_RNG_H

#include <math.h>
#include <stdint.h>

typedef struct ds4_rng {
    uint64_t s[4];
} ds4_rng;

static inline uint64_t ds4_splitmix64(uint64_t *x) {
    uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static inline void ds4_rng_seed(ds4_rng *r, uint64_t seed) {
    for (int i = 0; i < 4; i++) r->s[i] = ds4_splitmix64(&seed);
}

static inline uint64_t ds4_rotl64(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

static inline uint64_t ds4_rng_u64(ds4_rng *r) {
    uint64_t *s = r->s;
    const uint64_t result = ds4_rotl64(s[1] * 5, 7) * 9;
    const uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = ds4_rotl64(s[3], 45);
    return result;
}

/* Uniform in [0, 1) with 24 random bits (exact in float). */
static inline float ds4_rng_uniform(ds4_rng *r) { return (float)(ds4_rng_u64(r) >> 40) * (1.0f / 16777216.0f); }

/* Uniform in [0, 1) with 53 random bits. */
static inline double ds4_rng_uniform_d(ds4_rng *r) { return (double)(ds4_rng_u64(r) >> 11) * (1.0 / 9007199254740992.0); }

/* Standard normal (Box-Muller, one value per call; deterministic). */
static inline float ds4_rng_normal(ds4_rng *r) {
    double u1 = ds4_rng_uniform_d(r);
    const double u2 = ds4_rng_uniform_d(r);
    if (u1 < 1e-300) u1 = 1e-300;
    return (float)(sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2));
}

/* Integer in [0, n). */
static inline uint32_t ds4_rng_below(ds4_rng *r, uint32_t n) { return (uint32_t)(((ds4_rng_u64(r) >> 32) * (uint64_t)n) >> 32); }

#endif
