/**
 * filter_expr — metadata filter expressions: `--where` clauses joined by AND.
 *
 * Grammar (one clause; a --where string may hold several joined by `and` or `&&`):
 *   clause  := operand OP value | operand `in` list
 *   operand := COLUMN | min(COLUMN, COLUMN) | max(COLUMN, COLUMN) | len(COLUMN)
 *   OP      := < | <= | > | >= | == | = | !=
 *   value   := number | true | false | 'quoted' | "quoted" | bare-word
 *   list    := ( value, ... ) | [ value, ... ]
 * Column names are letters, digits, '_' and '.'; keywords are case-insensitive.
 *
 * Semantics (chosen to match pyarrow.compute and DuckDB):
 *   - A null (missing) operand never passes; such rows are counted as `missing`.
 *     min/max of two columns is null if either is null.
 *   - Numbers compare as exact real values: an INT column against an integer literal
 *     compares as int64; anything else compares in double precision, where a FLOAT
 *     (float32) value is its exact stored value widened to double, and the literal is
 *     the double nearest its decimal text. NaN never passes (except `!=`).
 *   - len(COLUMN) is the number of Unicode code points of a UTF-8 string (pandas
 *     `str.len()`), counting each byte of invalid UTF-8 that is not a continuation byte.
 *   - Strings compare byte-wise; bool columns compare with true/false/1/0.
 * A filter is parsed once, bound to a schema, then evaluated batch by batch; evaluation
 * is read-only and thread-safe for distinct output buffers.
 */
#ifndef PM_FILTER_EXPR_H
#define PM_FILTER_EXPR_H

#include "column.h"
#include "pm_error.h"

#include <stddef.h>
#include <stdint.h>

struct filter_expr;

/** Parse `n` --where strings into one conjunction. Syntax errors -> PM_ERR_USAGE with
 * the clause and position named. */
int filter_expr_parse(struct filter_expr **out, const char *const *where, size_t n,
                      struct pm_error *err);

/** Free the filter. Accepts NULL. */
void filter_expr_free(struct filter_expr *f);

/** Number of clauses after splitting on `and`. */
size_t filter_expr_num_clauses(const struct filter_expr *f);

/** The normalised text of clause i ("punsafe < 0.1"), for reports. */
const char *filter_expr_clause_text(const struct filter_expr *f, size_t i);

/** Number of distinct columns the filter reads. */
size_t filter_expr_num_columns(const struct filter_expr *f);

/** Name of distinct column i (so callers can read only what the filter needs). */
const char *filter_expr_column(const struct filter_expr *f, size_t i);

/**
 * Resolve column names and types against `schema` (ncols entries). Unknown column ->
 * PM_ERR_NOT_FOUND; an operator that does not fit the column's type (len() of a number,
 * `<` between a string column and a number) -> PM_ERR_USAGE. Must be called before
 * filter_expr_eval, and again if the schema changes.
 */
int filter_expr_bind(struct filter_expr *f, const struct column_info *schema, size_t ncols,
                     struct pm_error *err);

/** Counters accumulated by filter_expr_eval. Owned by the caller; zero-initialise, and
 * size `clause_failed`/`clause_missing` with filter_expr_num_clauses() entries. */
struct filter_counts {
    uint64_t rows;            /* rows evaluated */
    uint64_t kept;            /* rows passing every clause */
    uint64_t missing;         /* rows dropped where at least one clause met a null */
    uint64_t *clause_failed;  /* per clause: rows failing it (null included) */
    uint64_t *clause_missing; /* per clause: rows failing it because of a null */
};

/**
 * Evaluate on every row of `batch` (whose columns follow the bound schema): keep[i] = 1
 * if row i passes every clause, else 0. Adds to `counts` if not NULL.
 */
void filter_expr_eval(const struct filter_expr *f, const struct table_batch *batch,
                      uint8_t *keep, struct filter_counts *counts);

#endif
