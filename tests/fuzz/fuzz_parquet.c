/*
 * fuzz_parquet — libFuzzer target for parquet_reader: open the input with
 * parquet_reader_open_memory, then read every batch of every readable column.
 * Seed corpus: tests/fuzz/corpus/parquet/.
 */
#include "parquet_reader.h"

#include <stdint.h>
#include <stdlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct pm_error err = PM_ERROR_INIT;
    struct parquet_reader *r = NULL;
    if (parquet_reader_open_memory(&r, data, size, "fuzz", &err))
        return 0;
    size_t ncols = parquet_reader_num_columns(r);
    size_t *sel = calloc(ncols + 1, sizeof *sel);
    struct column_info *schema = calloc(ncols + 1, sizeof *schema);
    size_t nsel = 0;
    for (size_t i = 0; sel && schema && i < ncols; i++) {
        if (parquet_reader_column_supported(r, i)) {
            schema[nsel] = *parquet_reader_column(r, i);
            sel[nsel++] = i;
        }
    }
    struct table_batch batch = TABLE_BATCH_INIT;
    if (sel && schema && !parquet_reader_select_columns(r, sel, nsel, &err) &&
        !table_batch_init(&batch, schema, nsel)) {
        // Also exercise a row-group range when there are several.
        size_t ng = parquet_reader_num_row_groups(r);
        if (ng > 1 && (size & 1))
            parquet_reader_set_row_groups(r, 1, ng - 1, &err);
        // Bound the work: a tiny input can claim billions of all-null rows.
        size_t total = 0;
        while (total < 1000000 && !parquet_reader_next(r, &batch, 1 + (size % 4096), &err) &&
               batch.nrows)
            total += batch.nrows;
    }
    table_batch_release(&batch);
    free(sel);
    free(schema);
    parquet_reader_free(r);
    return 0;
}
