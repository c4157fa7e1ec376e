/**
 * work_counter — dynamic work claiming across MPI ranks: a global counter that every
 * rank increments atomically (MPI one-sided MPI_Fetch_and_op on a window held by rank 0),
 * so a rank that finishes early claims the next unit instead of idling while another
 * straggles. Units are numbered 0, 1, 2, ...; each number is handed out exactly once.
 * Works the same with one process.
 */
#ifndef PM_WORK_COUNTER_H
#define PM_WORK_COUNTER_H

#include <mpi.h>
#include <stdint.h>

struct work_counter;

/** Create a counter starting at 0 over `comm`. Collective: every rank calls it. */
int work_counter_create(struct work_counter **out, MPI_Comm comm);

/** Claim the next unit number. Not collective; thread-compatible (one thread per rank). */
int64_t work_counter_next(struct work_counter *wc);

/** Free the counter. Collective: every rank calls it. Accepts NULL on every rank alike. */
void work_counter_free(struct work_counter *wc);

#endif
