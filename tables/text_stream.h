/**
 * text_stream — a sequential byte stream over a file or memory that transparently
 * decompresses gzip and zstd.
 *
 * The compression is detected from the first bytes, whatever the file name:
 * 1f 8b -> gzip (zlib inflate; concatenated members are read one after the other),
 * 28 b5 2f fd -> zstd (streaming decompression; any number of frames), anything else
 * is passed through unchanged. A stream that ends inside a gzip member or a zstd frame
 * is PM_ERR_FORMAT ("truncated"), as is corrupt compressed data. Memory is bounded:
 * one fixed input chunk plus the decompressor state, whatever the file size. Errors
 * name the stream (the path, or the name given for memory). One thread at a time.
 */
#ifndef PM_TEXT_STREAM_H
#define PM_TEXT_STREAM_H

#include "bytebuf.h"
#include "pm_error.h"

#include <stdbool.h>
#include <stddef.h>

struct text_stream;

/** Open `path` for reading. On success *out owns the file handle. */
int text_stream_open(struct text_stream **out, const char *path, struct pm_error *err);

/** Stream over `size` bytes of memory (not copied: `data` must outlive the stream).
 * `name` is copied and used in error messages. */
int text_stream_open_memory(struct text_stream **out, const void *data, size_t size,
                            const char *name, struct pm_error *err);

/** Free the stream and close its file. Accepts NULL. */
void text_stream_free(struct text_stream *s);

/**
 * Read up to `n` decompressed bytes into `buf`; *got is the number read. *got == 0
 * (with PM_OK) only at the end of the stream; a short read is not the end.
 */
int text_stream_read(struct text_stream *s, void *buf, size_t n, size_t *got, struct pm_error *err);

/** Name used in messages (path or memory name). */
const char *text_stream_name(const struct text_stream *s);

/** "gzip", "zstd" or "none" (valid after the first read or open). */
const char *text_stream_codec(const struct text_stream *s);

/**
 * Buffered window helper for line readers: drop buf[0, *pos), set *pos = 0 and append
 * at least `chunk` decompressed bytes to `buf` (fewer only at the end of the stream;
 * more when the buffer already has room). *got is the number appended (0 at the end of
 * the stream). Fails with PM_ERR_LIMIT when `buf`'s own limit is reached.
 */
int text_stream_refill(struct text_stream *s, struct bytebuf *buf, size_t *pos, size_t chunk,
                       size_t *got, struct pm_error *err);

/**
 * text_stream_refill for record readers, which rescan a pending record from its start
 * after each refill: asks for at least as many bytes as are pending in buf[*pos, len)
 * (so that a long record costs time linear in its length) and at least 256 KiB. Sets
 * *eof when the stream has ended.
 */
int text_stream_more(struct text_stream *s, struct bytebuf *buf, size_t *pos, bool *eof,
                     struct pm_error *err);

/** Read until buf[*pos, len) holds 3 bytes (or the stream ends, setting *eof) and skip a
 * UTF-8 byte order mark there. */
int text_stream_skip_bom(struct text_stream *s, struct bytebuf *buf, size_t *pos, bool *eof,
                         struct pm_error *err);

#endif
