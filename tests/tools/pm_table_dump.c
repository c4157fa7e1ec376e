/*
 * pm_table_dump — print what table_reader sees in a file, for the Python tests.
 *
 * Usage: pm_table_dump FILE [--format F] [--columns a,b] [--batch N] [--parts FIRST:COUNT]
 *                           [--infer N] [--max-record N] [--count]
 * Output (JSON lines): first {"format":..,"parts":N,"columns":[{"name":..,"type":..}]},
 * then per batch {"batch":{"first_row":R,"nrows":N}} followed by one JSON array per row.
 * Floats print with 17 significant digits (always with a '.' or exponent; NaN,
 * Infinity, -Infinity as Python's json reads them), so they round-trip bit-exactly;
 * strings are escaped byte-exactly (bytes >= 0x80 raw); nulls are null. With --count
 * only the schema and {"rows":N} are printed. On error the message goes to stderr and
 * the exit status is 1.
 */
#include "table_reader.h"

#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void put_string(FILE *o, const char *s, size_t n)
{
    putc('"', o);
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"' || c == '\\') {
            putc('\\', o);
            putc(c, o);
        } else if (c < 0x20 || c == 0x7f) {
            fprintf(o, "\\u%04x", c);
        } else {
            putc(c, o);
        }
    }
    putc('"', o);
}

static void put_real(FILE *o, double v)
{
    if (isnan(v)) {
        fputs("NaN", o);
    } else if (isinf(v)) {
        fputs(v > 0 ? "Infinity" : "-Infinity", o);
    } else {
        char b[64];
        snprintf(b, sizeof b, "%.17g", v);
        fputs(b, o);
        if (!strpbrk(b, ".e"))
            fputs(".0", o);
    }
}

static int usage(void)
{
    fprintf(stderr, "usage: pm_table_dump FILE [--format F] [--columns a,b] [--batch N] "
                    "[--parts FIRST:COUNT] [--infer N] [--max-record N] [--count]\n");
    return 2;
}

int main(int argc, char **argv)
{
    struct table_reader_options opt = {0};
    const char *path = NULL;
    char *cols = NULL;
    const char *names[256];
    long long pfirst = -1, pcount = -1;
    bool count_only = false;
    unsigned long long total = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "--format") == 0 && v) {
            opt.format = v;
            i++;
        } else if (strcmp(a, "--columns") == 0 && v) {
            cols = strdup(v);
            i++;
        } else if (strcmp(a, "--batch") == 0 && v) {
            opt.batch_rows = strtoull(v, NULL, 10);
            i++;
        } else if (strcmp(a, "--infer") == 0 && v) {
            opt.infer_rows = strtoull(v, NULL, 10);
            i++;
        } else if (strcmp(a, "--max-record") == 0 && v) {
            opt.max_record_bytes = strtoull(v, NULL, 10);
            i++;
        } else if (strcmp(a, "--count") == 0) {
            count_only = true;
        } else if (strcmp(a, "--parts") == 0 && v) {
            if (sscanf(v, "%lld:%lld", &pfirst, &pcount) != 2 || pfirst < 0 || pcount < 0)
                return usage();
            i++;
        } else if (a[0] == '-' || path) {
            return usage();
        } else {
            path = a;
        }
    }
    if (!path)
        return usage();
    if (cols) {
        size_t n = 0;
        for (char *save = NULL, *t = strtok_r(cols, ",", &save); t && n < 256;
             t = strtok_r(NULL, ",", &save))
            names[n++] = t;
        opt.columns = names;
        opt.ncolumns = n;
    }
    struct pm_error err = PM_ERROR_INIT;
    struct table_reader *r = NULL;
    struct table_batch b = TABLE_BATCH_INIT;
    static char obuf[1 << 16];
    setvbuf(stdout, obuf, _IOFBF, sizeof obuf);
    int rc = table_reader_open(&r, path, &opt, &err);
    if (rc == PM_OK && pfirst >= 0)
        rc = table_reader_select_parts(r, (size_t)pfirst, (size_t)pcount, &err);
    if (rc == PM_OK && (rc = table_reader_batch_init(r, &b)) != PM_OK)
        pm_error_set(&err, rc, "cannot initialise a batch");
    if (rc == PM_OK) {
        printf("{\"format\":\"%s\",\"parts\":%zu,\"columns\":[", table_reader_format(r),
               table_reader_num_parts(r));
        for (size_t i = 0; i < table_reader_num_columns(r); i++) {
            const struct column_info *ci = table_reader_column(r, i);
            printf("%s{\"name\":", i ? "," : "");
            put_string(stdout, ci->name, strlen(ci->name));
            printf(",\"type\":\"%s\"}", column_type_name(ci->type));
        }
        printf("]}\n");
    }
    while (rc == PM_OK) {
        rc = table_reader_next(r, &b, &err);
        if (rc || b.nrows == 0)
            break;
        total += b.nrows;
        if (count_only)
            continue;
        printf("{\"batch\":{\"first_row\":%llu,\"nrows\":%zu}}\n", (unsigned long long)b.first_row,
               b.nrows);
        for (size_t row = 0; row < b.nrows; row++) {
            putchar('[');
            for (size_t c = 0; c < b.ncols; c++) {
                const struct column *col = &b.cols[c];
                if (c)
                    putchar(',');
                if (!col->valid[row]) {
                    fputs("null", stdout);
                    continue;
                }
                switch (col->type) {
                case COLUMN_BOOL:
                    fputs(col->ints[row] ? "true" : "false", stdout);
                    break;
                case COLUMN_INT32:
                case COLUMN_INT64:
                    printf("%lld", (long long)col->ints[row]);
                    break;
                case COLUMN_FLOAT:
                case COLUMN_DOUBLE:
                    put_real(stdout, col->reals[row]);
                    break;
                case COLUMN_STRING: {
                    size_t n;
                    const char *s = column_string(col, row, &n);
                    put_string(stdout, s, n);
                    break;
                }
                }
            }
            fputs("]\n", stdout);
        }
    }
    if (rc == PM_OK && count_only)
        printf("{\"rows\":%llu}\n", total);
    fflush(stdout);
    table_batch_release(&b);
    table_reader_free(r);
    free(cols);
    if (rc) {
        fprintf(stderr, "pm_table_dump: %s\n", err.msg[0] ? err.msg : pm_strerror(rc));
        return 1;
    }
    return 0;
}
