/**
 * file_hash — the checksum we record for every file of a dataset: XXH3-128 (libxxhash).
 *
 * The checksum is written as 32 lowercase hex digits of the canonical (big-endian)
 * XXH128 value, which is what `xxhsum -H2` and Python's `xxhash.xxh3_128_hexdigest()`
 * print for the same bytes (seed 0). A streaming hasher covers files written
 * piecewise (tar_writer hashes its output as it goes); file_hash_path() hashes a file
 * already on disk. Handles are used by one thread at a time.
 */
#ifndef PM_FILE_HASH_H
#define PM_FILE_HASH_H

#include "pm_error.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/** Hex digits of a checksum, without the NUL. */
#define FILE_HASH_HEX_LEN 32

struct file_hash;

/** A new streaming hasher over zero bytes, or NULL when out of memory. */
struct file_hash *file_hash_create(void);

/** Add n bytes. */
void file_hash_update(struct file_hash *h, const void *data, size_t n);

/** Number of bytes added so far. */
uint64_t file_hash_bytes(const struct file_hash *h);

/** Write the checksum of the bytes so far (hex, NUL-terminated) to out. */
void file_hash_hex(const struct file_hash *h, char out[FILE_HASH_HEX_LEN + 1]);

/** Start again from zero bytes. */
void file_hash_reset(struct file_hash *h);

/** Free. Accepts NULL. */
void file_hash_free(struct file_hash *h);

/** Checksum of a memory block (hex, NUL-terminated). */
void file_hash_hex_of(const void *data, size_t n, char out[FILE_HASH_HEX_LEN + 1]);

/**
 * Checksum of the file at `path`; `size` (if not NULL) receives its length in bytes.
 * Returns PM_OK, PM_ERR_IO naming the path, or PM_ERR_NOMEM.
 */
int file_hash_path(const char *path, char out[FILE_HASH_HEX_LEN + 1], uint64_t *size,
                   struct pm_error *err);

/** True if s is exactly FILE_HASH_HEX_LEN lowercase hex digits. */
bool file_hash_is_hex(const char *s);

#endif
