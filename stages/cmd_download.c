/*
 * pixelmill download — URL lists to webdataset shards (issue 3, DESIGN §1–4).
 *
 * Orchestration only: options, the plan (download_plan), the optional URL dedupe before
 * any fetch, the dynamic work loop over units (work_counter + download_unit), progress,
 * and the final dataset.json and summary. See docs/operators.md.
 */
#include "atomic_file.h"
#include "commands.h"
#include "dataset_index.h"
#include "dataset_store.h"
#include "dedupe_spill.h"
#include "download_plan.h"
#include "download_unit.h"
#include "fetcher.h"
#include "file_hash.h"
#include "filter_expr.h"
#include "meta_source.h"
#include "image_decode.h"
#include "pm_error.h"
#include "pm_log.h"
#include "pm_mpi.h"
#include "pm_signal.h"
#include "progress.h"
#include "shard.h"
#include "shard_stats.h"
#include "store.h"
#include "table_reader.h"
#include "url_policy.h"
#include "work_counter.h"

#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

#ifndef PIXELMILL_VERSION
#define PIXELMILL_VERSION "0.0.0"
#endif

static const char usage_text[] =
    "usage: pixelmill download --input PATH [--input PATH...] --output DIR [options] [PATH...]\n"
    "\n"
    "Download the images of URL lists (Parquet, CSV, TSV, JSONL; .gz/.zst) into webdataset\n"
    "shards: NNNNN.tar, NNNNN.parquet (one row per input row), NNNNN_stats.json, dataset.json.\n"
    "Run under mpirun for several ranks; rerun with the same arguments to resume.\n"
    "\n"
    "Input:\n"
    "  --input PATH                 input file (repeatable; extra arguments are inputs too)\n"
    "  --input-format FMT           csv|tsv|jsonl|parquet (default: from the file name)\n"
    "  --url-col NAME               URL column (url)\n"
    "  --caption-col NAME           caption column (none)\n"
    "  --keep-cols A,B              columns carried into the sidecar and the sample JSON\n"
    "  --where EXPR                 keep only rows passing EXPR (repeatable, AND), e.g.\n"
    "                               'punsafe < 0.1'; others get status filtered, no fetch\n"
    "  --dedupe-urls                fetch each normalised URL once (global, before fetching)\n"
    "  --dedupe-memory-limit SIZE   bytes per rank for --dedupe-urls (K/M/G; 512M); beyond it\n"
    "                               the URL records go to hash-range files under _work/\n"
    "Output:\n"
    "  --output DIR|s3://B/P        dataset directory or S3 prefix\n"
    "  --work-dir DIR               S3 output: where the resume plan and input slices go\n"
    "                               (shared by all nodes; default $TMPDIR/pixelmill-download-\n"
    "                               HASH, one node); a directory output keeps them in DIR/_work\n"
    "  --s3-endpoint URL            S3 endpoint (default: AWS_ENDPOINT_URL or AWS)\n"
    "  --samples-per-shard N        rows per shard (10000)\n"
    "  --image-size N               target size (256)\n"
    "  --resize-mode MODE           no|keep_ratio|keep_ratio_largest|center_crop|border (border)\n"
    "  --resize-only-if-bigger      never upscale\n"
    "  --encode-format FMT          jpg|webp (jpg)\n"
    "  --encode-quality Q           1..100 (95)\n"
    "  --min-image-size N           filter images whose smaller side is below N (0)\n"
    "  --max-image-area N           filter images with more pixels (inf)\n"
    "  --max-aspect-ratio R         filter images with a larger long/short ratio (inf)\n"
    "  --max-pixels N               decompression-bomb guard, from the header (178956970)\n"
    "Network:\n"
    "  --timeout S                  whole-transfer deadline per attempt, seconds (10)\n"
    "  --retries N                  extra attempts for retryable failures (2)\n"
    "  --concurrency N              transfers in flight per rank (256)\n"
    "  --threads N                  decode/encode threads per rank (cores / ranks per node)\n"
    "  --max-bytes N                body size limit (33554432)\n"
    "  --user-agent-token TOKEN     name in the user agent, matched in X-Robots-Tag\n"
    "  --disallowed-header-directives LIST\n"
    "                               X-Robots-Tag opt-outs (noai,noimageai,noindex,noimageindex)\n"
    "  --allow-private-network      allow loopback, private (10/8, 172.16/12, 192.168/16,\n"
    "                               fc00::/7) and CGNAT addresses; link-local (169.254/16,\n"
    "                               fe80::/10) and cloud metadata addresses stay refused\n"
    "  --ca-file PEM                trusted CA bundle\n"
    "Reporting:\n"
    "  --metrics-file PATH          Prometheus text, rewritten atomically every few seconds\n"
    "  --quiet                      only errors and the final summary\n"
    "  --help                       this text\n"
    "Testing only (not for production):\n"
    "  --allow-address IP           allow this one address even if private (repeatable;\n"
    "                               tests reach a loopback server while the rest is refused)\n"
    "  --progress-tty               always draw the live line (tests of the terminal output)\n"
    "\n"
    "Exit status: 0 done, 1 failed, 2 usage error, 75 interrupted (rerun to resume).\n";

struct dl_options {
    const char **inputs;
    size_t ninputs;
    const char *output;   /* the dataset: a directory or s3://bucket/prefix */
    const char *work_dir; /* --work-dir */
    const char *s3_endpoint;
    char work[PATH_MAX]; /* directory holding _work/: the output itself, or (S3) work_dir */
    const char *input_format;
    const char *url_col;
    const char *caption_col;
    char *keep_cols_arg;
    const char **keep;
    size_t nkeep;
    int image_size;
    const char *resize_mode;
    int only_if_bigger;
    const char *encode_format;
    int encode_quality;
    long long samples_per_shard;
    double timeout;
    int retries;
    int concurrency;
    int threads;
    long long min_image_size;
    double max_image_area;
    double max_aspect_ratio;
    long long max_bytes;
    long long max_pixels;
    const char **where;
    size_t nwhere;
    int dedupe_urls;
    size_t dedupe_memory; /* --dedupe-memory-limit */
    const char *ua_token;
    const char *directives;
    int allow_private;
    const char *ca_file;
    const char *metrics_file;
    int quiet;
    char allow_addresses[1024];
    int progress_tty;
};

/* Error classes shown in progress and metrics (a fixed list; "other" takes the rest). */
static const char *const error_classes[] = {"http 403",
                                            "http 404",
                                            "http 410",
                                            "http 429",
                                            "http 4xx",
                                            "http 5xx",
                                            "timeout",
                                            "dns",
                                            "tls",
                                            "connect",
                                            "network",
                                            "too large",
                                            "truncated",
                                            "redirect loop",
                                            "bad url",
                                            "missing url",
                                            "blocked",
                                            "disallowed",
                                            "unsupported format",
                                            "corrupt",
                                            "too many pixels",
                                            "where",
                                            "image too small",
                                            "aspect ratio too large",
                                            "image area too large",
                                            "duplicate",
                                            "other"};
#define NERRCLASS (sizeof error_classes / sizeof error_classes[0])

enum {
    SLOT_ROWS,
    SLOT_SUCCESS,
    SLOT_BYTES,
    SLOT_BYTES_OUT,
    SLOT_UNITS,
    SLOT_SKIPPED_ROWS,
    SLOT_STATUS0,
    SLOT_ERR0 = SLOT_STATUS0 + DL_NSTATUS,
    SLOT_N = SLOT_ERR0 + (int)NERRCLASS
};

static size_t error_slot(const char *cls)
{
    if (!strncmp(cls, "http ", 5)) {
        for (size_t i = 0; i < 4; i++)
            if (!strcmp(cls, error_classes[i]))
                return i;
        return cls[5] == '5' ? 5 : 4;
    }
    if (!strncmp(cls, "blocked", 7))
        return 16;
    if (!strncmp(cls, "unsupported format", 18))
        return 18;
    if (!strncmp(cls, "corrupt", 7) || !strcmp(cls, "decode error"))
        return 19;
    for (size_t i = 6; i < NERRCLASS; i++)
        if (!strcmp(cls, error_classes[i]))
            return i;
    return NERRCLASS - 1;
}

struct run_ctx {
    struct progress *prog;
};

static void on_row(void *arg, enum download_status st, const char *cls, uint64_t in, uint64_t out)
{
    struct run_ctx *c = arg;
    progress_add(c->prog, SLOT_ROWS, 1);
    progress_add(c->prog, SLOT_STATUS0 + st, 1);
    progress_add(c->prog, SLOT_BYTES, (int64_t)in);
    progress_add(c->prog, SLOT_BYTES_OUT, (int64_t)out);
    if (st == DL_SUCCESS)
        progress_add(c->prog, SLOT_SUCCESS, 1);
    else if (cls)
        progress_add(c->prog, SLOT_ERR0 + error_slot(cls), 1);
}

static void on_poll(void *arg)
{
    struct run_ctx *c = arg;
    progress_tick(c->prog);
}

/* ---- options ------------------------------------------------------------------------ */

static int push_str(const char ***arr, size_t *n, const char *s)
{
    const char **t = realloc(*arr, (*n + 1) * sizeof *t);
    if (!t)
        return PM_ERR_NOMEM;
    t[(*n)++] = s;
    *arr = t;
    return PM_OK;
}

static int parse_ll(const char *s, long long lo, long long hi, long long *out)
{
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi)
        return -1;
    *out = v;
    return 0;
}

static int parse_d(const char *s, double lo, double *out)
{
    char *end;
    if (!strcmp(s, "inf")) {
        *out = INFINITY;
        return 0;
    }
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end || !(v >= lo))
        return -1;
    *out = v;
    return 0;
}

enum {
    O_INPUT = 256,
    O_OUTPUT,
    O_WORKDIR,
    O_S3ENDPOINT,
    O_FORMAT,
    O_URL,
    O_CAPTION,
    O_KEEP,
    O_SIZE,
    O_MODE,
    O_BIGGER,
    O_EFMT,
    O_EQ,
    O_SPS,
    O_TIMEOUT,
    O_RETRIES,
    O_CONC,
    O_THREADS,
    O_MINSIZE,
    O_AREA,
    O_ASPECT,
    O_MAXBYTES,
    O_MAXPIX,
    O_WHERE,
    O_DEDUPE,
    O_DEDUPEMEM,
    O_UA,
    O_DIRECTIVES,
    O_PRIVATE,
    O_CA,
    O_METRICS,
    O_QUIET,
    O_HELP,
    O_ALLOWADDR,
    O_TTY
};

/* Also the keys of a pipeline file's [download] section (cmd_run.c). */
const struct option cmd_download_options[] = {
    {"input", required_argument, NULL, O_INPUT},
    {"output", required_argument, NULL, O_OUTPUT},
    {"work-dir", required_argument, NULL, O_WORKDIR},
    {"s3-endpoint", required_argument, NULL, O_S3ENDPOINT},
    {"input-format", required_argument, NULL, O_FORMAT},
    {"url-col", required_argument, NULL, O_URL},
    {"caption-col", required_argument, NULL, O_CAPTION},
    {"keep-cols", required_argument, NULL, O_KEEP},
    {"image-size", required_argument, NULL, O_SIZE},
    {"resize-mode", required_argument, NULL, O_MODE},
    {"resize-only-if-bigger", no_argument, NULL, O_BIGGER},
    {"encode-format", required_argument, NULL, O_EFMT},
    {"encode-quality", required_argument, NULL, O_EQ},
    {"samples-per-shard", required_argument, NULL, O_SPS},
    {"timeout", required_argument, NULL, O_TIMEOUT},
    {"retries", required_argument, NULL, O_RETRIES},
    {"concurrency", required_argument, NULL, O_CONC},
    {"threads", required_argument, NULL, O_THREADS},
    {"min-image-size", required_argument, NULL, O_MINSIZE},
    {"max-image-area", required_argument, NULL, O_AREA},
    {"max-aspect-ratio", required_argument, NULL, O_ASPECT},
    {"max-bytes", required_argument, NULL, O_MAXBYTES},
    {"max-pixels", required_argument, NULL, O_MAXPIX},
    {"where", required_argument, NULL, O_WHERE},
    {"dedupe-urls", no_argument, NULL, O_DEDUPE},
    {"dedupe-memory-limit", required_argument, NULL, O_DEDUPEMEM},
    {"user-agent-token", required_argument, NULL, O_UA},
    {"disallowed-header-directives", required_argument, NULL, O_DIRECTIVES},
    {"allow-private-network", no_argument, NULL, O_PRIVATE},
    {"ca-file", required_argument, NULL, O_CA},
    {"metrics-file", required_argument, NULL, O_METRICS},
    {"quiet", no_argument, NULL, O_QUIET},
    {"help", no_argument, NULL, O_HELP},
    {"allow-address", required_argument, NULL, O_ALLOWADDR},
    {"progress-tty", no_argument, NULL, O_TTY},
    {NULL, 0, NULL, 0},
};

/* Returns -1 to continue, else an exit status. */
static int parse_options(int argc, char **argv, struct dl_options *o, int rank)
{
    memset(o, 0, sizeof *o);
    o->url_col = "url";
    o->image_size = 256;
    o->resize_mode = "border";
    o->encode_format = "jpg";
    o->encode_quality = 95;
    o->samples_per_shard = 10000;
    o->timeout = 10;
    o->retries = 2;
    o->concurrency = 256;
    o->threads = 0;
    o->max_image_area = INFINITY;
    o->max_aspect_ratio = INFINITY;
    o->max_bytes = 32LL << 20;
    o->max_pixels = (long long)IMAGE_DEFAULT_MAX_PIXELS;
    o->dedupe_memory = (size_t)512 << 20;
    optind = 1;
    opterr = 0;
    int c;
    long long v;
    double d;
#define BAD(...)                                                                                   \
    do {                                                                                           \
        if (rank == 0)                                                                             \
            pm_log_error(__VA_ARGS__);                                                             \
        return PM_EXIT_USAGE;                                                                      \
    } while (0)
    while ((c = getopt_long(argc, argv, "", cmd_download_options, NULL)) != -1) {
        switch (c) {
        case O_INPUT:
            push_str(&o->inputs, &o->ninputs, optarg);
            break;
        case O_OUTPUT:
            o->output = optarg;
            break;
        case O_WORKDIR:
            o->work_dir = optarg;
            break;
        case O_S3ENDPOINT:
            o->s3_endpoint = optarg;
            break;
        case O_FORMAT:
            if (strcmp(optarg, "csv") && strcmp(optarg, "tsv") && strcmp(optarg, "jsonl") &&
                strcmp(optarg, "parquet"))
                BAD("--input-format: '%s' is not csv, tsv, jsonl or parquet", optarg);
            o->input_format = optarg;
            break;
        case O_URL:
            o->url_col = optarg;
            break;
        case O_CAPTION:
            o->caption_col = optarg;
            break;
        case O_KEEP: {
            free(o->keep_cols_arg);
            free(o->keep);
            o->keep = NULL;
            o->nkeep = 0;
            o->keep_cols_arg = strdup(optarg);
            if (!o->keep_cols_arg)
                BAD("out of memory");
            for (char *s = o->keep_cols_arg, *save = NULL, *t; (t = strtok_r(s, ",", &save));
                 s = NULL)
                if (*t)
                    push_str(&o->keep, &o->nkeep, t);
            break;
        }
        case O_SIZE:
            if (parse_ll(optarg, 1, 65535, &v))
                BAD("--image-size: '%s' is not an integer in 1..65535", optarg);
            o->image_size = (int)v;
            break;
        case O_MODE: {
            enum image_resize_mode m;
            if (image_resize_mode_parse(optarg, &m) || m == IMAGE_RESIZE_FIXED)
                BAD("--resize-mode: '%s' is not no, keep_ratio, keep_ratio_largest, "
                    "center_crop or border",
                    optarg);
            o->resize_mode = optarg;
            break;
        }
        case O_BIGGER:
            o->only_if_bigger = 1;
            break;
        case O_EFMT:
            if (strcmp(optarg, "jpg") && strcmp(optarg, "webp"))
                BAD("--encode-format: '%s' is not jpg or webp", optarg);
            o->encode_format = optarg;
            break;
        case O_EQ:
            if (parse_ll(optarg, 1, 100, &v))
                BAD("--encode-quality: '%s' is not an integer in 1..100", optarg);
            o->encode_quality = (int)v;
            break;
        case O_SPS:
            if (parse_ll(optarg, 1, 100000000, &v))
                BAD("--samples-per-shard: '%s' is not an integer in 1..1e8", optarg);
            o->samples_per_shard = v;
            break;
        case O_TIMEOUT:
            if (parse_d(optarg, 0.001, &d) || !isfinite(d) || d > 86400)
                BAD("--timeout: '%s' is not a number of seconds > 0", optarg);
            o->timeout = d;
            break;
        case O_RETRIES:
            if (parse_ll(optarg, 0, 100, &v))
                BAD("--retries: '%s' is not an integer in 0..100", optarg);
            o->retries = (int)v;
            break;
        case O_CONC:
            if (parse_ll(optarg, 1, 65536, &v))
                BAD("--concurrency: '%s' is not an integer in 1..65536", optarg);
            o->concurrency = (int)v;
            break;
        case O_THREADS:
            if (parse_ll(optarg, 1, 1024, &v))
                BAD("--threads: '%s' is not an integer in 1..1024", optarg);
            o->threads = (int)v;
            break;
        case O_MINSIZE:
            if (parse_ll(optarg, 0, 1 << 30, &v))
                BAD("--min-image-size: '%s' is not a non-negative integer", optarg);
            o->min_image_size = v;
            break;
        case O_AREA:
            if (parse_d(optarg, 0, &d))
                BAD("--max-image-area: '%s' is not a non-negative number or inf", optarg);
            o->max_image_area = d;
            break;
        case O_ASPECT:
            if (parse_d(optarg, 1, &d))
                BAD("--max-aspect-ratio: '%s' is not a number >= 1 or inf", optarg);
            o->max_aspect_ratio = d;
            break;
        case O_MAXBYTES:
            if (parse_ll(optarg, 1, 1LL << 40, &v))
                BAD("--max-bytes: '%s' is not a positive integer", optarg);
            o->max_bytes = v;
            break;
        case O_MAXPIX:
            if (parse_ll(optarg, 1, 1LL << 40, &v))
                BAD("--max-pixels: '%s' is not a positive integer", optarg);
            o->max_pixels = v;
            break;
        case O_WHERE:
            push_str(&o->where, &o->nwhere, optarg);
            break;
        case O_DEDUPE:
            o->dedupe_urls = 1;
            break;
        case O_DEDUPEMEM:
            if (meta_size_parse(optarg, &o->dedupe_memory) || o->dedupe_memory == 0)
                BAD("--dedupe-memory-limit: '%s' is not a positive size (e.g. 512M)", optarg);
            break;
        case O_UA:
            o->ua_token = optarg;
            break;
        case O_DIRECTIVES:
            o->directives = optarg;
            break;
        case O_PRIVATE:
            o->allow_private = 1;
            break;
        case O_CA:
            o->ca_file = optarg;
            break;
        case O_METRICS:
            o->metrics_file = optarg;
            break;
        case O_QUIET:
            o->quiet = 1;
            break;
        case O_HELP:
            if (rank == 0)
                fputs(usage_text, stdout);
            return PM_EXIT_OK;
        case O_ALLOWADDR:
            if (fetcher_allow_list_add(o->allow_addresses, sizeof o->allow_addresses, optarg))
                BAD("--allow-address: too many addresses");
            break;
        case O_TTY:
            o->progress_tty = 1;
            break;
        default:
            BAD("download: unknown or incomplete option '%s'; see 'pixelmill download --help'",
                argv[optind - 1]);
        }
    }
    for (int i = optind; i < argc; i++)
        push_str(&o->inputs, &o->ninputs, argv[i]);
    if (!o->ninputs)
        BAD("download: no --input given; see 'pixelmill download --help'");
    if (!o->output)
        BAD("download: no --output given; see 'pixelmill download --help'");
    for (size_t i = 0; i < o->ninputs; i++)
        if (!o->input_format && !table_format_from_name(o->inputs[i]))
            BAD("cannot tell the format of '%s' from its name; use --input-format", o->inputs[i]);
    return -1;
#undef BAD
}

static json_t *make_config(const struct dl_options *o)
{
    json_t *c = json_object(), *keep = json_array(), *where = json_array();
    for (size_t i = 0; i < o->nkeep; i++)
        json_array_append_new(keep, json_string(o->keep[i]));
    for (size_t i = 0; i < o->nwhere; i++)
        json_array_append_new(where, json_string(o->where[i]));
    json_object_set_new(c, "input_format",
                        o->input_format ? json_string(o->input_format) : json_null());
    json_object_set_new(c, "url_col", json_string(o->url_col));
    json_object_set_new(c, "caption_col",
                        o->caption_col ? json_string(o->caption_col) : json_null());
    json_object_set_new(c, "keep_cols", keep);
    json_object_set_new(c, "where", where);
    json_object_set_new(c, "dedupe_urls", json_boolean(o->dedupe_urls));
    json_object_set_new(c, "samples_per_shard", json_integer(o->samples_per_shard));
    json_object_set_new(c, "image_size", json_integer(o->image_size));
    json_object_set_new(c, "resize_mode", json_string(o->resize_mode));
    json_object_set_new(c, "resize_only_if_bigger", json_boolean(o->only_if_bigger));
    json_object_set_new(c, "encode_format", json_string(o->encode_format));
    json_object_set_new(c, "encode_quality", json_integer(o->encode_quality));
    json_object_set_new(c, "min_image_size", json_integer(o->min_image_size));
    json_object_set_new(c, "max_image_area",
                        isfinite(o->max_image_area) ? json_real(o->max_image_area) : json_null());
    json_object_set_new(c, "max_aspect_ratio",
                        isfinite(o->max_aspect_ratio) ? json_real(o->max_aspect_ratio)
                                                      : json_null());
    json_object_set_new(c, "max_bytes", json_integer(o->max_bytes));
    json_object_set_new(c, "max_pixels", json_integer(o->max_pixels));
    json_object_set_new(c, "user_agent_token",
                        o->ua_token ? json_string(o->ua_token) : json_null());
    json_object_set_new(c, "disallowed_header_directives",
                        o->directives ? json_string(o->directives) : json_null());
    json_object_set_new(c, "allow_private_network", json_boolean(o->allow_private));
    return c;
}

/* Columns the slices need: url, caption, keep-cols, where columns (distinct, that order). */
static int slice_columns(const struct dl_options *o, const char ***cols, size_t *n,
                         struct pm_error *err)
{
    *cols = NULL;
    *n = 0;
    const char *cand[4096];
    size_t nc = 0;
    cand[nc++] = o->url_col;
    if (o->caption_col)
        cand[nc++] = o->caption_col;
    for (size_t i = 0; i < o->nkeep && nc < 2048; i++)
        cand[nc++] = o->keep[i];
    struct filter_expr *f = NULL;
    if (o->nwhere) {
        int rc = filter_expr_parse(&f, o->where, o->nwhere, err);
        if (rc)
            return rc;
        for (size_t i = 0; i < filter_expr_num_columns(f) && nc < 4096; i++)
            cand[nc++] = filter_expr_column(f, i);
    }
    for (size_t i = 0; i < nc; i++) {
        int seen = 0;
        for (size_t j = 0; j < *n && !seen; j++)
            seen = !strcmp((*cols)[j], cand[i]);
        if (!seen) {
            char *copy = strdup(cand[i]);
            if (!copy || push_str(cols, n, copy)) {
                filter_expr_free(f);
                return pm_error_set(err, PM_ERR_NOMEM, "out of memory");
            }
        }
    }
    filter_expr_free(f);
    return PM_OK;
}

/* ---- --dedupe-urls ------------------------------------------------------------------ */

// Rows of unit u: samples_per_shard, the last unit what is left.
static uint64_t unit_rows(const struct download_plan *plan, uint64_t u)
{
    uint64_t sps = plan->samples_per_shard, first = u * sps;
    return first >= plan->total_rows        ? 0
           : plan->total_rows - first < sps ? plan->total_rows - first
                                            : sps;
}

// The (hash, row) record of every planned row of this rank's units that passes --where and
// has a URL, added to `sp` in row order.
static int add_url_records(const struct dl_options *o, const struct download_plan *plan,
                           const struct pm_mpi *mpi, struct dedupe_spill *sp, struct pm_error *err)
{
    struct filter_expr *where = NULL;
    struct bytebuf norm = BYTEBUF_INIT;
    bytebuf_init(&norm, URL_POLICY_MAX * 2);
    uint8_t *keep = NULL;
    int rc = PM_OK;
    if (o->nwhere) {
        rc = filter_expr_parse(&where, o->where, o->nwhere, err);
        rc = rc ? rc : filter_expr_bind(where, plan->columns, plan->ncolumns, err);
    }
    int url_idx = -1;
    for (size_t j = 0; j < plan->ncolumns; j++)
        if (!strcmp(plan->columns[j].name, o->url_col))
            url_idx = (int)j;
    if (!rc && (url_idx < 0 || plan->columns[url_idx].type != COLUMN_STRING))
        rc = pm_error_set(err, PM_ERR_USAGE, "the url column '%s' must be a text column",
                          o->url_col);
    uint64_t sps = plan->samples_per_shard;
    for (uint64_t u = (uint64_t)mpi->rank; !rc && u < plan->nunits; u += (uint64_t)mpi->size) {
        struct table_batch b;
        rc = download_plan_read_unit(plan, o->work, u, &b, err);
        if (!rc && where) {
            uint8_t *k = realloc(keep, b.nrows ? b.nrows : 1);
            if (!k)
                rc = pm_error_set(err, PM_ERR_NOMEM, "out of memory");
            else
                filter_expr_eval(where, &b, (keep = k), NULL);
        }
        for (size_t i = 0; !rc && i < b.nrows; i++) {
            const struct column *c = &b.cols[url_idx];
            size_t n;
            const char *s = column_string(c, i, &n);
            if (!c->valid[i] || n == 0 || (where && !keep[i]))
                continue;
            // normalise (a NUL-terminated copy); hash the raw bytes if it does not parse
            bytebuf_clear(&norm);
            XXH128_hash_t h;
            char *z = memchr(s, 0, n) ? NULL : strndup(s, n);
            struct pm_error e2 = PM_ERROR_INIT;
            if (z && url_policy_normalize(z, &norm, &e2) == PM_OK)
                h = XXH3_128bits(norm.data, norm.len);
            else
                h = XXH3_128bits(s, n);
            free(z);
            struct dedupe_record r = {h.high64, h.low64, u * sps + i};
            rc = dedupe_spill_add(sp, &r, err);
        }
        table_batch_release(&b);
    }
    filter_expr_free(where);
    free(keep);
    bytebuf_release(&norm);
    return rc;
}

// Write every unit file of this rank from the duplicates (row order) of `sp`.
static int write_url_dups(const struct dl_options *o, const struct download_plan *plan,
                          const struct pm_mpi *mpi, struct dedupe_spill *sp, struct pm_error *err)
{
    uint64_t sps = plan->samples_per_shard, most = unit_rows(plan, 0);
    uint64_t *ent = malloc((size_t)(most ? most : 1) * 3 * sizeof *ent);
    if (!ent)
        return pm_error_set(err, PM_ERR_NOMEM, "out of memory");
    uint64_t id = 0, keeper = 0;
    int more = dedupe_spill_next(sp, &id, &keeper, err);
    int rc = more < 0 ? -more : PM_OK;
    for (uint64_t u = (uint64_t)mpi->rank; !rc && u < plan->nunits; u += (uint64_t)mpi->size) {
        size_t ne = 0;
        while (!rc && more > 0 && id / sps <= u) {
            if (id / sps < u || ne == most) { // not one of this rank's rows: never happens
                rc = pm_error_set(err, PM_ERR_INTERNAL, "url dedupe: row %" PRIu64 " out of order",
                                  id);
                break;
            }
            ent[3 * ne] = id % sps;
            ent[3 * ne + 1] = keeper / sps;
            ent[3 * ne + 2] = keeper % sps;
            ne++;
            more = dedupe_spill_next(sp, &id, &keeper, err);
            rc = more < 0 ? -more : rc;
        }
        rc = rc ? rc : download_dedupe_write(o->work, u, plan->digits, ent, ne, err);
    }
    free(ent);
    return rc;
}

static int dedupe_urls(const struct dl_options *o, const struct download_plan *plan,
                       const struct pm_mpi *mpi, struct pm_error *err)
{
    char marker[PATH_MAX + 32], dir[PATH_MAX + 32], spill[PATH_MAX + 32];
    snprintf(marker, sizeof marker, "%s/_work/dedupe-urls.done", o->work);
    snprintf(dir, sizeof dir, "%s/_work/dedupe-urls", o->work);
    snprintf(spill, sizeof spill, "%s/_work/dedupe-urls.spill", o->work);
    int done = mpi->rank == 0 && access(marker, F_OK) == 0;
    MPI_CHECK(MPI_Bcast(&done, 1, MPI_INT, 0, MPI_COMM_WORLD));
    int rc = PM_OK;
    // the spill files of an earlier run that was killed are never read: removed first
    if (mpi->rank == 0)
        rc = dedupe_spill_clear(spill, err);
    if (done)
        return pm_mpi_worst(rc);
    if (!rc && mpi->rank == 0 && mkdir(dir, 0777) && errno != EEXIST)
        rc = pm_error_set(err, PM_ERR_IO, "cannot create '%s': %s", dir, strerror(errno));
    if ((rc = pm_mpi_worst(rc)))
        return rc;
    // parts: enough that the most records a rank can have fit the memory limit
    uint64_t mine = 0, most = 0;
    for (uint64_t u = (uint64_t)mpi->rank; u < plan->nunits; u += (uint64_t)mpi->size)
        mine += unit_rows(plan, u);
    MPI_CHECK(MPI_Allreduce(&mine, &most, 1, MPI_UINT64_T, MPI_MAX, MPI_COMM_WORLD));
    unsigned parts = dedupe_spill_parts(most, o->dedupe_memory);
    struct dedupe_spill *sp = NULL;
    rc = dedupe_spill_create(&sp, spill, mpi->rank, parts, (size_t)mine, err);
    rc = rc ? rc : add_url_records(o, plan, mpi, sp, err);
    if ((rc = pm_mpi_worst(rc))) {
        if (!err->code)
            pm_error_set(err, rc, "url dedupe failed on another rank");
        goto out;
    }
    struct dedupe_exact_stats ds;
    if ((rc = dedupe_spill_run(sp, MPI_COMM_WORLD, o->dedupe_memory, &ds, err)))
        goto out;
    rc = write_url_dups(o, plan, mpi, sp, err);
    if ((rc = pm_mpi_worst(rc))) {
        if (!err->code)
            pm_error_set(err, rc, "url dedupe failed on another rank");
        goto out;
    }
    if (mpi->rank == 0) {
        rc = atomic_file_write_all(marker, "done\n", 5, err);
        pm_log_info("url dedupe: %" PRIu64 " urls, %" PRIu64 " duplicates (%u part%s)", ds.records,
                    ds.duplicates, parts, parts == 1 ? ", in memory" : "s on disk");
    }
    rc = pm_mpi_worst(rc);
out:
    dedupe_spill_free(sp);
    // every rank's files are gone once all have freed theirs: then the directory
    MPI_CHECK(MPI_Barrier(MPI_COMM_WORLD));
    if (mpi->rank == 0 && parts > 1) {
        struct pm_error e2 = PM_ERROR_INIT;
        if (dedupe_spill_clear(spill, &e2))
            pm_log_warn("%s", e2.msg);
    }
    return rc;
}

/* ---- finalize ----------------------------------------------------------------------- */

static int cmp_count_desc(const void *a, const void *b)
{
    const double *x = a, *y = b;
    return x[0] < y[0] ? 1 : x[0] > y[0] ? -1 : 0;
}

static int finalize(const struct dl_options *o, struct store *out,
                    const struct download_plan *plan, json_t *config, struct progress *prog,
                    struct pm_error *err)
{
    struct dataset_index x;
    int rc = dataset_index_init(&x);
    if (rc)
        return pm_error_set(err, rc, "out of memory");
    struct stat_map errors;
    stat_map_init(&errors, true);
    const char *base = strrchr(o->output, '/');
    base = base && base[1] ? base + 1 : o->output;
    rc = dataset_index_set_info(&x, base, "download", "pixelmill " PIXELMILL_VERSION);
    rc = rc ? rc : dataset_index_set_config(&x, config);
    for (uint64_t u = 0; !rc && u < plan->nunits; u++) {
        char name[SHARD_NAME_MAX + 16];
        shard_path(name, sizeof name, NULL, u, plan->digits, "_stats.json");
        struct shard_stats st;
        rc = dataset_store_read_stats(out, name, &st, err);
        if (rc == PM_ERR_NOT_FOUND)
            pm_error_set(err, PM_ERR_INTERNAL, "shard %" PRIu64 " is not complete", u);
        rc = rc ? rc : dataset_index_add_stats(&x, &st, err);
        rc = rc ? rc : stat_map_merge(&errors, &st.errors);
        shard_stats_release(&st);
    }
    rc = rc ? rc : dataset_store_write_index(out, &x, err);
    if (!rc) {
        double wall = progress_elapsed(prog);
        int64_t ok_run = progress_total(prog, SLOT_SUCCESS);
        int64_t bytes_run = progress_total(prog, SLOT_BYTES);
        uint64_t rows = dataset_index_total_rows(&x);
        printf("pixelmill download: %" PRIu64 " rows in %" PRIu64 " shards -> %s\n", rows,
               plan->nunits, o->output);
        printf("  %-22s %12s %7s\n", "status", "rows", "%");
        for (size_t i = 0; i < x.status.n; i++)
            printf("  %-22s %12.0f %6.2f%%\n", x.status.names[i], x.status.values[i],
                   rows ? 100.0 * x.status.values[i] / (double)rows : 0.0);
        if (errors.n) {
            double(*order)[2] = malloc(errors.n * sizeof *order);
            if (order) {
                for (size_t i = 0; i < errors.n; i++) {
                    order[i][0] = errors.values[i];
                    order[i][1] = (double)i;
                }
                qsort(order, errors.n, sizeof *order, cmp_count_desc);
                printf("  top error classes:\n");
                for (size_t i = 0; i < errors.n && i < 10; i++)
                    printf("    %-30s %10.0f\n", errors.names[(size_t)order[i][1]], order[i][0]);
                free(order);
            }
        }
        printf("  this run: %.1f s wall, %" PRId64 " successes (%.1f/s), %.2f MB downloaded "
               "(%.2f MB/s)\n",
               wall, ok_run, wall > 0 ? (double)ok_run / wall : 0.0, (double)bytes_run / 1e6,
               wall > 0 ? (double)bytes_run / 1e6 / wall : 0.0);
        fflush(stdout);
    }
    stat_map_release(&errors);
    dataset_index_release(&x);
    return rc;
}

/* ---- the command -------------------------------------------------------------------- */

static int local_ranks(void)
{
    MPI_Comm node;
    int n = 1;
    if (MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, 0, MPI_INFO_NULL, &node) ==
        MPI_SUCCESS) {
        MPI_Comm_size(node, &n);
        MPI_Comm_free(&node);
    }
    return n;
}

static void sweep_dir(const char *dir)
{
    struct pm_error e = PM_ERROR_INIT;
    size_t removed = 0;
    struct stat st;
    if (stat(dir, &st) != 0)
        return;
    if (atomic_file_sweep(dir, 0, &removed, &e))
        pm_log_warn("%s", e.msg);
    else if (removed)
        pm_log_info("removed %zu temporary files of an earlier run in '%s'", removed, dir);
}

int cmd_download(int argc, char **argv, const struct pm_mpi *mpi)
{
    struct dl_options o;
    int ex = parse_options(argc, argv, &o, mpi->rank);
    struct pm_error err = PM_ERROR_INIT;
    const char **cols = NULL;
    size_t ncols = 0;
    json_t *config = NULL;
    struct download_plan plan;
    memset(&plan, 0, sizeof plan);
    struct download_engine *engine = NULL;
    struct progress *prog = NULL;
    struct work_counter *wc = NULL;
    struct store *out = NULL;
    int rc = PM_OK;
    if (ex >= 0)
        goto done;
    pm_log_set_quiet(o.quiet || mpi->rank != 0);

    // The dataset's objects go through the store (a directory or an S3 prefix; one per
    // rank); the resume plan and input slices stay in o.work (the output itself for a
    // directory).
    if (strncmp(o.output, "s3://", 5) == 0) {
        char h[FILE_HASH_HEX_LEN + 1];
        const char *t = getenv("TMPDIR");
        file_hash_hex_of(o.output, strlen(o.output), h);
        if (o.work_dir)
            snprintf(o.work, sizeof o.work, "%s", o.work_dir);
        else
            snprintf(o.work, sizeof o.work, "%s/pixelmill-download-%.16s", t && t[0] ? t : "/tmp",
                     h);
    } else {
        snprintf(o.work, sizeof o.work, "%s", o.output);
    }
    struct store_options so = STORE_OPTIONS_INIT;
    so.s3_endpoint = o.s3_endpoint;
    // rank 0 first: it creates the directory; then stale temporary files and multipart
    // uploads of killed writers (before anything is written)
    if (mpi->rank == 0) {
        if (mkdir(o.work, 0777) && errno != EEXIST)
            rc = pm_error_set(&err, PM_ERR_IO, "cannot create '%s': %s", o.work, strerror(errno));
        if (!rc)
            rc = store_open(o.output, &so, &out, &err);
        size_t removed = 0;
        if (!rc && (rc = store_sweep_incomplete(out, 0, &removed, &err)) == PM_OK && removed)
            pm_log_info("removed %zu unfinished writes of an earlier run in '%s'", removed,
                        o.output);
        char d[PATH_MAX + 32];
        snprintf(d, sizeof d, "%s/_work", o.work);
        sweep_dir(d);
        snprintf(d, sizeof d, "%s/_work/input", o.work);
        sweep_dir(d);
        snprintf(d, sizeof d, "%s/_work/dedupe-urls", o.work);
        sweep_dir(d);
    }
    if ((rc = pm_mpi_worst(rc)))
        goto fail;
    if (mpi->rank != 0 && (rc = store_open(o.output, &so, &out, &err)))
        goto fail;
    if ((rc = slice_columns(&o, &cols, &ncols, &err)))
        goto fail;
    config = make_config(&o);
    struct download_plan_options po = {o.inputs, o.ninputs, o.input_format,
                                       cols,     ncols,     (uint64_t)o.samples_per_shard,
                                       o.work,   config};
    if ((rc = download_plan_make(&plan, &po, mpi, &err)))
        goto fail;
    if (!plan.reused)
        pm_log_info("planned %" PRIu64 " rows of %zu inputs into %" PRIu64 " shards",
                    plan.total_rows, plan.ninputs, plan.nunits);
    if (o.dedupe_urls && (rc = dedupe_urls(&o, &plan, mpi, &err)))
        goto fail;
    // agreed: a signal that reached one rank only must stop them all here (a rank leaving
    // alone would leave the others waiting in the set-up collectives below)
    if (pm_mpi_worst(pm_signal_pending() ? 1 : 0)) {
        rc = pm_error_set(&err, PM_ERR_INTERRUPTED, "interrupted before downloading");
        goto fail_collective;
    }

    // engine, progress, counter
    struct download_unit_config uc;
    memset(&uc, 0, sizeof uc);
    uc.output = o.work;
    uc.store = out;
    uc.plan = &plan;
    uc.url_col = o.url_col;
    uc.caption_col = o.caption_col;
    uc.keep_cols = o.keep;
    uc.nkeep = o.nkeep;
    uc.where = o.where;
    uc.nwhere = o.nwhere;
    uc.dedupe_urls = o.dedupe_urls;
    image_resize_mode_parse(o.resize_mode, &uc.resize.mode);
    uc.resize.size = o.image_size;
    uc.resize.only_if_bigger = o.only_if_bigger;
    uc.encode.format = !strcmp(o.encode_format, "webp") ? IMAGE_ENCODE_WEBP : IMAGE_ENCODE_JPEG;
    uc.encode.quality = o.encode_quality;
    uc.max_pixels = (uint64_t)o.max_pixels;
    uc.min_image_size = (int)o.min_image_size;
    uc.max_image_area = isfinite(o.max_image_area) ? o.max_image_area : 0;
    uc.max_aspect_ratio = isfinite(o.max_aspect_ratio) ? o.max_aspect_ratio : 0;
    uc.concurrency = o.concurrency;
    int cores = (int)sysconf(_SC_NPROCESSORS_ONLN);
    int lr = local_ranks();
    uc.threads = o.threads ? o.threads : (cores / (lr > 0 ? lr : 1) > 0 ? cores / lr : 1);
    uc.tar_mtime = plan.created;
    fetcher_config_init(&uc.fetch);
    uc.fetch.timeout_ms = (long)(o.timeout * 1000);
    if (uc.fetch.connect_timeout_ms > uc.fetch.timeout_ms)
        uc.fetch.connect_timeout_ms = uc.fetch.timeout_ms;
    uc.fetch.retries = o.retries;
    uc.fetch.max_bytes = (size_t)o.max_bytes;
    uc.fetch.user_agent_token = o.ua_token;
    uc.fetch.disallowed_directives = o.directives;
    uc.fetch.allow_private_network = o.allow_private;
    uc.fetch.allow_addresses = o.allow_addresses[0] ? o.allow_addresses : NULL;
    uc.fetch.ca_file = o.ca_file;
    uc.fetch.seed = 0x9e3779b97f4a7c15ULL ^ (uint64_t)mpi->rank;

    struct progress_layout lay = {0};
    const char *status_names[DL_NSTATUS];
    for (int s = 0; s < DL_NSTATUS; s++)
        status_names[s] = download_status_name((enum download_status)s);
    lay.metric_prefix = "pixelmill_download";
    lay.nslots = SLOT_N;
    lay.rows_slot = SLOT_ROWS;
    lay.success_slot = SLOT_SUCCESS;
    lay.bytes_slot = SLOT_BYTES;
    lay.units_slot = SLOT_UNITS;
    lay.skipped_rows_slot = SLOT_SKIPPED_ROWS;
    lay.first_status = SLOT_STATUS0;
    lay.nstatus = DL_NSTATUS;
    lay.status_names = status_names;
    lay.first_error = SLOT_ERR0;
    lay.nerror = NERRCLASS;
    lay.error_names = error_classes;
    struct progress_options popt = {o.quiet, o.metrics_file, 0, 0, o.progress_tty ? 1 : 0};
    if ((rc = progress_create(&prog, MPI_COMM_WORLD, &lay, &popt, plan.total_rows, plan.nunits,
                              &err)))
        goto fail;
    struct run_ctx rctx = {prog};
    struct download_hooks hooks = {&rctx, on_row, on_poll};
    rc = download_engine_create(&uc, &hooks, &engine, &err);
    if ((rc = pm_mpi_worst(rc))) {
        if (!err.code)
            pm_error_set(&err, rc, "set-up failed on another rank");
        goto fail;
    }
    if (work_counter_create(&wc, MPI_COMM_WORLD)) {
        rc = pm_error_set(&err, PM_ERR_NOMEM, "out of memory");
        goto fail;
    }

    // the work loop
    int state = 0; // 0 ok, 1 interrupted, 2 failed
    for (;;) {
        if (pm_signal_pending()) {
            state = 1;
            break;
        }
        int64_t u = work_counter_next(wc);
        if (u < 0 || (uint64_t)u >= plan.nunits)
            break;
        char stats_name[SHARD_NAME_MAX + 16];
        shard_path(stats_name, sizeof stats_name, NULL, (uint64_t)u, plan.digits, "_stats.json");
        bool complete = false;
        if ((rc = store_exists(out, stats_name, &complete, &err))) {
            pm_log_error("shard %" PRId64 ": %s", u, err.msg);
            state = 2;
            break;
        }
        if (complete) {
            size_t in;
            uint64_t sl, rows = 0;
            download_plan_locate(&plan, (uint64_t)u, &in, &sl, &rows);
            progress_add(prog, SLOT_ROWS, (int64_t)rows);
            progress_add(prog, SLOT_SKIPPED_ROWS, (int64_t)rows);
            progress_add(prog, SLOT_UNITS, 1);
            progress_tick(prog);
            continue;
        }
        rc = download_unit_run(engine, (uint64_t)u, &err);
        if (rc == PM_ERR_INTERRUPTED) {
            state = 1;
            break;
        }
        if (rc) {
            pm_log_error("shard %" PRId64 ": %s", u, err.msg);
            state = 2;
            break;
        }
        progress_add(prog, SLOT_UNITS, 1);
        progress_tick(prog);
    }
    progress_finish(prog);
    int all = pm_mpi_worst(state);
    if (all == 2) {
        ex = PM_EXIT_FAILED;
        if (state != 2 && mpi->rank == 0)
            pm_log_error("download failed on another rank; rerun to resume");
        goto done;
    }
    if (all == 1) {
        if (mpi->rank == 0)
            pm_log_error("interrupted by a signal; state is clean, rerun to resume");
        ex = PM_EXIT_RESUMABLE;
        goto done;
    }
    rc = PM_OK;
    if (mpi->rank == 0)
        rc = finalize(&o, out, &plan, config, prog, &err);
    if ((rc = pm_mpi_worst(rc))) {
        if (mpi->rank == 0)
            pm_log_error("%s", err.msg);
        ex = PM_EXIT_FAILED;
        goto done;
    }
    ex = PM_EXIT_OK;
    goto done;

fail_collective:
fail:
    if (err.msg[0] && (mpi->rank == 0 || !strstr(err.msg, "another rank")))
        pm_log_error("%s", err.msg);
    ex = pm_exit_from_status(rc ? rc : err.code);
done:
    work_counter_free(wc);
    download_engine_free(engine);
    store_free(out);
    progress_free(prog);
    download_plan_release(&plan);
    json_decref(config);
    for (size_t i = 0; i < ncols; i++)
        free((char *)cols[i]);
    free(cols);
    free(o.inputs);
    free(o.keep);
    free(o.keep_cols_arg);
    free(o.where);
    return ex;
}
