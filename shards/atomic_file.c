#include "atomic_file.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

struct atomic_file {
    int fd;
    bool committed;
    char *path;
    char *tmp_path;
    char *dir;   // "." when the path has no directory part
    bool nosync; // commit without fsync (atomic_file_set_sync)
};

static uint64_t random_u64(void)
{
    uint64_t r = 0;
    if (getrandom(&r, sizeof r, GRND_NONBLOCK) == (ssize_t)sizeof r)
        return r;
    // fallback: time and a counter, mixed (splitmix64); O_EXCL catches collisions anyway
    static uint64_t counter;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    uint64_t z = ((uint64_t)ts.tv_sec * 1000000007u) ^ (uint64_t)ts.tv_nsec ^
                 ((uint64_t)getpid() << 32) ^ ++counter;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static int fsync_dir(const char *dir, struct pm_error *err)
{
    int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0)
        return pm_error_set(err, PM_ERR_IO, "cannot open directory '%s': %s", dir, strerror(errno));
    int rc = PM_OK;
    if (fsync(dfd) != 0 && errno != EINVAL && errno != EROFS)
        rc = pm_error_set(err, PM_ERR_IO, "cannot fsync directory '%s': %s", dir, strerror(errno));
    close(dfd);
    return rc;
}

int atomic_file_open(const char *path, struct atomic_file **out, struct pm_error *err)
{
    *out = NULL;
    size_t len = path ? strlen(path) : 0;
    if (len == 0 || path[len - 1] == '/')
        return pm_error_set(err, PM_ERR_USAGE, "atomic_file: invalid file path '%s'",
                            path ? path : "");
    struct atomic_file *f = calloc(1, sizeof *f);
    if (!f)
        return pm_error_set(err, PM_ERR_NOMEM, "out of memory opening '%s'", path);
    f->fd = -1;
    f->path = strdup(path);
    const char *slash = strrchr(path, '/');
    const char *base = slash ? slash + 1 : path;
    size_t dirlen = slash ? (size_t)(slash - path) : 0;
    f->dir = slash ? (dirlen ? strndup(path, dirlen) : strdup("/")) : strdup(".");
    // ".NAME.tmp.<pid>.<16 hex>" in the same directory
    size_t cap = len + 64;
    f->tmp_path = malloc(cap);
    if (!f->path || !f->dir || !f->tmp_path) {
        atomic_file_free(f);
        return pm_error_set(err, PM_ERR_NOMEM, "out of memory opening '%s'", path);
    }
    for (int attempt = 0; attempt < 16; attempt++) {
        snprintf(f->tmp_path, cap, "%.*s.%s.tmp.%ld.%016llx", (int)(base - path), path, base,
                 (long)getpid(), (unsigned long long)random_u64());
        f->fd = open(f->tmp_path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
        if (f->fd >= 0 || errno != EEXIST)
            break;
    }
    if (f->fd < 0) {
        int e = errno;
        pm_error_set(err, PM_ERR_IO, "cannot create temporary file '%s' for '%s': %s", f->tmp_path,
                     path, strerror(e));
        free(f->tmp_path);
        f->tmp_path = NULL; // nothing to remove
        atomic_file_free(f);
        return PM_ERR_IO;
    }
    *out = f;
    return PM_OK;
}

int atomic_file_fd(const struct atomic_file *f)
{
    return f ? f->fd : -1;
}

const char *atomic_file_path(const struct atomic_file *f)
{
    return f->path;
}

const char *atomic_file_temp_path(const struct atomic_file *f)
{
    return f->tmp_path;
}

void atomic_file_set_sync(struct atomic_file *f, bool sync)
{
    f->nosync = !sync;
}

int atomic_file_write(struct atomic_file *f, const void *data, size_t n, struct pm_error *err)
{
    if (f->fd < 0)
        return pm_error_set(err, PM_ERR_USAGE, "write to '%s' after commit or abort", f->path);
    const char *p = data;
    while (n > 0) {
        ssize_t w = write(f->fd, p, n);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return pm_error_set(err, PM_ERR_IO, "cannot write '%s' (temporary '%s'): %s", f->path,
                                f->tmp_path, strerror(errno));
        }
        p += w;
        n -= (size_t)w;
    }
    return PM_OK;
}

int atomic_file_commit(struct atomic_file *f, struct pm_error *err)
{
    if (f->fd < 0)
        return pm_error_set(err, PM_ERR_USAGE, "commit of '%s' after commit or abort", f->path);
    if (!f->nosync && fsync(f->fd) != 0) {
        int e = errno;
        atomic_file_abort(f);
        return pm_error_set(err, PM_ERR_IO, "cannot fsync '%s': %s", f->path, strerror(e));
    }
    int rc = close(f->fd);
    f->fd = -1;
    if (rc != 0) {
        int e = errno;
        unlink(f->tmp_path);
        return pm_error_set(err, PM_ERR_IO, "cannot close '%s': %s", f->path, strerror(e));
    }
    if (rename(f->tmp_path, f->path) != 0) {
        int e = errno;
        unlink(f->tmp_path);
        return pm_error_set(err, PM_ERR_IO, "cannot rename '%s' to '%s': %s", f->tmp_path, f->path,
                            strerror(e));
    }
    f->committed = true;
    return f->nosync ? PM_OK : fsync_dir(f->dir, err);
}

void atomic_file_abort(struct atomic_file *f)
{
    if (!f || f->committed)
        return;
    if (f->fd >= 0) {
        close(f->fd);
        f->fd = -1;
    }
    if (f->tmp_path) {
        unlink(f->tmp_path);
        free(f->tmp_path);
        f->tmp_path = NULL;
    }
}

void atomic_file_free(struct atomic_file *f)
{
    if (!f)
        return;
    atomic_file_abort(f);
    free(f->path);
    free(f->tmp_path);
    free(f->dir);
    free(f);
}

int atomic_file_write_all(const char *path, const void *data, size_t n, struct pm_error *err)
{
    struct atomic_file *f;
    int rc = atomic_file_open(path, &f, err);
    if (rc == PM_OK)
        rc = atomic_file_write(f, data, n, err);
    if (rc == PM_OK)
        rc = atomic_file_commit(f, err);
    atomic_file_free(f);
    return rc;
}

bool atomic_file_is_temp_name(const char *name)
{
    // ".NAME.tmp.<digits>.<16 hex>" with NAME non-empty
    size_t len = strlen(name);
    if (len < 1 + 1 + 5 + 1 + 1 + 16 || name[0] != '.')
        return false;
    const char *hex = name + len - 16;
    for (int i = 0; i < 16; i++) {
        char c = hex[i];
        if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f')))
            return false;
    }
    if (hex[-1] != '.')
        return false;
    const char *d = hex - 2; // last digit of the pid
    const char *end = d;
    while (d > name && *d >= '0' && *d <= '9')
        d--;
    if (d == end) // no digits
        return false;
    // d points at the '.' before the pid; it must end ".tmp."
    if (d - name < 1 + 1 + 4 || strncmp(d - 4, ".tmp.", 5) != 0)
        return false;
    return true;
}

int atomic_file_sweep(const char *dir, double min_age_s, size_t *removed, struct pm_error *err)
{
    if (removed)
        *removed = 0;
    DIR *d = opendir(dir);
    if (!d)
        return pm_error_set(err, PM_ERR_IO, "cannot open directory '%s': %s", dir, strerror(errno));
    int dfd = dirfd(d);
    time_t now = time(NULL);
    int rc = PM_OK;
    for (;;) {
        errno = 0;
        struct dirent *e = readdir(d);
        if (!e)
            break;
        if (!atomic_file_is_temp_name(e->d_name))
            continue;
        struct stat st;
        if (fstatat(dfd, e->d_name, &st, AT_SYMLINK_NOFOLLOW) != 0) {
            if (errno == ENOENT)
                continue; // removed meanwhile
            rc = pm_error_set(err, PM_ERR_IO, "cannot stat '%s/%s': %s", dir, e->d_name,
                              strerror(errno));
            break;
        }
        if (!S_ISREG(st.st_mode))
            continue;
        if (min_age_s > 0 && difftime(now, st.st_mtime) < min_age_s)
            continue;
        if (unlinkat(dfd, e->d_name, 0) != 0) {
            if (errno == ENOENT)
                continue;
            rc = pm_error_set(err, PM_ERR_IO, "cannot remove '%s/%s': %s", dir, e->d_name,
                              strerror(errno));
            break;
        }
        if (removed)
            (*removed)++;
    }
    if (rc == PM_OK && errno != 0)
        rc = pm_error_set(err, PM_ERR_IO, "cannot read directory '%s': %s", dir, strerror(errno));
    closedir(d);
    return rc;
}
