/**
 * shard_stats — the per-shard stats file `NNNNN_stats.json`: what happened to each input
 * row of the shard, and the tar it produced. Its presence means the shard is complete,
 * so a stage writes it last, after the tar and the Parquet sidecar are committed;
 * shard_stats_write() writes it atomically. dataset.json is assembled from these files
 * (dataset_index_add_stats).
 *
 * File fields: `shard` (index), `name` (`00012`), `url` (the tar's file name),
 * `count` (input rows, img2dataset's name), `successes` (samples in the tar),
 * `filesize` and `xxh3` (the tar's size and checksum, see file_hash.h), `status` (rows by
 * status: success, failed_to_download, ...), `errors` (rows by error class), `bytes`
 * (named byte counters), `durations` (named seconds), `start_time` and `end_time`
 * (seconds since the epoch), `tool_version`. Caller-owned struct; not thread-safe.
 */
#ifndef PM_SHARD_STATS_H
#define PM_SHARD_STATS_H

#include "file_hash.h"
#include "pm_error.h"
#include "shard.h"
#include "stat_map.h"

#include <stdint.h>

/** Largest stats file read (bytes). */
#define SHARD_STATS_MAX_BYTES ((size_t)16 << 20)

struct shard_stats {
    uint64_t shard;                   /* shard index */
    char name[SHARD_NAME_MAX + 1];    /* shard name, e.g. "00012" */
    uint64_t rows;                    /* input rows of the shard */
    uint64_t nsamples;                /* samples in the tar */
    uint64_t tar_bytes;               /* size of the tar file */
    char xxh3[FILE_HASH_HEX_LEN + 1]; /* checksum of the tar file */
    double start_time, end_time;      /* seconds since the epoch */
    struct stat_map status;           /* rows by status (counts) */
    struct stat_map errors;           /* rows by error class (counts) */
    struct stat_map bytes;            /* named byte counters */
    struct stat_map durations;        /* named durations, seconds */
    char tool_version[64];
};

/** Initialise empty stats for shard `index` named with `digits` digits. */
void shard_stats_init(struct shard_stats *s, uint64_t index, int digits);

/** Free the maps. Accepts NULL. */
void shard_stats_release(struct shard_stats *s);

/**
 * Write `dir/NAME_stats.json` atomically. Returns PM_OK, PM_ERR_IO, PM_ERR_NOMEM or
 * PM_ERR_LIMIT (path too long).
 */
int shard_stats_write(const char *dir, const struct shard_stats *s, struct pm_error *err);

/**
 * Read a stats file into `s` (initialised by this call; release it even on failure).
 * Returns PM_OK, PM_ERR_NOT_FOUND, PM_ERR_IO, PM_ERR_LIMIT or PM_ERR_FORMAT naming the
 * file and field.
 */
int shard_stats_read(const char *path, struct shard_stats *s, struct pm_error *err);

#endif
