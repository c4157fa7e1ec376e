// libFuzzer target for filters/filter_expr.h. The input is split at newlines into up to
// 8 --where strings; when they parse, the filter is bound to a fixed LAION-like schema
// (every column type) and, when that succeeds, evaluated on a small batch holding nulls,
// NaN, infinities, extreme integers and invalid UTF-8. Checks kept == sum(keep[]).
#include "filter_expr.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define NROWS 6

static const struct column_info SCHEMA[] = {
    {"punsafe", COLUMN_DOUBLE, true}, {"similarity", COLUMN_FLOAT, true},
    {"WIDTH", COLUMN_INT32, true},    {"HEIGHT", COLUMN_INT64, true},
    {"TEXT", COLUMN_STRING, true},    {"nsfw", COLUMN_BOOL, true},
};
#define NCOLS (sizeof SCHEMA / sizeof SCHEMA[0])

static int fill(struct table_batch *b)
{
    static const double reals[NROWS] = {0.1, -0.0, 1e308, -1e-300, 0.5, 0};
    static const int64_t ints[NROWS] = {0, -1, INT32_MAX, INT32_MIN, 256, 0};
    static const int64_t longs[NROWS] = {INT64_MIN, INT64_MAX, 0, 1, 9007199254740993LL, 0};
    static const char *strs[NROWS] = {"", "a cat", "\xff\xfe\x80", "\xe2\x82\xac x", "nsfw", 0};
    for (size_t r = 0; r < NROWS; r++) {
        int rc = 0;
        double d = r == 5 ? NAN : (r == 4 ? INFINITY : reals[r]);
        rc |= r == 5 ? column_append_null(&b->cols[0]) : column_append_real(&b->cols[0], d);
        rc |= column_append_real(&b->cols[1], r == 3 ? NAN : reals[r]);
        rc |= r == 5 ? column_append_null(&b->cols[2]) : column_append_int(&b->cols[2], ints[r]);
        rc |= column_append_int(&b->cols[3], longs[r]);
        rc |= strs[r] ? column_append_string(&b->cols[4], strs[r], strlen(strs[r]))
                      : column_append_null(&b->cols[4]);
        rc |= r == 2 ? column_append_null(&b->cols[5]) : column_append_int(&b->cols[5], r & 1);
        if (rc)
            return -1;
    }
    b->nrows = NROWS;
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *s = malloc(size + 1);
    if (!s)
        return 0;
    memcpy(s, data, size);
    s[size] = '\0';
    const char *where[8];
    size_t n = 0;
    for (char *p = s; n < 8;) {
        where[n++] = p;
        char *nl = strchr(p, '\n');
        if (!nl)
            break;
        *nl = '\0';
        p = nl + 1;
    }

    struct filter_expr *f = NULL;
    struct pm_error err = PM_ERROR_INIT;
    if (filter_expr_parse(&f, where, n, &err) == PM_OK) {
        size_t nc = filter_expr_num_clauses(f);
        for (size_t i = 0; i < nc; i++)
            if (!filter_expr_clause_text(f, i))
                abort();
        for (size_t i = 0; i < filter_expr_num_columns(f); i++)
            if (!filter_expr_column(f, i))
                abort();
        struct table_batch b;
        if (filter_expr_bind(f, SCHEMA, NCOLS, &err) == PM_OK &&
            table_batch_init(&b, SCHEMA, NCOLS) == PM_OK) {
            uint64_t *failed = calloc(nc + 1, sizeof *failed);
            uint64_t *missing = calloc(nc + 1, sizeof *missing);
            if (failed && missing && fill(&b) == 0) {
                uint8_t keep[NROWS];
                struct filter_counts c = {0, 0, 0, failed, missing};
                filter_expr_eval(f, &b, keep, &c);
                uint64_t kept = 0;
                for (size_t r = 0; r < NROWS; r++)
                    kept += keep[r] != 0;
                if (c.rows != NROWS || c.kept != kept)
                    abort();
            }
            free(failed);
            free(missing);
            table_batch_release(&b);
        }
    }
    filter_expr_free(f);
    free(s);
    return 0;
}
