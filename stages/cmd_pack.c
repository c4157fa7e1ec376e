/*
 * pixelmill pack — new uniform shards holding only the kept samples of a dataset or view.
 *
 * Plan (rank 0, broadcast): the kept samples in global order (source shards in
 * dataset.json order, rows in sidecar order), i.e. the `success` rows, intersected with
 * the view's keep-bitmap when SRC:VIEW is given (keep_rows(), the one place that knows
 * where keep decisions come from). With --shuffle the list is permuted by a Fisher-Yates
 * shuffle driven by splitmix64(seed), a pure function of (seed, kept list), so the plan
 * does not depend on the number of ranks. Output shard k holds plan entries
 * [k*N, (k+1)*N): every shard but the last has exactly N samples.
 *
 * Work units are output shards, claimed with a work_counter. A unit reads the source
 * shards it draws from (POSIX: streamed tar; S3: the whole source tar in memory), keeps
 * the samples of its slice in memory, then writes NNNNN.tar (tar_writer_open_store),
 * NNNNN.parquet and NNNNN_stats.json, each committed atomically, the stats file last.
 * A rerun skips units whose stats file exists. SIGTERM/SIGUSR1: stop, abort the unit in
 * flight (nothing under a final name), exit 75. rank 0 writes dataset.json at the end.
 *
 * Memory per rank: the samples of one output shard plus, for S3 sources, one source tar.
 */
#include "commands.h"
#include "dataset_index.h"
#include "dataset_store.h"
#include "file_hash.h"
#include "image.h"
#include "image_decode.h"
#include "image_encode.h"
#include "image_resize.h"
#include "npy.h"
#include "parquet_writer.h"
#include "pm_error.h"
#include "pm_log.h"
#include "pm_mpi.h"
#include "pm_signal.h"
#include "shard.h"
#include "shard_stats.h"
#include "store.h"
#include "tar_reader.h"
#include "tar_writer.h"
#include "upload_queue.h"
#include "view.h"
#include "work_counter.h"

#include <errno.h>
#include <getopt.h>
#include <jansson.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <unistd.h>

#ifndef PIXELMILL_VERSION
#define PIXELMILL_VERSION "0.0.0"
#endif

#define DEFAULT_SAMPLES_PER_SHARD 10000
#define PACK_MAX_SOURCE_TAR ((size_t)64 << 30)
#define PACK_PLAN_FILE "_pack.json"

enum out_format { OUT_KEEP, OUT_RAW, OUT_JPG, OUT_WEBP };

struct pack_args {
    char *src;  /* dataset location (VIEW split off) */
    char *view; /* NULL: all success rows */
    const char *output;
    const char *s3_endpoint;
    uint64_t s3_part_size;
    int s3_parallel;
    int s3_shards; /* shards uploading at once per rank (S3 output) */
    double s3_backoff;
    const char *name;
    uint64_t samples_per_shard;
    uint64_t shard_bytes;
    int image_size;
    enum image_resize_mode resize_mode;
    bool resize_mode_set;
    enum out_format format;
    int quality;
    bool shuffle;
    uint64_t seed;
};

struct plan_entry {
    uint32_t shard; /* source shard index (dataset.json order) */
    uint32_t row;   /* row in its sidecar */
};

struct plan {
    struct plan_entry *e;
    uint64_t n;
    uint64_t spp;     /* samples per output shard */
    uint64_t nout;    /* output shards */
    int digits;       /* output shard name digits */
    uint64_t nsrc;    /* source shards */
    char **src_names; /* source shard names ("00012"), nsrc of them */
};

static void print_help(FILE *out)
{
    fprintf(out,
            "usage: pixelmill pack SRC[:VIEW] --output DST [--samples-per-shard N |\n"
            "                      --shard-bytes SIZE] [--image-size N --resize-mode M]\n"
            "                      [--encode-format raw|jpg|webp] [--encode-quality Q]\n"
            "                      [--shuffle --seed S] [--name NAME] [--s3-endpoint URL]\n"
            "\n"
            "Write new uniform webdataset shards holding only the kept samples of SRC (a\n"
            "directory or s3://bucket/prefix): the rows of VIEW's keep-bitmap, or every\n"
            "'success' row without a view. Output: DST/NNNNN.tar, .parquet (one row per\n"
            "sample), _stats.json and dataset.json; DST may be a path or s3://.\n"
            "\n"
            "Options:\n"
            "  --samples-per-shard N  samples per output shard (default %d); all shards\n"
            "                  but the last hold exactly N\n"
            "  --shard-bytes SIZE  target shard size (e.g. 256Mi, 1G): N is derived from the\n"
            "                  source's mean sample size (raw with a square mode: exact pixels)\n"
            "  --image-size N  re-resize images to N (decode, resize, encode)\n"
            "  --resize-mode M no, keep_ratio, keep_ratio_largest, center_crop (default with\n"
            "                  --image-size), border, fixed\n"
            "  --encode-format F  raw (decoded uint8 HxWx3 pixels as .npy), jpg or webp;\n"
            "                  default: keep each image as it is (bytes unchanged unless\n"
            "                  resized; resized images are written as jpg)\n"
            "  --encode-quality Q  1..100 (default 95)\n"
            "  --shuffle       deterministic global shuffle of the samples\n"
            "  --seed S        shuffle seed (default 0)\n"
            "  --name NAME     dataset name in dataset.json (default: the source's)\n"
            "  --s3-endpoint URL  S3 endpoint (default: AWS_ENDPOINT_URL or AWS)\n"
            "  --s3-part-size SIZE  multipart part size (default 16Mi, at least 5Mi)\n"
            "  --s3-parallel N parts uploaded in parallel per shard (default 4)\n"
            "  --s3-shards N   S3 output: shards uploading in the background per rank while\n"
            "                  the next ones are packed (default 2; local files in $TMPDIR)\n"
            "  --s3-backoff S  first retry backoff ceiling, seconds (default 0.2)\n"
            "  -h, --help      this help\n"
            "\n"
            "Each sample's JSON keeps the source key (source_key), the caption and the\n"
            "sidecar fields. Output is identical for any number of ranks (mpirun). A rerun\n"
            "after a kill skips complete shards. Exit status: 0 done, 1 failed, 2 usage,\n"
            "75 interrupted by a signal (rerun to resume).\n",
            DEFAULT_SAMPLES_PER_SHARD);
}

static int parse_size(const char *s, uint64_t *out)
{
    char *end;
    double v = strtod(s, &end);
    if (end == s || v <= 0)
        return PM_ERR_USAGE;
    double m = 1;
    if (*end) {
        char u = *end++;
        int k = u == 'K' || u == 'k' ? 1 : u == 'M' ? 2 : u == 'G' ? 3 : u == 'T' ? 4 : -1;
        if (k < 0)
            return PM_ERR_USAGE;
        double base = 1000;
        if (*end == 'i') {
            base = 1024;
            end++;
        }
        if (*end == 'B')
            end++;
        if (*end)
            return PM_ERR_USAGE;
        while (k--)
            m *= base;
    }
    *out = (uint64_t)(v * m);
    return *out ? PM_OK : PM_ERR_USAGE;
}

/* Also the keys of a pipeline file's [pack] section (cmd_run.c). */
const struct option cmd_pack_options[] = {
    {"output", required_argument, 0, 'o'},
    {"samples-per-shard", required_argument, 0, 'n'},
    {"shard-bytes", required_argument, 0, 'b'},
    {"image-size", required_argument, 0, 'i'},
    {"resize-mode", required_argument, 0, 'r'},
    {"encode-format", required_argument, 0, 'f'},
    {"encode-quality", required_argument, 0, 'q'},
    {"shuffle", no_argument, 0, 'x'},
    {"seed", required_argument, 0, 's'},
    {"name", required_argument, 0, 'N'},
    {"s3-endpoint", required_argument, 0, 'e'},
    {"s3-part-size", required_argument, 0, 'P'},
    {"s3-parallel", required_argument, 0, 'J'},
    {"s3-shards", required_argument, 0, 'U'},
    {"s3-backoff", required_argument, 0, 'B'},
    {"help", no_argument, 0, 'h'},
    {0, 0, 0, 0},
};

static int parse_args(int argc, char **argv, struct pack_args *a, int rank)
{
    memset(a, 0, sizeof *a);
    a->quality = 95;
    a->resize_mode = IMAGE_RESIZE_CENTER_CROP;
    optind = 1;
    int c;
    char *end;
    while ((c = getopt_long(argc, argv, "ho:", cmd_pack_options, NULL)) != -1) {
        switch (c) {
        case 'o':
            a->output = optarg;
            break;
        case 'n':
            a->samples_per_shard = strtoull(optarg, &end, 10);
            if (*end || !a->samples_per_shard || optarg[0] == '-')
                goto bad;
            break;
        case 'b':
            if (parse_size(optarg, &a->shard_bytes))
                goto bad;
            break;
        case 'i':
            a->image_size = (int)strtol(optarg, &end, 10);
            if (*end || a->image_size <= 0 || a->image_size > 65535)
                goto bad;
            break;
        case 'r':
            if (image_resize_mode_parse(optarg, &a->resize_mode))
                goto bad;
            a->resize_mode_set = true;
            break;
        case 'f':
            if (!strcmp(optarg, "raw") || !strcmp(optarg, "npy"))
                a->format = OUT_RAW;
            else if (!strcmp(optarg, "jpg") || !strcmp(optarg, "jpeg"))
                a->format = OUT_JPG;
            else if (!strcmp(optarg, "webp"))
                a->format = OUT_WEBP;
            else
                goto bad;
            break;
        case 'q':
            a->quality = (int)strtol(optarg, &end, 10);
            if (*end || a->quality < 1 || a->quality > 100)
                goto bad;
            break;
        case 'x':
            a->shuffle = true;
            break;
        case 's':
            a->seed = strtoull(optarg, &end, 0);
            if (*end)
                goto bad;
            break;
        case 'N':
            a->name = optarg;
            break;
        case 'e':
            a->s3_endpoint = optarg;
            break;
        case 'P':
            if (parse_size(optarg, &a->s3_part_size) || a->s3_part_size < ((uint64_t)5 << 20))
                goto bad;
            break;
        case 'J':
            a->s3_parallel = (int)strtol(optarg, &end, 10);
            if (*end || a->s3_parallel < 1 || a->s3_parallel > 64)
                goto bad;
            break;
        case 'U':
            a->s3_shards = (int)strtol(optarg, &end, 10);
            if (*end || a->s3_shards < 1 || a->s3_shards > 16)
                goto bad;
            break;
        case 'B':
            a->s3_backoff = strtod(optarg, &end);
            if (*end || a->s3_backoff < 0)
                goto bad;
            break;
        case 'h':
            if (rank == 0)
                print_help(stdout);
            return 1;
        default:
            if (rank == 0)
                print_help(stderr);
            return PM_ERR_USAGE;
        }
        continue;
    bad:
        if (rank == 0)
            pm_log_error("pack: bad value '%s' for --%s", optarg,
                         c == 'n'   ? "samples-per-shard"
                         : c == 'b' ? "shard-bytes"
                         : c == 'i' ? "image-size"
                         : c == 'r' ? "resize-mode"
                         : c == 'f' ? "encode-format"
                         : c == 'q' ? "encode-quality"
                         : c == 'P' ? "s3-part-size (at least 5Mi)"
                         : c == 'J' ? "s3-parallel"
                         : c == 'U' ? "s3-shards (1..16)"
                         : c == 'B' ? "s3-backoff"
                                    : "seed");
        return PM_ERR_USAGE;
    }
    if (optind != argc - 1 || !a->output) {
        if (rank == 0) {
            pm_log_error("pack: SRC and --output DST are needed");
            print_help(stderr);
        }
        return PM_ERR_USAGE;
    }
    if (a->samples_per_shard && a->shard_bytes) {
        if (rank == 0)
            pm_log_error("pack: give --samples-per-shard or --shard-bytes, not both");
        return PM_ERR_USAGE;
    }
    if (a->resize_mode_set && !a->image_size && a->resize_mode != IMAGE_RESIZE_NO) {
        if (rank == 0)
            pm_log_error("pack: --resize-mode needs --image-size");
        return PM_ERR_USAGE;
    }
    // SRC[:VIEW]
    a->src = strdup(argv[optind]);
    const char *view = a->src ? view_spec_split(a->src) : NULL;
    if (view)
        a->view = strdup(view);
    if (!a->src || (view && !a->view))
        return PM_ERR_NOMEM;
    return PM_OK;
}

static void args_release(struct pack_args *a)
{
    free(a->src);
    free(a->view);
}

// ---------------------------------------------------------------------------- plan

/*
 * The keep-bitmap source: which rows of source shard `name` are packed. Without a view
 * every `success` row; with a view, the success rows its keep-bitmap
 * (`_views/VIEW/NAME.keep`, shards/view.h, read through the store so S3 works too) sets.
 * keep[] has side->nrows entries.
 */
static int keep_rows(struct store *src, const char *view, const char *name,
                     const struct table_batch *side, uint8_t *keep, struct pm_error *err)
{
    int sc = table_batch_find(side, "status");
    if (sc < 0 || side->cols[sc].type != COLUMN_STRING)
        return pm_error_set(err, PM_ERR_FORMAT, "sidecar of shard %s has no string column status",
                            name);
    for (size_t i = 0; i < side->nrows; i++) {
        size_t n;
        const char *s = column_string(&side->cols[sc], i, &n);
        keep[i] = n == 7 && !memcmp(s, "success", 7);
    }
    if (!view)
        return PM_OK;
    char obj[512];
    snprintf(obj, sizeof obj, "%s/%s/%s.keep", VIEW_DIR, view, name);
    struct view_bitmap b = VIEW_BITMAP_INIT;
    int rc = view_bitmap_read_store(&b, src, obj, err);
    if (rc == PM_OK && b.rows != side->nrows)
        rc = pm_error_set(err, PM_ERR_FORMAT,
                          "%s/%s has %llu rows but the sidecar of shard %s has %zu",
                          store_location(src), obj, (unsigned long long)b.rows, name, side->nrows);
    for (size_t i = 0; rc == PM_OK && i < side->nrows; i++)
        keep[i] = keep[i] && view_bitmap_get(&b, i);
    view_bitmap_release(&b);
    return rc;
}

// A view must be complete (view.json written last) and match the dataset (view_open_store
// checks the shards' checksums against dataset.json), on either backend.
static int view_check(struct store *src, const char *view, struct pm_error *err)
{
    if (!view_name_check(view))
        return pm_error_set(err, PM_ERR_USAGE, "'%s' is not a valid view name", view);
    struct view *v = NULL;
    int rc = view_open_store(&v, src, view, err);
    view_free(v);
    return rc;
}

static uint64_t splitmix64(uint64_t *x)
{
    uint64_t z = (*x += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

// Uniform in [0, bound) without modulo bias (rejection).
static uint64_t uniform(uint64_t *state, uint64_t bound)
{
    uint64_t limit = UINT64_MAX - UINT64_MAX % bound;
    uint64_t r;
    do
        r = splitmix64(state);
    while (r >= limit);
    return r % bound;
}

static void plan_release(struct plan *p)
{
    free(p->e);
    for (uint64_t i = 0; p->src_names && i < p->nsrc; i++)
        free(p->src_names[i]);
    free(p->src_names);
    memset(p, 0, sizeof *p);
}

static int plan_build(struct plan *p, const struct pack_args *a, struct store *src,
                      struct pm_error *err)
{
    memset(p, 0, sizeof *p);
    if (a->view) {
        int vrc = view_check(src, a->view, err);
        if (vrc != PM_OK)
            return vrc;
    }
    struct dataset_index x;
    int rc = dataset_store_read_index(src, &x, err);
    if (rc != PM_OK) {
        dataset_index_release(&x);
        return rc;
    }
    p->nsrc = x.nshards;
    p->src_names = calloc(x.nshards ? x.nshards : 1, sizeof *p->src_names);
    uint64_t cap = 0;
    uint64_t bytes = 0, samples = 0;
    for (size_t i = 0; rc == PM_OK && i < x.nshards; i++) {
        const char *url = x.shards[i].url;
        size_t n = strlen(url);
        if (n < 5 || n - 4 > SHARD_NAME_MAX || strcmp(url + n - 4, ".tar") != 0 ||
            strchr(url, '/') || i > UINT32_MAX) {
            rc = pm_error_set(err, PM_ERR_FORMAT, "%s/dataset.json: shard url '%s' unusable",
                              store_location(src), url);
            break;
        }
        p->src_names[i] = strndup(url, n - 4);
        bytes += x.shards[i].filesize;
        samples += x.shards[i].nsamples;
        char obj[4200];
        snprintf(obj, sizeof obj, "%s.parquet", p->src_names[i]);
        struct table_batch side;
        rc = dataset_store_read_table(src, obj, &side, err);
        uint8_t *keep = rc == PM_OK ? calloc(side.nrows ? side.nrows : 1, 1) : NULL;
        if (rc == PM_OK && !keep)
            rc = pm_error_set(err, PM_ERR_NOMEM, "out of memory planning");
        if (rc == PM_OK)
            rc = keep_rows(src, a->view, p->src_names[i], &side, keep, err);
        for (size_t r = 0; rc == PM_OK && r < side.nrows; r++) {
            if (!keep[r])
                continue;
            if (p->n == cap) {
                cap = cap ? cap * 2 : 1024;
                struct plan_entry *ne = realloc(p->e, cap * sizeof *ne);
                if (!ne) {
                    rc = pm_error_set(err, PM_ERR_NOMEM, "out of memory planning");
                    break;
                }
                p->e = ne;
            }
            p->e[p->n++] = (struct plan_entry){(uint32_t)i, (uint32_t)r};
        }
        free(keep);
        table_batch_release(&side);
    }
    dataset_index_release(&x);
    if (rc != PM_OK)
        return rc;
    if (a->shuffle) {
        uint64_t st = a->seed;
        for (uint64_t i = p->n; i > 1; i--) {
            uint64_t j = uniform(&st, i);
            struct plan_entry t = p->e[i - 1];
            p->e[i - 1] = p->e[j];
            p->e[j] = t;
        }
    }
    p->spp = a->samples_per_shard ? a->samples_per_shard : DEFAULT_SAMPLES_PER_SHARD;
    if (a->shard_bytes) {
        double per = samples ? (double)bytes / (double)samples : 1.0;
        if (a->format == OUT_RAW && a->image_size &&
            (a->resize_mode == IMAGE_RESIZE_CENTER_CROP || a->resize_mode == IMAGE_RESIZE_BORDER ||
             a->resize_mode == IMAGE_RESIZE_FIXED))
            per = 3.0 * a->image_size * a->image_size + 128 + 3 * 512 + 1024;
        double n = (double)a->shard_bytes / (per > 1 ? per : 1);
        p->spp = n < 1 ? 1 : (uint64_t)n;
    }
    p->nout = p->n ? (p->n + p->spp - 1) / p->spp : 0;
    p->digits = shard_digits(p->nout ? p->nout : 1);
    return PM_OK;
}

// Broadcast the plan from rank 0 (rc: rank 0's planning status, returned to all).
static int plan_bcast(struct plan *p, int rc, const struct pm_mpi *mpi)
{
    if (mpi->size == 1)
        return rc;
    uint64_t hdr[6] = {(uint64_t)rc, p->n, p->spp, p->nout, (uint64_t)p->digits, p->nsrc};
    MPI_CHECK(MPI_Bcast(hdr, 6, MPI_UINT64_T, 0, MPI_COMM_WORLD));
    if (hdr[0])
        return (int)hdr[0];
    if (mpi->rank != 0) {
        p->n = hdr[1];
        p->spp = hdr[2];
        p->nout = hdr[3];
        p->digits = (int)hdr[4];
        p->nsrc = hdr[5];
        p->e = calloc(p->n ? p->n : 1, sizeof *p->e);
        p->src_names = calloc(p->nsrc ? p->nsrc : 1, sizeof *p->src_names);
        if (!p->e || !p->src_names)
            pm_mpi_fail(MPI_ERR_NO_MEM, "plan_bcast", __FILE__, __LINE__);
    }
    for (uint64_t off = 0; off < p->n;) {
        uint64_t k = p->n - off > (1u << 26) ? (1u << 26) : p->n - off;
        MPI_CHECK(MPI_Bcast(p->e + off, (int)(k * 2), MPI_UINT32_T, 0, MPI_COMM_WORLD));
        off += k;
    }
    for (uint64_t i = 0; i < p->nsrc; i++) {
        char nm[SHARD_NAME_MAX + 8] = {0};
        if (mpi->rank == 0)
            snprintf(nm, sizeof nm, "%s", p->src_names[i]);
        MPI_CHECK(MPI_Bcast(nm, sizeof nm, MPI_CHAR, 0, MPI_COMM_WORLD));
        if (mpi->rank != 0 && !(p->src_names[i] = strdup(nm)))
            pm_mpi_fail(MPI_ERR_NO_MEM, "plan_bcast", __FILE__, __LINE__);
    }
    return PM_OK;
}

// ---------------------------------------------------------------------------- units

struct slot {
    uint32_t shard, row;
    char *src_key;
    json_t *fields; /* the source sidecar row: column -> value */
    struct bytebuf image, txt, json;
    char ext[16];
    bool filled;
};

struct slot_ref {
    const char *key;
    size_t slot;
};

static int slot_ref_cmp(const void *a, const void *b)
{
    return strcmp(((const struct slot_ref *)a)->key, ((const struct slot_ref *)b)->key);
}

static bool is_image_field(const char *f)
{
    return !strcmp(f, "jpg") || !strcmp(f, "jpeg") || !strcmp(f, "png") || !strcmp(f, "webp");
}

// One row of a batch as a JSON object (column name -> value).
static json_t *row_json(const struct table_batch *b, size_t row)
{
    json_t *o = json_object();
    for (size_t c = 0; o && c < b->ncols; c++) {
        const struct column *col = &b->cols[c];
        json_t *v;
        if (!col->valid[row])
            v = json_null();
        else if (col->type == COLUMN_STRING) {
            size_t n;
            const char *s = column_string(col, row, &n);
            v = json_stringn_nocheck(s, n);
        } else if (col->type == COLUMN_BOOL)
            v = json_boolean(col->ints[row]);
        else if (col->type == COLUMN_INT32 || col->type == COLUMN_INT64)
            v = json_integer(col->ints[row]);
        else
            v = json_real(col->reals[row]);
        json_object_set_new(o, col->name, v);
    }
    return o;
}

static void slots_release(struct slot *s, size_t n)
{
    for (size_t i = 0; s && i < n; i++) {
        free(s[i].src_key);
        json_decref(s[i].fields);
        bytebuf_release(&s[i].image);
        bytebuf_release(&s[i].txt);
        bytebuf_release(&s[i].json);
    }
    free(s);
}

struct copy_ctx {
    struct bytebuf *b;
};

static int sink_bytebuf(void *ctx, const void *data, size_t n)
{
    return bytebuf_append(ctx, data, n) != PM_OK;
}

// Fill the slots drawing from source shard `sh`.
static int load_source(struct store *src, const struct plan *p, uint32_t sh, struct slot *slots,
                       size_t nslots, struct pm_error *err)
{
    const char *name = p->src_names[sh];
    char obj[4200];
    snprintf(obj, sizeof obj, "%s.parquet", name);
    struct table_batch side;
    int rc = dataset_store_read_table(src, obj, &side, err);
    int kc = rc == PM_OK ? table_batch_find(&side, "key") : -1;
    if (rc == PM_OK && (kc < 0 || side.cols[kc].type != COLUMN_STRING))
        rc = pm_error_set(err, PM_ERR_FORMAT, "%s/%s has no string column key", store_location(src),
                          obj);
    struct slot_ref *refs = calloc(nslots ? nslots : 1, sizeof *refs);
    size_t nrefs = 0;
    if (rc == PM_OK && !refs)
        rc = pm_error_set(err, PM_ERR_NOMEM, "out of memory");
    for (size_t i = 0; rc == PM_OK && i < nslots; i++) {
        if (slots[i].shard != sh)
            continue;
        if (slots[i].row >= side.nrows) {
            rc = pm_error_set(err, PM_ERR_FORMAT, "%s/%s changed since planning (row %u)",
                              store_location(src), obj, slots[i].row);
            break;
        }
        size_t n;
        const char *k = column_string(&side.cols[kc], slots[i].row, &n);
        slots[i].src_key = strndup(k, n);
        slots[i].fields = row_json(&side, slots[i].row);
        if (!slots[i].src_key || !slots[i].fields)
            rc = pm_error_set(err, PM_ERR_NOMEM, "out of memory");
        else
            refs[nrefs++] = (struct slot_ref){slots[i].src_key, i};
    }
    table_batch_release(&side);
    if (rc == PM_OK)
        qsort(refs, nrefs, sizeof *refs, slot_ref_cmp);

    // the tar: streamed from a file, or whole from S3
    snprintf(obj, sizeof obj, "%s.tar", name);
    struct bytebuf whole;
    bytebuf_init(&whole, PACK_MAX_SOURCE_TAR);
    struct tar_reader *r = NULL;
    if (rc == PM_OK) {
        char path[4400];
        snprintf(path, sizeof path, "%s/%s", store_location(src), obj);
        if (!store_is_s3(src))
            rc = tar_reader_open(path, NULL, &r, err);
        else {
            rc = store_read(src, obj, 0, UINT64_MAX, sink_bytebuf, &whole, NULL, err);
            if (rc == PM_OK)
                rc = tar_reader_open_memory(whole.data ? whole.data : "", whole.len, path, NULL, &r,
                                            err);
        }
    }
    size_t found = 0;
    while (rc == PM_OK && found < nrefs) {
        if (pm_signal_pending()) {
            rc = pm_error_set(err, PM_ERR_INTERRUPTED, "interrupted by a signal");
            break;
        }
        struct tar_sample smp;
        rc = tar_reader_next(r, &smp, err);
        if (rc == PM_ERR_NOT_FOUND) {
            rc = PM_OK;
            break;
        }
        if (rc != PM_OK)
            break;
        struct slot_ref q = {smp.key, 0};
        struct slot_ref *hit = bsearch(&q, refs, nrefs, sizeof *refs, slot_ref_cmp);
        if (!hit)
            continue;
        struct slot *s = &slots[hit->slot];
        if (s->filled)
            continue; // a repeated key: the first one counts (verify reports it)
        for (size_t f = 0; rc == PM_OK && f < smp.nfields; f++) {
            const struct tar_field *fd = &smp.fields[f];
            if (is_image_field(fd->name) && !s->ext[0]) {
                snprintf(s->ext, sizeof s->ext, "%s", fd->name);
                rc = bytebuf_append(&s->image, fd->data, fd->size);
            } else if (!strcmp(fd->name, "txt"))
                rc = bytebuf_append(&s->txt, fd->data, fd->size);
            else if (!strcmp(fd->name, "json"))
                rc = bytebuf_append(&s->json, fd->data, fd->size);
            if (rc != PM_OK)
                rc = pm_error_set(err, rc, "sample '%s' of %s: out of memory", smp.key, obj);
        }
        s->filled = true;
        found++;
    }
    tar_reader_free(r);
    bytebuf_release(&whole);
    for (size_t i = 0; rc == PM_OK && i < nrefs; i++) {
        struct slot *s = &slots[refs[i].slot];
        if (!s->filled || !s->ext[0])
            rc = pm_error_set(err, PM_ERR_FORMAT, "%s/%s: sample '%s' (a kept row) %s",
                              store_location(src), obj, s->src_key,
                              s->filled ? "has no image" : "is missing");
    }
    free(refs);
    return rc;
}

struct unit_ctx {
    const struct pack_args *a;
    const struct plan *p;
    struct store *src, *dst;
    struct upload_queue *uq; /* S3 output: shards go up in the background */
    char *tmpdir;            /* with uq: this rank's local files of shards waiting to go up */
    struct column_info *schema; /* output sidecar schema */
    size_t ncols;
    struct image_ctx *ictx;
    struct image img, img2;
    struct bytebuf enc;
};

// Output image of one slot into c->enc; sets ext, *w, *h (0 when unchanged and unknown).
static int make_image(struct unit_ctx *c, struct slot *s, const char **ext, int *w, int *h,
                      struct pm_error *err)
{
    const struct pack_args *a = c->a;
    bool src_jpg = !strcmp(s->ext, "jpg") || !strcmp(s->ext, "jpeg");
    bool need = a->format == OUT_RAW || a->image_size > 0 || (a->format == OUT_JPG && !src_jpg) ||
                (a->format == OUT_WEBP && strcmp(s->ext, "webp") != 0);
    *w = *h = 0;
    if (!need) {
        *ext = s->ext;
        bytebuf_clear(&c->enc);
        return bytebuf_append(&c->enc, s->image.data ? s->image.data : "", s->image.len);
    }
    int rc = image_decode(c->ictx, s->image.data ? s->image.data : "", s->image.len, NULL, &c->img,
                          NULL, err);
    if (rc != PM_OK)
        return pm_error_prefix(err, "sample '%s': ", s->src_key);
    const struct image *out = &c->img;
    if (a->image_size > 0 && a->resize_mode != IMAGE_RESIZE_NO) {
        struct image_resize_params rp = {a->resize_mode, a->image_size, false};
        struct image_geometry g;
        rc = image_geometry_compute(&rp, c->img.width, c->img.height, &g);
        if (rc == PM_OK)
            rc = image_resize(c->ictx, &c->img, &g, &c->img2, err);
        else
            pm_error_set(err, rc, "bad resize geometry");
        if (rc != PM_OK)
            return pm_error_prefix(err, "sample '%s': ", s->src_key);
        out = &c->img2;
    }
    *w = out->width;
    *h = out->height;
    bytebuf_clear(&c->enc);
    if (a->format == OUT_RAW) {
        char hdr[NPY_HEADER_MAX];
        size_t hl;
        rc = npy_header(hdr, out->height, out->width, 3, &hl, err);
        if (rc == PM_OK)
            rc = bytebuf_append(&c->enc, hdr, hl);
        if (rc == PM_OK)
            rc = bytebuf_append(&c->enc, out->pixels, (size_t)out->width * out->height * 3);
        *ext = "npy";
        return rc;
    }
    struct image_encode_opts eo = IMAGE_ENCODE_OPTS_INIT;
    eo.quality = a->quality;
    eo.format = a->format == OUT_WEBP ? IMAGE_ENCODE_WEBP : IMAGE_ENCODE_JPEG;
    *ext = a->format == OUT_WEBP ? "webp" : "jpg";
    rc = image_encode(c->ictx, out, &eo, &c->enc, err);
    return rc == PM_OK ? rc : pm_error_prefix(err, "sample '%s': ", s->src_key);
}

// Append the value v to column col (types that do not fit become null).
static int append_value(struct column *col, json_t *v)
{
    if (!v || json_is_null(v))
        return column_append_null(col);
    switch (col->type) {
    case COLUMN_STRING:
        if (json_is_string(v))
            return column_append_string(col, json_string_value(v), json_string_length(v));
        break;
    case COLUMN_BOOL:
        if (json_is_boolean(v))
            return column_append_int(col, json_is_true(v));
        break;
    case COLUMN_INT32:
    case COLUMN_INT64:
        if (json_is_integer(v))
            return column_append_int(col, json_integer_value(v));
        break;
    case COLUMN_FLOAT:
    case COLUMN_DOUBLE:
        if (json_is_number(v))
            return column_append_real(col, json_number_value(v));
        break;
    }
    return column_append_null(col);
}

static double now_s(void)
{
    struct timeval tv;
    gettimeofday(&tv, NULL);
    return (double)tv.tv_sec + tv.tv_usec / 1e6;
}

static int unit_run(struct unit_ctx *c, uint64_t k, struct pm_error *err)
{
    const struct plan *p = c->p;
    double t0 = now_s();
    uint64_t first = k * p->spp;
    size_t n = (size_t)((first + p->spp <= p->n ? p->spp : p->n - first));
    struct slot *slots = calloc(n ? n : 1, sizeof *slots);
    if (!slots)
        return pm_error_set(err, PM_ERR_NOMEM, "out of memory");
    for (size_t i = 0; i < n; i++) {
        slots[i].shard = p->e[first + i].shard;
        slots[i].row = p->e[first + i].row;
        bytebuf_init(&slots[i].image, 0);
        bytebuf_init(&slots[i].txt, 0);
        bytebuf_init(&slots[i].json, 0);
    }
    // the source shards this unit draws from, in index order
    uint8_t *need = calloc(p->nsrc ? p->nsrc : 1, 1);
    int rc = need ? PM_OK : pm_error_set(err, PM_ERR_NOMEM, "out of memory");
    for (size_t i = 0; rc == PM_OK && i < n; i++)
        need[slots[i].shard] = 1;
    for (uint64_t sh = 0; rc == PM_OK && sh < p->nsrc; sh++)
        if (need[sh])
            rc = load_source(c->src, p, (uint32_t)sh, slots, n, err);
    free(need);
    double t_read = now_s();

    char name[SHARD_NAME_MAX + 1], obj[SHARD_NAME_MAX + 32];
    shard_name(name, sizeof name, k, p->digits);
    struct tar_writer *tw = NULL;
    struct table_batch side = TABLE_BATCH_INIT;
    if (rc == PM_OK && table_batch_init(&side, c->schema, c->ncols) != PM_OK)
        rc = pm_error_set(err, PM_ERR_NOMEM, "out of memory");
    snprintf(obj, sizeof obj, "%s.tar", name);
    // with an upload queue the shard's files are made locally, then handed over whole
    char local[3][4200] = {"", "", ""};
    if (c->uq) {
        snprintf(local[0], sizeof local[0], "%s/%s.tar", c->tmpdir, name);
        snprintf(local[1], sizeof local[1], "%s/%s.parquet", c->tmpdir, name);
        snprintf(local[2], sizeof local[2], "%s/%s_stats.json", c->tmpdir, name);
    }
    // the staging copies of an S3 output are not the output: no fsync for them
    struct tar_writer_options to = TAR_WRITER_OPTIONS_INIT;
    to.no_sync = c->uq != NULL;
    if (rc == PM_OK)
        rc = c->uq ? tar_writer_open(local[0], &to, &tw, err)
                   : tar_writer_open_store(c->dst, obj, NULL, &tw, err);
    uint64_t image_bytes = 0;
    for (size_t i = 0; rc == PM_OK && i < n; i++) {
        if (pm_signal_pending()) {
            rc = pm_error_set(err, PM_ERR_INTERRUPTED, "interrupted by a signal");
            break;
        }
        struct slot *s = &slots[i];
        char key[32];
        rc = shard_key(key, sizeof key, k, i, p->spp, p->digits, err);
        const char *ext = NULL;
        int w = 0, h = 0;
        if (rc == PM_OK)
            rc = make_image(c, s, &ext, &w, &h, err);
        if (rc != PM_OK)
            break;
        // the sample's JSON: the source JSON, the sidecar fields, the new and source keys
        json_t *js = s->json.len ? json_loadb(s->json.data, s->json.len, 0, NULL) : NULL;
        if (!json_is_object(js)) {
            json_decref(js);
            js = json_object();
        }
        const char *fk;
        json_t *fv;
        json_object_foreach(s->fields, fk, fv)
        {
            if (strcmp(fk, "key") != 0)
                json_object_set(js, fk, fv);
        }
        json_object_set_new(js, "key", json_string(key));
        json_object_set_new(js, "source_key", json_string(s->src_key));
        if (w > 0) {
            json_object_set_new(js, "width", json_integer(w));
            json_object_set_new(js, "height", json_integer(h));
            json_object_set_new(s->fields, "width", json_integer(w));
            json_object_set_new(s->fields, "height", json_integer(h));
        }
        char *jt = json_dumps(js, JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(17));
        json_decref(js);
        if (!jt) {
            rc = pm_error_set(err, PM_ERR_NOMEM, "out of memory");
            break;
        }
        // caption: the source .txt, else the sidecar's caption
        const char *cap = s->txt.data ? s->txt.data : "";
        size_t capn = s->txt.len;
        json_t *cv = json_object_get(s->fields, "caption");
        if (!s->txt.len && json_is_string(cv)) {
            cap = json_string_value(cv);
            capn = json_string_length(cv);
        }
        struct tar_member m[3] = {{ext, c->enc.data ? c->enc.data : "", c->enc.len},
                                  {"txt", cap, capn},
                                  {"json", jt, strlen(jt)}};
        rc = tar_writer_add_sample(tw, key, m, 3, err);
        free(jt);
        image_bytes += c->enc.len;
        // the sidecar row
        json_object_set_new(s->fields, "key", json_string(key));
        json_object_set_new(s->fields, "source_key", json_string(s->src_key));
        for (size_t col = 0; rc == PM_OK && col < c->ncols; col++)
            if (append_value(&side.cols[col], json_object_get(s->fields, c->schema[col].name)))
                rc = pm_error_set(err, PM_ERR_NOMEM, "out of memory");
        side.nrows++;
    }
    struct tar_writer_result res = {0};
    if (rc == PM_OK)
        rc = tar_writer_close(tw, &res, err);
    tar_writer_free(tw);
    slots_release(slots, n);
    // sidecar
    char tmp[4200] = "";
    if (rc == PM_OK && c->uq)
        snprintf(tmp, sizeof tmp, "%s", local[1]);
    else if (rc == PM_OK)
        rc = dataset_store_temp_path(tmp, sizeof tmp, err);
    if (rc == PM_OK) {
        struct parquet_writer *pw = NULL;
        rc = parquet_writer_open(&pw, tmp, c->schema, c->ncols, NULL, err);
        if (rc == PM_OK)
            rc = parquet_writer_write(pw, &side, err);
        if (rc == PM_OK)
            rc = parquet_writer_close(pw, err);
        parquet_writer_free(pw);
        snprintf(obj, sizeof obj, "%s.parquet", name);
        if (rc == PM_OK && pm_signal_pending())
            rc = pm_error_set(err, PM_ERR_INTERRUPTED, "interrupted by a signal");
        if (rc == PM_OK && !c->uq)
            rc = dataset_store_put_file(c->dst, obj, tmp, err);
    }
    if (tmp[0] && !c->uq)
        unlink(tmp);
    table_batch_release(&side);
    // stats, last: the shard's commit record
    if (rc == PM_OK) {
        struct shard_stats st;
        shard_stats_init(&st, k, p->digits);
        st.rows = st.nsamples = n;
        st.tar_bytes = res.bytes;
        memcpy(st.xxh3, res.xxh3, sizeof st.xxh3);
        st.start_time = t0;
        st.end_time = now_s();
        snprintf(st.tool_version, sizeof st.tool_version, "pixelmill %s", PIXELMILL_VERSION);
        if (stat_map_add(&st.status, "success", (double)n) ||
            stat_map_add(&st.bytes, "images", (double)image_bytes) ||
            stat_map_add(&st.durations, "read", t_read - t0) ||
            stat_map_add(&st.durations, "total", st.end_time - t0))
            rc = pm_error_set(err, PM_ERR_NOMEM, "out of memory");
        if (rc == PM_OK && c->uq)
            rc = shard_stats_write(c->tmpdir, &st, err);
        else if (rc == PM_OK)
            rc = dataset_store_write_stats(c->dst, &st, err);
        shard_stats_release(&st);
    }
    if (c->uq && rc == PM_OK) {
        // tar, sidecar, then the stats file (the commit record), in this order
        char tname[SHARD_NAME_MAX + 32], pname[SHARD_NAME_MAX + 32], sname[SHARD_NAME_MAX + 32];
        snprintf(tname, sizeof tname, "%s.tar", name);
        snprintf(pname, sizeof pname, "%s.parquet", name);
        snprintf(sname, sizeof sname, "%s_stats.json", name);
        const char *paths[3] = {local[0], local[1], local[2]};
        const char *names[3] = {tname, pname, sname};
        return upload_queue_push(c->uq, paths, names, 3, err); // takes the files over
    }
    for (int i = 0; c->uq && i < 3; i++)
        unlink(local[i]);
    return rc;
}

// Shards already complete in the output: one listing instead of a HEAD per shard.
struct done_set {
    const struct plan *p;
    uint8_t *done; // p->nout flags
};

static int done_add(void *ctx, const char *name, uint64_t size)
{
    (void)size;
    struct done_set *d = ctx;
    const char *suffix = "_stats.json";
    size_t n = strlen(name), sl = strlen(suffix);
    if (n <= sl || strcmp(name + n - sl, suffix) != 0 || name[0] < '0' || name[0] > '9')
        return 0;
    char *end;
    unsigned long long k = strtoull(name, &end, 10);
    char nm[SHARD_NAME_MAX + 1];
    if (end != name + n - sl || k >= d->p->nout ||
        shard_name(nm, sizeof nm, k, d->p->digits) != PM_OK || strlen(nm) != n - sl ||
        strncmp(nm, name, n - sl) != 0)
        return 0;
    d->done[k] = 1;
    return 0;
}

// ---------------------------------------------------------------------------- main

// Output sidecar schema: key, source_key, then the source sidecar's other columns (those
// of the first source shard, nullable).
static int schema_build(struct unit_ctx *c, struct pm_error *err)
{
    struct table_batch side = TABLE_BATCH_INIT;
    int rc = PM_OK;
    if (c->p->nsrc) {
        char obj[SHARD_NAME_MAX + 32];
        snprintf(obj, sizeof obj, "%s.parquet", c->p->src_names[0]);
        rc = dataset_store_read_table(c->src, obj, &side, err);
    }
    c->schema = calloc(side.ncols + 2, sizeof *c->schema);
    if (rc == PM_OK && !c->schema)
        rc = pm_error_set(err, PM_ERR_NOMEM, "out of memory");
    if (rc == PM_OK) {
        c->schema[0] = (struct column_info){strdup("key"), COLUMN_STRING, false};
        c->schema[1] = (struct column_info){strdup("source_key"), COLUMN_STRING, false};
        c->ncols = 2;
        for (size_t i = 0; i < side.ncols; i++) {
            const char *nm = side.cols[i].name;
            if (!strcmp(nm, "key") || !strcmp(nm, "source_key"))
                continue;
            c->schema[c->ncols++] = (struct column_info){strdup(nm), side.cols[i].type, true};
        }
        for (size_t i = 0; i < c->ncols; i++)
            if (!c->schema[i].name)
                rc = pm_error_set(err, PM_ERR_NOMEM, "out of memory");
    }
    table_batch_release(&side);
    return rc;
}

static json_t *config_json(const struct pack_args *a, const struct plan *p)
{
    json_t *o = json_object();
    json_object_set_new(o, "source", json_string(a->src));
    json_object_set_new(o, "view", a->view ? json_string(a->view) : json_null());
    json_object_set_new(o, "samples_per_shard", json_integer((json_int_t)p->spp));
    json_object_set_new(o, "shard_bytes", json_integer((json_int_t)a->shard_bytes));
    json_object_set_new(o, "image_size", json_integer(a->image_size));
    json_object_set_new(o, "resize_mode",
                        json_string(a->image_size ? image_resize_mode_name(a->resize_mode) : "no"));
    static const char *fmts[] = {"keep", "raw", "jpg", "webp"};
    json_object_set_new(o, "encode_format", json_string(fmts[a->format]));
    json_object_set_new(o, "encode_quality", json_integer(a->quality));
    json_object_set_new(o, "shuffle", json_boolean(a->shuffle));
    json_object_set_new(o, "seed", json_integer((json_int_t)a->seed));
    json_object_set_new(o, "samples", json_integer((json_int_t)p->n));
    return o;
}

/*
 * `_pack.json` records the configuration and a checksum of the plan. rank 0 writes it
 * before any shard; a rerun into the same output must find the same record, so complete
 * shards of a different pack (other options or source) are never mixed in.
 */
static int plan_guard(const struct pack_args *a, const struct plan *p, struct store *dst,
                      struct pm_error *err)
{
    json_t *o = config_json(a, p);
    char h[FILE_HASH_HEX_LEN + 1];
    file_hash_hex_of(p->e ? (const void *)p->e : "", p->n * sizeof *p->e, h);
    json_object_set_new(o, "plan_xxh3", json_string(h));
    json_object_set_new(o, "shards", json_integer((json_int_t)p->nout));
    char *text = json_dumps(o, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
    json_decref(o);
    if (!text)
        return pm_error_set(err, PM_ERR_NOMEM, "out of memory");
    struct bytebuf old;
    bytebuf_init(&old, (size_t)1 << 20);
    int rc = store_read_all(dst, PACK_PLAN_FILE, &old, err);
    if (rc == PM_ERR_NOT_FOUND) {
        pm_error_clear(err);
        rc = store_write_all(dst, PACK_PLAN_FILE, text, strlen(text), err);
    } else if (rc == PM_OK && (old.len != strlen(text) || memcmp(old.data, text, old.len)))
        rc = pm_error_set(err, PM_ERR_USAGE,
                          "%s/%s: the output holds a pack with other options or another source; "
                          "use a new --output (or remove it)",
                          store_location(dst), PACK_PLAN_FILE);
    bytebuf_release(&old);
    free(text);
    return rc;
}

static int write_index(const struct pack_args *a, const struct plan *p, struct store *src,
                       struct store *dst, struct pm_error *err)
{
    struct dataset_index x, sx;
    int rc = dataset_index_init(&x);
    // the name: --name, else the source's
    const char *name = a->name;
    int src_rc = name ? PM_ERR_NOT_FOUND : dataset_store_read_index(src, &sx, err);
    if (!name)
        name = src_rc == PM_OK && sx.name ? sx.name : "pack";
    char ver[64];
    snprintf(ver, sizeof ver, "pixelmill %s", PIXELMILL_VERSION);
    if (rc == PM_OK)
        rc = dataset_index_set_info(&x, name, "pack", ver);
    if (!a->name)
        dataset_index_release(&sx);
    pm_error_clear(err);
    json_t *cfg = config_json(a, p);
    if (rc == PM_OK)
        rc = dataset_index_set_config(&x, cfg);
    json_decref(cfg);
    for (uint64_t k = 0; rc == PM_OK && k < p->nout; k++) {
        char obj[SHARD_NAME_MAX + 32], nm[SHARD_NAME_MAX + 1];
        shard_name(nm, sizeof nm, k, p->digits);
        snprintf(obj, sizeof obj, "%s_stats.json", nm);
        struct shard_stats st;
        rc = dataset_store_read_stats(dst, obj, &st, err);
        if (rc == PM_OK)
            rc = dataset_index_add_stats(&x, &st, err);
        shard_stats_release(&st);
    }
    if (rc == PM_OK)
        rc = dataset_store_write_index(dst, &x, err);
    dataset_index_release(&x);
    return rc;
}

int cmd_pack(int argc, char **argv, const struct pm_mpi *mpi)
{
    struct pack_args a;
    int rc = parse_args(argc, argv, &a, mpi->rank);
    if (rc) {
        args_release(&a);
        return rc == 1 ? PM_EXIT_OK : pm_exit_from_status(rc);
    }
    struct pm_error err = PM_ERROR_INIT;
    struct store_options so = STORE_OPTIONS_INIT;
    so.s3_endpoint = a.s3_endpoint;
    so.part_size = (size_t)a.s3_part_size;
    so.parts_in_flight = a.s3_parallel;
    so.backoff_base_s = a.s3_backoff;
    struct store *src = NULL, *dst = NULL;
    struct plan p = {0};
    rc = store_open(a.src, &so, &src, &err);
    if (rc == PM_OK)
        rc = store_open(a.output, &so, &dst, &err);
    if (rc == PM_OK && !strcmp(store_location(src), store_location(dst)))
        rc = pm_error_set(&err, PM_ERR_USAGE, "--output must differ from the source");
    if (rc == PM_OK && mpi->rank == 0) {
        rc = plan_build(&p, &a, src, &err);
        // what killed writers of an earlier run left (no writer runs yet)
        size_t removed = 0;
        if (rc == PM_OK && (rc = store_sweep_incomplete(dst, 0, &removed, &err)) == PM_OK &&
            removed)
            pm_log_info("pack: removed %zu unfinished writes of an earlier run", removed);
        if (rc == PM_OK)
            rc = plan_guard(&a, &p, dst, &err);
    }
    if (rc != PM_OK)
        pm_log_error("pack: %s", err.msg);
    rc = pm_mpi_worst(rc);
    if (rc == PM_OK)
        rc = plan_bcast(&p, PM_OK, mpi);
    struct unit_ctx c = {.a = &a, .p = &p, .src = src, .dst = dst, .img = IMAGE_INIT,
                         .img2 = IMAGE_INIT, .enc = BYTEBUF_INIT};
    char tmpdir[4096] = "";
    if (rc == PM_OK && store_is_s3(dst)) {
        // S3: shard k+1 is packed while k goes up (upload_queue, own stores per thread)
        pm_error_clear(&err);
        const char *t = getenv("TMPDIR");
        snprintf(tmpdir, sizeof tmpdir, "%s/pixelmill-pack.XXXXXX", t && t[0] ? t : "/tmp");
        if (!mkdtemp(tmpdir)) {
            rc = pm_error_set(&err, PM_ERR_IO, "cannot create a temporary directory '%s': %s",
                              tmpdir, strerror(errno));
            tmpdir[0] = '\0';
        }
        if (rc == PM_OK)
            rc = upload_queue_create(a.output, &so, a.s3_shards ? a.s3_shards : 2, &c.uq, &err);
        c.tmpdir = tmpdir;
        if (rc != PM_OK)
            pm_log_error("pack: %s", err.msg);
        rc = pm_mpi_worst(rc);
    }
    if (rc == PM_OK) {
        pm_error_clear(&err);
        rc = schema_build(&c, &err);
        c.ictx = image_ctx_create();
        if (rc == PM_OK && !c.ictx)
            rc = pm_error_set(&err, PM_ERR_NOMEM, "out of memory");
        if (rc != PM_OK)
            pm_log_error("pack: %s", err.msg);
        rc = pm_mpi_worst(rc);
    }
    if (rc == PM_OK) {
        if (mpi->rank == 0)
            pm_log_info("pack: %llu samples -> %llu shards of %llu", (unsigned long long)p.n,
                        (unsigned long long)p.nout, (unsigned long long)p.spp);
        struct work_counter *wc = NULL;
        if (work_counter_create(&wc, MPI_COMM_WORLD) != PM_OK)
            pm_mpi_fail(MPI_ERR_OTHER, "work_counter_create", __FILE__, __LINE__);
        int my = PM_OK;
        uint64_t done = 0, skipped = 0;
        // the stats file is each shard's commit record: list them once (a shard another
        // rank commits after this listing is never handed to this rank)
        struct done_set ds = {&p, calloc(p.nout ? p.nout : 1, 1)};
        pm_error_clear(&err);
        my = ds.done ? store_list(dst, done_add, &ds, &err)
                     : pm_error_set(&err, PM_ERR_NOMEM, "out of memory");
        while (my == PM_OK) {
            if (pm_signal_pending()) {
                my = PM_ERR_INTERRUPTED;
                break;
            }
            int64_t k = work_counter_next(wc);
            if (k < 0 || (uint64_t)k >= p.nout)
                break;
            if (ds.done[k]) {
                skipped++;
                continue;
            }
            my = unit_run(&c, (uint64_t)k, &err);
            if (my == PM_OK)
                done++;
        }
        free(ds.done);
        // the shards still going up (a signal abandons them: upload_queue_free below)
        if (c.uq && my == PM_OK) {
            pm_error_clear(&err);
            my = upload_queue_drain(c.uq, &err);
        }
        if (my == PM_ERR_INTERRUPTED)
            pm_log_warn("pack: interrupted by signal %d; in-flight shard abandoned, rerun to "
                        "resume",
                        pm_signal_pending());
        else if (my != PM_OK)
            pm_log_error("pack: %s", err.msg);
        pm_log_info("pack: rank %d wrote %llu shards, %llu already complete", mpi->rank,
                    (unsigned long long)done, (unsigned long long)skipped);
        rc = pm_mpi_worst(my);
        work_counter_free(wc);
    }
    if (rc == PM_OK && mpi->rank == 0) {
        pm_error_clear(&err);
        rc = write_index(&a, &p, src, dst, &err);
        if (rc != PM_OK)
            pm_log_error("pack: dataset.json: %s", err.msg);
    }
    rc = pm_mpi_worst(rc);
    upload_queue_free(c.uq);
    if (tmpdir[0])
        rmdir(tmpdir);
    for (size_t i = 0; c.schema && i < c.ncols; i++)
        free(c.schema[i].name);
    free(c.schema);
    image_ctx_free(c.ictx);
    image_release(&c.img);
    image_release(&c.img2);
    bytebuf_release(&c.enc);
    plan_release(&p);
    store_free(src);
    store_free(dst);
    args_release(&a);
    return pm_exit_from_status(rc);
}
