#include "parquet_writer.h"

#include "parquet_encode.h"
#include "parquet_format.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <snappy-c.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>
#include <zlib.h>
#include <zstd.h>

#define XXH_INLINE_ALL
#include <xxhash.h>

#ifndef PIXELMILL_VERSION
#define PIXELMILL_VERSION "0.0.0"
#endif

#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "parquet_writer assumes a little-endian host"
#endif

// Layout of what we write, per row group and column: [dictionary page] data pages...
// Data pages are v1: [4-byte length + RLE definition levels (OPTIONAL only)] values,
// all compressed together. Pages close at PAGE_TARGET_BYTES of PLAIN values or
// PAGE_MAX_VALUES values. A STRING chunk starts dictionary-encoded; when its dictionary
// would pass DICT_MAX_BYTES the pages written so far keep their dictionary and the rest
// of the chunk is PLAIN (what parquet-cpp does). Finished pages of the current row group
// are held compressed in memory and written column after column when the group closes.
enum {
    PAGE_TARGET_BYTES = 1 << 20,
    PAGE_MAX_VALUES = 1 << 17,
    DICT_MAX_BYTES = 1 << 20,
    DEFAULT_ROW_GROUP_ROWS = 1 << 20,
    ZSTD_LEVEL = 1, // pyarrow's default
};

struct pqw_column {
    char *name;
    enum column_type type;
    bool nullable;
    enum parquet_type ptype;

    // page in progress
    size_t page_rows;     // values including nulls
    size_t page_nonnull;  // values excluding nulls
    size_t page_cap;      // entries allocated in levels / indices
    uint8_t *levels;      // definition levels (nullable columns)
    uint32_t *indices;    // dictionary indices (STRING columns)
    struct bytebuf plain; // PLAIN-encoded values

    // column chunk in progress
    struct bytebuf pages; // finished data pages: header + stored payload each
    int64_t chunk_values;
    int64_t chunk_nulls;
    int64_t chunk_uncompressed; // headers + uncompressed payloads, dictionary page included
    int32_t dict_data_pages;
    int32_t plain_data_pages;
    bool has_minmax;
    int64_t min_i, max_i;
    double min_d, max_d;
    struct bytebuf min_s, max_s;

    // dictionary of a STRING chunk
    bool dict_mode;            // new values are looked up in the dictionary
    struct bytebuf dict_plain; // entries, PLAIN-encoded (the dictionary page payload)
    uint64_t *dict_off;        // offset of entry i's length prefix in dict_plain
    uint32_t *dict_hash;       // low 32 bits of entry i's hash
    uint32_t dict_count, dict_cap;
    uint32_t *slots;          // open addressing: entry index + 1, 0 = empty
    size_t nslots;            // power of two
    struct bytebuf dict_page; // header + stored payload, once the dictionary is closed
};

struct parquet_writer {
    char *path;
    int fd;
    int failed; // sticky status of a failed write or close
    bool closed;
    enum parquet_codec codec;
    size_t row_group_rows;
    size_t ncols;
    struct pqw_column *cols;

    int64_t offset;   // bytes written to the file
    size_t rg_rows;   // rows in the row group in progress
    int64_t num_rows; // rows in finished row groups
    size_t num_row_groups;
    struct bytebuf footer_rgs; // encoded RowGroup structs

    // scratch
    struct bytebuf payload;
    struct bytebuf packed;
    struct bytebuf header;
    uint32_t *u32;
    size_t u32_cap;
    struct parquet_encode_column_chunk *chunks;
    struct bytebuf *stat_min, *stat_max;

    ZSTD_CCtx *zstd;
    z_stream zs;
    bool zs_ready;
};

static int writer_fail(struct parquet_writer *w, int rc, struct pm_error *err)
{
    w->failed = rc;
    if (err && err->code != rc) {
        // an internal step returned a bare code: give it a message naming the file
        pm_error_set(err, rc, "cannot write '%s': %s", w->path, pm_strerror(rc));
    }
    return rc;
}

int parquet_codec_parse(const char *name, enum parquet_codec *out)
{
    static const struct {
        const char *name;
        enum parquet_codec codec;
    } names[] = {{"none", PARQUET_CODEC_NONE},
                 {"uncompressed", PARQUET_CODEC_NONE},
                 {"snappy", PARQUET_CODEC_SNAPPY},
                 {"gzip", PARQUET_CODEC_GZIP},
                 {"zstd", PARQUET_CODEC_ZSTD}};
    if (!name)
        return PM_ERR_USAGE;
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        if (strcasecmp(name, names[i].name) == 0) {
            if (out)
                *out = names[i].codec;
            return PM_OK;
        }
    }
    return PM_ERR_USAGE;
}

static enum parquet_type physical_type(enum column_type t)
{
    switch (t) {
    case COLUMN_BOOL:
        return PARQUET_BOOLEAN;
    case COLUMN_INT32:
        return PARQUET_INT32;
    case COLUMN_INT64:
        return PARQUET_INT64;
    case COLUMN_FLOAT:
        return PARQUET_FLOAT;
    case COLUMN_DOUBLE:
        return PARQUET_DOUBLE;
    case COLUMN_STRING:
        return PARQUET_BYTE_ARRAY;
    }
    return PARQUET_INT96; // unreachable for valid types
}

static enum parquet_compression compression_of(enum parquet_codec c)
{
    switch (c) {
    case PARQUET_CODEC_NONE:
        return PARQUET_COMP_UNCOMPRESSED;
    case PARQUET_CODEC_SNAPPY:
        return PARQUET_COMP_SNAPPY;
    case PARQUET_CODEC_GZIP:
        return PARQUET_COMP_GZIP;
    case PARQUET_CODEC_ZSTD:
        return PARQUET_COMP_ZSTD;
    }
    return PARQUET_COMP_UNCOMPRESSED;
}

// ---- file output

static int write_all(struct parquet_writer *w, const void *p, size_t n, struct pm_error *err)
{
    const char *s = p;
    while (n > 0) {
        ssize_t k = write(w->fd, s, n > (1u << 30) ? (1u << 30) : n);
        if (k < 0) {
            if (errno == EINTR)
                continue;
            return pm_error_set(err, PM_ERR_IO, "cannot write '%s': %s", w->path, strerror(errno));
        }
        if (k == 0)
            return pm_error_set(err, PM_ERR_IO, "cannot write '%s': write returned 0", w->path);
        s += k;
        n -= (size_t)k;
        w->offset += k;
    }
    return PM_OK;
}

// ---- encoding helpers

// bytebuf_append with the common case (room left) inlined: called once or twice per value.
static inline int put(struct bytebuf *b, const void *p, size_t n)
{
    if (b->len + n < b->cap) {
        memcpy(b->data + b->len, p, n);
        b->len += n;
        b->data[b->len] = '\0';
        return PM_OK;
    }
    return bytebuf_append(b, p, n);
}

static unsigned bit_width(uint32_t max_value)
{
    return max_value ? 32u - (unsigned)__builtin_clz(max_value) : 0u;
}

static size_t run_length(const uint32_t *v, size_t i, size_t n)
{
    size_t j = i + 1;
    while (j < n && v[j] == v[i])
        j++;
    return j - i;
}

// RLE / bit-packing hybrid (no length prefix) of n values of `bw` bits (1..32): runs of
// 8 or more equal values become RLE runs, the rest bit-packed groups of 8 (the last
// group padded with zeros; readers stop after the page's value count).
static int rle_encode(struct bytebuf *out, const uint32_t *v, size_t n, unsigned bw)
{
    size_t vbytes = (bw + 7) / 8;
    size_t i = 0;
    int rc = PM_OK;
    while (i < n && rc == PM_OK) {
        size_t run = run_length(v, i, n);
        if (run >= 8) {
            uint8_t val[4];
            for (size_t b = 0; b < vbytes; b++)
                val[b] = (uint8_t)(v[i] >> (8 * b));
            rc = parquet_encode_varint(out, (uint64_t)run << 1);
            if (rc == PM_OK)
                rc = bytebuf_append(out, val, vbytes);
            i += run;
            continue;
        }
        // literal groups until a group boundary starts a run of 8 or the data ends
        size_t end = i;
        do {
            end += 8;
        } while (end < n && run_length(v, end, n) < 8);
        size_t groups = (end - i) / 8;
        rc = parquet_encode_varint(out, (uint64_t)groups << 1 | 1);
        if (rc == PM_OK)
            rc = bytebuf_reserve(out, groups * bw);
        if (rc)
            break;
        uint8_t *dst = (uint8_t *)out->data + out->len;
        uint64_t acc = 0;
        unsigned nbits = 0;
        size_t nb = 0;
        for (size_t k = i; k < end; k++) {
            acc |= (uint64_t)(k < n ? v[k] : 0) << nbits;
            nbits += bw;
            while (nbits >= 8) {
                dst[nb++] = (uint8_t)acc;
                acc >>= 8;
                nbits -= 8;
            }
        }
        out->len += nb; // groups * bw bytes: 8 values of bw bits each
        out->data[out->len] = '\0';
        i = end;
    }
    return rc;
}

static int compress_into(struct parquet_writer *w, const void *in, size_t n, struct bytebuf *out)
{
    bytebuf_clear(out);
    switch (w->codec) {
    case PARQUET_CODEC_NONE:
        return bytebuf_append(out, in, n);
    case PARQUET_CODEC_SNAPPY: {
        size_t cap = snappy_max_compressed_length(n);
        int rc = bytebuf_reserve(out, cap);
        if (rc)
            return rc;
        size_t got = cap;
        if (snappy_compress(in, n, out->data, &got) != SNAPPY_OK)
            return PM_ERR_INTERNAL;
        out->len = got;
        return PM_OK;
    }
    case PARQUET_CODEC_GZIP: {
        if (deflateReset(&w->zs) != Z_OK)
            return PM_ERR_INTERNAL;
        size_t cap = deflateBound(&w->zs, (uLong)n);
        int rc = bytebuf_reserve(out, cap);
        if (rc)
            return rc;
        w->zs.next_in = (Bytef *)(uintptr_t)in;
        w->zs.avail_in = (uInt)n;
        w->zs.next_out = (Bytef *)out->data;
        w->zs.avail_out = (uInt)cap;
        if (deflate(&w->zs, Z_FINISH) != Z_STREAM_END)
            return PM_ERR_INTERNAL;
        out->len = cap - w->zs.avail_out;
        return PM_OK;
    }
    case PARQUET_CODEC_ZSTD: {
        size_t cap = ZSTD_compressBound(n);
        int rc = bytebuf_reserve(out, cap);
        if (rc)
            return rc;
        size_t got = ZSTD_compressCCtx(w->zstd, out->data, cap, in, n, ZSTD_LEVEL);
        if (ZSTD_isError(got))
            return PM_ERR_INTERNAL;
        out->len = got;
        return PM_OK;
    }
    }
    return PM_ERR_INTERNAL;
}

// Compress `payload` into a page with its header appended to `dest`.
static int emit_page(struct parquet_writer *w, struct pqw_column *c, enum parquet_page_type type,
                     enum parquet_encoding enc, size_t num_values, const struct bytebuf *payload,
                     struct bytebuf *dest, struct pm_error *err)
{
    if (payload->len > INT32_MAX || num_values > INT32_MAX)
        return pm_error_set(err, PM_ERR_LIMIT,
                            "cannot write '%s': a page of column '%s' exceeds 2 GiB", w->path,
                            c->name);
    const void *stored = payload->data ? payload->data : "";
    size_t stored_len = payload->len;
    int rc = PM_OK;
    if (w->codec != PARQUET_CODEC_NONE) {
        rc = compress_into(w, stored, stored_len, &w->packed);
        if (rc)
            return pm_error_set(err, rc, "cannot write '%s': compressing column '%s': %s", w->path,
                                c->name, pm_strerror(rc));
        stored = w->packed.data;
        stored_len = w->packed.len;
        if (stored_len > INT32_MAX)
            return pm_error_set(err, PM_ERR_LIMIT,
                                "cannot write '%s': a page of column '%s' exceeds 2 GiB", w->path,
                                c->name);
    }
    struct parquet_encode_page_header h = {
        .type = type,
        .uncompressed_size = (int32_t)payload->len,
        .compressed_size = (int32_t)stored_len,
        .num_values = (int32_t)num_values,
        .encoding = enc,
    };
    bytebuf_clear(&w->header);
    rc = parquet_encode_page_header(&w->header, &h);
    if (rc == PM_OK)
        rc = bytebuf_append(dest, w->header.data, w->header.len);
    if (rc == PM_OK)
        rc = bytebuf_append(dest, stored, stored_len);
    if (rc)
        return pm_error_set(err, rc, "cannot write '%s': buffering column '%s': %s", w->path,
                            c->name, pm_strerror(rc));
    c->chunk_uncompressed += (int64_t)(w->header.len + payload->len);
    return PM_OK;
}

static int ensure_u32(struct parquet_writer *w, size_t n)
{
    if (n <= w->u32_cap)
        return PM_OK;
    uint32_t *p = realloc(w->u32, n * sizeof *p);
    if (!p)
        return PM_ERR_NOMEM;
    w->u32 = p;
    w->u32_cap = n;
    return PM_OK;
}

static int flush_page(struct parquet_writer *w, struct pqw_column *c, struct pm_error *err)
{
    if (c->page_rows == 0)
        return PM_OK;
    struct bytebuf *p = &w->payload;
    bytebuf_clear(p);
    int rc = PM_OK;
    if (c->nullable) {
        rc = ensure_u32(w, c->page_rows);
        if (rc == PM_OK)
            rc = bytebuf_append(p, "\0\0\0\0", 4);
        if (rc == PM_OK) {
            for (size_t i = 0; i < c->page_rows; i++)
                w->u32[i] = c->levels[i];
            rc = rle_encode(p, w->u32, c->page_rows, 1);
        }
        if (rc == PM_OK) {
            uint32_t n = (uint32_t)(p->len - 4);
            memcpy(p->data, &n, 4);
        }
    }
    // a dictionary-mode page before the first dictionary entry holds only nulls: PLAIN
    bool dict = c->dict_mode && c->dict_count > 0;
    if (rc == PM_OK && dict) {
        unsigned bw = bit_width(c->dict_count - 1);
        if (bw == 0)
            bw = 1;
        uint8_t b = (uint8_t)bw;
        rc = bytebuf_append(p, &b, 1);
        if (rc == PM_OK)
            rc = rle_encode(p, c->indices, c->page_nonnull, bw);
    } else if (rc == PM_OK) {
        rc = bytebuf_append(p, c->plain.data, c->plain.len);
    }
    if (rc)
        return pm_error_set(err, rc, "cannot write '%s': encoding column '%s': %s", w->path,
                            c->name, pm_strerror(rc));
    rc = emit_page(w, c, PARQUET_PAGE_DATA, dict ? PARQUET_ENC_RLE_DICTIONARY : PARQUET_ENC_PLAIN,
                   c->page_rows, p, &c->pages, err);
    if (rc)
        return rc;
    if (dict)
        c->dict_data_pages++;
    else
        c->plain_data_pages++;
    c->page_rows = 0;
    c->page_nonnull = 0;
    bytebuf_clear(&c->plain);
    return PM_OK;
}

// Close the dictionary of a chunk: build its page. Later values of the chunk are PLAIN.
static int close_dictionary(struct parquet_writer *w, struct pqw_column *c, struct pm_error *err)
{
    if (!c->dict_mode)
        return PM_OK;
    int rc = PM_OK;
    if (c->dict_count > 0) {
        rc = flush_page(w, c, err);
        if (rc == PM_OK)
            rc = emit_page(w, c, PARQUET_PAGE_DICTIONARY, PARQUET_ENC_PLAIN, c->dict_count,
                           &c->dict_plain, &c->dict_page, err);
    }
    c->dict_mode = false;
    return rc;
}

static void column_reset_chunk(struct pqw_column *c)
{
    bytebuf_clear(&c->pages);
    c->chunk_values = 0;
    c->chunk_nulls = 0;
    c->chunk_uncompressed = 0;
    c->dict_data_pages = 0;
    c->plain_data_pages = 0;
    c->has_minmax = false;
    bytebuf_clear(&c->min_s);
    bytebuf_clear(&c->max_s);
    c->dict_mode = c->type == COLUMN_STRING;
    bytebuf_clear(&c->dict_plain);
    if (c->dict_count && c->slots)
        memset(c->slots, 0, c->nslots * sizeof *c->slots);
    c->dict_count = 0;
    bytebuf_clear(&c->dict_page);
}

// ---- appending values

static int ensure_page_cap(struct pqw_column *c, size_t rows)
{
    size_t need = c->page_rows + rows;
    if (need > PAGE_MAX_VALUES)
        need = PAGE_MAX_VALUES;
    if (need <= c->page_cap)
        return PM_OK;
    size_t cap = c->page_cap ? c->page_cap : 1024;
    while (cap < need)
        cap *= 2;
    if (c->nullable) {
        uint8_t *p = realloc(c->levels, cap);
        if (!p)
            return PM_ERR_NOMEM;
        c->levels = p;
    }
    if (c->type == COLUMN_STRING) {
        uint32_t *p = realloc(c->indices, cap * sizeof *p);
        if (!p)
            return PM_ERR_NOMEM;
        c->indices = p;
    }
    c->page_cap = cap;
    return PM_OK;
}

// Byte-wise comparison of s[0..n) with b's bytes, a prefix first: <0, 0 or >0.
static int compare_bytes(const char *s, size_t n, const struct bytebuf *b)
{
    size_t k = n < b->len ? n : b->len;
    int cmp = k ? memcmp(s, b->data, k) : 0;
    return cmp ? cmp : (n > b->len) - (n < b->len);
}

static int replace_bytes(struct bytebuf *b, const char *s, size_t n)
{
    bytebuf_clear(b);
    return bytebuf_append(b, s, n);
}

static void update_string_stats(struct pqw_column *c, const char *s, size_t n, int *rc)
{
    if (!c->has_minmax) {
        c->has_minmax = true;
        *rc = bytebuf_append(&c->min_s, s, n);
        if (*rc == PM_OK)
            *rc = bytebuf_append(&c->max_s, s, n);
        return;
    }
    if (compare_bytes(s, n, &c->min_s) < 0)
        *rc = replace_bytes(&c->min_s, s, n);
    if (compare_bytes(s, n, &c->max_s) > 0)
        *rc = replace_bytes(&c->max_s, s, n);
}

// Widen the chunk's min/max by v (integer and boolean columns, or floating point).
static void update_int_stats(struct pqw_column *c, int64_t v)
{
    c->min_i = !c->has_minmax || v < c->min_i ? v : c->min_i;
    c->max_i = !c->has_minmax || v > c->max_i ? v : c->max_i;
    c->has_minmax = true;
}

static void update_real_stats(struct pqw_column *c, double v)
{
    c->min_d = !c->has_minmax || v < c->min_d ? v : c->min_d;
    c->max_d = !c->has_minmax || v > c->max_d ? v : c->max_d;
    c->has_minmax = true;
}

static int dict_grow(struct pqw_column *c)
{
    if (c->dict_count == c->dict_cap) {
        uint32_t cap = c->dict_cap ? c->dict_cap * 2 : 256;
        uint64_t *off = realloc(c->dict_off, cap * sizeof *off);
        if (!off)
            return PM_ERR_NOMEM;
        c->dict_off = off;
        uint32_t *h = realloc(c->dict_hash, cap * sizeof *h);
        if (!h)
            return PM_ERR_NOMEM;
        c->dict_hash = h;
        c->dict_cap = cap;
    }
    if ((size_t)(c->dict_count + 1) * 2 > c->nslots) {
        size_t nslots = c->nslots ? c->nslots * 2 : 1024;
        uint32_t *slots = calloc(nslots, sizeof *slots);
        if (!slots)
            return PM_ERR_NOMEM;
        for (uint32_t e = 0; e < c->dict_count; e++) {
            size_t i = c->dict_hash[e] & (nslots - 1);
            while (slots[i])
                i = (i + 1) & (nslots - 1);
            slots[i] = e + 1;
        }
        free(c->slots);
        c->slots = slots;
        c->nslots = nslots;
    }
    return PM_OK;
}

// Look s up in the dictionary, adding it if new. Returns PM_OK with *index set, or
// PM_ERR_LIMIT when the dictionary would pass DICT_MAX_BYTES (nothing added).
static int dict_insert(struct pqw_column *c, const char *s, size_t n, uint32_t *index, bool *added)
{
    uint32_t h = (uint32_t)XXH3_64bits(s, n);
    *added = false;
    size_t mask = c->nslots - 1;
    size_t i = c->nslots ? h & mask : 0;
    if (c->nslots) {
        while (c->slots[i]) {
            uint32_t e = c->slots[i] - 1;
            if (c->dict_hash[e] == h) {
                uint32_t len;
                memcpy(&len, c->dict_plain.data + c->dict_off[e], 4);
                if (len == n && memcmp(c->dict_plain.data + c->dict_off[e] + 4, s, n) == 0) {
                    *index = e;
                    return PM_OK;
                }
            }
            i = (i + 1) & mask;
        }
    }
    if (c->dict_plain.len + 4 + n > DICT_MAX_BYTES)
        return PM_ERR_LIMIT;
    size_t before = c->nslots;
    int rc = dict_grow(c);
    if (rc)
        return rc;
    if (c->nslots != before) {
        mask = c->nslots - 1;
        i = h & mask;
        while (c->slots[i])
            i = (i + 1) & mask;
    }
    uint32_t e = c->dict_count;
    uint32_t len = (uint32_t)n;
    c->dict_off[e] = c->dict_plain.len;
    c->dict_hash[e] = h;
    rc = bytebuf_append(&c->dict_plain, &len, 4);
    if (rc == PM_OK)
        rc = bytebuf_append(&c->dict_plain, s, n);
    if (rc)
        return rc;
    c->slots[i] = e + 1;
    c->dict_count++;
    *index = e;
    *added = true;
    return PM_OK;
}

static int append_value(struct parquet_writer *w, struct pqw_column *c, const struct column *src,
                        size_t r, struct pm_error *err)
{
    int rc = PM_OK;
    switch (c->type) {
    case COLUMN_BOOL: {
        bool v = src->ints[r] != 0;
        size_t bit = c->page_nonnull & 7;
        if (bit == 0)
            rc = bytebuf_append(&c->plain, "", 1);
        if (rc == PM_OK && v)
            c->plain.data[c->plain.len - 1] |= (char)(1u << bit);
        update_int_stats(c, v);
        break;
    }
    case COLUMN_INT32:
    case COLUMN_INT64: {
        int64_t v = src->ints[r];
        if (c->type == COLUMN_INT32) {
            int32_t x = (int32_t)v;
            rc = put(&c->plain, &x, 4);
        } else {
            rc = put(&c->plain, &v, 8);
        }
        update_int_stats(c, v);
        break;
    }
    case COLUMN_FLOAT:
    case COLUMN_DOUBLE: {
        double v;
        if (c->type == COLUMN_FLOAT) {
            float f = (float)src->reals[r];
            rc = put(&c->plain, &f, 4);
            v = f;
        } else {
            v = src->reals[r];
            rc = put(&c->plain, &v, 8);
        }
        if (!isnan(v))
            update_real_stats(c, v);
        break;
    }
    case COLUMN_STRING: {
        size_t n;
        const char *s = column_string(src, r, &n);
        if (c->dict_mode) {
            uint32_t index;
            bool added;
            rc = dict_insert(c, s, n, &index, &added);
            if (rc == PM_OK) {
                c->indices[c->page_nonnull] = index;
                if (added)
                    update_string_stats(c, s, n, &rc);
                break;
            }
            if (rc != PM_ERR_LIMIT)
                break;
            // the dictionary is full: close it and continue PLAIN
            rc = close_dictionary(w, c, err);
            if (rc)
                return rc;
        }
        uint32_t len = (uint32_t)n;
        rc = put(&c->plain, &len, 4);
        if (rc == PM_OK)
            rc = put(&c->plain, s, n);
        if (rc == PM_OK)
            update_string_stats(c, s, n, &rc);
        break;
    }
    }
    if (rc)
        return pm_error_set(err, rc, "cannot write '%s': buffering column '%s': %s", w->path,
                            c->name, pm_strerror(rc));
    c->page_nonnull++;
    return PM_OK;
}

static int append_rows(struct parquet_writer *w, struct pqw_column *c, const struct column *src,
                       size_t from, size_t n, struct pm_error *err)
{
    size_t r = from, end = from + n;
    while (r < end) {
        int rc = ensure_page_cap(c, end - r);
        if (rc)
            return pm_error_set(err, rc, "cannot write '%s': buffering column '%s': %s", w->path,
                                c->name, pm_strerror(rc));
        for (; r < end; r++) {
            bool valid = src->valid[r] != 0;
            if (valid) {
                // may flush the page (dictionary fallback): set the level afterwards
                rc = append_value(w, c, src, r, err);
                if (rc)
                    return rc;
            } else {
                c->chunk_nulls++;
            }
            if (c->nullable)
                c->levels[c->page_rows] = valid;
            c->page_rows++;
            c->chunk_values++;
            if (c->page_rows >= PAGE_MAX_VALUES || c->plain.len >= PAGE_TARGET_BYTES) {
                rc = flush_page(w, c, err);
                if (rc)
                    return rc;
                r++;
                break; // re-check the page capacity
            }
        }
    }
    return PM_OK;
}

// ---- row groups

// min and max as `w`-byte PLAIN values.
static int put_min_max(struct bytebuf *min, struct bytebuf *max, const void *lo, const void *hi,
                       size_t w)
{
    int rc = bytebuf_append(min, lo, w);
    return rc ? rc : bytebuf_append(max, hi, w);
}

static void encode_stats(struct pqw_column *c, struct bytebuf *min, struct bytebuf *max,
                         struct parquet_encode_stats *st)
{
    memset(st, 0, sizeof *st);
    st->null_count = c->chunk_nulls;
    st->has_min_max = c->has_minmax;
    st->legacy_min_max = c->type != COLUMN_STRING; // signed order: old fields are valid
    if (!c->has_minmax)
        return;
    bytebuf_clear(min);
    bytebuf_clear(max);
    int rc = PM_OK;
    switch (c->type) {
    case COLUMN_BOOL: {
        uint8_t lo = (uint8_t)c->min_i, hi = (uint8_t)c->max_i;
        rc = put_min_max(min, max, &lo, &hi, 1);
        break;
    }
    case COLUMN_INT32: {
        int32_t lo = (int32_t)c->min_i, hi = (int32_t)c->max_i;
        rc = put_min_max(min, max, &lo, &hi, 4);
        break;
    }
    case COLUMN_INT64:
        rc = put_min_max(min, max, &c->min_i, &c->max_i, 8);
        break;
    case COLUMN_FLOAT:
    case COLUMN_DOUBLE: {
        // zeros: the spec asks for -0.0 as min and +0.0 as max
        double lo = c->min_d == 0.0 ? -0.0 : c->min_d;
        double hi = c->max_d == 0.0 ? 0.0 : c->max_d;
        if (c->type == COLUMN_FLOAT) {
            float flo = (float)lo, fhi = (float)hi;
            rc = put_min_max(min, max, &flo, &fhi, 4);
        } else {
            rc = put_min_max(min, max, &lo, &hi, 8);
        }
        break;
    }
    case COLUMN_STRING:
        st->min = c->min_s.data ? c->min_s.data : "";
        st->min_len = c->min_s.len;
        st->max = c->max_s.data ? c->max_s.data : "";
        st->max_len = c->max_s.len;
        return;
    }
    if (rc) { // out of memory for a few bytes: drop min/max rather than fail
        st->has_min_max = false;
        return;
    }
    st->min = min->data;
    st->min_len = min->len;
    st->max = max->data;
    st->max_len = max->len;
}

static int flush_row_group(struct parquet_writer *w, struct pm_error *err)
{
    int rc;
    for (size_t j = 0; j < w->ncols; j++) {
        struct pqw_column *c = &w->cols[j];
        rc = flush_page(w, c, err);
        if (rc == PM_OK)
            rc = close_dictionary(w, c, err);
        if (rc)
            return rc;
    }
    static const enum parquet_encoding enc_plain[] = {PARQUET_ENC_PLAIN, PARQUET_ENC_RLE};
    static const enum parquet_encoding enc_dict[] = {PARQUET_ENC_PLAIN, PARQUET_ENC_RLE,
                                                     PARQUET_ENC_RLE_DICTIONARY};
    int64_t rg_start = w->offset;
    int64_t total_uncompressed = 0;
    for (size_t j = 0; j < w->ncols; j++) {
        struct pqw_column *c = &w->cols[j];
        struct parquet_encode_column_chunk *m = &w->chunks[j];
        memset(m, 0, sizeof *m);
        m->type = c->ptype;
        m->name = c->name;
        m->codec = compression_of(w->codec);
        m->num_values = c->chunk_values;
        m->file_offset = w->offset;
        m->dictionary_page_offset = -1;
        if (c->dict_page.len) {
            m->dictionary_page_offset = w->offset;
            m->dictionary_pages = 1;
            rc = write_all(w, c->dict_page.data, c->dict_page.len, err);
            if (rc)
                return rc;
        }
        m->data_page_offset = w->offset;
        rc = write_all(w, c->pages.data, c->pages.len, err);
        if (rc)
            return rc;
        m->total_compressed_size = (int64_t)(c->dict_page.len + c->pages.len);
        m->total_uncompressed_size = c->chunk_uncompressed;
        m->dict_data_pages = c->dict_data_pages;
        m->plain_data_pages = c->plain_data_pages;
        m->encodings = c->dict_page.len ? enc_dict : enc_plain;
        m->num_encodings = c->dict_page.len ? 3 : 2;
        encode_stats(c, &w->stat_min[j], &w->stat_max[j], &m->stats);
        total_uncompressed += c->chunk_uncompressed;
    }
    struct parquet_encode_row_group rg = {
        .columns = w->chunks,
        .num_columns = w->ncols,
        .total_byte_size = total_uncompressed,
        .num_rows = (int64_t)w->rg_rows,
        .file_offset = rg_start,
        .total_compressed_size = w->offset - rg_start,
        .ordinal = w->num_row_groups <= INT16_MAX ? (int32_t)w->num_row_groups : -1,
    };
    rc = parquet_encode_row_group(&w->footer_rgs, &rg);
    if (rc)
        return pm_error_set(err, rc, "cannot write '%s': footer: %s", w->path, pm_strerror(rc));
    for (size_t j = 0; j < w->ncols; j++)
        column_reset_chunk(&w->cols[j]);
    w->num_rows += (int64_t)w->rg_rows;
    w->rg_rows = 0;
    w->num_row_groups++;
    return PM_OK;
}

// ---- public API

int parquet_writer_open(struct parquet_writer **out, const char *path,
                        const struct column_info *schema, size_t ncols,
                        const struct parquet_writer_options *opt, struct pm_error *err)
{
    if (!out || !path || (!schema && ncols))
        return pm_error_set(err, PM_ERR_USAGE, "parquet_writer_open: missing argument");
    *out = NULL;
    if (ncols == 0)
        return pm_error_set(err, PM_ERR_USAGE, "cannot write '%s': the schema has no columns",
                            path);
    enum parquet_codec codec = opt ? opt->codec : PARQUET_CODEC_ZSTD;
    if (codec != PARQUET_CODEC_NONE && codec != PARQUET_CODEC_SNAPPY &&
        codec != PARQUET_CODEC_GZIP && codec != PARQUET_CODEC_ZSTD)
        return pm_error_set(err, PM_ERR_USAGE, "cannot write '%s': unknown codec %d", path,
                            (int)codec);
    for (size_t j = 0; j < ncols; j++) {
        if (!schema[j].name || !schema[j].name[0])
            return pm_error_set(err, PM_ERR_USAGE, "cannot write '%s': column %zu has no name",
                                path, j);
        if (physical_type(schema[j].type) == PARQUET_INT96)
            return pm_error_set(err, PM_ERR_USAGE,
                                "cannot write '%s': column '%s' has unknown type %d", path,
                                schema[j].name, (int)schema[j].type);
    }

    struct parquet_writer *w = calloc(1, sizeof *w);
    if (!w)
        return pm_error_set(err, PM_ERR_NOMEM, "cannot write '%s': out of memory", path);
    w->fd = -1;
    w->codec = codec;
    w->row_group_rows = opt && opt->row_group_rows ? opt->row_group_rows : DEFAULT_ROW_GROUP_ROWS;
    w->ncols = ncols;
    w->path = strdup(path);
    w->cols = calloc(ncols, sizeof *w->cols);
    w->chunks = calloc(ncols, sizeof *w->chunks);
    w->stat_min = calloc(ncols, sizeof *w->stat_min);
    w->stat_max = calloc(ncols, sizeof *w->stat_max);
    bool ok = w->path && w->cols && w->chunks && w->stat_min && w->stat_max;
    for (size_t j = 0; ok && j < ncols; j++) {
        struct pqw_column *c = &w->cols[j];
        c->name = strdup(schema[j].name);
        c->type = schema[j].type;
        c->nullable = schema[j].nullable;
        c->ptype = physical_type(c->type);
        c->dict_mode = c->type == COLUMN_STRING;
        ok = c->name != NULL;
    }
    if (ok && codec == PARQUET_CODEC_ZSTD)
        ok = (w->zstd = ZSTD_createCCtx()) != NULL;
    if (ok && codec == PARQUET_CODEC_GZIP) {
        ok = deflateInit2(&w->zs, Z_DEFAULT_COMPRESSION, Z_DEFLATED, 15 + 16, 8,
                          Z_DEFAULT_STRATEGY) == Z_OK;
        w->zs_ready = ok;
    }
    if (!ok) {
        parquet_writer_free(w);
        return pm_error_set(err, PM_ERR_NOMEM, "cannot write '%s': out of memory", path);
    }
    w->fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0666);
    if (w->fd < 0) {
        int e = errno;
        parquet_writer_free(w);
        return pm_error_set(err, PM_ERR_IO, "cannot create '%s': %s", path, strerror(e));
    }
    int rc = write_all(w, PARQUET_MAGIC, 4, err);
    if (rc) {
        parquet_writer_free(w);
        return rc;
    }
    *out = w;
    return PM_OK;
}

static int check_batch(const struct parquet_writer *w, const struct table_batch *b,
                       struct pm_error *err)
{
    if (b->ncols != w->ncols)
        return pm_error_set(err, PM_ERR_USAGE,
                            "cannot write '%s': batch has %zu columns, the schema %zu", w->path,
                            b->ncols, w->ncols);
    for (size_t j = 0; j < w->ncols; j++) {
        const struct pqw_column *c = &w->cols[j];
        const struct column *src = &b->cols[j];
        if (src->type != c->type)
            return pm_error_set(err, PM_ERR_USAGE,
                                "cannot write '%s': column '%s' is %s in the batch but %s in "
                                "the schema",
                                w->path, c->name, column_type_name(src->type),
                                column_type_name(c->type));
        if (src->len != b->nrows)
            return pm_error_set(err, PM_ERR_USAGE,
                                "cannot write '%s': column '%s' has %zu rows, the batch %zu",
                                w->path, c->name, src->len, b->nrows);
        if (b->nrows == 0)
            continue;
        if (!c->nullable) {
            const void *z = memchr(src->valid, 0, b->nrows);
            if (z) {
                size_t r = (size_t)((const uint8_t *)z - src->valid);
                return pm_error_set(err, PM_ERR_USAGE,
                                    "cannot write '%s': null in required column '%s' at row "
                                    "%llu",
                                    w->path, c->name, (unsigned long long)(b->first_row + r));
            }
        }
        if (c->type == COLUMN_INT32) {
            for (size_t r = 0; r < b->nrows; r++) {
                int64_t v = src->ints[r];
                if (src->valid[r] && (v < INT32_MIN || v > INT32_MAX))
                    return pm_error_set(err, PM_ERR_USAGE,
                                        "cannot write '%s': value %lld of int32 column '%s' "
                                        "at row %llu is out of range",
                                        w->path, (long long)v, c->name,
                                        (unsigned long long)(b->first_row + r));
            }
        }
        if (c->type == COLUMN_STRING) {
            for (size_t r = 0; r < b->nrows; r++) {
                if (src->offsets[r + 1] < src->offsets[r] || src->offsets[r + 1] > src->chars.len)
                    return pm_error_set(err, PM_ERR_USAGE,
                                        "cannot write '%s': column '%s' has bad string "
                                        "offsets at row %llu",
                                        w->path, c->name, (unsigned long long)(b->first_row + r));
                if (src->offsets[r + 1] - src->offsets[r] > INT32_MAX)
                    return pm_error_set(err, PM_ERR_LIMIT,
                                        "cannot write '%s': string in column '%s' at row %llu "
                                        "exceeds 2 GiB",
                                        w->path, c->name, (unsigned long long)(b->first_row + r));
            }
        }
    }
    return PM_OK;
}

static int check_state(const struct parquet_writer *w, struct pm_error *err)
{
    if (w->closed)
        return pm_error_set(err, PM_ERR_USAGE, "cannot write '%s': the writer is closed", w->path);
    if (w->failed)
        return pm_error_set(err, w->failed, "cannot write '%s': an earlier write failed", w->path);
    return PM_OK;
}

int parquet_writer_write(struct parquet_writer *w, const struct table_batch *batch,
                         struct pm_error *err)
{
    if (!w || !batch)
        return pm_error_set(err, PM_ERR_USAGE, "parquet_writer_write: missing argument");
    int rc = check_state(w, err);
    if (rc == PM_OK)
        rc = check_batch(w, batch, err);
    if (rc)
        return rc;
    size_t done = 0;
    while (done < batch->nrows) {
        size_t take = batch->nrows - done;
        if (take > w->row_group_rows - w->rg_rows)
            take = w->row_group_rows - w->rg_rows;
        for (size_t j = 0; j < w->ncols; j++) {
            rc = append_rows(w, &w->cols[j], &batch->cols[j], done, take, err);
            if (rc)
                return writer_fail(w, rc, err);
        }
        w->rg_rows += take;
        done += take;
        if (w->rg_rows == w->row_group_rows) {
            rc = flush_row_group(w, err);
            if (rc)
                return writer_fail(w, rc, err);
        }
    }
    return PM_OK;
}

int parquet_writer_close(struct parquet_writer *w, struct pm_error *err)
{
    if (!w)
        return pm_error_set(err, PM_ERR_USAGE, "parquet_writer_close: missing writer");
    int rc = check_state(w, err);
    if (rc)
        return rc;
    if (w->rg_rows > 0) {
        rc = flush_row_group(w, err);
        if (rc)
            return writer_fail(w, rc, err);
    }
    struct parquet_encode_schema_element *schema = calloc(w->ncols + 1, sizeof *schema);
    if (!schema)
        return writer_fail(
            w, pm_error_set(err, PM_ERR_NOMEM, "cannot write '%s': out of memory", w->path), err);
    schema[0] = (struct parquet_encode_schema_element){
        .name = "schema", .type = -1, .repetition = -1, .num_children = (int)w->ncols};
    for (size_t j = 0; j < w->ncols; j++) {
        const struct pqw_column *c = &w->cols[j];
        schema[j + 1] = (struct parquet_encode_schema_element){
            .name = c->name,
            .type = c->ptype,
            .repetition = c->nullable ? PARQUET_OPTIONAL : PARQUET_REQUIRED,
            .num_children = -1,
            .utf8_string = c->type == COLUMN_STRING,
        };
    }
    struct parquet_encode_file_metadata md = {
        .version = 2,
        .schema = schema,
        .num_schema = w->ncols + 1,
        .num_rows = w->num_rows,
        .row_groups = w->footer_rgs.data,
        .row_groups_len = w->footer_rgs.len,
        .num_row_groups = w->num_row_groups,
        .created_by = "pixelmill " PIXELMILL_VERSION,
        .num_column_orders = w->ncols,
    };
    struct bytebuf *f = &w->payload;
    bytebuf_clear(f);
    rc = parquet_encode_file_metadata(f, &md);
    free(schema);
    if (rc == PM_OK && f->len > UINT32_MAX)
        rc = PM_ERR_LIMIT;
    if (rc == PM_OK) {
        uint32_t len = (uint32_t)f->len;
        rc = bytebuf_append(f, &len, 4);
    }
    if (rc == PM_OK)
        rc = bytebuf_append(f, PARQUET_MAGIC, 4);
    if (rc)
        return writer_fail(
            w, pm_error_set(err, rc, "cannot write '%s': footer: %s", w->path, pm_strerror(rc)),
            err);
    rc = write_all(w, f->data, f->len, err);
    if (rc)
        return writer_fail(w, rc, err);
    // fsync is not supported on pipes and character devices: nothing to make durable
    if (fsync(w->fd) != 0 && errno != EINVAL && errno != ENOTSUP)
        return writer_fail(
            w, pm_error_set(err, PM_ERR_IO, "cannot fsync '%s': %s", w->path, strerror(errno)),
            err);
    int fd = w->fd;
    w->fd = -1;
    if (close(fd) != 0)
        return writer_fail(
            w, pm_error_set(err, PM_ERR_IO, "cannot close '%s': %s", w->path, strerror(errno)),
            err);
    w->closed = true;
    return PM_OK;
}

void parquet_writer_free(struct parquet_writer *w)
{
    if (!w)
        return;
    if (w->fd >= 0)
        close(w->fd);
    for (size_t j = 0; w->cols && j < w->ncols; j++) {
        struct pqw_column *c = &w->cols[j];
        free(c->name);
        free(c->levels);
        free(c->indices);
        bytebuf_release(&c->plain);
        bytebuf_release(&c->pages);
        bytebuf_release(&c->min_s);
        bytebuf_release(&c->max_s);
        bytebuf_release(&c->dict_plain);
        free(c->dict_off);
        free(c->dict_hash);
        free(c->slots);
        bytebuf_release(&c->dict_page);
    }
    for (size_t j = 0; j < w->ncols; j++) {
        if (w->stat_min)
            bytebuf_release(&w->stat_min[j]);
        if (w->stat_max)
            bytebuf_release(&w->stat_max[j]);
    }
    free(w->cols);
    free(w->chunks);
    free(w->stat_min);
    free(w->stat_max);
    bytebuf_release(&w->footer_rgs);
    bytebuf_release(&w->payload);
    bytebuf_release(&w->packed);
    bytebuf_release(&w->header);
    free(w->u32);
    ZSTD_freeCCtx(w->zstd);
    if (w->zs_ready)
        deflateEnd(&w->zs);
    free(w->path);
    free(w);
}
