/**
 * table_reader — one streaming interface over every input metadata format.
 *
 * Formats: CSV and TSV (RFC 4180: quoted fields with embedded delimiters, quotes and
 * newlines; first line is the header), JSONL (one JSON object per line; nested values
 * are kept as their JSON text), and Parquet. CSV, TSV and JSONL may be gzip- or
 * zstd-compressed (by extension .gz/.zst, or detected from the magic bytes).
 *
 * Types: Parquet columns keep their stored types. Text formats infer each column's type
 * from the first `infer_rows` rows: all values integers -> INT64, numbers -> DOUBLE,
 * true/false -> BOOL, otherwise STRING; empty CSV fields and JSON null are nulls. A
 * later value that does not fit the inferred type is an error naming the file, line and
 * column.
 *
 * The exact text rules (quoting, TSV, nulls, numbers, JSON keys and nested values) are in
 * csv_reader.h, jsonl_reader.h and text_value.h. In short: only the empty CSV field is
 * null (in every column type; "NA"/"null" are data), a column with no value in the
 * inference window is STRING, a JSONL key first seen after the window is an error
 * unless columns were selected. Text formats have one part; selecting it again after
 * reading rewinds by reopening the file, selecting no part reads nothing.
 *
 * Memory is bounded by the batch size and (text) the longest record or (Parquet) one
 * page per column, never by the file size. Errors name the file and the line (text) or
 * the row group (Parquet). One thread at a time per reader.
 */
#ifndef PM_TABLE_READER_H
#define PM_TABLE_READER_H

#include "column.h"
#include "pm_error.h"

#include <stddef.h>

struct table_reader_options {
    const char *format;         /* "csv", "tsv", "jsonl", "parquet"; NULL: from the name */
    const char *const *columns; /* read only these, in this order; NULL: all */
    size_t ncolumns;
    size_t batch_rows; /* rows per batch; 0 = 65,536 */
    size_t infer_rows; /* text formats: rows used to infer types; 0 = 65,536 */
    size_t max_record_bytes; /* text formats: longest line/record; 0 = 64 MiB */
};

struct table_reader;

/** Open `path`. Reads enough to know the schema (header, footer or inference rows). */
int table_reader_open(struct table_reader **out, const char *path,
                      const struct table_reader_options *opt, struct pm_error *err);

/** Free the reader. Accepts NULL. */
void table_reader_free(struct table_reader *r);

/** The format in use: "csv", "tsv", "jsonl" or "parquet". */
const char *table_reader_format(const struct table_reader *r);

/** Number of columns read (after selection). */
size_t table_reader_num_columns(const struct table_reader *r);

/** Schema entry i of the columns read. */
const struct column_info *table_reader_column(const struct table_reader *r, size_t i);

/** Independently readable parts: Parquet row groups; 1 for text formats. */
size_t table_reader_num_parts(const struct table_reader *r);

/** Read only parts [first, first + count) from now on, starting at `first`. */
int table_reader_select_parts(struct table_reader *r, size_t first, size_t count,
                              struct pm_error *err);

/** Initialise `batch` with this reader's schema. */
int table_reader_batch_init(const struct table_reader *r, struct table_batch *batch);

/** Fill `batch` (cleared first) with the next rows; batch->nrows == 0 at the end. */
int table_reader_next(struct table_reader *r, struct table_batch *batch, struct pm_error *err);

/** Guess the format from a file name ("x.csv.gz" -> "csv"). NULL if unknown. */
const char *table_format_from_name(const char *path);

#endif
