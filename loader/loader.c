/*
 * loader — see loader.h. Layout: the sample index (open), the order (Feistel), NPY
 * parsing, reading one sample, and the worker pipeline (slots of decoded batches).
 */
#include "loader.h"

#include "dataset_index.h"
#include "image.h"
#include "image_decode.h"
#include "image_resize.h"
#include "bytebuf.h"
#include "store.h"
#include "table_reader.h"
#include "tar_reader.h"
#include "view.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define STATE_MAGIC 0x444c4d50u /* "PMLD" */
#define STATE_VERSION 1u
#define TAR_PAD 1024 /* zero blocks appended to a sample's bytes: the end-of-archive marker */

struct sample_ref {
    uint32_t shard;
    uint64_t off, end; /* byte range of the sample's members in the tar */
    char *key;         /* "stem/key" */
};

struct slot {
    uint8_t *images;
    char **captions;
    char **keys;
    int done;
    int failed; /* a sample could not be replaced */
    struct pm_error err;
};

struct worker {
    struct loader *l;
    pthread_t thread;
    struct store *store;
    struct image_ctx *ctx;
    struct image img, out;
    struct bytebuf buf;
};

struct loader {
    struct loader_options o;
    int Bl;            /* local batch */
    char *location;    /* dataset store location */
    char **shard_urls; /* per shard */
    size_t nshards;
    struct sample_ref *samples;
    uint64_t n;
    struct view *view;      /* DATASET:VIEW, else NULL */
    uint8_t *shard_keep;    /* view: keep flag of each tar sample of the shard being scanned */
    uint64_t shard_keep_n;
    uint64_t start; /* global position of batch 0 (set by seek) */
    // pipeline
    pthread_mutex_t mu;
    pthread_cond_t cond_space, cond_ready;
    struct slot *slots;
    int nslots;
    struct worker *workers;
    int nworkers;
    bool started, stop;
    uint64_t next_item; /* next (batch, sample) work item */
    uint64_t released;  /* batches whose slots are free again */
    uint64_t handed;    /* batches handed out */
    uint64_t corrupt;
    double wait_s;
};

// ---------------------------------------------------------------------------------------
// order

static uint64_t mix64(uint64_t z)
{
    z += 0x9e3779b97f4a7c15ull;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

uint64_t loader_order_index(uint64_t seed, uint64_t epoch, uint64_t n, uint64_t offset)
{
    if (n <= 1)
        return 0;
    int bits = 64 - __builtin_clzll(n - 1);
    if (bits < 2)
        bits = 2;
    if (bits & 1)
        bits++;
    int half = bits / 2;
    uint64_t mask = (half == 64) ? ~0ull : ((1ull << half) - 1);
    uint64_t key = mix64(seed ^ mix64(epoch ^ 0x5eedull));
    uint64_t x = offset;
    do { // cycle walking: the Feistel network permutes [0, 2^bits); stay inside [0, n)
        uint64_t L = x >> half, R = x & mask;
        for (int r = 0; r < 4; r++) {
            uint64_t f = mix64(key + (uint64_t)r * 0x632be59bd9b4e019ull + R) & mask;
            uint64_t nl = R;
            R = L ^ f;
            L = nl;
        }
        x = (L << half) | R;
    } while (x >= n);
    return x;
}

// ---------------------------------------------------------------------------------------
// state

static void put64(unsigned char *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (unsigned char)(v >> (8 * i));
}

static uint64_t get64(const unsigned char *p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v |= (uint64_t)p[i] << (8 * i);
    return v;
}

void loader_state_encode(const struct loader_state *st, unsigned char *out)
{
    memset(out, 0, LOADER_STATE_BYTES);
    put64(out, STATE_MAGIC | ((uint64_t)STATE_VERSION << 32));
    put64(out + 8, st->seed);
    put64(out + 16, st->epoch);
    put64(out + 24, st->offset);
    put64(out + 32, st->nsamples);
    uint64_t x = 0;
    for (int i = 0; i < 5; i++)
        x = mix64(x ^ get64(out + 8 * i));
    put64(out + 40, x);
}

int loader_state_decode(const void *blob, size_t len, struct loader_state *st, struct pm_error *err)
{
    const unsigned char *p = blob;
    if (!blob || len != LOADER_STATE_BYTES)
        return pm_error_set(err, PM_ERR_FORMAT, "loader state: %zu bytes, expected %d", len,
                            LOADER_STATE_BYTES);
    if (get64(p) != (STATE_MAGIC | ((uint64_t)STATE_VERSION << 32)))
        return pm_error_set(err, PM_ERR_FORMAT, "loader state: bad magic or version");
    uint64_t x = 0;
    for (int i = 0; i < 5; i++)
        x = mix64(x ^ get64(p + 8 * i));
    if (x != get64(p + 40))
        return pm_error_set(err, PM_ERR_FORMAT, "loader state: bad check value");
    st->seed = get64(p + 8);
    st->epoch = get64(p + 16);
    st->offset = get64(p + 24);
    st->nsamples = get64(p + 32);
    if (st->nsamples == 0 || st->offset >= st->nsamples)
        return pm_error_set(err, PM_ERR_FORMAT, "loader state: offset %llu of %llu samples",
                            (unsigned long long)st->offset, (unsigned long long)st->nsamples);
    return PM_OK;
}

// ---------------------------------------------------------------------------------------
// NPY

int loader_parse_npy(const void *data, size_t len, const uint8_t **pixels, int *h, int *w, int *c,
                     struct pm_error *err)
{
    const unsigned char *p = data;
    if (len < 10 || memcmp(p, "\x93NUMPY", 6) != 0)
        return pm_error_set(err, PM_ERR_FORMAT, "npy: bad magic");
    size_t hlen, hoff;
    if (p[6] == 1) {
        hlen = (size_t)p[8] | ((size_t)p[9] << 8);
        hoff = 10;
    } else if (p[6] == 2 || p[6] == 3) {
        if (len < 12)
            return pm_error_set(err, PM_ERR_FORMAT, "npy: truncated header");
        hlen = (size_t)p[8] | ((size_t)p[9] << 8) | ((size_t)p[10] << 16) | ((size_t)p[11] << 24);
        hoff = 12;
    } else {
        return pm_error_set(err, PM_ERR_FORMAT, "npy: version %d", p[6]);
    }
    if (hlen > 65536 || hlen > len - hoff)
        return pm_error_set(err, PM_ERR_FORMAT, "npy: truncated header");
    char hdr[65537];
    memcpy(hdr, p + hoff, hlen);
    hdr[hlen] = 0;
    const char *d = strstr(hdr, "'descr'");
    if (!d || (!strstr(d, "'|u1'") && !strstr(d, "'<u1'")))
        return pm_error_set(err, PM_ERR_FORMAT, "npy: dtype is not uint8");
    const char *f = strstr(hdr, "'fortran_order'");
    if (!f || strncmp(f + strspn(f + 15, ": ") + 15, "False", 5) != 0)
        return pm_error_set(err, PM_ERR_FORMAT, "npy: not C order");
    const char *s = strstr(hdr, "'shape'");
    if (!s || !(s = strchr(s, '(')))
        return pm_error_set(err, PM_ERR_FORMAT, "npy: no shape");
    long dims[3] = {0, 0, 1};
    int nd = 0;
    s++;
    while (nd < 4) {
        while (*s == ' ')
            s++;
        if (*s == ')')
            break;
        char *e;
        long v = strtol(s, &e, 10);
        if (e == s || v <= 0 || v > 65535 || nd == 3)
            return pm_error_set(err, PM_ERR_FORMAT, "npy: bad shape");
        dims[nd++] = v;
        s = e;
        while (*s == ' ')
            s++;
        if (*s == ',')
            s++;
    }
    if (nd < 2 || (nd == 3 && dims[2] != 3))
        return pm_error_set(err, PM_ERR_FORMAT, "npy: shape must be (H, W, 3) or (H, W)");
    size_t need = (size_t)dims[0] * (size_t)dims[1] * (size_t)dims[2];
    if (need > len - hoff - hlen)
        return pm_error_set(err, PM_ERR_FORMAT, "npy: %zu data bytes, %zu needed",
                            len - hoff - hlen, need);
    *pixels = p + hoff + hlen;
    *h = (int)dims[0];
    *w = (int)dims[1];
    *c = (int)dims[2];
    return PM_OK;
}

// ---------------------------------------------------------------------------------------
// opening: the sample index

void loader_options_init(struct loader_options *o)
{
    memset(o, 0, sizeof *o);
    o->global_batch = 8;
    o->world = 1;
    o->threads = 2;
    o->prefetch = 2;
}

static int sink_append(void *ctx, const void *data, size_t n)
{
    return bytebuf_append(ctx, data, n) != PM_OK;
}

// The one place where a view's keep-bitmap drops samples. A view keeps only `success`
// rows, and a shard's tar holds exactly its success rows in sidecar order (what `verify`
// checks), so the k-th tar sample is the k-th success row of the sidecar.
static bool sample_kept(const struct loader *l, size_t shard, uint64_t index_in_shard)
{
    (void)shard;
    if (!l->view)
        return true;
    return index_in_shard < l->shard_keep_n && l->shard_keep[index_in_shard];
}

// For a view: the keep flag of each success row of shard si, from its bitmap and sidecar.
static int load_shard_keep(struct loader *l, struct store *st, size_t si, struct pm_error *err)
{
    struct view_bitmap bm;
    int rc = view_shard_keep(l->view, si, &bm, err);
    if (rc != PM_OK)
        return rc;
    char name[300], path[4096];
    snprintf(name, sizeof name, "%s.parquet", view_shard_name(l->view, si));
    const char *cols[] = {"status"};
    struct table_reader_options topt = {.format = "parquet", .columns = cols, .ncolumns = 1};
    struct table_reader *tr = NULL;
    struct table_batch batch = TABLE_BATCH_INIT;
    bool temp = false; // the sidecar through the store (a local copy on S3)
    rc = store_local_path(st, name, path, sizeof path, &temp, err);
    if (rc == PM_OK)
        rc = table_reader_open(&tr, path, &topt, err);
    if (temp)
        unlink(path); // the reader keeps it open
    if (rc == PM_OK)
        rc = table_reader_batch_init(tr, &batch);
    free(l->shard_keep);
    l->shard_keep = NULL;
    l->shard_keep_n = 0;
    uint64_t row = 0;
    while (rc == PM_OK) {
        rc = table_reader_next(tr, &batch, err);
        if (rc != PM_OK || batch.nrows == 0)
            break;
        uint8_t *grown = realloc(l->shard_keep, l->shard_keep_n + batch.nrows);
        if (!grown) {
            rc = pm_error_set(err, PM_ERR_NOMEM, "out of memory");
            break;
        }
        l->shard_keep = grown;
        for (size_t i = 0; i < batch.nrows; i++, row++) {
            size_t n;
            const char *st = column_string(&batch.cols[0], i, &n);
            if (batch.cols[0].valid[i] && n == 7 && !memcmp(st, "success", 7))
                l->shard_keep[l->shard_keep_n++] = row < bm.rows && view_bitmap_get(&bm, row);
        }
    }
    if (rc == PM_OK && row != bm.rows)
        rc = pm_error_set(err, PM_ERR_FORMAT, "%s: %llu rows, the view's bitmap has %llu", path,
                          (unsigned long long)row, (unsigned long long)bm.rows);
    table_batch_release(&batch);
    table_reader_free(tr);
    view_bitmap_release(&bm);
    return rc;
}

static int read_index(struct loader *l, struct store *st, struct dataset_index *x,
                      struct pm_error *err)
{
    struct bytebuf b;
    bytebuf_init(&b, DATASET_INDEX_MAX_BYTES);
    int rc = store_read_all(st, DATASET_INDEX_FILE, &b, err);
    if (rc != PM_OK) {
        bytebuf_release(&b);
        return rc;
    }
    char tmp[] = "/tmp/pixelmill-dataset-XXXXXX";
    int fd = mkstemp(tmp);
    if (fd < 0) {
        bytebuf_release(&b);
        return pm_error_set(err, PM_ERR_IO, "cannot create a temporary file");
    }
    size_t blen = b.len;
    ssize_t wr = write(fd, b.data, blen);
    close(fd);
    bytebuf_release(&b);
    if (wr < 0 || (size_t)wr != blen) {
        unlink(tmp);
        return pm_error_set(err, PM_ERR_IO, "cannot write a temporary file");
    }
    rc = dataset_index_read(x, tmp, err);
    unlink(tmp);
    if (rc != PM_OK)
        pm_error_prefix(err, "%s/%s", l->location, DATASET_INDEX_FILE);
    return rc;
}

static int scan_shard(struct loader *l, struct store *st, size_t si, struct bytebuf *b, size_t *cap,
                      struct pm_error *err)
{
    const char *url = l->shard_urls[si];
    bytebuf_clear(b);
    int rc = store_read_all(st, url, b, err);
    if (rc != PM_OK)
        return rc;
    struct tar_reader *r = NULL;
    rc = tar_reader_open_memory(b->data, b->len, url, NULL, &r, err);
    if (rc != PM_OK)
        return rc;
    size_t stem_len = strlen(url);
    if (stem_len > 4 && !strcmp(url + stem_len - 4, ".tar"))
        stem_len -= 4;
    uint64_t in_shard = 0;
    uint64_t first = l->n;
    for (;;) {
        struct tar_sample s;
        rc = tar_reader_next(r, &s, err);
        if (rc == PM_ERR_NOT_FOUND) {
            rc = PM_OK;
            break;
        }
        if (rc != PM_OK)
            break;
        if (!sample_kept(l, si, in_shard++))
            continue;
        if (l->n == *cap) {
            size_t nc = *cap ? *cap * 2 : 1024;
            struct sample_ref *ns = realloc(l->samples, nc * sizeof *ns);
            if (!ns) {
                rc = pm_error_set(err, PM_ERR_NOMEM, "out of memory");
                break;
            }
            l->samples = ns;
            *cap = nc;
        }
        struct sample_ref *ref = &l->samples[l->n];
        ref->shard = (uint32_t)si;
        ref->off = s.offset;
        ref->end = b->len;
        size_t kl = strlen(s.key);
        ref->key = malloc(stem_len + 1 + kl + 1);
        if (!ref->key) {
            rc = pm_error_set(err, PM_ERR_NOMEM, "out of memory");
            break;
        }
        memcpy(ref->key, url, stem_len);
        ref->key[stem_len] = '/';
        memcpy(ref->key + stem_len + 1, s.key, kl + 1);
        if (l->n > first)
            l->samples[l->n - 1].end = s.offset;
        l->n++;
    }
    tar_reader_free(r);
    return rc;
}

static void *worker_main(void *arg);

int loader_open(const struct loader_options *o, struct loader **out, struct pm_error *err)
{
    *out = NULL;
    if (!o->data || o->image_size <= 0 || o->global_batch <= 0 || o->world <= 0 || o->rank < 0 ||
        o->rank >= o->world || o->global_batch % o->world != 0 || o->threads < 1 || o->prefetch < 1)
        return pm_error_set(err, PM_ERR_USAGE,
                            "loader: bad options (the rank count must divide the batch size)");
    struct loader *l = calloc(1, sizeof *l);
    if (!l)
        return pm_error_set(err, PM_ERR_NOMEM, "out of memory");
    l->o = *o;
    l->Bl = o->global_batch / o->world;
    l->location = strdup(o->data);
    if (!l->location) {
        free(l);
        return pm_error_set(err, PM_ERR_NOMEM, "out of memory");
    }
    // DATASET:VIEW (either backend: the view is read through the dataset's store)
    const char *vname = view_spec_split(l->location);
    pthread_mutex_init(&l->mu, NULL);
    pthread_cond_init(&l->cond_space, NULL);
    pthread_cond_init(&l->cond_ready, NULL);
    l->nworkers = 0;

    struct store *st = NULL;
    struct dataset_index x;
    memset(&x, 0, sizeof x);
    int rc = store_open(l->location, NULL, &st, err);
    if (rc == PM_OK && vname)
        rc = view_open_store(&l->view, st, vname, err);
    if (rc == PM_OK)
        rc = read_index(l, st, &x, err);
    if (rc == PM_OK) {
        l->nshards = x.nshards;
        l->shard_urls = calloc(x.nshards ? x.nshards : 1, sizeof *l->shard_urls);
        if (!l->shard_urls)
            rc = pm_error_set(err, PM_ERR_NOMEM, "out of memory");
        for (size_t i = 0; rc == PM_OK && i < x.nshards; i++)
            if (!(l->shard_urls[i] = strdup(x.shards[i].url)))
                rc = pm_error_set(err, PM_ERR_NOMEM, "out of memory");
    }
    struct bytebuf b;
    bytebuf_init(&b, (size_t)16 << 30);
    size_t cap = 0;
    if (rc == PM_OK && l->view && view_num_shards(l->view) != l->nshards)
        rc = pm_error_set(err, PM_ERR_FORMAT, "%s: the view lists %zu shards, the dataset %zu",
                          o->data, view_num_shards(l->view), l->nshards);
    for (size_t i = 0; rc == PM_OK && i < l->nshards; i++) {
        if (l->view)
            rc = load_shard_keep(l, st, i, err);
        if (rc == PM_OK)
            rc = scan_shard(l, st, i, &b, &cap, err);
    }
    bytebuf_release(&b);
    dataset_index_release(&x);
    view_free(l->view); // it borrows st; the keep flags are in the sample list now
    l->view = NULL;
    store_free(st);
    if (rc == PM_OK && l->n == 0)
        rc = pm_error_set(err, PM_ERR_USAGE, "%s: the dataset has no samples", o->data);
    if (rc == PM_OK) {
        l->nslots = o->prefetch + 1;
        l->slots = calloc((size_t)l->nslots, sizeof *l->slots);
        if (!l->slots)
            rc = pm_error_set(err, PM_ERR_NOMEM, "out of memory");
        size_t img_bytes = (size_t)o->image_size * o->image_size * 3;
        for (int i = 0; rc == PM_OK && i < l->nslots; i++) {
            struct slot *s = &l->slots[i];
            s->images = calloc((size_t)l->Bl, img_bytes);
            s->captions = calloc((size_t)l->Bl, sizeof(char *));
            s->keys = calloc((size_t)l->Bl, sizeof(char *));
            if (!s->images || !s->captions || !s->keys)
                rc = pm_error_set(err, PM_ERR_NOMEM, "out of memory");
        }
    }
    if (rc != PM_OK) {
        loader_free(l);
        return rc;
    }
    *out = l;
    return PM_OK;
}

static void stop_workers(struct loader *l)
{
    if (!l->started)
        return;
    pthread_mutex_lock(&l->mu);
    l->stop = true;
    pthread_cond_broadcast(&l->cond_space);
    pthread_mutex_unlock(&l->mu);
    for (int i = 0; i < l->nworkers; i++) {
        struct worker *w = &l->workers[i];
        pthread_join(w->thread, NULL);
        store_free(w->store);
        image_ctx_free(w->ctx);
        image_release(&w->img);
        image_release(&w->out);
        bytebuf_release(&w->buf);
    }
    free(l->workers);
    l->workers = NULL;
    l->nworkers = 0;
    l->started = false;
}

void loader_free(struct loader *l)
{
    if (!l)
        return;
    stop_workers(l);
    view_free(l->view);
    free(l->shard_keep);
    for (int i = 0; l->slots && i < l->nslots; i++) {
        for (int j = 0; j < l->Bl; j++)
            free(l->slots[i].captions ? l->slots[i].captions[j] : NULL);
        free(l->slots[i].images);
        free(l->slots[i].captions);
        free(l->slots[i].keys);
    }
    free(l->slots);
    for (uint64_t i = 0; i < l->n; i++)
        free(l->samples[i].key);
    free(l->samples);
    for (size_t i = 0; l->shard_urls && i < l->nshards; i++)
        free(l->shard_urls[i]);
    free(l->shard_urls);
    free(l->location);
    pthread_mutex_destroy(&l->mu);
    pthread_cond_destroy(&l->cond_space);
    pthread_cond_destroy(&l->cond_ready);
    free(l);
}

uint64_t loader_num_samples(const struct loader *l)
{
    return l->n;
}

int loader_seek(struct loader *l, const struct loader_state *st, struct pm_error *err)
{
    if (l->started)
        return pm_error_set(err, PM_ERR_USAGE, "loader_seek after the first batch");
    if (st->seed != l->o.seed)
        return pm_error_set(err, PM_ERR_USAGE,
                            "the checkpoint's data order seed %llu differs from --seed %llu",
                            (unsigned long long)st->seed, (unsigned long long)l->o.seed);
    if (st->nsamples != l->n)
        return pm_error_set(err, PM_ERR_USAGE,
                            "the checkpoint was trained on %llu samples, the dataset has %llu",
                            (unsigned long long)st->nsamples, (unsigned long long)l->n);
    l->start = st->epoch * l->n + st->offset;
    return PM_OK;
}

void loader_get_state(const struct loader *l, struct loader_state *st)
{
    uint64_t pos = l->start + l->handed * (uint64_t)l->o.global_batch;
    st->seed = l->o.seed;
    st->nsamples = l->n;
    st->epoch = pos / l->n;
    st->offset = pos % l->n;
}

void loader_get_stats(const struct loader *l, struct loader_stats *s)
{
    pthread_mutex_lock((pthread_mutex_t *)&l->mu);
    s->corrupt = l->corrupt;
    s->wait_s = l->wait_s;
    s->batches = l->handed;
    pthread_mutex_unlock((pthread_mutex_t *)&l->mu);
}

// ---------------------------------------------------------------------------------------
// reading one sample

static int read_sample(struct worker *w, uint64_t idx, uint8_t *dst, char **caption,
                       struct pm_error *err)
{
    struct loader *l = w->l;
    const struct sample_ref *ref = &l->samples[idx];
    const char *url = l->shard_urls[ref->shard];
    bytebuf_clear(&w->buf);
    uint64_t got = 0;
    int rc =
        store_read(w->store, url, ref->off, ref->end - ref->off, sink_append, &w->buf, &got, err);
    if (rc != PM_OK)
        return rc;
    if (got != ref->end - ref->off)
        return pm_error_set(err, PM_ERR_FORMAT, "%s: sample %s truncated", url, ref->key);
    static const char zeros[TAR_PAD];
    if (bytebuf_append(&w->buf, zeros, sizeof zeros) != PM_OK)
        return pm_error_set(err, PM_ERR_NOMEM, "out of memory");
    struct tar_reader *r = NULL;
    rc = tar_reader_open_memory(w->buf.data, w->buf.len, url, NULL, &r, err);
    if (rc != PM_OK)
        return rc;
    struct tar_sample s;
    rc = tar_reader_next(r, &s, err);
    if (rc == PM_ERR_NOT_FOUND)
        rc = pm_error_set(err, PM_ERR_FORMAT, "%s: sample %s vanished", url, ref->key);
    const struct tar_field *img = NULL, *npy = NULL, *txt = NULL;
    for (size_t i = 0; rc == PM_OK && i < s.nfields; i++) {
        const char *n = s.fields[i].name;
        if (!strcmp(n, "jpg") || !strcmp(n, "jpeg") || !strcmp(n, "png") || !strcmp(n, "webp"))
            img = &s.fields[i];
        else if (!strcmp(n, "npy"))
            npy = &s.fields[i];
        else if (!strcmp(n, "txt"))
            txt = &s.fields[i];
    }
    int S = l->o.image_size;
    if (rc == PM_OK && !img && !npy)
        rc = pm_error_set(err, PM_ERR_FORMAT, "%s: sample %s has no image", url, ref->key);
    if (rc == PM_OK && npy) {
        const uint8_t *px;
        int h, wd, c;
        rc = loader_parse_npy(npy->data, npy->size, &px, &h, &wd, &c, err);
        if (rc == PM_OK)
            rc = image_reserve(&w->img, wd, h);
        if (rc == PM_OK) {
            for (size_t i = 0; i < (size_t)h * wd; i++)
                for (int k = 0; k < 3; k++)
                    w->img.pixels[3 * i + k] = px[i * c + (c == 3 ? k : 0)];
        }
    } else if (rc == PM_OK) {
        struct image_resize_params rp = {IMAGE_RESIZE_CENTER_CROP, S, false};
        struct image_decode_opts dopts = IMAGE_DECODE_OPTS_INIT;
        dopts.resize = &rp;
        rc = image_decode(w->ctx, img->data, img->size, &dopts, &w->img, NULL, err);
    }
    struct image_geometry g;
    if (rc == PM_OK) {
        struct image_resize_params rp = {IMAGE_RESIZE_CENTER_CROP, S, false};
        // The decoder may have reduced the image; the geometry is of the original size,
        // but centre crop of the reduced image to S gives the same framing.
        if (image_geometry_compute(&rp, w->img.width, w->img.height, &g) != PM_OK)
            rc = pm_error_set(err, PM_ERR_FORMAT, "%s: bad image size", ref->key);
    }
    if (rc == PM_OK)
        rc = image_resize(w->ctx, &w->img, &g, &w->out, err);
    if (rc == PM_OK && (w->out.width != S || w->out.height != S))
        rc = pm_error_set(err, PM_ERR_INTERNAL, "%s: resized to %dx%d", ref->key, w->out.width,
                          w->out.height);
    if (rc == PM_OK) {
        memcpy(dst, w->out.pixels, (size_t)S * S * 3);
        size_t n = txt ? strnlen((const char *)txt->data, txt->size) : 0;
        char *c = realloc(*caption, n + 1);
        if (!c) {
            rc = pm_error_set(err, PM_ERR_NOMEM, "out of memory");
        } else {
            if (n)
                memcpy(c, txt->data, n);
            c[n] = 0;
            *caption = c;
        }
    }
    tar_reader_free(r);
    if (rc != PM_OK)
        pm_error_prefix(err, "sample %s", ref->key);
    return rc;
}

// ---------------------------------------------------------------------------------------
// the pipeline

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    struct loader *l = w->l;
    const size_t img_bytes = (size_t)l->o.image_size * l->o.image_size * 3;
    pthread_mutex_lock(&l->mu);
    for (;;) {
        if (l->stop)
            break;
        uint64_t kb = l->next_item / (uint64_t)l->Bl;
        if (kb >= l->released + (uint64_t)l->nslots) {
            pthread_cond_wait(&l->cond_space, &l->mu);
            continue;
        }
        uint64_t item = l->next_item++;
        pthread_mutex_unlock(&l->mu);

        int j = (int)(item % (uint64_t)l->Bl);
        struct slot *s = &l->slots[kb % (uint64_t)l->nslots];
        uint64_t pos = l->start + kb * (uint64_t)l->o.global_batch +
                       (uint64_t)l->o.rank * (uint64_t)l->Bl + (uint64_t)j;
        struct pm_error e = PM_ERROR_INIT;
        int rc = PM_ERR_INTERNAL;
        uint64_t bad = 0;
        for (int attempt = 0; attempt <= LOADER_MAX_REPLACE; attempt++) {
            uint64_t p = pos + (uint64_t)attempt;
            uint64_t idx = loader_order_index(l->o.seed, p / l->n, l->n, p % l->n);
            rc = read_sample(w, idx, s->images + (size_t)j * img_bytes, &s->captions[j], &e);
            if (rc == PM_OK) {
                s->keys[j] = l->samples[idx].key;
                break;
            }
            if (rc == PM_ERR_NOMEM)
                break;
            bad++;
        }
        pthread_mutex_lock(&l->mu);
        l->corrupt += bad;
        if (rc != PM_OK && !s->failed) {
            s->failed = 1;
            s->err = e;
        }
        if (++s->done == l->Bl)
            pthread_cond_broadcast(&l->cond_ready);
    }
    pthread_mutex_unlock(&l->mu);
    return NULL;
}

static int start_workers(struct loader *l, struct pm_error *err)
{
    l->workers = calloc((size_t)l->o.threads, sizeof *l->workers);
    if (!l->workers)
        return pm_error_set(err, PM_ERR_NOMEM, "out of memory");
    l->stop = false;
    l->started = true;
    for (int i = 0; i < l->o.threads; i++) {
        struct worker *w = &l->workers[i];
        w->l = l;
        image_init(&w->img);
        image_init(&w->out);
        bytebuf_init(&w->buf, (size_t)1 << 30);
        int rc = store_open(l->location, NULL, &w->store, err);
        if (rc == PM_OK && !(w->ctx = image_ctx_create()))
            rc = pm_error_set(err, PM_ERR_NOMEM, "out of memory");
        if (rc == PM_OK && pthread_create(&w->thread, NULL, worker_main, w) != 0)
            rc = pm_error_set(err, PM_ERR_NOMEM, "cannot start a loader thread");
        if (rc != PM_OK) {
            store_free(w->store);
            image_ctx_free(w->ctx);
            bytebuf_release(&w->buf);
            stop_workers(l);
            return rc;
        }
        l->nworkers++;
    }
    return PM_OK;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

int loader_next(struct loader *l, struct loader_batch *b, struct pm_error *err)
{
    double t0 = now_s();
    if (!l->started) {
        int rc = start_workers(l, err);
        if (rc != PM_OK)
            return rc;
    }
    uint64_t k = l->handed;
    struct slot *s = &l->slots[k % (uint64_t)l->nslots];
    pthread_mutex_lock(&l->mu);
    if (k > 0) { // the previous batch's slot is free again
        struct slot *prev = &l->slots[(k - 1) % (uint64_t)l->nslots];
        prev->done = 0;
        prev->failed = 0;
        l->released = k;
        pthread_cond_broadcast(&l->cond_space);
    }
    while (s->done < l->Bl)
        pthread_cond_wait(&l->cond_ready, &l->mu);
    int failed = s->failed;
    if (failed && err)
        *err = s->err;
    l->wait_s += now_s() - t0;
    pthread_mutex_unlock(&l->mu);
    if (failed)
        return err ? err->code : PM_ERR_FORMAT;
    b->B = l->Bl;
    b->images = s->images;
    b->captions = (const char *const *)s->captions;
    b->keys = (const char *const *)s->keys;
    b->first_index = (uint64_t)l->o.rank * (uint64_t)l->Bl;
    b->position = l->start + k * (uint64_t)l->o.global_batch;
    l->handed = k + 1;
    return PM_OK;
}
