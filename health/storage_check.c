#define _GNU_SOURCE // O_DIRECT
#include "storage_check.h"

#include "pm_error.h"

#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>

#define BLOCK (1u << 20)
#define ALIGN 4096

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

// Block b of the pattern: xorshift64 seeded by the run's seed and the block index, so a
// block read back at the wrong offset or from a stale file does not compare equal.
static void fill_block(uint64_t *w, uint64_t seed, uint64_t b)
{
    uint64_t x = seed ^ (b * 0x9E3779B97F4A7C15ull) ^ 0xD1B54A32D192ED03ull;
    for (size_t i = 0; i < BLOCK / 8; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        w[i] = x;
    }
}

static int add(struct health_report *r, const char *name, enum health_status s, const char *what,
               const char *path, int e)
{
    return health_report_add(r, name, s, "%s '%s': %s", what, path, strerror(e)) ? PM_OK
                                                                                 : PM_ERR_NOMEM;
}

// Write the file; returns the seconds taken (including fsync) or -1 with errno set.
static double write_file(const char *file, unsigned mib, uint64_t seed, void *buf)
{
    int fd = open(file, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0)
        return -1;
    double t0 = now_s();
    for (unsigned b = 0; b < mib; b++) {
        fill_block(buf, seed, b);
        size_t off = 0;
        while (off < BLOCK) {
            ssize_t k = write(fd, (char *)buf + off, BLOCK - off);
            if (k < 0 && errno == EINTR)
                continue;
            if (k <= 0) {
                int e = k < 0 ? errno : ENOSPC;
                close(fd);
                errno = e;
                return -1;
            }
            off += (size_t)k;
        }
    }
    if (fsync(fd) != 0) {
        int e = errno;
        close(fd);
        errno = e;
        return -1;
    }
    double t = now_s() - t0;
    if (close(fd) != 0)
        return -1;
    return t;
}

// Read the file back and compare; returns seconds, -1 with errno on I/O error, -2 on a
// mismatch (block index in *bad). *method says how the cache was bypassed.
static double read_file(const char *file, unsigned mib, uint64_t seed, void *buf, void *want,
                        const char **method, unsigned *bad)
{
    *method = "O_DIRECT";
    int fd = open(file, O_RDONLY | O_DIRECT | O_CLOEXEC);
    if (fd < 0 && errno == EINVAL) {
        fd = open(file, O_RDONLY | O_CLOEXEC);
        *method = "fadvise(DONTNEED)";
        if (fd >= 0)
            posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
    }
    if (fd < 0)
        return -1;
    double t0 = now_s();
    double tfill = 0;
    for (unsigned b = 0; b < mib; b++) {
        size_t off = 0;
        while (off < BLOCK) {
            ssize_t k = read(fd, (char *)buf + off, BLOCK - off);
            if (k < 0 && errno == EINTR)
                continue;
            if (k < 0 && errno == EINVAL && b == 0 && off == 0 && (*method)[0] == 'O') {
                // O_DIRECT accepted at open but not at read (some FUSE/overlay mounts)
                int fd2 = open(file, O_RDONLY | O_CLOEXEC);
                if (fd2 < 0)
                    break;
                close(fd);
                fd = fd2;
                posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
                *method = "fadvise(DONTNEED)";
                continue;
            }
            if (k <= 0) {
                int e = k < 0 ? errno : EIO;
                close(fd);
                errno = e;
                return -1;
            }
            off += (size_t)k;
        }
        double tf = now_s();
        fill_block(want, seed, b);
        int differ = memcmp(buf, want, BLOCK) != 0;
        tfill += now_s() - tf; // the comparison is not I/O: keep it out of the rate
        if (differ) {
            close(fd);
            *bad = b;
            return -2;
        }
    }
    double t = now_s() - t0 - tfill;
    close(fd);
    return t;
}

int storage_check_run(struct health_report *r, const struct storage_check_opts *o)
{
    const double gib = 1024.0 * 1024 * 1024;
    struct statvfs sv;
    if (statvfs(o->path, &sv) != 0)
        return add(r, "storage.free", HEALTH_FAIL, "cannot stat", o->path, errno);
    double free_b = (double)sv.f_bavail * (double)sv.f_frsize;
    double total_b = (double)sv.f_blocks * (double)sv.f_frsize;
    enum health_status s =
        o->min_free_gib > 0 && free_b < o->min_free_gib * gib ? HEALTH_FAIL : HEALTH_OK;
    struct health_result *res =
        health_report_add(r, "storage.free", s, "%.1f GiB free of %.1f GiB on %s%s", free_b / gib,
                          total_b / gib, o->path, s == HEALTH_FAIL ? " (below the minimum)" : "");
    if (!res)
        return PM_ERR_NOMEM;
    health_result_measure(res, free_b, "pixelmill_doctor_storage_free_bytes",
                          "Bytes free for unprivileged users on the checked path");

    unsigned mib = o->mib ? o->mib : 1;
    void *buf = NULL, *want = NULL;
    if (posix_memalign(&buf, ALIGN, BLOCK) || posix_memalign(&want, ALIGN, BLOCK)) {
        free(buf);
        return PM_ERR_NOMEM;
    }
    char file[4096];
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    uint64_t seed = (uint64_t)ts.tv_nsec * 2654435761u ^ (uint64_t)getpid();
    snprintf(file, sizeof file, "%s/.pixelmill-doctor-%ld-%08llx.tmp", o->path, (long)getpid(),
             (unsigned long long)(seed & 0xffffffffu));
    int rc = PM_OK;
    double tw = write_file(file, mib, seed, buf);
    if (tw < 0) {
        rc = add(r, "storage.write", HEALTH_FAIL, "cannot write", file, errno);
        goto out;
    }
    double bytes = (double)mib * BLOCK;
    double wmbps = bytes / (tw > 0 ? tw : 1e-9) / 1e6;
    s = o->min_write_mbps > 0 && wmbps < o->min_write_mbps ? HEALTH_FAIL : HEALTH_OK;
    res = health_report_add(r, "storage.write", s, "%.0f MB/s (%u MiB, fsync)%s", wmbps, mib,
                            s == HEALTH_FAIL ? " below the minimum" : "");
    if (!res) {
        rc = PM_ERR_NOMEM;
        goto out;
    }
    health_result_measure(res, wmbps * 1e6, "pixelmill_doctor_storage_write_bytes_per_second",
                          "Sequential write rate including fsync");
    const char *method;
    unsigned bad = 0;
    double tr = read_file(file, mib, seed, buf, want, &method, &bad);
    if (tr == -2) {
        res = health_report_add(r, "storage.read", HEALTH_FAIL,
                                "data read back differs from data written (MiB block %u)", bad);
        rc = res ? PM_OK : PM_ERR_NOMEM;
        goto out;
    }
    if (tr < 0) {
        rc = add(r, "storage.read", HEALTH_FAIL, "cannot read back", file, errno);
        goto out;
    }
    double rmbps = bytes / (tr > 0 ? tr : 1e-9) / 1e6;
    s = o->min_read_mbps > 0 && rmbps < o->min_read_mbps ? HEALTH_FAIL : HEALTH_OK;
    res = health_report_add(r, "storage.read", s, "%.0f MB/s (%u MiB, %s, verified)%s", rmbps, mib,
                            method, s == HEALTH_FAIL ? " below the minimum" : "");
    if (!res) {
        rc = PM_ERR_NOMEM;
        goto out;
    }
    health_result_measure(res, rmbps * 1e6, "pixelmill_doctor_storage_read_bytes_per_second",
                          "Sequential read rate, page cache bypassed");
out:
    unlink(file);
    free(buf);
    free(want);
    return rc;
}
