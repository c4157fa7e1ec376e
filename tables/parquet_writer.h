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
 *
 * Pages are ~1 MiB (at most 131,072 values). A STRING column chunk is dictionary-encoded
 * (RLE_DICTIONARY) until its dictionary passes 1 MiB, after which the rest of that chunk
 * is PLAIN. Memory: one row group's encoded (compressed) pages plus one open page and
 * dictionary per column. Statistics: null_count and min/max (signed for integers, NaN
 * ignored and zeros written as -0.0 / +0.0 for floats, unsigned bytes for strings; no
 * min/max when a chunk has no non-null non-NaN value). The footer says created_by
 * "pixelmill VERSION".
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
 * columns are written REQUIRED and must not receive nulls. `opt` may be NULL. The
 * schema is copied. Returns PM_OK and sets *out, PM_ERR_USAGE for a bad schema (no
 * columns, a column without a name, unknown type or codec), PM_ERR_IO when the file
 * cannot be created or written (ENOSPC included; the message names the file). */
int parquet_writer_open(struct parquet_writer **out, const char *path,
                        const struct column_info *schema, size_t ncols,
                        const struct parquet_writer_options *opt, struct pm_error *err);

/** Append the rows of `batch`, whose columns match the schema in order and type (names
 * are not compared) and each hold batch->nrows rows. The batch is checked before
 * anything is buffered: PM_ERR_USAGE (wrong column count, type or length, a null in a
 * REQUIRED column, an INT32 value outside int32) or PM_ERR_LIMIT (a string over 2 GiB)
 * leave the writer as it was. Row groups that fill up are written to the file; a
 * failure there (PM_ERR_IO, PM_ERR_NOMEM, PM_ERR_LIMIT) is final: later calls return
 * it again and only parquet_writer_free remains useful. The caller keeps the batch. */
int parquet_writer_write(struct parquet_writer *w, const struct table_batch *batch,
                         struct pm_error *err);

/** Flush buffered rows, write the footer, fsync and close the file. After a failure
 * the file is incomplete and should be removed by the caller. Returns PM_OK, the
 * failure (PM_ERR_IO naming the file, ...), or PM_ERR_USAGE if already closed. The
 * writer must still be freed. */
int parquet_writer_close(struct parquet_writer *w, struct pm_error *err);

/** Free the writer; closes the file without completing it if close was not called.
 * Accepts NULL. */
void parquet_writer_free(struct parquet_writer *w);

/** Parse "none", "snappy", "gzip", "zstd" (any case; "uncompressed" = "none"). Returns
 * PM_OK or PM_ERR_USAGE. */
int parquet_codec_parse(const char *name, enum parquet_codec *out);

#endif
