/**
 * dedupe_near — global near-duplicate detection on 64-bit perceptual hashes across MPI
 * ranks.
 *
 * Every rank holds records (64-bit perceptual hash, id); ids are global and unique. Two
 * records are *linked* when the Hamming distance of their hashes is at most `radius`
 * (K). Clusters are the connected components of that graph (so links are transitive: a
 * chain a-b-c joins a and c even if they are further apart than K). For each record the
 * module returns its cluster's *keeper*:
 *
 *   keeper = the record with the highest priority, ties broken by the lowest id.
 *
 * Without a priority array every priority is 0, so the keeper is the lowest id in the
 * cluster (the same rule as dedupe_exact). A caller that prefers, say, the largest image
 * passes priority = width * height (or any 64-bit score, larger = better). A record is a
 * near-duplicate iff keeper != its own id.
 *
 * How (see docs/internals/dedupe.md):
 *  1. Collapse: records go to an owner rank by a mix of their hash (MPI_Alltoallv); the
 *     owner groups equal hashes into one *node* labelled with its best (priority, id).
 *     Identical hashes never reach the pair search, so they cost nothing quadratic.
 *  2. Bands (multi-index hashing): the 64 bits are cut into K+1 disjoint bands; two
 *     hashes within distance K agree exactly on at least one band (pigeonhole). For each
 *     band, every node sends its hash to the owner of (band index, band value); the
 *     owner groups equal band values and searches each group for pairs within K. Large
 *     groups are not compared all-pairs: the search splits the remaining free bits into
 *     K+1 sub-bands and recurses (the same pigeonhole argument), so only small leaves
 *     are compared pairwise with popcount; a leaf whose hashes differ in at most K bits
 *     is a clique and is linked as a star. A pair is emitted only under its first
 *     agreeing band and sub-band, and each leaf emits a spanning forest only, so edges
 *     stay below one per band copy.
 *  3. Components: the edge holders shrink their edges to a local spanning forest, then
 *     min-label propagation runs (label request, local component minimum, update — three
 *     MPI_Alltoallv per iteration) until no label changes. The final label of every node
 *     is the best (priority, id) of its component.
 *  4. The keeper ids travel back to the records' ranks along the route of step 1.
 *
 * Determinism: the answer is a function of the records only (the best key of each
 * connected component), so it is identical for any number of ranks, any distribution of
 * records over ranks and with or without memory-limited rounds.
 *
 * Memory per record on its owner: 64 bytes at the peak of the collapse (received record,
 * sort entry and radix scratch); kept afterwards: 24 bytes per distinct hash (hash and
 * label) + 4 bytes per record. Band phase: 24 bytes per node per band round (send copy,
 * receive copy, group-sort scratch), one band at a time, plus 16 bytes per edge (at most
 * one per near-duplicate node per band). The caller's arrays are not counted. When the
 * estimate exceeds `memory_limit` bytes per rank, the collapse and every band are split
 * into hash-range rounds (same answer).
 *
 * Cost: a group of s hashes agreeing on one band costs about (K+1)·s·depth for the
 * recursive split plus leaf pairs of at most DEDUPE_NEAR_LEAF hashes. The recursion
 * depth is capped (DEDUPE_NEAR_MAX_DEPTH); a group still large at that depth is compared
 * all-pairs (quadratic; it only happens when thousands of distinct hashes agree on
 * almost all bits). Label propagation needs a few iterations per rank hop of the
 * longest path in a cluster (one iteration on a single rank plus a confirming one).
 */
#ifndef PM_DEDUPE_NEAR_H
#define PM_DEDUPE_NEAR_H

#include "pm_error.h"

#include <mpi.h>
#include <stddef.h>
#include <stdint.h>

/** Default Hamming radius, measured by bench/dedupe/tune_hamming.py (docs/benchmarks.md,
 * "phash radius"): the largest K whose clusters keep pair precision >= 0.99 on real photo
 * tiles with re-encodes, rescales, crops and overlays. pHashes have 32 bits set, so
 * distances are even and K=7 behaves as K=6. */
#define DEDUPE_NEAR_DEFAULT_RADIUS 6u
/** Largest accepted radius (32 bands of 2 bits; beyond that everything is one cluster). */
#define DEDUPE_NEAR_MAX_RADIUS 31u
/** Groups at most this large are compared pairwise. */
#define DEDUPE_NEAR_LEAF 48u
/** Deepest sub-band recursion inside one band group. */
#define DEDUPE_NEAR_MAX_DEPTH 12u

struct dedupe_near_record {
    uint64_t phash;
    uint64_t id;
};

/** Statistics of one run, identical on every rank. */
struct dedupe_near_stats {
    uint64_t records;     /* all records, all ranks */
    uint64_t duplicates;  /* records whose keeper is another record */
    uint64_t distinct;    /* distinct hashes */
    uint64_t edges;       /* spanning-forest edges kept for the component search */
    uint64_t pairs_tested; /* popcount comparisons done by the band search */
    unsigned rounds;      /* hash-range rounds per phase (collapse and each band) */
    unsigned iterations;  /* label-propagation iterations */
};

/**
 * Collective over `comm`: set keeper[i] for each of this rank's `n` records.
 * priority: NULL (all 0) or n values, larger = preferred as keeper.
 * radius: Hamming radius K (0 = exact equality of the 64-bit hashes), at most
 * DEDUPE_NEAR_MAX_RADIUS; DEDUPE_NEAR_DEFAULT_RADIUS is the documented default.
 * memory_limit: bytes per rank for the owner-side work (0 = no limit: one round each).
 * stats may be NULL. Ids must be unique across all ranks.
 * Returns PM_OK, or PM_ERR_USAGE / PM_ERR_NOMEM / PM_ERR_LIMIT with the same code on
 * every rank; keeper is then unspecified. Not thread-safe on the same communicator.
 */
int dedupe_near_run(const struct dedupe_near_record *recs, const uint64_t *priority, size_t n,
                    uint64_t *keeper, unsigned radius, MPI_Comm comm, size_t memory_limit,
                    struct dedupe_near_stats *stats, struct pm_error *err);

#endif
