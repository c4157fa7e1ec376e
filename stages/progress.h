/**
 * progress — cross-rank progress counters for long-running stages: a live line, log
 * lines, Prometheus metrics and the numbers for the final summary.
 *
 * Each rank adds to a fixed set of named int64 counters (slots) with progress_add() —
 * cheap, local. progress_tick(), called often from the work loop, pushes the local deltas
 * to rank 0 every `push_interval_s` seconds with MPI_Accumulate on a passive-target
 * window held by rank 0 (never a blocking collective), and on rank 0 also reads the
 * totals and renders: on a terminal (isatty(stderr)) a line rewritten with '\r' every
 * second (rows done/total, successes/s, MB/s, the top 3 error classes, ETA); otherwise a
 * log line every `log_interval_s`; with `quiet` nothing. If `metrics_file` is set rank 0
 * writes the Prometheus text there atomically every few seconds and at the end.
 * Rank 0 also calls MPI_Iprobe on every tick so that the MPI library progresses the
 * window operations of other ranks (and work_counter's) while rank 0 is busy.
 *
 * Slots are described by the caller (struct progress_layout): which slot counts rows,
 * successes, bytes, units; which slots are statuses and which are error classes.
 * Thread-compatible: one thread per rank calls everything.
 */
#ifndef PM_PROGRESS_H
#define PM_PROGRESS_H

#include "pm_error.h"

#include <mpi.h>
#include <stddef.h>
#include <stdint.h>

/** What the slots mean. Slot indexes < nslots; names are copied. */
struct progress_layout {
    const char *metric_prefix; /* "pixelmill_download" */
    size_t nslots;
    size_t rows_slot;         /* input rows finished */
    size_t success_slot;      /* successful samples */
    size_t bytes_slot;        /* bytes downloaded */
    size_t units_slot;        /* units finished */
    size_t skipped_rows_slot; /* rows of units finished by an earlier run */
    size_t first_status;      /* statuses: slots [first_status, first_status + nstatus) */
    size_t nstatus;
    const char *const *status_names;
    size_t first_error; /* error classes: [first_error, first_error + nerror) */
    size_t nerror;
    const char *const *error_names;
};

struct progress_options {
    int quiet;                /* no live line or log lines */
    const char *metrics_file; /* NULL: none */
    double push_interval_s;   /* 0: 2 s */
    double log_interval_s;    /* 0: 10 s */
    int force_tty;            /* -1: never a live line, 1: always, 0: isatty(stderr) */
};

struct progress;

/**
 * Create the counters. Collective over `comm` (creates the window). `rows_total` and
 * `units_total` are the job's totals (known by every rank). Returns PM_OK or PM_ERR_NOMEM.
 */
int progress_create(struct progress **out, MPI_Comm comm, const struct progress_layout *layout,
                    const struct progress_options *opt, uint64_t rows_total, uint64_t units_total,
                    struct pm_error *err);

/** Add delta to a slot of this rank's counters. */
void progress_add(struct progress *p, size_t slot, int64_t delta);

/** Push and render when due (see the module comment). Not collective. */
void progress_tick(struct progress *p);

/**
 * Push everything left. Collective: returns after every rank pushed (a barrier), then
 * rank 0 reads the final totals, clears the live line and writes the metrics file.
 */
void progress_finish(struct progress *p);

/** On rank 0 after progress_finish: the job-wide value of a slot (0 elsewhere). */
int64_t progress_total(const struct progress *p, size_t slot);

/** Seconds since progress_create. */
double progress_elapsed(const struct progress *p);

/** Free. Collective (frees the window). Accepts NULL on every rank alike. */
void progress_free(struct progress *p);

#endif
