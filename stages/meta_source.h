/**
 * meta_source — the metadata a tuning command (filter, sweep, sheet) reads: either one
 * dataset directory (its Parquet sidecars, one unit per shard, in dataset.json order) or
 * plain input files (CSV/TSV/JSONL/Parquet; one unit per Parquet row group, one per text
 * file). Units are what MPI ranks are dealt (unit u goes to rank u % size), so every
 * result that is a sum over units is the same for any number of ranks.
 */
#ifndef PM_META_SOURCE_H
#define PM_META_SOURCE_H

#include "column.h"
#include "dataset_index.h"
#include "pm_error.h"
#include "table_reader.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct meta_unit {
    size_t file;       /* index into files */
    size_t part;       /* first part (row group) of the unit */
    size_t nparts;     /* parts in the unit */
    uint64_t row_base; /* datasets: global index of the shard's first row */
    uint64_t rows;     /* datasets: rows of the shard per dataset.json */
};

struct meta_source {
    bool is_dataset;
    char *dataset; /* the dataset directory (datasets only) */
    struct dataset_index idx;
    char **files; /* sidecar paths (datasets) or input files */
    size_t nfiles;
    struct meta_unit *units;
    size_t nunits;
};

/** Open `paths`: one directory holding dataset.json is a dataset; otherwise every path is
 * an input file whose parts are listed. Returns PM_OK or an error naming the path. */
int meta_source_open(struct meta_source *s, char *const *paths, size_t n, struct pm_error *err);

/** Free everything. Accepts NULL. */
void meta_source_release(struct meta_source *s);

/** Open unit u for reading `columns` (ncolumns names; NULL = all). */
int meta_source_unit_open(const struct meta_source *s, size_t u, const char *const *columns,
                          size_t ncolumns, struct table_reader **out, struct pm_error *err);

/** The shard name of dataset unit u ("00012"). */
const char *meta_source_shard_name(const struct meta_source *s, size_t u, char *buf, size_t size);

/** Copy the rows of `src` with keep[i] != 0 to the end of `dst` (same schema). */
int table_batch_append_kept(struct table_batch *dst, const struct table_batch *src,
                            const uint8_t *keep);

#endif
