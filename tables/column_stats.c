#include "column_stats.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define XXH_INLINE_ALL
#include <xxhash.h>

const double column_stats_quantile_levels[COLUMN_STATS_NQUANTILES] = {0.01, 0.05, 0.25, 0.5,
                                                                      0.75, 0.95, 0.99};
const char *const column_stats_quantile_names[COLUMN_STATS_NQUANTILES] = {
    "p1", "p5", "p25", "p50", "p75", "p95", "p99"};

// Smallest allowed max_buckets: at m = 0 there are at most 2 * 2048 keys, so coarsening
// never has to go below m = 0.
#define MIN_MAX_BUCKETS 8192

/* ---- exact sum: a fixed-point superaccumulator ------------------------------------------ */

// Value = sum(limb[i] * 2^(32 i)) * 2^-1074. A double's 53-bit significand lands at bit
// offset max(e,1) - 1 (e = biased exponent) and spans at most 3 limbs. Each add changes a
// limb by less than 2^32, so 2^30 adds fit an int64 before carries must be propagated.
#define XSUM_LIMBS 70
#define XSUM_ADDS_MAX (1u << 30)

struct xsum {
    int64_t limb[XSUM_LIMBS];
    uint32_t adds;
};

static void xsum_normalize(struct xsum *s)
{
    for (int i = 0; i < XSUM_LIMBS - 1; i++) {
        int64_t c = s->limb[i] >> 32; // floor division by 2^32 (arithmetic shift)
        s->limb[i] -= c * 4294967296LL;
        s->limb[i + 1] += c;
    }
    s->adds = 0;
}

// Add sign * mag * 2^(shift - 1074), mag < 2^64 (only < 2^53 for doubles).
static inline void xsum_add_mag(struct xsum *s, uint64_t mag, unsigned shift, int neg)
{
    unsigned idx = shift >> 5, b = shift & 31;
    unsigned __int128 t = (unsigned __int128)mag << b;
    int64_t l0 = (int64_t)(uint32_t)t, l1 = (int64_t)(uint32_t)(t >> 32);
    int64_t l2 = (int64_t)(uint64_t)(t >> 64);
    if (neg) {
        s->limb[idx] -= l0;
        s->limb[idx + 1] -= l1;
        s->limb[idx + 2] -= l2;
    } else {
        s->limb[idx] += l0;
        s->limb[idx + 1] += l1;
        s->limb[idx + 2] += l2;
    }
    if (++s->adds >= XSUM_ADDS_MAX)
        xsum_normalize(s);
}

// v must be finite.
static inline void xsum_add_double(struct xsum *s, double v)
{
    uint64_t u;
    memcpy(&u, &v, sizeof u);
    unsigned e = (unsigned)(u >> 52) & 0x7ff;
    uint64_t m = u & ((1ULL << 52) - 1);
    if (e)
        m |= 1ULL << 52;
    else
        e = 1;
    if (m)
        xsum_add_mag(s, m, e - 1, (int)(u >> 63));
}

static inline void xsum_add_int(struct xsum *s, int64_t v)
{
    uint64_t mag = v < 0 ? 0 - (uint64_t)v : (uint64_t)v;
    if (mag)
        xsum_add_mag(s, mag, 1074, v < 0);
}

static void xsum_merge(struct xsum *dst, const struct xsum *src)
{
    struct xsum a = *src;
    xsum_normalize(&a);
    xsum_normalize(dst);
    for (int i = 0; i < XSUM_LIMBS; i++)
        dst->limb[i] += a.limb[i];
    xsum_normalize(dst);
}

// The exact sum rounded to double (round to nearest via a sticky bit below 96 bits).
static double xsum_value(const struct xsum *src)
{
    struct xsum s = *src;
    xsum_normalize(&s);
    int neg = s.limb[XSUM_LIMBS - 1] < 0;
    if (neg) {
        for (int i = 0; i < XSUM_LIMBS; i++)
            s.limb[i] = -s.limb[i];
        xsum_normalize(&s);
    }
    int k = XSUM_LIMBS - 1;
    while (k >= 0 && s.limb[k] == 0)
        k--;
    if (k < 0)
        return 0.0;
    unsigned __int128 hi = 0;
    for (int i = k; i >= k - 2; i--)
        hi = (hi << 32) | (uint32_t)(i >= 0 ? s.limb[i] : 0);
    int sticky = 0;
    for (int i = k - 3; i >= 0; i--)
        sticky |= s.limb[i] != 0;
    hi |= (unsigned)sticky;
    double d = ldexp((double)hi, 32 * (k - 2) - 1074);
    return neg ? -d : d;
}

/* ---- quantile histogram ----------------------------------------------------------------- */

struct hist_bucket {
    uint64_t key;
    uint64_t count; // 0: empty slot
    double min, max;
};

struct hist {
    struct hist_bucket *slots;
    size_t cap;     // power of two
    unsigned lgcap; // log2(cap)
    size_t used;
    size_t max_used; // options.max_buckets
    size_t cap_max;  // 2 * next_pow2(max_used)
    int bits;        // current m
};

static inline uint64_t double_image(double v)
{
    uint64_t u;
    memcpy(&u, &v, sizeof u);
    return (u >> 63) ? ~u : (u | (1ULL << 63));
}

static inline size_t hist_slot(const struct hist *h, uint64_t key)
{
    return (size_t)((key * 0x9E3779B97F4A7C15ULL) >> (64 - h->lgcap));
}

static int hist_alloc(struct hist *h, size_t cap)
{
    struct hist_bucket *s = calloc(cap, sizeof *s);
    if (!s)
        return PM_ERR_NOMEM;
    free(h->slots);
    h->slots = s;
    h->cap = cap;
    h->lgcap = 0;
    while (((size_t)1 << h->lgcap) < cap)
        h->lgcap++;
    h->used = 0;
    return PM_OK;
}

// Insert without any resizing (caller guarantees room).
static void hist_put(struct hist *h, uint64_t key, uint64_t count, double mn, double mx)
{
    size_t mask = h->cap - 1;
    for (size_t i = hist_slot(h, key);; i = (i + 1) & mask) {
        struct hist_bucket *b = &h->slots[i];
        if (!b->count) {
            b->key = key;
            b->count = count;
            b->min = mn;
            b->max = mx;
            h->used++;
            return;
        }
        if (b->key == key) {
            b->count += count;
            if (mn < b->min)
                b->min = mn;
            if (mx > b->max)
                b->max = mx;
            return;
        }
    }
}

// Rebuild with capacity `cap`, dropping `drop` more bits of resolution.
static int hist_rebuild(struct hist *h, size_t cap, int drop)
{
    struct hist_bucket *old = h->slots;
    size_t oldcap = h->cap;
    h->slots = NULL;
    if (hist_alloc(h, cap)) {
        h->slots = old;
        h->cap = oldcap;
        h->lgcap = 0;
        while (((size_t)1 << h->lgcap) < oldcap)
            h->lgcap++;
        return PM_ERR_NOMEM;
    }
    h->bits -= drop;
    for (size_t i = 0; i < oldcap; i++)
        if (old[i].count)
            hist_put(h, old[i].key >> drop, old[i].count, old[i].min, old[i].max);
    free(old);
    return PM_OK;
}

// Restore the invariants after an insertion: at most max_used buckets, load <= 1/2.
static int hist_fix(struct hist *h)
{
    while (h->used > h->max_used) {
        int rc = hist_rebuild(h, h->cap, 1);
        if (rc)
            return rc;
    }
    if (h->used * 2 > h->cap && h->cap < h->cap_max)
        return hist_rebuild(h, h->cap * 2, 0);
    return PM_OK;
}

static int hist_init(struct hist *h, unsigned bits, size_t max_used)
{
    memset(h, 0, sizeof *h);
    h->bits = (int)bits;
    h->max_used = max_used;
    size_t p = 1;
    while (p < max_used)
        p *= 2;
    h->cap_max = 2 * p;
    return hist_alloc(h, 1024);
}

static inline int hist_add(struct hist *h, double v)
{
    uint64_t key = double_image(v) >> (52 - h->bits);
    size_t mask = h->cap - 1;
    for (size_t i = hist_slot(h, key);; i = (i + 1) & mask) {
        struct hist_bucket *b = &h->slots[i];
        if (b->key == key && b->count) {
            b->count++;
            if (v < b->min)
                b->min = v;
            if (v > b->max)
                b->max = v;
            return PM_OK;
        }
        if (!b->count) {
            b->key = key;
            b->count = 1;
            b->min = b->max = v;
            h->used++;
            return h->used * 2 > h->cap ? hist_fix(h) : PM_OK;
        }
    }
}

// Add values v[0..n) (no NaN, -0.0 canonicalised), prefetching the slots a few values
// ahead: a large table is mostly cache misses, and this overlaps them.
#define HIST_PREFETCH 12
static int hist_add_many(struct hist *h, const double *v, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (i + HIST_PREFETCH < n) {
            uint64_t k = double_image(v[i + HIST_PREFETCH]) >> (52 - h->bits);
            __builtin_prefetch(&h->slots[hist_slot(h, k)]);
        }
        int rc = hist_add(h, v[i]);
        if (rc)
            return rc;
    }
    return PM_OK;
}

// Insert a bucket of resolution `bits` (>= h->bits).
static int hist_add_bucket(struct hist *h, uint64_t key, int bits, uint64_t count, double mn,
                           double mx)
{
    hist_put(h, key >> (bits - h->bits), count, mn, mx);
    return hist_fix(h);
}

static int hist_merge(struct hist *dst, const struct hist *src)
{
    if (src->bits < dst->bits) {
        int rc = hist_rebuild(dst, dst->cap, dst->bits - src->bits);
        if (rc)
            return rc;
    }
    for (size_t i = 0; i < src->cap; i++) {
        const struct hist_bucket *b = &src->slots[i];
        if (!b->count)
            continue;
        int rc = hist_add_bucket(dst, b->key, src->bits, b->count, b->min, b->max);
        if (rc)
            return rc;
    }
    return PM_OK;
}

static int bucket_cmp(const void *a, const void *b)
{
    uint64_t x = ((const struct hist_bucket *)a)->key, y = ((const struct hist_bucket *)b)->key;
    return x < y ? -1 : x > y;
}

// The used buckets in key order (= value order); caller frees.
static struct hist_bucket *hist_sorted(const struct hist *h)
{
    struct hist_bucket *v = malloc((h->used ? h->used : 1) * sizeof *v);
    if (!v)
        return NULL;
    size_t n = 0;
    for (size_t i = 0; i < h->cap; i++)
        if (h->slots[i].count)
            v[n++] = h->slots[i];
    qsort(v, n, sizeof *v, bucket_cmp);
    return v;
}

/* ---- distinct string values ------------------------------------------------------------- */

struct distinct_entry {
    uint64_t hash;
    uint64_t count; // 0: empty slot
    uint64_t off;
    uint64_t len;
};

struct distinct {
    struct distinct_entry *slots; // NULL once over the limits
    size_t cap, used;
    struct bytebuf bytes;
    bool overflow;
    size_t max_used, max_bytes;
};

static int distinct_init(struct distinct *d, size_t max_used, size_t max_bytes)
{
    memset(d, 0, sizeof *d);
    bytebuf_init(&d->bytes, 0);
    d->max_used = max_used;
    d->max_bytes = max_bytes;
    d->cap = 16;
    while (d->cap < 2 * (max_used + 1))
        d->cap *= 2;
    d->slots = calloc(d->cap, sizeof *d->slots);
    return d->slots ? PM_OK : PM_ERR_NOMEM;
}

static void distinct_release(struct distinct *d)
{
    free(d->slots);
    d->slots = NULL;
    bytebuf_release(&d->bytes);
}

static void distinct_overflow(struct distinct *d)
{
    distinct_release(d);
    d->overflow = true;
    d->used = 0;
}

static int distinct_add(struct distinct *d, const char *s, size_t n, uint64_t count)
{
    if (d->overflow)
        return PM_OK;
    uint64_t h = XXH3_64bits(s, n);
    size_t mask = d->cap - 1;
    for (size_t i = (size_t)h & mask;; i = (i + 1) & mask) {
        struct distinct_entry *e = &d->slots[i];
        if (!e->count) {
            if (d->used + 1 > d->max_used || d->bytes.len + n > d->max_bytes) {
                distinct_overflow(d);
                return PM_OK;
            }
            int rc = bytebuf_append(&d->bytes, s, n);
            if (rc)
                return rc;
            e->hash = h;
            e->count = count;
            e->off = d->bytes.len - n;
            e->len = n;
            d->used++;
            return PM_OK;
        }
        if (e->hash == h && e->len == n && !memcmp(d->bytes.data + e->off, s, n)) {
            e->count += count;
            return PM_OK;
        }
    }
}

static int value_bytes_cmp(const char *a, size_t na, const char *b, size_t nb)
{
    int c = memcmp(a, b, na < nb ? na : nb);
    if (c)
        return c;
    return na < nb ? -1 : na > nb;
}

static int top_cmp(const void *pa, const void *pb)
{
    const struct column_stats_value *a = pa, *b = pb;
    if (a->count != b->count)
        return a->count > b->count ? -1 : 1;
    return value_bytes_cmp(a->data, a->len, b->data, b->len);
}

static int value_cmp(const void *pa, const void *pb)
{
    const struct column_stats_value *a = pa, *b = pb;
    return value_bytes_cmp(a->data, a->len, b->data, b->len);
}

// All distinct values (unordered); caller frees.
static struct column_stats_value *distinct_values(const struct distinct *d)
{
    struct column_stats_value *v = malloc((d->used ? d->used : 1) * sizeof *v);
    if (!v)
        return NULL;
    size_t n = 0;
    for (size_t i = 0; d->slots && i < d->cap; i++) {
        const struct distinct_entry *e = &d->slots[i];
        if (e->count)
            v[n++] = (struct column_stats_value){d->bytes.data + e->off, e->len, e->count};
    }
    return v;
}

/* ---- the accumulator -------------------------------------------------------------------- */

struct column_stats {
    char *name;
    enum column_type type;
    struct column_stats_options opt;
    uint64_t rows, nulls, nans, count;
    // numeric
    bool has_int, has_real;
    int64_t imin, imax;
    double rmin, rmax;
    uint64_t pos_inf, neg_inf;
    struct xsum sum;
    struct hist hist;
    // string
    uint64_t len_min, len_max, len_sum;
    struct distinct distinct;
    // bool
    uint64_t trues, falses;
    // results of the last summarize
    struct column_stats_value *top;
};

static bool is_numeric(enum column_type t)
{
    return column_type_is_numeric(t);
}

int column_stats_create(struct column_stats **out, const char *name, enum column_type type,
                        const struct column_stats_options *opt)
{
    *out = NULL;
    struct column_stats_options o = COLUMN_STATS_OPTIONS_DEFAULT;
    if (opt)
        o = *opt;
    if (!o.max_buckets)
        o.max_buckets = COLUMN_STATS_MAX_BUCKETS;
    if (!o.max_distinct)
        o.max_distinct = COLUMN_STATS_MAX_DISTINCT;
    if (!o.max_distinct_bytes)
        o.max_distinct_bytes = COLUMN_STATS_MAX_DISTINCT_BYTES;
    if (o.mantissa_bits > 52 || o.max_buckets < MIN_MAX_BUCKETS ||
        o.max_buckets > ((size_t)1 << 28) || o.max_distinct > ((size_t)1 << 24))
        return PM_ERR_USAGE;
    struct column_stats *cs = calloc(1, sizeof *cs);
    if (!cs)
        return PM_ERR_NOMEM;
    cs->name = strdup(name ? name : "");
    cs->type = type;
    cs->opt = o;
    cs->rmin = INFINITY;
    cs->rmax = -INFINITY;
    cs->imin = INT64_MAX;
    cs->imax = INT64_MIN;
    cs->len_min = UINT64_MAX;
    int rc = cs->name ? PM_OK : PM_ERR_NOMEM;
    if (!rc && is_numeric(type))
        rc = hist_init(&cs->hist, o.mantissa_bits, o.max_buckets);
    if (!rc && type == COLUMN_STRING)
        rc = distinct_init(&cs->distinct, o.max_distinct, o.max_distinct_bytes);
    if (rc) {
        column_stats_free(cs);
        return rc;
    }
    *out = cs;
    return PM_OK;
}

void column_stats_free(struct column_stats *cs)
{
    if (!cs)
        return;
    free(cs->name);
    free(cs->hist.slots);
    distinct_release(&cs->distinct);
    free(cs->top);
    free(cs);
}

const char *column_stats_name(const struct column_stats *cs)
{
    return cs->name;
}

enum column_type column_stats_type(const struct column_stats *cs)
{
    return cs->type;
}

bool column_stats_unify_types(enum column_type a, enum column_type b, enum column_type *out)
{
    if (a == b) {
        *out = a;
        return true;
    }
    if (!is_numeric(a) || !is_numeric(b))
        return false;
    bool ia = a == COLUMN_INT32 || a == COLUMN_INT64, ib = b == COLUMN_INT32 || b == COLUMN_INT64;
    *out = ia && ib ? COLUMN_INT64 : COLUMN_DOUBLE;
    return true;
}

// Characters of a UTF-8 byte string: bytes that are not continuation bytes (10xxxxxx).
static inline uint64_t utf8_chars(const char *s, size_t n)
{
    uint64_t cont = 0;
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t x;
        memcpy(&x, s + i, 8);
        // bit 7 set and bit 6 clear in each byte
        uint64_t t = (x & ~(x << 1) & 0x8080808080808080ULL) >> 7;
        cont += (t * 0x0101010101010101ULL) >> 56; // sum of the 8 byte flags
    }
    for (; i < n; i++)
        cont += ((unsigned char)s[i] & 0xC0) == 0x80;
    return n - cont;
}

#define STAGE_VALUES 512

// Values collected for the histogram, added STAGE_VALUES at a time.
struct stage {
    double v[STAGE_VALUES];
    size_t n;
};

static inline int stage_push(struct hist *h, struct stage *st, double x)
{
    st->v[st->n++] = x;
    if (st->n < STAGE_VALUES)
        return PM_OK;
    st->n = 0;
    return hist_add_many(h, st->v, STAGE_VALUES);
}

static int stage_flush(struct hist *h, struct stage *st)
{
    return st->n ? hist_add_many(h, st->v, st->n) : PM_OK;
}

static int add_ints(struct column_stats *cs, const struct column *col)
{
    const uint8_t *valid = col->valid;
    const int64_t *v = col->ints;
    int64_t mn = cs->imin, mx = cs->imax;
    uint64_t cnt = 0;
    struct stage st;
    st.n = 0;
    for (size_t i = 0; i < col->len; i++) {
        if (valid && !valid[i])
            continue;
        int64_t x = v[i];
        cnt++;
        if (x < mn)
            mn = x;
        if (x > mx)
            mx = x;
        xsum_add_int(&cs->sum, x);
        int rc = stage_push(&cs->hist, &st, (double)x);
        if (rc)
            return rc;
    }
    int rc = stage_flush(&cs->hist, &st);
    if (rc)
        return rc;
    if (cnt)
        cs->has_int = true;
    cs->imin = mn;
    cs->imax = mx;
    cs->count += cnt;
    return PM_OK;
}

static int add_reals(struct column_stats *cs, const struct column *col)
{
    const uint8_t *valid = col->valid;
    const double *v = col->reals;
    double mn = cs->rmin, mx = cs->rmax;
    uint64_t cnt = 0, nans = 0;
    struct stage st;
    st.n = 0;
    for (size_t i = 0; i < col->len; i++) {
        if (valid && !valid[i])
            continue;
        double x = v[i];
        if (x != x) {
            nans++;
            continue;
        }
        x += 0.0; // -0.0 -> +0.0
        cnt++;
        if (x < mn)
            mn = x;
        if (x > mx)
            mx = x;
        if (isinf(x)) {
            if (x > 0)
                cs->pos_inf++;
            else
                cs->neg_inf++;
        } else {
            xsum_add_double(&cs->sum, x);
        }
        int rc = stage_push(&cs->hist, &st, x);
        if (rc)
            return rc;
    }
    int rc = stage_flush(&cs->hist, &st);
    if (rc)
        return rc;
    if (cnt)
        cs->has_real = true;
    cs->rmin = mn;
    cs->rmax = mx;
    cs->count += cnt;
    cs->nans += nans;
    return PM_OK;
}

static int add_strings(struct column_stats *cs, const struct column *col)
{
    const uint8_t *valid = col->valid;
    uint64_t mn = cs->len_min, mx = cs->len_max, sum = 0, cnt = 0;
    for (size_t i = 0; i < col->len; i++) {
        if (valid && !valid[i])
            continue;
        size_t n;
        const char *s = column_string(col, i, &n);
        uint64_t chars = utf8_chars(s, n);
        cnt++;
        sum += chars;
        if (chars < mn)
            mn = chars;
        if (chars > mx)
            mx = chars;
        if (!cs->distinct.overflow) {
            int rc = distinct_add(&cs->distinct, s, n, 1);
            if (rc)
                return rc;
        }
    }
    cs->len_min = mn;
    cs->len_max = mx;
    cs->len_sum += sum;
    cs->count += cnt;
    return PM_OK;
}

int column_stats_add_column(struct column_stats *cs, const struct column *col)
{
    bool ok = col->type == cs->type || (is_numeric(col->type) && is_numeric(cs->type));
    if (!ok)
        return PM_ERR_USAGE;
    size_t nulls = 0;
    if (col->valid)
        for (size_t i = 0; i < col->len; i++)
            nulls += !col->valid[i];
    cs->rows += col->len;
    cs->nulls += nulls;
    switch (col->type) {
    case COLUMN_BOOL:
        for (size_t i = 0; i < col->len; i++) {
            if (col->valid && !col->valid[i])
                continue;
            if (col->ints[i])
                cs->trues++;
            else
                cs->falses++;
        }
        cs->count += col->len - nulls;
        return PM_OK;
    case COLUMN_INT32:
    case COLUMN_INT64:
        return add_ints(cs, col);
    case COLUMN_FLOAT:
    case COLUMN_DOUBLE:
        return add_reals(cs, col);
    case COLUMN_STRING:
        return add_strings(cs, col);
    }
    return PM_ERR_INTERNAL;
}

static bool same_options(const struct column_stats_options *a, const struct column_stats_options *b)
{
    return a->mantissa_bits == b->mantissa_bits && a->max_buckets == b->max_buckets &&
           a->max_distinct == b->max_distinct && a->max_distinct_bytes == b->max_distinct_bytes;
}

int column_stats_merge(struct column_stats *dst, const struct column_stats *src)
{
    if (dst->type != src->type || !same_options(&dst->opt, &src->opt))
        return PM_ERR_USAGE;
    dst->rows += src->rows;
    dst->nulls += src->nulls;
    dst->nans += src->nans;
    dst->count += src->count;
    dst->trues += src->trues;
    dst->falses += src->falses;
    if (src->has_int) {
        dst->has_int = true;
        if (src->imin < dst->imin)
            dst->imin = src->imin;
        if (src->imax > dst->imax)
            dst->imax = src->imax;
    }
    if (src->has_real) {
        dst->has_real = true;
        if (src->rmin < dst->rmin)
            dst->rmin = src->rmin;
        if (src->rmax > dst->rmax)
            dst->rmax = src->rmax;
    }
    dst->pos_inf += src->pos_inf;
    dst->neg_inf += src->neg_inf;
    xsum_merge(&dst->sum, &src->sum);
    if (src->len_min < dst->len_min)
        dst->len_min = src->len_min;
    if (src->len_max > dst->len_max)
        dst->len_max = src->len_max;
    dst->len_sum += src->len_sum;
    if (is_numeric(dst->type)) {
        int rc = hist_merge(&dst->hist, &src->hist);
        if (rc)
            return rc;
    }
    if (dst->type == COLUMN_STRING && !dst->distinct.overflow) {
        if (src->distinct.overflow) {
            distinct_overflow(&dst->distinct);
        } else {
            const struct distinct *d = &src->distinct;
            for (size_t i = 0; i < d->cap && !dst->distinct.overflow; i++) {
                const struct distinct_entry *e = &d->slots[i];
                if (!e->count)
                    continue;
                int rc = distinct_add(&dst->distinct, d->bytes.data + e->off, e->len, e->count);
                if (rc)
                    return rc;
            }
        }
    }
    return PM_OK;
}

/* ---- serialisation ---------------------------------------------------------------------- */

#define CS_MAGIC "PMCS"
#define CS_VERSION 1

static int put_u64(struct bytebuf *b, uint64_t v)
{
    unsigned char p[8];
    for (int i = 0; i < 8; i++)
        p[i] = (unsigned char)(v >> (8 * i));
    return bytebuf_append(b, p, 8);
}

static int put_f64(struct bytebuf *b, double v)
{
    uint64_t u;
    memcpy(&u, &v, sizeof u);
    return put_u64(b, u);
}

int column_stats_serialize(const struct column_stats *cs, struct bytebuf *out)
{
    int rc = bytebuf_append(out, CS_MAGIC, 4);
    size_t namelen = strlen(cs->name);
    uint64_t head[] = {CS_VERSION,
                       (uint64_t)cs->type,
                       cs->opt.mantissa_bits,
                       cs->opt.max_buckets,
                       cs->opt.max_distinct,
                       cs->opt.max_distinct_bytes,
                       namelen};
    for (size_t i = 0; !rc && i < sizeof head / sizeof head[0]; i++)
        rc = put_u64(out, head[i]);
    if (!rc)
        rc = bytebuf_append(out, cs->name, namelen);
    uint64_t counts[] = {cs->rows,    cs->nulls,    cs->nans,           cs->count,
                         cs->has_int, cs->has_real, (uint64_t)cs->imin, (uint64_t)cs->imax,
                         cs->pos_inf, cs->neg_inf,  cs->len_min,        cs->len_max,
                         cs->len_sum, cs->trues,    cs->falses};
    for (size_t i = 0; !rc && i < sizeof counts / sizeof counts[0]; i++)
        rc = put_u64(out, counts[i]);
    if (!rc)
        rc = put_f64(out, cs->rmin);
    if (!rc)
        rc = put_f64(out, cs->rmax);
    struct xsum s = cs->sum;
    xsum_normalize(&s);
    for (int i = 0; !rc && i < XSUM_LIMBS; i++)
        rc = put_u64(out, (uint64_t)s.limb[i]);
    if (rc)
        return rc;
    // histogram, buckets in key order
    if (is_numeric(cs->type)) {
        struct hist_bucket *v = hist_sorted(&cs->hist);
        if (!v)
            return PM_ERR_NOMEM;
        rc = put_u64(out, (uint64_t)cs->hist.bits);
        if (!rc)
            rc = put_u64(out, cs->hist.used);
        for (size_t i = 0; !rc && i < cs->hist.used; i++) {
            rc = put_u64(out, v[i].key);
            if (!rc)
                rc = put_u64(out, v[i].count);
            if (!rc)
                rc = put_f64(out, v[i].min);
            if (!rc)
                rc = put_f64(out, v[i].max);
        }
        free(v);
        if (rc)
            return rc;
    }
    // distinct values, in byte order
    if (cs->type == COLUMN_STRING) {
        const struct distinct *d = &cs->distinct;
        rc = put_u64(out, d->overflow);
        if (!rc)
            rc = put_u64(out, d->used);
        if (rc || d->overflow)
            return rc;
        struct column_stats_value *v = distinct_values(d);
        if (!v)
            return PM_ERR_NOMEM;
        qsort(v, d->used, sizeof *v, value_cmp);
        for (size_t i = 0; !rc && i < d->used; i++) {
            rc = put_u64(out, v[i].count);
            if (!rc)
                rc = put_u64(out, v[i].len);
            if (!rc)
                rc = bytebuf_append(out, v[i].data, v[i].len);
        }
        free(v);
    }
    return rc;
}

struct reader {
    const unsigned char *p;
    size_t n, pos;
    bool bad;
};

static uint64_t get_u64(struct reader *r)
{
    if (r->bad || r->n - r->pos < 8) {
        r->bad = true;
        return 0;
    }
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v |= (uint64_t)r->p[r->pos + i] << (8 * i);
    r->pos += 8;
    return v;
}

static double get_f64(struct reader *r)
{
    uint64_t u = get_u64(r);
    double d;
    memcpy(&d, &u, sizeof d);
    return d;
}

static const char *get_bytes(struct reader *r, uint64_t n)
{
    if (r->bad || r->n - r->pos < n) {
        r->bad = true;
        return NULL;
    }
    const char *s = (const char *)r->p + r->pos;
    r->pos += n;
    return s;
}

int column_stats_merge_serialized(struct column_stats *cs, const void *data, size_t size,
                                  size_t *used, struct pm_error *err)
{
    struct reader r = {data, size, 0, false};
    *used = 0;
    const char *magic = get_bytes(&r, 4);
    if (!magic || memcmp(magic, CS_MAGIC, 4))
        return pm_error_set(err, PM_ERR_FORMAT, "column statistics: bad magic");
    uint64_t version = get_u64(&r), type = get_u64(&r);
    struct column_stats_options o;
    o.mantissa_bits = (unsigned)get_u64(&r);
    o.max_buckets = get_u64(&r);
    o.max_distinct = get_u64(&r);
    o.max_distinct_bytes = get_u64(&r);
    uint64_t namelen = get_u64(&r);
    const char *name = get_bytes(&r, namelen);
    if (r.bad || version != CS_VERSION)
        return pm_error_set(err, PM_ERR_FORMAT, "column statistics: bad header");
    if (type != (uint64_t)cs->type || !same_options(&o, &cs->opt) || namelen != strlen(cs->name) ||
        memcmp(name, cs->name, namelen))
        return pm_error_set(err, PM_ERR_FORMAT,
                            "column statistics for '%s': name, type or options differ", cs->name);
    struct column_stats *t = NULL;
    int rc = column_stats_create(&t, cs->name, cs->type, &cs->opt);
    if (rc)
        return pm_error_set(err, rc, "column statistics for '%s': out of memory", cs->name);
    t->rows = get_u64(&r);
    t->nulls = get_u64(&r);
    t->nans = get_u64(&r);
    t->count = get_u64(&r);
    t->has_int = get_u64(&r) != 0;
    t->has_real = get_u64(&r) != 0;
    t->imin = (int64_t)get_u64(&r);
    t->imax = (int64_t)get_u64(&r);
    t->pos_inf = get_u64(&r);
    t->neg_inf = get_u64(&r);
    t->len_min = get_u64(&r);
    t->len_max = get_u64(&r);
    t->len_sum = get_u64(&r);
    t->trues = get_u64(&r);
    t->falses = get_u64(&r);
    t->rmin = get_f64(&r);
    t->rmax = get_f64(&r);
    for (int i = 0; i < XSUM_LIMBS; i++) {
        t->sum.limb[i] = (int64_t)get_u64(&r);
        // a normalised limb is in [0, 2^32), except the signed top one
        if (i < XSUM_LIMBS - 1 && (t->sum.limb[i] < 0 || t->sum.limb[i] >= (1LL << 32)))
            r.bad = true;
    }
    if (t->sum.limb[XSUM_LIMBS - 1] > (1LL << 32) || t->sum.limb[XSUM_LIMBS - 1] < -(1LL << 32))
        r.bad = true;
    if (!r.bad && is_numeric(cs->type)) {
        uint64_t bits = get_u64(&r), n = get_u64(&r), total = 0;
        if (bits > cs->opt.mantissa_bits || n > cs->opt.max_buckets)
            r.bad = true;
        if (!r.bad && (int)bits < t->hist.bits)
            rc = hist_rebuild(&t->hist, t->hist.cap, t->hist.bits - (int)bits);
        uint64_t prev = 0;
        for (uint64_t i = 0; !rc && !r.bad && i < n; i++) {
            uint64_t key = get_u64(&r), count = get_u64(&r);
            double mn = get_f64(&r), mx = get_f64(&r);
            if (r.bad || !count || (i && key <= prev) || (key >> (12 + bits)) || !(mn <= mx) ||
                count > UINT64_MAX - total) {
                r.bad = true;
                break;
            }
            prev = key;
            total += count;
            rc = hist_add_bucket(&t->hist, key, (int)bits, count, mn, mx);
        }
        if (!r.bad && total != t->count)
            r.bad = true;
    }
    if (!rc && !r.bad && cs->type == COLUMN_STRING) {
        uint64_t overflow = get_u64(&r), n = get_u64(&r);
        if (overflow > 1 || n > cs->opt.max_distinct)
            r.bad = true;
        if (!r.bad && overflow)
            distinct_overflow(&t->distinct);
        for (uint64_t i = 0; !rc && !r.bad && !overflow && i < n; i++) {
            uint64_t count = get_u64(&r), len = get_u64(&r);
            const char *s = get_bytes(&r, len);
            if (r.bad || !count) {
                r.bad = true;
                break;
            }
            rc = distinct_add(&t->distinct, s, len, count);
        }
    }
    if (!rc && !r.bad)
        rc = column_stats_merge(cs, t);
    column_stats_free(t);
    if (r.bad)
        return pm_error_set(err, PM_ERR_FORMAT, "column statistics for '%s': malformed data",
                            cs->name);
    if (rc)
        return pm_error_set(err, rc, "column statistics for '%s': cannot merge", cs->name);
    *used = r.pos;
    return PM_OK;
}

/* ---- results ---------------------------------------------------------------------------- */

// Order statistic k (0-based) from buckets v[0..n) with cumulative counts cum (cum[i] =
// values in v[0..i]). Sets *exact.
static double order_stat(const struct hist_bucket *v, const uint64_t *cum, size_t n, uint64_t k,
                         bool *exact)
{
    size_t lo = 0, hi = n - 1;
    while (lo < hi) { // first bucket with cum > k
        size_t mid = lo + (hi - lo) / 2;
        if (cum[mid] > k)
            hi = mid;
        else
            lo = mid + 1;
    }
    const struct hist_bucket *b = &v[lo];
    uint64_t first = cum[lo] - b->count;
    if (k == first || b->min == b->max) {
        *exact = true;
        return b->min;
    }
    if (k == cum[lo] - 1) {
        *exact = true;
        return b->max;
    }
    *exact = false;
    return b->min * 0.5 + b->max * 0.5;
}

// numpy's _lerp: a + (b - a) * t, or b - (b - a) * (1 - t) when t >= 0.5.
static double lerp(double a, double b, double t)
{
    double d = b - a;
    return t >= 0.5 ? b - d * (1 - t) : a + d * t;
}

static int summarize_quantiles(struct column_stats *cs, struct column_stats_summary *s)
{
    const struct hist *h = &cs->hist;
    s->quantile_bits = (unsigned)h->bits;
    if (!h->used)
        return PM_OK;
    struct hist_bucket *v = hist_sorted(h);
    uint64_t *cum = malloc(h->used * sizeof *cum);
    if (!v || !cum) {
        free(v);
        free(cum);
        return PM_ERR_NOMEM;
    }
    uint64_t c = 0;
    for (size_t i = 0; i < h->used; i++)
        cum[i] = c += v[i].count;
    bool all_exact = true;
    for (int q = 0; q < COLUMN_STATS_NQUANTILES; q++) {
        double pos = (double)(c - 1) * column_stats_quantile_levels[q];
        double fl = floor(pos);
        uint64_t k = (uint64_t)fl;
        uint64_t k1 = k + 1 < c ? k + 1 : c - 1;
        bool e0, e1;
        double a = order_stat(v, cum, h->used, k, &e0);
        double b = order_stat(v, cum, h->used, k1, &e1);
        double t = pos - fl;
        s->quantiles[q] = t == 0.0 ? a : lerp(a, b, t);
        all_exact &= e0 && (e1 || t == 0.0);
    }
    s->quantile_rel_error = all_exact ? 0.0 : ldexp(1.0, -(h->bits + 1));
    free(v);
    free(cum);
    return PM_OK;
}

int column_stats_summarize(struct column_stats *cs, size_t ntop, struct column_stats_summary *out)
{
    memset(out, 0, sizeof *out);
    out->name = cs->name;
    out->type = cs->type;
    out->rows = cs->rows;
    out->nulls = cs->nulls;
    out->count = cs->count;
    if (is_numeric(cs->type)) {
        out->nans = cs->nans;
        if (cs->has_int) {
            out->int_min = cs->imin;
            out->int_max = cs->imax;
        }
        if (cs->count) {
            double mn = cs->rmin, mx = cs->rmax;
            if (cs->has_int) {
                if ((double)cs->imin < mn)
                    mn = (double)cs->imin;
                if ((double)cs->imax > mx)
                    mx = (double)cs->imax;
            }
            out->min = mn;
            out->max = mx;
            if (cs->pos_inf && cs->neg_inf)
                out->mean = NAN;
            else if (cs->pos_inf)
                out->mean = INFINITY;
            else if (cs->neg_inf)
                out->mean = -INFINITY;
            else
                out->mean = xsum_value(&cs->sum) / (double)cs->count;
        }
        return summarize_quantiles(cs, out);
    }
    if (cs->type == COLUMN_BOOL) {
        out->trues = cs->trues;
        out->falses = cs->falses;
        return PM_OK;
    }
    if (cs->type != COLUMN_STRING)
        return PM_OK;
    if (cs->count) {
        out->min_length = cs->len_min;
        out->max_length = cs->len_max;
        out->mean_length = (double)cs->len_sum / (double)cs->count;
    }
    const struct distinct *d = &cs->distinct;
    if (d->overflow)
        return PM_OK;
    out->distinct_known = true;
    out->distinct = d->used;
    free(cs->top);
    cs->top = distinct_values(d);
    if (!cs->top)
        return PM_ERR_NOMEM;
    qsort(cs->top, d->used, sizeof *cs->top, top_cmp);
    out->ntop = ntop < d->used ? ntop : d->used;
    out->top = cs->top;
    return PM_OK;
}
