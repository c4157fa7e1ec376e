/**
 * parquet_reader — a streaming reader for flat Parquet files.
 *
 * Supports what pyarrow and Spark write for flat schemas: physical types BOOLEAN,
 * INT32, INT64, FLOAT, DOUBLE, BYTE_ARRAY (strings); required and optional columns
 * (RLE/bit-packed definition levels); encodings PLAIN, PLAIN_DICTIONARY and
 * RLE_DICTIONARY (and RLE for booleans); data pages v1 and v2; codecs UNCOMPRESSED,
 * SNAPPY, GZIP and ZSTD; any number of row groups. Anything else (nested or repeated
 * columns, other codecs or encodings, INT96, FIXED_LEN_BYTE_ARRAY) is reported as
 * PM_ERR_UNSUPPORTED naming the column — never decoded into wrong values. Malformed
 * files give PM_ERR_FORMAT naming the file, row group, column and page; no input
 * makes it crash or read out of bounds.
 *
 * Memory is bounded by one decompressed page and one dictionary per selected column
 * plus the caller's batch, whatever the file size. A reader is used by one thread at
 * a time; separate readers on the same file are independent.
 */
#ifndef PM_PARQUET_READER_H
#define PM_PARQUET_READER_H

#include "column.h"
#include "pm_error.h"

#include <stddef.h>
#include <stdint.h>

struct parquet_reader;

/** Open `path` and parse its footer. On success *out owns the file handle. */
int parquet_reader_open(struct parquet_reader **out, const char *path, struct pm_error *err);

/** Same as parquet_reader_open over `size` bytes in memory (not copied: `data` must
 * outlive the reader). `name` is used in error messages. Used by the fuzz target. */
int parquet_reader_open_memory(struct parquet_reader **out, const void *data, size_t size,
                               const char *name, struct pm_error *err);

/** Free the reader. Accepts NULL. */
void parquet_reader_free(struct parquet_reader *r);

/** Total rows in the file (from the footer). */
int64_t parquet_reader_num_rows(const struct parquet_reader *r);

/** Number of row groups. */
size_t parquet_reader_num_row_groups(const struct parquet_reader *r);

/** Rows in row group `rg` (0 when rg is out of range). */
int64_t parquet_reader_row_group_rows(const struct parquet_reader *r, size_t rg);

/** Number of leaf columns in the file schema, supported or not. */
size_t parquet_reader_num_columns(const struct parquet_reader *r);

/** Schema entry i (name, mapped type, nullable). For a column of an unsupported type
 * the entry's type is COLUMN_STRING and parquet_reader_column_supported() is false. */
const struct column_info *parquet_reader_column(const struct parquet_reader *r, size_t i);

/** Whether column i can be read. */
bool parquet_reader_column_supported(const struct parquet_reader *r, size_t i);

/** Read only columns idx[0..n) in that order (default: all columns). Fails with
 * PM_ERR_UNSUPPORTED naming the column when one cannot be read, PM_ERR_NOT_FOUND for
 * an index out of range. Resets the read position to the start of the range. */
int parquet_reader_select_columns(struct parquet_reader *r, const size_t *idx, size_t n,
                                  struct pm_error *err);

/** Restrict reading to row groups [first, first + count) and rewind to `first`.
 * Default: the whole file. Ranks use this to split a file by row groups. */
int parquet_reader_set_row_groups(struct parquet_reader *r, size_t first, size_t count,
                                  struct pm_error *err);

/**
 * Read up to `max_rows` next rows of the selected columns into `batch`, which must
 * have been initialised with the selected columns' schema (in selection order). The
 * batch is cleared first. Sets batch->first_row to the file row index of the first
 * row. At the end of the range returns PM_OK with batch->nrows == 0.
 */
int parquet_reader_next(struct parquet_reader *r, struct table_batch *batch, size_t max_rows,
                        struct pm_error *err);

#endif
