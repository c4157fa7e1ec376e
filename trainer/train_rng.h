/**
 * train_rng — the trainer's deterministic random numbers: xoshiro256** with an explicit
 * state (four 64-bit words, saved in checkpoints), seeded by splitmix64, normals by
 * Box-Muller. The same seed gives the same sequence on every machine (up to libm's
 * log/cos/sin rounding in the normals). Not thread-safe: one state per user.
 */
#ifndef PM_TRAIN_RNG_H
#define PM_TRAIN_RNG_H

#include <stddef.h>
#include <stdint.h>

/** Generator state; copy it to fork or save a stream. */
struct train_rng {
    uint64_t s[4];
};

/** Seed the state from a 64-bit seed (splitmix64 expansion; never all-zero). */
void train_rng_seed(struct train_rng *r, uint64_t seed);

/** The next 64 random bits. */
uint64_t train_rng_next(struct train_rng *r);

/** Uniform double in [0, 1) with 53 random bits. */
double train_rng_uniform(struct train_rng *r);

/** Uniform integer in [0, n) (n > 0), without modulo bias. */
uint64_t train_rng_below(struct train_rng *r, uint64_t n);

/**
 * Fill out[0..n) with standard normals (Box-Muller in double: each pair of uniforms
 * u1 in (0,1], u2 in [0,1) gives sqrt(-2 ln u1) * (cos, sin)(2 pi u2); an odd count
 * discards the last sine).
 */
void train_rng_normal_fill(struct train_rng *r, float *out, size_t n);

#endif
