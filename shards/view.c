/*
 * view — keep-bitmaps and view.json (format in view.h and docs/internals/views.md).
 */
#include "view.h"

#include "atomic_file.h"
#include "dataset_index.h"
#include "json_file.h"
#include "store.h"

#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

int view_bitmap_init(struct view_bitmap *b, uint64_t rows)
{
    b->rows = 0;
    b->kept = 0;
    b->bits = NULL;
    if (rows > VIEW_BITMAP_MAX_ROWS)
        return PM_ERR_LIMIT;
    size_t n = (size_t)((rows + 7) / 8);
    b->bits = calloc(n ? n : 1, 1);
    if (!b->bits)
        return PM_ERR_NOMEM;
    b->rows = rows;
    return PM_OK;
}

void view_bitmap_release(struct view_bitmap *b)
{
    if (!b)
        return;
    free(b->bits);
    b->bits = NULL;
    b->rows = b->kept = 0;
}

void view_bitmap_set(struct view_bitmap *b, uint64_t row)
{
    uint8_t m = (uint8_t)(1u << (row & 7));
    if (!(b->bits[row >> 3] & m)) {
        b->bits[row >> 3] |= m;
        b->kept++;
    }
}

static void put_u32(unsigned char *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (unsigned char)(v >> (8 * i));
}

static void put_u64(unsigned char *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (unsigned char)(v >> (8 * i));
}

static uint32_t get_u32(const unsigned char *p)
{
    uint32_t v = 0;
    for (int i = 3; i >= 0; i--)
        v = (v << 8) | p[i];
    return v;
}

static uint64_t get_u64(const unsigned char *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = (v << 8) | p[i];
    return v;
}

// The bitmap file's bytes (malloc'ed, *n bytes); NULL when out of memory.
static unsigned char *bitmap_encode(const struct view_bitmap *b, size_t *n)
{
    size_t nb = (size_t)((b->rows + 7) / 8);
    unsigned char *h = calloc(1, VIEW_BITMAP_HEADER_BYTES + nb);
    if (!h)
        return NULL;
    memcpy(h, VIEW_BITMAP_MAGIC, 8); // includes the NUL
    put_u32(h + 8, VIEW_BITMAP_VERSION);
    put_u64(h + 16, b->rows);
    put_u64(h + 24, b->kept);
    if (nb)
        memcpy(h + VIEW_BITMAP_HEADER_BYTES, b->bits, nb);
    *n = VIEW_BITMAP_HEADER_BYTES + nb;
    return h;
}

int view_bitmap_write(const struct view_bitmap *b, const char *path, struct pm_error *err)
{
    size_t n;
    unsigned char *data = bitmap_encode(b, &n);
    if (!data)
        return pm_error_set(err, PM_ERR_NOMEM, "view bitmap '%s': out of memory", path);
    int rc = atomic_file_write_all(path, data, n, err);
    free(data);
    return rc;
}

int view_bitmap_write_store(const struct view_bitmap *b, struct store *s, const char *name,
                            struct pm_error *err)
{
    size_t n;
    unsigned char *data = bitmap_encode(b, &n);
    if (!data)
        return pm_error_set(err, PM_ERR_NOMEM, "view bitmap '%s/%s': out of memory",
                            store_location(s), name);
    int rc = store_write_all(s, name, data, n, err);
    free(data);
    return rc;
}

int view_bitmap_read_store(struct view_bitmap *b, struct store *s, const char *name,
                           struct pm_error *err)
{
    b->rows = b->kept = 0;
    b->bits = NULL;
    struct bytebuf buf;
    // header + the largest bitmap allowed + 1 (so an oversize file is caught by parse)
    bytebuf_init(&buf, VIEW_BITMAP_HEADER_BYTES + (size_t)(VIEW_BITMAP_MAX_ROWS / 8) + 1);
    int rc = store_read_all(s, name, &buf, err);
    if (rc == PM_OK) {
        char what[4200];
        snprintf(what, sizeof what, "%s/%s", store_location(s), name);
        rc = view_bitmap_parse(b, buf.data ? buf.data : "", buf.len, what, err);
    }
    bytebuf_release(&buf);
    return rc;
}

int view_bitmap_parse(struct view_bitmap *b, const void *data, size_t size, const char *name,
                      struct pm_error *err)
{
    const unsigned char *h = data;
    b->rows = b->kept = 0;
    b->bits = NULL;
    if (size < VIEW_BITMAP_HEADER_BYTES)
        return pm_error_set(err, PM_ERR_FORMAT, "view bitmap '%s': shorter than its header", name);
    if (memcmp(h, VIEW_BITMAP_MAGIC, 8) != 0)
        return pm_error_set(err, PM_ERR_FORMAT, "view bitmap '%s': bad magic (not a keep-bitmap)",
                            name);
    uint32_t version = get_u32(h + 8);
    if (version != VIEW_BITMAP_VERSION || get_u32(h + 12) != 0)
        return pm_error_set(err, PM_ERR_FORMAT,
                            "view bitmap '%s': version %u not supported (expected %u)", name,
                            version, VIEW_BITMAP_VERSION);
    uint64_t rows = get_u64(h + 16), kept = get_u64(h + 24);
    if (rows > VIEW_BITMAP_MAX_ROWS || kept > rows)
        return pm_error_set(err, PM_ERR_FORMAT, "view bitmap '%s': rows %llu / kept %llu invalid",
                            name, (unsigned long long)rows, (unsigned long long)kept);
    size_t n = (size_t)((rows + 7) / 8);
    if (size - VIEW_BITMAP_HEADER_BYTES != n)
        return pm_error_set(err, PM_ERR_FORMAT,
                            "view bitmap '%s': %zu bytes do not match %llu rows (truncated or "
                            "trailing bytes)",
                            name, size, (unsigned long long)rows);
    const unsigned char *bits = h + VIEW_BITMAP_HEADER_BYTES;
    if (rows % 8 && (bits[n - 1] >> (rows % 8)))
        return pm_error_set(err, PM_ERR_FORMAT, "view bitmap '%s': padding bits set", name);
    uint64_t count = 0;
    for (size_t i = 0; i < n; i++)
        count += (uint64_t)__builtin_popcount(bits[i]);
    if (count != kept)
        return pm_error_set(err, PM_ERR_FORMAT,
                            "view bitmap '%s': %llu bits set but header says kept %llu", name,
                            (unsigned long long)count, (unsigned long long)kept);
    if (view_bitmap_init(b, rows) != PM_OK)
        return pm_error_set(err, PM_ERR_NOMEM, "view bitmap '%s': out of memory", name);
    if (n)
        memcpy(b->bits, bits, n);
    b->kept = kept;
    return PM_OK;
}

int view_bitmap_read(struct view_bitmap *b, const char *path, struct pm_error *err)
{
    b->rows = b->kept = 0;
    b->bits = NULL;
    FILE *fp = fopen(path, "rb");
    if (!fp)
        return pm_error_set(err, errno == ENOENT ? PM_ERR_NOT_FOUND : PM_ERR_IO,
                            "cannot open view bitmap '%s': %s", path, strerror(errno));
    // Size bound from the header before reading everything.
    unsigned char h[VIEW_BITMAP_HEADER_BYTES];
    size_t got = fread(h, 1, sizeof h, fp);
    uint64_t rows = got == sizeof h ? get_u64(h + 16) : 0;
    if (rows > VIEW_BITMAP_MAX_ROWS)
        rows = 0;                                                          // parse reports it
    size_t want = VIEW_BITMAP_HEADER_BYTES + (size_t)((rows + 7) / 8) + 1; // +1: detect extra
    unsigned char *buf = malloc(want);
    int rc = PM_OK;
    if (!buf) {
        fclose(fp);
        return pm_error_set(err, PM_ERR_NOMEM, "view bitmap '%s': out of memory", path);
    }
    memcpy(buf, h, got);
    size_t size = got;
    if (got == sizeof h)
        size += fread(buf + got, 1, want - got, fp);
    if (ferror(fp))
        rc = pm_error_set(err, PM_ERR_IO, "cannot read view bitmap '%s'", path);
    fclose(fp);
    if (rc == PM_OK)
        rc = view_bitmap_parse(b, buf, size, path, err);
    free(buf);
    return rc;
}

char *view_spec_split(char *spec)
{
    bool s3 = strncmp(spec, "s3://", 5) == 0;
    char *body = s3 ? spec + 5 : spec;
    char *slash = strrchr(body, '/');
    char *colon = strrchr(slash ? slash : body, ':');
    struct stat st;
    if (!colon || !colon[1] || (!s3 && stat(spec, &st) == 0))
        return NULL;
    *colon = '\0';
    return colon + 1;
}

bool view_name_check(const char *name)
{
    size_t n = strlen(name);
    if (n == 0 || n > 64 || name[0] == '.')
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = name[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '_' || c == '.' || c == '-'))
            return false;
    }
    return true;
}

int view_path(char *buf, size_t size, const char *dataset, const char *name, const char *suffix,
              struct pm_error *err)
{
    if (!view_name_check(name))
        return pm_error_set(err, PM_ERR_USAGE,
                            "invalid view name '%s' (1-64 characters from A-Z a-z 0-9 _ . -)",
                            name);
    int n = snprintf(buf, size, "%s%s%s/%s%s", dataset ? dataset : "", dataset ? "/" : "",
                     VIEW_DIR, name, suffix ? suffix : "");
    if (n < 0 || (size_t)n >= size)
        return pm_error_set(err, PM_ERR_LIMIT, "view path too long for dataset '%s'", dataset);
    return PM_OK;
}

struct view_shard {
    char *name;
    uint64_t rows, kept;
};

struct view {
    char *dir;            // DATASET/_views/NAME, for messages
    char *rel;            // _views/NAME, relative to the store
    struct store *store;  // borrowed (view_open_store) or owned (view_open)
    bool own_store;
    struct view_shard *shards;
    size_t nshards;
    uint64_t kept;
};

void view_free(struct view *v)
{
    if (!v)
        return;
    for (size_t i = 0; i < v->nshards; i++)
        free(v->shards[i].name);
    free(v->shards);
    free(v->dir);
    free(v->rel);
    if (v->own_store)
        store_free(v->store);
    free(v);
}

static int json_count(json_t *o, const char *key, uint64_t *out)
{
    json_t *x = json_object_get(o, key);
    if (!json_is_integer(x) || json_integer_value(x) < 0)
        return -1;
    *out = (uint64_t)json_integer_value(x);
    return 0;
}

int view_open_store(struct view **out, struct store *st, const char *name, struct pm_error *err)
{
    *out = NULL;
    const char *dataset = store_location(st);
    char path[4096], rel[256];
    int rc = view_path(path, sizeof path, dataset, name, "/" VIEW_INDEX_FILE, err);
    if (rc == PM_OK)
        rc = view_path(rel, sizeof rel, NULL, name, NULL, err);
    if (rc != PM_OK)
        return rc;
    char iname[300];
    snprintf(iname, sizeof iname, "%s/%s", rel, VIEW_INDEX_FILE);
    json_t *doc = NULL;
    rc = json_file_read_store(st, iname, VIEW_INDEX_MAX_BYTES, &doc, err);
    if (rc == PM_ERR_NOT_FOUND)
        return pm_error_set(err, rc,
                            "view '%s' not found in dataset '%s' (it does not exist or is "
                            "not complete: no %s)",
                            name, dataset, path);
    if (rc != PM_OK)
        return rc;
    struct dataset_index idx;
    rc = dataset_index_read_store(&idx, st, err);
    if (rc != PM_OK) {
        dataset_index_release(&idx);
        json_decref(doc);
        return rc;
    }
    struct view *v = calloc(1, sizeof *v);
    json_t *ver = json_object_get(doc, "view_version");
    json_t *shards = json_object_get(doc, "shards");
    if (!v) {
        rc = pm_error_set(err, PM_ERR_NOMEM, "view '%s': out of memory", path);
        goto fail;
    }
    if (!json_is_integer(ver) || json_integer_value(ver) != 1 || !json_is_array(shards)) {
        rc = pm_error_set(err, PM_ERR_FORMAT,
                          "view '%s': not a view index (view_version 1 and shards expected)", path);
        goto fail;
    }
    size_t n = json_array_size(shards);
    if (n != idx.nshards) {
        rc = pm_error_set(err, PM_ERR_FORMAT,
                          "view '%s' is stale: it has %zu shards, the dataset now %zu; "
                          "run pixelmill filter again",
                          path, n, idx.nshards);
        goto fail;
    }
    v->dir = malloc(strlen(path) + 1);
    v->rel = strdup(rel);
    v->store = st;
    v->shards = calloc(n ? n : 1, sizeof *v->shards);
    if (!v->dir || !v->rel || !v->shards) {
        rc = pm_error_set(err, PM_ERR_NOMEM, "view '%s': out of memory", path);
        goto fail;
    }
    view_path(v->dir, strlen(path) + 1, dataset, name, NULL, err);
    for (size_t i = 0; i < n; i++) {
        json_t *s = json_array_get(shards, i);
        json_t *nm = json_object_get(s, "name");
        json_t *xx = json_object_get(s, "xxh3");
        struct view_shard *vs = &v->shards[i];
        if (!json_is_string(nm) || !view_name_check(json_string_value(nm)) || !json_is_string(xx) ||
            json_count(s, "rows", &vs->rows) || json_count(s, "kept", &vs->kept) ||
            vs->kept > vs->rows) {
            rc = pm_error_set(err, PM_ERR_FORMAT, "view '%s': shard entry %zu malformed", path, i);
            goto fail;
        }
        const char *url = idx.shards[i].url;
        size_t nl = strlen(json_string_value(nm));
        if (strncmp(url, json_string_value(nm), nl) != 0 || strcmp(url + nl, ".tar") != 0 ||
            strcmp(idx.shards[i].xxh3, json_string_value(xx)) != 0 ||
            idx.shards[i].rows != vs->rows) {
            rc = pm_error_set(err, PM_ERR_FORMAT,
                              "view '%s' is stale: shard %zu ('%s') differs from dataset.json "
                              "(rewritten since the view was made); run pixelmill filter again",
                              path, i, url);
            goto fail;
        }
        vs->name = strdup(json_string_value(nm));
        if (!vs->name) {
            rc = pm_error_set(err, PM_ERR_NOMEM, "view '%s': out of memory", path);
            goto fail;
        }
        v->nshards = i + 1;
        v->kept += vs->kept;
    }
    v->nshards = n;
    dataset_index_release(&idx);
    json_decref(doc);
    *out = v;
    return PM_OK;
fail:
    dataset_index_release(&idx);
    json_decref(doc);
    view_free(v);
    return rc;
}

int view_open(struct view **out, const char *dataset, const char *name, struct pm_error *err)
{
    *out = NULL;
    struct stat stt;
    if (strncmp(dataset, "s3://", 5) != 0 && (stat(dataset, &stt) != 0 || !S_ISDIR(stt.st_mode)))
        return pm_error_set(err, PM_ERR_NOT_FOUND, "dataset '%s' is not a directory", dataset);
    struct store *st = NULL;
    int rc = store_open(dataset, NULL, &st, err);
    if (rc == PM_OK)
        rc = view_open_store(out, st, name, err);
    if (rc != PM_OK) {
        store_free(st);
        return rc;
    }
    (*out)->own_store = true;
    return PM_OK;
}

size_t view_num_shards(const struct view *v)
{
    return v->nshards;
}

const char *view_shard_name(const struct view *v, size_t i)
{
    return v->shards[i].name;
}

uint64_t view_shard_rows(const struct view *v, size_t i)
{
    return v->shards[i].rows;
}

uint64_t view_shard_kept(const struct view *v, size_t i)
{
    return v->shards[i].kept;
}

uint64_t view_total_kept(const struct view *v)
{
    return v->kept;
}

int view_shard_keep(const struct view *v, size_t i, struct view_bitmap *b, struct pm_error *err)
{
    b->rows = b->kept = 0;
    b->bits = NULL;
    if (i >= v->nshards)
        return pm_error_set(err, PM_ERR_USAGE, "view '%s': no shard %zu", v->dir, i);
    char path[4096];
    int n = snprintf(path, sizeof path, "%s/%s.keep", v->rel, v->shards[i].name);
    if (n < 0 || (size_t)n >= sizeof path)
        return pm_error_set(err, PM_ERR_LIMIT, "view '%s': path too long", v->dir);
    int rc = view_bitmap_read_store(b, v->store, path, err);
    if (rc != PM_OK)
        return rc;
    if (b->rows != v->shards[i].rows || b->kept != v->shards[i].kept) {
        view_bitmap_release(b);
        return pm_error_set(err, PM_ERR_FORMAT,
                            "view bitmap '%s' does not match view.json (rows or kept differ)",
                            path);
    }
    return PM_OK;
}

const char *const dedupe_method_names[DEDUPE_BY_COUNT] = {"url", "content", "phash"};

int dedupe_method_list_parse(const char *list, const char *option, int *methods, size_t *n,
                             struct pm_error *err)
{
    size_t count = *n;
    const char *p = list;
    while (*p) {
        size_t len = strcspn(p, ",");
        int m = -1;
        for (int i = 0; i < DEDUPE_BY_COUNT; i++)
            if (strlen(dedupe_method_names[i]) == len && !strncmp(p, dedupe_method_names[i], len))
                m = i;
        for (size_t i = 0; i < count; i++)
            if (methods[i] == m)
                m = -2;
        if (m < 0 || count >= DEDUPE_BY_COUNT)
            return pm_error_set(err, PM_ERR_USAGE,
                                "%s: '%.*s' is not one of url, content, phash (or repeated)",
                                option, (int)len, p);
        methods[count++] = m;
        p += len;
        if (*p == ',')
            p++;
    }
    *n = count;
    return PM_OK;
}
