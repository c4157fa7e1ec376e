/**
 * atomic_file — write a file so that readers see either nothing or the whole file.
 *
 * A file is written under a temporary name in the same directory as its final name,
 * `.NAME.tmp.<pid>.<16 hex digits>`, then committed: fsync the data, close, rename to
 * NAME (replacing any file of that name), fsync the directory. Until the commit no file
 * of the final name is created or changed; after a crash only a temporary file can be
 * left behind, and atomic_file_sweep() removes those.
 *
 * Every failing system call (ENOSPC included) gives PM_ERR_IO with the path and the
 * system's message. A handle is used by one thread at a time; distinct handles are
 * independent. Temporary names start with '.', so globs such as `*.tar` never match them.
 */
#ifndef PM_ATOMIC_FILE_H
#define PM_ATOMIC_FILE_H

#include "pm_error.h"

#include <stdbool.h>
#include <stddef.h>

struct atomic_file;

/**
 * Create a temporary file for `path` (mode 0666 minus the umask). The directory must
 * exist. On success *out is a new handle (free with atomic_file_free) and returns PM_OK;
 * on failure *out is NULL and returns PM_ERR_IO, PM_ERR_USAGE (empty path or a path
 * ending in '/') or PM_ERR_NOMEM.
 */
int atomic_file_open(const char *path, struct atomic_file **out, struct pm_error *err);

/**
 * Whether atomic_file_commit() fsyncs the file and its directory (the default: yes).
 * Turn it off only for local staging copies that are consumed elsewhere before anything
 * depends on them (pack's shards waiting to go up to S3): the commit still renames, but
 * after a crash the file may be short or empty.
 */
void atomic_file_set_sync(struct atomic_file *f, bool sync);

/** The open file descriptor of the temporary file (-1 after commit or abort). */
int atomic_file_fd(const struct atomic_file *f);

/** The final path given to atomic_file_open. */
const char *atomic_file_path(const struct atomic_file *f);

/** The temporary path (where the data is until the commit). */
const char *atomic_file_temp_path(const struct atomic_file *f);

/**
 * Write all n bytes at the current position (retrying short writes and EINTR).
 * Returns PM_OK or PM_ERR_IO naming the final path; after an error the file should be
 * aborted. PM_ERR_USAGE after commit or abort.
 */
int atomic_file_write(struct atomic_file *f, const void *data, size_t n, struct pm_error *err);

/**
 * Commit: fsync and close the temporary file, rename it to the final path, fsync the
 * directory. Returns PM_OK; on failure the temporary file is removed, the final path is
 * left as it was before (unless only the directory fsync failed, after the rename) and
 * returns PM_ERR_IO. Either way the handle must still be freed.
 */
int atomic_file_commit(struct atomic_file *f, struct pm_error *err);

/** Close and remove the temporary file if not committed. Idempotent. */
void atomic_file_abort(struct atomic_file *f);

/** Abort (if not committed) and free. Accepts NULL. */
void atomic_file_free(struct atomic_file *f);

/**
 * Write a whole small file atomically (open, write, commit). Returns PM_OK or the error
 * of the step that failed; on failure nothing is left under any name.
 */
int atomic_file_write_all(const char *path, const void *data, size_t n, struct pm_error *err);

/** True if `name` (a file name without directory) has the form of our temporary names. */
bool atomic_file_is_temp_name(const char *name);

/**
 * Remove the temporary files of atomic_file left in `dir` (by a killed process) that have
 * not been modified for at least `min_age_s` seconds (0: all of them). Other files are
 * never touched. Call it when no other process is writing into `dir`, or with an age
 * larger than any pause between two writes of a live writer. If `removed` is not NULL it
 * receives the number of files removed. Returns PM_OK or PM_ERR_IO.
 */
int atomic_file_sweep(const char *dir, double min_age_s, size_t *removed, struct pm_error *err);

#endif
