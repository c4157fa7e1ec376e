/*
 * pixelmill doctor — node health checks for cluster prologs and operators: CPU, memory,
 * load, storage speed, GPUs, NCCL, libfabric providers and S3 reachability (health/).
 * Prints a table (or JSON), optionally writes Prometheus metrics, and exits 0 when the
 * node is healthy, 1 when a check failed (the reasons are printed), 2 on a usage error.
 */
#include "commands.h"
#include "fabric_check.h"
#include "gpu_check.h"
#include "health_report.h"
#include "host_check.h"
#include "metrics.h"
#include "nccl_check.h"
#include "pm_error.h"
#include "pm_log.h"
#include "s3_check.h"
#include "storage_check.h"

#include <errno.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void print_help(FILE *out)
{
    fprintf(out,
            "usage: pixelmill doctor [--gpu] [--nccl] [--fabric [PROV]] [--storage PATH]\n"
            "                        [--s3 URL] [--json] [--fail-on-warning]\n"
            "                        [--metrics-file F] [--force-fail REASON] [thresholds]\n"
            "\n"
            "Check that this node can run pixelmill jobs. CPU, memory and load are always\n"
            "checked; the rest on request. Checks that cannot run here (no GPU, library not\n"
            "installed) are reported as 'skipped' with the reason, never as passed.\n"
            "\n"
            "Checks:\n"
            "  --gpu              GPU count and memory, an FP32 GEMM (results verified) and\n"
            "                     device-to-device memory bandwidth per GPU (CUDA runtime and\n"
            "                     cuBLAS, loaded at run time)\n"
            "  --nccl             NCCL all-reduce bus bandwidth across the local GPUs\n"
            "  --fabric [PROV]    libfabric providers; with PROV (e.g. efa) fail without it\n"
            "  --storage PATH     free space and write/read MB/s of a directory (write with\n"
            "                     fsync; read with O_DIRECT, else after fadvise DONTNEED)\n"
            "  --s3 URL           HEAD of s3://BUCKET[/KEY] or an http(s) URL: reachable?\n"
            "  --force-fail REASON  add a failing check with this reason (tests the drain)\n"
            "\n"
            "Thresholds (fail below; 0 = none unless a default is shown):\n"
            "  --min-cpus N            --max-load-per-cpu X (warn above; default 2)\n"
            "  --min-gpus N            (GPUs expected: a missing GPU fails, not skips)\n"
            "  --min-gpu-tflops X      --min-gpu-membw GBPS      --gemm-size N (4096)\n"
            "  --membw-mib N (512)\n"
            "  --min-nccl-busbw GBPS   --nccl-mib N (256)\n"
            "  --min-free-gib G (1)    --min-write-mbps X        --min-read-mbps X\n"
            "  --storage-mib N (256)   --s3-timeout S (10)\n"
            "\n"
            "Output:\n"
            "  --json             one JSON document {healthy, reasons, checks} on stdout\n"
            "  --fail-on-warning  warnings make the node unhealthy too\n"
            "  --metrics-file F   also write Prometheus text to F (atomic rename; for\n"
            "                     node_exporter's textfile collector)\n"
            "  -h, --help         this help\n"
            "\n"
            "Statuses: ok, warn, fail, skipped. The last table line is 'healthy' or\n"
            "'unhealthy: CHECK: REASON; ...' (what cluster/slurm/prolog.sh puts on a\n"
            "drained node).\n"
            "\n"
            "Exit status: 0 healthy, 1 unhealthy (a check failed, or warned with\n"
            "--fail-on-warning), 2 usage error.\n");
}

struct doctor_opts {
    bool gpu, nccl, fabric, json, fail_on_warning;
    const char *fabric_expect, *storage, *s3, *force_fail, *metrics_file;
    long min_cpus, s3_timeout;
    double max_load_per_cpu;
    struct gpu_check_opts gpu_opts;
    struct nccl_check_opts nccl_opts;
    struct storage_check_opts storage_opts;
};

static int parse_double(const char *opt, const char *s, double *out)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end || !isfinite(v)) {
        pm_log_error("doctor: %s needs a number, got '%s'", opt, s);
        return -1;
    }
    *out = v;
    return 0;
}

static int parse_long(const char *opt, const char *s, long lo, long hi, long *out)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi) {
        pm_log_error("doctor: %s needs an integer in [%ld, %ld], got '%s'", opt, lo, hi, s);
        return -1;
    }
    *out = v;
    return 0;
}

// Returns 0, or PM_EXIT_USAGE; *help set for --help.
static int parse_args(int argc, char **argv, struct doctor_opts *o, bool *help)
{
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        long l;
        double d = 0;
#define NEEDS_VALUE                                                                                \
    do {                                                                                           \
        if (!v) {                                                                                  \
            pm_log_error("doctor: %s needs a value", a);                                           \
            return PM_EXIT_USAGE;                                                                  \
        }                                                                                          \
        i++;                                                                                       \
    } while (0)
#define DOUBLE_OPT(name, field)                                                                    \
    if (!strcmp(a, name)) {                                                                        \
        NEEDS_VALUE;                                                                               \
        if (parse_double(a, v, &d))                                                                \
            return PM_EXIT_USAGE;                                                                  \
        if (d < 0) {                                                                               \
            pm_log_error("doctor: %s must not be negative", a);                                    \
            return PM_EXIT_USAGE;                                                                  \
        }                                                                                          \
        field = d;                                                                                 \
        continue;                                                                                  \
    }
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            *help = true;
            return 0;
        }
        if (!strcmp(a, "--gpu")) {
            o->gpu = true;
            continue;
        }
        if (!strcmp(a, "--nccl")) {
            o->nccl = true;
            continue;
        }
        if (!strcmp(a, "--json")) {
            o->json = true;
            continue;
        }
        if (!strcmp(a, "--fail-on-warning")) {
            o->fail_on_warning = true;
            continue;
        }
        if (!strcmp(a, "--fabric") || !strncmp(a, "--fabric=", 9)) {
            o->fabric = true;
            if (a[8] == '=')
                o->fabric_expect = a + 9;
            else if (v && v[0] != '-')
                o->fabric_expect = argv[++i];
            if (o->fabric_expect && !o->fabric_expect[0]) {
                pm_log_error("doctor: --fabric= needs a provider name");
                return PM_EXIT_USAGE;
            }
            continue;
        }
        if (!strcmp(a, "--storage")) {
            NEEDS_VALUE;
            o->storage = v;
            continue;
        }
        if (!strcmp(a, "--s3")) {
            NEEDS_VALUE;
            o->s3 = v;
            continue;
        }
        if (!strcmp(a, "--force-fail")) {
            NEEDS_VALUE;
            o->force_fail = v;
            continue;
        }
        if (!strcmp(a, "--metrics-file")) {
            NEEDS_VALUE;
            o->metrics_file = v;
            continue;
        }
        if (!strcmp(a, "--min-cpus")) {
            NEEDS_VALUE;
            if (parse_long(a, v, 0, 1 << 20, &o->min_cpus))
                return PM_EXIT_USAGE;
            continue;
        }
        if (!strcmp(a, "--min-gpus")) {
            NEEDS_VALUE;
            if (parse_long(a, v, 0, 1024, &l))
                return PM_EXIT_USAGE;
            o->gpu_opts.min_gpus = (int)l;
            o->gpu = true;
            continue;
        }
        if (!strcmp(a, "--gemm-size")) {
            NEEDS_VALUE;
            if (parse_long(a, v, 16, 16384, &l))
                return PM_EXIT_USAGE;
            o->gpu_opts.gemm_n = (int)l;
            continue;
        }
        if (!strcmp(a, "--membw-mib")) {
            NEEDS_VALUE;
            if (parse_long(a, v, 1, 65536, &l))
                return PM_EXIT_USAGE;
            o->gpu_opts.membw_mib = (unsigned)l;
            continue;
        }
        if (!strcmp(a, "--nccl-mib")) {
            NEEDS_VALUE;
            if (parse_long(a, v, 1, 16384, &l))
                return PM_EXIT_USAGE;
            o->nccl_opts.bytes = (size_t)l << 20;
            continue;
        }
        if (!strcmp(a, "--storage-mib")) {
            NEEDS_VALUE;
            if (parse_long(a, v, 1, 1 << 20, &l))
                return PM_EXIT_USAGE;
            o->storage_opts.mib = (unsigned)l;
            continue;
        }
        if (!strcmp(a, "--s3-timeout")) {
            NEEDS_VALUE;
            if (parse_long(a, v, 1, 3600, &o->s3_timeout))
                return PM_EXIT_USAGE;
            continue;
        }
        DOUBLE_OPT("--max-load-per-cpu", o->max_load_per_cpu)
        DOUBLE_OPT("--min-gpu-tflops", o->gpu_opts.min_tflops)
        DOUBLE_OPT("--min-gpu-membw", o->gpu_opts.min_membw_gbps)
        DOUBLE_OPT("--min-nccl-busbw", o->nccl_opts.min_busbw_gbps)
        DOUBLE_OPT("--min-free-gib", o->storage_opts.min_free_gib)
        DOUBLE_OPT("--min-write-mbps", o->storage_opts.min_write_mbps)
        DOUBLE_OPT("--min-read-mbps", o->storage_opts.min_read_mbps)
#undef DOUBLE_OPT
#undef NEEDS_VALUE
        pm_log_error("doctor: unknown option '%s'; see 'pixelmill doctor --help'", a);
        return PM_EXIT_USAGE;
    }
    if (o->nccl && o->nccl_opts.min_busbw_gbps > 0)
        o->nccl_opts.required = true;
    return 0;
}

int cmd_doctor(int argc, char **argv, const struct pm_mpi *mpi)
{
    (void)mpi;
    struct doctor_opts o = {0};
    o.max_load_per_cpu = 2.0;
    o.s3_timeout = 10;
    o.storage_opts.mib = 256;
    o.storage_opts.min_free_gib = 1.0;
    bool help = false;
    int rc = parse_args(argc, argv, &o, &help);
    if (rc)
        return rc;
    if (help) {
        print_help(stdout);
        return PM_EXIT_OK;
    }
    struct health_report r;
    health_report_init(&r);
    int st = PM_OK;
    if (o.force_fail && !health_report_add(&r, "forced", HEALTH_FAIL, "%s", o.force_fail))
        st = PM_ERR_NOMEM;
    if (st == PM_OK)
        st = host_check_cpu(&r, o.min_cpus);
    if (st == PM_OK)
        st = host_check_memory(&r);
    if (st == PM_OK)
        st = host_check_load(&r, o.max_load_per_cpu);
    if (st == PM_OK && o.storage) {
        o.storage_opts.path = o.storage;
        st = storage_check_run(&r, &o.storage_opts);
    }
    if (st == PM_OK && o.gpu)
        st = gpu_check_run(&r, &o.gpu_opts);
    if (st == PM_OK && o.nccl) {
        if (o.gpu_opts.min_gpus >= 2)
            o.nccl_opts.required = true;
        st = nccl_check_run(&r, &o.nccl_opts);
    }
    if (st == PM_OK && o.fabric)
        st = fabric_check_run(&r, o.fabric_expect);
    if (st == PM_OK && o.s3)
        st = s3_check_run(&r, o.s3, o.s3_timeout);
    if (st != PM_OK) {
        pm_log_error("doctor: out of memory");
        health_report_release(&r);
        return PM_EXIT_FAILED;
    }
    bool healthy = health_report_healthy(&r, o.fail_on_warning);
    int exit_status = healthy ? PM_EXIT_OK : PM_EXIT_FAILED;
    if (o.json) {
        char *s = health_report_json(&r, o.fail_on_warning);
        if (!s) {
            pm_log_error("doctor: out of memory");
            exit_status = PM_EXIT_FAILED;
        } else {
            printf("%s\n", s);
            free(s);
        }
    } else {
        health_report_print_table(&r, o.fail_on_warning, stdout);
    }
    fflush(stdout);
    if (o.metrics_file) {
        struct metrics m = METRICS_INIT;
        struct pm_error err = PM_ERROR_INIT;
        int mrc = health_report_to_metrics(&r, o.fail_on_warning, &m);
        if (mrc == PM_OK)
            mrc = metrics_write_file(&m, o.metrics_file, &err);
        else
            pm_error_set(&err, mrc, "doctor metrics: out of memory");
        if (mrc != PM_OK) {
            pm_log_error("doctor: %s", err.msg);
            exit_status = PM_EXIT_FAILED;
        }
        metrics_release(&m);
    }
    health_report_release(&r);
    return exit_status;
}
