/*
 * cmd_train — what `pixelmill train`'s CPU loop (cmd_train.c) shares with its CUDA loop
 * (cmd_train_cuda.c): the parsed arguments and three helpers. Private to stages/.
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

/** Every rank's status to all: the first failing rank's code (0 if all fine). */
int train_agree_status(int rc);

/** Fill the Prometheus metrics of one step. */
void train_set_metrics(struct metrics *m, uint64_t step, double loss, double ips, double waitf,
                       uint64_t images, uint64_t corrupt, double wait_total);

/**
 * The training loop on GPUs (--device cuda): one GPU per rank, NCCL between ranks, the same
 * data order, checkpoints and signals as the CPU loop. Returns the exit status.
 */
int cmd_train_cuda(const struct train_args *a, const struct pm_mpi *mpi);

#endif
