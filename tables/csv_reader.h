/**
 * csv_reader — streaming CSV/TSV reader (RFC 4180) producing typed column batches.
 *
 * Syntax: the first record is the header and gives the column names (duplicates are an
 * error). Fields are separated by the delimiter (',' for CSV, '\t' for TSV); records
 * end with LF or CRLF (a CR not followed by LF is data). A field that starts with '"'
 * is quoted: it may hold delimiters, CR/LF and doubled quotes ("" -> "), and must be
 * followed by a delimiter, the record end or the end of input. A '"' inside an
 * unquoted field is literal. TSV honours quotes exactly like CSV, because that is what
 * pandas `to_csv(sep='\t')` writes (QUOTE_MINIMAL: fields holding tabs, quotes or
 * newlines are quoted) and `read_csv(sep='\t')` reads. A UTF-8 BOM at the start is
 * skipped; empty lines are skipped (as pandas does); the last record may lack its
 * newline. Every record must have as many fields as the header, else PM_ERR_FORMAT
 * naming the file, line and both counts. A record longer than max_record_bytes is
 * PM_ERR_LIMIT, and so is a header of more than TEXT_MAX_COLUMNS (16384) fields. An
 * unterminated quote is PM_ERR_FORMAT naming the line it started on.
 *
 * Values and types: see text_value.h and table_reader.h. An empty field, quoted or
 * not, is null in every column type (pandas' default reads it as NaN). Unlike pandas,
 * the strings "NA", "NaN", "null", "None"... are NOT nulls: they are data (pandas users
 * get the same with keep_default_na=False, na_values=['']). Types are inferred from the
 * first infer_rows records; those records are kept in memory until they are returned.
 * Line numbers are 1-based physical lines (the header is line 1, counting newlines
 * inside quoted fields). One thread at a time.
 */
#ifndef PM_CSV_READER_H
#define PM_CSV_READER_H

#include "column.h"
#include "pm_error.h"
#include "table_reader.h"
#include "text_stream.h"

#include <stddef.h>

struct csv_reader;

/**
 * Read the header and the inference window from `s` (taken over: freed with the
 * reader, or on failure). `delim` is ',' or '\t'. Uses opt->columns, infer_rows and
 * max_record_bytes (0 = defaults). On failure *out is NULL and err names the file.
 */
int csv_reader_open(struct csv_reader **out, struct text_stream *s, char delim,
                    const struct table_reader_options *opt, struct pm_error *err);

/** Free the reader and its stream. Accepts NULL. */
void csv_reader_free(struct csv_reader *r);

/** Number of columns read (after selection). */
size_t csv_reader_num_columns(const struct csv_reader *r);

/** Schema entry i of the columns read (nullable is always true). */
const struct column_info *csv_reader_column(const struct csv_reader *r, size_t i);

/** Clear `batch` (initialised with this schema) and fill it with up to max_rows next
 * rows; batch->first_row is the 0-based data row index. nrows == 0 at the end. */
int csv_reader_next(struct csv_reader *r, struct table_batch *batch, size_t max_rows,
                    struct pm_error *err);

#endif
