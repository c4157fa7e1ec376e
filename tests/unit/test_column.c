/* Unit tests for the column/batch containers and the bounded byte buffer. */
#include "check.h"
#include "column.h"
#include "pm_error.h"

#include <stdlib.h>

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

int main(void)
{
    test_bytebuf_limit();
    test_columns();
    return CHECK_DONE();
}
