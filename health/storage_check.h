/**
 * storage_check — free space and sequential write/read speed of a scratch or shared
 * directory (local NVMe, FSx for Lustre, NFS) for `pixelmill doctor --storage PATH`.
 *
 * Method: statvfs() gives the space available to unprivileged users. Then a file
 * PATH/.pixelmill-doctor-PID-RAND.tmp is written in 1 MiB blocks of a seeded pattern,
 * fsync()ed (the write time includes the fsync, so it is the rate at which data reaches
 * the device or server, not the page cache), closed, and read back with O_DIRECT so the
 * page cache is bypassed; on file systems without O_DIRECT (tmpfs, some FUSE) it is read
 * after posix_fadvise(POSIX_FADV_DONTNEED), which drops the file's clean cached pages
 * (the detail says which was used; on tmpfs the "read" is a memory copy). Every block
 * read is compared with the pattern written: a mismatch fails the check. The file is
 * removed afterwards, also on failure. MB/s are 10^6 bytes per second.
 */
#ifndef PM_STORAGE_CHECK_H
#define PM_STORAGE_CHECK_H

#include "health_report.h"

struct storage_check_opts {
    const char *path;      // directory to test
    unsigned mib;          // MiB written and read (>= 1)
    double min_free_gib;   // fail below this much free space (0 = no minimum)
    double min_write_mbps; // fail below this write rate (0 = no minimum)
    double min_read_mbps;  // fail below this read rate (0 = no minimum)
};

/**
 * Append the rows "storage.free", "storage.write" and "storage.read" for opts->path
 * (a failing write skips the read). Returns PM_OK or PM_ERR_NOMEM.
 */
int storage_check_run(struct health_report *r, const struct storage_check_opts *opts);

#endif
