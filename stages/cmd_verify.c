/*
 * pixelmill verify — is a dataset (a directory or an S3 prefix) sound?
 *
 * For every shard listed in dataset.json: the tar exists and parses (tar_reader: structure,
 * truncation, unsafe members), every sample has an image (jpg/jpeg/png/webp/npy), a .txt
 * and a .json; the sidecar (NNNNN.parquet) and the tar agree (every `success` row has
 * exactly one sample with its key, no sample without a success row, other statuses have
 * none); the tar's size and XXH3-128 match dataset.json and the stats file; counts (rows,
 * samples, rows by status) match between the sidecar, the stats file and dataset.json.
 * Missing objects are problems; tars not in dataset.json and what unfinished writers left
 * (POSIX temporary files, S3 multipart uploads in progress under the prefix; listed with
 * store_list_incomplete) are warnings; --abort-incomplete removes the latter. --deep also
 * decodes every image. Exit 0 only when no problem was found.
 *
 * Memory: one shard's tar is read at a time (whole, into memory, on both backends).
 */
#include "commands.h"
#include "dataset_index.h"
#include "dataset_store.h"
#include "file_hash.h"
#include "image.h"
#include "image_decode.h"
#include "npy.h"
#include "pm_error.h"
#include "pm_log.h"
#include "shard_stats.h"
#include "store.h"
#include "tar_reader.h"

#include <getopt.h>
#include <stdarg.h>
#include <jansson.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define VERIFY_MAX_TAR ((size_t)64 << 30)

struct verify_args {
    const char *dataset;
    const char *s3_endpoint;
    bool json;
    bool deep;
    bool abort_incomplete;
};

struct report {
    json_t *problems; /* [{shard, key, message}] */
    json_t *warnings;
    uint64_t shards, samples, rows;
    uint64_t incomplete; /* unfinished writes found (multipart uploads / temporary files) */
    uint64_t aborted;    /* of which removed by --abort-incomplete */
};

static void print_help(FILE *out)
{
    fprintf(out, "usage: pixelmill verify DATASET [--json] [--deep] [--abort-incomplete]\n"
                 "                        [--s3-endpoint URL]\n"
                 "\n"
                 "Check that a dataset (a directory or s3://bucket/prefix) is sound: for every\n"
                 "shard of dataset.json, the tar parses, each sample has an image, a .txt and a\n"
                 ".json, the Parquet sidecar and the tar agree (each success row has exactly one\n"
                 "sample, no other samples), the tar's size and xxh3 match dataset.json and the\n"
                 "stats file, and the counts agree. Missing files are problems; tars not listed\n"
                 "and unfinished writes (temporary files; on S3, multipart uploads in progress\n"
                 "under the prefix) are warnings.\n"
                 "\n"
                 "Options:\n"
                 "  --json          print one JSON report on stdout\n"
                 "  --deep          also decode every image\n"
                 "  --abort-incomplete  remove the unfinished writes found (abort the multipart\n"
                 "                  uploads, delete the temporary files); only while no stage\n"
                 "                  writes into DATASET\n"
                 "  --s3-endpoint URL  S3 endpoint (default: AWS_ENDPOINT_URL or AWS)\n"
                 "  -h, --help      this help\n"
                 "\n"
                 "Exit status: 0 sound, 1 problems found (each names the shard and the key),\n"
                 "2 usage error.\n");
}

static int parse_args(int argc, char **argv, struct verify_args *a)
{
    memset(a, 0, sizeof *a);
    static const struct option opts[] = {{"json", no_argument, 0, 'j'},
                                         {"deep", no_argument, 0, 'd'},
                                         {"abort-incomplete", no_argument, 0, 'a'},
                                         {"s3-endpoint", required_argument, 0, 'e'},
                                         {"help", no_argument, 0, 'h'},
                                         {0, 0, 0, 0}};
    optind = 1;
    int c;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case 'j':
            a->json = true;
            break;
        case 'd':
            a->deep = true;
            break;
        case 'a':
            a->abort_incomplete = true;
            break;
        case 'e':
            a->s3_endpoint = optarg;
            break;
        case 'h':
            print_help(stdout);
            return 1;
        default:
            print_help(stderr);
            return PM_ERR_USAGE;
        }
    }
    if (optind != argc - 1) {
        pm_log_error("verify: exactly one DATASET is needed");
        print_help(stderr);
        return PM_ERR_USAGE;
    }
    a->dataset = argv[optind];
    return PM_OK;
}

static void note(json_t *list, const char *shard, const char *key, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

// A JSON string of s; bytes that are not valid UTF-8 (names from a damaged tar) become '?'.
static json_t *safe_string(const char *s)
{
    json_t *v = json_string(s);
    if (v)
        return v;
    char buf[2048];
    size_t i = 0;
    for (; s[i] && i < sizeof buf - 1; i++)
        buf[i] = (unsigned char)s[i] < 0x80 ? s[i] : '?';
    buf[i] = 0;
    return json_string(buf);
}

static void note(json_t *list, const char *shard, const char *key, const char *fmt, ...)
{
    char msg[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    json_t *o = json_object();
    json_object_set_new(o, "shard", shard ? safe_string(shard) : json_null());
    json_object_set_new(o, "key", key ? safe_string(key) : json_null());
    json_object_set_new(o, "message", safe_string(msg));
    json_array_append_new(list, o);
}

static bool is_image_field(const char *f)
{
    return !strcmp(f, "jpg") || !strcmp(f, "jpeg") || !strcmp(f, "png") || !strcmp(f, "webp") ||
           !strcmp(f, "npy");
}

// key -> index in the sidecar (a sorted array of (key, row) for lookups)
struct keyrow {
    const char *key;
    size_t len;
    size_t row;
    int seen; /* samples in the tar with this key */
    bool success;
};

static int keyrow_cmp(const void *a, const void *b)
{
    const struct keyrow *x = a, *y = b;
    size_t n = x->len < y->len ? x->len : y->len;
    int c = memcmp(x->key, y->key, n);
    return c ? c : (x->len > y->len) - (x->len < y->len);
}

static struct keyrow *keyrow_find(struct keyrow *rows, size_t n, const char *key)
{
    struct keyrow k = {key, strlen(key), 0, 0, false};
    return bsearch(&k, rows, n, sizeof *rows, keyrow_cmp);
}

// Check one shard; problems and warnings go to the report.
static void verify_shard(struct store *s, const struct dataset_shard *ent,
                         const struct verify_args *a, struct image_ctx *ictx, struct report *rep)
{
    char name[4096];
    size_t ulen = strlen(ent->url);
    if (ulen < 5 || strcmp(ent->url + ulen - 4, ".tar") != 0) {
        note(rep->problems, ent->url, NULL, "shard url does not end in .tar");
        return;
    }
    snprintf(name, sizeof name, "%.*s", (int)(ulen - 4), ent->url);
    const char *sh = name;
    struct pm_error err = PM_ERROR_INIT;
    char obj[4200];

    // stats file
    struct shard_stats st;
    snprintf(obj, sizeof obj, "%s_stats.json", name);
    int rc = dataset_store_read_stats(s, obj, &st, &err);
    bool have_stats = rc == PM_OK;
    if (rc == PM_ERR_NOT_FOUND)
        note(rep->problems, sh, NULL, "missing stats file %s (shard incomplete)", obj);
    else if (rc != PM_OK)
        note(rep->problems, sh, NULL, "stats file: %s", err.msg);

    // sidecar
    struct table_batch side;
    snprintf(obj, sizeof obj, "%s.parquet", name);
    pm_error_clear(&err);
    rc = dataset_store_read_table(s, obj, &side, &err);
    struct keyrow *rows = NULL;
    size_t nrows = 0;
    bool have_side = false;
    struct stat_map side_status;
    stat_map_init(&side_status, true);
    if (rc == PM_ERR_NOT_FOUND)
        note(rep->problems, sh, NULL, "missing sidecar %s", obj);
    else if (rc != PM_OK)
        note(rep->problems, sh, NULL, "sidecar: %s", err.msg);
    else {
        int kc = table_batch_find(&side, "key"), sc = table_batch_find(&side, "status");
        if (kc < 0 || sc < 0 || side.cols[kc].type != COLUMN_STRING ||
            side.cols[sc].type != COLUMN_STRING) {
            note(rep->problems, sh, NULL, "sidecar %s lacks string columns key and status", obj);
        } else {
            have_side = true;
            nrows = side.nrows;
            rows = calloc(nrows ? nrows : 1, sizeof *rows);
            for (size_t i = 0; rows && i < nrows; i++) {
                size_t kn, sn;
                const char *k = column_string(&side.cols[kc], i, &kn);
                const char *stt = column_string(&side.cols[sc], i, &sn);
                char sbuf[128];
                snprintf(sbuf, sizeof sbuf, "%.*s", (int)(sn < 100 ? sn : 100), stt);
                stat_map_add(&side_status, sbuf, 1);
                rows[i] = (struct keyrow){k, kn, i, 0, sn == 7 && !memcmp(stt, "success", 7)};
            }
            if (rows) {
                qsort(rows, nrows, sizeof *rows, keyrow_cmp);
                for (size_t i = 1; i < nrows; i++)
                    if (!keyrow_cmp(&rows[i - 1], &rows[i])) {
                        char kb[256];
                        snprintf(kb, sizeof kb, "%.*s",
                                 (int)(rows[i].len < 200 ? rows[i].len : 200), rows[i].key);
                        note(rep->problems, sh, kb, "key appears twice in the sidecar");
                    }
            }
        }
    }

    // tar
    struct bytebuf tar;
    bytebuf_init(&tar, VERIFY_MAX_TAR);
    pm_error_clear(&err);
    rc = store_read_all(s, ent->url, &tar, &err);
    uint64_t nsamples = 0;
    if (rc == PM_ERR_NOT_FOUND) {
        note(rep->problems, sh, NULL, "missing shard %s", ent->url);
    } else if (rc != PM_OK) {
        note(rep->problems, sh, NULL, "cannot read the tar: %s", err.msg);
    } else {
        char h[FILE_HASH_HEX_LEN + 1];
        file_hash_hex_of(tar.data ? tar.data : "", tar.len, h);
        if (tar.len != ent->filesize)
            note(rep->problems, sh, NULL, "%s is %zu bytes, dataset.json says %llu", ent->url,
                 tar.len, (unsigned long long)ent->filesize);
        if (strcmp(h, ent->xxh3) != 0)
            note(rep->problems, sh, NULL, "%s checksum mismatch: xxh3 %s, dataset.json says %s",
                 ent->url, h, ent->xxh3);
        if (have_stats && tar.len != st.tar_bytes)
            note(rep->problems, sh, NULL, "%s is %zu bytes, the stats file says %llu", ent->url,
                 tar.len, (unsigned long long)st.tar_bytes);
        if (have_stats && strcmp(h, st.xxh3) != 0)
            note(rep->problems, sh, NULL, "%s checksum mismatch: xxh3 %s, the stats file says %s",
                 ent->url, h, st.xxh3);
        struct tar_reader *r = NULL;
        char what[4200];
        snprintf(what, sizeof what, "%s/%s", store_location(s), ent->url);
        rc = tar_reader_open_memory(tar.data ? tar.data : "", tar.len, what, NULL, &r, &err);
        struct image img = IMAGE_INIT;
        while (rc == PM_OK) {
            struct tar_sample smp;
            rc = tar_reader_next(r, &smp, &err);
            if (rc == PM_ERR_NOT_FOUND) {
                rc = PM_OK;
                break;
            }
            if (rc != PM_OK) {
                note(rep->problems, sh, NULL, "broken tar: %s", err.msg);
                break;
            }
            nsamples++;
            const struct tar_field *image = NULL;
            bool txt = false, js = false;
            for (size_t i = 0; i < smp.nfields; i++) {
                const char *f = smp.fields[i].name;
                if (is_image_field(f)) {
                    if (image)
                        note(rep->problems, sh, smp.key, "sample has two images (.%s and .%s)",
                             image->name, f);
                    image = &smp.fields[i];
                } else if (!strcmp(f, "txt"))
                    txt = true;
                else if (!strcmp(f, "json"))
                    js = true;
            }
            if (!image)
                note(rep->problems, sh, smp.key, "sample has no image member");
            if (!txt)
                note(rep->problems, sh, smp.key, "sample has no .txt member");
            if (!js)
                note(rep->problems, sh, smp.key, "sample has no .json member");
            if (have_side && rows) {
                struct keyrow *kr = keyrow_find(rows, nrows, smp.key);
                if (!kr)
                    note(rep->problems, sh, smp.key, "sample has no row in the sidecar");
                else {
                    kr->seen++;
                    if (kr->seen == 2)
                        note(rep->problems, sh, smp.key, "key appears more than once in the tar");
                    if (!kr->success)
                        note(rep->problems, sh, smp.key,
                             "sample in the tar but its sidecar status is not success");
                }
            }
            if (a->deep && image) {
                struct pm_error ie = PM_ERROR_INIT;
                int irc;
                if (!strcmp(image->name, "npy")) {
                    struct npy_info ni;
                    irc = npy_parse(image->data, image->size, &ni, &ie);
                } else {
                    irc = image_decode(ictx, image->data, image->size, NULL, &img, NULL, &ie);
                }
                if (irc != PM_OK)
                    note(rep->problems, sh, smp.key, "image .%s does not decode: %s", image->name,
                         ie.msg);
            }
        }
        image_release(&img);
        tar_reader_free(r);
        if (rc == PM_OK && nsamples != ent->nsamples)
            note(rep->problems, sh, NULL, "tar holds %llu samples, dataset.json says %llu",
                 (unsigned long long)nsamples, (unsigned long long)ent->nsamples);
        if (rc == PM_OK && have_stats && nsamples != st.nsamples)
            note(rep->problems, sh, NULL, "tar holds %llu samples, the stats file says %llu",
                 (unsigned long long)nsamples, (unsigned long long)st.nsamples);
        if (rc == PM_OK && have_side && rows)
            for (size_t i = 0; i < nrows; i++)
                if (rows[i].success && rows[i].seen == 0) {
                    char kb[256];
                    snprintf(kb, sizeof kb, "%.*s", (int)(rows[i].len < 200 ? rows[i].len : 200),
                             rows[i].key);
                    note(rep->problems, sh, kb,
                         "success row in the sidecar has no sample in the tar");
                }
    }
    bytebuf_release(&tar);

    // counts
    if (have_side) {
        if (nrows != ent->rows)
            note(rep->problems, sh, NULL, "sidecar has %zu rows, dataset.json says %llu", nrows,
                 (unsigned long long)ent->rows);
        if (have_stats && nrows != st.rows)
            note(rep->problems, sh, NULL, "sidecar has %zu rows, the stats file says %llu", nrows,
                 (unsigned long long)st.rows);
        if (have_stats) {
            json_t *a1 = stat_map_to_json(&side_status), *a2 = stat_map_to_json(&st.status);
            // compare as sets of (status, count), ignoring zero counts
            bool same = true;
            const char *k;
            json_t *v;
            json_object_foreach(a1, k, v)
            {
                json_t *w = json_object_get(a2, k);
                if (json_integer_value(v) != (w ? json_integer_value(w) : 0))
                    same = false;
            }
            json_object_foreach(a2, k, v)
            {
                json_t *w = json_object_get(a1, k);
                if (json_integer_value(v) != (w ? json_integer_value(w) : 0))
                    same = false;
            }
            if (!same) {
                char *t1 = json_dumps(a1, JSON_COMPACT | JSON_SORT_KEYS);
                char *t2 = json_dumps(a2, JSON_COMPACT | JSON_SORT_KEYS);
                note(rep->problems, sh, NULL, "rows by status: sidecar %s, the stats file %s",
                     t1 ? t1 : "?", t2 ? t2 : "?");
                free(t1);
                free(t2);
            }
            json_decref(a1);
            json_decref(a2);
        }
    }
    rep->samples += nsamples;
    rep->rows += nrows;
    free(rows);
    stat_map_release(&side_status);
    table_batch_release(&side);
    shard_stats_release(&st);
}

struct listing {
    const struct dataset_index *x;
    struct report *rep;
};

static int on_object(void *ctx, const char *name, uint64_t size)
{
    (void)size;
    struct listing *l = ctx;
    size_t n = strlen(name);
    if (strchr(name, '/') || n < 5 || strcmp(name + n - 4, ".tar") != 0)
        return 0;
    for (size_t i = 0; i < l->x->nshards; i++)
        if (!strcmp(l->x->shards[i].url, name))
            return 0;
    note(l->rep->warnings, NULL, NULL, "%s is not listed in dataset.json", name);
    return 0;
}

// What unfinished writers left (S3 multipart uploads, POSIX temporary files), as warnings.
static int on_incomplete(void *ctx, const char *name, const char *started)
{
    struct report *rep = ctx;
    rep->incomplete++;
    if (started)
        note(rep->warnings, NULL, NULL,
             "incomplete multipart upload %s (started %s; an interrupted write)", name, started);
    else
        note(rep->warnings, NULL, NULL, "stray temporary file %s (an interrupted write)", name);
    return 0;
}

static void list_incomplete(struct store *s, const struct verify_args *a, struct report *rep)
{
    struct pm_error err = PM_ERROR_INIT;
    if (store_list_incomplete(s, on_incomplete, rep, &err) != PM_OK) {
        note(rep->warnings, NULL, NULL, "cannot list unfinished writes: %s", err.msg);
        return;
    }
    size_t removed = 0;
    if (a->abort_incomplete && rep->incomplete) {
        if (store_sweep_incomplete(s, 0, &removed, &err) != PM_OK)
            note(rep->warnings, NULL, NULL, "cannot remove unfinished writes: %s", err.msg);
        rep->aborted = removed;
    }
}

static void print_report(const struct report *rep, const struct verify_args *a)
{
    bool ok = json_array_size(rep->problems) == 0;
    if (a->json) {
        json_t *o = json_object();
        json_object_set_new(o, "dataset", json_string(a->dataset));
        json_object_set_new(o, "ok", json_boolean(ok));
        json_object_set_new(o, "deep", json_boolean(a->deep));
        json_object_set_new(o, "shards", json_integer((json_int_t)rep->shards));
        json_object_set_new(o, "samples", json_integer((json_int_t)rep->samples));
        json_object_set_new(o, "rows", json_integer((json_int_t)rep->rows));
        json_object_set_new(o, "incomplete", json_integer((json_int_t)rep->incomplete));
        json_object_set_new(o, "incomplete_removed", json_integer((json_int_t)rep->aborted));
        json_object_set(o, "problems", rep->problems);
        json_object_set(o, "warnings", rep->warnings);
        char *t = json_dumps(o, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
        if (t)
            puts(t);
        free(t);
        json_decref(o);
        return;
    }
    size_t i;
    json_t *p;
    json_array_foreach(rep->warnings, i, p)
    {
        printf("warning: %s\n", json_string_value(json_object_get(p, "message")));
    }
    json_array_foreach(rep->problems, i, p)
    {
        json_t *sh = json_object_get(p, "shard"), *k = json_object_get(p, "key");
        printf("problem: shard %s%s%s: %s\n", json_is_string(sh) ? json_string_value(sh) : "-",
               json_is_string(k) ? " key " : "", json_is_string(k) ? json_string_value(k) : "",
               json_string_value(json_object_get(p, "message")));
    }
    printf("%s: %llu shards, %llu samples, %llu rows: %s (%zu problems, %zu warnings)\n",
           a->dataset, (unsigned long long)rep->shards, (unsigned long long)rep->samples,
           (unsigned long long)rep->rows, ok ? "sound" : "NOT SOUND",
           json_array_size(rep->problems), json_array_size(rep->warnings));
    if (rep->aborted)
        printf("removed %llu unfinished writes (--abort-incomplete)\n",
               (unsigned long long)rep->aborted);
}

int cmd_verify(int argc, char **argv, const struct pm_mpi *mpi)
{
    (void)mpi;
    struct verify_args a;
    int rc = parse_args(argc, argv, &a);
    if (rc)
        return rc == 1 ? PM_EXIT_OK : pm_exit_from_status(rc);
    struct pm_error err = PM_ERROR_INIT;
    struct store_options so = STORE_OPTIONS_INIT;
    so.s3_endpoint = a.s3_endpoint;
    struct store *s = NULL;
    if ((rc = store_open(a.dataset, &so, &s, &err)) != PM_OK) {
        pm_log_error("verify: %s", err.msg);
        return pm_exit_from_status(rc);
    }
    struct report rep = {json_array(), json_array(), 0, 0, 0, 0, 0};
    struct dataset_index x;
    rc = dataset_store_read_index(s, &x, &err);
    if (rc == PM_ERR_NOT_FOUND)
        note(rep.problems, NULL, NULL, "missing dataset.json (the stage did not finish)");
    else if (rc != PM_OK)
        note(rep.problems, NULL, NULL, "dataset.json: %s", err.msg);
    else {
        struct image_ctx *ictx = a.deep ? image_ctx_create() : NULL;
        for (size_t i = 0; i < x.nshards; i++) {
            verify_shard(s, &x.shards[i], &a, ictx, &rep);
            rep.shards++;
        }
        image_ctx_free(ictx);
        struct listing l = {&x, &rep};
        pm_error_clear(&err);
        if (store_list(s, on_object, &l, &err) != PM_OK)
            note(rep.warnings, NULL, NULL, "cannot list the dataset: %s", err.msg);
    }
    list_incomplete(s, &a, &rep);
    dataset_index_release(&x);
    print_report(&rep, &a);
    bool ok = json_array_size(rep.problems) == 0;
    json_decref(rep.problems);
    json_decref(rep.warnings);
    store_free(s);
    return ok ? PM_EXIT_OK : PM_EXIT_FAILED;
}
