/**
 * parquet_writer — writes flat Parquet files that pyarrow, pandas and Spark read.
 *
 * For our own per-shard metadata tables: columns of BOOL, INT32, INT64, FLOAT, DOUBLE
 * and STRING (UTF8 logical type), required or optional, PLAIN encoding (dictionary
 * encoding for strings where it pays), data pages v1, codec NONE, SNAPPY, GZIP or
 * ZSTD, min/max/null-count statistics per column chunk. Rows are buffered and written
 * as a row group every `row_group_rows` rows and at close.
 *
 * The writer writes `path` directly; making the file appear atomically (temp name +
 * rename) is the caller's job. Used by one thread at a time.
 */
#ifndef PM_PARQUET_WRITER_H
#define PM_PARQUET_WRITER_H

#include "column.h"
#include "pm_error.h"

#include <stddef.h>

enum parquet_codec {
    PARQUET_CODEC_NONE,
    PARQUET_CODEC_SNAPPY,
    PARQUET_CODEC_GZIP,
    PARQUET_CODEC_ZSTD,
};

struct parquet_writer_options {
    enum parquet_codec codec; /* default PARQUET_CODEC_ZSTD when options are NULL */
    size_t row_group_rows;    /* 0 = 1,048,576 */
};

struct parquet_writer;

/** Create `path` (truncating it) for a table with the given schema. Non-nullable
 * columns are written REQUIRED and must not receive nulls. */
int parquet_writer_open(struct parquet_writer **out, const char *path,
                        const struct column_info *schema, size_t ncols,
                        const struct parquet_writer_options *opt, struct pm_error *err);

/** Append the rows of `batch`, whose columns match the schema in order and type. */
int parquet_writer_write(struct parquet_writer *w, const struct table_batch *batch,
                         struct pm_error *err);

/** Flush buffered rows, write the footer, fsync and close the file. After a failure
 * the file is incomplete and should be removed by the caller. */
int parquet_writer_close(struct parquet_writer *w, struct pm_error *err);

/** Free the writer; closes the file without completing it if close was not called.
 * Accepts NULL. */
void parquet_writer_free(struct parquet_writer *w);

/** Parse "none", "snappy", "gzip", "zstd". Returns PM_OK or PM_ERR_USAGE. */
int parquet_codec_parse(const char *name, enum parquet_codec *out);

#endif
