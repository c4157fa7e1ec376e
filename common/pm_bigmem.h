/**
 * pm_bigmem — memory for large work arrays (records, keepers, dedupe buffers).
 *
 * Arrays of 4 MiB and more are mapped on their own (mmap, 2 MiB aligned) with transparent
 * huge pages advised, and go back to the system when freed. Huge pages cut page faults and
 * TLB misses on arrays of hundreds of MiB read in passes (dedupe at 50 M records: about 8 %
 * less CPU, docs/benchmarks.md), and Open MPI's single-copy transfers pin fewer pages. A
 * mapping's pages that are never written never become resident, so a buffer may be
 * reserved for its upper bound. From malloc's heap, large buffers freed and allocated again
 * at other sizes stayed resident (glibc's dynamic mmap threshold); mappings do not.
 * Smaller arrays come from malloc. All are 64-byte aligned.
 */
#ifndef PM_BIGMEM_H
#define PM_BIGMEM_H

#include <stddef.h>

/** A 64-byte aligned array of `bytes` (contents undefined), or NULL when out of memory. */
void *pm_big_alloc(size_t bytes);

/** Grow or shrink array `p` (from pm_big_alloc, or NULL) to `bytes`, keeping its first
 * `keep` bytes; returns the new array, or NULL with `p` unchanged. */
void *pm_big_realloc(void *p, size_t keep, size_t bytes);

/** Free an array from pm_big_alloc (NULL is fine). */
void pm_big_free(void *p);

#endif
