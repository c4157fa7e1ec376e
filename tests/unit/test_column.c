/* Unit tests for the column/batch containers and the bounded byte buffer. */
#include "check.h"
#include "column.h"
#include "pm_error.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void test_bytebuf_limit(void)
{
    struct bytebuf b;
    bytebuf_init(&b, 8);
    CHECK(bytebuf_append(&b, "12345", 5) == PM_OK);
    CHECK(bytebuf_append(&b, "6789", 4) == PM_ERR_LIMIT);
    CHECK(b.len == 5);
    CHECK_STR(b.data, "12345");
    CHECK(bytebuf_printf(&b, "%d", 678) == PM_OK);
    CHECK_STR(b.data, "12345678");
    bytebuf_release(&b);
    bytebuf_release(NULL);
}

static void test_columns(void)
{
    struct column_info schema[] = {
        {"s", COLUMN_STRING, true}, {"i", COLUMN_INT64, true}, {"f", COLUMN_FLOAT, false}};
    struct table_batch b;
    CHECK(table_batch_init(&b, schema, 3) == PM_OK);
    CHECK(table_batch_find(&b, "f") == 2);
    CHECK(table_batch_find(&b, "nope") == -1);
    for (int r = 0; r < 5000; r++) {
        char s[32];
        int n = snprintf(s, sizeof s, "row%d", r);
        if (r % 7 == 0)
            CHECK(column_append_null(&b.cols[0]) == PM_OK);
        else
            CHECK(column_append_string(&b.cols[0], s, (size_t)n) == PM_OK);
        CHECK(column_append_int(&b.cols[1], r) == PM_OK);
        CHECK(column_append_real(&b.cols[2], r * 0.5) == PM_OK);
    }
    b.nrows = 5000;
    size_t n;
    const char *s = column_string(&b.cols[0], 4999, &n);
    CHECK(n == 7 && memcmp(s, "row4999", 7) == 0);
    s = column_string(&b.cols[0], 0, &n);
    CHECK(n == 0 && b.cols[0].valid[0] == 0);
    CHECK(b.cols[0].null_count == 715);
    CHECK(b.cols[1].ints[1234] == 1234);
    CHECK(column_append_int(&b.cols[2], 1) == PM_ERR_INTERNAL);
    table_batch_clear(&b);
    CHECK(b.cols[0].len == 0 && b.cols[0].null_count == 0);
    CHECK(column_append_string(&b.cols[0], "x", 1) == PM_OK);
    s = column_string(&b.cols[0], 0, &n);
    CHECK(n == 1 && s[0] == 'x');
    table_batch_release(&b);
    CHECK_STR(column_type_name(COLUMN_DOUBLE), "double");
    CHECK(column_type_is_numeric(COLUMN_INT32) && !column_type_is_numeric(COLUMN_STRING));
}

static void test_append_range(void)
{
    struct column_info schema[] = {
        {"s", COLUMN_STRING, true}, {"i", COLUMN_INT32, true}, {"d", COLUMN_DOUBLE, true}};
    struct table_batch a, b;
    CHECK(table_batch_init(&a, schema, 3) == PM_OK);
    CHECK(table_batch_init(&b, schema, 3) == PM_OK);
    for (int i = 0; i < 10; i++) {
        char t[16];
        int n = snprintf(t, sizeof t, "v%d", i);
        CHECK((i % 3 ? column_append_string(&a.cols[0], t, (size_t)n)
                     : column_append_null(&a.cols[0])) == PM_OK);
        CHECK((i % 4 ? column_append_int(&a.cols[1], i) : column_append_null(&a.cols[1])) ==
              PM_OK);
        CHECK(column_append_real(&a.cols[2], i * 0.5) == PM_OK);
    }
    a.nrows = 10;
    CHECK(table_batch_append_range(&b, &a, 2, 5) == PM_OK);
    CHECK(table_batch_append_range(&b, &a, 9, 1) == PM_OK);
    CHECK(table_batch_append_range(&b, &a, 8, 3) == PM_ERR_USAGE);
    CHECK(b.nrows == 6 && b.cols[0].len == 6 && b.cols[2].len == 6);
    size_t n;
    const char *s = column_string(&b.cols[0], 0, &n); // row 2
    CHECK(n == 2 && !memcmp(s, "v2", 2) && b.cols[0].valid[0]);
    CHECK(!b.cols[0].valid[1]); // row 3 was null
    CHECK(!b.cols[1].valid[2]); // row 4 was null
    CHECK(b.cols[1].ints[3] == 5 && b.cols[2].reals[5] == 4.5);
    CHECK(b.cols[0].null_count == 3 && b.cols[1].null_count == 1); // rows 3, 6, 9; row 4
    s = column_string(&b.cols[0], 5, &n); // row 9
    CHECK(n == 0 && !b.cols[0].valid[5]);
    struct column_info other[] = {
        {"s", COLUMN_STRING, true}, {"i", COLUMN_INT64, true}, {"d", COLUMN_DOUBLE, true}};
    struct table_batch c;
    CHECK(table_batch_init(&c, other, 3) == PM_OK);
    CHECK(table_batch_append_range(&c, &a, 0, 1) == PM_ERR_USAGE);
    table_batch_release(&a);
    table_batch_release(&b);
    table_batch_release(&c);
}

int main(void)
{
    test_append_range();
    test_bytebuf_limit();
    test_columns();
    return CHECK_DONE();
}
