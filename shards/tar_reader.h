/**
 * tar_reader — iterate the samples of a webdataset tar shard (libarchive, tar formats
 * only, no compression filters).
 *
 * Samples are formed as the Python webdataset reader forms them: a member's key is its
 * path up to the first '.' after the last '/', its field the rest, lower-cased
 * (`a/b.Seg.PNG` -> key `a/b`, field `seg.png`); adjacent members with the same key form
 * one sample; the same key again later starts a new sample. Members whose base name has
 * no '.' or starts with '.' have no key and are skipped (webdataset skips them too); the
 * count is in tar_reader_skipped().
 *
 * Unlike webdataset, the reader refuses (PM_ERR_FORMAT, never follows or skips) members
 * that are not plain regular files (symlinks, hard links, directories, devices, FIFOs,
 * sparse files), names that are absolute or have a `..` component, and a field repeated
 * within one sample. A member larger than the size limit gives PM_ERR_LIMIT. A truncated
 * or corrupt tar gives PM_ERR_FORMAT naming the shard, the byte offset of the member
 * header and the member. Every message names the shard. After an error the reader is
 * unusable except for tar_reader_free().
 *
 * Memory: the field buffers are reused from sample to sample (no allocation per sample
 * once they have grown); at most `max_fields` fields of at most `max_member_size` bytes
 * are held at once. A reader is used by one thread at a time.
 */
#ifndef PM_TAR_READER_H
#define PM_TAR_READER_H

#include "pm_error.h"

#include <stddef.h>
#include <stdint.h>

struct tar_reader;

struct tar_reader_options {
    size_t max_member_size; /* largest member accepted, bytes (0: 256 MiB) */
    size_t max_fields;      /* most members in one sample (0: 64) */
};

#define TAR_READER_OPTIONS_INIT {0, 0}

/** One field of a sample. `data` has `size` bytes followed by a NUL (not counted). */
struct tar_field {
    const char *name; /* lower-cased extension, e.g. "jpg", "seg.png" */
    const unsigned char *data;
    size_t size;
};

/** A sample; valid until the next tar_reader_next() or tar_reader_free(). */
struct tar_sample {
    const char *key;
    const struct tar_field *fields; /* in tar order */
    size_t nfields;
    uint64_t offset; /* byte offset of the sample's first member header in the tar */
};

/**
 * Open the shard at `path`. `opts` may be NULL. Returns PM_OK with *out set, or
 * PM_ERR_IO / PM_ERR_NOMEM with *out NULL.
 */
int tar_reader_open(const char *path, const struct tar_reader_options *opts,
                    struct tar_reader **out, struct pm_error *err);

/**
 * Read a shard held in memory (`size` bytes at `data`, which must outlive the reader);
 * `name` names it in messages.
 */
int tar_reader_open_memory(const void *data, size_t size, const char *name,
                           const struct tar_reader_options *opts, struct tar_reader **out,
                           struct pm_error *err);

/**
 * Read the next sample into *sample. Returns PM_OK with *sample filled, PM_ERR_NOT_FOUND
 * at the end of the shard (no message set), or an error as described above.
 */
int tar_reader_next(struct tar_reader *r, struct tar_sample *sample, struct pm_error *err);

/** Members skipped so far because their name has no key (see above). */
uint64_t tar_reader_skipped(const struct tar_reader *r);

/** Free. Accepts NULL. */
void tar_reader_free(struct tar_reader *r);

/**
 * Split a member name as webdataset does. On success sets *key_len (the key is the first
 * *key_len bytes of name) and *field (points into name, not yet lower-cased) and returns
 * 1; returns 0 if the name has no key.
 */
int tar_reader_split_name(const char *name, size_t *key_len, const char **field);

#endif
