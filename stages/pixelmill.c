/*
 * pixelmill — the command dispatcher: one table of subcommands, MPI set-up done once
 * here for the commands that need it, and the top-level --help and --version.
 */
#include "commands.h"
#include "pm_error.h"
#include "pm_log.h"
#include "pm_mpi.h"
#include "pm_signal.h"

#include <stdio.h>
#include <string.h>

#ifndef PIXELMILL_VERSION
#define PIXELMILL_VERSION "0.0.0"
#endif

enum command_flags {
    USES_MPI = 1 << 0,  /* MPI is initialised before the command runs */
    RESUMABLE = 1 << 1, /* stop signals are caught from the start (exit 75, resume later) */
};

struct command {
    const char *name;
    int (*fn)(int argc, char **argv, const struct pm_mpi *mpi);
    unsigned flags;
    const char *summary;
};

static const struct command commands[] = {
    {"download", cmd_download, USES_MPI | RESUMABLE, "download URL lists into webdataset shards"},
    {"stats", cmd_stats, USES_MPI, "column summaries (counts, quantiles, top values) of tables"},
    {"pack", cmd_pack, USES_MPI | RESUMABLE, "uniform shards of a dataset or view (shuffle, resize, raw)"},
    {"verify", cmd_verify, 0, "check a dataset: tars, sidecars, counts, checksums"},
    {"filter", cmd_filter, USES_MPI, "write a view (or filtered metadata) from --where clauses"},
    {"sweep", cmd_sweep, USES_MPI, "kept counts for many thresholds of a column, HTML report"},
    {"sheet", cmd_sheet, USES_MPI, "contact sheet of a dataset's or view's samples"},
    {"dedupe", cmd_dedupe, USES_MPI, "global exact and near-duplicate marks (url, content, phash)"},
    {"doctor", cmd_doctor, 0, "node health checks (CPU, disk, GPU, NCCL, fabric, S3)"},
    {"train", cmd_train, USES_MPI | RESUMABLE, "train the diffusion UNet on a dataset (CPU, MPI)"},
    {"sample", cmd_sample, 0, "images from a training checkpoint, as a PNG grid"},
    {"run", cmd_run, USES_MPI | RESUMABLE, "run a pipeline file's stages in order, resuming"},
};

static const size_t ncommands = sizeof commands / sizeof commands[0];

static void print_usage(FILE *out)
{
    fprintf(out, "usage: pixelmill [--version] [--help] COMMAND [ARGS]\n\n"
                 "Image-text datasets at scale: metadata to webdataset shards to training.\n\n"
                 "Commands:\n");
    for (size_t i = 0; i < ncommands; i++)
        fprintf(out, "  %-10s %s\n", commands[i].name, commands[i].summary);
    fprintf(out, "\nRun 'pixelmill COMMAND --help' for a command's options.\n"
                 "Exit status: 0 done, 1 failed, 2 usage error, 75 interrupted (resumable).\n");
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        print_usage(stderr);
        return PM_EXIT_USAGE;
    }
    if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) {
        print_usage(stdout);
        return PM_EXIT_OK;
    }
    if (!strcmp(argv[1], "--version") || !strcmp(argv[1], "version")) {
        printf("pixelmill %s\n", PIXELMILL_VERSION);
        return PM_EXIT_OK;
    }
    for (size_t i = 0; i < ncommands; i++) {
        const struct command *c = &commands[i];
        if (!c->fn || strcmp(argv[1], c->name) != 0)
            continue;
        struct pm_mpi mpi = {0, 1};
        int cargc = argc - 1;
        char **cargv = argv + 1;
        // before MPI start-up, which can take seconds: a preemption signal that arrives
        // then is held until the command's first check instead of killing the process
        if (c->flags & RESUMABLE)
            pm_signal_install();
        if (c->flags & USES_MPI)
            pm_mpi_init(&mpi, &cargc, &cargv);
        int rc = c->fn(cargc, cargv, &mpi);
        if (c->flags & USES_MPI)
            pm_mpi_finalize();
        return rc;
    }
    pm_log_error("'%s' is not a pixelmill command; see 'pixelmill --help'", argv[1]);
    return PM_EXIT_USAGE;
}
