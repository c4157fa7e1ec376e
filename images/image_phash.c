#include "image_phash.h"

#include "image_internal.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PH_N 32                     // side of the resized grey image
#define PH_K 8                      // side of the kept DCT block
#define PRECISION_BITS (32 - 8 - 2) // PIL's Resample.c fixed point

static double sinc(double x)
{
    if (x == 0.0)
        return 1.0;
    x *= M_PI;
    return sin(x) / x;
}

static double lanczos3(double x)
{
    return (-3.0 <= x && x < 3.0) ? sinc(x) * sinc(x / 3.0) : 0.0;
}

// PIL precompute_coeffs + normalize_coeffs_8bpc for in_size -> PH_N. kk holds PH_N rows
// of ksize ints; bounds holds (xmin, count) per output. Returns ksize.
static int pil_coeffs(int in_size, int ksize_max, int *kk, int *bounds)
{
    double scale = (double)in_size / PH_N, filterscale = scale < 1.0 ? 1.0 : scale;
    double support = 3.0 * filterscale;
    int ksize = (int)ceil(support) * 2 + 1;
    if (ksize > ksize_max)
        ksize = ksize_max; // cannot happen: caller sized the table from the same formula
    double pre[ksize];
    for (int xx = 0; xx < PH_N; xx++) {
        double center = (xx + 0.5) * scale, ww = 0.0, ss = 1.0 / filterscale;
        int xmin = (int)(center - support + 0.5);
        if (xmin < 0)
            xmin = 0;
        int xmax = (int)(center + support + 0.5);
        if (xmax > in_size)
            xmax = in_size;
        xmax -= xmin;
        if (xmax > ksize)
            xmax = ksize;
        for (int x = 0; x < xmax; x++) {
            double w = lanczos3((x + xmin - center + 0.5) * ss);
            pre[x] = w;
            ww += w;
        }
        for (int x = 0; x < ksize; x++) {
            double v = x < xmax ? (ww != 0.0 ? pre[x] / ww : pre[x]) : 0.0;
            kk[xx * ksize + x] = v < 0 ? (int)(-0.5 + v * (1 << PRECISION_BITS))
                                       : (int)(0.5 + v * (1 << PRECISION_BITS));
        }
        bounds[xx * 2] = xmin;
        bounds[xx * 2 + 1] = xmax;
    }
    return ksize;
}

// PIL accumulates in a 32-bit int (its coefficients are normalised so no sum overflows);
// doing the same keeps the hash bit-exact and lets the compiler vectorise the taps.
static inline uint8_t clip8(int32_t in)
{
    if (in >= ((int32_t)1 << PRECISION_BITS << 8))
        return 255;
    if (in <= 0)
        return 0;
    return (uint8_t)(in >> PRECISION_BITS);
}

static int ksize_for(int in_size)
{
    double scale = (double)in_size / PH_N;
    return (int)ceil(3.0 * (scale < 1.0 ? 1.0 : scale)) * 2 + 1;
}

// The coefficient tables depend on the input size only (the output is always 32), and
// computing one costs two sin() per tap: a context keeps them for sizes up to
// PH_CACHE_MAX_SIZE in a direct-mapped cache (at most PH_CACHE_SLOTS tables of
// 32 * ksize + 64 ints, ~16 KB at 600 px, ~50 KB at 2048 px). Cached and fresh tables
// are the same integers, so the hash does not depend on the cache.
#define PH_CACHE_SLOTS 256
#define PH_CACHE_MAX_SIZE 2048

struct ph_table {
    int in_size; // 0: empty
    int *kk;     // PH_N * ksize coefficients, then PH_N (xmin, count) pairs
};

struct ph_cache {
    struct ph_table slot[PH_CACHE_SLOTS];
};

void image_phash_ctx_release(struct image_ctx *ctx)
{
    struct ph_cache *c = ctx->ph_cache;
    if (!c)
        return;
    for (int i = 0; i < PH_CACHE_SLOTS; i++)
        free(c->slot[i].kk);
    free(c);
    ctx->ph_cache = NULL;
}

// The table for in_size: from the cache, or built into `scratch` (room for ksize) when
// the size is not cached or its slot holds `in_use` (the other axis's table, which must
// stay valid: a width and a height can share a slot). Never NULL.
static const int *coeffs_get(struct image_ctx *ctx, int in_size, int ksize, int *scratch,
                             const int *in_use)
{
    size_t n = (size_t)PH_N * ksize + 2 * PH_N;
    if (in_size > PH_CACHE_MAX_SIZE)
        goto uncached;
    struct ph_cache *c = ctx->ph_cache;
    if (!c && !(c = ctx->ph_cache = calloc(1, sizeof *c)))
        goto uncached;
    struct ph_table *t = &c->slot[in_size % PH_CACHE_SLOTS];
    if (t->in_size == in_size)
        return t->kk;
    if (t->kk && t->kk == in_use)
        goto uncached;
    int *kk = realloc(t->kk, n * sizeof *kk);
    if (!kk)
        goto uncached;
    t->kk = kk;
    pil_coeffs(in_size, ksize, kk, kk + (size_t)PH_N * ksize);
    t->in_size = in_size;
    return kk;
uncached:
    pil_coeffs(in_size, ksize, scratch, scratch + (size_t)PH_N * ksize);
    return scratch;
}

// The taps vectorise much better with AVX2 (32-bit multiplies); glibc picks the clone
// at load time, and both clones compute the same integers. The clones are static (clang
// does not export a cloned function to other files), behind the plain public function.
__attribute__((target_clones("avx2", "default"))) static int
phash_compute(struct image_ctx *ctx, const struct image *img, uint64_t *hash,
              struct pm_error *err)
{
    *hash = 0;
    if (!img || !img->pixels || img->width <= 0 || img->height <= 0)
        return pm_error_set(err, PM_ERR_USAGE, "phash: empty image");
    int w = img->width, h = img->height;
    int kxs = ksize_for(w), kys = ksize_for(h);
    // scratch: grey row (w) + horizontal result (h x 32) + coefficient tables
    size_t need =
        (size_t)w + (size_t)h * PH_N + sizeof(int) * ((size_t)PH_N * (kxs + kys) + 4 * PH_N) + 64;
    uint8_t *mem = scratch_get(&ctx->ph_tmp, need);
    if (!mem)
        return pm_error_set(err, PM_ERR_NOMEM, "phash: out of memory");
    int *kxm = (int *)(((uintptr_t)mem + 15) & ~(uintptr_t)15);
    int *kym = kxm + PH_N * kxs + 2 * PH_N;
    uint8_t *grey = (uint8_t *)(kym + PH_N * kys + 2 * PH_N), *tmp = grey + w;
    const int *kx = coeffs_get(ctx, w, kxs, kxm, NULL), *bx = kx + PH_N * kxs;
    const int *ky = coeffs_get(ctx, h, kys, kym, kx), *by = ky + PH_N * kys;

    // grey + horizontal pass, one source row at a time (PIL does the same passes; the
    // horizontal one is skipped when the width is already 32, as PIL skips it)
    for (int y = 0; y < h; y++) {
        const uint8_t *p = img->pixels + (size_t)y * w * 3;
        for (int x = 0; x < w; x++, p += 3)
            grey[x] = (uint8_t)((19595u * p[0] + 38470u * p[1] + 7471u * p[2] + 0x8000u) >> 16);
        uint8_t *t = tmp + (size_t)y * PH_N;
        if (w == PH_N) {
            memcpy(t, grey, PH_N);
            continue;
        }
        for (int xx = 0; xx < PH_N; xx++) {
            const int *k = kx + xx * kxs;
            int xmin = bx[xx * 2], n = bx[xx * 2 + 1];
            const uint8_t *g = grey + xmin;
            int32_t ss = (int32_t)1 << (PRECISION_BITS - 1);
            for (int x = 0; x < n; x++)
                ss += (int32_t)g[x] * k[x];
            t[xx] = clip8(ss);
        }
    }
    double px[PH_N][PH_N];
    for (int yy = 0; yy < PH_N; yy++) {
        for (int xx = 0; xx < PH_N; xx++) {
            if (h == PH_N) {
                px[yy][xx] = tmp[yy * PH_N + xx];
                continue;
            }
            const int *k = ky + yy * kys;
            int ymin = by[yy * 2], n = by[yy * 2 + 1];
            int32_t ss = (int32_t)1 << (PRECISION_BITS - 1);
            for (int y = 0; y < n; y++)
                ss += (int32_t)tmp[(size_t)(y + ymin) * PH_N + xx] * k[y];
            px[yy][xx] = clip8(ss);
        }
    }

    // DCT-II (unnormalised, scipy's type 2: 2 sum x[n] cos(pi k (2n+1) / 2N)), axis 0 then 1
    double cosv[PH_K][PH_N];
    for (int k = 0; k < PH_K; k++)
        for (int n = 0; n < PH_N; n++)
            cosv[k][n] = 2.0 * cos(M_PI * k * (2 * n + 1) / (2.0 * PH_N));
    double col[PH_K][PH_N]; // col[v][x] = DCT along y
    for (int v = 0; v < PH_K; v++)
        for (int x = 0; x < PH_N; x++) {
            double s = 0;
            for (int y = 0; y < PH_N; y++)
                s += cosv[v][y] * px[y][x];
            col[v][x] = s;
        }
    double c[PH_K * PH_K], sorted[PH_K * PH_K];
    for (int v = 0; v < PH_K; v++)
        for (int u = 0; u < PH_K; u++) {
            double s = 0;
            for (int x = 0; x < PH_N; x++)
                s += cosv[u][x] * col[v][x];
            c[v * PH_K + u] = sorted[v * PH_K + u] = s;
        }
    // median: insertion sort of 64 values
    for (int i = 1; i < PH_K * PH_K; i++) {
        double t = sorted[i];
        int j = i - 1;
        while (j >= 0 && sorted[j] > t) {
            sorted[j + 1] = sorted[j];
            j--;
        }
        sorted[j + 1] = t;
    }
    double med = (sorted[31] + sorted[32]) / 2.0;
    uint64_t hv = 0;
    for (int i = 0; i < PH_K * PH_K; i++)
        if (c[i] > med)
            hv |= (uint64_t)1 << (63 - i);
    *hash = hv;
    return PM_OK;
}

int image_phash(struct image_ctx *ctx, const struct image *img, uint64_t *hash,
                struct pm_error *err)
{
    return phash_compute(ctx, img, hash, err);
}

int image_phash_distance(uint64_t a, uint64_t b)
{
    return __builtin_popcountll(a ^ b);
}

void image_phash_format(uint64_t hash, char buf[17])
{
    snprintf(buf, 17, "%016llx", (unsigned long long)hash);
}
