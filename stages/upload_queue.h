/**
 * upload_queue — background threads that copy finished local files into a store (store.h),
 * so a stage can build shard i+1 while shard i goes up (pack to S3).
 *
 * A job is an ordered list of (local file, object name) pairs: the objects are written
 * one after the other, each atomically (a multipart upload completes only when its whole
 * file has gone up), so the last one can be the shard's commit record. The local files
 * are removed when the job ends, whatever its result. Jobs run on `threads` threads,
 * each with its own store opened on the same location and options (a store is used by
 * one thread at a time); jobs on different threads finish in any order.
 *
 * Errors: the first failing job's error is kept; later pushes and the drain return it and
 * no new job starts. upload_queue_free() cancels what is still running: a writer in
 * flight is aborted (its multipart upload removed), queued jobs are dropped (their files
 * removed), nothing of an unfinished job becomes visible beyond the objects it had
 * already committed. One producer thread per queue.
 */
#ifndef PM_UPLOAD_QUEUE_H
#define PM_UPLOAD_QUEUE_H

#include "pm_error.h"
#include "store.h"

#include <stddef.h>

/** Most (file, object) pairs in one job. */
#define UPLOAD_QUEUE_MAX_FILES 8

struct upload_queue;

/**
 * Start `threads` (>= 1) upload threads writing to the store at `location` with options
 * `opts` (may be NULL; copied). Returns PM_OK with *out set, or an error.
 */
int upload_queue_create(const char *location, const struct store_options *opts, int threads,
                        struct upload_queue **out, struct pm_error *err);

/**
 * Hand over a job: local files paths[0..n) become objects names[0..n), in that order.
 * Blocks while every thread has a job. The queue takes the files over (they are removed
 * when the job ends, and also when this call fails). Returns PM_OK, or the error of an
 * earlier job (this one is then dropped).
 */
int upload_queue_push(struct upload_queue *q, const char *const *paths, const char *const *names,
                      size_t n, struct pm_error *err);

/** Wait until every job handed over has ended. Returns PM_OK or the first job's error. */
int upload_queue_drain(struct upload_queue *q, struct pm_error *err);

/** Cancel what is still queued or running (see above), stop the threads, free. Accepts
 * NULL. */
void upload_queue_free(struct upload_queue *q);

#endif
