#include "dataset_index.h"

#include "json_file.h"
#include "store.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int dataset_index_init(struct dataset_index *x)
{
    memset(x, 0, sizeof *x);
    stat_map_init(&x->status, true);
    x->config = json_object();
    return x->config ? PM_OK : PM_ERR_NOMEM;
}

void dataset_index_release(struct dataset_index *x)
{
    if (!x)
        return;
    free(x->name);
    free(x->stage);
    free(x->tool_version);
    json_decref(x->config);
    for (size_t i = 0; i < x->nshards; i++)
        free(x->shards[i].url);
    free(x->shards);
    stat_map_release(&x->status);
    memset(x, 0, sizeof *x);
}

static int replace(char **dst, const char *src)
{
    if (!src)
        return PM_OK;
    char *c = strdup(src);
    if (!c)
        return PM_ERR_NOMEM;
    free(*dst);
    *dst = c;
    return PM_OK;
}

int dataset_index_set_info(struct dataset_index *x, const char *name, const char *stage,
                           const char *tool_version)
{
    if (replace(&x->name, name) || replace(&x->stage, stage) ||
        replace(&x->tool_version, tool_version))
        return PM_ERR_NOMEM;
    return PM_OK;
}

int dataset_index_set_config(struct dataset_index *x, json_t *config)
{
    if (!json_is_object(config))
        return PM_ERR_USAGE;
    json_incref(config);
    json_decref(x->config);
    x->config = config;
    return PM_OK;
}

int dataset_index_check_url(const char *url)
{
    if (!url || !url[0] || url[0] == '/')
        return 0;
    for (const char *p = url; *p; p++)
        if ((unsigned char)*p < 0x20 || *p == 0x7f || *p == ':' || *p == '\\')
            return 0;
    const char *c = url;
    for (;;) {
        const char *slash = strchr(c, '/');
        size_t n = slash ? (size_t)(slash - c) : strlen(c);
        if (n == 0 || (n == 1 && c[0] == '.') || (n == 2 && c[0] == '.' && c[1] == '.'))
            return 0;
        if (!slash)
            return 1;
        c = slash + 1;
    }
}

int dataset_index_add_shard(struct dataset_index *x, const struct dataset_shard *s,
                            struct pm_error *err)
{
    if (!dataset_index_check_url(s->url))
        return pm_error_set(err, PM_ERR_USAGE, "shard url '%s' is not a safe relative path",
                            s->url ? s->url : "");
    if (!file_hash_is_hex(s->xxh3))
        return pm_error_set(err, PM_ERR_USAGE, "shard '%s': xxh3 '%s' is not %d hex digits", s->url,
                            s->xxh3, FILE_HASH_HEX_LEN);
    if (x->nshards == x->cap) {
        size_t cap = x->cap ? x->cap * 2 : 16;
        struct dataset_shard *n = realloc(x->shards, cap * sizeof *n);
        if (!n)
            return pm_error_set(err, PM_ERR_NOMEM, "out of memory adding shard '%s'", s->url);
        x->shards = n;
        x->cap = cap;
    }
    struct dataset_shard *d = &x->shards[x->nshards];
    *d = *s;
    d->url = strdup(s->url);
    if (!d->url)
        return pm_error_set(err, PM_ERR_NOMEM, "out of memory adding shard '%s'", s->url);
    x->nshards++;
    return PM_OK;
}

int dataset_index_add_stats(struct dataset_index *x, const struct shard_stats *st,
                            struct pm_error *err)
{
    char url[SHARD_NAME_MAX + 8];
    snprintf(url, sizeof url, "%s.tar", st->name);
    struct dataset_shard s = {url, st->nsamples, st->tar_bytes, {0}, st->rows};
    memcpy(s.xxh3, st->xxh3, sizeof s.xxh3);
    int rc = dataset_index_add_shard(x, &s, err);
    if (rc == PM_OK && stat_map_merge(&x->status, &st->status) != PM_OK)
        rc = pm_error_set(err, PM_ERR_NOMEM, "out of memory adding shard '%s'", url);
    return rc;
}

uint64_t dataset_index_total_samples(const struct dataset_index *x)
{
    uint64_t t = 0;
    for (size_t i = 0; i < x->nshards; i++)
        t += x->shards[i].nsamples;
    return t;
}

uint64_t dataset_index_total_rows(const struct dataset_index *x)
{
    uint64_t t = 0;
    for (size_t i = 0; i < x->nshards; i++)
        t += x->shards[i].rows;
    return t;
}

// json_object_set_new that remembers a failure in *ok
static void put(json_t *o, const char *k, json_t *v, int *ok)
{
    if (!v || json_object_set_new(o, k, v) != 0)
        *ok = 0;
}

// Write x to `path`, or (s not NULL) to the store's dataset.json.
static int index_write(const struct dataset_index *x, const char *path, struct store *s,
                       struct pm_error *err)
{
    int ok = 1;
    json_t *o = json_object();
    json_t *list = json_array();
    json_t *counts = json_object();
    if (!o || !list || !counts) {
        json_decref(o);
        json_decref(list);
        json_decref(counts);
        return pm_error_set(err, PM_ERR_NOMEM, "out of memory building '%s'", path);
    }
    put(o, "wids_version", json_integer(1), &ok);
    put(o, "name", json_string(x->name ? x->name : ""), &ok);
    put(o, "stage", json_string(x->stage ? x->stage : ""), &ok);
    put(o, "tool_version", json_string(x->tool_version ? x->tool_version : ""), &ok);
    put(o, "checksum_algorithm", json_string("xxh3_128"), &ok);
    for (size_t i = 0; i < x->nshards && ok; i++) {
        const struct dataset_shard *s = &x->shards[i];
        json_t *e = json_object();
        if (!e) {
            ok = 0;
            break;
        }
        put(e, "url", json_string(s->url), &ok);
        put(e, "nsamples", json_integer((json_int_t)s->nsamples), &ok);
        put(e, "filesize", json_integer((json_int_t)s->filesize), &ok);
        put(e, "xxh3", json_string(s->xxh3), &ok);
        put(e, "rows", json_integer((json_int_t)s->rows), &ok);
        if (json_array_append_new(list, e) != 0)
            ok = 0;
    }
    put(o, "shardlist", list, &ok);
    put(counts, "shards", json_integer((json_int_t)x->nshards), &ok);
    put(counts, "rows", json_integer((json_int_t)dataset_index_total_rows(x)), &ok);
    put(counts, "nsamples", json_integer((json_int_t)dataset_index_total_samples(x)), &ok);
    put(counts, "status", stat_map_to_json(&x->status), &ok);
    put(o, "counts", counts, &ok);
    put(o, "config", json_incref(x->config ? x->config : json_object()), &ok);
    int rc;
    if (!ok)
        rc = pm_error_set(err, PM_ERR_NOMEM, "out of memory building '%s'", path);
    else
        rc = s ? json_file_write_store(s, DATASET_INDEX_FILE, o, err) : json_file_write(path, o, err);
    json_decref(o);
    return rc;
}

int dataset_index_write(const struct dataset_index *x, const char *path, struct pm_error *err)
{
    return index_write(x, path, NULL, err);
}

int dataset_index_write_store(const struct dataset_index *x, struct store *s, struct pm_error *err)
{
    return index_write(x, store_location(s), s, err);
}

static int opt_str(const json_t *o, const char *k, char **dst, const char *path,
                   struct pm_error *err)
{
    json_t *v = json_object_get(o, k);
    if (!v)
        return PM_OK;
    if (!json_is_string(v))
        return pm_error_set(err, PM_ERR_FORMAT, "'%s': field '%s' is not a string", path, k);
    return replace(dst, json_string_value(v)) == PM_OK
               ? PM_OK
               : pm_error_set(err, PM_ERR_NOMEM, "out of memory reading '%s'", path);
}

static int entry_u64(const json_t *e, const char *k, size_t i, bool required, uint64_t *out,
                     const char *path, struct pm_error *err)
{
    json_t *v = json_object_get(e, k);
    if (!v && !required)
        return PM_OK;
    if (!json_is_integer(v) || json_integer_value(v) < 0)
        return pm_error_set(err, PM_ERR_FORMAT,
                            "'%s': shardlist[%zu].%s is missing or not a non-negative integer",
                            path, i, k);
    *out = (uint64_t)json_integer_value(v);
    return PM_OK;
}

// Fill x (initialised) from the parsed document o (a reference taken over); `path`
// names it in messages.
static int index_from_json(struct dataset_index *x, json_t *o, const char *path,
                           struct pm_error *err)
{
    int rc = PM_OK;
    json_t *v;
    if (!json_is_object(o)) {
        rc = pm_error_set(err, PM_ERR_FORMAT, "'%s' is not a JSON object", path);
        goto done;
    }
    v = json_object_get(o, "wids_version");
    if (!json_is_integer(v) || json_integer_value(v) != 1) {
        rc = pm_error_set(err, PM_ERR_FORMAT, "'%s': wids_version is missing or not 1", path);
        goto done;
    }
    if ((rc = opt_str(o, "name", &x->name, path, err)) != PM_OK ||
        (rc = opt_str(o, "stage", &x->stage, path, err)) != PM_OK ||
        (rc = opt_str(o, "tool_version", &x->tool_version, path, err)) != PM_OK)
        goto done;
    v = json_object_get(o, "checksum_algorithm");
    if (v && !(json_is_string(v) && strcmp(json_string_value(v), "xxh3_128") == 0)) {
        rc =
            pm_error_set(err, PM_ERR_UNSUPPORTED, "'%s': checksum_algorithm is not xxh3_128", path);
        goto done;
    }
    v = json_object_get(o, "config");
    if (v) {
        if (!json_is_object(v)) {
            rc = pm_error_set(err, PM_ERR_FORMAT, "'%s': config is not an object", path);
            goto done;
        }
        dataset_index_set_config(x, v);
    }
    v = json_object_get(o, "counts");
    if (v && json_is_object(v) && json_object_get(v, "status")) {
        char what[4200];
        snprintf(what, sizeof what, "'%s' counts.status", path);
        if ((rc = stat_map_add_json(&x->status, json_object_get(v, "status"), what, err)))
            goto done;
    }
    json_t *list = json_object_get(o, "shardlist");
    if (!json_is_array(list)) {
        rc = pm_error_set(err, PM_ERR_FORMAT, "'%s': shardlist is missing or not an array", path);
        goto done;
    }
    size_t i;
    json_t *e;
    json_array_foreach(list, i, e)
    {
        if (!json_is_object(e)) {
            rc = pm_error_set(err, PM_ERR_FORMAT, "'%s': shardlist[%zu] is not an object", path, i);
            goto done;
        }
        struct dataset_shard s = {0};
        json_t *u = json_object_get(e, "url");
        if (!json_is_string(u) || strlen(json_string_value(u)) != json_string_length(u) ||
            !dataset_index_check_url(json_string_value(u))) {
            rc = pm_error_set(err, PM_ERR_FORMAT,
                              "'%s': shardlist[%zu].url is missing or not a safe relative "
                              "path",
                              path, i);
            goto done;
        }
        s.url = (char *)json_string_value(u);
        if ((rc = entry_u64(e, "nsamples", i, true, &s.nsamples, path, err)) ||
            (rc = entry_u64(e, "filesize", i, true, &s.filesize, path, err)) ||
            (rc = entry_u64(e, "rows", i, false, &s.rows, path, err)))
            goto done;
        json_t *h = json_object_get(e, "xxh3");
        if (!json_is_string(h) || !file_hash_is_hex(json_string_value(h))) {
            rc = pm_error_set(err, PM_ERR_FORMAT,
                              "'%s': shardlist[%zu].xxh3 is missing or not %d hex digits", path, i,
                              FILE_HASH_HEX_LEN);
            goto done;
        }
        memcpy(s.xxh3, json_string_value(h), FILE_HASH_HEX_LEN + 1);
        if ((rc = dataset_index_add_shard(x, &s, err)) != PM_OK)
            goto done;
    }
done:
    json_decref(o);
    return rc;
}

int dataset_index_read(struct dataset_index *x, const char *path, struct pm_error *err)
{
    if (dataset_index_init(x) != PM_OK)
        return pm_error_set(err, PM_ERR_NOMEM, "out of memory reading '%s'", path);
    json_t *o;
    int rc = json_file_read(path, DATASET_INDEX_MAX_BYTES, &o, err);
    return rc != PM_OK ? rc : index_from_json(x, o, path, err);
}

int dataset_index_read_store(struct dataset_index *x, struct store *s, struct pm_error *err)
{
    char what[4200];
    snprintf(what, sizeof what, "%s/%s", store_location(s), DATASET_INDEX_FILE);
    if (dataset_index_init(x) != PM_OK)
        return pm_error_set(err, PM_ERR_NOMEM, "out of memory reading '%s'", what);
    json_t *o;
    int rc = json_file_read_store(s, DATASET_INDEX_FILE, DATASET_INDEX_MAX_BYTES, &o, err);
    return rc != PM_OK ? rc : index_from_json(x, o, what, err);
}
