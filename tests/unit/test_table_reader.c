/* Unit tests for text_stream, text_value and the table_reader dispatcher (text formats). */
#include "check.h"
#include "table_reader.h"
#include "text_stream.h"
#include "text_value.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zlib.h>
#include <zstd.h>

static size_t gzip_member(const char *src, size_t n, unsigned char *out, size_t cap)
{
    z_stream z;
    memset(&z, 0, sizeof z);
    deflateInit2(&z, 6, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY);
    z.next_in = (unsigned char *)src;
    z.avail_in = (uInt)n;
    z.next_out = out;
    z.avail_out = (uInt)cap;
    deflate(&z, Z_FINISH);
    size_t k = cap - z.avail_out;
    deflateEnd(&z);
    return k;
}

static void read_all(const void *data, size_t size, char *out, size_t cap, size_t *len, int *rc)
{
    struct pm_error err = PM_ERROR_INIT;
    struct text_stream *s;
    *len = 0;
    *rc = text_stream_open_memory(&s, data, size, "mem", &err);
    if (*rc)
        return;
    for (;;) {
        size_t got;
        size_t want = cap - *len < 7 ? cap - *len : 7; // tiny reads cross every boundary
        *rc = text_stream_read(s, out + *len, want, &got, &err);
        if (*rc || got == 0)
            break;
        *len += got;
    }
    text_stream_free(s);
}

static void test_stream(void)
{
    char text[5000];
    for (size_t i = 0; i < sizeof text; i++)
        text[i] = (char)('a' + (i * 7) % 26);
    unsigned char comp[20000];
    size_t half = sizeof text / 2;
    size_t n1 = gzip_member(text, half, comp, sizeof comp);
    size_t n2 = gzip_member(text + half, sizeof text - half, comp + n1, sizeof comp - n1);
    char out[6000];
    size_t len;
    int rc;
    read_all(comp, n1 + n2, out, sizeof out, &len, &rc);
    CHECK(rc == PM_OK && len == sizeof text && memcmp(out, text, len) == 0);
    read_all(comp, n1 + n2 - 5, out, sizeof out, &len, &rc); // truncated second member
    CHECK(rc == PM_ERR_FORMAT);
    size_t z1 = ZSTD_compress(comp, sizeof comp, text, half, 3);
    size_t z2 = ZSTD_compress(comp + z1, sizeof comp - z1, text + half, sizeof text - half, 3);
    read_all(comp, z1 + z2, out, sizeof out, &len, &rc);
    CHECK(rc == PM_OK && len == sizeof text && memcmp(out, text, len) == 0);
    read_all(comp, z1 + z2 - 2, out, sizeof out, &len, &rc);
    CHECK(rc == PM_ERR_FORMAT);
    read_all(text, sizeof text, out, sizeof out, &len, &rc);
    CHECK(rc == PM_OK && len == sizeof text && memcmp(out, text, len) == 0);
    read_all("", 0, out, sizeof out, &len, &rc);
    CHECK(rc == PM_OK && len == 0);
}

static void test_values(void)
{
    int64_t i;
    double d;
    bool b;
    CHECK(text_value_parse_int("9223372036854775807", 19, &i) && i == INT64_MAX);
    CHECK(text_value_parse_int("-9223372036854775808", 20, &i) && i == INT64_MIN);
    CHECK(!text_value_parse_int("9223372036854775808", 19, &i));
    CHECK(!text_value_parse_int("-", 1, &i) && !text_value_parse_int("1 ", 2, &i));
    CHECK(text_value_parse_int("+007", 4, &i) && i == 7);
    CHECK(text_value_parse_double("1e-310", 6, &d) && d == 1e-310);
    CHECK(text_value_parse_double("0.1", 3, &d) && d == 0.1);
    CHECK(!text_value_parse_double("0x10", 4, &d) && !text_value_parse_double(" 1", 2, &d));
    CHECK(!text_value_parse_double("1,5", 3, &d) && !text_value_parse_double("", 0, &d));
    CHECK(text_value_parse_bool("True", 4, &b) && b && text_value_parse_bool("false", 5, &b) && !b);
    CHECK(!text_value_parse_bool("yes", 3, &b));
    struct text_infer t = {0};
    CHECK(text_infer_type(&t) == COLUMN_STRING);
    text_infer_add_text(&t, "1", 1);
    CHECK(text_infer_type(&t) == COLUMN_INT64);
    text_infer_add_text(&t, "1.5", 3);
    CHECK(text_infer_type(&t) == COLUMN_DOUBLE);
    text_infer_add_text(&t, "true", 4);
    CHECK(text_infer_type(&t) == COLUMN_STRING);
}

static void test_names(void)
{
    CHECK_STR(table_format_from_name("a/b.csv"), "csv");
    CHECK_STR(table_format_from_name("x.CSV.gz"), "csv");
    CHECK_STR(table_format_from_name("x.tsv.zst"), "tsv");
    CHECK_STR(table_format_from_name("x.json"), "jsonl");
    CHECK_STR(table_format_from_name("x.jsonl.gz"), "jsonl");
    CHECK_STR(table_format_from_name("x.parquet"), "parquet");
    CHECK(table_format_from_name("x.txt") == NULL);
    CHECK(table_format_from_name("x.gz") == NULL);
}

static void test_reader_parts(void)
{
    char path[] = "/tmp/pm_test_table_readerXXXXXX.csv";
    int fd = mkstemps(path, 4);
    CHECK(fd >= 0);
    if (fd < 0)
        return;
    const char body[] = "a,b\n1,x\n2,y\n3,z\n";
    CHECK(write(fd, body, sizeof body - 1) == (ssize_t)(sizeof body - 1));
    close(fd);
    struct table_reader_options opt = {0};
    opt.batch_rows = 2;
    const char *cols[] = {"b"};
    opt.columns = cols;
    opt.ncolumns = 1;
    struct pm_error err = PM_ERROR_INIT;
    struct table_reader *r;
    CHECK(table_reader_open(&r, path, &opt, &err) == PM_OK);
    CHECK_STR(table_reader_format(r), "csv");
    CHECK(table_reader_num_columns(r) == 1 && table_reader_num_parts(r) == 1);
    CHECK_STR(table_reader_column(r, 0)->name, "b");
    struct table_batch b = TABLE_BATCH_INIT;
    CHECK(table_reader_batch_init(r, &b) == PM_OK);
    CHECK(table_reader_next(r, &b, &err) == PM_OK && b.nrows == 2 && b.first_row == 0);
    CHECK(table_reader_next(r, &b, &err) == PM_OK && b.nrows == 1 && b.first_row == 2);
    size_t n;
    CHECK(memcmp(column_string(&b.cols[0], 0, &n), "z", 1) == 0 && n == 1);
    // Selecting part 0 again rewinds.
    CHECK(table_reader_select_parts(r, 0, 1, &err) == PM_OK);
    CHECK(table_reader_next(r, &b, &err) == PM_OK && b.nrows == 2 && b.first_row == 0);
    CHECK(memcmp(column_string(&b.cols[0], 0, &n), "x", 1) == 0 && n == 1);
    CHECK(table_reader_select_parts(r, 1, 0, &err) == PM_OK);
    CHECK(table_reader_next(r, &b, &err) == PM_OK && b.nrows == 0);
    CHECK(table_reader_select_parts(r, 0, 2, &err) == PM_ERR_USAGE);
    table_batch_release(&b);
    table_reader_free(r);
    const char *bad[] = {"nope"};
    opt.columns = bad;
    CHECK(table_reader_open(&r, path, &opt, &err) == PM_ERR_NOT_FOUND && r == NULL);
    CHECK(strstr(err.msg, "'a', 'b'") != NULL && strstr(err.msg, path) != NULL);
    opt.columns = NULL;
    opt.format = "xml";
    CHECK(table_reader_open(&r, path, &opt, &err) == PM_ERR_USAGE);
    unlink(path);
    opt.format = NULL;
    CHECK(table_reader_open(&r, path, &opt, &err) == PM_ERR_NOT_FOUND);
    table_reader_free(NULL);
}

int main(void)
{
    test_stream();
    test_values();
    test_names();
    test_reader_parts();
    return CHECK_DONE();
}
