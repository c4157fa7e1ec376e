/*
 * meta_source — datasets or input files as units of metadata (see meta_source.h).
 */
#include "meta_source.h"

#include "pm_log.h"
#include "view.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

bool meta_command_help(int argc, char *const *argv, const char *usage, const struct pm_mpi *mpi)
{
    for (int i = 1; i < argc; i++)
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            if (mpi->rank == 0)
                fputs(usage, stdout);
            return true;
        }
    return false;
}

int meta_option_methods(const char *option, const char *value, int *methods, size_t *n)
{
    struct pm_error err = PM_ERROR_INIT;
    if (dedupe_method_list_parse(value, option, methods, n, &err) != PM_OK) {
        pm_log_error("%s", err.msg);
        return -1;
    }
    return 0;
}

static int add_file(struct meta_source *s, const char *path)
{
    char **f = realloc(s->files, (s->nfiles + 1) * sizeof *f);
    if (!f)
        return PM_ERR_NOMEM;
    s->files = f;
    if (!(f[s->nfiles] = strdup(path)))
        return PM_ERR_NOMEM;
    s->nfiles++;
    return PM_OK;
}

static int add_unit(struct meta_source *s, struct meta_unit u)
{
    struct meta_unit *v = realloc(s->units, (s->nunits + 1) * sizeof *v);
    if (!v)
        return PM_ERR_NOMEM;
    s->units = v;
    v[s->nunits++] = u;
    return PM_OK;
}

static bool is_dataset_location(const char *p)
{
    struct stat st;
    return strncmp(p, "s3://", 5) == 0 || (stat(p, &st) == 0 && S_ISDIR(st.st_mode));
}

int meta_source_open(struct meta_source *s, char *const *paths, size_t n, struct pm_error *err)
{
    memset(s, 0, sizeof *s);
    dataset_index_init(&s->idx);
    if (n == 1 && is_dataset_location(paths[0])) {
        dataset_index_release(&s->idx);
        int rc = store_open(paths[0], NULL, &s->store, err);
        if (rc == PM_OK)
            rc = dataset_index_read_store(&s->idx, s->store, err);
        if (rc != PM_OK)
            return rc;
        s->is_dataset = true;
        if (!(s->dataset = strdup(paths[0])))
            return PM_ERR_NOMEM;
        uint64_t base = 0;
        for (size_t i = 0; i < s->idx.nshards; i++) {
            const char *url = s->idx.shards[i].url;
            size_t ul = strlen(url);
            if (ul < 5 || strcmp(url + ul - 4, ".tar") != 0)
                return pm_error_set(err, PM_ERR_FORMAT,
                                    "dataset '%s': shard url '%s' is not "
                                    "NAME.tar",
                                    paths[0], url);
            char p[4096];
            snprintf(p, sizeof p, "%s/%.*s.parquet", store_location(s->store), (int)(ul - 4),
                     url);
            if (add_file(s, p) != PM_OK ||
                add_unit(s, (struct meta_unit){i, 0, (size_t)-1, base, s->idx.shards[i].rows}) !=
                    PM_OK)
                return pm_error_set(err, PM_ERR_NOMEM, "out of memory");
            base += s->idx.shards[i].rows;
        }
        return PM_OK;
    }
    for (size_t i = 0; i < n; i++) {
        struct table_reader *r = NULL;
        struct table_reader_options opt = {0};
        int rc = table_reader_open(&r, paths[i], &opt, err);
        if (rc != PM_OK)
            return rc;
        size_t parts = table_reader_num_parts(r);
        table_reader_free(r);
        if (add_file(s, paths[i]) != PM_OK)
            return pm_error_set(err, PM_ERR_NOMEM, "out of memory");
        for (size_t p = 0; p < parts; p++)
            if (add_unit(s, (struct meta_unit){i, p, 1, 0, 0}) != PM_OK)
                return pm_error_set(err, PM_ERR_NOMEM, "out of memory");
    }
    return PM_OK;
}

int meta_source_open_with_expr(struct meta_source *s, char *const *paths, size_t n,
                               struct filter_expr **f, const char *const *where, size_t nwhere,
                               struct pm_error *err)
{
    memset(s, 0, sizeof *s);
    int rc = filter_expr_parse(f, where, nwhere, err);
    return rc == PM_OK ? meta_source_open(s, paths, n, err) : rc;
}

void meta_source_release(struct meta_source *s)
{
    if (!s)
        return;
    for (size_t i = 0; i < s->nfiles; i++)
        free(s->files[i]);
    free(s->files);
    free(s->units);
    free(s->dataset);
    store_free(s->store);
    dataset_index_release(&s->idx);
    memset(s, 0, sizeof *s);
}

int meta_source_unit_open(const struct meta_source *s, size_t u, const char *const *columns,
                          size_t ncolumns, struct table_reader **out, struct pm_error *err)
{
    const struct meta_unit *m = &s->units[u];
    struct table_reader_options opt = {0};
    opt.columns = columns;
    opt.ncolumns = columns ? ncolumns : 0;
    if (s->is_dataset) {
        // the sidecar through the store (a local copy on S3, removed once open)
        char name[4200], path[4096];
        bool temp = false;
        snprintf(name, sizeof name, "%s.parquet", meta_source_shard_name(s, u, path, sizeof path));
        opt.format = "parquet";
        int rc = store_local_path(s->store, name, path, sizeof path, &temp, err);
        if (rc == PM_OK)
            rc = table_reader_open(out, path, &opt, err);
        if (temp)
            unlink(path);
        if (rc != PM_OK)
            pm_error_prefix(err, "sidecar '%s': ", s->files[m->file]);
        return rc;
    }
    int rc = table_reader_open(out, s->files[m->file], &opt, err);
    if (rc != PM_OK)
        return rc;
    if (m->nparts != (size_t)-1) {
        rc = table_reader_select_parts(*out, m->part, m->nparts, err);
        if (rc != PM_OK) {
            table_reader_free(*out);
            *out = NULL;
        }
    }
    return rc;
}

bool meta_source_has(const struct meta_source *s, const char *name)
{
    bool exists = false;
    struct pm_error e = PM_ERROR_INIT;
    return s->store && store_exists(s->store, name, &exists, &e) == PM_OK && exists;
}

void meta_columns_add(const char **cols, size_t *n, const char *name)
{
    for (size_t j = 0; j < *n; j++)
        if (!strcmp(cols[j], name))
            return;
    cols[(*n)++] = name;
}

void meta_columns_add_expr(const char **cols, size_t *n, const struct filter_expr *f)
{
    for (size_t i = 0; f && i < filter_expr_num_columns(f); i++)
        meta_columns_add(cols, n, filter_expr_column(f, i));
}

int meta_reader_bind(const struct table_reader *r, struct filter_expr *f, struct pm_error *err)
{
    size_t n = table_reader_num_columns(r);
    struct column_info *schema = calloc(n ? n : 1, sizeof *schema);
    if (!schema)
        return pm_error_set(err, PM_ERR_NOMEM, "out of memory");
    for (size_t j = 0; j < n; j++)
        schema[j] = *table_reader_column(r, j);
    int rc = filter_expr_bind(f, schema, n, err);
    free(schema);
    return rc;
}

size_t meta_status_success(const struct column *status, size_t nrows, uint8_t *success)
{
    size_t k = 0;
    for (size_t i = 0; i < nrows; i++) {
        size_t len;
        const char *v = column_string(status, i, &len);
        success[i] = status->valid[i] && len == 7 && !memcmp(v, "success", 7);
        k += success[i];
    }
    return k;
}

int meta_unit_check_rows(const struct meta_source *s, size_t u, uint64_t row, bool done,
                         struct pm_error *err)
{
    if (!s->is_dataset)
        return PM_OK;
    uint64_t want = s->units[u].rows;
    if (!done && row > want)
        return pm_error_set(err, PM_ERR_FORMAT,
                            "sidecar '%s' has more rows than the %" PRIu64 " dataset.json lists",
                            s->files[u], want);
    if (done && row != want)
        return pm_error_set(err, PM_ERR_FORMAT,
                            "sidecar '%s' has %" PRIu64 " rows, dataset.json lists %" PRIu64,
                            s->files[u], row, want);
    return PM_OK;
}

static bool hex_u64(const char *s, uint64_t *out)
{
    uint64_t v = 0;
    for (int i = 0; i < 16; i++) {
        char ch = s[i];
        int d = ch >= '0' && ch <= '9'   ? ch - '0'
                : ch >= 'a' && ch <= 'f' ? ch - 'a' + 10
                : ch >= 'A' && ch <= 'F' ? ch - 'A' + 10
                                         : -1;
        if (d < 0)
            return false;
        v = v << 4 | (uint64_t)d;
    }
    *out = v;
    return true;
}

bool meta_content_hash(const char *hex, size_t len, uint64_t out[2])
{
    return len == 32 && hex_u64(hex, &out[0]) && hex_u64(hex + 16, &out[1]);
}

const char *meta_source_shard_name(const struct meta_source *s, size_t u, char *buf, size_t size)
{
    const char *url = s->idx.shards[s->units[u].file].url;
    snprintf(buf, size, "%.*s", (int)(strlen(url) - 4), url);
    return buf;
}

int table_batch_append_kept(struct table_batch *dst, const struct table_batch *src,
                            const uint8_t *keep)
{
    size_t n = 0;
    for (size_t r = 0; r < src->nrows; r++)
        n += keep[r] != 0;
    for (size_t c = 0; c < src->ncols; c++) {
        const struct column *x = &src->cols[c];
        struct column *y = &dst->cols[c];
        int rc = column_reserve(y, n);
        if (rc != PM_OK)
            return rc;
        for (size_t r = 0; r < src->nrows; r++) {
            if (!keep[r])
                continue;
            if (!x->valid[r])
                rc = column_append_null(y);
            else if (x->type == COLUMN_STRING) {
                size_t len;
                const char *p = column_string(x, r, &len);
                rc = column_append_string(y, p, len);
            } else if (x->type == COLUMN_FLOAT || x->type == COLUMN_DOUBLE)
                rc = column_append_real(y, x->reals[r]);
            else
                rc = column_append_int(y, x->ints[r]);
            if (rc != PM_OK)
                return rc;
        }
    }
    dst->nrows += n;
    return PM_OK;
}

int meta_size_parse(const char *s, size_t *out)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || v < 0)
        return -1;
    double mul = 1;
    switch (*end) {
    case 'k':
    case 'K':
        mul = 1024.0, end++;
        break;
    case 'm':
    case 'M':
        mul = 1024.0 * 1024, end++;
        break;
    case 'g':
    case 'G':
        mul = 1024.0 * 1024 * 1024, end++;
        break;
    default:
        break;
    }
    if (*end == 'B' || *end == 'b')
        end++;
    if (*end || v * mul > 1e18)
        return -1;
    *out = (size_t)(v * mul);
    return 0;
}
