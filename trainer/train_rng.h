/**
 * train_rng — the trainer's deterministic random numbers: xoshiro256** with an explicit
 * state (four 64-bit words, saved in checkpoints), seeded by splitmix64, normals by
 * Box-Muller. The same seed gives the same sequence on every machine (up to libm's
 * log/cos/sin rounding in the normals). Not thread-safe: one state per user.
 *
 * The generator step, the uniform and the Box-Muller draw are inline functions that nvcc
 * also compiles for the device, so the CUDA trainer's noise kernel draws the same stream
 * with this code rather than a copy of it.
 */
#ifndef PM_TRAIN_RNG_H
#define PM_TRAIN_RNG_H

#include <math.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __CUDACC__
#define TRAIN_RNG_INLINE static __forceinline__ __host__ __device__
#else
#define TRAIN_RNG_INLINE static inline
#endif

/** Generator state; copy it to fork or save a stream. */
struct train_rng {
    uint64_t s[4];
};

/** Seed the state from a 64-bit seed (splitmix64 expansion; never all-zero). */
void train_rng_seed(struct train_rng *r, uint64_t seed);

/** The next 64 random bits (xoshiro256**). */
TRAIN_RNG_INLINE uint64_t train_rng_next(struct train_rng *r)
{
    uint64_t *s = r->s;
    uint64_t x = s[1] * 5, result = ((x << 7) | (x >> 57)) * 9;
    uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = (s[3] << 45) | (s[3] >> 19);
    return result;
}

/** Uniform double in [0, 1) with 53 random bits. */
TRAIN_RNG_INLINE double train_rng_uniform(struct train_rng *r)
{
    return (double)(train_rng_next(r) >> 11) * 0x1.0p-53;
}

/**
 * One Box-Muller draw in double: uniforms u1 in (0,1], u2 in [0,1) give the radius
 * sqrt(-2 ln u1) (returned) and the angle 2 pi u2 (*theta); rad * cos(theta) and
 * rad * sin(theta) are two independent standard normals.
 */
TRAIN_RNG_INLINE double train_rng_box_muller(struct train_rng *r, double *theta)
{
    double u1 = 1.0 - train_rng_uniform(r); // (0, 1]
    double u2 = train_rng_uniform(r);
    double rad = sqrt(-2.0 * log(u1));
    *theta = 6.283185307179586476925286766559 * u2;
    return rad;
}

/** Uniform integer in [0, n) (n > 0), without modulo bias. */
uint64_t train_rng_below(struct train_rng *r, uint64_t n);

/** Fill out[0..n) with standard normals: a train_rng_box_muller draw per pair, cosine
 * first (an odd count discards the last sine). */
void train_rng_normal_fill(struct train_rng *r, float *out, size_t n);

#endif
