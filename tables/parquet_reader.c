#include "parquet_reader.h"

#include "parquet_format.h"
#include "parquet_thrift.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <snappy-c.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>
#include <zstd.h>

#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "parquet_reader assumes a little-endian host"
#endif

// Sanity limits on untrusted sizes.
#define PQ_MAX_PAGE ((size_t)1 << 30)    // one page, compressed or not
#define PQ_MAX_FOOTER ((size_t)1 << 30)  // the FileMetaData
#define PQ_MAX_HEADER ((size_t)64 << 20) // one PageHeader (statistics included)
#define PQ_STEP 65536                    // values decoded per inner step

// ConvertedType values the reader looks at (parquet.thrift).
#define PQ_CONVERTED_UINT_32 13
#define PQ_CONVERTED_UINT_64 14

// ---------------------------------------------------------------------------------
// RLE / bit-packed hybrid decoder (definition levels, dictionary indices, booleans).

struct pq_rle {
    const uint8_t *p, *end;
    int bw;
    uint32_t mask;
    uint64_t rle_left;
    uint32_t rle_value;
    uint64_t bp_left;
    const uint8_t *bp, *bp_end;
    uint64_t bp_pos;
};

static void rle_init(struct pq_rle *d, const uint8_t *p, const uint8_t *end, int bw)
{
    memset(d, 0, sizeof *d);
    d->p = p;
    d->end = end;
    d->bw = bw;
    d->mask = bw >= 32 ? 0xffffffffu : (1u << bw) - 1;
}

// Start the next run. Returns 0, or -1 when the data ends or is invalid.
static int rle_next_run(struct pq_rle *d)
{
    uint64_t h = 0;
    int shift = 0;
    for (;;) {
        if (d->p >= d->end || shift > 35)
            return -1;
        uint8_t b = *d->p++;
        h |= (uint64_t)(b & 0x7f) << shift;
        if (!(b & 0x80))
            break;
        shift += 7;
    }
    if (h > 0xffffffffu)
        return -1;
    if (h & 1) {
        uint64_t groups = h >> 1;
        uint64_t bytes = groups * (uint64_t)d->bw;
        uint64_t count = groups * 8;
        uint64_t avail = (uint64_t)(d->end - d->p);
        if (bytes > avail) { // a final run may be cut short
            bytes = avail;
            count = d->bw ? avail * 8 / (uint64_t)d->bw : count;
        }
        d->bp = d->p;
        d->bp_end = d->p + bytes;
        d->bp_pos = 0;
        d->bp_left = count;
        d->p += bytes;
    } else {
        int nb = (d->bw + 7) / 8;
        if (d->end - d->p < nb)
            return -1;
        uint32_t v = 0;
        for (int i = 0; i < nb; i++)
            v |= (uint32_t)d->p[i] << (8 * i);
        d->p += nb;
        if (v & ~d->mask)
            return -1;
        d->rle_value = v;
        d->rle_left = h >> 1;
    }
    return 0;
}

// Value `i` of a bit-packed run (bw <= 32).
static inline uint32_t bp_get(const uint8_t *bp, const uint8_t *bp_end, uint64_t i, int bw,
                              uint32_t mask)
{
    uint64_t bit = i * (uint64_t)bw;
    const uint8_t *q = bp + (bit >> 3);
    uint64_t w = 0;
    if (bp_end - q >= 8) {
        memcpy(&w, q, 8);
    } else {
        for (int k = 0; q + k < bp_end; k++)
            w |= (uint64_t)q[k] << (8 * k);
    }
    return (uint32_t)(w >> (bit & 7)) & mask;
}

// Decode n values into out. Returns 0 or -1 (not enough data / invalid).
static int rle_get_u32(struct pq_rle *d, uint32_t *out, size_t n)
{
    size_t done = 0;
    while (done < n) {
        if (d->rle_left) {
            size_t m = n - done < d->rle_left ? n - done : (size_t)d->rle_left;
            uint32_t v = d->rle_value;
            for (size_t i = 0; i < m; i++)
                out[done + i] = v;
            done += m;
            d->rle_left -= m;
        } else if (d->bp_left) {
            size_t m = n - done < d->bp_left ? n - done : (size_t)d->bp_left;
            const uint8_t *bp = d->bp, *be = d->bp_end;
            uint64_t pos = d->bp_pos;
            int bw = d->bw;
            uint32_t mask = d->mask;
            if (bw == 0) {
                memset(out + done, 0, m * sizeof *out);
            } else {
                // Fast path while 8 bytes can be loaded; the tail goes byte-safe.
                size_t i = 0;
                for (; i < m; i++) {
                    uint64_t bit = (pos + i) * (uint64_t)bw;
                    const uint8_t *q = bp + (bit >> 3);
                    if (be - q < 8)
                        break;
                    uint64_t w;
                    memcpy(&w, q, 8);
                    out[done + i] = (uint32_t)(w >> (bit & 7)) & mask;
                }
                for (; i < m; i++)
                    out[done + i] = bp_get(bp, be, pos + i, bw, mask);
            }
            d->bp_pos += m;
            d->bp_left -= m;
            done += m;
        } else if (rle_next_run(d)) {
            return -1;
        }
    }
    return 0;
}

// Decode n levels of bit width 1 into bytes 0/1.
static int rle_get_bits(struct pq_rle *d, uint8_t *out, size_t n)
{
    size_t done = 0;
    while (done < n) {
        if (d->rle_left) {
            size_t m = n - done < d->rle_left ? n - done : (size_t)d->rle_left;
            memset(out + done, (int)d->rle_value, m);
            done += m;
            d->rle_left -= m;
        } else if (d->bp_left) {
            size_t m = n - done < d->bp_left ? n - done : (size_t)d->bp_left;
            const uint8_t *bp = d->bp;
            uint64_t pos = d->bp_pos;
            for (size_t i = 0; i < m; i++) {
                uint64_t b = pos + i;
                out[done + i] = (bp[b >> 3] >> (b & 7)) & 1;
            }
            d->bp_pos += m;
            d->bp_left -= m;
            done += m;
        } else if (rle_next_run(d)) {
            return -1;
        }
    }
    return 0;
}

// ---------------------------------------------------------------------------------
// Reader state.

struct pq_leaf {
    struct column_info info;
    int ptype;
    bool u32; // INT32 annotated UINT_32: read zero-extended into an INT64 column
    bool supported;
    char why[160]; // why unsupported
};

enum pq_value_enc { ENC_NONE, ENC_PLAIN, ENC_DICT, ENC_RLE_BOOL };

struct pq_col {
    size_t leaf;
    uint64_t chunk_pos, chunk_end;
    int codec;
    int page_no; // pages started in this chunk (1-based in messages)
    // buffers reused across pages
    uint8_t *hdr;
    size_t hdr_cap;
    uint8_t *raw;
    size_t raw_cap;
    uint8_t *page;
    size_t page_cap;
    uint32_t *ibuf; // PQ_STEP dictionary indices
    // dictionary
    bool has_dict;
    size_t dict_n;
    int64_t *dict_i;
    double *dict_r;
    uint32_t *dict_off; // dict_n + 1 offsets into dict_chars
    uint8_t *dict_chars;
    size_t dict_cap_n, dict_chars_cap;
    // current data page
    int64_t page_left;
    int enc;
    struct pq_rle def;
    bool has_def;
    const uint8_t *vp, *vend;
    unsigned bool_bit;
    struct pq_rle idx;
};

struct parquet_reader {
    char *name;
    int fd;
    const uint8_t *mem;
    uint64_t size;
    uint64_t data_end; // where the footer starts
    struct pq_file_meta meta;
    struct pq_leaf *leaves;
    size_t nleaves;
    int64_t *rg_first_row;
    size_t *sel;
    size_t nsel;
    struct pq_col *cols;
    size_t rg_first, rg_count, rg_cur;
    int64_t rg_row;
    bool rg_open;
    int failed;
    struct pm_error fail_err;
    ZSTD_DCtx *zstd;
    z_stream z;
    bool z_init;
};

// Names of the format's enum values for messages, indexed by the on-disk values of
// parquet_format.h; a gap or a value outside a table is "unknown".
static const char *const encoding_names[] = {"PLAIN",
                                             NULL,
                                             "PLAIN_DICTIONARY",
                                             "RLE",
                                             "BIT_PACKED",
                                             "DELTA_BINARY_PACKED",
                                             "DELTA_LENGTH_BYTE_ARRAY",
                                             "DELTA_BYTE_ARRAY",
                                             "RLE_DICTIONARY",
                                             "BYTE_STREAM_SPLIT"};
static const char *const codec_names[] = {"UNCOMPRESSED", "SNAPPY", "GZIP", "LZO",
                                          "BROTLI",       "LZ4",    "ZSTD", "LZ4_RAW"};
static const char *const ptype_names[] = {
    "BOOLEAN", "INT32", "INT64", "INT96", "FLOAT", "DOUBLE", "BYTE_ARRAY", "FIXED_LEN_BYTE_ARRAY"};

static const char *name_in(const char *const *names, size_t n, int v)
{
    return v >= 0 && (size_t)v < n && names[v] ? names[v] : "unknown";
}

#define NAME_IN(names, v) name_in(names, sizeof names / sizeof names[0], v)
#define encoding_name(e) NAME_IN(encoding_names, e)
#define codec_name(c) NAME_IN(codec_names, c)
#define ptype_name(t) NAME_IN(ptype_names, t)

static bool codec_supported(int c)
{
    return c == PARQUET_COMP_UNCOMPRESSED || c == PARQUET_COMP_SNAPPY || c == PARQUET_COMP_GZIP ||
           c == PARQUET_COMP_ZSTD;
}

static bool value_encoding_unsupported(int e)
{
    return e == PARQUET_ENC_DELTA_BINARY_PACKED || e == PARQUET_ENC_DELTA_LENGTH_BYTE_ARRAY ||
           e == PARQUET_ENC_DELTA_BYTE_ARRAY || e == PARQUET_ENC_BYTE_STREAM_SPLIT;
}

// An error about column chunk `c` of the current row group, naming file, row group,
// column and page.
static int col_err(struct parquet_reader *r, const struct pq_col *c, struct pm_error *err, int code,
                   const char *fmt, ...) __attribute__((format(printf, 5, 6)));

static int col_err(struct parquet_reader *r, const struct pq_col *c, struct pm_error *err, int code,
                   const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return pm_error_set(err, code, "'%s': row group %zu, column '%s', page %d: %s", r->name,
                        r->rg_cur, r->leaves[c->leaf].info.name, c->page_no, msg);
}

static int read_at(struct parquet_reader *r, uint64_t off, void *buf, size_t n,
                   struct pm_error *err)
{
    if (off > r->size || n > r->size - off)
        return pm_error_set(err, PM_ERR_FORMAT, "'%s': read past end of file", r->name);
    if (r->mem) {
        memcpy(buf, r->mem + off, n);
        return PM_OK;
    }
    size_t done = 0;
    while (done < n) {
        ssize_t k = pread(r->fd, (char *)buf + done, n - done, (off_t)(off + done));
        if (k < 0 && errno == EINTR)
            continue;
        if (k < 0)
            return pm_error_set(err, PM_ERR_IO, "cannot read '%s': %s", r->name, strerror(errno));
        if (k == 0)
            return pm_error_set(err, PM_ERR_FORMAT, "'%s': unexpected end of file", r->name);
        done += (size_t)k;
    }
    return PM_OK;
}

static int grow(void *pp, size_t *cap, size_t need)
{
    if (need <= *cap)
        return PM_OK;
    size_t c = *cap ? *cap : 4096;
    while (c < need)
        c *= 2;
    void *p = realloc(*(void **)pp, c);
    if (!p)
        return PM_ERR_NOMEM;
    *(void **)pp = p;
    *cap = c;
    return PM_OK;
}

// ---------------------------------------------------------------------------------
// Open: footer and schema.

static int build_schema(struct parquet_reader *r, struct pm_error *err)
{
    struct pq_file_meta *m = &r->meta;
    size_t n = m->num_schema;
    if (n == 0)
        return pm_error_set(err, PM_ERR_FORMAT, "'%s': empty schema", r->name);
    int *parent = calloc(n, sizeof *parent);
    int64_t *left = calloc(n, sizeof *left);  // children left, per stack level
    size_t *stack = calloc(n, sizeof *stack); // element index per stack level
    r->leaves = calloc(n, sizeof *r->leaves);
    if (!parent || !left || !stack || !r->leaves) {
        free(parent);
        free(left);
        free(stack);
        return pm_error_set(err, PM_ERR_NOMEM, "'%s': out of memory", r->name);
    }
    int rc = PM_OK;
    const struct pq_schema_element *root = &m->schema[0];
    if (root->num_children < 0) {
        rc = pm_error_set(err, PM_ERR_FORMAT, "'%s': bad schema root", r->name);
        goto out;
    }
    size_t depth = 1, i = 1;
    stack[0] = 0;
    left[0] = root->num_children;
    parent[0] = -1;
    while (depth > 0) {
        if (left[depth - 1] == 0) {
            depth--;
            continue;
        }
        left[depth - 1]--;
        if (i >= n) {
            rc = pm_error_set(err, PM_ERR_FORMAT, "'%s': schema has too few elements", r->name);
            goto out;
        }
        const struct pq_schema_element *e = &m->schema[i];
        parent[i] = (int)stack[depth - 1];
        if (e->has_num_children && e->num_children < 0) {
            rc =
                pm_error_set(err, PM_ERR_FORMAT, "'%s': bad schema element '%s'", r->name, e->name);
            goto out;
        }
        if (e->has_num_children && (e->num_children > 0 || !e->has_type)) {
            stack[depth] = i;
            left[depth] = e->num_children;
            depth++;
            i++;
            continue;
        }
        if (!e->has_type) {
            rc = pm_error_set(err, PM_ERR_FORMAT, "'%s': schema leaf '%s' has no type", r->name,
                              e->name);
            goto out;
        }
        // A leaf: dotted path from the root's child down.
        struct pq_leaf *L = &r->leaves[r->nleaves];
        size_t len = 0;
        bool repeated = e->has_repetition && e->repetition == PARQUET_REPEATED;
        for (int p = (int)i; p > 0; p = parent[p]) {
            len += strlen(m->schema[p].name) + 1;
            if (m->schema[p].has_repetition && m->schema[p].repetition == PARQUET_REPEATED)
                repeated = true;
        }
        if (len == 0 || len > PQ_MAX_FOOTER) {
            rc = pm_error_set(err, PM_ERR_FORMAT, "'%s': bad schema path", r->name);
            goto out;
        }
        len--; // no '.' before the first component
        L->info.name = malloc(len + 1);
        if (!L->info.name) {
            rc = pm_error_set(err, PM_ERR_NOMEM, "'%s': out of memory", r->name);
            goto out;
        }
        size_t pos = len;
        L->info.name[len] = '\0';
        for (int p = (int)i; p > 0; p = parent[p]) {
            size_t l = strlen(m->schema[p].name);
            pos -= l;
            memcpy(L->info.name + pos, m->schema[p].name, l);
            if (pos > 0)
                L->info.name[--pos] = '.';
        }
        r->nleaves++;
        L->ptype = e->type;
        L->info.nullable = e->has_repetition && e->repetition == PARQUET_OPTIONAL;
        L->supported = true;
        switch (e->type) {
        case PARQUET_BOOLEAN:
            L->info.type = COLUMN_BOOL;
            break;
        case PARQUET_INT32:
            L->u32 = e->has_converted_type && e->converted_type == PQ_CONVERTED_UINT_32;
            L->info.type = L->u32 ? COLUMN_INT64 : COLUMN_INT32;
            break;
        case PARQUET_INT64:
            L->info.type = COLUMN_INT64;
            if (e->has_converted_type && e->converted_type == PQ_CONVERTED_UINT_64) {
                L->supported = false; // values above INT64_MAX would not fit
                snprintf(L->why, sizeof L->why, "type UINT_64");
            }
            break;
        case PARQUET_FLOAT:
            L->info.type = COLUMN_FLOAT;
            break;
        case PARQUET_DOUBLE:
            L->info.type = COLUMN_DOUBLE;
            break;
        case PARQUET_BYTE_ARRAY:
            L->info.type = COLUMN_STRING;
            break;
        default:
            L->info.type = COLUMN_STRING;
            L->supported = false;
            snprintf(L->why, sizeof L->why, "physical type %s", ptype_name(e->type));
        }
        if (depth > 1 || repeated) {
            L->supported = false;
            snprintf(L->why, sizeof L->why, "%s", repeated ? "repeated field" : "nested field");
        }
        i++;
    }
    if (i != n)
        rc =
            pm_error_set(err, PM_ERR_FORMAT, "'%s': schema has %zu stray elements", r->name, n - i);
out:
    free(parent);
    free(left);
    free(stack);
    return rc;
}

static int check_row_groups(struct parquet_reader *r, struct pm_error *err)
{
    struct pq_file_meta *m = &r->meta;
    r->rg_first_row = calloc(m->num_row_groups + 1, sizeof *r->rg_first_row);
    if (!r->rg_first_row)
        return pm_error_set(err, PM_ERR_NOMEM, "'%s': out of memory", r->name);
    int64_t total = 0;
    for (size_t g = 0; g < m->num_row_groups; g++) {
        struct pq_row_group *rg = &m->row_groups[g];
        if (rg->num_rows < 0 || rg->num_rows > INT64_MAX - total)
            return pm_error_set(err, PM_ERR_FORMAT, "'%s': row group %zu: bad row count", r->name,
                                g);
        if (rg->num_columns != r->nleaves)
            return pm_error_set(err, PM_ERR_FORMAT,
                                "'%s': row group %zu has %zu columns, schema has %zu", r->name, g,
                                rg->num_columns, r->nleaves);
        r->rg_first_row[g] = total;
        total += rg->num_rows;
        for (size_t j = 0; j < rg->num_columns; j++) {
            struct pq_leaf *L = &r->leaves[j];
            const struct pq_column_chunk *cc = &rg->columns[j];
            if (!L->supported || !cc->has_meta)
                continue; // a missing meta is reported when the column is read
            if (cc->has_file_path) {
                L->supported = false;
                snprintf(L->why, sizeof L->why, "data in an external file");
            } else if (!codec_supported(cc->meta.codec)) {
                L->supported = false;
                snprintf(L->why, sizeof L->why, "codec %s", codec_name(cc->meta.codec));
            } else {
                for (size_t k = 0; k < cc->meta.num_encodings; k++) {
                    if (value_encoding_unsupported(cc->meta.encodings[k])) {
                        L->supported = false;
                        snprintf(L->why, sizeof L->why, "encoding %s",
                                 encoding_name(cc->meta.encodings[k]));
                        break;
                    }
                }
            }
        }
    }
    r->rg_first_row[m->num_row_groups] = total;
    for (size_t j = 0; j < r->nleaves; j++)
        if (!r->leaves[j].supported)
            r->leaves[j].info.type = COLUMN_STRING; // as parquet_reader.h documents
    if (m->num_rows != total)
        return pm_error_set(err, PM_ERR_FORMAT, "'%s': footer says %lld rows, row groups hold %lld",
                            r->name, (long long)m->num_rows, (long long)total);
    return PM_OK;
}

static void col_release(struct pq_col *c)
{
    free(c->hdr);
    free(c->raw);
    free(c->page);
    free(c->ibuf);
    free(c->dict_i);
    free(c->dict_r);
    free(c->dict_off);
    free(c->dict_chars);
    memset(c, 0, sizeof *c);
}

static int set_selection(struct parquet_reader *r, const size_t *idx, size_t n,
                         struct pm_error *err)
{
    size_t *sel = calloc(n ? n : 1, sizeof *sel);
    struct pq_col *cols = calloc(n ? n : 1, sizeof *cols);
    if (!sel || !cols) {
        free(sel);
        free(cols);
        return pm_error_set(err, PM_ERR_NOMEM, "'%s': out of memory", r->name);
    }
    for (size_t i = 0; i < n; i++) {
        sel[i] = idx ? idx[i] : i;
        cols[i].leaf = sel[i];
    }
    for (size_t i = 0; i < r->nsel; i++)
        col_release(&r->cols[i]);
    free(r->cols);
    free(r->sel);
    r->sel = sel;
    r->cols = cols;
    r->nsel = n;
    return PM_OK;
}

static void rewind_range(struct parquet_reader *r)
{
    r->rg_cur = r->rg_first;
    r->rg_row = 0;
    r->rg_open = false;
    r->failed = 0;
}

static int finish_open(struct parquet_reader *r, struct pm_error *err)
{
    if (r->size < 12)
        return pm_error_set(err, PM_ERR_FORMAT, "'%s': too small for a Parquet file", r->name);
    uint8_t head[4], tail[8];
    int rc = read_at(r, 0, head, 4, err);
    if (!rc)
        rc = read_at(r, r->size - 8, tail, 8, err);
    if (rc)
        return rc;
    if (memcmp(head, PARQUET_MAGIC, 4) || memcmp(tail + 4, PARQUET_MAGIC, 4)) {
        if (!memcmp(tail + 4, "PARE", 4))
            return pm_error_set(err, PM_ERR_UNSUPPORTED, "'%s': encrypted Parquet file", r->name);
        return pm_error_set(err, PM_ERR_FORMAT, "'%s': not a Parquet file (bad magic)", r->name);
    }
    uint32_t flen = (uint32_t)tail[0] | (uint32_t)tail[1] << 8 | (uint32_t)tail[2] << 16 |
                    (uint32_t)tail[3] << 24;
    if (flen > r->size - 12 || flen > PQ_MAX_FOOTER)
        return pm_error_set(err, PM_ERR_FORMAT, "'%s': bad footer length %u", r->name, flen);
    r->data_end = r->size - 8 - flen;
    uint8_t *buf = NULL;
    const uint8_t *footer;
    if (r->mem) {
        footer = r->mem + r->data_end;
    } else {
        buf = malloc(flen ? flen : 1);
        if (!buf)
            return pm_error_set(err, PM_ERR_NOMEM, "'%s': out of memory", r->name);
        rc = read_at(r, r->data_end, buf, flen, err);
        if (rc) {
            free(buf);
            return rc;
        }
        footer = buf;
    }
    int trc = pq_file_meta_decode(&r->meta, footer, flen);
    free(buf);
    if (trc == PQ_THRIFT_NOMEM)
        return pm_error_set(err, PM_ERR_NOMEM, "'%s': out of memory", r->name);
    if (trc)
        return pm_error_set(err, PM_ERR_FORMAT, "'%s': malformed footer (FileMetaData)", r->name);
    if (r->meta.encrypted)
        return pm_error_set(err, PM_ERR_UNSUPPORTED, "'%s': encrypted Parquet file", r->name);
    rc = build_schema(r, err);
    if (!rc)
        rc = check_row_groups(r, err);
    if (!rc)
        rc = set_selection(r, NULL, r->nleaves, err);
    r->rg_first = 0;
    r->rg_count = r->meta.num_row_groups;
    rewind_range(r);
    return rc;
}

static struct parquet_reader *reader_new(const char *name)
{
    struct parquet_reader *r = calloc(1, sizeof *r);
    if (!r)
        return NULL;
    r->fd = -1;
    r->name = strdup(name ? name : "(memory)");
    if (!r->name) {
        free(r);
        return NULL;
    }
    return r;
}

int parquet_reader_open(struct parquet_reader **out, const char *path, struct pm_error *err)
{
    *out = NULL;
    struct parquet_reader *r = reader_new(path);
    if (!r)
        return pm_error_set(err, PM_ERR_NOMEM, "'%s': out of memory", path);
    r->fd = open(path, O_RDONLY | O_CLOEXEC);
    if (r->fd < 0) {
        int e = errno;
        parquet_reader_free(r);
        return pm_error_set(err, e == ENOENT ? PM_ERR_NOT_FOUND : PM_ERR_IO, "cannot open '%s': %s",
                            path, strerror(e));
    }
    struct stat st;
    if (fstat(r->fd, &st) || !S_ISREG(st.st_mode)) {
        parquet_reader_free(r);
        return pm_error_set(err, PM_ERR_IO, "cannot read '%s': not a regular file", path);
    }
    r->size = (uint64_t)st.st_size;
    int rc = finish_open(r, err);
    if (rc) {
        parquet_reader_free(r);
        return rc;
    }
    *out = r;
    return PM_OK;
}

int parquet_reader_open_memory(struct parquet_reader **out, const void *data, size_t size,
                               const char *name, struct pm_error *err)
{
    *out = NULL;
    struct parquet_reader *r = reader_new(name);
    if (!r)
        return pm_error_set(err, PM_ERR_NOMEM, "out of memory");
    static const uint8_t empty[1];
    r->mem = data ? data : empty;
    r->size = data ? size : 0;
    int rc = finish_open(r, err);
    if (rc) {
        parquet_reader_free(r);
        return rc;
    }
    *out = r;
    return PM_OK;
}

void parquet_reader_free(struct parquet_reader *r)
{
    if (!r)
        return;
    if (r->fd >= 0)
        close(r->fd);
    for (size_t i = 0; i < r->nsel; i++)
        col_release(&r->cols[i]);
    free(r->cols);
    free(r->sel);
    for (size_t i = 0; i < r->nleaves; i++)
        free(r->leaves[i].info.name);
    free(r->leaves);
    free(r->rg_first_row);
    pq_file_meta_release(&r->meta);
    ZSTD_freeDCtx(r->zstd);
    if (r->z_init)
        inflateEnd(&r->z);
    free(r->name);
    free(r);
}

int64_t parquet_reader_num_rows(const struct parquet_reader *r)
{
    return r->meta.num_rows;
}

size_t parquet_reader_num_row_groups(const struct parquet_reader *r)
{
    return r->meta.num_row_groups;
}

int64_t parquet_reader_row_group_rows(const struct parquet_reader *r, size_t rg)
{
    return rg < r->meta.num_row_groups ? r->meta.row_groups[rg].num_rows : 0;
}

size_t parquet_reader_num_columns(const struct parquet_reader *r)
{
    return r->nleaves;
}

const struct column_info *parquet_reader_column(const struct parquet_reader *r, size_t i)
{
    return i < r->nleaves ? &r->leaves[i].info : NULL;
}

bool parquet_reader_column_supported(const struct parquet_reader *r, size_t i)
{
    return i < r->nleaves && r->leaves[i].supported;
}

static int check_supported(struct parquet_reader *r, size_t leaf, struct pm_error *err)
{
    if (leaf >= r->nleaves)
        return pm_error_set(err, PM_ERR_NOT_FOUND, "'%s': no column %zu (file has %zu)", r->name,
                            leaf, r->nleaves);
    const struct pq_leaf *L = &r->leaves[leaf];
    if (!L->supported)
        return pm_error_set(err, PM_ERR_UNSUPPORTED, "'%s': column '%s': unsupported %s", r->name,
                            L->info.name, L->why);
    return PM_OK;
}

int parquet_reader_select_columns(struct parquet_reader *r, const size_t *idx, size_t n,
                                  struct pm_error *err)
{
    for (size_t i = 0; i < n; i++) {
        int rc = check_supported(r, idx[i], err);
        if (rc)
            return rc;
    }
    int rc = set_selection(r, idx, n, err);
    if (rc)
        return rc;
    rewind_range(r);
    return PM_OK;
}

int parquet_reader_set_row_groups(struct parquet_reader *r, size_t first, size_t count,
                                  struct pm_error *err)
{
    size_t ng = r->meta.num_row_groups;
    if (first > ng || count > ng - first)
        return pm_error_set(err, PM_ERR_USAGE, "'%s': row groups %zu..+%zu out of range (%zu)",
                            r->name, first, count, ng);
    r->rg_first = first;
    r->rg_count = count;
    rewind_range(r);
    return PM_OK;
}

// ---------------------------------------------------------------------------------
// Pages.

static int decompress(struct parquet_reader *r, struct pq_col *c, const uint8_t *src, size_t slen,
                      uint8_t *dst, size_t dlen, struct pm_error *err)
{
    switch (c->codec) {
    case PARQUET_COMP_SNAPPY: {
        size_t ulen;
        if (snappy_uncompressed_length((const char *)src, slen, &ulen) != SNAPPY_OK || ulen != dlen)
            return col_err(r, c, err, PM_ERR_FORMAT, "bad snappy data");
        size_t olen = dlen;
        if (snappy_uncompress((const char *)src, slen, (char *)dst, &olen) != SNAPPY_OK ||
            olen != dlen)
            return col_err(r, c, err, PM_ERR_FORMAT, "bad snappy data");
        return PM_OK;
    }
    case PARQUET_COMP_GZIP: {
        if (!r->z_init) {
            memset(&r->z, 0, sizeof r->z);
            if (inflateInit2(&r->z, 32 + 15) != Z_OK) // gzip (or zlib) header
                return col_err(r, c, err, PM_ERR_NOMEM, "cannot start zlib");
            r->z_init = true;
        } else if (inflateReset(&r->z) != Z_OK) {
            return col_err(r, c, err, PM_ERR_INTERNAL, "cannot reset zlib");
        }
        size_t in_done = 0, out_done = 0;
        for (;;) {
            size_t in_chunk = slen - in_done > UINT_MAX ? UINT_MAX : slen - in_done;
            size_t out_chunk = dlen - out_done > UINT_MAX ? UINT_MAX : dlen - out_done;
            r->z.next_in = (Bytef *)(uintptr_t)(src + in_done);
            r->z.avail_in = (uInt)in_chunk;
            r->z.next_out = dst + out_done;
            r->z.avail_out = (uInt)out_chunk;
            int zr = inflate(&r->z, Z_NO_FLUSH);
            size_t din = in_chunk - r->z.avail_in, dout = out_chunk - r->z.avail_out;
            in_done += din;
            out_done += dout;
            if (zr == Z_STREAM_END)
                break;
            if ((zr != Z_OK && zr != Z_BUF_ERROR) || (din == 0 && dout == 0))
                return col_err(r, c, err, PM_ERR_FORMAT, "bad gzip data");
        }
        if (out_done != dlen)
            return col_err(r, c, err, PM_ERR_FORMAT, "gzip data has %zu bytes, expected %zu",
                           out_done, dlen);
        return PM_OK;
    }
    case PARQUET_COMP_ZSTD: {
        if (!r->zstd && !(r->zstd = ZSTD_createDCtx()))
            return col_err(r, c, err, PM_ERR_NOMEM, "cannot start zstd");
        size_t got = ZSTD_decompressDCtx(r->zstd, dst, dlen, src, slen);
        if (ZSTD_isError(got) || got != dlen)
            return col_err(r, c, err, PM_ERR_FORMAT, "bad zstd data");
        return PM_OK;
    }
    default:
        return col_err(r, c, err, PM_ERR_UNSUPPORTED, "unsupported codec %s", codec_name(c->codec));
    }
}

// Fetch n body bytes at the chunk position into a stable pointer (memory or c->raw).
static int fetch(struct parquet_reader *r, struct pq_col *c, size_t n, const uint8_t **out,
                 struct pm_error *err)
{
    if (r->mem) {
        *out = r->mem + c->chunk_pos;
    } else {
        if (grow(&c->raw, &c->raw_cap, n ? n : 1))
            return col_err(r, c, err, PM_ERR_NOMEM, "out of memory");
        int rc = read_at(r, c->chunk_pos, c->raw, n, err);
        if (rc)
            return col_err(r, c, err, rc, "%s", err ? err->msg : "read failed");
        *out = c->raw;
    }
    c->chunk_pos += n;
    return PM_OK;
}

// Make `body` (the page after its header, compressed unless `raw`) into `usize`
// decompressed bytes; *out points at them.
static int page_bytes(struct parquet_reader *r, struct pq_col *c, const uint8_t *body, size_t csize,
                      size_t usize, bool raw, const uint8_t **out, struct pm_error *err)
{
    if (raw || c->codec == PARQUET_COMP_UNCOMPRESSED) {
        if (csize != usize)
            return col_err(r, c, err, PM_ERR_FORMAT, "uncompressed page of %zu bytes claims %zu",
                           csize, usize);
        *out = body;
        return PM_OK;
    }
    if (c->codec == PARQUET_COMP_SNAPPY) {
        // Check the claimed size before allocating for it.
        size_t ulen;
        if (snappy_uncompressed_length((const char *)body, csize, &ulen) != SNAPPY_OK ||
            ulen != usize)
            return col_err(r, c, err, PM_ERR_FORMAT, "bad snappy data");
    } else if (c->codec == PARQUET_COMP_ZSTD) {
        // (a first frame larger than the page is an error; several frames are allowed)
        unsigned long long fs = ZSTD_getFrameContentSize(body, csize);
        if (fs == ZSTD_CONTENTSIZE_ERROR ||
            (fs != ZSTD_CONTENTSIZE_UNKNOWN && fs > (unsigned long long)usize))
            return col_err(r, c, err, PM_ERR_FORMAT, "bad zstd data");
    }
    if (grow(&c->page, &c->page_cap, usize ? usize : 1))
        return col_err(r, c, err, PM_ERR_NOMEM, "out of memory");
    *out = c->page;
    return decompress(r, c, body, csize, c->page, usize, err);
}

static uint32_t le32(const uint8_t *p)
{
    uint32_t v;
    memcpy(&v, p, 4);
    return v;
}

// Bytes per PLAIN value of the fixed-width types INT32, INT64, FLOAT and DOUBLE.
static size_t plain_width(int pt)
{
    return pt == PARQUET_INT32 || pt == PARQUET_FLOAT ? 4 : 8;
}

// Widen k PLAIN values of fixed-width type pt at p into `out`: int64_t for INT32/INT64
// (an unsigned INT32, u32, is zero-extended), double for FLOAT/DOUBLE.
static void plain_fixed(int pt, bool u32, const uint8_t *p, size_t k, void *out)
{
    int64_t *ints = out;
    double *reals = out;
    switch (pt) {
    case PARQUET_INT32:
        if (u32) {
            for (size_t i = 0; i < k; i++)
                ints[i] = le32(p + 4 * i);
        } else {
            for (size_t i = 0; i < k; i++) {
                int32_t v;
                memcpy(&v, p + 4 * i, 4);
                ints[i] = v;
            }
        }
        break;
    case PARQUET_FLOAT:
        for (size_t i = 0; i < k; i++) {
            float v;
            memcpy(&v, p + 4 * i, 4);
            reals[i] = v;
        }
        break;
    default: // INT64, DOUBLE: stored as they are held
        memcpy(out, p, 8 * k);
        break;
    }
}

static int load_dictionary(struct parquet_reader *r, struct pq_col *c, const uint8_t *p, size_t n,
                           int32_t count, int enc, struct pm_error *err)
{
    if (c->has_dict)
        return col_err(r, c, err, PM_ERR_FORMAT, "second dictionary page");
    if (enc != PARQUET_ENC_PLAIN && enc != PARQUET_ENC_PLAIN_DICTIONARY)
        return col_err(r, c, err, PM_ERR_UNSUPPORTED, "dictionary encoding %s", encoding_name(enc));
    if (count < 0)
        return col_err(r, c, err, PM_ERR_FORMAT, "negative dictionary size");
    size_t k = (size_t)count;
    int pt = r->leaves[c->leaf].ptype;
    const uint8_t *end = p + n;
    switch (pt) {
    case PARQUET_BOOLEAN:
        if ((k + 7) / 8 > n)
            return col_err(r, c, err, PM_ERR_FORMAT, "dictionary page too short");
        if (grow(&c->dict_i, &c->dict_cap_n, (k ? k : 1) * sizeof *c->dict_i))
            return col_err(r, c, err, PM_ERR_NOMEM, "out of memory");
        for (size_t i = 0; i < k; i++)
            c->dict_i[i] = (p[i >> 3] >> (i & 7)) & 1;
        break;
    case PARQUET_INT32:
    case PARQUET_INT64:
    case PARQUET_FLOAT:
    case PARQUET_DOUBLE: {
        bool real = pt == PARQUET_FLOAT || pt == PARQUET_DOUBLE;
        if (k > n / plain_width(pt))
            return col_err(r, c, err, PM_ERR_FORMAT, "dictionary page too short");
        if (real ? grow(&c->dict_r, &c->dict_cap_n, (k ? k : 1) * sizeof *c->dict_r)
                 : grow(&c->dict_i, &c->dict_cap_n, (k ? k : 1) * sizeof *c->dict_i))
            return col_err(r, c, err, PM_ERR_NOMEM, "out of memory");
        plain_fixed(pt, r->leaves[c->leaf].u32, p, k, real ? (void *)c->dict_r : c->dict_i);
        break;
    }
    case PARQUET_BYTE_ARRAY: {
        if (k > n / 4 || n > UINT32_MAX)
            return col_err(r, c, err, PM_ERR_FORMAT, "dictionary page too short");
        if (grow(&c->dict_off, &c->dict_cap_n, (k + 1) * sizeof *c->dict_off) ||
            grow(&c->dict_chars, &c->dict_chars_cap, n ? n : 1))
            return col_err(r, c, err, PM_ERR_NOMEM, "out of memory");
        size_t out = 0;
        c->dict_off[0] = 0;
        for (size_t i = 0; i < k; i++) {
            if (end - p < 4)
                return col_err(r, c, err, PM_ERR_FORMAT, "dictionary entry %zu truncated", i);
            uint32_t len;
            memcpy(&len, p, 4);
            p += 4;
            if ((size_t)(end - p) < len)
                return col_err(r, c, err, PM_ERR_FORMAT, "dictionary entry %zu truncated", i);
            memcpy(c->dict_chars + out, p, len);
            p += len;
            out += len;
            c->dict_off[i + 1] = (uint32_t)out;
        }
        break;
    }
    default:
        return col_err(r, c, err, PM_ERR_INTERNAL, "bad type");
    }
    c->dict_n = k;
    c->has_dict = true;
    return PM_OK;
}

// Set up the value decoder for a data page's values in [p, end).
static int start_values(struct parquet_reader *r, struct pq_col *c, int enc, const uint8_t *p,
                        const uint8_t *end, struct pm_error *err)
{
    int pt = r->leaves[c->leaf].ptype;
    switch (enc) {
    case PARQUET_ENC_PLAIN:
        c->enc = ENC_PLAIN;
        c->vp = p;
        c->vend = end;
        c->bool_bit = 0;
        return PM_OK;
    case PARQUET_ENC_PLAIN_DICTIONARY:
    case PARQUET_ENC_RLE_DICTIONARY: {
        if (!c->has_dict)
            return col_err(r, c, err, PM_ERR_FORMAT,
                           "dictionary-encoded page without a "
                           "dictionary");
        if (!c->ibuf && !(c->ibuf = malloc(PQ_STEP * sizeof *c->ibuf)))
            return col_err(r, c, err, PM_ERR_NOMEM, "out of memory");
        c->enc = ENC_DICT;
        if (p >= end) {
            // A page of only nulls may carry no index bytes at all.
            rle_init(&c->idx, p, end, 0);
            return PM_OK;
        }
        int bw = *p++;
        if (bw > 32)
            return col_err(r, c, err, PM_ERR_FORMAT, "dictionary index bit width %d", bw);
        rle_init(&c->idx, p, end, bw);
        return PM_OK;
    }
    case PARQUET_ENC_RLE:
        if (pt != PARQUET_BOOLEAN)
            return col_err(r, c, err, PM_ERR_UNSUPPORTED, "encoding RLE for %s values",
                           ptype_name(pt));
        if (end - p < 4 || le32(p) > (size_t)(end - p - 4))
            return col_err(r, c, err, PM_ERR_FORMAT, "bad RLE boolean length");
        rle_init(&c->idx, p + 4, p + 4 + le32(p), 1);
        c->enc = ENC_RLE_BOOL;
        if (!c->ibuf && !(c->ibuf = malloc(PQ_STEP * sizeof *c->ibuf)))
            return col_err(r, c, err, PM_ERR_NOMEM, "out of memory");
        return PM_OK;
    default:
        return col_err(r, c, err, PM_ERR_UNSUPPORTED, "unsupported encoding %s (%d)",
                       encoding_name(enc), enc);
    }
}

// Read page headers until a data page is ready (dictionary pages are loaded on the way).
static int next_page(struct parquet_reader *r, struct pq_col *c, struct pm_error *err)
{
    bool optional = r->leaves[c->leaf].info.nullable;
    for (;;) {
        if (c->chunk_pos >= c->chunk_end)
            return col_err(r, c, err, PM_ERR_FORMAT,
                           "column chunk ends before the row group's %lld rows",
                           (long long)r->meta.row_groups[r->rg_cur].num_rows);
        c->page_no++;
        uint64_t avail = c->chunk_end - c->chunk_pos;
        const uint8_t *hp;
        size_t used = 0;
        struct pq_page_header h;
        size_t window = avail < 1024 ? (size_t)avail : 1024;
        for (;;) {
            if (r->mem) {
                window = (size_t)avail; // the whole rest of the chunk is already there
                hp = r->mem + c->chunk_pos;
            } else {
                if (grow(&c->hdr, &c->hdr_cap, window))
                    return col_err(r, c, err, PM_ERR_NOMEM, "out of memory");
                int rc = read_at(r, c->chunk_pos, c->hdr, window, err);
                if (rc)
                    return col_err(r, c, err, rc, "%s", err ? err->msg : "read failed");
                hp = c->hdr;
            }
            int trc = pq_page_header_decode(&h, hp, window, &used);
            if (trc == PQ_THRIFT_OK)
                break;
            if (trc == PQ_THRIFT_TRUNCATED && window < avail && window < PQ_MAX_HEADER) {
                window = avail / 4 < window ? (size_t)avail : window * 4;
                if (window > PQ_MAX_HEADER)
                    window = PQ_MAX_HEADER;
                continue;
            }
            return col_err(r, c, err, trc == PQ_THRIFT_NOMEM ? PM_ERR_NOMEM : PM_ERR_FORMAT,
                           "malformed page header");
        }
        c->chunk_pos += used;
        avail -= used;
        if (h.compressed_page_size < 0 || h.uncompressed_page_size < 0 ||
            (size_t)h.compressed_page_size > PQ_MAX_PAGE ||
            (size_t)h.uncompressed_page_size > PQ_MAX_PAGE)
            return col_err(r, c, err, PM_ERR_FORMAT, "bad page size");
        size_t csize = (size_t)h.compressed_page_size, usize = (size_t)h.uncompressed_page_size;
        if (csize > avail)
            return col_err(r, c, err, PM_ERR_FORMAT,
                           "page of %zu bytes overruns its column "
                           "chunk",
                           csize);
        if (h.type == PARQUET_PAGE_DICTIONARY) {
            if (!h.has_dict)
                return col_err(r, c, err, PM_ERR_FORMAT, "dictionary page without header");
            const uint8_t *body, *data;
            int rc = fetch(r, c, csize, &body, err);
            if (!rc)
                rc = page_bytes(r, c, body, csize, usize, false, &data, err);
            if (!rc)
                rc = load_dictionary(r, c, data, usize, h.dict.num_values, h.dict.encoding, err);
            if (rc)
                return rc;
            continue;
        }
        if (h.type == PARQUET_PAGE_DATA) {
            if (!h.has_data)
                return col_err(r, c, err, PM_ERR_FORMAT, "data page without header");
            if (h.data.num_values < 0)
                return col_err(r, c, err, PM_ERR_FORMAT, "negative value count");
            if (value_encoding_unsupported(h.data.encoding) ||
                h.data.encoding == PARQUET_ENC_BIT_PACKED)
                return col_err(r, c, err, PM_ERR_UNSUPPORTED, "unsupported encoding %s",
                               encoding_name(h.data.encoding));
            const uint8_t *body, *data;
            int rc = fetch(r, c, csize, &body, err);
            if (!rc)
                rc = page_bytes(r, c, body, csize, usize, false, &data, err);
            if (rc)
                return rc;
            const uint8_t *p = data, *end = data + usize;
            c->has_def = optional;
            if (optional) {
                if (h.data.def_level_encoding != PARQUET_ENC_RLE)
                    return col_err(r, c, err, PM_ERR_UNSUPPORTED,
                                   "definition levels in encoding %s",
                                   encoding_name(h.data.def_level_encoding));
                if (end - p < 4 || le32(p) > (size_t)(end - p - 4))
                    return col_err(r, c, err, PM_ERR_FORMAT, "bad definition levels length");
                uint32_t L = le32(p);
                rle_init(&c->def, p + 4, p + 4 + L, 1);
                p += 4 + L;
            }
            rc = start_values(r, c, h.data.encoding, p, end, err);
            if (rc)
                return rc;
            c->page_left = h.data.num_values;
        } else if (h.type == PARQUET_PAGE_DATA_V2) {
            if (!h.has_data_v2)
                return col_err(r, c, err, PM_ERR_FORMAT, "data page v2 without header");
            const struct pq_data_page_header_v2 *v = &h.data_v2;
            if (v->num_values < 0 || v->def_levels_byte_length < 0 || v->rep_levels_byte_length < 0)
                return col_err(r, c, err, PM_ERR_FORMAT, "bad data page v2 header");
            if (value_encoding_unsupported(v->encoding) || v->encoding == PARQUET_ENC_BIT_PACKED)
                return col_err(r, c, err, PM_ERR_UNSUPPORTED, "unsupported encoding %s",
                               encoding_name(v->encoding));
            size_t lev = (size_t)v->def_levels_byte_length + (size_t)v->rep_levels_byte_length;
            if (lev > csize || lev > usize)
                return col_err(r, c, err, PM_ERR_FORMAT, "levels overrun the page");
            const uint8_t *body, *vals;
            int rc = fetch(r, c, csize, &body, err);
            if (!rc)
                rc = page_bytes(r, c, body + lev, csize - lev, usize - lev, !v->is_compressed,
                                &vals, err);
            if (rc)
                return rc;
            c->has_def = optional;
            if (optional) {
                const uint8_t *dp = body + v->rep_levels_byte_length;
                rle_init(&c->def, dp, dp + v->def_levels_byte_length, 1);
            }
            rc = start_values(r, c, v->encoding, vals, vals + (usize - lev), err);
            if (rc)
                return rc;
            c->page_left = v->num_values;
        } else {
            // Index pages and unknown page types: skip.
            c->chunk_pos += csize;
            continue;
        }
        if (c->page_left > 0)
            return PM_OK;
    }
}

// Spread k packed values over the n rows of `valid` (in place, from the back).
#define SPREAD(arr, zero)                                                                          \
    do {                                                                                           \
        size_t j_ = k;                                                                             \
        for (size_t i_ = n; i_-- > 0;) {                                                           \
            if (valid[i_])                                                                         \
                (arr)[i_] = (arr)[--j_];                                                           \
            else                                                                                   \
                (arr)[i_] = (zero);                                                                \
        }                                                                                          \
    } while (0)

// Decode k non-null values (the page's next) into dst slots [0, k) of column `col`.
static int decode_values(struct parquet_reader *r, struct pq_col *c, struct column *col, size_t k,
                         struct pm_error *err)
{
    int pt = r->leaves[c->leaf].ptype;
    size_t at = col->len;
    if (c->enc == ENC_PLAIN) {
        size_t left = (size_t)(c->vend - c->vp);
        switch (pt) {
        case PARQUET_BOOLEAN: {
            size_t bits = (size_t)c->bool_bit + k;
            if ((bits + 7) / 8 > left)
                return col_err(r, c, err, PM_ERR_FORMAT, "boolean values truncated");
            int64_t *d = col->ints + at;
            unsigned b = c->bool_bit;
            const uint8_t *p = c->vp;
            for (size_t i = 0; i < k; i++) {
                size_t bi = b + i;
                d[i] = (p[bi >> 3] >> (bi & 7)) & 1;
            }
            c->vp += bits / 8;
            c->bool_bit = bits % 8;
            return PM_OK;
        }
        case PARQUET_INT32:
        case PARQUET_INT64:
        case PARQUET_FLOAT:
        case PARQUET_DOUBLE: {
            size_t w = plain_width(pt);
            if (k > left / w)
                return col_err(r, c, err, PM_ERR_FORMAT, "%s values truncated", ptype_name(pt));
            bool real = pt == PARQUET_FLOAT || pt == PARQUET_DOUBLE;
            plain_fixed(pt, r->leaves[c->leaf].u32, c->vp, k,
                        real ? (void *)(col->reals + at) : col->ints + at);
            c->vp += w * k;
            return PM_OK;
        }
        case PARQUET_BYTE_ARRAY: {
            // One pass: the strings of this page fit in the bytes left of it, so reserve
            // that (plus 16 bytes of slack for the fixed-size short-string copy).
            const uint8_t *p = c->vp, *end = c->vend;
            if (bytebuf_reserve(&col->chars, left + 16))
                return col_err(r, c, err, PM_ERR_NOMEM, "out of memory");
            char *out = col->chars.data + col->chars.len;
            uint64_t off = col->chars.len;
            uint64_t *offs = col->offsets + at + 1;
            for (size_t i = 0; i < k; i++) {
                if (end - p < 4)
                    return col_err(r, c, err, PM_ERR_FORMAT, "string values truncated");
                uint32_t len = le32(p);
                p += 4;
                if ((size_t)(end - p) < len)
                    return col_err(r, c, err, PM_ERR_FORMAT, "string values truncated");
                if (len <= 16 && end - p >= 16)
                    memcpy(out, p, 16);
                else
                    memcpy(out, p, len);
                out += len;
                off += len;
                offs[i] = off;
                p += len;
            }
            col->chars.len = (size_t)off;
            col->chars.data[col->chars.len] = '\0';
            c->vp = p;
            return PM_OK;
        }
        default:
            return col_err(r, c, err, PM_ERR_INTERNAL, "bad type");
        }
    }
    // Dictionary indices or RLE booleans: bulk-decode into ibuf.
    if (rle_get_u32(&c->idx, c->ibuf, k))
        return col_err(r, c, err, PM_ERR_FORMAT, "%s data truncated or invalid",
                       c->enc == ENC_DICT ? "dictionary index" : "RLE boolean");
    const uint32_t *ix = c->ibuf;
    if (c->enc == ENC_RLE_BOOL) {
        int64_t *d = col->ints + at;
        for (size_t i = 0; i < k; i++)
            d[i] = ix[i];
        return PM_OK;
    }
    uint32_t mx = 0;
    for (size_t i = 0; i < k; i++)
        mx = ix[i] > mx ? ix[i] : mx;
    if (k && mx >= c->dict_n)
        return col_err(r, c, err, PM_ERR_FORMAT, "dictionary index %u out of range (%zu)", mx,
                       c->dict_n);
    switch (pt) {
    case PARQUET_BOOLEAN:
    case PARQUET_INT32:
    case PARQUET_INT64: {
        int64_t *d = col->ints + at;
        const int64_t *dict = c->dict_i;
        for (size_t i = 0; i < k; i++)
            d[i] = dict[ix[i]];
        return PM_OK;
    }
    case PARQUET_FLOAT:
    case PARQUET_DOUBLE: {
        double *d = col->reals + at;
        const double *dict = c->dict_r;
        for (size_t i = 0; i < k; i++)
            d[i] = dict[ix[i]];
        return PM_OK;
    }
    case PARQUET_BYTE_ARRAY: {
        const uint32_t *doff = c->dict_off;
        size_t total = 0;
        for (size_t i = 0; i < k; i++)
            total += doff[ix[i] + 1] - doff[ix[i]];
        if (bytebuf_reserve(&col->chars, total))
            return col_err(r, c, err, PM_ERR_NOMEM, "out of memory");
        char *out = col->chars.data + col->chars.len;
        uint64_t off = col->chars.len;
        uint64_t *offs = col->offsets + at + 1;
        for (size_t i = 0; i < k; i++) {
            uint32_t a = doff[ix[i]], len = doff[ix[i] + 1] - a;
            memcpy(out, c->dict_chars + a, len);
            out += len;
            off += len;
            offs[i] = off;
        }
        col->chars.len = (size_t)off;
        col->chars.data[col->chars.len] = '\0';
        return PM_OK;
    }
    default:
        return col_err(r, c, err, PM_ERR_INTERNAL, "bad type");
    }
}

// Append the next `want` rows of column chunk c to col.
static int read_column(struct parquet_reader *r, struct pq_col *c, struct column *col, size_t want,
                       struct pm_error *err)
{
    while (want > 0) {
        if (c->page_left == 0) {
            int rc = next_page(r, c, err);
            if (rc)
                return rc;
        }
        size_t n = want < (uint64_t)c->page_left ? want : (size_t)c->page_left;
        if (n > PQ_STEP)
            n = PQ_STEP;
        if (column_reserve(col, n))
            return col_err(r, c, err, PM_ERR_NOMEM, "out of memory for %zu rows", n);
        uint8_t *valid = col->valid + col->len;
        size_t k = n;
        if (c->has_def) {
            if (rle_get_bits(&c->def, valid, n))
                return col_err(r, c, err, PM_ERR_FORMAT, "definition levels truncated or invalid");
            k = 0;
            for (size_t i = 0; i < n; i++)
                k += valid[i];
        } else {
            memset(valid, 1, n);
        }
        int rc = decode_values(r, c, col, k, err);
        if (rc)
            return rc;
        if (k < n) {
            size_t at = col->len;
            switch (col->type) {
            case COLUMN_BOOL:
            case COLUMN_INT32:
            case COLUMN_INT64:
                SPREAD(col->ints + at, 0);
                break;
            case COLUMN_FLOAT:
            case COLUMN_DOUBLE:
                SPREAD(col->reals + at, 0.0);
                break;
            case COLUMN_STRING: {
                // offsets[at + 1 + i] is row i's end; nulls end where the last value did.
                uint64_t *o = col->offsets + at + 1;
                uint64_t base = col->offsets[at];
                size_t j = k;
                for (size_t i = n; i-- > 0;) {
                    if (valid[i])
                        o[i] = o[--j];
                    else
                        o[i] = j ? o[j - 1] : base;
                }
                break;
            }
            }
        }
        col->len += n;
        col->null_count += n - k;
        c->page_left -= (int64_t)n;
        want -= n;
    }
    return PM_OK;
}

static int open_row_group(struct parquet_reader *r, struct pm_error *err)
{
    struct pq_row_group *rg = &r->meta.row_groups[r->rg_cur];
    for (size_t j = 0; j < r->nsel; j++) {
        struct pq_col *c = &r->cols[j];
        const struct pq_column_chunk *cc = &rg->columns[c->leaf];
        const struct pq_column_meta *m = &cc->meta;
        c->page_no = 0;
        c->page_left = 0;
        c->has_dict = false;
        c->dict_n = 0;
        if (!cc->has_meta)
            return col_err(r, c, err, PM_ERR_FORMAT, "column chunk has no metadata");
        if (m->type != r->leaves[c->leaf].ptype)
            return col_err(r, c, err, PM_ERR_FORMAT, "chunk type %s differs from schema",
                           ptype_name(m->type));
        if (!codec_supported(m->codec))
            return col_err(r, c, err, PM_ERR_UNSUPPORTED, "unsupported codec %s",
                           codec_name(m->codec));
        c->codec = m->codec;
        int64_t start = m->data_page_offset;
        if (m->has_dictionary_page_offset && m->dictionary_page_offset > 0 &&
            m->dictionary_page_offset < start)
            start = m->dictionary_page_offset;
        if (start < 4 || m->total_compressed_size < 0 || (uint64_t)start > r->data_end ||
            (uint64_t)m->total_compressed_size > r->data_end - (uint64_t)start)
            return col_err(r, c, err, PM_ERR_FORMAT, "column chunk outside the file");
        c->chunk_pos = (uint64_t)start;
        c->chunk_end = (uint64_t)start + (uint64_t)m->total_compressed_size;
    }
    r->rg_open = true;
    r->rg_row = 0;
    return PM_OK;
}

int parquet_reader_next(struct parquet_reader *r, struct table_batch *batch, size_t max_rows,
                        struct pm_error *err)
{
    table_batch_clear(batch);
    batch->first_row = 0;
    if (r->failed) {
        if (err)
            *err = r->fail_err;
        return r->failed;
    }
    if (batch->ncols != r->nsel)
        return pm_error_set(err, PM_ERR_USAGE, "'%s': batch has %zu columns, %zu selected", r->name,
                            batch->ncols, r->nsel);
    for (size_t j = 0; j < r->nsel; j++) {
        int rc = check_supported(r, r->sel[j], err);
        if (rc)
            return rc;
        if (batch->cols[j].type != r->leaves[r->sel[j]].info.type)
            return pm_error_set(err, PM_ERR_USAGE, "'%s': batch column %zu has the wrong type",
                                r->name, j);
    }
    int rc = PM_OK;
    while (batch->nrows < max_rows && r->rg_cur < r->rg_first + r->rg_count) {
        int64_t rows = r->meta.row_groups[r->rg_cur].num_rows;
        if (rows == 0 && !r->rg_open) {
            // pyarrow writes an empty table as one row group of 0 rows whose chunks have
            // no data page (data_page_offset 0): nothing to read, nothing to check.
            r->rg_cur++;
            continue;
        }
        if (!r->rg_open && (rc = open_row_group(r, err)))
            break;
        if (r->rg_row >= rows) {
            for (size_t j = 0; j < r->nsel; j++)
                if (r->cols[j].page_left > 0) {
                    rc = col_err(r, &r->cols[j], err, PM_ERR_FORMAT,
                                 "pages hold more values than the row group's %lld rows",
                                 (long long)rows);
                    break;
                }
            if (rc)
                break;
            r->rg_cur++;
            r->rg_open = false;
            continue;
        }
        uint64_t left = (uint64_t)(rows - r->rg_row);
        size_t n = max_rows - batch->nrows < left ? max_rows - batch->nrows : (size_t)left;
        for (size_t j = 0; j < r->nsel && !rc; j++)
            rc = read_column(r, &r->cols[j], &batch->cols[j], n, err);
        if (rc)
            break;
        if (batch->nrows == 0)
            batch->first_row = (uint64_t)(r->rg_first_row[r->rg_cur] + r->rg_row);
        batch->nrows += n;
        r->rg_row += (int64_t)n;
    }
    if (rc) {
        r->failed = rc;
        if (err)
            r->fail_err = *err;
        else
            pm_error_set(&r->fail_err, rc, "'%s': read failed", r->name);
        table_batch_clear(batch);
    }
    return rc;
}
