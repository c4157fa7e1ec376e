/*
 * fuzz_text_table — libFuzzer target over the CSV, TSV and JSONL readers from memory.
 * The first byte picks the format (and small option values), the rest is the file
 * (which may itself be gzip or zstd: the stream detects the magic bytes).
 */
#include "csv_reader.h"
#include "jsonl_reader.h"
#include "text_stream.h"

#include <stddef.h>
#include <stdint.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    uint8_t sel = data[0];
    struct table_reader_options opt = {0};
    opt.infer_rows = 1 + ((sel >> 2) & 7);           // small windows reach the type checks
    opt.max_record_bytes = (sel & 0x20) ? 64 : 4096; // and the record limit
    const char *only[] = {"a"};
    if (sel & 0x40) {
        opt.columns = only;
        opt.ncolumns = 1;
    }
    struct pm_error err = PM_ERROR_INIT;
    struct text_stream *s;
    if (text_stream_open_memory(&s, data + 1, size - 1, "fuzz", &err))
        return 0;
    struct table_batch b = TABLE_BATCH_INIT;
    size_t max_rows = 1 + (sel >> 7) * 2;
    int fmt = sel & 3;
    if (fmt == 2) {
        struct jsonl_reader *r;
        if (jsonl_reader_open(&r, s, &opt, &err) == PM_OK) {
            size_t n = jsonl_reader_num_columns(r);
            struct column_info info[64];
            if (n <= 64) {
                for (size_t i = 0; i < n; i++)
                    info[i] = *jsonl_reader_column(r, i);
                if (table_batch_init(&b, info, n) == PM_OK)
                    while (jsonl_reader_next(r, &b, max_rows, &err) == PM_OK && b.nrows)
                        ;
            }
            jsonl_reader_free(r);
        }
    } else {
        struct csv_reader *r;
        if (csv_reader_open(&r, s, fmt == 1 ? '\t' : ',', &opt, &err) == PM_OK) {
            size_t n = csv_reader_num_columns(r);
            struct column_info info[64];
            if (n <= 64) {
                for (size_t i = 0; i < n; i++)
                    info[i] = *csv_reader_column(r, i);
                if (table_batch_init(&b, info, n) == PM_OK)
                    while (csv_reader_next(r, &b, max_rows, &err) == PM_OK && b.nrows)
                        ;
            }
            csv_reader_free(r);
        }
    }
    table_batch_release(&b);
    return 0;
}
