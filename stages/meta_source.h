/**
 * meta_source — the metadata a tuning command (filter, sweep, sheet, dedupe) reads: either
 * one dataset (a directory or "s3://bucket/prefix": its Parquet sidecars, one unit per
 * shard, in dataset.json order) or plain input files (CSV/TSV/JSONL/Parquet; one unit per
 * Parquet row group, one per text file). Units are what MPI ranks are dealt (unit u goes
 * to rank u % size), so every result that is a sum over units is the same for any number
 * of ranks.
 *
 * A dataset is read and written through its store (store.h): the commands write views
 * and dedupe marks with `s->store`, so the same code serves both backends. Sidecars on S3
 * are fetched to a private temporary file per unit (removed as soon as it is open).
 *
 * It also holds the start those commands share: the --help check and the dedupe-method
 * option (the all-ranks status check is pm_mpi_worst()).
 */
#ifndef PM_META_SOURCE_H
#define PM_META_SOURCE_H

#include "column.h"
#include "dataset_index.h"
#include "filter_expr.h"
#include "pm_error.h"
#include "pm_mpi.h"
#include "store.h"
#include "table_reader.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* The status of a rank that stopped because another rank failed (reported there). */
#define META_RC_ELSEWHERE 1000

struct meta_unit {
    size_t file;       /* index into files */
    size_t part;       /* first part (row group) of the unit */
    size_t nparts;     /* parts in the unit */
    uint64_t row_base; /* datasets: global index of the shard's first row */
    uint64_t rows;     /* datasets: rows of the shard per dataset.json */
};

struct meta_source {
    bool is_dataset;
    char *dataset;       /* the dataset's location as given (datasets only) */
    struct store *store; /* the dataset's store (datasets only) */
    struct dataset_index idx;
    char **files; /* sidecars' full names (datasets, for messages) or input files */
    size_t nfiles;
    struct meta_unit *units;
    size_t nunits;
};

/**
 * The option preamble of a tuning command: if `--help` or `-h` is anywhere in argv, rank 0
 * prints `usage` on stdout and this returns true (the command returns PM_EXIT_OK).
 */
bool meta_command_help(int argc, char *const *argv, const char *usage, const struct pm_mpi *mpi);

/**
 * Parse the value of a dedupe-method option (`option` is "--by" or "--dedupe"; see
 * dedupe_method_list_parse) into methods[0..*n), logging the error. Returns 0 or -1.
 */
int meta_option_methods(const char *option, const char *value, int *methods, size_t *n);

/** Open `paths`: one directory or one s3:// URL is a dataset (its dataset.json is read);
 * otherwise every path is an input file whose parts are listed. S3 settings come from the
 * environment (s3_client.h). Returns PM_OK or an error naming the path. */
int meta_source_open(struct meta_source *s, char *const *paths, size_t n, struct pm_error *err);

/**
 * The common start of a tuning command: parse the --where clauses into *f (may be n=0)
 * and open the source as meta_source_open does. On failure *f and s may hold partial
 * state: free both as usual.
 */
int meta_source_open_with_expr(struct meta_source *s, char *const *paths, size_t n,
                               struct filter_expr **f, const char *const *where, size_t nwhere,
                               struct pm_error *err);

/** Free everything. Accepts NULL. */
void meta_source_release(struct meta_source *s);

/** Open unit u for reading `columns` (ncolumns names; NULL = all). */
int meta_source_unit_open(const struct meta_source *s, size_t u, const char *const *columns,
                          size_t ncolumns, struct table_reader **out, struct pm_error *err);

/** True if the dataset has object `name` (e.g. "_dedupe/url/marks.json"). */
bool meta_source_has(const struct meta_source *s, const char *name);

/** Add `name` to the column list cols[0..*n) unless it is there (cols has room). */
void meta_columns_add(const char **cols, size_t *n, const char *name);

/** Add the columns `f` reads (meta_columns_add each; cols has room for them). */
void meta_columns_add_expr(const char **cols, size_t *n, const struct filter_expr *f);

/** Bind `f` to the schema of reader r (filter_expr_bind). */
int meta_reader_bind(const struct table_reader *r, struct filter_expr *f, struct pm_error *err);

/** success[i] = row i of the status column is "success"; returns how many are. */
size_t meta_status_success(const struct column *status, size_t nrows, uint8_t *success);

/**
 * Check a dataset unit's row count against dataset.json: with `done` false, that `row`
 * rows read so far do not exceed it; with `done` true, that they equal it. PM_OK or
 * PM_ERR_FORMAT naming the sidecar. Input files (rows 0 in the unit) are not checked.
 */
int meta_unit_check_rows(const struct meta_source *s, size_t u, uint64_t row, bool done,
                         struct pm_error *err);

/** Parse a sidecar's content_hash (32 hex digits, XXH3-128) into (high, low) words;
 * false if it is not one. */
bool meta_content_hash(const char *hex, size_t len, uint64_t out[2]);

/** The shard name of dataset unit u ("00012"). */
const char *meta_source_shard_name(const struct meta_source *s, size_t u, char *buf, size_t size);

/** Copy the rows of `src` with keep[i] != 0 to the end of `dst` (same schema). */
int table_batch_append_kept(struct table_batch *dst, const struct table_batch *src,
                            const uint8_t *keep);

/** Parse a byte size: a non-negative number with an optional K, M or G suffix (powers of
 * 1024) and an optional B ("512M", "1.5GB", "4096"). Returns 0 and sets *out, or -1. */
int meta_size_parse(const char *s, size_t *out);

#endif
