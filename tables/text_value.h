/**
 * text_value — the value rules shared by the text table readers (CSV, TSV, JSONL):
 * exact number parsing independent of the locale, type inference bookkeeping, column
 * selection by name and quoting of values in error messages.
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

#endif
