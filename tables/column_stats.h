/**
 * column_stats — mergeable summary statistics of one table column, fed batch by batch.
 *
 * One accumulator per column collects: rows seen, nulls; for numeric columns the count
 * of values, NaNs (floats; NaN is neither null nor a value: it is left out of every
 * statistic, as pandas does), min, max, mean and the quantiles p1 p5 p25 p50 p75 p95
 * p99; for string columns min/max/mean length in characters (UTF-8 code points: bytes
 * that are not continuation bytes 10xxxxxx; invalid UTF-8 is counted the same way) and,
 * while the column has few distinct values, every distinct value with its count; for
 * bool columns the true and false counts.
 *
 * Determinism. Every statistic is a function of the multiset of values only: feeding
 * the same rows in any order, split into any number of accumulators that are then
 * merged in any order (batches, row groups, files, MPI ranks), gives bit-identical
 * results. This is what lets `pixelmill stats` print byte-identical output for any
 * number of ranks. Concretely:
 *   - mean = exact sum / count: the sum is accumulated exactly (a fixed-point
 *     "superaccumulator" covering the whole double range, 32-bit limbs in int64 words),
 *     then rounded once to double; so the mean is within 1 ulp of the true mean;
 *   - quantiles come from a histogram whose merge adds counts (commutative);
 *   - the distinct-value table is exact or absent (see below), never approximate.
 *
 * Quantiles and their error bound. Each non-NaN value v is widened to double (ints are
 * converted with rounding, floats are exact) and mapped to the order-preserving integer
 * image of its bits; the bucket key is that image without its lowest 52 - m mantissa
 * bits (sign, exponent and the top m mantissa bits). A bucket stores its count and the
 * exact min and max of its values. -0.0 is counted as +0.0. The accumulator starts at
 * m = `mantissa_bits` (default 23: every float32 value, and every integer of magnitude
 * < 2^24, has a bucket of its own) and, when a column has more than `max_buckets`
 * (default 2^18) buckets, halves its resolution (m -= 1) until it fits; since a part's
 * bucket set is a subset of the whole column's at every m, the final m is a function of
 * the whole column alone: the largest m <= mantissa_bits at which the column has at most
 * max_buckets buckets. A quantile is computed as pandas/numpy do by default ('linear':
 * position q * (n - 1) between the order statistics x[floor] and x[floor + 1], numpy's
 * lerp formula), where each order statistic is located exactly by rank and reported as
 *   - the exact value when it is its bucket's smallest or largest value, or the bucket
 *     holds one distinct value (min == max), and otherwise
 *   - the midpoint of its bucket's [min, max],
 * so |reported - true| <= 2^-(m+1) * max(|x[floor]|, |x[floor+1]|) (plus one rounding of
 * the interpolation). m is reported with each column (column_stats_summary.quantile_bits).
 * Memory: at most max_buckets buckets of 32 bytes in a table of at most twice that size
 * (16 MiB at the default), whatever the row count.
 *
 * Distinct values (string columns): the accumulator keeps every
 * distinct value and its count while there are at most `max_distinct` (default 1000)
 * distinct values holding at most `max_distinct_bytes` (default 1 MiB) in total; beyond
 * either limit the table is dropped and the column is "high-cardinality" (no top values,
 * no distinct count). Again a function of the whole column: any part over the limit
 * means the whole column is over it. Top values are ordered by count (descending), ties
 * by byte-wise comparison of the values (a prefix first).
 *
 * An accumulator is used by one thread at a time. Results returned by
 * column_stats_summarize() point into the accumulator and stay valid until it is next
 * changed or freed.
 */
#ifndef PM_COLUMN_STATS_H
#define PM_COLUMN_STATS_H

#include "bytebuf.h"
#include "column.h"
#include "pm_error.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/** Default mantissa bits of the quantile histogram (exact for float32 and small ints). */
#define COLUMN_STATS_MANTISSA_BITS 23
/** Default largest number of histogram buckets per column before halving resolution. */
#define COLUMN_STATS_MAX_BUCKETS (1u << 18)
/** Default largest number of distinct string values tracked per column. */
#define COLUMN_STATS_MAX_DISTINCT 1000
/** Default largest total size in bytes of the distinct string values tracked. */
#define COLUMN_STATS_MAX_DISTINCT_BYTES (1u << 20)

/** The quantiles reported, in this order: 0.01 0.05 0.25 0.5 0.75 0.95 0.99. */
#define COLUMN_STATS_NQUANTILES 7
extern const double column_stats_quantile_levels[COLUMN_STATS_NQUANTILES];
/** Their names: "p1" "p5" "p25" "p50" "p75" "p95" "p99". */
extern const char *const column_stats_quantile_names[COLUMN_STATS_NQUANTILES];

/** Tuning; accumulators that are merged must use the same options. */
struct column_stats_options {
    unsigned mantissa_bits;    /* 0..52; default COLUMN_STATS_MANTISSA_BITS */
    size_t max_buckets;        /* >= 16; 0 = COLUMN_STATS_MAX_BUCKETS */
    size_t max_distinct;       /* 0 = COLUMN_STATS_MAX_DISTINCT */
    size_t max_distinct_bytes; /* 0 = COLUMN_STATS_MAX_DISTINCT_BYTES */
};

/** Options with every field at its default. */
#define COLUMN_STATS_OPTIONS_DEFAULT                                                               \
    {                                                                                              \
        COLUMN_STATS_MANTISSA_BITS, 0, 0, 0                                                        \
    }

/** One distinct string value and how often it occurs. */
struct column_stats_value {
    const char *data; /* not NUL-terminated; points into the accumulator */
    size_t len;
    uint64_t count;
};

/**
 * The statistics of a column. Fields that do not apply to the column's kind are zero.
 * `count` is the number of values the statistics are over (rows - nulls - nans).
 */
struct column_stats_summary {
    const char *name;
    enum column_type type;
    uint64_t rows, nulls, count;
    /* numeric (INT32, INT64, FLOAT, DOUBLE) */
    uint64_t nans;            /* float columns only */
    int64_t int_min, int_max; /* integer columns, when count > 0 */
    double min, max;          /* every numeric column, when count > 0 (ints converted) */
    double mean;              /* when count > 0; may be +-inf or NaN with infinities */
    double quantiles[COLUMN_STATS_NQUANTILES]; /* when count > 0 */
    unsigned quantile_bits;                    /* the histogram's final m */
    double quantile_rel_error; /* 2^-(m+1); 0 when every order statistic used was exact */
    /* string */
    uint64_t min_length, max_length; /* characters, when count > 0 */
    double mean_length;
    bool distinct_known; /* low-cardinality: the counts below are exact */
    uint64_t distinct;   /* distinct values, when distinct_known */
    size_t ntop;         /* entries in top (<= the requested number) */
    const struct column_stats_value *top;
    /* bool */
    uint64_t trues, falses;
};

struct column_stats;

/** Create an empty accumulator for a column `name` of `type` (name is copied); `opt`
 * NULL means defaults. Returns PM_OK, PM_ERR_USAGE (bad options) or PM_ERR_NOMEM. */
int column_stats_create(struct column_stats **out, const char *name, enum column_type type,
                        const struct column_stats_options *opt);

/** Free the accumulator. Accepts NULL. */
void column_stats_free(struct column_stats *cs);

/** The column's name and type. */
const char *column_stats_name(const struct column_stats *cs);
enum column_type column_stats_type(const struct column_stats *cs);

/**
 * Add every row of `col`. The column's type must be the accumulator's type, or both
 * numeric (an integer column may feed a float accumulator and the reverse, so files
 * whose readers inferred different numeric types can be combined). Returns PM_OK,
 * PM_ERR_USAGE (incompatible type) or PM_ERR_NOMEM; on failure the accumulator may hold
 * part of the column and should be discarded.
 */
int column_stats_add_column(struct column_stats *cs, const struct column *col);

/** Add the statistics of `src` (same type and options) into `dst`; src is unchanged. */
int column_stats_merge(struct column_stats *dst, const struct column_stats *src);

/**
 * Append a self-describing binary image of the accumulator to `out` (magic "PMCS",
 * version, then the fields; canonical: equal accumulators give equal bytes). Used to
 * send partial results between MPI ranks.
 */
int column_stats_serialize(const struct column_stats *cs, struct bytebuf *out);

/**
 * Parse one image written by column_stats_serialize() from data[0..size) and merge it
 * into `cs` (whose name, type and options must match). Sets *used to the bytes
 * consumed. Every field is validated: bad input gives PM_ERR_FORMAT, never a crash.
 */
int column_stats_merge_serialized(struct column_stats *cs, const void *data, size_t size,
                                  size_t *used, struct pm_error *err);

/**
 * Compute the statistics: `ntop` is how many top values to return (0: none). The
 * summary points into `cs`; valid until cs is changed or freed. Returns PM_OK or
 * PM_ERR_NOMEM.
 */
int column_stats_summarize(struct column_stats *cs, size_t ntop, struct column_stats_summary *out);

/** Widened type when files disagree: equal types stay; two numeric types give the
 * wider (INT32+INT64 -> INT64, any float + anything numeric -> DOUBLE, FLOAT+FLOAT ->
 * FLOAT); anything else returns false. */
bool column_stats_unify_types(enum column_type a, enum column_type b, enum column_type *out);

#endif
