/*
 * meta_source — datasets or input files as units of metadata (see meta_source.h).
 */
#include "meta_source.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

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

int meta_source_open(struct meta_source *s, char *const *paths, size_t n, struct pm_error *err)
{
    memset(s, 0, sizeof *s);
    dataset_index_init(&s->idx);
    struct stat st;
    if (n == 1 && stat(paths[0], &st) == 0 && S_ISDIR(st.st_mode)) {
        char p[4096];
        snprintf(p, sizeof p, "%s/%s", paths[0], DATASET_INDEX_FILE);
        dataset_index_release(&s->idx);
        int rc = dataset_index_read(&s->idx, p, err);
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
            snprintf(p, sizeof p, "%s/%.*s.parquet", paths[0], (int)(ul - 4), url);
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
        const char *none = NULL;
        (void)none;
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

void meta_source_release(struct meta_source *s)
{
    if (!s)
        return;
    for (size_t i = 0; i < s->nfiles; i++)
        free(s->files[i]);
    free(s->files);
    free(s->units);
    free(s->dataset);
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
