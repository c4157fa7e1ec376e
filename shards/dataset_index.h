/**
 * dataset_index — `dataset.json`, the index of a dataset directory, also a valid `wids`
 * index (webdataset's indexed reader opens it with wids.ShardListDataset).
 *
 * Written when a stage finishes (after every shard's stats file), atomically. Fields:
 *   wids_version        1
 *   name                dataset name
 *   stage               the stage that wrote it ("download", "pack", ...)
 *   tool_version        "pixelmill X.Y.Z"
 *   checksum_algorithm  "xxh3_128" (see file_hash.h)
 *   shardlist           [{url, nsamples, filesize, xxh3, rows}, ...] in shard order;
 *                       url is the tar's file name relative to the JSON's directory
 *                       (wids resolves it so), rows the input rows of the shard
 *   counts              {shards, rows, nsamples, status: {success: N, ...}}
 *   config              the stage's configuration, an arbitrary JSON object
 * Readers accept and ignore other fields. Caller-owned struct; not thread-safe.
 */
#ifndef PM_DATASET_INDEX_H
#define PM_DATASET_INDEX_H

#include "file_hash.h"
#include "pm_error.h"
#include "shard_stats.h"
#include "stat_map.h"

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

/** Largest dataset.json read (bytes). */
#define DATASET_INDEX_MAX_BYTES ((size_t)256 << 20)

/** File name of the index inside a dataset directory. */
#define DATASET_INDEX_FILE "dataset.json"

struct dataset_shard {
    char *url;         /* file name relative to the dataset directory, e.g. "00012.tar" */
    uint64_t nsamples; /* samples in the tar */
    uint64_t filesize; /* bytes */
    char xxh3[FILE_HASH_HEX_LEN + 1];
    uint64_t rows; /* input rows of the shard */
};

struct dataset_index {
    char *name;
    char *stage;
    char *tool_version;
    json_t *config; /* an object; owned reference */
    struct dataset_shard *shards;
    size_t nshards, cap;
    struct stat_map status; /* rows by status, all shards */
};

/** Initialise an empty index (config = {}). Returns PM_OK or PM_ERR_NOMEM. */
int dataset_index_init(struct dataset_index *x);

/** Free everything; the struct must be initialised again before reuse. Accepts NULL. */
void dataset_index_release(struct dataset_index *x);

/**
 * Set name, stage and tool version (copied; NULL leaves a field as it is). Returns PM_OK or
 * PM_ERR_NOMEM.
 */
int dataset_index_set_info(struct dataset_index *x, const char *name, const char *stage,
                           const char *tool_version);

/** Use `config` (a JSON object; a reference is taken) as the configuration. PM_ERR_USAGE if
 * it is not an object. */
int dataset_index_set_config(struct dataset_index *x, json_t *config);

/**
 * Append a shard (copied). The url must be a safe relative path (see
 * dataset_index_check_url) and xxh3 a checksum. Returns PM_OK, PM_ERR_USAGE or
 * PM_ERR_NOMEM.
 */
int dataset_index_add_shard(struct dataset_index *x, const struct dataset_shard *s,
                            struct pm_error *err);

/** Append the shard a stats file describes and add its status counts to the totals. */
int dataset_index_add_stats(struct dataset_index *x, const struct shard_stats *st,
                            struct pm_error *err);

/** Sums over the shard list. */
uint64_t dataset_index_total_samples(const struct dataset_index *x);
uint64_t dataset_index_total_rows(const struct dataset_index *x);

/** Write the index to `path` atomically. Returns PM_OK, PM_ERR_IO or PM_ERR_NOMEM. */
int dataset_index_write(const struct dataset_index *x, const char *path, struct pm_error *err);

/**
 * Read `path` into x (initialised by this call; release it even on failure). Checks
 * wids_version == 1 and every shard entry (url safe, counts non-negative integers, xxh3
 * hex). Returns PM_OK, PM_ERR_NOT_FOUND, PM_ERR_IO, PM_ERR_LIMIT or PM_ERR_FORMAT naming
 * the file and the entry.
 */
int dataset_index_read(struct dataset_index *x, const char *path, struct pm_error *err);

struct store;

/** dataset_index_read of the store's `dataset.json` (store.h: a directory or S3 prefix). */
int dataset_index_read_store(struct dataset_index *x, struct store *s, struct pm_error *err);

/** dataset_index_write to the store's `dataset.json` (atomic on both backends). */
int dataset_index_write_store(const struct dataset_index *x, struct store *s,
                              struct pm_error *err);

/**
 * True if url is a safe relative path inside the dataset directory: non-empty, not
 * absolute, no empty, "." or ".." components, no ':' (no scheme), no control characters.
 */
int dataset_index_check_url(const char *url);

#endif
