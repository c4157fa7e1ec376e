/**
 * dataset_store — a dataset's small files (dataset.json, stats files, Parquet sidecars)
 * read from and written to a store (store.h: a POSIX directory or an S3 prefix), for the
 * stages that work on either (pack, verify).
 *
 * The file-based modules (dataset_index, shard_stats, parquet_writer) write paths; these
 * helpers go through a private temporary file in $TMPDIR (default /tmp) and move the
 * bytes with store.h, so the object appears atomically under its final name on both
 * backends. Sizes are bounded by the modules' own limits. Not thread-safe per store.
 */
#ifndef PM_DATASET_STORE_H
#define PM_DATASET_STORE_H

#include "bytebuf.h"
#include "dataset_index.h"
#include "parquet_reader.h"
#include "pm_error.h"
#include "shard_stats.h"
#include "store.h"

#include <stdatomic.h>
#include <stddef.h>

/** Largest sidecar read into memory (bytes). */
#define DATASET_STORE_SIDECAR_MAX ((size_t)1 << 30)

/**
 * Create an empty private temporary file and write its path to buf. Returns PM_OK or
 * PM_ERR_IO / PM_ERR_LIMIT.
 */
int dataset_store_temp_path(char *buf, size_t size, struct pm_error *err);

/** Upload the local file `path` as object `name` (streamed; atomic). */
int dataset_store_put_file(struct store *s, const char *name, const char *path,
                           struct pm_error *err);

/** dataset_store_put_file that gives up (PM_ERR_INTERRUPTED, nothing visible) once *stop
 * is true (checked between 1 MiB blocks; stop may be NULL). Thread-safe per store. */
int dataset_store_put_file_until(struct store *s, const char *name, const char *path,
                                 const atomic_bool *stop, struct pm_error *err);

/** Read `dataset.json` of the store into x (initialised by this call; release it always). */
int dataset_store_read_index(struct store *s, struct dataset_index *x, struct pm_error *err);

/** Write x as the store's `dataset.json`. */
int dataset_store_write_index(struct store *s, const struct dataset_index *x, struct pm_error *err);

/** Read object `name` (a stats file) into st (initialised by this call; release it always). */
int dataset_store_read_stats(struct store *s, const char *name, struct shard_stats *st,
                             struct pm_error *err);

/** Write st as the store's `NAME_stats.json`. */
int dataset_store_write_stats(struct store *s, const struct shard_stats *st, struct pm_error *err);

/**
 * Open the Parquet object `name`: its bytes are read into buf (which must outlive the
 * reader) and *out is a reader over them. PM_ERR_NOT_FOUND if it does not exist.
 */
int dataset_store_open_parquet(struct store *s, const char *name, struct bytebuf *buf,
                               struct parquet_reader **out, struct pm_error *err);

/**
 * Read every row of the Parquet object `name` into batch (initialised by this call with
 * the file's readable columns, in file order; release it always). Columns of types we
 * cannot read are left out.
 */
int dataset_store_read_table(struct store *s, const char *name, struct table_batch *batch,
                             struct pm_error *err);

#endif
