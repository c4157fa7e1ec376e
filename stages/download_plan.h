/**
 * download_plan — how `pixelmill download` cuts its input into units (the "plan").
 *
 * A unit is one output shard: a contiguous slice of at most `samples_per_shard` rows of
 * ONE input file (as in img2dataset, shards never span input files; the last unit of a
 * file may be short). Shard ids number the slices of file 0, then those of file 1, ...
 *
 * The prepass (download_plan_make, collective): rank r reads the input files i with
 * i % size == r (only the needed columns) and writes slice j of file i as the Parquet
 * file `OUT/_work/input/I-J.parquet` (atomically, zstd), so a unit is later read in
 * O(unit) time and memory whatever the input format. Slice counts and column types are
 * combined across ranks; rank 0 then writes `OUT/_work/plan.json` atomically: the inputs
 * (path, size, mtime, rows, slices), samples_per_shard, the slice columns with their
 * types, the creation time and the caller's `config` object (the options that shape the
 * output). A later run with an existing plan.json skips the prepass when the inputs,
 * columns, samples_per_shard and config are the same, and fails with PM_ERR_USAGE
 * otherwise (the directory belongs to another run). A killed prepass is simply redone:
 * nothing is read from `_work/input` before plan.json exists.
 *
 * Every rank ends with the same `struct download_plan`. Caller-owned; not thread-safe.
 */
#ifndef PM_DOWNLOAD_PLAN_H
#define PM_DOWNLOAD_PLAN_H

#include "column.h"
#include "pm_error.h"
#include "pm_mpi.h"

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

/** What to plan. */
struct download_plan_options {
    const char *const *inputs; /* input metadata files */
    size_t ninputs;
    const char *input_format;   /* "csv", "tsv", "jsonl", "parquet"; NULL: from each name */
    const char *const *columns; /* columns kept in the slices (distinct names) */
    size_t ncolumns;
    uint64_t samples_per_shard; /* rows per unit, >= 1 */
    const char *output;         /* dataset directory (created by the caller) */
    const json_t *config;       /* options that shape the output, compared on rerun */
};

/** One input file of the plan. */
struct download_plan_input {
    char *path;
    uint64_t size;       /* bytes, when planned */
    int64_t mtime_ns;    /* modification time, when planned */
    uint64_t rows;       /* data rows */
    uint64_t slices;     /* units cut from it: ceil(rows / samples_per_shard) */
    uint64_t first_unit; /* shard id of its first slice */
};

struct download_plan {
    struct download_plan_input *inputs;
    size_t ninputs;
    uint64_t samples_per_shard;
    uint64_t nunits;             /* shards of the dataset */
    uint64_t total_rows;         /* rows over all inputs */
    int digits;                  /* shard_digits(nunits) */
    struct column_info *columns; /* the slices' columns (names and types) */
    size_t ncolumns;
    int64_t created; /* when the plan was made, seconds since the epoch */
    int reused;      /* 1 if an existing plan.json was used (no prepass this run) */
};

/**
 * Make (or load) the plan. Collective over MPI_COMM_WORLD: every rank calls it with the
 * same options and gets the same plan or the same status code. Returns PM_OK;
 * PM_ERR_USAGE (plan.json of another run, column types differing between inputs);
 * PM_ERR_NOT_FOUND (a missing file or column), PM_ERR_FORMAT, PM_ERR_IO, PM_ERR_NOMEM.
 * Only the rank that met an error has its message; others say "on another rank".
 */
int download_plan_make(struct download_plan *plan, const struct download_plan_options *opt,
                       const struct pm_mpi *mpi, struct pm_error *err);

/** Free the plan. Accepts NULL. */
void download_plan_release(struct download_plan *plan);

/**
 * Where unit `unit` comes from: the input index, the slice index in that input, and its
 * number of rows. Returns PM_OK or PM_ERR_USAGE (unit >= nunits).
 */
int download_plan_locate(const struct download_plan *plan, uint64_t unit, size_t *input,
                         uint64_t *slice, uint64_t *rows);

/**
 * Read the rows of unit `unit` from its slice file into `batch` (initialised by this
 * call with the plan's columns; release it even on failure). Checks the row count and
 * the column types against the plan. Returns PM_OK, PM_ERR_IO, PM_ERR_FORMAT, PM_ERR_NOMEM.
 */
int download_plan_read_unit(const struct download_plan *plan, const char *output, uint64_t unit,
                            struct table_batch *batch, struct pm_error *err);

#endif
