/**
 * dedupe_spill — dedupe_exact_run over more records than fit in a memory budget.
 *
 * The caller adds its records (dedupe_record: 128-bit hash, global id) one at a time, in
 * strictly increasing id order on each rank, then runs the collective dedupe and reads back
 * its duplicates (id, keeper), again in increasing id order. The answer is that of
 * dedupe_exact_run over all the records at once: a record's keeper is the lowest id, on
 * any rank, with the same 128-bit hash.
 *
 * With `parts` == 1 the records are held in memory (24 bytes each, plus 8 for the keeper
 * during the run): the same work as calling dedupe_exact_run directly. With `parts` > 1
 * each record goes, by the top of its hash (the same hash_hi range split as dedupe_exact's
 * rounds), to one of `parts` files under `dir` (`r<rank>-<part>.rec`, 24 bytes a record);
 * dedupe_spill_run then loads one part at a time on every rank, runs dedupe_exact_run on
 * it (all copies of a hash are in the same part, on every rank) and writes that part's
 * duplicates to `r<rank>-<part>.dup` (16 bytes each); reading merges the parts' duplicate
 * files by id. Memory is then the largest part's records and keepers (~56 bytes a record
 * with dedupe_exact's own work, see dedupe_spill_parts) plus small fixed buffers per part,
 * whatever the number of records. One hash repeated more often than a part holds is not
 * split (its copies are all in one part): the bound assumes no single hash takes a large
 * share of the records.
 *
 * The files are private to one run of one process: nothing in them is read by another
 * run. dedupe_spill_free removes this rank's files; dedupe_spill_clear removes a whole
 * directory of them (the leftovers of a killed run, before a rerun or after a finished
 * one). Not thread-safe: one handle per rank, used by one thread.
 */
#ifndef PM_DEDUPE_SPILL_H
#define PM_DEDUPE_SPILL_H

#include "dedupe_exact.h"
#include "pm_error.h"

#include <mpi.h>
#include <stddef.h>
#include <stdint.h>

/** Bytes of memory one record takes while its part is deduped (records, keepers, work). */
#define DEDUPE_SPILL_RECORD_BYTES 56u

/** The largest number of parts (files open at once while adding, per rank). */
#define DEDUPE_SPILL_MAX_PARTS 256u

struct dedupe_spill;

/**
 * How many parts keep one part of `records` records (the most any rank will add) within
 * `memory_limit` bytes: 1 when they all fit (or memory_limit is 0), else enough parts that
 * records / parts * DEDUPE_SPILL_RECORD_BYTES * 1.25 (room for the hash split's unevenness)
 * fits, at most DEDUPE_SPILL_MAX_PARTS. Every rank must pass the same values.
 */
unsigned dedupe_spill_parts(uint64_t records, size_t memory_limit);

/**
 * Create a handle for this rank (`rank`, as in the communicator given to dedupe_spill_run)
 * with `parts` parts. parts > 1: `dir` is created if missing (its parent must exist) and
 * this rank's part files are created empty. `expect` is a hint: how many records to make
 * room for in memory (parts == 1). Returns PM_OK, PM_ERR_USAGE (parts 0 or too many),
 * PM_ERR_IO, PM_ERR_NOMEM; on failure *out is NULL and no file is left.
 */
int dedupe_spill_create(struct dedupe_spill **out, const char *dir, int rank, unsigned parts,
                        size_t expect, struct pm_error *err);

/**
 * Add one record. Ids must be strictly increasing on each rank (PM_ERR_USAGE otherwise).
 * Returns PM_OK, PM_ERR_NOMEM or PM_ERR_IO (a part file could not be written, e.g. disk
 * full). Not collective; after a failure the caller must still make every rank agree (the
 * run is collective).
 */
int dedupe_spill_add(struct dedupe_spill *s, const struct dedupe_record *rec, struct pm_error *err);

/**
 * Collective over `comm` (every rank with a handle of the same `parts`): find every
 * record's keeper with dedupe_exact_run, one part after another (`memory_limit` is passed
 * to it). Fills *stats with the sums over all parts (rounds: the sum of every part's
 * rounds). Returns PM_OK or an error code that is the same on every rank.
 */
int dedupe_spill_run(struct dedupe_spill *s, MPI_Comm comm, size_t memory_limit,
                     struct dedupe_exact_stats *stats, struct pm_error *err);

/**
 * After a successful run: the next of this rank's duplicates in increasing id order.
 * Sets *id and *keeper (keeper < id) and returns 1; returns 0 when there are no more; or
 * a negative status (-PM_ERR_IO, -PM_ERR_FORMAT) with err set.
 */
int dedupe_spill_next(struct dedupe_spill *s, uint64_t *id, uint64_t *keeper, struct pm_error *err);

/** Remove this rank's part files (and `dir` if it is then empty) and free. Accepts NULL. */
void dedupe_spill_free(struct dedupe_spill *s);

/**
 * Remove every `*.rec` and `*.dup` file in `dir`, then `dir` itself if it is empty.
 * A missing dir is fine. Returns PM_OK or PM_ERR_IO.
 */
int dedupe_spill_clear(const char *dir, struct pm_error *err);

#endif
