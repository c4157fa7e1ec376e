/* Unit tests for the parquet_reader API contract (values are checked against pyarrow
 * in tests/test_parquet_reader.py). Uses a small committed pyarrow file: 60 rows in row
 * groups of 25/25/10, columns i32 i64 f d b s (all nullable). */
#include "check.h"
#include "parquet_reader.h"

#include <stdlib.h>

#define SAMPLE "tests/fuzz/corpus/parquet/none_v1_plain.parquet"

static void test_metadata(void)
{
    struct pm_error err = PM_ERROR_INIT;
    struct parquet_reader *r = NULL;
    CHECK(parquet_reader_open(&r, "tests/no/such.parquet", &err) == PM_ERR_NOT_FOUND);
    CHECK(r == NULL);
    CHECK(strstr(err.msg, "no/such.parquet") != NULL);
    CHECK(parquet_reader_open(&r, SAMPLE, &err) == PM_OK);
    if (!r)
        return;
    CHECK(parquet_reader_num_rows(r) == 60);
    CHECK(parquet_reader_num_row_groups(r) == 3);
    CHECK(parquet_reader_row_group_rows(r, 0) == 25);
    CHECK(parquet_reader_row_group_rows(r, 2) == 10);
    CHECK(parquet_reader_row_group_rows(r, 3) == 0);
    CHECK(parquet_reader_num_columns(r) == 6);
    CHECK_STR(parquet_reader_column(r, 1)->name, "i64");
    CHECK(parquet_reader_column(r, 1)->type == COLUMN_INT64);
    CHECK(parquet_reader_column(r, 0)->type == COLUMN_INT32);
    CHECK(parquet_reader_column(r, 2)->type == COLUMN_FLOAT);
    CHECK(parquet_reader_column(r, 4)->type == COLUMN_BOOL);
    CHECK(parquet_reader_column(r, 5)->type == COLUMN_STRING);
    CHECK(parquet_reader_column(r, 5)->nullable);
    CHECK(parquet_reader_column(r, 6) == NULL);
    CHECK(parquet_reader_column_supported(r, 5));
    CHECK(!parquet_reader_column_supported(r, 6));
    size_t bad[] = {0, 6};
    CHECK(parquet_reader_select_columns(r, bad, 2, &err) == PM_ERR_NOT_FOUND);
    CHECK(parquet_reader_set_row_groups(r, 2, 2, &err) == PM_ERR_USAGE);
    CHECK(parquet_reader_set_row_groups(r, 3, 0, &err) == PM_OK);
    parquet_reader_free(r);
    parquet_reader_free(NULL);
}

static void test_batches(void)
{
    struct pm_error err = PM_ERROR_INIT;
    struct parquet_reader *r = NULL;
    CHECK(parquet_reader_open(&r, SAMPLE, &err) == PM_OK);
    if (!r)
        return;
    size_t sel[] = {5, 0};
    CHECK(parquet_reader_select_columns(r, sel, 2, &err) == PM_OK);
    struct column_info schema[] = {*parquet_reader_column(r, 5), *parquet_reader_column(r, 0)};
    struct table_batch b = TABLE_BATCH_INIT, wrong = TABLE_BATCH_INIT;
    CHECK(table_batch_init(&wrong, schema, 1) == PM_OK);
    CHECK(parquet_reader_next(r, &wrong, 10, &err) == PM_ERR_USAGE);
    table_batch_release(&wrong);
    CHECK(table_batch_init(&b, schema, 2) == PM_OK);

    // Whole file in batches of 30: batches may span row groups.
    int64_t all[60];
    uint64_t expect_first = 0;
    size_t total = 0;
    for (;;) {
        CHECK(parquet_reader_next(r, &b, 30, &err) == PM_OK);
        if (b.nrows == 0)
            break;
        CHECK(b.first_row == expect_first);
        CHECK(b.nrows <= 30);
        CHECK(b.cols[0].len == b.nrows && b.cols[1].len == b.nrows);
        for (size_t i = 0; i < b.nrows && total + i < 60; i++)
            all[total + i] = b.cols[1].valid[i] ? b.cols[1].ints[i] : -1;
        expect_first += b.nrows;
        total += b.nrows;
    }
    CHECK(total == 60);
    CHECK(parquet_reader_next(r, &b, 30, &err) == PM_OK && b.nrows == 0);

    // Row group 1 alone: rows 25..49, the same values.
    CHECK(parquet_reader_set_row_groups(r, 1, 1, &err) == PM_OK);
    CHECK(parquet_reader_next(r, &b, 1000, &err) == PM_OK);
    CHECK(b.nrows == 25 && b.first_row == 25);
    for (size_t i = 0; i < b.nrows; i++)
        CHECK((b.cols[1].valid[i] ? b.cols[1].ints[i] : -1) == all[25 + i]);
    CHECK(parquet_reader_next(r, &b, 1000, &err) == PM_OK && b.nrows == 0);

    // Re-selecting rewinds to the start of the range.
    CHECK(parquet_reader_select_columns(r, sel, 2, &err) == PM_OK);
    CHECK(parquet_reader_next(r, &b, 5, &err) == PM_OK);
    CHECK(b.nrows == 5 && b.first_row == 25);
    table_batch_release(&b);
    parquet_reader_free(r);
}

static void test_garbage(void)
{
    struct pm_error err = PM_ERROR_INIT;
    struct parquet_reader *r = NULL;
    static const char junk[] = "PAR1 this is not really a parquet file \x05\x00\x00\x00PAR1";
    CHECK(parquet_reader_open_memory(&r, junk, sizeof junk - 1, "junk", &err) == PM_ERR_FORMAT);
    CHECK(r == NULL);
    CHECK(strstr(err.msg, "'junk'") != NULL);
    CHECK(parquet_reader_open_memory(&r, "", 0, "empty", &err) == PM_ERR_FORMAT);
}

int main(void)
{
    test_metadata();
    test_batches();
    test_garbage();
    return CHECK_DONE();
}
