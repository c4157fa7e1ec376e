/**
 * shard — the names of one shard's files and the keys of its samples.
 *
 * Layout (docs/internals/shards.md): shard `i` of a dataset directory is the set of files
 * `NAME.tar`, `NAME.parquet` and `NAME_stats.json`, where NAME is `i` in decimal
 * zero-padded to `digits` digits. `digits` is shard_digits(number of shards): 5 as in
 * img2dataset (`00000`), more when the dataset has more than 100000 shards, so that names
 * still sort in shard order. A shard is complete when its stats file exists: the stats
 * file is written last, atomically (img2dataset's convention).
 *
 * Sample keys follow img2dataset's compute_key(): with `s = ceil(log10(samples per
 * shard))`, the key of row `j` of shard `i` is the number `i * 10^s + j` written in
 * decimal zero-padded to `digits + s` digits: the shard id followed by the index in the
 * shard (10000 per shard: shard 1, row 5 -> `000010005`). All functions are pure and
 * thread-safe.
 */
#ifndef PM_SHARD_H
#define PM_SHARD_H

#include "pm_error.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/** Minimum digits of a shard name (img2dataset's oom_shard_count default). */
#define SHARD_MIN_DIGITS 5

/** Longest shard name (digits) we produce, without NUL. */
#define SHARD_NAME_MAX 20

/** Digits for the names of a dataset of `nshards` shards: max(5, digits of nshards-1). */
int shard_digits(uint64_t nshards);

/**
 * Digits of the in-shard part of a key: ceil(log10(samples_per_shard)) (0 for 1), as
 * img2dataset computes oom_sample_per_shard.
 */
int shard_sample_digits(uint64_t samples_per_shard);

/**
 * Write the shard's name (no extension) to buf: `index` zero-padded to `digits`.
 * Returns PM_OK, or PM_ERR_LIMIT if buf is too small.
 */
int shard_name(char *buf, size_t size, uint64_t index, int digits);

/**
 * Write `dir/NAME SUFFIX` to buf, e.g. suffix ".tar" or "_stats.json". `dir` may be "" for
 * a bare file name. Returns PM_OK or PM_ERR_LIMIT (buf too small).
 */
int shard_path(char *buf, size_t size, const char *dir, uint64_t index, int digits,
               const char *suffix);

/**
 * Write the key of row `row` of shard `shard` (img2dataset's rule, above). Returns PM_OK;
 * PM_ERR_USAGE if row >= samples_per_shard or samples_per_shard is 0; PM_ERR_LIMIT if the
 * number overflows 64 bits or buf is too small (24 bytes always suffice).
 */
int shard_key(char *buf, size_t size, uint64_t shard, uint64_t row, uint64_t samples_per_shard,
              int digits, struct pm_error *err);

/** True if `dir/NAME_stats.json` exists (the shard was committed completely). */
bool shard_is_complete(const char *dir, uint64_t index, int digits);

#endif
