/**
 * commands — the subcommands of `pixelmill`, one file each (stages/cmd_NAME.c).
 *
 * Adding a command: write `int cmd_NAME(int argc, char **argv, const struct pm_mpi *mpi)`
 * in stages/cmd_NAME.c (argv[0] is the command name; it handles `--help` itself), declare
 * it here, and add a row to the table in stages/pixelmill.c. A command returns an exit
 * status (below); it never calls exit() itself.
 */
#ifndef PM_COMMANDS_H
#define PM_COMMANDS_H

#include "pm_mpi.h"

#include <getopt.h>

/* Exit statuses shared by every command (DESIGN §3). */
enum pm_exit {
    PM_EXIT_OK = 0,          /* done */
    PM_EXIT_FAILED = 1,      /* failed; the message says what and where */
    PM_EXIT_USAGE = 2,       /* usage error */
    PM_EXIT_RESUMABLE = 75,  /* interrupted by a signal, state clean: requeue */
};

/** `pixelmill download`: URL lists to webdataset shards (stages/cmd_download.c). */
int cmd_download(int argc, char **argv, const struct pm_mpi *mpi);

/** Map a pm_status code to an exit status (usage -> 2, interrupted -> 75, else 1). */
int pm_exit_from_status(int status);

/** download's long options (getopt_long); `pixelmill run` takes its [download] keys from it. */
extern const struct option cmd_download_options[];

/** pixelmill stats: column summaries of metadata tables (stages/cmd_stats.c). */
int cmd_stats(int argc, char **argv, const struct pm_mpi *mpi);

/** pixelmill pack: uniform (optionally shuffled, resized) shards of a dataset or view. */
int cmd_pack(int argc, char **argv, const struct pm_mpi *mpi);

/** pack's long options (getopt_long); `pixelmill run` takes its [pack] keys from it. */
extern const struct option cmd_pack_options[];

/** pixelmill verify: check a dataset's shards, sidecars, counts and checksums. */
int cmd_verify(int argc, char **argv, const struct pm_mpi *mpi);

/** pixelmill filter: a view of a dataset, or filtered input metadata (cmd_filter.c). */
int cmd_filter(int argc, char **argv, const struct pm_mpi *mpi);

/** pixelmill sweep: kept counts for many thresholds of one column, with a report. */
int cmd_sweep(int argc, char **argv, const struct pm_mpi *mpi);

/** pixelmill sheet: a contact sheet (HTML or PNG) of a dataset's or view's samples. */
int cmd_sheet(int argc, char **argv, const struct pm_mpi *mpi);

/** pixelmill dedupe: global exact and near-duplicate marks in _dedupe/ (cmd_dedupe.c). */
int cmd_dedupe(int argc, char **argv, const struct pm_mpi *mpi);
/** pixelmill doctor: node health checks for prologs and operators (stages/cmd_doctor.c). */
int cmd_doctor(int argc, char **argv, const struct pm_mpi *mpi);


/** pixelmill train: data-parallel diffusion training on the CPU (stages/cmd_train.c). */
int cmd_train(int argc, char **argv, const struct pm_mpi *mpi);

/** pixelmill sample: a PNG grid of images from a checkpoint (stages/cmd_sample.c). */
int cmd_sample(int argc, char **argv, const struct pm_mpi *mpi);

/**
 * pixelmill run: the stages of a pipeline file (INI) in order, skipping complete ones and
 * resuming the interrupted one (stages/cmd_run.c; format in docs/operators.md).
 */
int cmd_run(int argc, char **argv, const struct pm_mpi *mpi);

#endif
