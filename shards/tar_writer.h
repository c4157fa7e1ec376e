/**
 * tar_writer — write one webdataset shard: a plain ustar tar (libarchive) of samples.
 *
 * A sample is a key plus members (extension, bytes); member `i` is stored as
 * `KEY.EXT_i`, the members of one sample adjacent and in the order given, samples in
 * the order added. The output is plain ustar: no PAX or GNU extension headers, every
 * member a regular file with a name of at most TAR_WRITER_NAME_MAX bytes (so the whole
 * name sits in the 100-byte name field, as wids' fast reader expects), mode 0644,
 * uid/gid 0, empty uname/gname, and mtime from the options. The same samples and options
 * therefore give byte-identical files. Output is padded to 10240-byte records as tar
 * does.
 *
 * The file is written through atomic_file (tar_writer_open) or a store writer
 * (tar_writer_open_store: a POSIX directory or S3, streamed in bounded memory): nothing
 * appears under the final name until tar_writer_close() commits it. The checksum
 * (file_hash: XXH3-128) and size of the file are computed as it is written. A writer is
 * used by one thread at a time.
 *
 * Names are checked before anything of a sample is written, so a refused sample leaves
 * the shard as it was: PM_ERR_USAGE for an empty or malformed key or extension (see
 * tar_writer_add_sample), a repeated extension, or the key of the previous sample again;
 * PM_ERR_LIMIT for a name longer than TAR_WRITER_NAME_MAX or a member of 8 GiB or more.
 * An I/O error (PM_ERR_IO, naming the shard) makes the writer unusable: close then fails
 * and removes the temporary file.
 */
#ifndef PM_TAR_WRITER_H
#define PM_TAR_WRITER_H

#include "file_hash.h"
#include "pm_error.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/** Longest member name (bytes) we write: the ustar name field less its NUL. */
#define TAR_WRITER_NAME_MAX 99

struct tar_writer;
struct store;

struct tar_writer_options {
    int64_t mtime; /* modification time of every member (seconds since the epoch) */
    bool no_sync;  /* tar_writer_open: commit without fsync (atomic_file_set_sync): for a
                      local staging copy that is not the output */
};

#define TAR_WRITER_OPTIONS_INIT {0}

/** One member of a sample: `KEY.ext` holding `size` bytes at `data`. */
struct tar_member {
    const char *ext;
    const void *data;
    size_t size;
};

/** What a closed shard holds. */
struct tar_writer_result {
    uint64_t bytes;                   /* size of the tar file */
    uint64_t nsamples;                /* samples added */
    uint64_t nmembers;                /* members (files) in the tar */
    char xxh3[FILE_HASH_HEX_LEN + 1]; /* checksum of the file (file_hash) */
};

/**
 * Start a shard to be committed as `path` (its directory must exist). `opts` may be NULL
 * (all defaults). On success *out is a new writer; on failure NULL and an error code.
 */
int tar_writer_open(const char *path, const struct tar_writer_options *opts,
                    struct tar_writer **out, struct pm_error *err);

/**
 * Start a shard to be committed as object `name` of `store` (store.h: a directory or an
 * S3 prefix; on S3 the tar streams as a multipart upload completed by tar_writer_close).
 * The store must outlive the writer. Otherwise as tar_writer_open.
 */
int tar_writer_open_store(struct store *store, const char *name,
                          const struct tar_writer_options *opts, struct tar_writer **out,
                          struct pm_error *err);

/**
 * Append one sample. `key`: non-empty, printable bytes (no control characters), not
 * starting with '/', no empty, "." or ".." path components, and no '.' in its last
 * component (webdataset splits the key at the first dot after the last slash).
 * Each extension: non-empty, printable, no '/', distinct within the sample (compared
 * case-insensitively, since readers lower-case them). `n` >= 1. The writer copies
 * nothing it keeps: the bytes are written before the call returns.
 */
int tar_writer_add_sample(struct tar_writer *w, const char *key, const struct tar_member *members,
                          size_t n, struct pm_error *err);

/** Bytes handed to the file so far (the tar grows in 10240-byte records). */
uint64_t tar_writer_bytes(const struct tar_writer *w);

/** Samples added so far. */
uint64_t tar_writer_samples(const struct tar_writer *w);

/**
 * Finish the tar (end-of-archive blocks, padding) and commit it under its final path.
 * `result` (may be NULL) receives the totals. Returns PM_OK or the first error (then no
 * file exists under the final path and the temporary file is gone). The writer must
 * still be freed.
 */
int tar_writer_close(struct tar_writer *w, struct tar_writer_result *result, struct pm_error *err);

/** Free; a writer not closed successfully is aborted (its temporary file removed).
 * Accepts NULL. */
void tar_writer_free(struct tar_writer *w);

/**
 * Check a sample key as tar_writer_add_sample does. Returns PM_OK or PM_ERR_USAGE with a
 * message naming the key.
 */
int tar_writer_check_key(const char *key, struct pm_error *err);

#endif
