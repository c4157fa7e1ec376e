#include "store.h"

#include "atomic_file.h"
#include "s3_client.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

struct store {
    char *location; // as given, without trailing '/'
    // S3
    struct s3_client *s3;
    char *bucket;
    char *prefix; // "" or ending in '/'
    size_t put_max; // objects smaller than this: one PUT
    // POSIX
    char *dir;
};

struct store_writer {
    struct store *s;
    char *name; // full name for messages
    char *key;  // S3 key
    // POSIX
    struct atomic_file *file;
    // S3: objects below put_max stay in `small` until commit (one PUT); past it a
    // multipart upload
    struct bytebuf small;
    struct s3_upload *up;
    uint64_t bytes;
    bool failed, committed;
};

// ---------------------------------------------------------------- names

static int check_name(const char *name, struct pm_error *err)
{
    if (!name || !*name || name[0] == '/')
        return pm_error_set(err, PM_ERR_USAGE, "invalid object name '%s'", name ? name : "");
    const char *c = name;
    for (;;) {
        const char *slash = strchr(c, '/');
        size_t n = slash ? (size_t)(slash - c) : strlen(c);
        if (n == 0 || (n == 1 && c[0] == '.') || (n == 2 && c[0] == '.' && c[1] == '.'))
            return pm_error_set(err, PM_ERR_USAGE,
                                "object name '%s' has an empty, '.' or '..' component", name);
        if (!slash)
            break;
        c = slash + 1;
    }
    for (const char *p = name; *p; p++)
        if ((unsigned char)*p < 0x20)
            return pm_error_set(err, PM_ERR_USAGE, "object name has a control character");
    return PM_OK;
}

static char *join(const char *a, const char *sep, const char *b)
{
    size_t n = strlen(a) + strlen(sep) + strlen(b) + 1;
    char *r = malloc(n);
    if (r)
        snprintf(r, n, "%s%s%s", a, sep, b);
    return r;
}

// Full S3 key / POSIX path of `name` (malloc'ed).
static char *object_path(const struct store *s, const char *name)
{
    return s->s3 ? join(s->prefix, "", name) : join(s->dir, "/", name);
}

static char *object_name(const struct store *s, const char *name)
{
    return join(s->location, "/", name);
}

static int mkdirs(char *path, struct pm_error *err)
{
    // create every directory of `path` (modified in place, restored)
    for (char *p = path + 1;; p++) {
        if (*p == '/' || *p == 0) {
            char saved = *p;
            *p = 0;
            if (mkdir(path, 0777) != 0 && errno != EEXIST) {
                int e = errno;
                int rc = pm_error_set(err, PM_ERR_IO, "cannot create directory '%s': %s", path,
                                      strerror(e));
                *p = saved;
                return rc;
            }
            *p = saved;
            if (saved == 0)
                break;
        }
    }
    return PM_OK;
}

// ---------------------------------------------------------------- open / free

int store_open(const char *url_or_path, const struct store_options *opts, struct store **out,
               struct pm_error *err)
{
    *out = NULL;
    if (!url_or_path || !*url_or_path)
        return pm_error_set(err, PM_ERR_USAGE, "empty dataset location");
    struct store *s = calloc(1, sizeof *s);
    if (!s)
        return pm_error_set(err, PM_ERR_NOMEM, "out of memory");
    s->location = strdup(url_or_path);
    if (!s->location) {
        free(s);
        return pm_error_set(err, PM_ERR_NOMEM, "out of memory");
    }
    size_t n = strlen(s->location);
    while (n > 1 && s->location[n - 1] == '/')
        s->location[--n] = 0;
    int rc = PM_OK;
    if (strncmp(url_or_path, "s3://", 5) == 0) {
        char *prefix = NULL;
        rc = s3_url_split(s->location, &s->bucket, &prefix, err);
        if (rc == PM_OK) {
            s->prefix = *prefix ? join(prefix, "/", "") : strdup("");
            free(prefix);
            if (!s->prefix)
                rc = pm_error_set(err, PM_ERR_NOMEM, "out of memory");
        }
        struct s3_config cfg;
        if (rc == PM_OK &&
            (rc = s3_config_init_env(&cfg, opts ? opts->s3_endpoint : NULL, err)) == PM_OK) {
            if (opts && opts->part_size)
                cfg.part_size = opts->part_size;
            if (opts && opts->parts_in_flight)
                cfg.parts_in_flight = opts->parts_in_flight;
            if (opts && opts->max_attempts)
                cfg.max_attempts = opts->max_attempts;
            if (opts && opts->backoff_base_s > 0)
                cfg.backoff_base_s = opts->backoff_base_s;
            if (opts && opts->low_speed_time_s > 0)
                cfg.low_speed_time_s = opts->low_speed_time_s;
            s->put_max = opts && opts->put_max       ? opts->put_max
                         : opts && opts->part_size ? opts->part_size
                                                   : STORE_PUT_MAX_DEFAULT;
            rc = s3_client_create(&cfg, &s->s3, err);
            s3_config_release(&cfg);
        }
    } else {
        s->dir = strdup(s->location);
        if (!s->dir)
            rc = pm_error_set(err, PM_ERR_NOMEM, "out of memory");
        else
            rc = mkdirs(s->dir, err);
    }
    if (rc != PM_OK) {
        store_free(s);
        return rc;
    }
    *out = s;
    return PM_OK;
}

void store_free(struct store *s)
{
    if (!s)
        return;
    s3_client_free(s->s3);
    free(s->bucket);
    free(s->prefix);
    free(s->dir);
    free(s->location);
    free(s);
}

bool store_is_s3(const struct store *s)
{
    return s->s3 != NULL;
}

const char *store_location(const struct store *s)
{
    return s->location;
}

// ---------------------------------------------------------------- writers

int store_writer_open(struct store *s, const char *name, struct store_writer **out,
                      struct pm_error *err)
{
    *out = NULL;
    int rc = check_name(name, err);
    if (rc != PM_OK)
        return rc;
    struct store_writer *w = calloc(1, sizeof *w);
    if (!w)
        return pm_error_set(err, PM_ERR_NOMEM, "out of memory");
    w->s = s;
    w->name = object_name(s, name);
    w->key = object_path(s, name);
    bytebuf_init(&w->small, 0);
    if (!w->name || !w->key) {
        store_writer_free(w);
        return pm_error_set(err, PM_ERR_NOMEM, "out of memory");
    }
    if (!s->s3) {
        char *slash = strrchr(w->key, '/');
        if (slash && strchr(name, '/')) {
            *slash = 0;
            rc = mkdirs(w->key, err);
            *slash = '/';
        }
        if (rc == PM_OK)
            rc = atomic_file_open(w->key, &w->file, err);
        if (rc != PM_OK) {
            store_writer_free(w);
            return rc;
        }
    }
    *out = w;
    return PM_OK;
}

int store_writer_write(struct store_writer *w, const void *data, size_t n, struct pm_error *err)
{
    if (w->failed || w->committed)
        return pm_error_set(err, PM_ERR_USAGE, "object '%s' is %s", w->name,
                            w->committed ? "committed" : "unusable after an earlier error");
    int rc = PM_OK;
    if (w->file) {
        rc = atomic_file_write(w->file, data, n, err);
    } else if (w->up) {
        rc = s3_upload_write(w->up, data, n, err);
    } else {
        if (w->small.len + n < w->s->put_max) {
            if (bytebuf_append(&w->small, data, n) != PM_OK)
                rc = pm_error_set(err, PM_ERR_NOMEM, "out of memory writing '%s'", w->name);
        } else {
            // too big for one PUT buffer: switch to a multipart upload
            rc = s3_upload_create(w->s->s3, w->s->bucket, w->key, &w->up, err);
            if (rc == PM_OK && w->small.len)
                rc = s3_upload_write(w->up, w->small.data, w->small.len, err);
            bytebuf_release(&w->small);
            if (rc == PM_OK)
                rc = s3_upload_write(w->up, data, n, err);
        }
    }
    if (rc != PM_OK) {
        w->failed = true;
        return rc;
    }
    w->bytes += n;
    return PM_OK;
}

int store_writer_commit(struct store_writer *w, struct pm_error *err)
{
    if (w->failed || w->committed) {
        store_writer_abort(w);
        return pm_error_set(err, PM_ERR_USAGE, "object '%s' is %s", w->name,
                            w->committed ? "committed twice" : "unusable after an earlier error");
    }
    int rc;
    if (w->file)
        rc = atomic_file_commit(w->file, err);
    else if (w->up)
        rc = s3_upload_complete(w->up, err);
    else
        rc = s3_client_put(w->s->s3, w->s->bucket, w->key, w->small.data, w->small.len, err);
    bytebuf_release(&w->small);
    if (rc != PM_OK) {
        w->failed = true;
        store_writer_abort(w);
        return rc;
    }
    w->committed = true;
    return PM_OK;
}

void store_writer_abort(struct store_writer *w)
{
    if (!w || w->committed)
        return;
    w->failed = true;
    if (w->file)
        atomic_file_abort(w->file);
    if (w->up)
        s3_upload_abort(w->up);
    bytebuf_release(&w->small);
}

const char *store_writer_name(const struct store_writer *w)
{
    return w->name;
}

uint64_t store_writer_bytes(const struct store_writer *w)
{
    return w->bytes;
}

void store_writer_free(struct store_writer *w)
{
    if (!w)
        return;
    store_writer_abort(w);
    atomic_file_free(w->file);
    s3_upload_free(w->up);
    bytebuf_release(&w->small);
    free(w->name);
    free(w->key);
    free(w);
}

size_t store_put_max(const struct store *s)
{
    return s->s3 ? s->put_max : SIZE_MAX;
}

int store_write_all(struct store *s, const char *name, const void *data, size_t n,
                    struct pm_error *err)
{
    int rc = check_name(name, err);
    if (rc != PM_OK)
        return rc;
    if (s->s3 && n < s->put_max) {
        char *key = object_path(s, name);
        if (!key)
            return pm_error_set(err, PM_ERR_NOMEM, "out of memory");
        rc = s3_client_put(s->s3, s->bucket, key, data, n, err);
        free(key);
        return rc;
    }
    struct store_writer *w;
    rc = store_writer_open(s, name, &w, err);
    if (rc == PM_OK)
        rc = store_writer_write(w, data, n, err);
    if (rc == PM_OK)
        rc = store_writer_commit(w, err);
    store_writer_free(w);
    return rc;
}

// ---------------------------------------------------------------- reading

int store_read(struct store *s, const char *name, uint64_t off, uint64_t len, store_sink_fn sink,
               void *ctx, uint64_t *got, struct pm_error *err)
{
    if (got)
        *got = 0;
    int rc = check_name(name, err);
    if (rc != PM_OK)
        return rc;
    char *path = object_path(s, name);
    if (!path)
        return pm_error_set(err, PM_ERR_NOMEM, "out of memory");
    if (s->s3) {
        rc = s3_client_get(s->s3, s->bucket, path, off, len, sink, ctx, got, err);
        free(path);
        return rc;
    }
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        int e = errno;
        rc = pm_error_set(err, e == ENOENT ? PM_ERR_NOT_FOUND : PM_ERR_IO, "cannot open '%s': %s",
                          path, strerror(e));
        free(path);
        return rc;
    }
    char *buf = malloc(1 << 20);
    if (!buf) {
        close(fd);
        free(path);
        return pm_error_set(err, PM_ERR_NOMEM, "out of memory");
    }
    uint64_t pos = off, done = 0;
    while (done < len) {
        size_t want = 1 << 20;
        if (len - done < want)
            want = (size_t)(len - done);
        ssize_t r = pread(fd, buf, want, (off_t)pos);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            rc = pm_error_set(err, PM_ERR_IO, "cannot read '%s': %s", path, strerror(errno));
            break;
        }
        if (r == 0)
            break;
        if (sink(ctx, buf, (size_t)r) != 0) {
            rc = pm_error_set(err, PM_ERR_INTERRUPTED, "reading '%s' stopped by the reader", path);
            break;
        }
        pos += (uint64_t)r;
        done += (uint64_t)r;
    }
    if (got)
        *got = done;
    free(buf);
    close(fd);
    free(path);
    return rc;
}

struct buf_sink {
    struct bytebuf *b;
    int rc;
};

static int bytebuf_sink(void *ctx, const void *data, size_t n)
{
    struct buf_sink *bs = ctx;
    bs->rc = bytebuf_append(bs->b, data, n);
    return bs->rc != PM_OK;
}

int store_read_all(struct store *s, const char *name, struct bytebuf *out, struct pm_error *err)
{
    struct buf_sink bs = {out, PM_OK};
    int rc = store_read(s, name, 0, UINT64_MAX, bytebuf_sink, &bs, NULL, err);
    if (bs.rc != PM_OK)
        return pm_error_set(err, bs.rc, "cannot read '%s/%s': %s", s->location, name,
                            bs.rc == PM_ERR_LIMIT ? "larger than the buffer's limit"
                                                  : "out of memory");
    return rc;
}

int store_size(struct store *s, const char *name, uint64_t *size, struct pm_error *err)
{
    int rc = check_name(name, err);
    if (rc != PM_OK)
        return rc;
    char *path = object_path(s, name);
    if (!path)
        return pm_error_set(err, PM_ERR_NOMEM, "out of memory");
    if (s->s3) {
        rc = s3_client_head(s->s3, s->bucket, path, size, err);
    } else {
        struct stat st;
        if (stat(path, &st) != 0)
            rc = pm_error_set(err, errno == ENOENT ? PM_ERR_NOT_FOUND : PM_ERR_IO,
                              "cannot stat '%s': %s", path, strerror(errno));
        else if (!S_ISREG(st.st_mode))
            rc = pm_error_set(err, PM_ERR_NOT_FOUND, "'%s' is not a regular file", path);
        else if (size)
            *size = (uint64_t)st.st_size;
    }
    free(path);
    return rc;
}

int store_exists(struct store *s, const char *name, bool *exists, struct pm_error *err)
{
    struct pm_error e = PM_ERROR_INIT;
    int rc = store_size(s, name, NULL, &e);
    *exists = rc == PM_OK;
    if (rc == PM_ERR_NOT_FOUND)
        return PM_OK;
    if (rc != PM_OK && err)
        *err = e;
    return rc;
}

// ---------------------------------------------------------------- listing

struct s3_list_ctx {
    const char *prefix;
    store_list_fn fn;
    void *ctx;
};

static int s3_list_cb(void *ctx, const char *key, uint64_t size)
{
    struct s3_list_ctx *l = ctx;
    size_t pl = strlen(l->prefix);
    if (strncmp(key, l->prefix, pl) != 0 || !key[pl])
        return 0;
    return l->fn(l->ctx, key + pl, size);
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

// Walk `dir` (rel: its name relative to the store, "" for the root). Returns PM_OK, an
// error, or -1 when the callback asked to stop.
// With `temps`, fn receives the temporary files of unfinished writes instead of the
// objects.
static int posix_walk(const char *dir, const char *rel, store_list_fn fn, void *ctx, bool sweep,
                      bool temps, double min_age_s, size_t *removed, struct pm_error *err)
{
    DIR *d = opendir(dir);
    if (!d)
        return pm_error_set(err, PM_ERR_IO, "cannot open directory '%s': %s", dir, strerror(errno));
    char **names = NULL;
    size_t n = 0, cap = 0;
    int rc = PM_OK;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
            continue;
        if (n == cap) {
            cap = cap ? 2 * cap : 64;
            char **nn = realloc(names, cap * sizeof *nn);
            if (!nn) {
                rc = pm_error_set(err, PM_ERR_NOMEM, "out of memory");
                break;
            }
            names = nn;
        }
        if (!(names[n] = strdup(e->d_name))) {
            rc = pm_error_set(err, PM_ERR_NOMEM, "out of memory");
            break;
        }
        n++;
    }
    closedir(d);
    if (rc == PM_OK && n) // qsort(NULL, 0) is undefined (an empty directory)
        qsort(names, n, sizeof *names, cmp_str);
    if (rc == PM_OK && sweep) {
        size_t k = 0;
        rc = atomic_file_sweep(dir, min_age_s, &k, err);
        *removed += k;
    }
    for (size_t i = 0; i < n && rc == PM_OK; i++) {
        if (!temps && atomic_file_is_temp_name(names[i]))
            continue;
        char *path = join(dir, "/", names[i]);
        char *r = *rel ? join(rel, "/", names[i]) : strdup(names[i]);
        struct stat st;
        if (!path || !r)
            rc = pm_error_set(err, PM_ERR_NOMEM, "out of memory");
        else if (stat(path, &st) != 0)
            rc = errno == ENOENT
                     ? PM_OK
                     : pm_error_set(err, PM_ERR_IO, "cannot stat '%s': %s", path, strerror(errno));
        else if (S_ISDIR(st.st_mode))
            rc = posix_walk(path, r, fn, ctx, sweep, temps, min_age_s, removed, err);
        else if (S_ISREG(st.st_mode) && fn && atomic_file_is_temp_name(names[i]) == temps &&
                 fn(ctx, r, (uint64_t)st.st_size) != 0)
            rc = -1;
        free(path);
        free(r);
    }
    for (size_t i = 0; i < n; i++)
        free(names[i]);
    free(names);
    return rc;
}

int store_list(struct store *s, store_list_fn fn, void *ctx, struct pm_error *err)
{
    if (s->s3) {
        struct s3_list_ctx l = {s->prefix, fn, ctx};
        return s3_client_list(s->s3, s->bucket, s->prefix, s3_list_cb, &l, err);
    }
    int rc = posix_walk(s->dir, "", fn, ctx, false, false, 0, NULL, err);
    return rc == -1 ? PM_OK : rc;
}

struct incomplete_ctx {
    const char *prefix;
    store_incomplete_fn fn;
    void *ctx;
};

static int s3_upload_cb(void *ctx, const char *key, const char *upload_id, const char *initiated)
{
    (void)upload_id;
    struct incomplete_ctx *l = ctx;
    size_t pl = strlen(l->prefix);
    if (strncmp(key, l->prefix, pl) != 0 || !key[pl])
        return 0;
    return l->fn(l->ctx, key + pl, initiated);
}

static int posix_temp_cb(void *ctx, const char *name, uint64_t size)
{
    (void)size;
    struct incomplete_ctx *l = ctx;
    return l->fn(l->ctx, name, NULL);
}

int store_temp_path(char *buf, size_t size, struct pm_error *err)
{
    const char *dir = getenv("TMPDIR");
    if (!dir || !dir[0])
        dir = "/tmp";
    int n = snprintf(buf, size, "%s/pixelmill.XXXXXX", dir);
    if (n < 0 || (size_t)n >= size)
        return pm_error_set(err, PM_ERR_LIMIT, "temporary directory '%s': path too long", dir);
    int fd = mkstemp(buf);
    if (fd < 0)
        return pm_error_set(err, PM_ERR_IO, "cannot create a temporary file in '%s': %s", dir,
                            strerror(errno));
    close(fd);
    return PM_OK;
}

static int sink_file(void *ctx, const void *data, size_t n)
{
    return fwrite(data, 1, n, ctx) != n;
}

int store_local_path(struct store *s, const char *name, char *buf, size_t size, bool *temp,
                     struct pm_error *err)
{
    *temp = false;
    int rc = check_name(name, err);
    if (rc != PM_OK)
        return rc;
    if (!s->s3) {
        int n = snprintf(buf, size, "%s/%s", s->dir, name);
        if (n < 0 || (size_t)n >= size)
            return pm_error_set(err, PM_ERR_LIMIT, "path of '%s/%s' too long", s->dir, name);
        if (access(buf, F_OK) != 0)
            return pm_error_set(err, errno == ENOENT ? PM_ERR_NOT_FOUND : PM_ERR_IO,
                                "cannot open '%s': %s", buf, strerror(errno));
        return PM_OK;
    }
    if ((rc = store_temp_path(buf, size, err)) != PM_OK)
        return rc;
    FILE *f = fopen(buf, "wb");
    if (!f) {
        rc = pm_error_set(err, PM_ERR_IO, "cannot write '%s': %s", buf, strerror(errno));
        unlink(buf);
        return rc;
    }
    rc = store_read(s, name, 0, UINT64_MAX, sink_file, f, NULL, err);
    if (rc == PM_ERR_INTERRUPTED)
        rc = pm_error_set(err, PM_ERR_IO, "cannot write '%s': %s", buf, strerror(errno));
    if (fclose(f) != 0 && rc == PM_OK)
        rc = pm_error_set(err, PM_ERR_IO, "cannot write '%s': %s", buf, strerror(errno));
    if (rc != PM_OK)
        unlink(buf);
    else
        *temp = true;
    return rc;
}

int store_list_incomplete(struct store *s, store_incomplete_fn fn, void *ctx, struct pm_error *err)
{
    struct incomplete_ctx l = {s->s3 ? s->prefix : "", fn, ctx};
    int rc = s->s3 ? s3_client_list_uploads(s->s3, s->bucket, s->prefix, s3_upload_cb, &l, err)
                   : posix_walk(s->dir, "", posix_temp_cb, &l, false, true, 0, NULL, err);
    return rc == -1 ? PM_OK : rc;
}

int store_delete(struct store *s, const char *name, struct pm_error *err)
{
    int rc = check_name(name, err);
    if (rc != PM_OK)
        return rc;
    char *path = object_path(s, name);
    if (!path)
        return pm_error_set(err, PM_ERR_NOMEM, "out of memory");
    if (s->s3)
        rc = s3_client_delete(s->s3, s->bucket, path, err);
    else if (unlink(path) != 0 && errno != ENOENT)
        rc = pm_error_set(err, PM_ERR_IO, "cannot remove '%s': %s", path, strerror(errno));
    free(path);
    return rc;
}

int store_sweep_incomplete(struct store *s, double min_age_s, size_t *removed, struct pm_error *err)
{
    size_t n = 0;
    int rc;
    if (s->s3)
        rc = s3_client_sweep_uploads(s->s3, s->bucket, s->prefix, min_age_s, &n, err);
    else
        rc = posix_walk(s->dir, "", NULL, NULL, true, false, min_age_s, &n, err);
    if (removed)
        *removed = n;
    return rc;
}
