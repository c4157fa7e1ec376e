/*
 * pm_parquet_write_sample — writes a deterministic pseudo-random table with
 * parquet_writer and the same values to a JSON-lines file, for the pyarrow/pandas
 * parity tests (tests/test_parquet_writer.py).
 *
 *   pm_parquet_write_sample OUT.parquet --codec C --rows N --seed S
 *                           [--row-group-rows R] [--nullable 0|1] [--batch-rows B]
 *                           [--columns NAME,NAME...]
 *
 * Expected values go to OUT.expected.jsonl (OUT without its .parquet suffix), one JSON
 * object per row, null for nulls: "b" true/false; "i32", "i64" JSON integers; "f32",
 * "f64", "zeros", "allnan" the IEEE bit pattern as lower-case hex (8 or 16 digits);
 * "s", "cat", "u" the UTF-8 bytes as hex.
 *
 * Columns: b bool, i32 int32, i64 int64, f32 float, f64 double, s string (empty,
 * multi-byte UTF-8 with NUL, random ASCII, a >100 KB string every 4999 rows), cat
 * string (12 values: dictionary-encoded), u string (distinct ~400-byte values: the
 * dictionary overflows and falls back to PLAIN), zeros double (-0.0, +0.0, NaN),
 * allnan float (NaN). With --nullable 1 every column is OPTIONAL and ~1/8 of values
 * are null (1/2 for allnan); otherwise every column is REQUIRED. --columns writes only
 * the named columns, in the order given. Rows reach the writer in batches of B (777).
 */
#include "column.h"
#include "parquet_writer.h"
#include "pm_error.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

enum {
    COL_B,
    COL_I32,
    COL_I64,
    COL_F32,
    COL_F64,
    COL_S,
    COL_CAT,
    COL_U,
    COL_ZEROS,
    COL_ALLNAN,
    NCOLS
};

static uint64_t rng_state;

static uint64_t rng(void) // splitmix64
{
    uint64_t z = (rng_state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static uint64_t below(uint64_t n)
{
    return rng() % n;
}

static float f32_of(uint32_t bits)
{
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

static double f64_of(uint64_t bits)
{
    double d;
    memcpy(&d, &bits, 8);
    return d;
}

static const uint32_t f32_quiet[] = {
    0x7fc00000, 0xffc00001, 0x7fc12345,             // NaNs, with sign and payload
    0x80000000, 0x00000000,                         // -0.0, +0.0
    0x00000001, 0x80000123, 0x007fffff, 0x00800000, // subnormals, FLT_MIN
};
static const uint32_t f32_extreme[] = {0x7f800000, 0xff800000, 0x7f7fffff, 0xff7fffff};

static const uint64_t f64_quiet[] = {
    0x7ff8000000000000, 0xfff8000000000001, 0x7ff800000000beef, 0x8000000000000000,
    0x0000000000000000, 0x0000000000000001, 0x800fffffffffffff, 0x0010000000000000,
    0x47efffffe0000000, 0x36a0000000000000, // FLT_MAX and FLT_TRUE_MIN as doubles
};
static const uint64_t f64_extreme[] = {0x7ff0000000000000, 0xfff0000000000000, 0x7fefffffffffffff,
                                       0xffefffffffffffff};

static const char *const cats[] = {"",
                                   "cat",
                                   "dog",
                                   u8"\u00fcn\u00efc\u00f6d\u00e9",
                                   u8"\u65e5\u672c\u8a9e",
                                   "a",
                                   "b",
                                   "success",
                                   "failed_to_download",
                                   "zzz",
                                   "Zebra",
                                   "\xf0\x9f\x98\x80"};

static const char *const pieces[] = {"\xc3\xa9",         "\xe6\x97\xa5\xe6\x9c\xac",
                                     "\xf0\x9f\x98\x80", "\xc3\x9f",
                                     "\xe2\x82\xac",     "a",
                                     "\xce\xa9",         "Z"};

struct sample {
    char *buf; // scratch for a generated string
    size_t cap;
};

static char *scratch(struct sample *s, size_t n)
{
    if (n + 1 > s->cap) {
        s->cap = n + 1;
        s->buf = realloc(s->buf, s->cap);
        if (!s->buf) {
            fprintf(stderr, "out of memory\n");
            exit(1);
        }
    }
    return s->buf;
}

static void put_hex(FILE *f, const void *p, size_t n)
{
    static const char digits[] = "0123456789abcdef";
    const unsigned char *b = p;
    fputc('"', f);
    for (size_t i = 0; i < n; i++) {
        fputc(digits[b[i] >> 4], f);
        fputc(digits[b[i] & 15], f);
    }
    fputc('"', f);
}

// Generate the string of column `col` for row `row` into s->buf; returns its length.
static size_t gen_string(struct sample *s, int col, uint64_t row)
{
    if (col == COL_CAT) {
        const char *c = cats[below(sizeof cats / sizeof cats[0])];
        size_t n = strlen(c);
        memcpy(scratch(s, n), c, n);
        return n;
    }
    if (col == COL_U) {
        char *p = scratch(s, 400);
        int n = snprintf(p, 401, "%010" PRIu64 "-", row);
        while (n < 400)
            p[n++] = "0123456789abcdef"[below(16)];
        return 400;
    }
    if (row % 4999 == 17) { // long string
        size_t n = 100000 + below(20000);
        char *p = scratch(s, n);
        for (size_t i = 0; i < n; i++)
            p[i] = (char)('a' + below(26));
        return n;
    }
    uint64_t kind = below(10);
    if (kind == 0)
        return 0;
    if (kind <= 2) { // multi-byte UTF-8, sometimes with an embedded NUL
        char *p = scratch(s, 64);
        size_t n = 0, k = 1 + below(10);
        for (size_t i = 0; i < k; i++) {
            if (below(20) == 0) {
                p[n++] = '\0';
                continue;
            }
            const char *c = pieces[below(sizeof pieces / sizeof pieces[0])];
            memcpy(p + n, c, strlen(c));
            n += strlen(c);
        }
        return n;
    }
    size_t n = 1 + below(40);
    char *p = scratch(s, n);
    for (size_t i = 0; i < n; i++)
        p[i] = (char)(' ' + below(95));
    return n;
}

static int fail(const char *what, const struct pm_error *err)
{
    fprintf(stderr, "pm_parquet_write_sample: %s: %s\n", what, err->msg);
    return 1;
}

/** After a failed write or close the file is incomplete: remove it, as parquet_writer.h
 * asks of the caller (tests/test_hostile_inputs.py checks this on a full disk). */
static int fail_remove(const char *what, const struct pm_error *err, struct parquet_writer *w,
                       const char *path)
{
    parquet_writer_free(w);
    if (unlink(path) != 0)
        perror(path);
    return fail(what, err);
}

static int usage(void)
{
    fprintf(stderr, "usage: pm_parquet_write_sample OUT.parquet --codec C --rows N --seed S "
                    "[--row-group-rows R] [--nullable 0|1] [--batch-rows B] "
                    "[--columns NAME,...]\n");
    return 2;
}

int main(int argc, char **argv)
{
    const char *out = NULL, *codec_name = "zstd";
    unsigned long long rows = 0, seed = 0, rg_rows = 0, batch_rows = 777;
    int nullable = 0;
    const char *columns = NULL;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (a[0] != '-') {
            out = a;
            continue;
        }
        if (i + 1 >= argc)
            return usage();
        const char *v = argv[++i];
        if (!strcmp(a, "--codec"))
            codec_name = v;
        else if (!strcmp(a, "--rows"))
            rows = strtoull(v, NULL, 10);
        else if (!strcmp(a, "--seed"))
            seed = strtoull(v, NULL, 10);
        else if (!strcmp(a, "--row-group-rows"))
            rg_rows = strtoull(v, NULL, 10);
        else if (!strcmp(a, "--nullable"))
            nullable = atoi(v);
        else if (!strcmp(a, "--batch-rows"))
            batch_rows = strtoull(v, NULL, 10);
        else if (!strcmp(a, "--columns"))
            columns = v;
        else
            return usage();
    }
    struct parquet_writer_options opt = {PARQUET_CODEC_ZSTD, (size_t)rg_rows};
    static const char *const names[NCOLS] = {"b", "i32", "i64", "f32",   "f64",
                                             "s", "cat", "u",   "zeros", "allnan"};
    static const enum column_type types[NCOLS] = {
        COLUMN_BOOL,   COLUMN_INT32,  COLUMN_INT64,  COLUMN_FLOAT,  COLUMN_DOUBLE,
        COLUMN_STRING, COLUMN_STRING, COLUMN_STRING, COLUMN_DOUBLE, COLUMN_FLOAT};
    if (!out || batch_rows == 0 || parquet_codec_parse(codec_name, &opt.codec) != PM_OK)
        return usage();
    rng_state = seed;

    size_t olen = strlen(out);
    char *exp_path = malloc(olen + 32);
    if (!exp_path)
        return 1;
    size_t base = olen;
    if (olen >= 8 && !strcmp(out + olen - 8, ".parquet"))
        base = olen - 8;
    memcpy(exp_path, out, base);
    strcpy(exp_path + base, ".expected.jsonl");
    FILE *exp = fopen(exp_path, "w");
    if (!exp) {
        perror(exp_path);
        return 1;
    }

    int sel[NCOLS], nsel = 0;
    for (int j = 0; j < NCOLS; j++)
        sel[nsel++] = j;
    if (columns) {
        nsel = 0;
        for (const char *p = columns; *p;) {
            size_t n = strcspn(p, ",");
            int found = -1;
            for (int j = 0; j < NCOLS; j++)
                if (strlen(names[j]) == n && !strncmp(p, names[j], n))
                    found = j;
            if (found < 0 || nsel == NCOLS)
                return usage();
            sel[nsel++] = found;
            p += n + (p[n] == ',');
        }
        if (nsel == 0)
            return usage();
    }
    struct column_info schema[NCOLS];
    for (int k = 0; k < nsel; k++)
        schema[k] = (struct column_info){(char *)names[sel[k]], types[sel[k]], nullable != 0};

    struct pm_error err = PM_ERROR_INIT;
    struct parquet_writer *w = NULL;
    if (parquet_writer_open(&w, out, schema, (size_t)nsel, &opt, &err) != PM_OK)
        return fail("open", &err);
    struct table_batch b;
    if (table_batch_init(&b, schema, (size_t)nsel) != PM_OK)
        return 1;
    struct sample s = {NULL, 0};
    int rc = PM_OK;
    for (uint64_t row = 0; row < rows && rc == PM_OK;) {
        table_batch_clear(&b);
        b.first_row = row;
        uint64_t end = row + batch_rows < rows ? row + batch_rows : rows;
        for (; row < end; row++) {
            fputc('{', exp);
            for (int k = 0; k < nsel && rc == PM_OK; k++) {
                int j = sel[k];
                struct column *c = &b.cols[k];
                fprintf(exp, "%s\"%s\":", k ? "," : "", names[j]);
                uint64_t null_odds = j == COL_ALLNAN ? 2 : 8;
                if (nullable && below(null_odds) == 0) {
                    rc = column_append_null(c);
                    fputs("null", exp);
                    continue;
                }
                switch (j) {
                case COL_B: {
                    int v = (int)(rng() & 1);
                    rc = column_append_int(c, v);
                    fputs(v ? "true" : "false", exp);
                    break;
                }
                case COL_I32: {
                    uint64_t k = below(100);
                    int32_t v = k == 0   ? INT32_MIN
                                : k == 1 ? INT32_MAX
                                : k < 50 ? (int32_t)below(2001) - 1000
                                         : (int32_t)(uint32_t)rng();
                    rc = column_append_int(c, v);
                    fprintf(exp, "%" PRId32, v);
                    break;
                }
                case COL_I64: {
                    uint64_t k = below(100);
                    int64_t v = k == 0   ? INT64_MIN
                                : k == 1 ? INT64_MAX
                                : k < 50 ? (int64_t)below(2000001) - 1000000
                                         : (int64_t)rng();
                    rc = column_append_int(c, v);
                    fprintf(exp, "%" PRId64, v);
                    break;
                }
                case COL_F32:
                case COL_ALLNAN: {
                    uint32_t bits;
                    uint64_t k = below(64);
                    if (j == COL_ALLNAN)
                        bits = k & 1 ? 0x7fc00000 : 0xffc00000 | (uint32_t)below(1 << 22);
                    else if (k < 2)
                        bits = f32_quiet[below(sizeof f32_quiet / 4)];
                    else if (k == 2 && row >= rows / 2) // extremes only in the second half
                        bits = f32_extreme[below(sizeof f32_extreme / 4)];
                    else // a normal number of moderate magnitude
                        bits = (uint32_t)(rng() & 0x807fffff) | (uint32_t)(110 + below(36)) << 23;
                    rc = column_append_real(c, (double)f32_of(bits));
                    fprintf(exp, "\"%08" PRIx32 "\"", bits);
                    break;
                }
                case COL_F64:
                case COL_ZEROS: {
                    uint64_t bits;
                    uint64_t k = below(64);
                    if (j == COL_ZEROS)
                        bits = k < 4 ? 0x7ff8000000000000 : k & 1 ? 0x8000000000000000 : 0;
                    else if (k < 2)
                        bits = f64_quiet[below(sizeof f64_quiet / 8)];
                    else if (k == 2 && row >= rows / 2)
                        bits = f64_extreme[below(sizeof f64_extreme / 8)];
                    else
                        bits = (rng() & 0x800fffffffffffffull) | (uint64_t)(1000 + below(48)) << 52;
                    rc = column_append_real(c, f64_of(bits));
                    fprintf(exp, "\"%016" PRIx64 "\"", bits);
                    break;
                }
                default: {
                    size_t n = gen_string(&s, j, row);
                    rc = column_append_string(c, s.buf, n);
                    put_hex(exp, s.buf, n);
                    break;
                }
                }
            }
            fputs("}\n", exp);
        }
        if (rc != PM_OK) {
            fprintf(stderr, "pm_parquet_write_sample: %s\n", pm_strerror(rc));
            return 1;
        }
        b.nrows = b.cols[0].len;
        rc = parquet_writer_write(w, &b, &err);
        if (rc != PM_OK)
            return fail_remove("write", &err, w, out);
    }
    if (parquet_writer_close(w, &err) != PM_OK)
        return fail_remove("close", &err, w, out);
    parquet_writer_free(w);
    table_batch_release(&b);
    free(s.buf);
    if (fclose(exp) != 0) {
        perror(exp_path);
        return 1;
    }
    free(exp_path);
    return 0;
}
