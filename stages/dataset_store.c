#include "dataset_store.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

int dataset_store_temp_path(char *buf, size_t size, struct pm_error *err)
{
    return store_temp_path(buf, size, err);
}

int dataset_store_put_file_until(struct store *s, const char *name, const char *path,
                                 const atomic_bool *stop, struct pm_error *err)
{
    enum { BLOCK = 1 << 20 };
    if (stop && atomic_load(stop))
        return pm_error_set(err, PM_ERR_INTERRUPTED, "upload of '%s' stopped", name);
    FILE *f = fopen(path, "rb");
    if (!f)
        return pm_error_set(err, PM_ERR_IO, "cannot open '%s': %s", path, strerror(errno));
    struct stat st;
    if (store_is_s3(s) && fstat(fileno(f), &st) == 0 && st.st_size > 0 &&
        (uint64_t)st.st_size < store_put_max(s)) {
        // one PUT straight from the page cache: no copy into a buffer, no fresh pages
        void *map = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fileno(f), 0);
        if (map != MAP_FAILED) {
            fclose(f);
            int rc = store_write_all(s, name, map, (size_t)st.st_size, err);
            munmap(map, (size_t)st.st_size);
            return rc;
        }
    }
    char *block = malloc(BLOCK);
    struct store_writer *w = NULL;
    int rc = block ? store_writer_open(s, name, &w, err)
                   : pm_error_set(err, PM_ERR_NOMEM, "out of memory");
    while (rc == PM_OK) {
        if (stop && atomic_load(stop)) {
            rc = pm_error_set(err, PM_ERR_INTERRUPTED, "upload of '%s' stopped", name);
            break;
        }
        size_t n = fread(block, 1, BLOCK, f);
        if (n == 0) {
            if (ferror(f))
                rc = pm_error_set(err, PM_ERR_IO, "cannot read '%s'", path);
            break;
        }
        rc = store_writer_write(w, block, n, err);
    }
    fclose(f);
    free(block);
    if (rc == PM_OK)
        rc = store_writer_commit(w, err);
    store_writer_free(w); // aborts unless committed
    return rc;
}

int dataset_store_put_file(struct store *s, const char *name, const char *path,
                           struct pm_error *err)
{
    return dataset_store_put_file_until(s, name, path, NULL, err);
}

// Download object `name` into a new temporary file (path in buf).
static int get_temp(struct store *s, const char *name, size_t limit, char *buf, size_t size,
                    struct pm_error *err)
{
    struct bytebuf b;
    bytebuf_init(&b, limit);
    int rc = store_read_all(s, name, &b, err);
    if (rc == PM_OK)
        rc = dataset_store_temp_path(buf, size, err);
    if (rc == PM_OK) {
        FILE *f = fopen(buf, "wb");
        if (!f || (b.len && fwrite(b.data, 1, b.len, f) != b.len) || fclose(f) != 0) {
            rc = pm_error_set(err, PM_ERR_IO, "cannot write '%s'", buf);
            unlink(buf);
        }
    }
    bytebuf_release(&b);
    return rc;
}

int dataset_store_read_index(struct store *s, struct dataset_index *x, struct pm_error *err)
{
    return dataset_index_read_store(x, s, err);
}

int dataset_store_write_index(struct store *s, const struct dataset_index *x, struct pm_error *err)
{
    return dataset_index_write_store(x, s, err);
}

int dataset_store_read_stats(struct store *s, const char *name, struct shard_stats *st,
                             struct pm_error *err)
{
    char tmp[4096];
    int rc = get_temp(s, name, SHARD_STATS_MAX_BYTES, tmp, sizeof tmp, err);
    if (rc != PM_OK) {
        shard_stats_init(st, 0, SHARD_MIN_DIGITS);
        return rc;
    }
    rc = shard_stats_read(tmp, st, err);
    unlink(tmp);
    if (rc != PM_OK)
        pm_error_prefix(err, "%s/%s: ", store_location(s), name);
    return rc;
}

int dataset_store_write_stats(struct store *s, const struct shard_stats *st, struct pm_error *err)
{
    char dir[4096];
    const char *t = getenv("TMPDIR");
    snprintf(dir, sizeof dir, "%s/pixelmill.XXXXXX", t && t[0] ? t : "/tmp");
    if (!mkdtemp(dir))
        return pm_error_set(err, PM_ERR_IO, "cannot create a temporary directory: %s",
                            strerror(errno));
    int rc = shard_stats_write(dir, st, err);
    char path[4200], name[SHARD_NAME_MAX + 16];
    snprintf(name, sizeof name, "%s_stats.json", st->name);
    snprintf(path, sizeof path, "%s/%s", dir, name);
    if (rc == PM_OK)
        rc = dataset_store_put_file(s, name, path, err);
    unlink(path);
    rmdir(dir);
    return rc;
}

int dataset_store_open_parquet(struct store *s, const char *name, struct bytebuf *buf,
                               struct parquet_reader **out, struct pm_error *err)
{
    *out = NULL;
    bytebuf_init(buf, DATASET_STORE_SIDECAR_MAX);
    int rc = store_read_all(s, name, buf, err);
    if (rc == PM_OK) {
        char what[4200];
        snprintf(what, sizeof what, "%s/%s", store_location(s), name);
        rc = parquet_reader_open_memory(out, buf->data ? buf->data : "", buf->len, what, err);
    }
    return rc;
}

int dataset_store_read_table(struct store *s, const char *name, struct table_batch *batch,
                             struct pm_error *err)
{
    *batch = (struct table_batch)TABLE_BATCH_INIT;
    struct bytebuf buf;
    struct parquet_reader *r = NULL;
    int rc = dataset_store_open_parquet(s, name, &buf, &r, err);
    size_t n = r ? parquet_reader_num_columns(r) : 0;
    size_t *idx = calloc(n ? n : 1, sizeof *idx);
    struct column_info *schema = calloc(n ? n : 1, sizeof *schema);
    size_t k = 0;
    if (rc == PM_OK && (!idx || !schema))
        rc = pm_error_set(err, PM_ERR_NOMEM, "out of memory reading '%s'", name);
    for (size_t i = 0; rc == PM_OK && i < n; i++)
        if (parquet_reader_column_supported(r, i)) {
            idx[k] = i;
            schema[k++] = *parquet_reader_column(r, i);
        }
    if (rc == PM_OK)
        rc = parquet_reader_select_columns(r, idx, k, err);
    if (rc == PM_OK && table_batch_init(batch, schema, k) != PM_OK)
        rc = pm_error_set(err, PM_ERR_NOMEM, "out of memory reading '%s'", name);
    if (rc == PM_OK) {
        int64_t rows = parquet_reader_num_rows(r);
        rc = parquet_reader_next(r, batch, rows > 0 ? (size_t)rows + 1 : 1, err);
    }
    free(idx);
    free(schema);
    parquet_reader_free(r);
    bytebuf_release(&buf);
    return rc;
}
