/**
 * dedupe_exact — global exact-duplicate detection across MPI ranks.
 *
 * Every rank holds records (128-bit hash, id). The ids are global and unique (for
 * example the input row number, or a sample's key order). For each record the module
 * finds its group's *keeper*: the lowest id among all records, on any rank, with the
 * same 128-bit hash. A record is a duplicate iff keeper != its own id.
 *
 * How (docs/internals/dedupe.md): records are grouped into buckets of a few thousand by
 * hash value (owner rank, then a bucket inside the owner's hash range); each bucket is
 * scanned with an open-addressing table keyed by a 32-bit fingerprint, and only records
 * whose fingerprint repeats are compared in full. On one rank the caller's array is read
 * in place (in sequence, or one small range at a time) and keeper[] serves as work memory
 * until it receives the answers; on several, the same happens per (owner, bucket): 8-byte
 * entries travel to their owners in steps (MPI_Alltoallv, straight from keeper[]), the
 * owners' marks come back as bitmaps, and only the marked records travel for the full
 * comparison; only duplicates' answers travel back. Nothing is sorted.
 * The answer depends only on the records, never on the number of ranks or on which rank
 * held which record.
 *
 * Memory per record during a round: 16 bytes per duplicate (queued answers), plus 8 per
 * record when there are several rounds; on several ranks also 16 per marked record an owner
 * receives (room for its answers); plus fixed buffers of a few tens of MiB at most per rank.
 * When 1.25 * 16 bytes * (records per rank) exceeds
 * `memory_limit`, the hash space is split into rounds processed one after another (same
 * answer, less memory). At most 2^31 - 2 records per rank.
 */
#ifndef PM_DEDUPE_EXACT_H
#define PM_DEDUPE_EXACT_H

#include "pm_error.h"

#include <mpi.h>
#include <stddef.h>
#include <stdint.h>

struct dedupe_record {
    uint64_t hash_hi;
    uint64_t hash_lo;
    uint64_t id;
};

/** Statistics of one run, identical on every rank. */
struct dedupe_exact_stats {
    uint64_t records;    /* all records, all ranks */
    uint64_t duplicates; /* records whose keeper is another record */
    uint64_t groups;     /* distinct hashes having at least two records */
    unsigned rounds;     /* hash-range rounds used */
};

/**
 * Collective over `comm`: set keeper[i] for each of this rank's `n` records. keeper must not
 * overlap recs (it is also used as work memory during the call).
 * memory_limit: bytes per rank for the owner-side work (0 = no limit: one round).
 * Returns PM_OK, or PM_ERR_NOMEM / PM_ERR_LIMIT with the same code on every rank.
 */
int dedupe_exact_run(const struct dedupe_record *recs, size_t n, uint64_t *keeper, MPI_Comm comm,
                     size_t memory_limit, struct dedupe_exact_stats *stats, struct pm_error *err);

#endif
