// train_rng — xoshiro256** (Blackman & Vigna) seeded by splitmix64.
#include "train_rng.h"

static uint64_t splitmix64(uint64_t *x)
{
    uint64_t z = (*x += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

void train_rng_seed(struct train_rng *r, uint64_t seed)
{
    uint64_t x = seed;
    for (int i = 0; i < 4; i++)
        r->s[i] = splitmix64(&x);
    if ((r->s[0] | r->s[1] | r->s[2] | r->s[3]) == 0)
        r->s[0] = 1;
}

uint64_t train_rng_below(struct train_rng *r, uint64_t n)
{
    // reject the top partial range so every value is equally likely
    uint64_t limit = UINT64_MAX - UINT64_MAX % n;
    uint64_t x;
    do {
        x = train_rng_next(r);
    } while (x >= limit);
    return x % n;
}

void train_rng_normal_fill(struct train_rng *r, float *out, size_t n)
{
    for (size_t i = 0; i < n; i += 2) {
        double theta, rad = train_rng_box_muller(r, &theta);
        out[i] = (float)(rad * cos(theta));
        if (i + 1 < n)
            out[i + 1] = (float)(rad * sin(theta));
    }
}
