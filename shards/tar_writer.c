#include "tar_writer.h"

#include "atomic_file.h"
#include "store.h"

#include <archive.h>
#include <archive_entry.h>
#include <ctype.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

// ustar stores sizes in 11 octal digits
#define TAR_MEMBER_SIZE_MAX 077777777777ULL

struct tar_writer {
    struct archive *ar;
    struct archive_entry *entry;
    struct atomic_file *file; // output: a file path (tar_writer_open)...
    struct store_writer *sw;  // ...or a store object (tar_writer_open_store)
    struct file_hash *hash;
    struct tar_writer_options opts;
    uint64_t nsamples;
    uint64_t nmembers;
    bool open;              // archive opened (needs archive_write_close)
    bool failed;            // an I/O error happened; only free is useful
    bool closed;            // committed
    struct pm_error io_err; // error from the write callback
    char last_key[TAR_WRITER_NAME_MAX + 1];
};

// The output, whichever it is.
static const char *out_name(const struct tar_writer *w)
{
    return w->sw ? store_writer_name(w->sw) : atomic_file_path(w->file);
}

static int out_write(struct tar_writer *w, const void *buf, size_t n, struct pm_error *err)
{
    return w->sw ? store_writer_write(w->sw, buf, n, err) : atomic_file_write(w->file, buf, n, err);
}

static int out_commit(struct tar_writer *w, struct pm_error *err)
{
    return w->sw ? store_writer_commit(w->sw, err) : atomic_file_commit(w->file, err);
}

static void out_abort(struct tar_writer *w)
{
    if (w->sw)
        store_writer_abort(w->sw);
    else
        atomic_file_abort(w->file);
}

static la_ssize_t write_cb(struct archive *a, void *client, const void *buf, size_t n)
{
    (void)a;
    struct tar_writer *w = client;
    if (out_write(w, buf, n, &w->io_err) != PM_OK)
        return -1;
    file_hash_update(w->hash, buf, n);
    return (la_ssize_t)n;
}

static int archive_fail(struct tar_writer *w, struct pm_error *err, const char *what)
{
    w->failed = true;
    if (w->io_err.code != PM_OK)
        return pm_error_set(err, w->io_err.code, "%s", w->io_err.msg);
    return pm_error_set(err, PM_ERR_IO, "shard '%s': %s: %s", out_name(w), what,
                        archive_error_string(w->ar) ? archive_error_string(w->ar)
                                                    : "libarchive error");
}

// Set up libarchive on a writer whose output (file or sw) is open.
static int writer_start(struct tar_writer *w, struct tar_writer **out, struct pm_error *err)
{
    int rc;
    w->hash = file_hash_create();
    w->ar = archive_write_new();
    w->entry = archive_entry_new();
    if (!w->hash || !w->ar || !w->entry) {
        rc = pm_error_set(err, PM_ERR_NOMEM, "out of memory opening shard '%s'", out_name(w));
        tar_writer_free(w);
        return rc;
    }
    if (archive_write_set_format_ustar(w->ar) != ARCHIVE_OK ||
        archive_write_add_filter_none(w->ar) != ARCHIVE_OK ||
        archive_write_set_bytes_per_block(w->ar, 10240) != ARCHIVE_OK) {
        rc = archive_fail(w, err, "cannot set up ustar output");
        tar_writer_free(w);
        return rc;
    }
    if (archive_write_open2(w->ar, w, NULL, write_cb, NULL, NULL) != ARCHIVE_OK) {
        rc = archive_fail(w, err, "cannot start tar");
        tar_writer_free(w);
        return rc;
    }
    w->open = true;
    *out = w;
    return PM_OK;
}

int tar_writer_open(const char *path, const struct tar_writer_options *opts,
                    struct tar_writer **out, struct pm_error *err)
{
    *out = NULL;
    struct tar_writer *w = calloc(1, sizeof *w);
    if (!w)
        return pm_error_set(err, PM_ERR_NOMEM, "out of memory opening shard '%s'", path);
    if (opts)
        w->opts = *opts;
    int rc = atomic_file_open(path, &w->file, err);
    if (rc != PM_OK) {
        tar_writer_free(w);
        return rc;
    }
    atomic_file_set_sync(w->file, !w->opts.no_sync);
    return writer_start(w, out, err);
}

int tar_writer_open_store(struct store *store, const char *name,
                          const struct tar_writer_options *opts, struct tar_writer **out,
                          struct pm_error *err)
{
    *out = NULL;
    struct tar_writer *w = calloc(1, sizeof *w);
    if (!w)
        return pm_error_set(err, PM_ERR_NOMEM, "out of memory opening shard '%s'", name);
    if (opts)
        w->opts = *opts;
    int rc = store_writer_open(store, name, &w->sw, err);
    if (rc != PM_OK) {
        tar_writer_free(w);
        return rc;
    }
    return writer_start(w, out, err);
}

static bool printable(unsigned char c)
{
    return c >= 0x20 && c != 0x7f;
}

int tar_writer_check_key(const char *key, struct pm_error *err)
{
    size_t len = strlen(key);
    if (len == 0)
        return pm_error_set(err, PM_ERR_USAGE, "empty sample key");
    if (key[0] == '/')
        return pm_error_set(err, PM_ERR_USAGE, "sample key '%s' is an absolute path", key);
    for (size_t i = 0; i < len; i++)
        if (!printable((unsigned char)key[i]))
            return pm_error_set(err, PM_ERR_USAGE,
                                "sample key '%s' has a control character at byte %zu", key, i);
    // each '/'-separated component: non-empty, not "." or "..", no '.' in the last one
    const char *c = key;
    for (;;) {
        const char *slash = strchr(c, '/');
        size_t clen = slash ? (size_t)(slash - c) : strlen(c);
        if (clen == 0 || (clen == 1 && c[0] == '.') || (clen == 2 && c[0] == '.' && c[1] == '.'))
            return pm_error_set(err, PM_ERR_USAGE,
                                "sample key '%s' has an empty, '.' or '..' path component", key);
        if (!slash) {
            if (memchr(c, '.', clen))
                return pm_error_set(err, PM_ERR_USAGE,
                                    "sample key '%s' has a '.' after its last '/' (webdataset "
                                    "would split the key there)",
                                    key);
            break;
        }
        c = slash + 1;
    }
    return PM_OK;
}

static int check_sample(const struct tar_writer *w, const char *key, const struct tar_member *m,
                        size_t n, struct pm_error *err)
{
    int rc = tar_writer_check_key(key, err);
    if (rc != PM_OK)
        return rc;
    if (n == 0)
        return pm_error_set(err, PM_ERR_USAGE, "sample '%s' has no members", key);
    if (w->nsamples > 0 && strcmp(key, w->last_key) == 0)
        return pm_error_set(err, PM_ERR_USAGE,
                            "sample key '%s' repeats the previous sample's key (readers "
                            "would merge the two)",
                            key);
    size_t klen = strlen(key);
    for (size_t i = 0; i < n; i++) {
        const char *ext = m[i].ext;
        size_t elen = ext ? strlen(ext) : 0;
        if (elen == 0)
            return pm_error_set(err, PM_ERR_USAGE, "sample '%s': member %zu has no extension", key,
                                i);
        for (size_t j = 0; j < elen; j++)
            if (!printable((unsigned char)ext[j]) || ext[j] == '/')
                return pm_error_set(err, PM_ERR_USAGE,
                                    "sample '%s': extension '%s' has a '/' or a control "
                                    "character",
                                    key, ext);
        if (klen + 1 + elen > TAR_WRITER_NAME_MAX)
            return pm_error_set(err, PM_ERR_LIMIT,
                                "member name '%s.%s' is %zu bytes; plain ustar names are at "
                                "most %d bytes",
                                key, ext, klen + 1 + elen, TAR_WRITER_NAME_MAX);
        if (m[i].size > 0 && !m[i].data)
            return pm_error_set(err, PM_ERR_USAGE, "member '%s.%s' has no data", key, ext);
        if ((uint64_t)m[i].size > TAR_MEMBER_SIZE_MAX)
            return pm_error_set(err, PM_ERR_LIMIT,
                                "member '%s.%s' is %zu bytes; ustar members are below 8 GiB", key,
                                ext, m[i].size);
        for (size_t j = 0; j < i; j++)
            if (strcasecmp(m[j].ext, ext) == 0)
                return pm_error_set(err, PM_ERR_USAGE, "sample '%s' has extension '%s' twice", key,
                                    ext);
    }
    return PM_OK;
}

int tar_writer_add_sample(struct tar_writer *w, const char *key, const struct tar_member *members,
                          size_t n, struct pm_error *err)
{
    if (w->failed || w->closed)
        return pm_error_set(err, PM_ERR_USAGE, "shard '%s' is %s", out_name(w),
                            w->closed ? "closed" : "unusable after an earlier error");
    int rc = check_sample(w, key, members, n, err);
    if (rc != PM_OK)
        return rc;
    char name[TAR_WRITER_NAME_MAX + 1];
    for (size_t i = 0; i < n; i++) {
        snprintf(name, sizeof name, "%s.%s", key, members[i].ext);
        struct archive_entry *e = w->entry;
        archive_entry_clear(e);
        archive_entry_copy_pathname(e, name);
        archive_entry_set_filetype(e, AE_IFREG);
        archive_entry_set_perm(e, 0644);
        archive_entry_set_size(e, (la_int64_t)members[i].size);
        archive_entry_set_mtime(e, (time_t)w->opts.mtime, 0);
        archive_entry_set_uid(e, 0);
        archive_entry_set_gid(e, 0);
        if (archive_write_header(w->ar, e) != ARCHIVE_OK)
            return archive_fail(w, err, "cannot write member header");
        const char *p = members[i].data;
        size_t left = members[i].size;
        while (left > 0) {
            la_ssize_t wr = archive_write_data(w->ar, p, left);
            if (wr <= 0)
                return archive_fail(w, err, "cannot write member data");
            p += wr;
            left -= (size_t)wr;
        }
        if (archive_write_finish_entry(w->ar) != ARCHIVE_OK)
            return archive_fail(w, err, "cannot finish member");
        w->nmembers++;
    }
    snprintf(w->last_key, sizeof w->last_key, "%s", key);
    w->nsamples++;
    return PM_OK;
}

uint64_t tar_writer_bytes(const struct tar_writer *w)
{
    return file_hash_bytes(w->hash);
}

uint64_t tar_writer_samples(const struct tar_writer *w)
{
    return w->nsamples;
}

int tar_writer_close(struct tar_writer *w, struct tar_writer_result *result, struct pm_error *err)
{
    if (w->closed)
        return pm_error_set(err, PM_ERR_USAGE, "shard '%s' closed twice",
                            out_name(w));
    if (w->failed) {
        out_abort(w);
        return pm_error_set(err, PM_ERR_USAGE, "shard '%s' is unusable after an earlier error",
                            out_name(w));
    }
    w->open = false;
    if (archive_write_close(w->ar) != ARCHIVE_OK) {
        int rc = archive_fail(w, err, "cannot finish tar");
        out_abort(w);
        return rc;
    }
    int rc = out_commit(w, err);
    if (rc != PM_OK) {
        w->failed = true;
        return rc;
    }
    w->closed = true;
    if (result) {
        result->bytes = file_hash_bytes(w->hash);
        result->nsamples = w->nsamples;
        result->nmembers = w->nmembers;
        file_hash_hex(w->hash, result->xxh3);
    }
    return PM_OK;
}

void tar_writer_free(struct tar_writer *w)
{
    if (!w)
        return;
    if (w->ar) {
        // archive_write_free closes an open archive (writing the trailer) unless it failed;
        // the output goes to the temporary file, which is removed below if not committed
        archive_write_free(w->ar);
    }
    archive_entry_free(w->entry);
    atomic_file_free(w->file);
    store_writer_free(w->sw);
    file_hash_free(w->hash);
    free(w);
}
