/**
 * view — a named selection of a dataset's samples: one keep-bitmap per shard plus
 * `view.json`, stored under `DATASET/_views/NAME/` (docs/internals/views.md).
 *
 * A view is written by `pixelmill filter` from the Parquet sidecars alone and read by
 * `pack` and `train`, which skip the samples whose bit is 0. Bit `j` of a shard's bitmap
 * is row `j` of that shard's sidecar, which is also the in-shard part of the sample key
 * (shard.h: key = shard id followed by the row index). Only rows whose status is
 * `success` can have their bit set, so every set bit names a sample present in the tar.
 *
 * Bitmap file `NAME.keep` (NAME = the shard's name, e.g. `00012.keep`), little-endian:
 *   offset 0  8 bytes  magic "PMVKEEP\0"
 *   offset 8  u32      version (1)
 *   offset 12 u32      reserved, 0
 *   offset 16 u64      rows: bits that follow (= the sidecar's row count)
 *   offset 24 u64      kept: number of bits set
 *   offset 32 ceil(rows/8) bytes: bit j = byte j/8, bit (j%8) (LSB first); the unused
 *                      high bits of the last byte are 0
 * The file size must be exactly 32 + ceil(rows/8); readers check every field (magic,
 * version, reserved, size, the popcount against `kept`, the padding bits) before use.
 *
 * `view.json` is written last (atomically): its presence means the view is complete. It
 * names the shards (in dataset order) with their tar checksum as listed in dataset.json
 * when the view was made; view_open() refuses a view whose checksums no longer match
 * the dataset (the dataset was rewritten after the view was made).
 *
 * Handles are used by one thread at a time; distinct handles are independent.
 */
#ifndef PM_VIEW_H
#define PM_VIEW_H

#include "file_hash.h"
#include "pm_error.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/** Directory of the views inside a dataset directory. */
#define VIEW_DIR "_views"
/** The view's index file inside `_views/NAME/`. */
#define VIEW_INDEX_FILE "view.json"
/** Bitmap file magic and version. */
#define VIEW_BITMAP_MAGIC "PMVKEEP"
#define VIEW_BITMAP_VERSION 1u
#define VIEW_BITMAP_HEADER_BYTES 32
/** Largest view.json read (bytes). */
#define VIEW_INDEX_MAX_BYTES ((size_t)256 << 20)
/** Most rows a bitmap may claim (a shard's sidecar is far smaller). */
#define VIEW_BITMAP_MAX_ROWS ((uint64_t)1 << 40)

/** A shard's keep-bitmap: `rows` bits at `bits` (LSB first), `kept` of them set. */
struct view_bitmap {
    uint64_t rows;
    uint64_t kept;
    uint8_t *bits; /* ceil(rows/8) bytes, owned */
};

#define VIEW_BITMAP_INIT                                                                           \
    {                                                                                              \
        0, 0, NULL                                                                                 \
    }

/** Allocate an all-zero bitmap of `rows` bits (b need not be initialised). Returns PM_OK,
 * PM_ERR_LIMIT or PM_ERR_NOMEM. */
int view_bitmap_init(struct view_bitmap *b, uint64_t rows);

/** Free the bits. Accepts NULL. */
void view_bitmap_release(struct view_bitmap *b);

/** True if bit `row` is set (row < b->rows). */
static inline bool view_bitmap_get(const struct view_bitmap *b, uint64_t row)
{
    return (b->bits[row >> 3] >> (row & 7)) & 1;
}

/** Set bit `row` (row < b->rows); updates `kept`. */
void view_bitmap_set(struct view_bitmap *b, uint64_t row);

/** Write the bitmap to `path` atomically in the format above. Returns PM_OK or PM_ERR_IO. */
int view_bitmap_write(const struct view_bitmap *b, const char *path, struct pm_error *err);

/**
 * Read and validate the bitmap file at `path` into b (initialised by this call; on
 * failure b is empty). Returns PM_OK, PM_ERR_NOT_FOUND, PM_ERR_IO, PM_ERR_LIMIT or
 * PM_ERR_FORMAT naming the file and the field that is wrong.
 */
int view_bitmap_read(struct view_bitmap *b, const char *path, struct pm_error *err);

/** Parse and validate a bitmap held in memory (`size` bytes; `name` names it in messages)
 * into b (initialised by this call). Errors as view_bitmap_read. */
int view_bitmap_parse(struct view_bitmap *b, const void *data, size_t size, const char *name,
                      struct pm_error *err);

struct store;

/** view_bitmap_write to object `name` of a store (store.h; atomic on both backends). */
int view_bitmap_write_store(const struct view_bitmap *b, struct store *s, const char *name,
                            struct pm_error *err);

/** view_bitmap_read of object `name` of a store. */
int view_bitmap_read_store(struct view_bitmap *b, struct store *s, const char *name,
                           struct pm_error *err);

/** Write `DATASET/_views/NAME` (or with a suffix, e.g. "/view.json"; dataset NULL: the
 * name relative to the dataset, `_views/NAME...`, for store.h) to buf. PM_ERR_LIMIT if
 * buf is too small; PM_ERR_USAGE if NAME is not a valid view name (see view_name_check). */
int view_path(char *buf, size_t size, const char *dataset, const char *name, const char *suffix,
              struct pm_error *err);

/**
 * Split "DATASET:VIEW" in place: the view is after a ':' that follows the last '/' (so
 * "s3://b/p" is not split) and is not empty; a local path that exists as given is never
 * split. Returns VIEW (pointing into spec, whose ':' became '\0') or NULL.
 */
char *view_spec_split(char *spec);

/** True if `name` is a valid view name: 1-64 characters from [A-Za-z0-9_.-], not starting
 * with '.'. */
bool view_name_check(const char *name);

/** Dedupe methods, in this order everywhere; each names its `_dedupe/NAME/` directory. */
enum dedupe_method { DEDUPE_BY_URL, DEDUPE_BY_CONTENT, DEDUPE_BY_PHASH, DEDUPE_BY_COUNT };

/** "url", "content", "phash", indexed by enum dedupe_method. */
extern const char *const dedupe_method_names[DEDUPE_BY_COUNT];

/**
 * Parse a comma-separated list of method names ("url,phash") into methods[0..*n), in the
 * order given; `methods` has room for DEDUPE_BY_COUNT. An unknown or repeated name ->
 * PM_ERR_USAGE, with `option` ("--by", "--dedupe") and the name in the message.
 */
int dedupe_method_list_parse(const char *list, const char *option, int *methods, size_t *n,
                             struct pm_error *err);

struct view;

/**
 * Open the view `name` of the dataset `dataset` (a directory or "s3://bucket/prefix"): read and check view.json
 * (view_version 1, the shard list) and compare each shard's checksum with the dataset's
 * current dataset.json. Bitmaps are read later, shard by shard. Returns PM_OK with *out
 * set, PM_ERR_NOT_FOUND (no such view, or not complete), PM_ERR_FORMAT (malformed, or
 * stale: the dataset changed since the view was made) or PM_ERR_IO / PM_ERR_NOMEM.
 */
int view_open(struct view **out, const char *dataset, const char *name, struct pm_error *err);

/**
 * view_open for the dataset of store `s` (a directory or an S3 prefix; the same checks on
 * both). The store is borrowed: it must outlive the view and is used by view_shard_keep.
 */
int view_open_store(struct view **out, struct store *s, const char *name, struct pm_error *err);

/** Free. Accepts NULL. */
void view_free(struct view *v);

/** Number of shards, in dataset.json order. */
size_t view_num_shards(const struct view *v);

/** Name of shard i ("00012"); its tar is `DATASET/NAME.tar`. */
const char *view_shard_name(const struct view *v, size_t i);

/** Rows and kept samples of shard i as recorded in view.json. */
uint64_t view_shard_rows(const struct view *v, size_t i);
uint64_t view_shard_kept(const struct view *v, size_t i);

/** Total kept samples over all shards. */
uint64_t view_total_kept(const struct view *v);

/**
 * Read shard i's keep-bitmap into b (initialised by this call) and check it against
 * view.json (same rows and kept counts). Returns PM_OK or an error as view_bitmap_read,
 * PM_ERR_FORMAT on a mismatch with view.json, PM_ERR_USAGE if i is out of range.
 */
int view_shard_keep(const struct view *v, size_t i, struct view_bitmap *b, struct pm_error *err);

#endif
