/*
 * pixelmill stats — column summaries of metadata tables (Parquet, CSV, TSV, JSONL), for
 * data scientists: counts, nulls, min/max/mean, quantiles, string lengths, top values.
 *
 * Flow: rank 0 opens every input to learn its schema and number of parts (Parquet row
 * groups; 1 for text files), unifies the schemas and broadcasts the plan. Work units are
 * the (file, part) pairs over all inputs in argument order; unit u goes to rank
 * u % size. Each rank folds its units into one column_stats accumulator per column; the
 * accumulators are reduced to rank 0 along a binary tree (serialised images). Every
 * statistic is independent of the split and of the merge order (see column_stats.h),
 * so the output is byte-identical for any number of ranks and any split into files.
 */
#include "column_stats.h"
#include "commands.h"
#include "pm_error.h"
#include "pm_log.h"
#include "pm_mpi.h"
#include "table_reader.h"

#include <jansson.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define DEFAULT_TOP 10

static void print_help(FILE *out)
{
    fprintf(out,
            "usage: pixelmill stats INPUT... [--cols A,B] [--json] [--format F] [--top N]\n"
            "                       [--quantile-buckets B]\n"
            "\n"
            "Summarise the columns of one or more metadata tables (Parquet, CSV, TSV, JSONL;\n"
            "text files may be .gz or .zst). All inputs are treated as one table.\n"
            "\n"
            "Options:\n"
            "  --cols A,B    only these columns (default: all)\n"
            "  --json        print one JSON document instead of tables\n"
            "  --format F    csv, tsv, jsonl or parquet for every input (default: from the\n"
            "                file name)\n"
            "  --top N       top values shown per low-cardinality string column (default %d)\n"
            "  --quantile-buckets B\n"
            "                most histogram buckets per numeric column before its\n"
            "                resolution m is lowered (default %u = 16 MiB; 8192 to 2^28;\n"
            "                4x the buckets buys about 2 more bits where m was lowered)\n"
            "  -h, --help    this help\n"
            "\n"
            "Statistics per column: rows and nulls; numeric columns: count, min, max, mean\n"
            "and the quantiles p1 p5 p25 p50 p75 p95 p99 (pandas' default 'linear'\n"
            "interpolation), and NaNs for float columns (NaN is left out of every statistic,\n"
            "like pandas); string columns: min/mean/max length in characters (UTF-8 code\n"
            "points) and, for columns with at most %d distinct values (and at most 1 MiB of\n"
            "them), the distinct count and the most frequent values (ties in byte order);\n"
            "bool columns: true and false counts.\n"
            "\n"
            "Accuracy: counts, nulls, min, max, lengths and top-value counts are exact; the\n"
            "mean is the exactly accumulated sum divided by the count (within 1 ulp).\n"
            "Quantiles come from a histogram keyed on the sign, exponent and top m mantissa\n"
            "bits of each value (m = %d, lowered only for columns with more than %u buckets;\n"
            "m is printed). Each order statistic is exact when it is the smallest or largest\n"
            "value of its bucket or the bucket holds one distinct value (integers below 2^24\n"
            "and float32 values always do at m = 23), otherwise it is the bucket's midpoint,\n"
            "within a relative error of 2^-(m+1) (6e-08 at m = 23). The printed bound is 0\n"
            "when every order statistic used was exact.\n"
            "\n"
            "Inputs must have the same column names (in any order; the first input's order\n"
            "is shown). Numeric types are widened across files (int32+int64 -> int64, float\n"
            "with anything numeric -> double); other type differences are an error.\n"
            "\n"
            "MPI: run under mpirun to spread the (file, row group) units over ranks; the\n"
            "output is byte-identical for any number of ranks. Memory per column is bounded\n"
            "(at most 64 bytes per quantile bucket for a numeric column, 1 MiB of distinct\n"
            "strings) whatever the row count; use the same options on every run you compare.\n"
            "\n"
            "Exit status: 0 done, 1 an input could not be read (the message names it),\n"
            "2 usage error.\n",
            DEFAULT_TOP, COLUMN_STATS_MAX_BUCKETS, COLUMN_STATS_MAX_DISTINCT,
            COLUMN_STATS_MANTISSA_BITS, COLUMN_STATS_MAX_BUCKETS);
}

struct stats_args {
    char **inputs;
    size_t ninputs;
    char **cols; // split --cols
    size_t ncols;
    char *cols_buf;
    const char *format;
    bool json;
    size_t top;
    size_t max_buckets;
};

static void args_release(struct stats_args *a)
{
    free(a->inputs);
    free(a->cols);
    free(a->cols_buf);
}

// Returns PM_OK, PM_ERR_USAGE (message printed on rank 0) or 1 for --help (printed).
static int parse_args(int argc, char **argv, struct stats_args *a, int rank)
{
    memset(a, 0, sizeof *a);
    a->top = DEFAULT_TOP;
    a->inputs = calloc((size_t)argc + 1, sizeof *a->inputs);
    if (!a->inputs)
        return PM_ERR_NOMEM;
    const char *cols = NULL;
    bool only_inputs = false;
    for (int i = 1; i < argc; i++) {
        const char *s = argv[i];
        const char *val = NULL;
        if (only_inputs || s[0] != '-' || !strcmp(s, "-")) {
            a->inputs[a->ninputs++] = argv[i];
            continue;
        }
        if (!strcmp(s, "--")) {
            only_inputs = true;
            continue;
        }
        if (!strcmp(s, "-h") || !strcmp(s, "--help")) {
            if (rank == 0)
                print_help(stdout);
            return 1;
        }
        if (!strcmp(s, "--json")) {
            a->json = true;
            continue;
        }
        const char *names[] = {"--cols", "--format", "--top", "--quantile-buckets"};
        int which = -1;
        for (int k = 0; k < 4; k++) {
            size_t n = strlen(names[k]);
            if (!strncmp(s, names[k], n) && (s[n] == '\0' || s[n] == '=')) {
                which = k;
                if (s[n] == '=')
                    val = s + n + 1;
                else if (i + 1 < argc)
                    val = argv[++i];
                else {
                    if (rank == 0)
                        pm_log_error("stats: %s needs a value; see 'pixelmill stats --help'", s);
                    return PM_ERR_USAGE;
                }
            }
        }
        if (which < 0) {
            if (rank == 0)
                pm_log_error("stats: unknown option '%s'; see 'pixelmill stats --help'", s);
            return PM_ERR_USAGE;
        }
        if (which == 0) {
            cols = val;
        } else if (which == 1) {
            if (strcmp(val, "csv") && strcmp(val, "tsv") && strcmp(val, "jsonl") &&
                strcmp(val, "parquet")) {
                if (rank == 0)
                    pm_log_error("stats: --format must be csv, tsv, jsonl or parquet, not '%s'",
                                 val);
                return PM_ERR_USAGE;
            }
            a->format = val;
        } else if (which == 2) {
            char *end;
            unsigned long long n = strtoull(val, &end, 10);
            if (!*val || *end || val[0] == '-' || n > 100000) {
                if (rank == 0)
                    pm_log_error("stats: --top must be a number from 0 to 100000, not '%s'", val);
                return PM_ERR_USAGE;
            }
            a->top = (size_t)n;
        } else {
            char *end;
            unsigned long long n = strtoull(val, &end, 10);
            if (!*val || *end || val[0] == '-' || n < 8192 || n > (1ULL << 28)) {
                if (rank == 0)
                    pm_log_error("stats: --quantile-buckets must be a number from 8192 to "
                                 "268435456, not '%s'",
                                 val);
                return PM_ERR_USAGE;
            }
            a->max_buckets = (size_t)n;
        }
    }
    if (!a->ninputs) {
        if (rank == 0)
            pm_log_error("stats: no input files; see 'pixelmill stats --help'");
        return PM_ERR_USAGE;
    }
    if (cols) {
        a->cols_buf = strdup(cols);
        a->cols = calloc(strlen(cols) + 2, sizeof *a->cols);
        if (!a->cols_buf || !a->cols)
            return PM_ERR_NOMEM;
        for (char *p = a->cols_buf, *tok; (tok = strsep(&p, ","));) {
            if (!*tok) {
                if (rank == 0)
                    pm_log_error("stats: --cols has an empty column name: '%s'", cols);
                return PM_ERR_USAGE;
            }
            for (size_t k = 0; k < a->ncols; k++) {
                if (!strcmp(a->cols[k], tok)) {
                    if (rank == 0)
                        pm_log_error("stats: --cols names '%s' twice", tok);
                    return PM_ERR_USAGE;
                }
            }
            a->cols[a->ncols++] = tok;
        }
    }
    return PM_OK;
}

static int open_input(struct table_reader **r, const struct stats_args *a, const char *path,
                      struct pm_error *err)
{
    struct table_reader_options opt = {0};
    opt.format = a->format;
    opt.columns = (const char *const *)a->cols;
    opt.ncolumns = a->ncols;
    if (!a->format && !table_format_from_name(path))
        return pm_error_set(err, PM_ERR_USAGE,
                            "'%s': cannot tell the format from the name; use --format", path);
    return table_reader_open(r, path, &opt, err);
}

/* The plan rank 0 broadcasts: unified schema and parts per input. */
struct plan {
    size_t ncols;
    struct column_info *cols;
    uint64_t *nparts; // per input
};

static void plan_release(struct plan *p)
{
    for (size_t i = 0; p->cols && i < p->ncols; i++)
        free(p->cols[i].name);
    free(p->cols);
    free(p->nparts);
    memset(p, 0, sizeof *p);
}

static int plan_build(struct plan *p, const struct stats_args *a, struct pm_error *err)
{
    memset(p, 0, sizeof *p);
    p->nparts = calloc(a->ninputs, sizeof *p->nparts);
    if (!p->nparts)
        return pm_error_set(err, PM_ERR_NOMEM, "out of memory");
    for (size_t f = 0; f < a->ninputs; f++) {
        const char *path = a->inputs[f];
        struct table_reader *r = NULL;
        int rc = open_input(&r, a, path, err);
        if (rc)
            return rc;
        size_t n = table_reader_num_columns(r);
        p->nparts[f] = table_reader_num_parts(r);
        if (f == 0) {
            p->cols = calloc(n ? n : 1, sizeof *p->cols);
            if (!p->cols) {
                table_reader_free(r);
                return pm_error_set(err, PM_ERR_NOMEM, "out of memory");
            }
            for (size_t i = 0; i < n; i++) {
                const struct column_info *ci = table_reader_column(r, i);
                p->cols[i].name = strdup(ci->name);
                p->cols[i].type = ci->type;
                p->cols[i].nullable = ci->nullable;
                p->ncols++;
                if (!p->cols[i].name) {
                    table_reader_free(r);
                    return pm_error_set(err, PM_ERR_NOMEM, "out of memory");
                }
            }
        } else {
            rc = PM_OK;
            if (n != p->ncols)
                rc = pm_error_set(err, PM_ERR_FORMAT,
                                  "'%s' has %zu columns but '%s' has %zu; all inputs must "
                                  "have the same columns (or use --cols)",
                                  path, n, a->inputs[0], p->ncols);
            for (size_t i = 0; !rc && i < n; i++) {
                const struct column_info *ci = table_reader_column(r, i);
                size_t k = 0;
                while (k < p->ncols && strcmp(p->cols[k].name, ci->name))
                    k++;
                if (k == p->ncols) {
                    rc = pm_error_set(err, PM_ERR_FORMAT,
                                      "'%s' has a column '%s' that '%s' does not have", path,
                                      ci->name, a->inputs[0]);
                } else if (!column_stats_unify_types(p->cols[k].type, ci->type, &p->cols[k].type)) {
                    rc = pm_error_set(err, PM_ERR_FORMAT,
                                      "'%s': column '%s' is %s but earlier inputs have %s", path,
                                      ci->name, column_type_name(ci->type),
                                      column_type_name(p->cols[k].type));
                }
            }
            if (rc) {
                table_reader_free(r);
                return rc;
            }
        }
        table_reader_free(r);
    }
    return PM_OK;
}

static int put_u64(struct bytebuf *b, uint64_t v)
{
    return bytebuf_append(b, &v, sizeof v); // same machine type on every rank
}

// Broadcast the plan (or the failure) from rank 0. Returns the status on every rank.
static int plan_bcast(struct plan *p, int status, size_t ninputs, const struct pm_mpi *mpi)
{
    if (mpi->size == 1)
        return status;
    struct bytebuf b = BYTEBUF_INIT;
    uint64_t len = 0;
    if (mpi->rank == 0) {
        int rc = put_u64(&b, (uint64_t)status);
        if (!status) {
            rc |= put_u64(&b, p->ncols);
            for (size_t i = 0; i < p->ncols; i++) {
                rc |= put_u64(&b, p->cols[i].type);
                rc |= put_u64(&b, strlen(p->cols[i].name));
                rc |= bytebuf_append(&b, p->cols[i].name, strlen(p->cols[i].name));
            }
            for (size_t f = 0; f < ninputs; f++)
                rc |= put_u64(&b, p->nparts[f]);
        }
        if (rc)
            pm_mpi_fail(MPI_ERR_NO_MEM, "plan_bcast", __FILE__, __LINE__);
        len = b.len;
    }
    MPI_CHECK(MPI_Bcast(&len, 1, MPI_UINT64_T, 0, MPI_COMM_WORLD));
    if (len > INT_MAX)
        pm_mpi_fail(MPI_ERR_COUNT, "plan_bcast", __FILE__, __LINE__);
    if (mpi->rank != 0 && bytebuf_reserve(&b, len))
        pm_mpi_fail(MPI_ERR_NO_MEM, "plan_bcast", __FILE__, __LINE__);
    MPI_CHECK(MPI_Bcast(b.data, (int)len, MPI_BYTE, 0, MPI_COMM_WORLD));
    if (mpi->rank != 0) {
        // trusted: written by rank 0 of the same binary
        const char *q = b.data;
        uint64_t v;
#define TAKE(x) (memcpy(&(x), q, sizeof(x)), q += sizeof(x))
        TAKE(v);
        status = (int)v;
        if (!status) {
            TAKE(v);
            p->ncols = (size_t)v;
            p->cols = calloc(p->ncols ? p->ncols : 1, sizeof *p->cols);
            p->nparts = calloc(ninputs ? ninputs : 1, sizeof *p->nparts);
            if (!p->cols || !p->nparts)
                pm_mpi_fail(MPI_ERR_NO_MEM, "plan_bcast", __FILE__, __LINE__);
            for (size_t i = 0; i < p->ncols; i++) {
                uint64_t type, n;
                TAKE(type);
                TAKE(n);
                p->cols[i].type = (enum column_type)type;
                p->cols[i].name = strndup(q, n);
                if (!p->cols[i].name)
                    pm_mpi_fail(MPI_ERR_NO_MEM, "plan_bcast", __FILE__, __LINE__);
                q += n;
            }
            for (size_t f = 0; f < ninputs; f++)
                TAKE(p->nparts[f]);
        }
#undef TAKE
    }
    bytebuf_release(&b);
    return status;
}

struct accum {
    size_t ncols;
    struct column_stats **cs;
    uint64_t rows;
};

static void accum_release(struct accum *acc)
{
    for (size_t i = 0; acc->cs && i < acc->ncols; i++)
        column_stats_free(acc->cs[i]);
    free(acc->cs);
}

// Fold part `part` of input `path` (already open as *r) into the accumulators.
static int fold_unit(struct accum *acc, const struct plan *p, struct table_reader *r,
                     const char *path, size_t part, struct table_batch *batch, const int *map,
                     struct pm_error *err)
{
    int rc = table_reader_select_parts(r, part, 1, err);
    if (rc)
        return rc;
    for (;;) {
        rc = table_reader_next(r, batch, err);
        if (rc)
            return rc;
        if (!batch->nrows)
            return PM_OK;
        acc->rows += batch->nrows;
        for (size_t c = 0; c < batch->ncols; c++) {
            rc = column_stats_add_column(acc->cs[map[c]], &batch->cols[c]);
            if (rc)
                return pm_error_set(err, rc,
                                    "'%s': column '%s': %s (a %s column where %s was "
                                    "expected)",
                                    path, batch->cols[c].name, pm_strerror(rc),
                                    column_type_name(batch->cols[c].type),
                                    column_type_name(p->cols[map[c]].type));
        }
    }
}

static int fold_my_units(struct accum *acc, const struct plan *p, const struct stats_args *a,
                         const struct pm_mpi *mpi, struct pm_error *err)
{
    uint64_t unit = 0;
    int rc = PM_OK;
    for (size_t f = 0; f < a->ninputs && !rc; f++) {
        struct table_reader *r = NULL;
        struct table_batch batch = TABLE_BATCH_INIT;
        int *map = NULL;
        for (uint64_t part = 0; part < p->nparts[f] && !rc; part++, unit++) {
            if (unit % (uint64_t)mpi->size != (uint64_t)mpi->rank)
                continue;
            if (!r) {
                rc = open_input(&r, a, a->inputs[f], err);
                if (rc)
                    break;
                size_t n = table_reader_num_columns(r);
                map = calloc(n ? n : 1, sizeof *map);
                rc = map ? table_reader_batch_init(r, &batch)
                         : pm_error_set(err, PM_ERR_NOMEM, "out of memory");
                for (size_t c = 0; !rc && c < n; c++) {
                    const char *name = table_reader_column(r, c)->name;
                    size_t k = 0;
                    while (k < p->ncols && strcmp(p->cols[k].name, name))
                        k++;
                    if (k == p->ncols || n != p->ncols)
                        rc = pm_error_set(err, PM_ERR_FORMAT, "'%s': columns changed while reading",
                                          a->inputs[f]);
                    else
                        map[c] = (int)k;
                }
                if (rc)
                    break;
            }
            rc = fold_unit(acc, p, r, a->inputs[f], (size_t)part, &batch, map, err);
        }
        table_batch_release(&batch);
        table_reader_free(r);
        free(map);
        if (rc)
            return rc;
    }
    return rc;
}

// Binary-tree reduction of the accumulators onto rank 0.
static int reduce_to_root(struct accum *acc, const struct pm_mpi *mpi, struct pm_error *err)
{
    int rc = PM_OK;
    for (int step = 1; step < mpi->size; step *= 2) {
        if (mpi->rank % (2 * step) == step) {
            // sent even after a failed merge below, so the tree never waits forever;
            // the caller's pm_mpi_worst() then fails every rank
            struct bytebuf b = BYTEBUF_INIT;
            int src = put_u64(&b, acc->rows);
            for (size_t c = 0; !src && c < acc->ncols; c++)
                src = column_stats_serialize(acc->cs[c], &b);
            if (src || b.len > INT_MAX)
                pm_mpi_fail(src ? MPI_ERR_NO_MEM : MPI_ERR_COUNT, "stats reduce", __FILE__,
                            __LINE__);
            uint64_t len = b.len;
            MPI_CHECK(MPI_Send(&len, 1, MPI_UINT64_T, mpi->rank - step, 1, MPI_COMM_WORLD));
            MPI_CHECK(MPI_Send(b.data, (int)len, MPI_BYTE, mpi->rank - step, 2, MPI_COMM_WORLD));
            bytebuf_release(&b);
            return rc;
        }
        if (mpi->rank % (2 * step) == 0 && mpi->rank + step < mpi->size) {
            int from = mpi->rank + step;
            uint64_t len;
            MPI_CHECK(MPI_Recv(&len, 1, MPI_UINT64_T, from, 1, MPI_COMM_WORLD, MPI_STATUS_IGNORE));
            struct bytebuf b = BYTEBUF_INIT;
            if (len > INT_MAX || bytebuf_reserve(&b, len))
                pm_mpi_fail(MPI_ERR_NO_MEM, "stats reduce", __FILE__, __LINE__);
            MPI_CHECK(
                MPI_Recv(b.data, (int)len, MPI_BYTE, from, 2, MPI_COMM_WORLD, MPI_STATUS_IGNORE));
            size_t pos = 0, used = 0;
            uint64_t rows = 0;
            if (!rc && len < 8)
                rc = pm_error_set(err, PM_ERR_INTERNAL, "short statistics from rank %d", from);
            if (!rc) {
                memcpy(&rows, b.data, 8);
                pos = 8;
                acc->rows += rows;
            }
            for (size_t c = 0; !rc && c < acc->ncols; c++, pos += used)
                rc = column_stats_merge_serialized(acc->cs[c], b.data + pos, len - pos, &used, err);
            bytebuf_release(&b);
        }
    }
    return rc;
}

/* ---- output ----------------------------------------------------------------------------- */

static json_t *json_num(double v)
{
    if (isnan(v))
        return json_string("nan");
    if (isinf(v))
        return json_string(v > 0 ? "inf" : "-inf");
    return json_real(v);
}

static bool is_int_type(enum column_type t)
{
    return t == COLUMN_INT32 || t == COLUMN_INT64;
}

// A JSON string of arbitrary bytes: invalid UTF-8 bytes become U+FFFD.
static json_t *json_bytes(const char *s, size_t n)
{
    json_t *j = json_stringn(s, n);
    if (j)
        return j;
    struct bytebuf b = BYTEBUF_INIT;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        size_t len = c < 0x80             ? 1
                     : (c & 0xE0) == 0xC0 ? 2
                     : (c & 0xF0) == 0xE0 ? 3
                     : (c & 0xF8) == 0xF0 ? 4
                                          : 0;
        json_t *one = len && i + len <= n ? json_stringn(s + i, len) : NULL;
        if (one) {
            bytebuf_append(&b, s + i, len);
            i += len - 1;
            json_decref(one);
        } else {
            bytebuf_append(&b, "\xEF\xBF\xBD", 3);
        }
    }
    j = json_stringn(b.data ? b.data : "", b.len);
    bytebuf_release(&b);
    return j;
}

static json_t *column_json(const struct column_stats_summary *s)
{
    json_t *o = json_object();
    json_object_set_new(o, "name", json_string(s->name));
    json_object_set_new(o, "type", json_string(column_type_name(s->type)));
    json_object_set_new(o, "nulls", json_integer((json_int_t)s->nulls));
    json_object_set_new(o, "count", json_integer((json_int_t)s->count));
    if (column_type_is_numeric(s->type)) {
        if (!is_int_type(s->type))
            json_object_set_new(o, "nans", json_integer((json_int_t)s->nans));
        bool have = s->count > 0;
        if (have && is_int_type(s->type)) {
            json_object_set_new(o, "min", json_integer(s->int_min));
            json_object_set_new(o, "max", json_integer(s->int_max));
        } else {
            json_object_set_new(o, "min", have ? json_num(s->min) : json_null());
            json_object_set_new(o, "max", have ? json_num(s->max) : json_null());
        }
        json_object_set_new(o, "mean", have ? json_num(s->mean) : json_null());
        json_t *q = json_object();
        for (int i = 0; i < COLUMN_STATS_NQUANTILES; i++)
            json_object_set_new(q, column_stats_quantile_names[i],
                                have ? json_num(s->quantiles[i]) : json_null());
        json_object_set_new(o, "quantiles", q);
        json_object_set_new(o, "quantile_mantissa_bits", json_integer(s->quantile_bits));
        json_object_set_new(o, "quantile_max_rel_error", json_real(s->quantile_rel_error));
    } else if (s->type == COLUMN_STRING) {
        bool have = s->count > 0;
        json_object_set_new(o, "min_length",
                            have ? json_integer((json_int_t)s->min_length) : json_null());
        json_object_set_new(o, "max_length",
                            have ? json_integer((json_int_t)s->max_length) : json_null());
        json_object_set_new(o, "mean_length", have ? json_real(s->mean_length) : json_null());
        if (s->distinct_known) {
            json_object_set_new(o, "distinct", json_integer((json_int_t)s->distinct));
            json_t *top = json_array();
            for (size_t i = 0; i < s->ntop; i++) {
                json_t *e = json_object();
                json_object_set_new(e, "value", json_bytes(s->top[i].data, s->top[i].len));
                json_object_set_new(e, "count", json_integer((json_int_t)s->top[i].count));
                json_array_append_new(top, e);
            }
            json_object_set_new(o, "top", top);
        } else {
            json_object_set_new(o, "distinct", json_null());
            json_object_set_new(o, "top", json_null());
        }
    } else if (s->type == COLUMN_BOOL) {
        json_object_set_new(o, "true", json_integer((json_int_t)s->trues));
        json_object_set_new(o, "false", json_integer((json_int_t)s->falses));
    }
    return o;
}

/* A text table: cells are strings; column 0 and `left_from` onwards are left-aligned. */
struct text_table {
    size_t ncols, nrows;
    char **cells; // nrows * ncols
    size_t left_from;
};

static void tt_add_row(struct text_table *t, char **row)
{
    char **c = realloc(t->cells, (t->nrows + 1) * t->ncols * sizeof *c);
    if (!c) {
        for (size_t i = 0; i < t->ncols; i++)
            free(row[i]);
        return;
    }
    t->cells = c;
    memcpy(t->cells + t->nrows * t->ncols, row, t->ncols * sizeof *row);
    t->nrows++;
}

// Display width: characters (UTF-8 code points), good enough for captions and names.
static size_t text_width(const char *s)
{
    size_t w = 0;
    for (; *s; s++)
        w += ((unsigned char)*s & 0xC0) != 0x80;
    return w;
}

static void tt_print(struct text_table *t, FILE *out)
{
    size_t *w = calloc(t->ncols, sizeof *w);
    if (!w)
        return;
    for (size_t r = 0; r < t->nrows; r++)
        for (size_t c = 0; c < t->ncols; c++) {
            const char *cell = t->cells[r * t->ncols + c];
            size_t n = text_width(cell ? cell : "");
            if (n > w[c])
                w[c] = n;
        }
    struct bytebuf line = BYTEBUF_INIT;
    for (size_t r = 0; r < t->nrows; r++) {
        bytebuf_clear(&line);
        for (size_t c = 0; c < t->ncols; c++) {
            const char *s = t->cells[r * t->ncols + c] ? t->cells[r * t->ncols + c] : "";
            size_t pad = w[c] - text_width(s);
            bool left = c == 0 || c >= t->left_from;
            if (c)
                bytebuf_append_str(&line, "  ");
            if (!left)
                bytebuf_printf(&line, "%*s", (int)pad, "");
            bytebuf_append_str(&line, s);
            if (left)
                bytebuf_printf(&line, "%*s", (int)pad, "");
        }
        while (line.len && line.data[line.len - 1] == ' ')
            line.data[--line.len] = '\0';
        fprintf(out, "%s\n", line.data ? line.data : "");
    }
    bytebuf_release(&line);
    free(w);
    for (size_t i = 0; i < t->nrows * t->ncols; i++)
        free(t->cells[i]);
    free(t->cells);
    t->cells = NULL;
    t->nrows = 0;
}

static char *fmt(const char *f, ...) __attribute__((format(printf, 1, 2)));
static char *fmt(const char *f, ...)
{
    char small[64];
    va_list ap;
    va_start(ap, f);
    int n = vsnprintf(small, sizeof small, f, ap);
    va_end(ap);
    if (n < 0)
        return strdup("?");
    char *s = malloc((size_t)n + 1);
    if (!s)
        return NULL;
    va_start(ap, f);
    vsnprintf(s, (size_t)n + 1, f, ap);
    va_end(ap);
    return s;
}

static char *fmt_num(double v)
{
    return fmt("%.6g", v);
}

// A top value for the table: quoted, control bytes escaped, cut at 24 characters.
static void append_value(struct bytebuf *b, const char *s, size_t n)
{
    bytebuf_append(b, "\"", 1);
    size_t chars = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if ((c & 0xC0) != 0x80 && ++chars > 24) {
            bytebuf_append_str(b, "...");
            break;
        }
        if (c < 0x20 || c == 0x7f || c == '"' || c == '\\')
            bytebuf_printf(b, "\\x%02x", c);
        else
            bytebuf_append(b, s + i, 1);
    }
    bytebuf_append(b, "\"", 1);
}

static void print_text(const struct column_stats_summary *s, size_t n, uint64_t rows,
                       size_t ninputs, uint64_t nparts, FILE *out)
{
    fprintf(out, "%llu rows, %zu column%s, %zu input%s (%llu part%s)\n", (unsigned long long)rows,
            n, n == 1 ? "" : "s", ninputs, ninputs == 1 ? "" : "s", (unsigned long long)nparts,
            nparts == 1 ? "" : "s");
    // numeric
    struct text_table t = {0};
    t.ncols = 8 + COLUMN_STATS_NQUANTILES;
    t.left_from = t.ncols;
    bool any = false;
    for (size_t i = 0; i < n; i++) {
        if (!column_type_is_numeric(s[i].type))
            continue;
        if (!any) {
            char *h[8 + COLUMN_STATS_NQUANTILES];
            size_t k = 0;
            h[k++] = strdup("numeric");
            h[k++] = strdup("type");
            h[k++] = strdup("nulls");
            h[k++] = strdup("count");
            h[k++] = strdup("mean");
            h[k++] = strdup("min");
            for (int q = 0; q < COLUMN_STATS_NQUANTILES; q++)
                h[k++] = strdup(column_stats_quantile_names[q]);
            h[k++] = strdup("max");
            h[k++] = strdup("q.err");
            tt_add_row(&t, h);
            any = true;
        }
        char *row[8 + COLUMN_STATS_NQUANTILES];
        size_t k = 0;
        const struct column_stats_summary *c = &s[i];
        bool have = c->count > 0, ints = is_int_type(c->type);
        row[k++] = strdup(c->name);
        row[k++] = strdup(column_type_name(c->type));
        row[k++] =
            c->nans ? fmt("%llu+%lluNaN", (unsigned long long)c->nulls, (unsigned long long)c->nans)
                    : fmt("%llu", (unsigned long long)c->nulls);
        row[k++] = fmt("%llu", (unsigned long long)c->count);
        row[k++] = have ? fmt_num(c->mean) : strdup("-");
        row[k++] = !have  ? strdup("-")
                   : ints ? fmt("%lld", (long long)c->int_min)
                          : fmt_num(c->min);
        for (int q = 0; q < COLUMN_STATS_NQUANTILES; q++)
            row[k++] = have ? fmt_num(c->quantiles[q]) : strdup("-");
        row[k++] = !have  ? strdup("-")
                   : ints ? fmt("%lld", (long long)c->int_max)
                          : fmt_num(c->max);
        row[k++] =
            c->quantile_rel_error == 0 ? strdup("exact") : fmt("%.0e", c->quantile_rel_error);
        tt_add_row(&t, row);
    }
    if (any) {
        fputc('\n', out);
        tt_print(&t, out);
    }
    // strings
    t.ncols = 9;
    t.left_from = 8;
    any = false;
    for (size_t i = 0; i < n; i++) {
        const struct column_stats_summary *c = &s[i];
        if (c->type != COLUMN_STRING)
            continue;
        if (!any) {
            char *h[] = {strdup("string"),  strdup("type"),     strdup("nulls"),
                         strdup("count"),   strdup("min len"),  strdup("mean len"),
                         strdup("max len"), strdup("distinct"), strdup("top values")};
            tt_add_row(&t, h);
            any = true;
        }
        bool have = c->count > 0;
        struct bytebuf top = BYTEBUF_INIT;
        for (size_t k = 0; k < c->ntop && k < 5; k++) {
            if (k)
                bytebuf_append_str(&top, ", ");
            append_value(&top, c->top[k].data, c->top[k].len);
            bytebuf_printf(&top, " %llu", (unsigned long long)c->top[k].count);
        }
        if (c->ntop > 5)
            bytebuf_append_str(&top, ", ...");
        char *row[] = {strdup(c->name),
                       strdup(column_type_name(c->type)),
                       fmt("%llu", (unsigned long long)c->nulls),
                       fmt("%llu", (unsigned long long)c->count),
                       have ? fmt("%llu", (unsigned long long)c->min_length) : strdup("-"),
                       have ? fmt("%.1f", c->mean_length) : strdup("-"),
                       have ? fmt("%llu", (unsigned long long)c->max_length) : strdup("-"),
                       c->distinct_known ? fmt("%llu", (unsigned long long)c->distinct)
                                         : fmt(">%d", COLUMN_STATS_MAX_DISTINCT),
                       strdup(top.data ? top.data : "")};
        bytebuf_release(&top);
        tt_add_row(&t, row);
    }
    if (any) {
        fputc('\n', out);
        tt_print(&t, out);
    }
    // bools
    t.ncols = 6;
    t.left_from = 6;
    any = false;
    for (size_t i = 0; i < n; i++) {
        const struct column_stats_summary *c = &s[i];
        if (c->type != COLUMN_BOOL)
            continue;
        if (!any) {
            char *h[] = {strdup("bool"),  strdup("type"), strdup("nulls"),
                         strdup("count"), strdup("true"), strdup("false")};
            tt_add_row(&t, h);
            any = true;
        }
        char *row[] = {strdup(c->name),
                       strdup("bool"),
                       fmt("%llu", (unsigned long long)c->nulls),
                       fmt("%llu", (unsigned long long)c->count),
                       fmt("%llu", (unsigned long long)c->trues),
                       fmt("%llu", (unsigned long long)c->falses)};
        tt_add_row(&t, row);
    }
    if (any) {
        fputc('\n', out);
        tt_print(&t, out);
    }
    fprintf(out, "\nquantiles: pandas 'linear'; q.err is the largest relative error of a "
                 "quantile (2^-(m+1) where inexact; see --help)\n");
}

static int print_results(struct accum *acc, const struct stats_args *a, const struct plan *p)
{
    size_t n = acc->ncols;
    struct column_stats_summary *s = calloc(n ? n : 1, sizeof *s);
    if (!s)
        return PM_ERR_NOMEM;
    for (size_t i = 0; i < n; i++) {
        int rc = column_stats_summarize(acc->cs[i], a->top, &s[i]);
        if (rc) {
            free(s);
            return rc;
        }
    }
    if (a->json) {
        json_t *doc = json_object();
        json_object_set_new(doc, "rows", json_integer((json_int_t)acc->rows));
        json_t *cols = json_array();
        for (size_t i = 0; i < n; i++)
            json_array_append_new(cols, column_json(&s[i]));
        json_object_set_new(doc, "columns", cols);
        char *text =
            json_dumps(doc, JSON_INDENT(2) | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(17));
        json_decref(doc);
        if (!text) {
            free(s);
            return PM_ERR_NOMEM;
        }
        fputs(text, stdout);
        fputc('\n', stdout);
        free(text);
    } else {
        uint64_t parts = 0;
        for (size_t f = 0; f < a->ninputs; f++)
            parts += p->nparts[f];
        print_text(s, n, acc->rows, a->ninputs, parts, stdout);
    }
    free(s);
    return fflush(stdout) ? PM_ERR_IO : PM_OK;
}

int cmd_stats(int argc, char **argv, const struct pm_mpi *mpi)
{
    struct stats_args a;
    int rc = parse_args(argc, argv, &a, mpi->rank);
    if (rc) {
        args_release(&a);
        return rc == 1 ? PM_EXIT_OK : pm_exit_from_status(rc);
    }
    struct pm_error err = PM_ERROR_INIT;
    struct plan p = {0};
    if (mpi->rank == 0) {
        rc = plan_build(&p, &a, &err);
        if (rc)
            pm_log_error("stats: %s", err.msg);
    }
    rc = plan_bcast(&p, rc, a.ninputs, mpi);
    struct accum acc = {0};
    if (!rc) {
        acc.ncols = p.ncols;
        acc.cs = calloc(p.ncols ? p.ncols : 1, sizeof *acc.cs);
        if (!acc.cs)
            rc = pm_error_set(&err, PM_ERR_NOMEM, "out of memory");
        for (size_t i = 0; !rc && i < p.ncols; i++)
            rc = column_stats_create(
                &acc.cs[i], p.cols[i].name, p.cols[i].type,
                &(struct column_stats_options){COLUMN_STATS_MANTISSA_BITS, a.max_buckets, 0, 0});
        if (!rc)
            rc = fold_my_units(&acc, &p, &a, mpi, &err);
        if (rc)
            pm_log_error("stats: %s", err.msg[0] ? err.msg : pm_strerror(rc));
        rc = pm_mpi_worst(rc);
        if (!rc) {
            rc = reduce_to_root(&acc, mpi, &err);
            if (rc)
                pm_log_error("stats: %s", err.msg);
            rc = pm_mpi_worst(rc);
        }
        if (!rc && mpi->rank == 0) {
            rc = print_results(&acc, &a, &p);
            if (rc)
                pm_log_error("stats: cannot print the results: %s", pm_strerror(rc));
        }
        rc = pm_mpi_worst(rc);
    }
    accum_release(&acc);
    plan_release(&p);
    args_release(&a);
    return pm_exit_from_status(rc);
}
