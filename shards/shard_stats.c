#include "shard_stats.h"

#include "json_file.h"

#include <stdio.h>
#include <string.h>

void shard_stats_init(struct shard_stats *s, uint64_t index, int digits)
{
    memset(s, 0, sizeof *s);
    s->shard = index;
    shard_name(s->name, sizeof s->name, index, digits);
    stat_map_init(&s->status, true);
    stat_map_init(&s->errors, true);
    stat_map_init(&s->bytes, true);
    stat_map_init(&s->durations, false);
}

void shard_stats_release(struct shard_stats *s)
{
    if (!s)
        return;
    stat_map_release(&s->status);
    stat_map_release(&s->errors);
    stat_map_release(&s->bytes);
    stat_map_release(&s->durations);
}

static int set(json_t *o, const char *k, json_t *v)
{
    return json_object_set_new(o, k, v) == 0 ? PM_OK : PM_ERR_NOMEM;
}

int shard_stats_write(const char *dir, const struct shard_stats *s, struct pm_error *err)
{
    char path[4096];
    int n = snprintf(path, sizeof path, "%s%s%s_stats.json", dir && dir[0] ? dir : "",
                     dir && dir[0] ? "/" : "", s->name);
    if (n < 0 || (size_t)n >= sizeof path)
        return pm_error_set(err, PM_ERR_LIMIT, "stats path in '%s' is too long", dir);
    char url[SHARD_NAME_MAX + 8];
    snprintf(url, sizeof url, "%s.tar", s->name);
    json_t *o = json_object();
    int rc = o ? PM_OK : PM_ERR_NOMEM;
    if (rc == PM_OK)
        rc = set(o, "shard", json_integer((json_int_t)s->shard));
    if (rc == PM_OK)
        rc = set(o, "name", json_string(s->name));
    if (rc == PM_OK)
        rc = set(o, "url", json_string(url));
    if (rc == PM_OK)
        rc = set(o, "count", json_integer((json_int_t)s->rows));
    if (rc == PM_OK)
        rc = set(o, "successes", json_integer((json_int_t)s->nsamples));
    if (rc == PM_OK)
        rc = set(o, "filesize", json_integer((json_int_t)s->tar_bytes));
    if (rc == PM_OK)
        rc = set(o, "xxh3", json_string(s->xxh3));
    if (rc == PM_OK)
        rc = set(o, "status", stat_map_to_json(&s->status));
    if (rc == PM_OK)
        rc = set(o, "errors", stat_map_to_json(&s->errors));
    if (rc == PM_OK)
        rc = set(o, "bytes", stat_map_to_json(&s->bytes));
    if (rc == PM_OK)
        rc = set(o, "durations", stat_map_to_json(&s->durations));
    if (rc == PM_OK)
        rc = set(o, "start_time", json_real(s->start_time));
    if (rc == PM_OK)
        rc = set(o, "end_time", json_real(s->end_time));
    if (rc == PM_OK)
        rc = set(o, "tool_version", json_string(s->tool_version));
    if (rc != PM_OK) {
        json_decref(o);
        return pm_error_set(err, PM_ERR_NOMEM, "out of memory building '%s'", path);
    }
    rc = json_file_write(path, o, err);
    json_decref(o);
    return rc;
}

static int get_u64(const json_t *o, const char *k, uint64_t *out, const char *path,
                   struct pm_error *err)
{
    json_t *v = json_object_get(o, k);
    if (!json_is_integer(v) || json_integer_value(v) < 0)
        return pm_error_set(err, PM_ERR_FORMAT,
                            "'%s': field '%s' is missing or not a "
                            "non-negative integer",
                            path, k);
    *out = (uint64_t)json_integer_value(v);
    return PM_OK;
}

static int get_str(const json_t *o, const char *k, char *buf, size_t size, const char *path,
                   struct pm_error *err)
{
    json_t *v = json_object_get(o, k);
    if (!json_is_string(v) || json_string_length(v) >= size ||
        strlen(json_string_value(v)) != json_string_length(v))
        return pm_error_set(err, PM_ERR_FORMAT,
                            "'%s': field '%s' is missing, not a string or "
                            "longer than %zu bytes",
                            path, k, size - 1);
    memcpy(buf, json_string_value(v), json_string_length(v) + 1);
    return PM_OK;
}

static int get_map(const json_t *o, const char *k, struct stat_map *m, const char *path,
                   struct pm_error *err)
{
    json_t *v = json_object_get(o, k);
    if (!v)
        return PM_OK; // optional
    char what[4200];
    snprintf(what, sizeof what, "'%s' field '%s'", path, k);
    return stat_map_add_json(m, v, what, err);
}

int shard_stats_read(const char *path, struct shard_stats *s, struct pm_error *err)
{
    shard_stats_init(s, 0, SHARD_MIN_DIGITS);
    json_t *o;
    int rc = json_file_read(path, SHARD_STATS_MAX_BYTES, &o, err);
    if (rc != PM_OK)
        return rc;
    if (!json_is_object(o)) {
        json_decref(o);
        return pm_error_set(err, PM_ERR_FORMAT, "'%s' is not a JSON object", path);
    }
    rc = get_u64(o, "shard", &s->shard, path, err);
    if (rc == PM_OK)
        rc = get_str(o, "name", s->name, sizeof s->name, path, err);
    if (rc == PM_OK)
        rc = get_u64(o, "count", &s->rows, path, err);
    if (rc == PM_OK)
        rc = get_u64(o, "successes", &s->nsamples, path, err);
    if (rc == PM_OK)
        rc = get_u64(o, "filesize", &s->tar_bytes, path, err);
    if (rc == PM_OK)
        rc = get_str(o, "xxh3", s->xxh3, sizeof s->xxh3, path, err);
    if (rc == PM_OK && !file_hash_is_hex(s->xxh3))
        rc = pm_error_set(err, PM_ERR_FORMAT, "'%s': field 'xxh3' is not %d hex digits", path,
                          FILE_HASH_HEX_LEN);
    if (rc == PM_OK)
        rc = get_map(o, "status", &s->status, path, err);
    if (rc == PM_OK)
        rc = get_map(o, "errors", &s->errors, path, err);
    if (rc == PM_OK)
        rc = get_map(o, "bytes", &s->bytes, path, err);
    if (rc == PM_OK)
        rc = get_map(o, "durations", &s->durations, path, err);
    if (rc == PM_OK) {
        json_t *v = json_object_get(o, "start_time");
        s->start_time = json_is_number(v) ? json_number_value(v) : 0;
        v = json_object_get(o, "end_time");
        s->end_time = json_is_number(v) ? json_number_value(v) : 0;
        v = json_object_get(o, "tool_version");
        if (json_is_string(v))
            snprintf(s->tool_version, sizeof s->tool_version, "%s", json_string_value(v));
    }
    // the name must be digits only: it names files next to the stats file
    for (const char *p = s->name; rc == PM_OK && *p; p++)
        if (*p < '0' || *p > '9')
            rc = pm_error_set(err, PM_ERR_FORMAT, "'%s': field 'name' is not a shard number", path);
    if (rc == PM_OK && !s->name[0])
        rc = pm_error_set(err, PM_ERR_FORMAT, "'%s': field 'name' is empty", path);
    json_decref(o);
    return rc;
}
