#include "image_resize.h"

#include "image_internal.h"

#include <math.h>
#include <stdint.h>
#include <string.h>
#if defined(__SSE2__)
#include <emmintrin.h>
#endif

static const char *const mode_names[] = {
    [IMAGE_RESIZE_NO] = "no",
    [IMAGE_RESIZE_KEEP_RATIO] = "keep_ratio",
    [IMAGE_RESIZE_CENTER_CROP] = "center_crop",
    [IMAGE_RESIZE_BORDER] = "border",
    [IMAGE_RESIZE_KEEP_RATIO_LARGEST] = "keep_ratio_largest",
    [IMAGE_RESIZE_FIXED] = "fixed",
};
#define NMODES ((int)(sizeof mode_names / sizeof mode_names[0]))

int image_resize_mode_parse(const char *name, enum image_resize_mode *mode)
{
    for (int i = 0; i < NMODES; i++) {
        if (name && strcmp(name, mode_names[i]) == 0) {
            *mode = (enum image_resize_mode)i;
            return PM_OK;
        }
    }
    return PM_ERR_USAGE;
}

const char *image_resize_mode_name(enum image_resize_mode mode)
{
    if ((int)mode < 0 || (int)mode >= NMODES)
        return "unknown";
    return mode_names[mode];
}

// Python's round() of a double: nearest, ties to even (the default FP rounding mode).
static int py_round(double v)
{
    double r = nearbyint(v);
    if (r < 1)
        return 1; // img2dataset would fail on a 0-pixel side; we keep one pixel
    if (r > (double)(1 << 30)) // image_resize() refuses such outputs (PM_ERR_LIMIT)
        return 1 << 30;
    return (int)r;
}

int image_geometry_compute(const struct image_resize_params *p, int width, int height,
                           struct image_geometry *g)
{
    memset(g, 0, sizeof *g);
    if (width <= 0 || height <= 0)
        return PM_ERR_USAGE;
    int size = p->size;
    g->src_width = g->scaled_width = g->copy_width = g->out_width = width;
    g->src_height = g->scaled_height = g->copy_height = g->out_height = height;
    g->identity = true;
    if (p->mode == IMAGE_RESIZE_NO)
        return PM_OK;
    if ((int)p->mode < 0 || (int)p->mode >= NMODES || size <= 0)
        return PM_ERR_USAGE;

    int smallest = width < height ? width : height;
    int largest = width < height ? height : width;
    bool by_smallest = p->mode == IMAGE_RESIZE_KEEP_RATIO || p->mode == IMAGE_RESIZE_CENTER_CROP;
    bool downscale = (by_smallest ? smallest : largest) > size;
    if (p->only_if_bigger && !downscale)
        return PM_OK;
    g->upscale = !downscale;

    int sw = width, sh = height;
    if (p->mode == IMAGE_RESIZE_FIXED) {
        sw = sh = size;
    } else {
        double scale = size / (double)(by_smallest ? smallest : largest);
        if (scale != 1.0) {
            sh = py_round(height * scale);
            sw = py_round(width * scale);
        }
    }
    g->scaled_width = g->copy_width = g->out_width = sw;
    g->scaled_height = g->copy_height = g->out_height = sh;
    if (p->mode == IMAGE_RESIZE_CENTER_CROP) {
        if (sw > size) {
            g->crop_x = (sw - size) / 2;
            g->copy_width = g->out_width = size;
        }
        if (sh > size) {
            g->crop_y = (sh - size) / 2;
            g->copy_height = g->out_height = size;
        }
    } else if (p->mode == IMAGE_RESIZE_BORDER) {
        if (sw < size) {
            g->pad_x = (size - sw) / 2;
            g->out_width = size;
        }
        if (sh < size) {
            g->pad_y = (size - sh) / 2;
            g->out_height = size;
        }
    }
    g->identity = sw == width && sh == height && g->out_width == width && g->out_height == height;
    return PM_OK;
}

// One output coordinate's taps: source indices start..start+n-1, weights at w[off..].
struct tap {
    int start;
    int n;
    int off;
};

static double lanczos4(double d)
{
    if (d == 0.0)
        return 1.0;
    if (d <= -4.0 || d >= 4.0)
        return 0.0;
    double x = d * M_PI;
    return 4.0 * sin(x) * sin(x / 4.0) / (x * x);
}

// Number of weights needed for `count` outputs mapping src_n onto dst_n.
static size_t taps_capacity(int src_n, int dst_n, int count)
{
    int per = dst_n < src_n ? (int)ceil((double)src_n / dst_n) + 2 : 8;
    return (size_t)count * (size_t)per;
}

// Fill taps for outputs first..first+count-1 of a src_n -> dst_n resampling. Returns the
// largest tap count.
static int taps_build(int src_n, int dst_n, int first, int count, struct tap *t, float *w)
{
    int off = 0, maxn = 1;
    double scale = (double)src_n / dst_n; // source pixels per output pixel
    for (int k = 0; k < count; k++) {
        int o = first + k;
        struct tap *tp = &t[k];
        tp->off = off;
        if (src_n == dst_n) {
            tp->start = o;
            tp->n = 1;
            w[off++] = 1.0f;
        } else if (dst_n < src_n) {
            // box filter: the output pixel covers source [f1, f2)
            double f1 = o * scale, f2 = f1 + scale;
            if (f2 > src_n)
                f2 = src_n;
            int i1 = (int)floor(f1), i2 = (int)ceil(f2);
            if (i2 > src_n)
                i2 = src_n;
            if (i1 >= i2)
                i1 = i2 - 1;
            double inv = 1.0 / (f2 - f1);
            tp->start = i1;
            tp->n = 0;
            for (int i = i1; i < i2; i++) {
                double a = i < f1 ? f1 : i, b = i + 1 > f2 ? f2 : i + 1;
                w[off++] = (float)((b - a) * inv);
                tp->n++;
            }
        } else {
            double sx = (o + 0.5) * scale - 0.5;
            int fl = (int)floor(sx);
            double frac = sx - fl;
            int lo = fl - 3 < 0 ? 0 : fl - 3;
            int hi = fl + 4 > src_n - 1 ? src_n - 1 : fl + 4;
            if (lo > src_n - 1)
                lo = src_n - 1;
            if (hi < 0)
                hi = 0;
            tp->start = lo;
            tp->n = hi - lo + 1;
            for (int i = 0; i < tp->n; i++)
                w[off + i] = 0.0f;
            double sum = 0, ws[8];
            for (int i = 0; i < 8; i++) {
                ws[i] = lanczos4(i - 3 - frac);
                sum += ws[i];
            }
            for (int i = 0; i < 8; i++) {
                int idx = fl - 3 + i;
                idx = idx < lo ? lo : idx > hi ? hi : idx; // replicate edges
                w[off + idx - lo] += (float)(ws[i] / sum);
            }
            off += tp->n;
        }
        if (tp->n > maxn)
            maxn = tp->n;
    }
    return maxn;
}

static inline uint8_t clamp_u8(float v)
{
    v = v > 0.0f ? v : 0.0f; // also maps NaN to 0
    v = v < 255.0f ? v : 255.0f;
    return (uint8_t)(int)(v + 0.5f);
}

// out[i] = clamp_u8(in[i]) for n values.
static void clamp_row(const float *restrict in, size_t n, uint8_t *restrict out)
{
    size_t i = 0;
#if defined(__SSE2__)
    // maxps returns its second operand when the first is NaN, so NaN becomes 0 as in
    // clamp_u8; the rest is the same compare, add and truncation: identical bytes.
    const __m128 lo = _mm_setzero_ps(), hi = _mm_set1_ps(255.0f), half = _mm_set1_ps(0.5f);
    for (; i + 16 <= n; i += 16) {
        __m128i q[4];
        for (int k = 0; k < 4; k++) {
            __m128 v = _mm_min_ps(_mm_max_ps(_mm_loadu_ps(in + i + 4 * k), lo), hi);
            q[k] = _mm_cvttps_epi32(_mm_add_ps(v, half));
        }
        __m128i w = _mm_packus_epi16(_mm_packs_epi32(q[0], q[1]), _mm_packs_epi32(q[2], q[3]));
        _mm_storeu_si128((__m128i *)(out + i), w);
    }
#endif
    for (; i < n; i++)
        out[i] = clamp_u8(in[i]);
}

// Outputs x < vec_end may use the 4-lane path of hpass_row: it loads 4 bytes per source
// pixel and stores 4 floats per output pixel, so it must not touch the last source pixel
// of a row (its 4th byte can be past the image) nor write the row's last output pixel.
static int hpass_vec_end(const struct tap *tx, int cw, int src_w)
{
    int x = 0;
    while (x < cw - 1 && tx[x].start + tx[x].n < src_w)
        x++;
    return x;
}

static void hpass_row(const uint8_t *restrict src, const struct tap *restrict tx,
                      const float *restrict wx, int cw, int vec_end, float *restrict out)
{
    int x = 0;
#if defined(__SSE2__)
    // R, G, B (and a dummy) in one vector: the same multiplies and adds, in the same order,
    // as the scalar loop below, so the results are bit-identical.
    const __m128i zero = _mm_setzero_si128();
    for (; x < vec_end; x++) {
        const struct tap *t = &tx[x];
        const uint8_t *p = src + (size_t)t->start * 3;
        const float *w = wx + t->off;
        __m128 acc = _mm_setzero_ps();
        for (int i = 0; i < t->n; i++) {
            uint32_t v;
            memcpy(&v, p, 4);
            __m128i b = _mm_cvtsi32_si128((int)v);
            b = _mm_unpacklo_epi16(_mm_unpacklo_epi8(b, zero), zero);
            acc = _mm_add_ps(acc, _mm_mul_ps(_mm_set1_ps(w[i]), _mm_cvtepi32_ps(b)));
            p += 3;
        }
        _mm_storeu_ps(out, acc);
        out += 3;
    }
#else
    (void)vec_end;
#endif
    for (; x < cw; x++) {
        const struct tap *t = &tx[x];
        const uint8_t *p = src + (size_t)t->start * 3;
        const float *w = wx + t->off;
        float r = 0, g = 0, b = 0;
        for (int i = 0; i < t->n; i++) {
            r += w[i] * p[0];
            g += w[i] * p[1];
            b += w[i] * p[2];
            p += 3;
        }
        out[0] = r;
        out[1] = g;
        out[2] = b;
        out += 3;
    }
}

// One output row from the ring of filtered rows: acc = sum_k w[k] * row[start + k].
static void vpass_row(const float *rows, int ring, size_t rowf, const struct tap *t, const float *w,
                      float *restrict acc, uint8_t *restrict out)
{
    const float *restrict r0 = rows + (size_t)(t->start % ring) * rowf;
    float w0 = w[0];
    for (size_t i = 0; i < rowf; i++)
        acc[i] = w0 * r0[i];
    for (int k = 1; k < t->n; k++) {
        const float *restrict rk = rows + (size_t)((t->start + k) % ring) * rowf;
        float wk = w[k];
        for (size_t i = 0; i < rowf; i++)
            acc[i] += wk * rk[i];
    }
    clamp_row(acc, rowf, out);
}

int image_resize(struct image_ctx *ctx, const struct image *src, const struct image_geometry *g,
                 struct image *dst, struct pm_error *err)
{
    if (!src->pixels || src->width <= 0 || src->height <= 0 || src == dst)
        return pm_error_set(err, PM_ERR_USAGE, "resize: empty source image");
    if (g->identity && src->width == g->out_width && src->height == g->out_height) {
        int rc = image_reserve(dst, src->width, src->height);
        if (rc)
            return pm_error_set(err, rc, "resize: cannot allocate %dx%d", src->width, src->height);
        memcpy(dst->pixels, src->pixels, (size_t)src->width * src->height * 3);
        return PM_OK;
    }
    if (g->scaled_width <= 0 || g->scaled_height <= 0 || g->copy_width <= 0 ||
        g->copy_height <= 0 || g->crop_x < 0 || g->crop_y < 0 ||
        g->crop_x + g->copy_width > g->scaled_width ||
        g->crop_y + g->copy_height > g->scaled_height || g->pad_x < 0 || g->pad_y < 0 ||
        g->pad_x + g->copy_width > g->out_width || g->pad_y + g->copy_height > g->out_height)
        return pm_error_set(err, PM_ERR_USAGE, "resize: inconsistent geometry");
    if ((uint64_t)g->out_width * (uint64_t)g->out_height > IMAGE_RESIZE_MAX_PIXELS)
        return pm_error_set(err, PM_ERR_LIMIT, "resized image too large: %dx%d", g->out_width,
                            g->out_height);
    int rc = image_reserve(dst, g->out_width, g->out_height);
    if (rc)
        return pm_error_set(err, rc, "resize: cannot allocate %dx%d", g->out_width, g->out_height);

    int cw = g->copy_width, ch = g->copy_height;
    size_t nwx = taps_capacity(src->width, g->scaled_width, cw);
    size_t nwy = taps_capacity(src->height, g->scaled_height, ch);
    char *bx = scratch_get(&ctx->rs_tabx, cw * sizeof(struct tap) + nwx * sizeof(float));
    char *by = scratch_get(&ctx->rs_taby, ch * sizeof(struct tap) + nwy * sizeof(float));
    if (!bx || !by)
        return pm_error_set(err, PM_ERR_NOMEM, "resize: out of memory for tap tables");
    struct tap *tx = (struct tap *)bx, *ty = (struct tap *)by;
    float *wx = (float *)(bx + cw * sizeof(struct tap));
    float *wy = (float *)(by + ch * sizeof(struct tap));
    taps_build(src->width, g->scaled_width, g->crop_x, cw, tx, wx);
    int vec_end = hpass_vec_end(tx, cw, src->width);
    int ring = taps_build(src->height, g->scaled_height, g->crop_y, ch, ty, wy);

    // ring buffer of horizontally filtered source rows: row r lives in slot r % ring
    size_t rowf = (size_t)cw * 3;
    float *rows = scratch_get(&ctx->rs_tmp, (size_t)(ring + 1) * rowf * sizeof(float));
    if (!rows)
        return pm_error_set(err, PM_ERR_NOMEM, "resize: out of memory for row buffer");
    float *acc = rows + (size_t)ring * rowf;

    // white background where the output is larger than the copied part (border mode)
    if (cw != g->out_width || ch != g->out_height)
        memset(dst->pixels, 255, (size_t)g->out_width * g->out_height * 3);

    size_t sstride = (size_t)src->width * 3, dstride = (size_t)g->out_width * 3;
    int next = ty[0].start; // first source row not yet filtered
    for (int y = 0; y < ch; y++) {
        const struct tap *t = &ty[y];
        if (next < t->start)
            next = t->start;
        for (; next < t->start + t->n; next++)
            hpass_row(src->pixels + (size_t)next * sstride, tx, wx, cw, vec_end,
                      rows + (size_t)(next % ring) * rowf);
        uint8_t *out = dst->pixels + (size_t)(g->pad_y + y) * dstride + (size_t)g->pad_x * 3;
        const float *w = wy + t->off;
        if (t->n == 1 && w[0] == 1.0f) {
            clamp_row(rows + (size_t)(t->start % ring) * rowf, rowf, out);
            continue;
        }
        vpass_row(rows, ring, rowf, t, w, acc, out);
    }
    return PM_OK;
}
