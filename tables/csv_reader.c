#include "csv_reader.h"

#include "pm_array.h"
#include "text_value.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define CSV_DEFAULT_INFER 65536
#define CSV_DEFAULT_MAX_RECORD ((size_t)64 << 20)

struct csv_span {
    size_t off, n;
    bool scratch; /* bytes live in r->scratch rather than r->buf */
    bool quoted;
};

struct csv_reader {
    struct text_stream *s;
    const char *name;
    char delim;
    uint8_t special[256];
    struct bytebuf buf; /* decompressed input window; unread bytes from pos */
    size_t pos;
    bool eof;
    size_t max_record;
    uint64_t line; /* 1-based line where the next record starts */
    /* the record just parsed */
    struct csv_span *spans;
    size_t nfields, fcap;
    struct bytebuf scratch;
    uint64_t rec_line;
    /* schema */
    size_t nfile_cols;
    char **names;
    struct text_columns cols;
    /* inference window kept for replay */
    struct bytebuf rbytes;
    struct csv_span *rcells; /* rrows * nsel, offsets into rbytes */
    uint64_t *rlines;
    size_t rrows, rnext;
    uint64_t rows_out;
};

static const char *csv_field(const struct csv_reader *r, size_t i, size_t *n)
{
    const struct csv_span *sp = &r->spans[i];
    *n = sp->n;
    return (sp->scratch ? r->scratch.data : r->buf.data) + sp->off;
}

static int csv_push_field(struct csv_reader *r, size_t off, size_t n, bool scratch, bool quoted)
{
    if (pm_array_reserve_one(&r->spans, &r->fcap, r->nfields, sizeof *r->spans, 64))
        return PM_ERR_NOMEM;
    r->spans[r->nfields++] = (struct csv_span){off, n, scratch, quoted};
    return PM_OK;
}

static size_t count_newlines(const char *p, const char *end)
{
    size_t k = 0;
    while (p < end && (p = memchr(p, '\n', (size_t)(end - p))) != NULL) {
        k++;
        p++;
    }
    return k;
}

/* Parse one record at r->pos. Returns 1 when complete, 0 when more input is needed,
 * 2 at the end of the data, or a negative value after setting err. */
static int csv_parse(struct csv_reader *r, struct pm_error *err)
{
    const char *base = r->buf.data;
    const char *start = base + r->pos, *p = start, *end = base + r->buf.len;
    if (p == end)
        return r->eof ? 2 : 0;
    r->nfields = 0;
    bytebuf_clear(&r->scratch);
    size_t inner_lines = 0;
    const char delim = r->delim;
    for (;;) {
        size_t off, n;
        bool scr = false, quoted = false;
        if (p < end && *p == '"') {
            quoted = true;
            const char *q = p + 1, *seg = q;
            size_t sstart = r->scratch.len;
            bool copied = false;
            for (;;) {
                const char *e = memchr(q, '"', (size_t)(end - q));
                if (!e) {
                    if (!r->eof)
                        return 0;
                    pm_error_set(err, PM_ERR_FORMAT, "'%s' line %llu: unterminated quoted field",
                                 r->name, (unsigned long long)(r->line + count_newlines(start, p)));
                    return -1;
                }
                if (e + 1 == end && !r->eof)
                    return 0;
                if (e + 1 < end && e[1] == '"') {
                    if (bytebuf_append(&r->scratch, seg, (size_t)(e + 1 - seg))) {
                        pm_error_set(err, PM_ERR_NOMEM, "'%s': out of memory", r->name);
                        return -1;
                    }
                    copied = true;
                    q = seg = e + 2;
                    continue;
                }
                if (copied) {
                    if (bytebuf_append(&r->scratch, seg, (size_t)(e - seg))) {
                        pm_error_set(err, PM_ERR_NOMEM, "'%s': out of memory", r->name);
                        return -1;
                    }
                    off = sstart;
                    n = r->scratch.len - sstart;
                    scr = true;
                } else {
                    off = (size_t)(seg - base);
                    n = (size_t)(e - seg);
                }
                inner_lines += count_newlines(p + 1, e);
                p = e + 1;
                break;
            }
            if (p < end && *p != delim && *p != '\n' && *p != '\r') {
                pm_error_set(err, PM_ERR_FORMAT,
                             "'%s' line %llu: unexpected character after a closing quote", r->name,
                             (unsigned long long)(r->line + inner_lines));
                return -1;
            }
        } else {
            const char *q = p;
            for (;;) {
                while (q < end && !r->special[(uint8_t)*q])
                    q++;
                if (q < end && *q == '\r') {
                    if (q + 1 == end) {
                        if (!r->eof)
                            return 0;
                        break;
                    }
                    if (q[1] != '\n') {
                        q++; // a lone CR is data
                        continue;
                    }
                }
                break;
            }
            if (q == end && !r->eof)
                return 0;
            off = (size_t)(p - base);
            n = (size_t)(q - p);
            p = q;
        }
        if (csv_push_field(r, off, n, scr, quoted)) {
            pm_error_set(err, PM_ERR_NOMEM, "'%s': out of memory", r->name);
            return -1;
        }
        if (p == end)
            break;
        if (*p == delim) {
            p++;
            continue;
        }
        if (*p == '\n') {
            p++;
            inner_lines++;
            break;
        }
        // *p == '\r'
        if (p + 1 == end) {
            if (!r->eof)
                return 0;
            p++;
            break;
        }
        if (p[1] == '\n') {
            p += 2;
            inner_lines++;
            break;
        }
        pm_error_set(err, PM_ERR_FORMAT, "'%s' line %llu: unexpected carriage return", r->name,
                     (unsigned long long)(r->line + inner_lines));
        return -1;
    }
    if ((size_t)(p - start) > r->max_record) {
        pm_error_set(err, PM_ERR_LIMIT, "'%s' line %llu: record longer than %zu bytes", r->name,
                     (unsigned long long)r->line, r->max_record);
        return -1;
    }
    r->rec_line = r->line;
    r->line += inner_lines;
    r->pos = (size_t)(p - base);
    return 1;
}

/* Next non-blank record into r->spans; *have = false at the end. */
static int csv_next_record(struct csv_reader *r, bool *have, struct pm_error *err)
{
    for (;;) {
        int st = csv_parse(r, err);
        if (st < 0)
            return err->code;
        if (st == 2) {
            *have = false;
            return PM_OK;
        }
        if (st == 1) {
            if (r->nfields == 1 && r->spans[0].n == 0 && !r->spans[0].quoted)
                continue; // blank line
            *have = true;
            return PM_OK;
        }
        if (r->buf.len - r->pos > r->max_record)
            return pm_error_set(err, PM_ERR_LIMIT, "'%s' line %llu: record longer than %zu bytes",
                                r->name, (unsigned long long)r->line, r->max_record);
        int rc = text_stream_more(r->s, &r->buf, &r->pos, &r->eof, err);
        if (rc)
            return rc;
    }
}

void csv_reader_free(struct csv_reader *r)
{
    if (!r)
        return;
    text_stream_free(r->s);
    bytebuf_release(&r->buf);
    bytebuf_release(&r->scratch);
    bytebuf_release(&r->rbytes);
    free(r->spans);
    for (size_t i = 0; i < r->nfile_cols; i++)
        free(r->names[i]);
    free(r->names);
    text_columns_release(&r->cols);
    free(r->rcells);
    free(r->rlines);
    free(r);
}

static int csv_wrong_count(const struct csv_reader *r, struct pm_error *err)
{
    return pm_error_set(err, PM_ERR_FORMAT, "'%s' line %llu: expected %zu fields, found %zu",
                        r->name, (unsigned long long)r->rec_line, r->nfile_cols, r->nfields);
}

static int csv_read_header(struct csv_reader *r, struct pm_error *err)
{
    int rc = text_stream_skip_bom(r->s, &r->buf, &r->pos, &r->eof, err);
    if (rc)
        return rc;
    bool have;
    rc = csv_next_record(r, &have, err);
    if (rc)
        return rc;
    if (!have)
        return pm_error_set(err, PM_ERR_FORMAT, "'%s': empty file, no header line", r->name);
    if (r->nfields > TEXT_MAX_COLUMNS)
        return pm_error_set(err, PM_ERR_LIMIT, "'%s': header has %zu fields, more than %d", r->name,
                            r->nfields, TEXT_MAX_COLUMNS);
    r->names = calloc(r->nfields, sizeof *r->names);
    if (!r->names)
        return pm_error_set(err, PM_ERR_NOMEM, "'%s': out of memory", r->name);
    for (size_t i = 0; i < r->nfields; i++) {
        size_t n;
        const char *f = csv_field(r, i, &n);
        if (memchr(f, '\0', n))
            return pm_error_set(err, PM_ERR_FORMAT, "'%s': NUL byte in header field %zu", r->name,
                                i + 1);
        r->names[i] = strndup(f, n);
        if (!r->names[i])
            return pm_error_set(err, PM_ERR_NOMEM, "'%s': out of memory", r->name);
        r->nfile_cols = i + 1;
        for (size_t k = 0; k < i; k++)
            if (strcmp(r->names[k], r->names[i]) == 0) {
                char q[128];
                return pm_error_set(err, PM_ERR_FORMAT, "'%s': duplicate column name %s", r->name,
                                    text_value_quote(q, sizeof q, f, n));
            }
    }
    return PM_OK;
}

static int csv_infer(struct csv_reader *r, size_t infer_rows, struct pm_error *err)
{
    struct text_infer *st = calloc(r->cols.n ? r->cols.n : 1, sizeof *st);
    size_t rcap = 0;
    int rc = st ? PM_OK : pm_error_set(err, PM_ERR_NOMEM, "'%s': out of memory", r->name);
    while (rc == PM_OK && r->rrows < infer_rows) {
        bool have;
        rc = csv_next_record(r, &have, err);
        if (rc || !have)
            break;
        if (r->nfields != r->nfile_cols) {
            rc = csv_wrong_count(r, err);
            break;
        }
        if (r->rrows == rcap) {
            size_t cap = rcap ? rcap * 2 : 256;
            struct csv_span *c = realloc(r->rcells, cap * (r->cols.n ? r->cols.n : 1) * sizeof *c);
            uint64_t *l = c ? realloc(r->rlines, cap * sizeof *l) : NULL;
            if (c)
                r->rcells = c;
            if (!l) {
                rc = pm_error_set(err, PM_ERR_NOMEM, "'%s': out of memory", r->name);
                break;
            }
            r->rlines = l;
            rcap = cap;
        }
        r->rlines[r->rrows] = r->rec_line;
        for (size_t j = 0; j < r->cols.n; j++) {
            size_t n;
            const char *f = csv_field(r, r->cols.sel[j], &n);
            if (n)
                text_infer_add_text(&st[j], f, n);
            r->rcells[r->rrows * r->cols.n + j] = (struct csv_span){r->rbytes.len, n, 0, 0};
            if (bytebuf_append(&r->rbytes, f, n)) {
                rc = pm_error_set(err, PM_ERR_NOMEM, "'%s': out of memory", r->name);
                break;
            }
        }
        r->rrows++;
    }
    if (rc == PM_OK)
        for (size_t j = 0; j < r->cols.n; j++)
            r->cols.info[j].type = text_infer_type(&st[j]);
    free(st);
    return rc;
}

int csv_reader_open(struct csv_reader **out, struct text_stream *s, char delim,
                    const struct table_reader_options *opt, struct pm_error *err)
{
    *out = NULL;
    struct csv_reader *r = calloc(1, sizeof *r);
    if (!r) {
        text_stream_free(s);
        return pm_error_set(err, PM_ERR_NOMEM, "out of memory");
    }
    r->s = s;
    r->name = text_stream_name(s);
    r->delim = delim;
    r->special[(uint8_t)delim] = 1;
    r->special['\n'] = 1;
    r->special['\r'] = 1;
    r->max_record = opt && opt->max_record_bytes ? opt->max_record_bytes : CSV_DEFAULT_MAX_RECORD;
    size_t infer_rows = opt && opt->infer_rows ? opt->infer_rows : CSV_DEFAULT_INFER;
    r->line = 1;
    bytebuf_init(&r->buf, 0);
    bytebuf_init(&r->scratch, 0);
    bytebuf_init(&r->rbytes, 0);
    int rc = csv_read_header(r, err);
    if (rc == PM_OK)
        rc = text_columns_select(&r->cols, r->name, r->names, r->nfile_cols, opt, err);
    if (rc == PM_OK)
        rc = csv_infer(r, infer_rows, err);
    if (rc) {
        csv_reader_free(r);
        return rc;
    }
    *out = r;
    return PM_OK;
}

size_t csv_reader_num_columns(const struct csv_reader *r)
{
    return r->cols.n;
}

const struct column_info *csv_reader_column(const struct csv_reader *r, size_t i)
{
    return text_columns_get(&r->cols, i);
}

static int csv_append(struct csv_reader *r, struct column *c, size_t j, const char *f, size_t n,
                      uint64_t line, struct pm_error *err)
{
    int rc = text_value_append(c, f, n);
    return rc ? text_value_append_error(r->name, line, r->cols.info[j].name, c->type, rc, f, n, err)
              : PM_OK;
}

int csv_reader_next(struct csv_reader *r, struct table_batch *batch, size_t max_rows,
                    struct pm_error *err)
{
    int rc = text_columns_start_batch(&r->cols, r->name, batch, r->rows_out, err);
    if (rc)
        return rc;
    while (batch->nrows < max_rows) {
        if (r->rnext < r->rrows) {
            const struct csv_span *cells = &r->rcells[r->rnext * r->cols.n];
            for (size_t j = 0; j < r->cols.n; j++) {
                rc = csv_append(r, &batch->cols[j], j, r->rbytes.data + cells[j].off, cells[j].n,
                                r->rlines[r->rnext], err);
                if (rc)
                    return rc;
            }
            if (++r->rnext == r->rrows) {
                // The inference window is consumed: give its memory back.
                bytebuf_release(&r->rbytes);
                free(r->rcells);
                free(r->rlines);
                r->rcells = NULL;
                r->rlines = NULL;
                r->rrows = r->rnext = 0;
                r->rnext = SIZE_MAX;
            }
        } else {
            bool have;
            rc = csv_next_record(r, &have, err);
            if (rc)
                return rc;
            if (!have)
                break;
            if (r->nfields != r->nfile_cols)
                return csv_wrong_count(r, err);
            for (size_t j = 0; j < r->cols.n; j++) {
                size_t n;
                const char *f = csv_field(r, r->cols.sel[j], &n);
                rc = csv_append(r, &batch->cols[j], j, f, n, r->rec_line, err);
                if (rc)
                    return rc;
            }
        }
        batch->nrows++;
        r->rows_out++;
    }
    return PM_OK;
}
