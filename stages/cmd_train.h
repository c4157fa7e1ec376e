/*
 * cmd_train — what `pixelmill train`'s CPU loop (cmd_train.c) shares with its CUDA loop
 * (cmd_train_cuda.c): the parsed arguments, the clock and the end of a step. Private to
 * stages/.
 */
#ifndef PM_CMD_TRAIN_H
#define PM_CMD_TRAIN_H

#include "metrics.h"
#include "pm_mpi.h"

#include <stdbool.h>
#include <stdint.h>

/** Parsed command line (see cmd_train.c's help). */
struct train_args {
    const char *data, *model, *ckdir, *metrics_file, *log_keys, *device, *eval_data;
    const char *precision; /* --precision, NULL if not given */
    long long steps, batch, every, log_every, eval_batches;
    int keep, threads, loader_threads;
    double lr, wd, ema;
    unsigned long long seed;
    bool resume;
};

/** Monotonic clock, seconds. */
double train_now_s(void);

/** What a finished step hands to train_step_end. */
struct train_step {
    uint64_t step;     /* optimizer steps done */
    float loss;        /* this rank's mean loss over its samples */
    double t0;         /* train_now_s() when the step began */
    double wait_s;     /* seconds this rank's loader blocked for data during the step */
    double wait_total; /* the same over the run so far (metrics) */
    uint64_t corrupt;  /* samples this rank's loader skipped as unreadable so far */
    const char *extra; /* appended to the step line (the CUDA loop's timings), or "" */
};

/** What the loop does after a step: go on, checkpoint, or checkpoint and stop (signal). */
enum train_next { TRAIN_GO, TRAIN_SAVE, TRAIN_SAVE_STOP };

/**
 * The end of a step, the same in the CPU and CUDA loops (collective): gathers the global
 * loss (the per-rank means summed in rank order; `losses` has room for mpi->size, or is
 * NULL on one rank), the corrupt count and the stop-signal flag of all ranks; counts the
 * images; rank 0 prints the step line every --log-every steps, on the last step or on a
 * signal, and writes --metrics-file. Checkpoint on the last step, every --checkpoint-every
 * steps, or on a signal; stop after that checkpoint on a signal before the last step.
 */
enum train_next train_step_end(const struct train_args *a, const struct pm_mpi *mpi,
                               const struct train_step *s, float *losses, struct metrics *m,
                               uint64_t *images);

/** The exit status of a loop a signal stopped (rank 0 logs it): PM_EXIT_RESUMABLE. */
int train_stopped(const struct pm_mpi *mpi, uint64_t step);

/**
 * The training loop on GPUs (--device cuda): one GPU per rank, NCCL between ranks, the same
 * data order, checkpoints and signals as the CPU loop. Returns the exit status.
 */
int cmd_train_cuda(const struct train_args *a, const struct pm_mpi *mpi);

#endif
