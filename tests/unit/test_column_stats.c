/* Unit tests for column_stats: exact results on small data, the quantile bound on
 * continuous data, and bit-identical results for any split / merge order / serialisation. */
#include "check.h"
#include "column.h"
#include "column_stats.h"
#include "pm_error.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static uint64_t rng_state = 88172645463325252ULL;

static uint64_t rng(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return rng_state;
}

static double rng_unit(void)
{
    return (double)(rng() >> 11) * 0x1.0p-53;
}

static int dcmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

// numpy 'linear' quantile of sorted x[0..n).
static double ref_quantile(const double *x, size_t n, double q)
{
    double pos = (double)(n - 1) * q, fl = floor(pos), t = pos - fl;
    size_t k = (size_t)fl, k1 = k + 1 < n ? k + 1 : n - 1;
    double a = x[k], b = x[k1], d = b - a;
    if (t == 0.0)
        return a;
    return t >= 0.5 ? b - d * (1 - t) : a + d * t;
}

// Feed values[lo..hi) (NAN = null) into cs as one column of `type`.
static void feed_reals(struct column_stats *cs, enum column_type type, const double *v, size_t lo,
                       size_t hi)
{
    struct column c;
    column_init(&c, "x", type);
    for (size_t i = lo; i < hi; i++) {
        if (isnan(v[i]))
            column_append_null(&c);
        else if (type == COLUMN_INT64 || type == COLUMN_INT32)
            column_append_int(&c, (int64_t)v[i]);
        else
            column_append_real(&c, v[i]);
    }
    CHECK(column_stats_add_column(cs, &c) == PM_OK);
    column_release(&c);
}

static bool same_summary(const struct column_stats_summary *a, const struct column_stats_summary *b)
{
    bool ok = a->rows == b->rows && a->nulls == b->nulls && a->count == b->count &&
              a->nans == b->nans && a->int_min == b->int_min && a->int_max == b->int_max &&
              !memcmp(&a->min, &b->min, sizeof a->min) &&
              !memcmp(&a->max, &b->max, sizeof a->max) &&
              !memcmp(&a->mean, &b->mean, sizeof a->mean) &&
              !memcmp(a->quantiles, b->quantiles, sizeof a->quantiles) &&
              a->quantile_bits == b->quantile_bits &&
              a->quantile_rel_error == b->quantile_rel_error && a->min_length == b->min_length &&
              a->max_length == b->max_length && a->mean_length == b->mean_length &&
              a->distinct_known == b->distinct_known && a->distinct == b->distinct &&
              a->ntop == b->ntop && a->trues == b->trues && a->falses == b->falses;
    for (size_t i = 0; ok && i < a->ntop; i++)
        ok = a->top[i].count == b->top[i].count && a->top[i].len == b->top[i].len &&
             !memcmp(a->top[i].data, b->top[i].data, a->top[i].len);
    return ok;
}

// Same data fed whole vs in `parts` pieces merged in reverse order through serialisation.
static void check_split_invariance(enum column_type type, const double *v, size_t n,
                                   const struct column_stats_options *opt, size_t parts)
{
    struct column_stats *whole, *merged, *piece;
    CHECK(column_stats_create(&whole, "x", type, opt) == PM_OK);
    CHECK(column_stats_create(&merged, "x", type, opt) == PM_OK);
    // whole: in batches of 1000
    for (size_t i = 0; i < n; i += 1000)
        feed_reals(whole, type, v, i, i + 1000 < n ? i + 1000 : n);
    struct bytebuf wire = BYTEBUF_INIT;
    for (size_t p = parts; p-- > 0;) {
        CHECK(column_stats_create(&piece, "x", type, opt) == PM_OK);
        // uneven pieces
        size_t lo = n * p * p / (parts * parts), hi = n * (p + 1) * (p + 1) / (parts * parts);
        if (hi > lo)
            feed_reals(piece, type, v, lo, hi);
        bytebuf_clear(&wire);
        CHECK(column_stats_serialize(piece, &wire) == PM_OK);
        size_t used = 0;
        struct pm_error err = PM_ERROR_INIT;
        CHECK(column_stats_merge_serialized(merged, wire.data, wire.len, &used, &err) == PM_OK);
        CHECK(used == wire.len);
        column_stats_free(piece);
    }
    struct column_stats_summary a, b;
    CHECK(column_stats_summarize(whole, 10, &a) == PM_OK);
    CHECK(column_stats_summarize(merged, 10, &b) == PM_OK);
    CHECK(same_summary(&a, &b));
    // canonical images
    struct bytebuf wa = BYTEBUF_INIT, wb = BYTEBUF_INIT;
    CHECK(column_stats_serialize(whole, &wa) == PM_OK);
    CHECK(column_stats_serialize(merged, &wb) == PM_OK);
    CHECK(wa.len == wb.len && !memcmp(wa.data, wb.data, wa.len));
    bytebuf_release(&wa);
    bytebuf_release(&wb);
    bytebuf_release(&wire);
    column_stats_free(whole);
    column_stats_free(merged);
}

static void test_ints_exact(void)
{
    size_t n = 20011;
    double *v = malloc(n * sizeof *v);
    double *sorted = malloc(n * sizeof *v);
    size_t m = 0, nulls = 0;
    double sum = 0;
    for (size_t i = 0; i < n; i++) {
        if (i % 97 == 3) {
            v[i] = NAN;
            nulls++;
            continue;
        }
        v[i] = (double)(int64_t)(200 + (rng() % 1300)) - (i % 5 == 0 ? 1000 : 0);
        sorted[m++] = v[i];
        sum += v[i];
    }
    qsort(sorted, m, sizeof *sorted, dcmp);
    struct column_stats *cs;
    CHECK(column_stats_create(&cs, "w", COLUMN_INT32, NULL) == PM_OK);
    feed_reals(cs, COLUMN_INT32, v, 0, n);
    struct column_stats_summary s;
    CHECK(column_stats_summarize(cs, 5, &s) == PM_OK);
    CHECK(s.rows == n && s.nulls == nulls && s.count == m);
    CHECK(s.int_min == (int64_t)sorted[0] && s.int_max == (int64_t)sorted[m - 1]);
    CHECK(s.mean == sum / (double)m); // sum of small ints is exact in double
    for (int q = 0; q < COLUMN_STATS_NQUANTILES; q++)
        CHECK(s.quantiles[q] == ref_quantile(sorted, m, column_stats_quantile_levels[q]));
    CHECK(s.quantile_rel_error == 0.0);
    CHECK(s.quantile_bits == COLUMN_STATS_MANTISSA_BITS);
    column_stats_free(cs);
    check_split_invariance(COLUMN_INT64, v, n, NULL, 3);
    free(v);
    free(sorted);
}

static void test_doubles_bound(void)
{
    size_t n = 300000;
    double *v = malloc(n * sizeof *v);
    double *sorted = malloc(n * sizeof *v);
    size_t m = 0;
    for (size_t i = 0; i < n; i++) {
        // wide range: several binades, both signs
        double x = (rng_unit() - 0.3) * pow(2.0, (double)(rng() % 12)) * 1.2345;
        v[i] = i % 31 == 0 ? NAN : x;
        if (!isnan(v[i]))
            sorted[m++] = x;
    }
    qsort(sorted, m, sizeof *sorted, dcmp);
    struct column_stats_options opt = {23, 8192, 0, 0}; // force coarsening
    struct column_stats *cs;
    CHECK(column_stats_create(&cs, "x", COLUMN_DOUBLE, &opt) == PM_OK);
    feed_reals(cs, COLUMN_DOUBLE, v, 0, n);
    struct column_stats_summary s;
    CHECK(column_stats_summarize(cs, 5, &s) == PM_OK);
    CHECK(s.count == m && s.min == sorted[0] && s.max == sorted[m - 1]);
    CHECK(s.quantile_bits < 23 && s.quantile_bits > 5);
    CHECK(s.quantile_rel_error == ldexp(1.0, -(int)s.quantile_bits - 1));
    for (int q = 0; q < COLUMN_STATS_NQUANTILES; q++) {
        double pos = (double)(m - 1) * column_stats_quantile_levels[q];
        size_t k = (size_t)floor(pos), k1 = k + 1 < m ? k + 1 : m - 1;
        double scale = fmax(fabs(sorted[k]), fabs(sorted[k1]));
        double ref = ref_quantile(sorted, m, column_stats_quantile_levels[q]);
        CHECK(fabs(s.quantiles[q] - ref) <= s.quantile_rel_error * scale * (1 + 1e-12) + 1e-300);
    }
    // mean: compare with a compensated sum
    long double acc = 0;
    for (size_t i = 0; i < m; i++)
        acc += sorted[i];
    CHECK(fabs(s.mean - (double)(acc / m)) <= 1e-12 * fabs(s.mean));
    column_stats_free(cs);
    check_split_invariance(COLUMN_DOUBLE, v, n, &opt, 2);
    check_split_invariance(COLUMN_DOUBLE, v, n, &opt, 7);
    check_split_invariance(COLUMN_FLOAT, v, n / 10, NULL, 4);
    free(v);
    free(sorted);
}

static void test_exact_sum(void)
{
    double v[] = {1e100, 1.0, -1e100, 0x1p-1074, -0x1p-1074, 3.0, NAN};
    struct column_stats *cs;
    CHECK(column_stats_create(&cs, "x", COLUMN_DOUBLE, NULL) == PM_OK);
    feed_reals(cs, COLUMN_DOUBLE, v, 0, 7);
    struct column_stats_summary s;
    CHECK(column_stats_summarize(cs, 0, &s) == PM_OK);
    CHECK(s.count == 6 && s.nulls == 1);
    CHECK(s.mean == 4.0 / 6.0);
    CHECK(s.min == -1e100 && s.max == 1e100);
    column_stats_free(cs);
    // negative total and large ints
    double w[] = {-9007199254740993.0, -1.5, 0.25};
    CHECK(column_stats_create(&cs, "x", COLUMN_DOUBLE, NULL) == PM_OK);
    feed_reals(cs, COLUMN_DOUBLE, w, 0, 3);
    CHECK(column_stats_summarize(cs, 0, &s) == PM_OK);
    CHECK(s.mean == (-9007199254740993.0 - 1.25) / 3);
    column_stats_free(cs);
}

static void add_strings(struct column_stats *cs, const char *const *s, size_t n)
{
    struct column c;
    column_init(&c, "s", COLUMN_STRING);
    for (size_t i = 0; i < n; i++) {
        if (s[i])
            column_append_string(&c, s[i], strlen(s[i]));
        else
            column_append_null(&c);
    }
    CHECK(column_stats_add_column(cs, &c) == PM_OK);
    column_release(&c);
}

static void test_strings(void)
{
    const char *v[] = {"en", "de", NULL, "en", "fr", "de", "é漢", "en", "d", "fr", ""};
    struct column_stats *cs;
    CHECK(column_stats_create(&cs, "s", COLUMN_STRING, NULL) == PM_OK);
    add_strings(cs, v, 11);
    struct column_stats_summary s;
    CHECK(column_stats_summarize(cs, 4, &s) == PM_OK);
    CHECK(s.rows == 11 && s.nulls == 1 && s.count == 10);
    CHECK(s.min_length == 0 && s.max_length == 2);
    CHECK(s.mean_length == 17.0 / 10); // 2*3 + 2*2 + 2*2 + 2 + 1 + 0 = 17 characters
    CHECK(s.distinct_known && s.distinct == 6 && s.ntop == 4);
    CHECK(s.top[0].count == 3 && s.top[0].len == 2 && !memcmp(s.top[0].data, "en", 2));
    CHECK(s.top[1].count == 2 && !memcmp(s.top[1].data, "de", 2)); // tie: bytes order
    CHECK(s.top[2].count == 2 && !memcmp(s.top[2].data, "fr", 2));
    CHECK(s.top[3].count == 1 && s.top[3].len == 0); // "" < "d" < "é漢"
    column_stats_free(cs);

    // high cardinality: over the limit in one part only -> over it after merging
    struct column_stats_options opt = {23, 0, 50, 0};
    struct column_stats *a, *b;
    CHECK(column_stats_create(&a, "s", COLUMN_STRING, &opt) == PM_OK);
    CHECK(column_stats_create(&b, "s", COLUMN_STRING, &opt) == PM_OK);
    char buf[64][8];
    const char *p[64];
    for (int i = 0; i < 64; i++) {
        snprintf(buf[i], sizeof buf[i], "v%02d", i);
        p[i] = buf[i];
    }
    add_strings(a, p, 40);
    add_strings(b, p + 30, 34);
    CHECK(column_stats_summarize(a, 3, &s) == PM_OK && s.distinct_known && s.distinct == 40);
    CHECK(column_stats_merge(a, b) == PM_OK);
    CHECK(column_stats_summarize(a, 3, &s) == PM_OK && !s.distinct_known && s.ntop == 0);
    CHECK(s.count == 74);
    column_stats_free(a);
    column_stats_free(b);
}

static void test_bool_and_types(void)
{
    struct column c;
    column_init(&c, "b", COLUMN_BOOL);
    column_append_int(&c, 1);
    column_append_int(&c, 0);
    column_append_null(&c);
    column_append_int(&c, 1);
    struct column_stats *cs;
    CHECK(column_stats_create(&cs, "b", COLUMN_BOOL, NULL) == PM_OK);
    CHECK(column_stats_add_column(cs, &c) == PM_OK);
    struct column_stats_summary s;
    CHECK(column_stats_summarize(cs, 0, &s) == PM_OK);
    CHECK(s.trues == 2 && s.falses == 1 && s.nulls == 1 && s.rows == 4);
    column_stats_free(cs);
    // a bool column cannot feed a numeric accumulator
    CHECK(column_stats_create(&cs, "b", COLUMN_DOUBLE, NULL) == PM_OK);
    CHECK(column_stats_add_column(cs, &c) == PM_ERR_USAGE);
    column_stats_free(cs);
    column_release(&c);
    enum column_type t;
    CHECK(column_stats_unify_types(COLUMN_INT32, COLUMN_INT64, &t) && t == COLUMN_INT64);
    CHECK(column_stats_unify_types(COLUMN_FLOAT, COLUMN_INT64, &t) && t == COLUMN_DOUBLE);
    CHECK(column_stats_unify_types(COLUMN_FLOAT, COLUMN_FLOAT, &t) && t == COLUMN_FLOAT);
    CHECK(!column_stats_unify_types(COLUMN_STRING, COLUMN_INT64, &t));
    CHECK(column_stats_create(&cs, "x", COLUMN_DOUBLE,
                              &(struct column_stats_options){60, 0, 0, 0}) == PM_ERR_USAGE);
    column_stats_free(NULL);
}

// Every truncation and many byte flips of a serialised image are rejected or merged safely.
static void test_malformed(void)
{
    double v[2000];
    for (int i = 0; i < 2000; i++)
        v[i] = i % 7 ? rng_unit() * 100 : NAN;
    const char *s[] = {"a", "bb", "a", NULL};
    enum column_type types[] = {COLUMN_DOUBLE, COLUMN_STRING};
    for (int t = 0; t < 2; t++) {
        struct column_stats *cs, *dst;
        CHECK(column_stats_create(&cs, "x", types[t], NULL) == PM_OK);
        if (t == 0)
            feed_reals(cs, COLUMN_DOUBLE, v, 0, 2000);
        else
            add_strings(cs, s, 4);
        struct bytebuf w = BYTEBUF_INIT;
        CHECK(column_stats_serialize(cs, &w) == PM_OK);
        struct pm_error err = PM_ERROR_INIT;
        size_t used;
        int rejected = 0;
        for (size_t n = 0; n < w.len; n += 1 + n / 50) {
            CHECK(column_stats_create(&dst, "x", types[t], NULL) == PM_OK);
            rejected += column_stats_merge_serialized(dst, w.data, n, &used, &err) == PM_ERR_FORMAT;
            column_stats_free(dst);
        }
        CHECK(rejected > 0);
        for (size_t i = 0; i < w.len; i += 1 + i / 20) {
            char *copy = malloc(w.len);
            memcpy(copy, w.data, w.len);
            copy[i] ^= (char)(1 + (rng() % 255));
            CHECK(column_stats_create(&dst, "x", types[t], NULL) == PM_OK);
            int rc = column_stats_merge_serialized(dst, copy, w.len, &used, &err);
            CHECK(rc == PM_OK || rc == PM_ERR_FORMAT);
            struct column_stats_summary sm;
            if (rc == PM_OK)
                CHECK(column_stats_summarize(dst, 3, &sm) == PM_OK);
            column_stats_free(dst);
            free(copy);
        }
        bytebuf_release(&w);
        column_stats_free(cs);
    }
}

int main(void)
{
    test_ints_exact();
    test_doubles_bound();
    test_exact_sum();
    test_strings();
    test_bool_and_types();
    test_malformed();
    return CHECK_DONE();
}
