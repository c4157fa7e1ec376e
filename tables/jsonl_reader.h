/**
 * jsonl_reader — streaming JSON Lines reader (jansson) producing typed column batches.
 *
 * Syntax: one JSON object per line (LF or CRLF); lines holding only white space are
 * skipped; a UTF-8 BOM at the start is skipped; the last line may lack its newline. A
 * line that is not valid JSON, or valid JSON but not an object, is PM_ERR_FORMAT naming
 * the file, line and jansson's message. A line longer than max_record_bytes is
 * PM_ERR_LIMIT. Numbers are limited to what jansson reads: integers must fit int64 and
 * reals must be finite (others are PM_ERR_FORMAT). Duplicate keys: the last one wins.
 *
 * Columns: the keys seen in the first infer_rows objects, in order of first appearance.
 * A key missing from an object is null there. A key first seen after the inference
 * window is PM_ERR_FORMAT naming the file, line and key — unless the caller selected
 * columns, in which case other keys are ignored. A selected name not among the window's
 * keys is PM_ERR_NOT_FOUND listing them.
 * More than TEXT_MAX_COLUMNS (16384) distinct keys in the window is PM_ERR_LIMIT.
 *
 * Types from the window's non-null values: only integers -> INT64, integers and reals
 * -> DOUBLE, only booleans -> BOOL, anything else -> STRING. In a STRING column a JSON
 * string is its bytes (\u0000 included) and any other value (array, object, number,
 * boolean) is its compact JSON text as jansson writes it (JSON_COMPACT: no spaces, keys
 * in input order, non-ASCII kept as UTF-8, reals with 17 significant digits). A later
 * value that does not fit its column (e.g. 1.5 or "x" in an INT64 column) is
 * PM_ERR_FORMAT naming the file, line, column and the value. The window's raw lines are
 * kept in memory until they are returned. One thread at a time.
 */
#ifndef PM_JSONL_READER_H
#define PM_JSONL_READER_H

#include "column.h"
#include "pm_error.h"
#include "table_reader.h"
#include "text_stream.h"

#include <stddef.h>

struct jsonl_reader;

/** Read the inference window from `s` (taken over: freed with the reader or on
 * failure). Uses opt->columns, infer_rows and max_record_bytes (0 = defaults). */
int jsonl_reader_open(struct jsonl_reader **out, struct text_stream *s,
                      const struct table_reader_options *opt, struct pm_error *err);

/** Free the reader and its stream. Accepts NULL. */
void jsonl_reader_free(struct jsonl_reader *r);

/** Number of columns read (after selection). */
size_t jsonl_reader_num_columns(const struct jsonl_reader *r);

/** Schema entry i of the columns read (nullable is always true). */
const struct column_info *jsonl_reader_column(const struct jsonl_reader *r, size_t i);

/** Clear `batch` (initialised with this schema) and fill it with up to max_rows next
 * rows; batch->first_row is the 0-based data row index. nrows == 0 at the end. */
int jsonl_reader_next(struct jsonl_reader *r, struct table_batch *batch, size_t max_rows,
                      struct pm_error *err);

#endif
