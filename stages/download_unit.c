/*
 * download_unit — one unit to one shard; see download_unit.h.
 */
#include "download_unit.h"

#include "atomic_file.h"
#include "dataset_store.h"
#include "file_hash.h"
#include "image.h"
#include "image_decode.h"
#include "image_phash.h"
#include "parquet_writer.h"
#include "pm_log.h"
#include "pm_signal.h"
#include "shard.h"
#include "shard_stats.h"
#include "tar_writer.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <unistd.h>

#define ERR_LEN 96
#define BODY_KEEP_MAX ((size_t)4 << 20) /* larger body buffers are freed after decode */

static const char *const status_names[DL_NSTATUS] = {
    "success", "failed_to_download", "failed_to_decode", "filtered", "disallowed",
    "blocked", "duplicate"};

const char *download_status_name(enum download_status s)
{
    return (unsigned)s < DL_NSTATUS ? status_names[s] : "unknown";
}

/* A decode job: a downloaded body in, the encoded image and facts out. */
struct decode_job {
    size_t row;
    struct bytebuf body;
    struct bytebuf encoded;
    int status; /* DL_SUCCESS, DL_FAILED_TO_DECODE or DL_FILTERED */
    char error[ERR_LEN];
    char eclass[ERR_LEN];
    int ow, oh, w, h;
    int has_size;
    uint64_t phash;
    int has_phash;
    char hash[FILE_HASH_HEX_LEN + 1];
    struct decode_job *next;
};

/* What the unit knows about a row. */
struct row_state {
    uint8_t resolved;
    uint8_t status;
    uint8_t has_size, has_phash, has_hash;
    int32_t w, h, ow, oh;
    uint64_t phash;
    char hash[FILE_HASH_HEX_LEN + 1];
    char error[ERR_LEN];  /* "" on success */
    char eclass[ERR_LEN]; /* error class for stats */
    uint64_t bytes_in;
    struct decode_job *job; /* success: holds the encoded image until written */
};

struct worker {
    pthread_t thread;
    struct download_engine *e;
    struct image_ctx *ctx;
    struct image decoded, resized;
};

struct download_engine {
    struct download_unit_config cfg;
    struct download_hooks hooks;
    struct fetcher *fetcher;
    struct fetch_share *share;
    struct filter_expr *where;
    struct filter_expr **clauses;
    size_t nclauses;
    int url_idx, caption_idx;
    int *keep_idx;

    // pool
    pthread_mutex_t mu;
    pthread_cond_t todo_cv, done_cv;
    struct decode_job *todo_head, *todo_tail, *done_head;
    int stop;
    struct worker *workers;
    int nworkers;
    struct decode_job *free_jobs; // main thread only
    size_t outstanding;           // jobs handed to workers and not yet collected

    // per unit (reused)
    struct row_state *rows;
    size_t rows_cap;
    uint8_t *keep, *keep_clause;
    struct bytebuf json, text, key_buf;
    struct fetch_result res;
    uint64_t fd_requeues; // the fetcher's count at the last warning
    struct column_info *side_schema;
    size_t side_ncols;
};

/* ---- helpers ------------------------------------------------------------------------ */

static double now_s(void)
{
    struct timeval tv;
    gettimeofday(&tv, NULL);
    return (double)tv.tv_sec + tv.tv_usec / 1e6;
}

static void copy_str(char *dst, size_t n, const char *src)
{
    size_t k = strnlen(src, n - 1);
    memcpy(dst, src, k);
    dst[k] = 0;
}

/* Append a JSON string literal for bytes s[0..n) (invalid UTF-8 bytes become U+FFFD). */
static int json_append_string(struct bytebuf *b, const char *s, size_t n)
{
    int rc = bytebuf_append(b, "\"", 1);
    const unsigned char *p = (const unsigned char *)s;
    for (size_t i = 0; !rc && i < n;) {
        unsigned c = p[i];
        if (c == '"' || c == '\\') {
            char t[2] = {'\\', (char)c};
            rc = bytebuf_append(b, t, 2);
            i++;
        } else if (c < 0x20) {
            rc = bytebuf_printf(b, "\\u%04x", c);
            i++;
        } else if (c < 0x80) {
            rc = bytebuf_append(b, &p[i], 1);
            i++;
        } else {
            // validate one UTF-8 sequence
            size_t len = c >= 0xF0 && c <= 0xF4 ? 4 : c >= 0xE0 ? 3 : c >= 0xC2 && c < 0xE0 ? 2 : 0;
            int ok = len > 0 && i + len <= n;
            for (size_t k = 1; ok && k < len; k++)
                ok = (p[i + k] & 0xC0) == 0x80;
            if (ok && len == 3) {
                unsigned cp = ((c & 0x0F) << 12) | ((p[i + 1] & 0x3F) << 6);
                ok = cp >= 0x800 && (cp < 0xD800 || cp > 0xDFFF);
            }
            if (ok && len == 4) {
                unsigned cp = ((c & 0x07) << 18) | ((p[i + 1] & 0x3F) << 12);
                ok = cp >= 0x10000 && cp <= 0x10FFFF;
            }
            if (ok) {
                rc = bytebuf_append(b, &p[i], len);
                i += len;
            } else {
                rc = bytebuf_append(b, "\xEF\xBF\xBD", 3);
                i++;
            }
        }
    }
    return rc ? rc : bytebuf_append(b, "\"", 1);
}

/* Append value i of column c as JSON. */
static int json_append_value(struct bytebuf *b, const struct column *c, size_t i)
{
    if (!c->valid[i])
        return bytebuf_append_str(b, "null");
    switch (c->type) {
    case COLUMN_BOOL:
        return bytebuf_append_str(b, c->ints[i] ? "true" : "false");
    case COLUMN_INT32:
    case COLUMN_INT64:
        return bytebuf_printf(b, "%" PRId64, c->ints[i]);
    case COLUMN_FLOAT:
    case COLUMN_DOUBLE:
        if (!isfinite(c->reals[i]))
            return bytebuf_append_str(b, "null");
        return bytebuf_printf(b, "%.17g", c->reals[i]);
    case COLUMN_STRING: {
        size_t n;
        const char *s = column_string(c, i, &n);
        return json_append_string(b, s, n);
    }
    }
    return PM_OK;
}

/* Text of value i (captions): the string, or the number's text; "" for null. */
static int text_of_value(struct bytebuf *b, const struct column *c, size_t i)
{
    bytebuf_clear(b);
    if (!c->valid[i])
        return bytebuf_append(b, "", 0);
    if (c->type == COLUMN_STRING) {
        size_t n;
        const char *s = column_string(c, i, &n);
        return bytebuf_append(b, s, n);
    }
    return json_append_value(b, c, i);
}

/* ---- the decode workers ------------------------------------------------------------- */

static void class_of(char *eclass, const char *msg)
{
    const char *colon = strchr(msg, ':');
    size_t n = colon ? (size_t)(colon - msg) : strlen(msg);
    if (n >= ERR_LEN)
        n = ERR_LEN - 1;
    memcpy(eclass, msg, n);
    eclass[n] = 0;
}

static void decode_one(struct worker *w, struct decode_job *j)
{
    const struct download_unit_config *cfg = &w->e->cfg;
    struct pm_error err = PM_ERROR_INIT;
    file_hash_hex_of(j->body.data ? j->body.data : "", j->body.len, j->hash);
    j->has_size = 0;
    j->has_phash = 0;
    j->error[0] = j->eclass[0] = 0;
    struct image_decode_opts dopts = IMAGE_DECODE_OPTS_INIT;
    dopts.max_pixels = cfg->max_pixels;
    dopts.resize = &cfg->resize;
    struct image_info info;
    memset(&info, 0, sizeof info);
    int rc = image_decode(w->ctx, j->body.data ? j->body.data : "", j->body.len, &dopts,
                          &w->decoded, &info, &err);
    if (rc) {
        j->status = DL_FAILED_TO_DECODE;
        copy_str(j->error, ERR_LEN, err.msg[0] ? err.msg : pm_strerror(rc));
        class_of(j->eclass, j->error);
        if (info.width > 0 && info.height > 0) {
            j->ow = info.width;
            j->oh = info.height;
        }
        return;
    }
    j->ow = info.width;
    j->oh = info.height;
    j->has_size = 1;
    int mn = info.width < info.height ? info.width : info.height;
    int mx = info.width < info.height ? info.height : info.width;
    if (cfg->min_image_size > 0 && mn < cfg->min_image_size) {
        j->status = DL_FILTERED;
        snprintf(j->error, ERR_LEN, "image too small: %dx%d", info.width, info.height);
        copy_str(j->eclass, ERR_LEN, "image too small");
        return;
    }
    if (cfg->max_aspect_ratio > 0 && (double)mx / mn > cfg->max_aspect_ratio) {
        j->status = DL_FILTERED;
        copy_str(j->error, ERR_LEN, "aspect ratio too large");
        copy_str(j->eclass, ERR_LEN, "aspect ratio too large");
        return;
    }
    if (cfg->max_image_area > 0 && (double)info.width * info.height > cfg->max_image_area) {
        j->status = DL_FILTERED;
        copy_str(j->error, ERR_LEN, "image area too large");
        copy_str(j->eclass, ERR_LEN, "image area too large");
        return;
    }
    if (!image_phash(w->ctx, &w->decoded, &j->phash, &err))
        j->has_phash = 1;
    struct image_geometry g;
    const struct image *out = &w->decoded;
    rc = image_geometry_compute(&cfg->resize, info.width, info.height, &g);
    if (!rc && !(g.identity && !info.reduced)) {
        rc = image_resize(w->ctx, &w->decoded, &g, &w->resized, &err);
        out = &w->resized;
    }
    if (!rc)
        rc = image_encode(w->ctx, out, &cfg->encode, &j->encoded, &err);
    if (rc) {
        j->status = DL_FAILED_TO_DECODE;
        snprintf(j->error, ERR_LEN, "image processing: %.70s",
                 err.msg[0] ? err.msg : pm_strerror(rc));
        copy_str(j->eclass, ERR_LEN, "image processing");
        j->has_phash = 0;
        return;
    }
    j->w = out->width;
    j->h = out->height;
    j->status = DL_SUCCESS;
}

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    struct download_engine *e = w->e;
    for (;;) {
        pthread_mutex_lock(&e->mu);
        while (!e->todo_head && !e->stop)
            pthread_cond_wait(&e->todo_cv, &e->mu);
        if (!e->todo_head && e->stop) {
            pthread_mutex_unlock(&e->mu);
            return NULL;
        }
        struct decode_job *j = e->todo_head;
        e->todo_head = j->next;
        if (!e->todo_head)
            e->todo_tail = NULL;
        pthread_mutex_unlock(&e->mu);

        decode_one(w, j);
        if (j->body.cap > BODY_KEEP_MAX)
            bytebuf_release(&j->body);
        else
            bytebuf_clear(&j->body);

        pthread_mutex_lock(&e->mu);
        j->next = e->done_head;
        e->done_head = j;
        pthread_cond_signal(&e->done_cv);
        pthread_mutex_unlock(&e->mu);
    }
}

static struct decode_job *job_get(struct download_engine *e)
{
    struct decode_job *j = e->free_jobs;
    if (j) {
        e->free_jobs = j->next;
    } else {
        j = calloc(1, sizeof *j);
        if (!j)
            return NULL;
        bytebuf_init(&j->body, 0);
        bytebuf_init(&j->encoded, 0);
    }
    j->next = NULL;
    return j;
}

static void job_put(struct download_engine *e, struct decode_job *j)
{
    if (j->encoded.cap > BODY_KEEP_MAX)
        bytebuf_release(&j->encoded);
    j->next = e->free_jobs;
    e->free_jobs = j;
}

static void job_submit(struct download_engine *e, struct decode_job *j)
{
    pthread_mutex_lock(&e->mu);
    j->next = NULL;
    if (e->todo_tail)
        e->todo_tail->next = j;
    else
        e->todo_head = j;
    e->todo_tail = j;
    e->outstanding++;
    pthread_cond_signal(&e->todo_cv);
    pthread_mutex_unlock(&e->mu);
}

/* Take finished jobs (waiting up to wait_ms for one if none is ready). */
static struct decode_job *jobs_collect(struct download_engine *e, int wait_ms)
{
    pthread_mutex_lock(&e->mu);
    if (!e->done_head && wait_ms > 0 && e->outstanding > 0) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_nsec += (long)wait_ms * 1000000L;
        ts.tv_sec += ts.tv_nsec / 1000000000L;
        ts.tv_nsec %= 1000000000L;
        pthread_cond_timedwait(&e->done_cv, &e->mu, &ts);
    }
    struct decode_job *list = e->done_head;
    e->done_head = NULL;
    for (struct decode_job *j = list; j; j = j->next)
        e->outstanding--;
    pthread_mutex_unlock(&e->mu);
    return list;
}

/* ---- engine ------------------------------------------------------------------------- */

static const char *const side_names[] = {
    "key",   "url",    "caption",        "status",          "error_message",
    "width", "height", "original_width", "original_height", "content_hash",
    "phash"};
static const enum column_type side_types[] = {
    COLUMN_STRING, COLUMN_STRING, COLUMN_STRING, COLUMN_STRING, COLUMN_STRING, COLUMN_INT32,
    COLUMN_INT32,  COLUMN_INT32,  COLUMN_INT32,  COLUMN_STRING, COLUMN_INT64};
#define SIDE_FIXED 11

static int find_col(const struct download_plan *p, const char *name)
{
    for (size_t i = 0; i < p->ncolumns; i++)
        if (!strcmp(p->columns[i].name, name))
            return (int)i;
    return -1;
}

void download_engine_free(struct download_engine *e)
{
    if (!e)
        return;
    if (e->workers) {
        pthread_mutex_lock(&e->mu);
        e->stop = 1;
        pthread_cond_broadcast(&e->todo_cv);
        pthread_mutex_unlock(&e->mu);
        for (int i = 0; i < e->nworkers; i++) {
            pthread_join(e->workers[i].thread, NULL);
            image_ctx_free(e->workers[i].ctx);
            image_release(&e->workers[i].decoded);
            image_release(&e->workers[i].resized);
        }
        free(e->workers);
    }
    // jobs: the free list, finished and queued ones, and those held by rows
    struct decode_job *lists[3] = {e->free_jobs, e->done_head, e->todo_head};
    for (int k = 0; k < 3; k++)
        for (struct decode_job *j = lists[k], *nx; j; j = nx) {
            nx = j->next;
            bytebuf_release(&j->body);
            bytebuf_release(&j->encoded);
            free(j);
        }
    for (size_t i = 0; i < e->rows_cap; i++)
        if (e->rows[i].job) {
            bytebuf_release(&e->rows[i].job->body);
            bytebuf_release(&e->rows[i].job->encoded);
            free(e->rows[i].job);
        }
    fetcher_free(e->fetcher);
    fetch_share_free(e->share);
    filter_expr_free(e->where);
    for (size_t i = 0; i < e->nclauses; i++)
        filter_expr_free(e->clauses[i]);
    free(e->clauses);
    free(e->keep_idx);
    free(e->rows);
    free(e->keep);
    free(e->keep_clause);
    bytebuf_release(&e->json);
    bytebuf_release(&e->text);
    bytebuf_release(&e->key_buf);
    fetch_result_release(&e->res);
    free(e->side_schema);
    pthread_mutex_destroy(&e->mu);
    pthread_cond_destroy(&e->todo_cv);
    pthread_cond_destroy(&e->done_cv);
    free(e);
}

int download_engine_create(const struct download_unit_config *cfg,
                           const struct download_hooks *hooks, struct download_engine **out,
                           struct pm_error *err)
{
    *out = NULL;
    struct download_engine *e = calloc(1, sizeof *e);
    if (!e)
        return pm_error_set(err, PM_ERR_NOMEM, "out of memory");
    e->cfg = *cfg;
    if (hooks)
        e->hooks = *hooks;
    pthread_mutex_init(&e->mu, NULL);
    pthread_cond_init(&e->todo_cv, NULL);
    pthread_cond_init(&e->done_cv, NULL);
    fetch_result_init(&e->res);
    bytebuf_init(&e->json, 0);
    bytebuf_init(&e->text, 0);
    bytebuf_init(&e->key_buf, 0);
    const struct download_plan *p = cfg->plan;
    int rc = PM_OK;

    e->url_idx = find_col(p, cfg->url_col);
    e->caption_idx = cfg->caption_col ? find_col(p, cfg->caption_col) : -1;
    if (e->url_idx < 0 || p->columns[e->url_idx].type != COLUMN_STRING) {
        rc = pm_error_set(err, PM_ERR_USAGE, "the url column '%s' must be a text column",
                          cfg->url_col);
        goto fail;
    }
    if (cfg->caption_col && e->caption_idx < 0) {
        rc = pm_error_set(err, PM_ERR_USAGE, "no caption column '%s'", cfg->caption_col);
        goto fail;
    }
    e->keep_idx = calloc(cfg->nkeep + 1, sizeof *e->keep_idx);
    e->side_ncols = SIDE_FIXED + cfg->nkeep;
    e->side_schema = calloc(e->side_ncols, sizeof *e->side_schema);
    if (!e->keep_idx || !e->side_schema) {
        rc = pm_error_set(err, PM_ERR_NOMEM, "out of memory");
        goto fail;
    }
    for (size_t i = 0; i < SIDE_FIXED; i++) {
        e->side_schema[i].name = (char *)side_names[i];
        e->side_schema[i].type = side_types[i];
        e->side_schema[i].nullable = i != 0 && i != 3; // key and status are required
    }
    for (size_t k = 0; k < cfg->nkeep; k++) {
        e->keep_idx[k] = find_col(p, cfg->keep_cols[k]);
        if (e->keep_idx[k] < 0) {
            rc = pm_error_set(err, PM_ERR_USAGE, "no column '%s' to keep", cfg->keep_cols[k]);
            goto fail;
        }
        for (size_t i = 0; i < SIDE_FIXED; i++)
            if (!strcmp(side_names[i], cfg->keep_cols[k])) {
                rc = pm_error_set(err, PM_ERR_USAGE,
                                  "--keep-cols '%s' clashes with a sidecar column of that name",
                                  cfg->keep_cols[k]);
                goto fail;
            }
        e->side_schema[SIDE_FIXED + k] = p->columns[e->keep_idx[k]];
        e->side_schema[SIDE_FIXED + k].nullable = true;
    }
    if (cfg->nwhere) {
        if ((rc = filter_expr_parse(&e->where, cfg->where, cfg->nwhere, err)) ||
            (rc = filter_expr_bind(e->where, p->columns, p->ncolumns, err)))
            goto fail;
        e->nclauses = filter_expr_num_clauses(e->where);
        e->clauses = calloc(e->nclauses, sizeof *e->clauses);
        if (!e->clauses) {
            rc = pm_error_set(err, PM_ERR_NOMEM, "out of memory");
            goto fail;
        }
        for (size_t i = 0; i < e->nclauses; i++) {
            const char *t = filter_expr_clause_text(e->where, i);
            if ((rc = filter_expr_parse(&e->clauses[i], &t, 1, err)) ||
                (rc = filter_expr_bind(e->clauses[i], p->columns, p->ncolumns, err)))
                goto fail;
        }
    }
    if ((rc = fetch_share_create(&e->share, err)))
        goto fail;
    struct fetcher_config fc = cfg->fetch;
    fc.concurrency = cfg->concurrency;
    if ((rc = fetcher_create(&fc, e->share, &e->fetcher, err)))
        goto fail;
    e->nworkers = cfg->threads < 1 ? 1 : cfg->threads;
    e->workers = calloc((size_t)e->nworkers, sizeof *e->workers);
    if (!e->workers) {
        rc = pm_error_set(err, PM_ERR_NOMEM, "out of memory");
        goto fail;
    }
    for (int i = 0; i < e->nworkers; i++) {
        struct worker *w = &e->workers[i];
        w->e = e;
        image_init(&w->decoded);
        image_init(&w->resized);
        w->ctx = image_ctx_create();
        if (!w->ctx || pthread_create(&w->thread, NULL, worker_main, w)) {
            image_ctx_free(w->ctx);
            e->nworkers = i;
            rc = pm_error_set(err, PM_ERR_NOMEM, "cannot start decode thread %d", i);
            goto fail;
        }
    }
    *out = e;
    return PM_OK;
fail:
    download_engine_free(e);
    return rc;
}

/* ---- url dedupe files --------------------------------------------------------------- */

#define DEDUPE_MAGIC "PMDUPURL"

static int dedupe_path(char *buf, size_t n, const char *output, uint64_t unit, int digits)
{
    char dir[PATH_MAX];
    int k = snprintf(dir, sizeof dir, "%s/_work/dedupe-urls", output);
    if (k < 0 || (size_t)k >= sizeof dir)
        return PM_ERR_LIMIT;
    return shard_path(buf, n, dir, unit, digits, ".bin");
}

static void put_u64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static uint64_t get_u64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = (v << 8) | p[i];
    return v;
}

int download_dedupe_write(const char *output, uint64_t unit, int digits, const uint64_t *entries,
                          size_t n, struct pm_error *err)
{
    char path[PATH_MAX];
    if (dedupe_path(path, sizeof path, output, unit, digits))
        return pm_error_set(err, PM_ERR_LIMIT, "output path too long");
    size_t size = 32 + n * 24;
    uint8_t *buf = calloc(1, size);
    if (!buf)
        return pm_error_set(err, PM_ERR_NOMEM, "out of memory");
    memcpy(buf, DEDUPE_MAGIC, 8);
    buf[8] = 1; // version 1 (u32 LE), then a reserved u32
    put_u64(buf + 16, unit);
    put_u64(buf + 24, n);
    for (size_t i = 0; i < 3 * n; i++)
        put_u64(buf + 32 + 8 * i, entries[i]);
    int rc = atomic_file_write_all(path, buf, size, err);
    free(buf);
    return rc;
}

int download_dedupe_read(const char *output, uint64_t unit, int digits, uint64_t rows, uint64_t sps,
                         uint64_t **entries, size_t *n, struct pm_error *err)
{
    *entries = NULL;
    *n = 0;
    char path[PATH_MAX];
    if (dedupe_path(path, sizeof path, output, unit, digits))
        return pm_error_set(err, PM_ERR_LIMIT, "output path too long");
    FILE *f = fopen(path, "rb");
    if (!f)
        return pm_error_set(err, errno == ENOENT ? PM_ERR_NOT_FOUND : PM_ERR_IO,
                            "cannot open '%s': %s", path, strerror(errno));
    uint8_t head[32];
    struct stat st;
    int rc = PM_OK;
    if (fstat(fileno(f), &st) || fread(head, 1, 32, f) != 32) {
        rc = pm_error_set(err, PM_ERR_FORMAT, "'%s': too short", path);
        goto out;
    }
    uint64_t count = get_u64(head + 24);
    if (memcmp(head, DEDUPE_MAGIC, 8) || head[8] != 1 || head[9] || head[10] || head[11] ||
        get_u64(head + 16) != unit || count > rows || (uint64_t)st.st_size != 32 + count * 24) {
        rc = pm_error_set(err, PM_ERR_FORMAT,
                          "'%s': not a url dedupe file of version 1 for unit %" PRIu64
                          " (magic, version, unit or size wrong)",
                          path, unit);
        goto out;
    }
    uint64_t *e = malloc((count ? count : 1) * 24);
    uint8_t *raw = malloc((count ? count : 1) * 24);
    if (!e || !raw) {
        free(e);
        free(raw);
        rc = pm_error_set(err, PM_ERR_NOMEM, "out of memory");
        goto out;
    }
    if (fread(raw, 24, count, f) != count) {
        free(e);
        free(raw);
        rc = pm_error_set(err, PM_ERR_IO, "'%s': short read", path);
        goto out;
    }
    for (uint64_t i = 0; i < 3 * count; i++)
        e[i] = get_u64(raw + 8 * i);
    free(raw);
    for (uint64_t i = 0; i < count; i++) {
        uint64_t row = e[3 * i], ku = e[3 * i + 1], kr = e[3 * i + 2];
        int ok = row < rows && kr < sps && (i == 0 || row > e[3 * (i - 1)]) &&
                 (ku < unit || (ku == unit && kr < row));
        if (!ok) {
            free(e);
            rc = pm_error_set(err, PM_ERR_FORMAT, "'%s': bad entry %" PRIu64, path, i);
            goto out;
        }
    }
    *entries = e;
    *n = (size_t)count;
out:
    fclose(f);
    return rc;
}

/* ---- one unit ----------------------------------------------------------------------- */

static void resolve(struct download_engine *e, struct row_state *r, enum download_status st,
                    const char *error, const char *eclass)
{
    r->resolved = 1;
    r->status = (uint8_t)st;
    copy_str(r->error, ERR_LEN, error ? error : "");
    copy_str(r->eclass, ERR_LEN, eclass ? eclass : "");
    (void)e;
}

static int make_key(char *buf, size_t n, const struct download_plan *p, uint64_t unit, uint64_t row,
                    struct pm_error *err)
{
    return shard_key(buf, n, unit, row, p->samples_per_shard, p->digits, err);
}

/* The JSON member of a sample (also the sidecar's fields). */
static int build_json(struct download_engine *e, const struct table_batch *b, size_t i,
                      const char *key, const struct row_state *r)
{
    struct bytebuf *j = &e->json;
    bytebuf_clear(j);
    size_t n;
    const char *url = column_string(&b->cols[e->url_idx], i, &n);
    int rc = bytebuf_append_str(j, "{\"key\": ");
    rc = rc ? rc : json_append_string(j, key, strlen(key));
    rc = rc ? rc : bytebuf_append_str(j, ", \"url\": ");
    rc = rc ? rc : json_append_string(j, url, n);
    rc = rc ? rc : bytebuf_append_str(j, ", \"caption\": ");
    if (!rc) {
        if (e->caption_idx >= 0 && b->cols[e->caption_idx].valid[i]) {
            rc = text_of_value(&e->text, &b->cols[e->caption_idx], i);
            rc = rc ? rc : json_append_string(j, e->text.data, e->text.len);
        } else {
            rc = bytebuf_append_str(j, "null");
        }
    }
    char ph[17];
    image_phash_format(r->phash, ph);
    rc = rc ? rc
            : bytebuf_printf(j,
                             ", \"status\": \"%s\", \"error_message\": null, \"width\": %d, "
                             "\"height\": %d, \"original_width\": %d, \"original_height\": %d, "
                             "\"content_hash\": \"%s\", \"phash\": ",
                             download_status_name(r->status), r->w, r->h, r->ow, r->oh, r->hash);
    if (!rc)
        rc = r->has_phash ? bytebuf_printf(j, "\"%s\"", ph) : bytebuf_append_str(j, "null");
    for (size_t k = 0; !rc && k < e->cfg.nkeep; k++) {
        rc = bytebuf_append_str(j, ", ");
        rc = rc ? rc : json_append_string(j, e->cfg.keep_cols[k], strlen(e->cfg.keep_cols[k]));
        rc = rc ? rc : bytebuf_append_str(j, ": ");
        rc = rc ? rc : json_append_value(j, &b->cols[e->keep_idx[k]], i);
    }
    return rc ? rc : bytebuf_append_str(j, "}");
}

static int write_sample(struct download_engine *e, struct tar_writer *tw,
                        const struct table_batch *b, uint64_t unit, size_t i, struct pm_error *err)
{
    struct row_state *r = &e->rows[i];
    char key[32];
    int rc = make_key(key, sizeof key, e->cfg.plan, unit, i, err);
    if (rc)
        return rc;
    if ((rc = build_json(e, b, i, key, r)))
        return pm_error_set(err, rc, "cannot build the JSON of sample %s", key);
    struct bytebuf *cap = &e->text;
    if (e->caption_idx >= 0)
        rc = text_of_value(cap, &b->cols[e->caption_idx], i);
    else
        bytebuf_clear(cap);
    if (rc)
        return pm_error_set(err, rc, "out of memory");
    struct tar_member m[3] = {
        {e->cfg.encode.format == IMAGE_ENCODE_WEBP ? "webp" : "jpg", r->job->encoded.data,
         r->job->encoded.len},
        {"txt", cap->data ? cap->data : "", cap->len},
        {"json", e->json.data, e->json.len},
    };
    return tar_writer_add_sample(tw, key, m, 3, err);
}

static int write_sidecar(struct download_engine *e, const struct table_batch *b, uint64_t unit,
                         const char *path, struct pm_error *err)
{
    struct table_batch s = TABLE_BATCH_INIT;
    int rc = table_batch_init(&s, e->side_schema, e->side_ncols);
    if (rc)
        return pm_error_set(err, rc, "out of memory");
    size_t n = b->nrows;
    for (size_t j = 0; j < e->side_ncols; j++)
        if ((rc = column_reserve(&s.cols[j], n)))
            goto out;
    for (size_t i = 0; !rc && i < n; i++) {
        const struct row_state *r = &e->rows[i];
        char key[32];
        if ((rc = make_key(key, sizeof key, e->cfg.plan, unit, i, err)))
            goto out;
        size_t un;
        const struct column *uc = &b->cols[e->url_idx];
        const char *url = column_string(uc, i, &un);
        rc = column_append_string(&s.cols[0], key, strlen(key));
        rc = rc             ? rc
             : uc->valid[i] ? column_append_string(&s.cols[1], url, un)
                            : column_append_null(&s.cols[1]);
        if (!rc) {
            if (e->caption_idx >= 0 && b->cols[e->caption_idx].valid[i]) {
                rc = text_of_value(&e->text, &b->cols[e->caption_idx], i);
                rc = rc ? rc : column_append_string(&s.cols[2], e->text.data, e->text.len);
            } else {
                rc = column_append_null(&s.cols[2]);
            }
        }
        const char *st = download_status_name(r->status);
        rc = rc ? rc : column_append_string(&s.cols[3], st, strlen(st));
        rc = rc ? rc
             : r->status == DL_SUCCESS
                 ? column_append_null(&s.cols[4])
                 : column_append_string(&s.cols[4], r->error, strlen(r->error));
        int img = r->status == DL_SUCCESS;
        rc = rc ? rc : img ? column_append_int(&s.cols[5], r->w) : column_append_null(&s.cols[5]);
        rc = rc ? rc : img ? column_append_int(&s.cols[6], r->h) : column_append_null(&s.cols[6]);
        rc = rc            ? rc
             : r->has_size ? column_append_int(&s.cols[7], r->ow)
                           : column_append_null(&s.cols[7]);
        rc = rc            ? rc
             : r->has_size ? column_append_int(&s.cols[8], r->oh)
                           : column_append_null(&s.cols[8]);
        rc = rc            ? rc
             : r->has_hash ? column_append_string(&s.cols[9], r->hash, FILE_HASH_HEX_LEN)
                           : column_append_null(&s.cols[9]);
        rc = rc             ? rc
             : r->has_phash ? column_append_int(&s.cols[10], (int64_t)r->phash)
                            : column_append_null(&s.cols[10]);
        for (size_t k = 0; !rc && k < e->cfg.nkeep; k++)
            rc = column_append_range(&s.cols[SIDE_FIXED + k], &b->cols[e->keep_idx[k]], i, 1);
        if (rc)
            pm_error_set(err, rc, "cannot build the sidecar of unit %" PRIu64, unit);
    }
    if (rc)
        goto out;
    s.nrows = n;
    // written to a private temporary file, then copied into the store under `path`
    char tmp[PATH_MAX];
    if ((rc = dataset_store_temp_path(tmp, sizeof tmp, err)))
        goto out;
    struct parquet_writer *w = NULL;
    struct parquet_writer_options po = {PARQUET_CODEC_ZSTD, 0};
    rc = parquet_writer_open(&w, tmp, e->side_schema, e->side_ncols, &po, err);
    rc = rc ? rc : parquet_writer_write(w, &s, err);
    rc = rc ? rc : parquet_writer_close(w, err);
    parquet_writer_free(w);
    rc = rc ? rc : dataset_store_put_file(e->cfg.store, path, tmp, err);
    unlink(tmp);
out:
    table_batch_release(&s);
    return rc;
}

/* Apply one finished decode job to its row. */
static void take_job(struct download_engine *e, struct decode_job *j)
{
    struct row_state *r = &e->rows[j->row];
    r->has_hash = 1;
    memcpy(r->hash, j->hash, sizeof r->hash);
    r->has_size = (uint8_t)j->has_size;
    r->ow = j->ow;
    r->oh = j->oh;
    r->has_phash = (uint8_t)(j->status == DL_SUCCESS && j->has_phash);
    r->phash = j->phash;
    if (j->status == DL_SUCCESS) {
        r->w = j->w;
        r->h = j->h;
        r->job = j;
        resolve(e, r, DL_SUCCESS, NULL, NULL);
    } else {
        resolve(e, r, (enum download_status)j->status, j->error, j->eclass);
        job_put(e, j);
    }
}

static void take_fetch(struct download_engine *e, struct fetch_result *res, uint64_t unit)
{
    size_t row = (size_t)(uintptr_t)res->user - 1;
    struct row_state *r = &e->rows[row];
    (void)unit;
    if (res->status == FETCH_SUCCESS) {
        struct decode_job *j = job_get(e);
        if (!j) {
            resolve(e, r, DL_FAILED_TO_DECODE, "out of memory", "out of memory");
            return;
        }
        r->bytes_in = res->body.len;
        struct bytebuf t = j->body;
        j->body = res->body;
        res->body = t;
        j->row = row;
        job_submit(e, j);
        return;
    }
    if (res->status == FETCH_DISALLOWED) {
        resolve(e, r, DL_DISALLOWED, res->error[0] ? res->error : "disallowed", "disallowed");
        return;
    }
    enum download_status st = DL_FAILED_TO_DOWNLOAD;
    if (res->error_class == FETCH_E_BLOCKED_ADDRESS || res->error_class == FETCH_E_BLOCKED_SCHEME)
        st = DL_BLOCKED;
    const char *cls =
        res->error_class == FETCH_E_HTTP ? res->error : fetch_error_name(res->error_class);
    resolve(e, r, st, res->error[0] ? res->error : cls, cls);
}

static void report_row(struct download_engine *e, const struct row_state *r)
{
    if (e->hooks.on_row)
        e->hooks.on_row(e->hooks.arg, (enum download_status)r->status,
                        r->status == DL_SUCCESS ? NULL : r->eclass, r->bytes_in,
                        r->job ? r->job->encoded.len : 0);
}

int download_unit_run(struct download_engine *e, uint64_t unit, struct pm_error *err)
{
    const struct download_unit_config *cfg = &e->cfg;
    const struct download_plan *p = cfg->plan;
    double t0 = now_s();
    struct table_batch b;
    struct tar_writer *tw = NULL;
    uint64_t *dups = NULL;
    size_t ndups = 0;
    struct shard_stats stats;
    shard_stats_init(&stats, unit, p->digits);
    int rc = download_plan_read_unit(p, cfg->output, unit, &b, err);
    if (rc)
        goto out;
    size_t n = b.nrows;
    if (n > e->rows_cap) {
        free(e->rows);
        free(e->keep);
        free(e->keep_clause);
        e->rows = calloc(n, sizeof *e->rows);
        e->keep = malloc(n);
        e->keep_clause = malloc(n);
        e->rows_cap = e->rows ? n : 0;
        if (!e->rows || !e->keep || !e->keep_clause) {
            rc = pm_error_set(err, PM_ERR_NOMEM, "out of memory");
            goto out;
        }
    }
    memset(e->rows, 0, n * sizeof *e->rows);

    // pre-statuses
    if (cfg->dedupe_urls) {
        rc = download_dedupe_read(cfg->output, unit, p->digits, n, p->samples_per_shard, &dups,
                                  &ndups, err);
        if (rc)
            goto out;
        for (size_t k = 0; k < ndups; k++) {
            char key[32], msg[64];
            if ((rc = make_key(key, sizeof key, p, dups[3 * k + 1], dups[3 * k + 2], err)))
                goto out;
            snprintf(msg, sizeof msg, "duplicate of %s", key);
            resolve(e, &e->rows[dups[3 * k]], DL_DUPLICATE, msg, "duplicate");
        }
    }
    if (e->where) {
        filter_expr_eval(e->where, &b, e->keep, NULL);
        for (size_t c = 0; c < e->nclauses; c++) {
            filter_expr_eval(e->clauses[c], &b, e->keep_clause, NULL);
            for (size_t i = 0; i < n; i++)
                if (!e->keep[i] && !e->keep_clause[i] && !e->rows[i].resolved) {
                    char msg[ERR_LEN];
                    snprintf(msg, sizeof msg, "where: %.80s", filter_expr_clause_text(e->where, c));
                    resolve(e, &e->rows[i], DL_FILTERED, msg, "where");
                }
        }
        for (size_t i = 0; i < n; i++) // failed the whole but no clause alone: name the first
            if (!e->keep[i] && !e->rows[i].resolved) {
                char msg[ERR_LEN];
                snprintf(msg, sizeof msg, "where: %.80s", filter_expr_clause_text(e->where, 0));
                resolve(e, &e->rows[i], DL_FILTERED, msg, "where");
            }
    }
    const struct column *uc = &b.cols[e->url_idx];
    for (size_t i = 0; i < n; i++) {
        size_t len;
        column_string(uc, i, &len);
        if (!e->rows[i].resolved && (!uc->valid[i] || len == 0))
            resolve(e, &e->rows[i], DL_FAILED_TO_DOWNLOAD, "missing url", "missing url");
    }

    char path[PATH_MAX];
    if (shard_path(path, sizeof path, NULL, unit, p->digits, ".tar")) {
        rc = pm_error_set(err, PM_ERR_LIMIT, "output path too long");
        goto out;
    }
    // through the store: visible under its name only once whole (S3: the multipart upload
    // completes at close)
    struct tar_writer_options to = {.mtime = cfg->tar_mtime};
    if ((rc = tar_writer_open_store(cfg->store, path, &to, &tw, err)))
        goto out;

    size_t window = (size_t)(cfg->concurrency > 16 ? cfg->concurrency : 16) * 4;
    size_t next_submit = 0, next_write = 0;
    char *urlz = NULL;
    size_t urlz_cap = 0;
    uint64_t bytes_in = 0, bytes_out = 0;
    while (next_write < n) {
        if (pm_signal_pending()) {
            rc = pm_error_set(err, PM_ERR_INTERRUPTED, "interrupted by signal %d",
                              pm_signal_pending());
            break;
        }
        // submit
        while (next_submit < n && next_submit - next_write < window &&
               fetcher_pending(e->fetcher) < (size_t)cfg->concurrency * 4) {
            size_t i = next_submit++;
            if (e->rows[i].resolved)
                continue;
            size_t len;
            const char *u = column_string(uc, i, &len);
            if (len + 1 > urlz_cap) {
                char *t = realloc(urlz, len + 1);
                if (!t) {
                    rc = pm_error_set(err, PM_ERR_NOMEM, "out of memory");
                    break;
                }
                urlz = t;
                urlz_cap = len + 1;
            }
            memcpy(urlz, u, len);
            urlz[len] = 0;
            if (memchr(u, 0, len)) { // an embedded NUL: not a URL
                resolve(e, &e->rows[i], DL_FAILED_TO_DOWNLOAD, "bad url", "bad url");
                continue;
            }
            if ((rc = fetcher_submit(e->fetcher, urlz, (void *)(uintptr_t)(i + 1), err)))
                break;
        }
        if (rc)
            break;
        // write what is resolved, in order
        while (next_write < next_submit && e->rows[next_write].resolved) {
            struct row_state *r = &e->rows[next_write];
            if (r->status == DL_SUCCESS) {
                if ((rc = write_sample(e, tw, &b, unit, next_write, err)))
                    break;
                bytes_out += r->job->encoded.len;
            }
            bytes_in += r->bytes_in;
            report_row(e, r);
            stat_map_add(&stats.status, download_status_name(r->status), 1);
            if (r->status != DL_SUCCESS)
                stat_map_add(&stats.errors, r->eclass, 1);
            if (r->job) {
                job_put(e, r->job);
                r->job = NULL;
            }
            next_write++;
        }
        if (rc || next_write == n)
            break;
        // drive the network and collect decodes
        // Decoded rows wait at most this long to be noticed; throughput does not depend
        // on it (the window keeps transfers going), CPU does: a shorter poll spins.
        int waiting_decode = e->outstanding > 0;
        if (fetcher_pending(e->fetcher) > 0) {
            if ((rc = fetcher_poll(e->fetcher, waiting_decode ? 10 : 50, err)))
                break;
            while (fetcher_next(e->fetcher, &e->res))
                take_fetch(e, &e->res, unit);
        }
        struct decode_job *done = jobs_collect(e, fetcher_pending(e->fetcher) > 0 ? 0 : 50);
        for (struct decode_job *j = done, *nx; j; j = nx) {
            nx = j->next;
            take_job(e, j);
        }
        if (e->hooks.on_poll)
            e->hooks.on_poll(e->hooks.arg);
    }
    free(urlz);
    struct fetcher_stats fs;
    fetcher_stats_get(e->fetcher, &fs);
    if (fs.fd_requeues > e->fd_requeues) {
        // not an error: the engine ran fewer transfers at once and lost no URL
        pm_log_warn("out of file descriptors (ulimit -n): %llu transfers requeued, in flight "
                    "lowered to %llu (--concurrency %d)",
                    (unsigned long long)(fs.fd_requeues - e->fd_requeues),
                    (unsigned long long)fs.min_concurrency, cfg->concurrency);
        e->fd_requeues = fs.fd_requeues;
    }
    // let the workers finish what they hold, so their jobs come back
    while (e->outstanding > 0) {
        struct decode_job *done = jobs_collect(e, 50);
        for (struct decode_job *j = done, *nx; j; j = nx) {
            nx = j->next;
            if (rc) {
                job_put(e, j);
            } else {
                take_job(e, j);
            }
        }
    }
    for (size_t i = 0; i < n; i++)
        if (e->rows[i].job) {
            job_put(e, e->rows[i].job);
            e->rows[i].job = NULL;
        }
    if (rc)
        goto out;

    struct tar_writer_result tr;
    if ((rc = tar_writer_close(tw, &tr, err)))
        goto out;
    if (shard_path(path, sizeof path, NULL, unit, p->digits, ".parquet")) {
        rc = pm_error_set(err, PM_ERR_LIMIT, "output path too long");
        goto out;
    }
    if (pm_signal_pending()) {
        rc = pm_error_set(err, PM_ERR_INTERRUPTED, "interrupted by signal %d", pm_signal_pending());
        goto out;
    }
    if ((rc = write_sidecar(e, &b, unit, path, err)))
        goto out;
    stats.rows = n;
    stats.nsamples = tr.nsamples;
    stats.tar_bytes = tr.bytes;
    memcpy(stats.xxh3, tr.xxh3, sizeof stats.xxh3);
    stats.start_time = t0;
    stats.end_time = now_s();
    stat_map_add(&stats.bytes, "downloaded", (double)bytes_in);
    stat_map_add(&stats.bytes, "images", (double)bytes_out);
    stat_map_add(&stats.durations, "unit", stats.end_time - t0);
    rc = dataset_store_write_stats(cfg->store, &stats, err);
out:
    // a failed or interrupted unit: drop the fetches still in flight so the engine is clean
    if (rc) {
        fetcher_free(e->fetcher);
        e->fetcher = NULL;
        e->fd_requeues = 0;
        struct fetcher_config fc = cfg->fetch;
        fc.concurrency = cfg->concurrency;
        struct pm_error e2 = PM_ERROR_INIT;
        if (fetcher_create(&fc, e->share, &e->fetcher, &e2) && rc != PM_ERR_INTERRUPTED)
            rc = PM_ERR_INTERNAL;
    }
    tar_writer_free(tw);
    free(dups);
    table_batch_release(&b);
    shard_stats_release(&stats);
    return rc;
}
