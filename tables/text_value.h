/**
 * text_value — the value rules shared by the text table readers (CSV, TSV, JSONL):
 * exact number parsing independent of the locale, type inference bookkeeping, column
 * selection by name, the selected columns' schema, typed appends and quoting of values
 * in error messages.
 *
 * Number syntax (CSV/TSV fields): an integer is an optional sign and 1+ ASCII digits
 * that fit int64 (parsed like strtoll); a number is anything strtod() in the "C" locale
 * consumes completely, except hexadecimal forms and leading/trailing white space
 * (so "1e-300", "-0.5", "inf", "nan" are numbers; " 1", "0x10", "1,5" are not). A
 * boolean is True/TRUE/true or False/FALSE/false (what pandas accepts by default).
 * Thread-safe.
 */
#ifndef PM_TEXT_VALUE_H
#define PM_TEXT_VALUE_H

#include "column.h"
#include "pm_error.h"
#include "table_reader.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/** Most columns a text file may have (CSV header fields, JSONL keys in the inference
 * window); more is PM_ERR_LIMIT. Batches hold batch_rows slots per column, so a wider
 * header would let a single line of input demand gigabytes. */
#define TEXT_MAX_COLUMNS 16384

/** Parse s[0..n) as an int64 (see above). Returns false if it is not one. */
bool text_value_parse_int(const char *s, size_t n, int64_t *out);

/** Parse s[0..n) as a double, correctly rounded like strtod in the "C" locale. */
bool text_value_parse_double(const char *s, size_t n, double *out);

/** Parse s[0..n) as a boolean. */
bool text_value_parse_bool(const char *s, size_t n, bool *out);

/** What the inference window saw in one column. */
struct text_infer {
    bool ints, reals, bools, strings;
};

/** Record one non-null CSV field value. */
void text_infer_add_text(struct text_infer *t, const char *s, size_t n);

/** The inferred type: only ints -> INT64, ints/reals -> DOUBLE, only bools -> BOOL,
 * anything else (including a column with no values at all) -> STRING. */
enum column_type text_infer_type(const struct text_infer *t);

/** Append s[0..n) to `c` parsed as its type (the rules above); n == 0 appends a null.
 * Returns PM_ERR_FORMAT when the text is not a value of that type, PM_ERR_NOMEM. */
int text_value_append(struct column *c, const char *s, size_t n);

/** Write s[0..n) into out (size cap) for a message: at most ~60 bytes, control bytes
 * and quotes escaped, "..." appended when truncated. Returns out. */
char *text_value_quote(char *out, size_t cap, const char *s, size_t n);

/**
 * Resolve a column selection against the available names. With `want` NULL, selects
 * all: idx[i] = i. Otherwise idx[i] is the index of want[i] in `names`; an unknown name
 * is PM_ERR_NOT_FOUND listing the available columns, prefixed by `file`. `idx` must
 * hold max(nwant, nnames) entries; *nsel is set to the number selected.
 */
int text_select_columns(const char *file, char *const *names, size_t nnames,
                        const char *const *want, size_t nwant, size_t *idx, size_t *nsel,
                        struct pm_error *err);

/** The columns a text reader returns: the file column (CSV field, JSONL key) each one
 * reads and its schema entry. */
struct text_columns {
    size_t n;
    size_t *sel;              /* n entries: index into the reader's names */
    struct column_info *info; /* n entries; names owned */
};

/**
 * Select opt->columns (all when opt or opt->columns is NULL) among names[0..nnames) as
 * text_select_columns does, and fill `tc` (zeroed first): info[j].name is a copy,
 * nullable is true and type is COLUMN_STRING until the caller sets it. Release `tc`
 * with text_columns_release, on failure too. Errors name `file`.
 */
int text_columns_select(struct text_columns *tc, const char *file, char *const *names,
                        size_t nnames, const struct table_reader_options *opt,
                        struct pm_error *err);

/** Free what `tc` owns and zero it. Accepts NULL. */
void text_columns_release(struct text_columns *tc);

/** Schema entry i, NULL when out of range. */
const struct column_info *text_columns_get(const struct text_columns *tc, size_t i);

/** Start a reader's next batch: clear `batch` and set its first_row; PM_ERR_USAGE
 * (naming `file`) when the batch does not have tc->n columns. */
int text_columns_start_batch(const struct text_columns *tc, const char *file,
                             struct table_batch *batch, uint64_t first_row, struct pm_error *err);

/**
 * Report a failed append (code rc) of a value to column `column` of type `type` at
 * `line` of `file`: PM_ERR_FORMAT says that the value, s[0..n) quoted, does not fit the
 * type inferred from the first rows; any other code that the value could not be stored.
 * Returns rc.
 */
int text_value_append_error(const char *file, uint64_t line, const char *column,
                            enum column_type type, int rc, const char *s, size_t n,
                            struct pm_error *err);

#endif
