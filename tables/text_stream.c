#include "text_stream.h"

#include "bytebuf.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>
#include <zstd.h>

#define TEXT_STREAM_CHUNK (256 * 1024)

enum codec { CODEC_UNKNOWN, CODEC_NONE, CODEC_GZIP, CODEC_ZSTD };

struct text_stream {
    char *name;
    FILE *fp;                 /* file source, or NULL */
    const unsigned char *mem; /* memory source */
    size_t mem_size, mem_pos;
    bool raw_eof;
    enum codec codec;
    unsigned char *in; /* compressed input chunk */
    size_t in_pos, in_len, in_cap;
    z_stream z;
    bool z_init;
    bool member_done; /* gzip: the last member ended (no partial member pending) */
    ZSTD_DStream *zs;
    size_t zs_hint; /* last ZSTD_decompressStream return: 0 = frame complete */
};

static int stream_fill_raw(struct text_stream *s, struct pm_error *err)
{
    // Move unread input to the front, then read more raw bytes after it.
    if (s->in_pos > 0) {
        memmove(s->in, s->in + s->in_pos, s->in_len - s->in_pos);
        s->in_len -= s->in_pos;
        s->in_pos = 0;
    }
    size_t room = s->in_cap - s->in_len;
    if (room == 0 || s->raw_eof)
        return PM_OK;
    size_t n;
    if (s->fp) {
        n = fread(s->in + s->in_len, 1, room, s->fp);
        if (n < room) {
            if (ferror(s->fp))
                return pm_error_set(err, PM_ERR_IO, "cannot read '%s': %s", s->name,
                                    strerror(errno));
            s->raw_eof = true;
        }
    } else {
        n = s->mem_size - s->mem_pos < room ? s->mem_size - s->mem_pos : room;
        memcpy(s->in + s->in_len, s->mem + s->mem_pos, n);
        s->mem_pos += n;
        if (s->mem_pos == s->mem_size)
            s->raw_eof = true;
    }
    s->in_len += n;
    return PM_OK;
}

static int stream_create(struct text_stream **out, const char *name, size_t in_cap,
                         struct pm_error *err)
{
    struct text_stream *s = calloc(1, sizeof *s);
    if (!s || !(s->name = strdup(name ? name : "(memory)")) || !(s->in = malloc(in_cap))) {
        if (s)
            free(s->name);
        free(s);
        return pm_error_set(err, PM_ERR_NOMEM, "out of memory opening '%s'", name);
    }
    s->in_cap = in_cap;
    *out = s;
    return PM_OK;
}

static int stream_detect(struct text_stream *s, struct pm_error *err)
{
    // Read until we have 4 bytes or the end, then look at the magic.
    while (s->in_len < 4 && !s->raw_eof) {
        int rc = stream_fill_raw(s, err);
        if (rc)
            return rc;
    }
    const unsigned char *p = s->in;
    if (s->in_len >= 2 && p[0] == 0x1f && p[1] == 0x8b) {
        if (inflateInit2(&s->z, 15 + 16) != Z_OK)
            return pm_error_set(err, PM_ERR_NOMEM, "cannot initialise zlib for '%s'", s->name);
        s->z_init = true;
        s->codec = CODEC_GZIP;
    } else if (s->in_len >= 4 && p[0] == 0x28 && p[1] == 0xb5 && p[2] == 0x2f && p[3] == 0xfd) {
        s->zs = ZSTD_createDStream();
        if (!s->zs || ZSTD_isError(ZSTD_initDStream(s->zs)))
            return pm_error_set(err, PM_ERR_NOMEM, "cannot initialise zstd for '%s'", s->name);
        s->codec = CODEC_ZSTD;
    } else {
        s->codec = CODEC_NONE;
    }
    s->member_done = true;
    return PM_OK;
}

int text_stream_open(struct text_stream **out, const char *path, struct pm_error *err)
{
    *out = NULL;
    struct text_stream *s;
    int rc = stream_create(&s, path, TEXT_STREAM_CHUNK, err);
    if (rc)
        return rc;
    s->fp = fopen(path, "rb");
    if (!s->fp) {
        int e = errno;
        text_stream_free(s);
        return pm_error_set(err, e == ENOENT ? PM_ERR_NOT_FOUND : PM_ERR_IO, "cannot open '%s': %s",
                            path, strerror(e));
    }
    rc = stream_detect(s, err);
    if (rc) {
        text_stream_free(s);
        return rc;
    }
    *out = s;
    return PM_OK;
}

int text_stream_open_memory(struct text_stream **out, const void *data, size_t size,
                            const char *name, struct pm_error *err)
{
    *out = NULL;
    struct text_stream *s;
    // Small inputs (fuzzing) get a small input chunk.
    size_t cap = size < TEXT_STREAM_CHUNK ? (size < 64 ? 64 : size) : TEXT_STREAM_CHUNK;
    int rc = stream_create(&s, name, cap, err);
    if (rc)
        return rc;
    s->mem = data;
    s->mem_size = size;
    s->raw_eof = size == 0;
    rc = stream_detect(s, err);
    if (rc) {
        text_stream_free(s);
        return rc;
    }
    *out = s;
    return PM_OK;
}

void text_stream_free(struct text_stream *s)
{
    if (!s)
        return;
    if (s->fp)
        fclose(s->fp);
    if (s->z_init)
        inflateEnd(&s->z);
    ZSTD_freeDStream(s->zs);
    free(s->in);
    free(s->name);
    free(s);
}

const char *text_stream_name(const struct text_stream *s)
{
    return s->name;
}

const char *text_stream_codec(const struct text_stream *s)
{
    return s->codec == CODEC_GZIP ? "gzip" : s->codec == CODEC_ZSTD ? "zstd" : "none";
}

static int read_gzip(struct text_stream *s, unsigned char *buf, size_t n, size_t *got,
                     struct pm_error *err)
{
    *got = 0;
    if (n > UINT32_MAX)
        n = UINT32_MAX;
    while (*got == 0) {
        if (s->in_pos == s->in_len) {
            int rc = stream_fill_raw(s, err);
            if (rc)
                return rc;
            if (s->in_len == 0) {
                if (!s->member_done)
                    return pm_error_set(err, PM_ERR_FORMAT, "'%s': truncated gzip stream", s->name);
                return PM_OK;
            }
        }
        if (s->member_done) {
            // A new member starts here; reset the inflater for it.
            if (inflateReset(&s->z) != Z_OK)
                return pm_error_set(err, PM_ERR_INTERNAL, "'%s': inflateReset failed", s->name);
            s->member_done = false;
        }
        s->z.next_in = s->in + s->in_pos;
        s->z.avail_in = (uInt)(s->in_len - s->in_pos);
        s->z.next_out = buf;
        s->z.avail_out = (uInt)n;
        int zr = inflate(&s->z, Z_NO_FLUSH);
        s->in_pos = s->in_len - s->z.avail_in;
        *got = n - s->z.avail_out;
        if (zr == Z_STREAM_END) {
            s->member_done = true;
        } else if (zr == Z_BUF_ERROR) {
            // No progress possible: need more input (handled above) or truncated.
            if (s->in_pos < s->in_len)
                return pm_error_set(err, PM_ERR_INTERNAL, "'%s': inflate stalled", s->name);
        } else if (zr != Z_OK) {
            return pm_error_set(err, PM_ERR_FORMAT, "'%s': corrupt gzip data: %s", s->name,
                                s->z.msg ? s->z.msg : "inflate failed");
        }
    }
    return PM_OK;
}

static int read_zstd(struct text_stream *s, unsigned char *buf, size_t n, size_t *got,
                     struct pm_error *err)
{
    *got = 0;
    while (*got == 0) {
        if (s->in_pos == s->in_len) {
            int rc = stream_fill_raw(s, err);
            if (rc)
                return rc;
            if (s->in_len == 0) {
                if (!s->member_done) {
                    // Flush whatever the decoder still holds before calling it truncated.
                    ZSTD_inBuffer zin = {s->in, 0, 0};
                    ZSTD_outBuffer zout = {buf, n, 0};
                    size_t r = ZSTD_decompressStream(s->zs, &zout, &zin);
                    if (ZSTD_isError(r))
                        return pm_error_set(err, PM_ERR_FORMAT, "'%s': corrupt zstd data: %s",
                                            s->name, ZSTD_getErrorName(r));
                    *got = zout.pos;
                    if (r == 0)
                        s->member_done = true;
                    if (*got)
                        return PM_OK;
                    if (!s->member_done)
                        return pm_error_set(err, PM_ERR_FORMAT, "'%s': truncated zstd stream",
                                            s->name);
                }
                return PM_OK;
            }
        }
        ZSTD_inBuffer zin = {s->in, s->in_len, s->in_pos};
        ZSTD_outBuffer zout = {buf, n, 0};
        size_t r = ZSTD_decompressStream(s->zs, &zout, &zin);
        if (ZSTD_isError(r))
            return pm_error_set(err, PM_ERR_FORMAT, "'%s': corrupt zstd data: %s", s->name,
                                ZSTD_getErrorName(r));
        s->in_pos = zin.pos;
        *got = zout.pos;
        s->member_done = r == 0;
    }
    return PM_OK;
}

int text_stream_read(struct text_stream *s, void *buf, size_t n, size_t *got, struct pm_error *err)
{
    *got = 0;
    if (n == 0)
        return PM_OK;
    if (s->codec == CODEC_GZIP)
        return read_gzip(s, buf, n, got, err);
    if (s->codec == CODEC_ZSTD)
        return read_zstd(s, buf, n, got, err);
    // Plain: serve buffered input first, then read straight into the caller's buffer.
    if (s->in_pos < s->in_len) {
        size_t k = s->in_len - s->in_pos < n ? s->in_len - s->in_pos : n;
        memcpy(buf, s->in + s->in_pos, k);
        s->in_pos += k;
        *got = k;
        return PM_OK;
    }
    s->in_pos = s->in_len = 0;
    if (s->fp && n >= TEXT_STREAM_CHUNK / 4 && !s->raw_eof) {
        // Large read from a plain file: straight into the caller's buffer, no copy.
        size_t k = fread(buf, 1, n, s->fp);
        if (k < n) {
            if (ferror(s->fp))
                return pm_error_set(err, PM_ERR_IO, "cannot read '%s': %s", s->name,
                                    strerror(errno));
            s->raw_eof = true;
        }
        *got = k;
        return PM_OK;
    }
    int rc = stream_fill_raw(s, err);
    if (rc)
        return rc;
    size_t k = s->in_len < n ? s->in_len : n;
    memcpy(buf, s->in, k);
    s->in_pos = k;
    *got = k;
    return PM_OK;
}

int text_stream_refill(struct text_stream *s, struct bytebuf *buf, size_t *pos, size_t chunk,
                       size_t *got, struct pm_error *err)
{
    *got = 0;
    if (*pos > 0) {
        memmove(buf->data, buf->data + *pos, buf->len - *pos);
        buf->len -= *pos;
        *pos = 0;
    }
    size_t want = chunk;
    if (buf->limit) {
        if (buf->len >= buf->limit)
            return PM_ERR_LIMIT;
        if (want > buf->limit - buf->len)
            want = buf->limit - buf->len;
    }
    int rc = bytebuf_reserve(buf, want);
    if (rc)
        return pm_error_set(err, rc, "'%s': cannot grow the read buffer", s->name);
    // Use all the room the buffer already has, not just `want`.
    size_t room = buf->cap - 1 - buf->len;
    if (buf->limit && room > buf->limit - buf->len)
        room = buf->limit - buf->len;
    // Keep reading until `want` bytes arrived (a decompressor may return less) or the end.
    while (*got < want) {
        size_t k;
        rc = text_stream_read(s, buf->data + buf->len, room - *got, &k, err);
        if (rc)
            return rc;
        if (k == 0)
            break;
        *got += k;
        buf->len += k;
    }
    buf->data[buf->len] = '\0';
    return PM_OK;
}

#define RECORD_CHUNK (256 * 1024)

int text_stream_more(struct text_stream *s, struct bytebuf *buf, size_t *pos, bool *eof,
                     struct pm_error *err)
{
    size_t pending = buf->len - *pos, got;
    int rc =
        text_stream_refill(s, buf, pos, pending > RECORD_CHUNK ? pending : RECORD_CHUNK, &got, err);
    if (rc)
        return rc;
    if (got == 0)
        *eof = true;
    return PM_OK;
}

int text_stream_skip_bom(struct text_stream *s, struct bytebuf *buf, size_t *pos, bool *eof,
                         struct pm_error *err)
{
    while (buf->len - *pos < 3 && !*eof) {
        int rc = text_stream_more(s, buf, pos, eof, err);
        if (rc)
            return rc;
    }
    if (buf->len - *pos >= 3 && memcmp(buf->data + *pos, "\xEF\xBB\xBF", 3) == 0)
        *pos += 3;
    return PM_OK;
}
