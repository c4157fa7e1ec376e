/**
 * store — where a dataset lives: a POSIX directory or an S3 prefix, behind one interface.
 *
 * A store is opened from "s3://bucket/prefix" or a path. Objects are named relative to
 * it ("00012.tar", "_views/v/view.json"; '/' separates directories, no leading '/', no
 * "." or ".." components). Writes are atomic: a reader sees no object, or the whole
 * object, under its final name:
 *  - POSIX: through atomic_file (temporary name in the same directory, fsync, rename,
 *    fsync of the directory); parent directories are created as needed.
 *  - S3: a writer keeps the object in memory up to the single-PUT limit (put_max below);
 *    an object that ends within it is sent as one PUT at commit. Past the limit the
 *    writer switches to a multipart upload (parts of part_size, in parallel, memory
 *    bounded by (parts_in_flight + 1) parts) completed at commit. An aborted or failed
 *    writer aborts its multipart upload.
 * store_sweep_incomplete() removes what killed writers left: temporary files (POSIX) or
 * multipart uploads under the prefix (S3).
 *
 * S3 settings come from the environment (see s3_client.h) and store_options. Errors
 * name the object by its full URL or path. Threads: a store and its writers are used by
 * one thread at a time; open one store per thread.
 */
#ifndef PM_STORE_H
#define PM_STORE_H

#include "bytebuf.h"
#include "pm_error.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct store_options {
    const char *s3_endpoint; /* --s3-endpoint; NULL: AWS_ENDPOINT_URL or AWS itself */
    size_t part_size;        /* S3 part size (0: the client's default, 16 MiB) */
    size_t put_max;          /* S3: objects smaller than this go up as one PUT, others
                                as multipart uploads (0: STORE_PUT_MAX_DEFAULT; when
                                part_size is given, part_size) */
    int parts_in_flight;     /* S3 parts in parallel (0: default, 4) */
    int max_attempts;        /* S3 tries per request (0: default, 5) */
    double backoff_base_s;   /* S3 first backoff ceiling (0: default) */
    long low_speed_time_s;   /* S3: abandon (and retry) a transfer stalled this long (0: 30) */
};

/**
 * Default single-PUT limit: 64 MiB. Below ~100 MB AWS advises a single PUT; one request
 * instead of create + parts + complete costs the server less (an S3 emulator such as moto
 * copies every part again to assemble the object), and a failed PUT re-sends at most
 * 64 MiB. The price is memory: a writer holds up to this much before it can send.
 */
#define STORE_PUT_MAX_DEFAULT ((size_t)64 << 20)

/** All defaults. */
#define STORE_OPTIONS_INIT {0}

struct store;
struct store_writer;

/**
 * Open the store at `url_or_path` ("s3://bucket/prefix" or a directory path; the
 * directory is created if missing). `opts` may be NULL. Returns PM_OK with *out set, or
 * PM_ERR_USAGE / PM_ERR_IO / PM_ERR_NOMEM.
 */
int store_open(const char *url_or_path, const struct store_options *opts, struct store **out,
               struct pm_error *err);

/** Free a store (its writers must be freed first). Accepts NULL. */
void store_free(struct store *s);

/** True for an S3 store. */
bool store_is_s3(const struct store *s);

/** The store's location as given ("s3://b/p" or the path), without a trailing '/'. */
const char *store_location(const struct store *s);

/**
 * Start writing object `name`. Nothing is visible under the name until
 * store_writer_commit. Returns PM_OK with *out set, or an error.
 */
int store_writer_open(struct store *s, const char *name, struct store_writer **out,
                      struct pm_error *err);

/** Append n bytes. After an error the writer is unusable (commit fails; free it). */
int store_writer_write(struct store_writer *w, const void *data, size_t n, struct pm_error *err);

/** Make the object visible under its final name. On failure nothing new is visible and
 * the partial data is gone. The writer must still be freed. */
int store_writer_commit(struct store_writer *w, struct pm_error *err);

/** Drop what was written (temporary file / multipart upload). Idempotent. */
void store_writer_abort(struct store_writer *w);

/** The object's full name ("s3://b/p/00012.tar" or "dir/00012.tar"). */
const char *store_writer_name(const struct store_writer *w);

/** Bytes written so far. */
uint64_t store_writer_bytes(const struct store_writer *w);

/** Abort (unless committed) and free. Accepts NULL. */
void store_writer_free(struct store_writer *w);

/** S3: objects smaller than this go up as one PUT (store_options.put_max); POSIX: SIZE_MAX. */
size_t store_put_max(const struct store *s);

/** Write a whole small object atomically. */
int store_write_all(struct store *s, const char *name, const void *data, size_t n,
                    struct pm_error *err);

/** Receives bytes read, in order; return nonzero to stop (PM_ERR_INTERRUPTED). */
typedef int (*store_sink_fn)(void *ctx, const void *data, size_t n);

/**
 * Read bytes [off, off+len) of `name` (len UINT64_MAX: to the end) into `sink`.
 * PM_ERR_NOT_FOUND if the object does not exist. `*got` (may be NULL): bytes delivered
 * (fewer than len when the object ends first).
 */
int store_read(struct store *s, const char *name, uint64_t off, uint64_t len, store_sink_fn sink,
               void *ctx, uint64_t *got, struct pm_error *err);

/** Read the whole object into `out` (appended; out's limit applies: PM_ERR_LIMIT). */
int store_read_all(struct store *s, const char *name, struct bytebuf *out, struct pm_error *err);

/**
 * A local file holding object `name`, for readers that want a path (Parquet, tar): on
 * POSIX the object's own path (*temp false); on S3 the object downloaded (streamed) into
 * a new private temporary file in $TMPDIR (default /tmp; *temp true: the caller unlinks
 * it, which readers that keep the file open allow right after opening). PM_ERR_NOT_FOUND
 * if the object does not exist; PM_ERR_LIMIT if buf is too small.
 */
int store_local_path(struct store *s, const char *name, char *buf, size_t size, bool *temp,
                     struct pm_error *err);

/** Create an empty private temporary file in $TMPDIR (default /tmp) and write its path
 * to buf. Returns PM_OK, PM_ERR_IO or PM_ERR_LIMIT. */
int store_temp_path(char *buf, size_t size, struct pm_error *err);

/** Size of `name`; PM_ERR_NOT_FOUND if it does not exist. */
int store_size(struct store *s, const char *name, uint64_t *size, struct pm_error *err);

/** *exists: whether `name` exists (errors other than "not found" are returned). */
int store_exists(struct store *s, const char *name, bool *exists, struct pm_error *err);

/** One object; return nonzero to stop listing. */
typedef int (*store_list_fn)(void *ctx, const char *name, uint64_t size);

/**
 * List the objects under the store (recursively; names relative to it, temporary files
 * of unfinished writes excluded). Order: S3's byte order; POSIX: sorted per directory.
 */
int store_list(struct store *s, store_list_fn fn, void *ctx, struct pm_error *err);

/** One unfinished write: `name` relative to the store (S3: the upload's key; POSIX: the
 * temporary file), `started` S3's ISO-8601 initiation time (NULL on POSIX). Return
 * nonzero to stop. */
typedef int (*store_incomplete_fn)(void *ctx, const char *name, const char *started);

/**
 * List what unfinished writers left under the store, without removing it: S3 multipart
 * uploads in progress under the prefix (ListMultipartUploads), POSIX temporary files of
 * atomic_file (recursively). store_sweep_incomplete() removes them.
 */
int store_list_incomplete(struct store *s, store_incomplete_fn fn, void *ctx,
                          struct pm_error *err);

/** Delete `name` (PM_OK if it did not exist). */
int store_delete(struct store *s, const char *name, struct pm_error *err);

/**
 * Remove what unfinished writers left (POSIX: atomic_file temporary files, recursively;
 * S3: multipart uploads under the prefix) older than `min_age_s` seconds (0: all; only
 * safe when no writer is running). `removed` (may be NULL) receives the count.
 */
int store_sweep_incomplete(struct store *s, double min_age_s, size_t *removed,
                           struct pm_error *err);

#endif
