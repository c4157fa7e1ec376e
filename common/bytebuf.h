/**
 * bytebuf — a growable byte buffer with a hard size limit.
 *
 * Invariants: `data` is NULL or points to `cap` bytes; `len <= cap`; when data is not
 * NULL, data[len] == '\0' (one extra byte is always reserved), so a buffer holding
 * text can be used as a C string. `limit` (0 = unlimited) is the largest `len` the
 * buffer accepts: appending past it fails with PM_ERR_LIMIT and leaves the buffer
 * unchanged. Not thread-safe; one owner at a time.
 */
#ifndef PM_BYTEBUF_H
#define PM_BYTEBUF_H

#include <stdarg.h>
#include <stddef.h>

struct bytebuf {
    char *data;
    size_t len;
    size_t cap;
    size_t limit;
};

#define BYTEBUF_INIT {NULL, 0, 0, 0}

/** Initialise an empty buffer that will hold at most `limit` bytes (0 = no limit). */
void bytebuf_init(struct bytebuf *b, size_t limit);

/** Free the buffer's memory and reset it to empty (limit kept). Accepts NULL. */
void bytebuf_release(struct bytebuf *b);

/** Make room for `extra` more bytes. Returns PM_OK, PM_ERR_LIMIT or PM_ERR_NOMEM. */
int bytebuf_reserve(struct bytebuf *b, size_t extra);

/** Append n bytes. Returns PM_OK, PM_ERR_LIMIT or PM_ERR_NOMEM. */
int bytebuf_append(struct bytebuf *b, const void *p, size_t n);

/** Append a NUL-terminated string (without its NUL). */
int bytebuf_append_str(struct bytebuf *b, const char *s);

/** Append printf-style formatted text. */
int bytebuf_printf(struct bytebuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/** Set len to 0, keeping the memory. */
void bytebuf_clear(struct bytebuf *b);

#endif
