/**
 * download_unit — the hot path of `pixelmill download`: turn one unit (one slice of input
 * rows, see download_plan.h) into one shard.
 *
 * A `struct download_engine` lives for the whole run of a rank: one fetcher (libcurl
 * multi, `concurrency` transfers in flight) driven by the calling thread, and a pool of
 * `threads` decode workers, each with its own image context and pixel buffers. For each
 * unit the calling thread reads the unit's slice, gives every row a pre-status where one
 * applies (missing url, duplicate from the url dedupe, --where), submits the other URLs
 * (at most a window of 4 x concurrency rows ahead of the oldest unwritten row), hands
 * each downloaded body (moved, not copied) to a worker that decodes it (reduced decode
 * for the resize target, `max_pixels` checked from the header), applies the size filters
 * on the original size, resizes, encodes, hashes the original bytes (XXH3-128) and the
 * decoded pixels (pHash), and writes finished rows to the tar in input order as soon as
 * the oldest unwritten row is resolved. Memory is bounded by the window, not by the unit.
 *
 * Commit order: NNNNN.tar, NNNNN.parquet (one row per input row), NNNNN_stats.json (last,
 * its presence marks the shard complete). Temporary files are removed when a unit fails
 * or is interrupted, so nothing partial ever sits under a final name.
 *
 * One engine per rank; used by one thread (the workers are internal).
 */
#ifndef PM_DOWNLOAD_UNIT_H
#define PM_DOWNLOAD_UNIT_H

#include "download_plan.h"
#include "fetcher.h"
#include "filter_expr.h"
#include "image_encode.h"
#include "image_resize.h"
#include "pm_error.h"
#include "store.h"

#include <stddef.h>
#include <stdint.h>

/** What happened to an input row (the sidecar's `status`). */
enum download_status {
    DL_SUCCESS = 0,
    DL_FAILED_TO_DOWNLOAD,
    DL_FAILED_TO_DECODE,
    DL_FILTERED,
    DL_DISALLOWED,
    DL_BLOCKED,
    DL_DUPLICATE,
    DL_NSTATUS
};

/** "success", "failed_to_download", ... */
const char *download_status_name(enum download_status s);

/** Settings of a run (the engine keeps pointers: they must outlive it). */
struct download_unit_config {
    const char *output;               /* directory holding _work/ (plan slices, dedupe lists) */
    struct store *store;              /* the dataset: shards, sidecars, stats (store.h) */
    const struct download_plan *plan; /* columns of the slices */
    const char *url_col;              /* name of the URL column (a slice column) */
    const char *caption_col;          /* NULL: no caption */
    const char *const *keep_cols;     /* carried columns (slice columns) */
    size_t nkeep;
    const char *const *where; /* --where strings */
    size_t nwhere;
    int dedupe_urls; /* read _work/dedupe-urls/NNNNN.bin per unit */
    struct image_resize_params resize;
    struct image_encode_opts encode;
    uint64_t max_pixels;
    int min_image_size;      /* 0: none */
    double max_image_area;   /* 0: none */
    double max_aspect_ratio; /* 0: none */
    int concurrency;         /* fetcher.concurrency */
    int threads;             /* decode workers */
    int64_t tar_mtime;       /* mtime of tar members */
    struct fetcher_config fetch;
};

/** Called on the engine's thread for every row when it is resolved, and while waiting. */
struct download_hooks {
    void *arg;
    /* a row got its status; `error_class` is NULL on success; bytes: body bytes fetched */
    void (*on_row)(void *arg, enum download_status st, const char *error_class, uint64_t bytes_in,
                   uint64_t bytes_out);
    /* called every few milliseconds while the unit runs (progress, MPI progress) */
    void (*on_poll)(void *arg);
};

struct download_engine;

/**
 * Create the engine: parse and bind the filters, find the columns, start the workers and
 * the fetcher. Returns PM_OK, PM_ERR_USAGE (bad column or filter), PM_ERR_NOMEM, ...
 */
int download_engine_create(const struct download_unit_config *cfg,
                           const struct download_hooks *hooks, struct download_engine **out,
                           struct pm_error *err);

/** Stop the workers and free everything. Accepts NULL. */
void download_engine_free(struct download_engine *e);

/**
 * Process unit `unit` and commit its three files. Returns PM_OK; PM_ERR_INTERRUPTED when
 * pm_signal_pending() became true (the unit's temporary files are removed, the engine
 * must not be used again); other codes for I/O and format errors (nothing committed
 * under a final name unless the tar or sidecar was committed before a later step failed:
 * the stats file is never written then, so the unit counts as unfinished).
 */
int download_unit_run(struct download_engine *e, uint64_t unit, struct pm_error *err);

/**
 * Write `OUT/_work/dedupe-urls/NNNNN.bin` atomically: `n` duplicate entries of unit
 * `unit`, each (row, keeper unit, keeper row). Format: magic "PMDUPURL", u32 version 1,
 * u32 reserved 0, u64 unit, u64 count, then count x 3 u64 (little-endian); rows strictly
 * increasing. Returns PM_OK or PM_ERR_IO/PM_ERR_NOMEM.
 */
int download_dedupe_write(const char *output, uint64_t unit, int digits, const uint64_t *entries,
                          size_t n, struct pm_error *err);

/**
 * Read the file written by download_dedupe_write, validating magic, version, unit, count
 * (against the file size) and every entry (row < rows, keeper before the row). *entries is
 * malloc'ed (free it). Returns PM_OK, PM_ERR_NOT_FOUND, PM_ERR_IO, PM_ERR_FORMAT.
 */
int download_dedupe_read(const char *output, uint64_t unit, int digits, uint64_t rows,
                         uint64_t samples_per_shard, uint64_t **entries, size_t *n,
                         struct pm_error *err);

#endif
