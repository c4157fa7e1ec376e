/*
 * pm_parquet_dump — print what parquet_reader sees, in a canonical exact text form, so
 * tests can compare it with pyarrow.
 *
 *   pm_parquet_dump FILE [--columns a,b] [--row-groups FIRST:COUNT] [--batch N] [--memory]
 *
 * --memory loads the file into memory and reads it with parquet_reader_open_memory.
 * --quiet reads everything but prints only the schema line and {"rows":N,"seconds":S}
 * (for timing the reader).
 *
 * Line 1: {"num_rows":N,"row_groups":[rows,...],"columns":[{"name":..,"type":..,
 *          "nullable":..,"supported":..},...]}
 * Then one line per row: a JSON-like array of the selected columns' values:
 *   null; true/false; integers in decimal; FLOAT and DOUBLE values as the IEEE-754 bit
 *   pattern of the (widened) double, "0x%016x"; strings in double quotes with bytes
 *   0x20..0x7e except '"' and '\' as themselves, '"' as \", '\' as \\ and every other
 *   byte as \xHH (so the form is byte-exact for any bytes).
 * Also checks batch->first_row continuity. Exit 0 on success, 1 with the reader's
 * message on stderr on a read error, 2 on usage errors.
 */
#include "parquet_reader.h"

#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static void put_string(FILE *out, const char *s, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    putc('"', out);
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (ch == '"' || ch == '\\') {
            putc('\\', out);
            putc(ch, out);
        } else if (ch >= 0x20 && ch <= 0x7e) {
            putc(ch, out);
        } else {
            putc('\\', out);
            putc('x', out);
            putc(hex[ch >> 4], out);
            putc(hex[ch & 15], out);
        }
    }
    putc('"', out);
}

static int usage(void)
{
    fprintf(stderr, "usage: pm_parquet_dump FILE [--columns a,b] [--row-groups FIRST:COUNT] "
                    "[--batch N] [--memory] [--quiet]\n");
    return 2;
}

int main(int argc, char **argv)
{
    const char *path = NULL, *columns = NULL, *groups = NULL;
    size_t batch_rows = 1000;
    bool memory = false, quiet = false;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--columns") && i + 1 < argc)
            columns = argv[++i];
        else if (!strcmp(argv[i], "--row-groups") && i + 1 < argc)
            groups = argv[++i];
        else if (!strcmp(argv[i], "--quiet"))
            quiet = true;
        else if (!strcmp(argv[i], "--memory"))
            memory = true;
        else if (!strcmp(argv[i], "--batch") && i + 1 < argc)
            batch_rows = strtoull(argv[++i], NULL, 10);
        else if (!path && argv[i][0] != '-')
            path = argv[i];
        else
            return usage();
    }
    if (!path || batch_rows == 0)
        return usage();

    static char obuf[1 << 16];
    setvbuf(stdout, obuf, _IOFBF, sizeof obuf);
    struct pm_error err = PM_ERROR_INIT;
    struct parquet_reader *r = NULL;
    char *mem = NULL;
    if (memory) {
        FILE *f = fopen(path, "rb");
        size_t cap = 1 << 16, len = 0;
        mem = malloc(cap);
        while (f && mem) {
            if (len == cap) {
                char *p = realloc(mem, cap *= 2);
                if (!p)
                    break;
                mem = p;
            }
            size_t k = fread(mem + len, 1, cap - len, f);
            if (k == 0)
                break;
            len += k;
        }
        if (!f || !mem) {
            fprintf(stderr, "pm_parquet_dump: cannot read '%s'\n", path);
            return 1;
        }
        fclose(f);
        if (parquet_reader_open_memory(&r, mem, len, path, &err)) {
            fprintf(stderr, "pm_parquet_dump: %s\n", err.msg);
            free(mem);
            return 1;
        }
    } else if (parquet_reader_open(&r, path, &err)) {
        fprintf(stderr, "pm_parquet_dump: %s\n", err.msg);
        return 1;
    }
    size_t ncols = parquet_reader_num_columns(r), ngroups = parquet_reader_num_row_groups(r);
    printf("{\"num_rows\":%" PRId64 ",\"row_groups\":[", parquet_reader_num_rows(r));
    for (size_t g = 0; g < ngroups; g++)
        printf("%s%" PRId64, g ? "," : "", parquet_reader_row_group_rows(r, g));
    printf("],\"columns\":[");
    for (size_t i = 0; i < ncols; i++) {
        const struct column_info *ci = parquet_reader_column(r, i);
        printf("%s{\"name\":", i ? "," : "");
        put_string(stdout, ci->name, strlen(ci->name));
        printf(",\"type\":\"%s\",\"nullable\":%s,\"supported\":%s}", column_type_name(ci->type),
               ci->nullable ? "true" : "false",
               parquet_reader_column_supported(r, i) ? "true" : "false");
    }
    printf("]}\n");

    int rc = 0;
    size_t *sel = calloc(ncols + 1, sizeof *sel);
    struct column_info *schema = calloc(ncols + 1, sizeof *schema);
    size_t nsel = 0;
    struct table_batch batch = TABLE_BATCH_INIT;
    if (!sel || !schema) {
        fprintf(stderr, "pm_parquet_dump: out of memory\n");
        rc = 1;
        goto out;
    }
    if (columns) {
        char *list = strdup(columns);
        for (char *tok = strtok(list, ","); tok; tok = strtok(NULL, ",")) {
            size_t i = 0;
            while (i < ncols && strcmp(parquet_reader_column(r, i)->name, tok))
                i++;
            if (i == ncols || nsel == ncols) {
                fprintf(stderr, "pm_parquet_dump: no column '%s'\n", tok);
                free(list);
                rc = 1;
                goto out;
            }
            sel[nsel++] = i;
        }
        free(list);
    } else {
        for (size_t i = 0; i < ncols; i++)
            sel[nsel++] = i;
    }
    for (size_t i = 0; i < nsel; i++)
        schema[i] = *parquet_reader_column(r, sel[i]);
    if (parquet_reader_select_columns(r, sel, nsel, &err)) {
        fprintf(stderr, "pm_parquet_dump: %s\n", err.msg);
        rc = 1;
        goto out;
    }
    uint64_t next_row = 0;
    if (groups) {
        size_t first = 0, count = 0;
        if (sscanf(groups, "%zu:%zu", &first, &count) != 2) {
            rc = usage();
            goto out;
        }
        if (parquet_reader_set_row_groups(r, first, count, &err)) {
            fprintf(stderr, "pm_parquet_dump: %s\n", err.msg);
            rc = 1;
            goto out;
        }
        for (size_t g = 0; g < first && g < ngroups; g++)
            next_row += (uint64_t)parquet_reader_row_group_rows(r, g);
    }
    if (table_batch_init(&batch, schema, nsel)) {
        fprintf(stderr, "pm_parquet_dump: out of memory\n");
        rc = 1;
        goto out;
    }
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (;;) {
        if (parquet_reader_next(r, &batch, batch_rows, &err)) {
            fflush(stdout);
            fprintf(stderr, "pm_parquet_dump: %s\n", err.msg);
            rc = 1;
            break;
        }
        if (batch.nrows == 0)
            break;
        if (batch.first_row != next_row || batch.nrows > batch_rows) {
            fprintf(stderr,
                    "pm_parquet_dump: batch first_row %" PRIu64 " (%zu rows), "
                    "expected %" PRIu64 "\n",
                    batch.first_row, batch.nrows, next_row);
            rc = 1;
            break;
        }
        for (size_t j = 0; j < nsel; j++) {
            const struct column *c = &batch.cols[j];
            size_t nulls = 0;
            for (size_t i = 0; i < batch.nrows; i++)
                nulls += !c->valid[i];
            if (c->len != batch.nrows || nulls != c->null_count) {
                fprintf(stderr,
                        "pm_parquet_dump: column '%s' has %zu rows / %zu nulls, "
                        "batch %zu / counted %zu\n",
                        c->name, c->len, c->null_count, batch.nrows, nulls);
                rc = 1;
                goto out;
            }
        }
        next_row += batch.nrows;
        if (quiet)
            continue;
        for (size_t i = 0; i < batch.nrows; i++) {
            putchar('[');
            for (size_t j = 0; j < nsel; j++) {
                const struct column *c = &batch.cols[j];
                if (j)
                    putchar(',');
                if (!c->valid[i]) {
                    fputs("null", stdout);
                    continue;
                }
                switch (c->type) {
                case COLUMN_BOOL:
                    fputs(c->ints[i] ? "true" : "false", stdout);
                    break;
                case COLUMN_INT32:
                case COLUMN_INT64:
                    printf("%" PRId64, c->ints[i]);
                    break;
                case COLUMN_FLOAT:
                case COLUMN_DOUBLE: {
                    uint64_t bits;
                    memcpy(&bits, &c->reals[i], 8);
                    printf("\"0x%016" PRIx64 "\"", bits);
                    break;
                }
                case COLUMN_STRING: {
                    size_t n;
                    const char *s = column_string(c, i, &n);
                    put_string(stdout, s, n);
                    break;
                }
                }
            }
            putchar(']');
            putchar('\n');
        }
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    if (quiet && rc == 0)
        printf("{\"rows\":%" PRIu64 ",\"seconds\":%.6f}\n", next_row,
               (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec));
out:
    table_batch_release(&batch);
    free(sel);
    free(schema);
    parquet_reader_free(r);
    free(mem);
    fflush(stdout);
    return rc;
}
