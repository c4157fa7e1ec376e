/**
 * column — typed, nullable columns and the row batches every table reader produces.
 *
 * A batch is a set of columns of equal length, the unit in which the readers
 * (CSV, TSV, JSONL, Parquet) hand rows to the stages and in which the Parquet writer
 * takes them. Values are stored column-wise:
 *   - BOOL, INT32, INT64 in `ints` (bools as 0/1, int32 widened);
 *   - FLOAT, DOUBLE in `reals` (a FLOAT value is the exact float32 value, widened);
 *   - STRING bytes in `chars`, value i at chars.data[offsets[i] .. offsets[i+1]).
 * `valid[i]` is 1 where row i has a value and 0 where it is null; a null row still
 * occupies a slot (0, 0.0 or an empty string). Strings are byte strings: readers do
 * not validate UTF-8. A batch owns its columns, a column owns its memory. Not
 * thread-safe; one owner at a time.
 */
#ifndef PM_COLUMN_H
#define PM_COLUMN_H

#include "bytebuf.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum column_type {
    COLUMN_BOOL,
    COLUMN_INT32,
    COLUMN_INT64,
    COLUMN_FLOAT,  /* IEEE binary32 */
    COLUMN_DOUBLE, /* IEEE binary64 */
    COLUMN_STRING, /* bytes; UTF-8 where the source says so */
};

/** Name of a type as shown to users and in JSON: "bool", "int32", "int64", "float",
 * "double", "string". */
const char *column_type_name(enum column_type type);

/** True for INT32, INT64, FLOAT and DOUBLE. */
bool column_type_is_numeric(enum column_type type);

/** Schema entry: a column's name, type and whether it may hold nulls. */
struct column_info {
    char *name;
    enum column_type type;
    bool nullable;
};

struct column {
    char *name; /* owned copy */
    enum column_type type;
    size_t len;        /* rows held */
    size_t cap;        /* rows allocated */
    size_t null_count; /* rows with valid[i] == 0 */
    uint8_t *valid;
    int64_t *ints;     /* BOOL, INT32, INT64 */
    double *reals;     /* FLOAT, DOUBLE */
    uint64_t *offsets; /* STRING: cap + 1 entries, offsets[0] == 0 */
    struct bytebuf chars;
};

/** Initialise an empty column. Copies `name`. Returns PM_OK or PM_ERR_NOMEM. */
int column_init(struct column *c, const char *name, enum column_type type);

/** Free everything the column owns. Accepts NULL. */
void column_release(struct column *c);

/** Drop all rows, keeping the allocated memory. */
void column_clear(struct column *c);

/** Make room for `rows` more rows. Returns PM_OK or PM_ERR_NOMEM. */
int column_reserve(struct column *c, size_t rows);

/** Append a null. */
int column_append_null(struct column *c);

/** Append an integer (BOOL, INT32, INT64 columns). */
int column_append_int(struct column *c, int64_t v);

/** Append a real (FLOAT, DOUBLE columns; FLOAT callers pass an exact float32 value). */
int column_append_real(struct column *c, double v);

/** Append a string of n bytes (STRING columns). */
int column_append_string(struct column *c, const char *s, size_t n);

/**
 * Append rows [first, first + n) of `src` (same type; the caller checks the range) to `c`,
 * values and nulls alike. Returns PM_OK, PM_ERR_USAGE (type mismatch or range outside src)
 * or PM_ERR_NOMEM/PM_ERR_LIMIT (c keeps the rows appended before the failure).
 */
int column_append_range(struct column *c, const struct column *src, size_t first, size_t n);

/** Row i of a STRING column: returns a pointer into the column and sets *n. */
static inline const char *column_string(const struct column *c, size_t i, size_t *n)
{
    *n = (size_t)(c->offsets[i + 1] - c->offsets[i]);
    return c->chars.data ? c->chars.data + c->offsets[i] : "";
}

/** A set of equal-length columns. `first_row` is the index, within its source file,
 * of the batch's first row (0-based), so errors and keys can name input rows. */
struct table_batch {
    size_t ncols;
    struct column *cols;
    size_t nrows;
    uint64_t first_row;
};

#define TABLE_BATCH_INIT {0, NULL, 0, 0}

/** Initialise a batch with one empty column per schema entry. */
int table_batch_init(struct table_batch *b, const struct column_info *schema, size_t ncols);

/** Free the batch's columns. Accepts NULL. */
void table_batch_release(struct table_batch *b);

/** Drop all rows of every column, keeping memory and schema. */
void table_batch_clear(struct table_batch *b);

/**
 * Append rows [first, first + n) of `src` to `dst`, column by column (same number of
 * columns, same types in order; names are not compared). Returns PM_OK, PM_ERR_USAGE
 * (shapes differ or the range is outside src) or PM_ERR_NOMEM; on failure dst may hold
 * part of the rows and should be cleared.
 */
int table_batch_append_range(struct table_batch *dst, const struct table_batch *src,
                             size_t first, size_t n);

/** Index of the column named `name`, or -1. */
int table_batch_find(const struct table_batch *b, const char *name);

#endif
