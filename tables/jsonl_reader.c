#include "jsonl_reader.h"

#include "text_value.h"

#include <jansson.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define JSONL_DEFAULT_INFER 65536
#define JSONL_DEFAULT_MAX_RECORD ((size_t)64 << 20)

struct jsonl_reader {
    struct text_stream *s;
    const char *name;
    struct bytebuf buf; /* decompressed input window; unread bytes from pos */
    size_t pos;
    bool eof;
    size_t max_record;
    uint64_t line;  /* 1-based number of the next line */
    const char *lp; /* the current line (without its CR/LF) */
    size_t ln;
    uint64_t cur_line;
    /* all keys of the inference window, in order of first appearance */
    char **keys;
    struct text_infer *stats;
    size_t nkeys, kcap;
    json_t *key_index; /* key -> its index in keys (inference window only) */
    bool selected;     /* the caller chose the columns: ignore other keys */
    struct text_columns cols;
    /* inference window kept for replay: raw lines */
    struct bytebuf rbytes;
    size_t *roff; /* rrows + 1 offsets into rbytes */
    uint64_t *rlines;
    size_t rrows, rnext;
    uint64_t rows_out;
};

static bool is_blank(const char *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (p[i] != ' ' && p[i] != '\t' && p[i] != '\r')
            return false;
    return true;
}

/* The next non-blank line into r->lp/ln; *have = false at the end. */
static int jsonl_next_line(struct jsonl_reader *r, bool *have, struct pm_error *err)
{
    for (;;) {
        const char *p = r->buf.data ? r->buf.data + r->pos : NULL;
        size_t avail = r->buf.len - r->pos;
        const char *nl = avail ? memchr(p, '\n', avail) : NULL;
        if (nl || (r->eof && avail)) {
            size_t n = nl ? (size_t)(nl - p) : avail;
            r->pos += nl ? n + 1 : n;
            r->cur_line = r->line++;
            if (n > 0 && p[n - 1] == '\r')
                n--;
            if (n > r->max_record)
                return pm_error_set(err, PM_ERR_LIMIT, "'%s' line %llu: line longer than %zu bytes",
                                    r->name, (unsigned long long)r->cur_line, r->max_record);
            if (is_blank(p, n))
                continue;
            r->lp = p;
            r->ln = n;
            *have = true;
            return PM_OK;
        }
        if (r->eof) {
            *have = false;
            return PM_OK;
        }
        if (avail > r->max_record)
            return pm_error_set(err, PM_ERR_LIMIT, "'%s' line %llu: line longer than %zu bytes",
                                r->name, (unsigned long long)r->line, r->max_record);
        int rc = text_stream_more(r->s, &r->buf, &r->pos, &r->eof, err);
        if (rc)
            return rc;
    }
}

static int jsonl_parse(struct jsonl_reader *r, const char *p, size_t n, uint64_t line, json_t **out,
                       struct pm_error *err)
{
    json_error_t je;
    json_t *v = json_loadb(p, n, JSON_ALLOW_NUL, &je);
    if (!v)
        return pm_error_set(err, PM_ERR_FORMAT, "'%s' line %llu: invalid JSON at column %d: %s",
                            r->name, (unsigned long long)line, je.column, je.text);
    if (!json_is_object(v)) {
        json_decref(v);
        return pm_error_set(err, PM_ERR_FORMAT, "'%s' line %llu: not a JSON object", r->name,
                            (unsigned long long)line);
    }
    *out = v;
    return PM_OK;
}

static void infer_json(struct text_infer *t, const json_t *v)
{
    switch (json_typeof(v)) {
    case JSON_NULL:
        break;
    case JSON_TRUE:
    case JSON_FALSE:
        t->bools = true;
        break;
    case JSON_INTEGER:
        t->ints = true;
        break;
    case JSON_REAL:
        t->reals = true;
        break;
    default:
        t->strings = true;
        break;
    }
}

static int jsonl_add_key(struct jsonl_reader *r, const char *key, size_t *idx)
{
    if (!r->key_index && !(r->key_index = json_object()))
        return PM_ERR_NOMEM;
    json_t *known = json_object_get(r->key_index, key);
    if (known) {
        *idx = (size_t)json_integer_value(known);
        return PM_OK;
    }
    if (json_object_set_new(r->key_index, key, json_integer((json_int_t)r->nkeys)))
        return PM_ERR_NOMEM;
    if (r->nkeys == r->kcap) {
        size_t cap = r->kcap ? r->kcap * 2 : 16;
        char **k = realloc(r->keys, cap * sizeof *k);
        if (!k)
            return PM_ERR_NOMEM;
        r->keys = k;
        struct text_infer *s = realloc(r->stats, cap * sizeof *s);
        if (!s)
            return PM_ERR_NOMEM;
        r->stats = s;
        r->kcap = cap;
    }
    if (!(r->keys[r->nkeys] = strdup(key)))
        return PM_ERR_NOMEM;
    memset(&r->stats[r->nkeys], 0, sizeof r->stats[0]);
    *idx = r->nkeys++;
    return PM_OK;
}

static int jsonl_infer(struct jsonl_reader *r, size_t infer_rows, struct pm_error *err)
{
    size_t rcap = 0;
    while (r->rrows < infer_rows) {
        bool have;
        int rc = jsonl_next_line(r, &have, err);
        if (rc)
            return rc;
        if (!have)
            break;
        json_t *obj;
        rc = jsonl_parse(r, r->lp, r->ln, r->cur_line, &obj, err);
        if (rc)
            return rc;
        const char *key;
        json_t *v;
        json_object_foreach(obj, key, v)
        {
            size_t k;
            if (r->nkeys == TEXT_MAX_COLUMNS && !json_object_get(r->key_index, key)) {
                json_decref(obj);
                return pm_error_set(err, PM_ERR_LIMIT, "'%s' line %llu: more than %d keys", r->name,
                                    (unsigned long long)r->cur_line, TEXT_MAX_COLUMNS);
            }
            if (jsonl_add_key(r, key, &k)) {
                json_decref(obj);
                return pm_error_set(err, PM_ERR_NOMEM, "'%s': out of memory", r->name);
            }
            infer_json(&r->stats[k], v);
        }
        json_decref(obj);
        if (r->rrows + 1 >= rcap) {
            size_t cap = rcap ? rcap * 2 : 256;
            size_t *o = realloc(r->roff, cap * sizeof *o);
            if (o)
                r->roff = o;
            uint64_t *l = o ? realloc(r->rlines, cap * sizeof *l) : NULL;
            if (!l)
                return pm_error_set(err, PM_ERR_NOMEM, "'%s': out of memory", r->name);
            r->rlines = l;
            rcap = cap;
        }
        r->roff[r->rrows] = r->rbytes.len;
        r->rlines[r->rrows] = r->cur_line;
        if (bytebuf_append(&r->rbytes, r->lp, r->ln))
            return pm_error_set(err, PM_ERR_NOMEM, "'%s': out of memory", r->name);
        r->rrows++;
        r->roff[r->rrows] = r->rbytes.len;
    }
    return PM_OK;
}

void jsonl_reader_free(struct jsonl_reader *r)
{
    if (!r)
        return;
    text_stream_free(r->s);
    bytebuf_release(&r->buf);
    bytebuf_release(&r->rbytes);
    for (size_t i = 0; i < r->nkeys; i++)
        free(r->keys[i]);
    free(r->keys);
    free(r->stats);
    json_decref(r->key_index);
    text_columns_release(&r->cols);
    free(r->roff);
    free(r->rlines);
    free(r);
}

int jsonl_reader_open(struct jsonl_reader **out, struct text_stream *s,
                      const struct table_reader_options *opt, struct pm_error *err)
{
    *out = NULL;
    struct jsonl_reader *r = calloc(1, sizeof *r);
    if (!r) {
        text_stream_free(s);
        return pm_error_set(err, PM_ERR_NOMEM, "out of memory");
    }
    r->s = s;
    r->name = text_stream_name(s);
    r->max_record = opt && opt->max_record_bytes ? opt->max_record_bytes : JSONL_DEFAULT_MAX_RECORD;
    size_t infer_rows = opt && opt->infer_rows ? opt->infer_rows : JSONL_DEFAULT_INFER;
    r->line = 1;
    bytebuf_init(&r->buf, 0);
    bytebuf_init(&r->rbytes, 0);
    int rc = text_stream_skip_bom(r->s, &r->buf, &r->pos, &r->eof, err);
    if (rc == PM_OK)
        rc = jsonl_infer(r, infer_rows, err);
    r->selected = opt && opt->columns;
    if (rc == PM_OK)
        rc = text_columns_select(&r->cols, r->name, r->keys, r->nkeys, opt, err);
    for (size_t j = 0; rc == PM_OK && j < r->cols.n; j++)
        r->cols.info[j].type = text_infer_type(&r->stats[r->cols.sel[j]]);
    if (rc) {
        jsonl_reader_free(r);
        return rc;
    }
    *out = r;
    return PM_OK;
}

size_t jsonl_reader_num_columns(const struct jsonl_reader *r)
{
    return r->cols.n;
}

const struct column_info *jsonl_reader_column(const struct jsonl_reader *r, size_t i)
{
    return text_columns_get(&r->cols, i);
}

static int jsonl_append(struct jsonl_reader *r, struct column *c, size_t j, const json_t *v,
                        uint64_t line, struct pm_error *err)
{
    int rc;
    if (!v || json_is_null(v)) {
        rc = column_append_null(c);
    } else {
        switch (c->type) {
        case COLUMN_STRING:
            if (json_is_string(v)) {
                rc = column_append_string(c, json_string_value(v), json_string_length(v));
            } else {
                char *t = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
                rc = t ? column_append_string(c, t, strlen(t)) : PM_ERR_NOMEM;
                free(t);
            }
            break;
        case COLUMN_INT64:
            rc = json_is_integer(v) ? column_append_int(c, json_integer_value(v)) : PM_ERR_FORMAT;
            break;
        case COLUMN_DOUBLE:
            rc = json_is_integer(v) ? column_append_real(c, (double)json_integer_value(v))
                 : json_is_real(v)  ? column_append_real(c, json_real_value(v))
                                    : PM_ERR_FORMAT;
            break;
        case COLUMN_BOOL:
            rc = json_is_boolean(v) ? column_append_int(c, json_is_true(v)) : PM_ERR_FORMAT;
            break;
        default:
            rc = PM_ERR_INTERNAL;
            break;
        }
    }
    if (rc == PM_OK)
        return PM_OK;
    char *t = rc == PM_ERR_FORMAT ? json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY) : NULL;
    rc = text_value_append_error(r->name, line, r->cols.info[j].name, c->type, rc, t ? t : "?",
                                 t ? strlen(t) : 1, err);
    free(t);
    return rc;
}

static int jsonl_row(struct jsonl_reader *r, struct table_batch *batch, const char *p, size_t n,
                     uint64_t line, struct pm_error *err)
{
    json_t *obj;
    int rc = jsonl_parse(r, p, n, line, &obj, err);
    if (rc)
        return rc;
    size_t found = 0;
    for (size_t j = 0; j < r->cols.n && rc == PM_OK; j++) {
        json_t *v = json_object_get(obj, r->cols.info[j].name);
        found += v != NULL;
        rc = jsonl_append(r, &batch->cols[j], j, v, line, err);
    }
    if (rc == PM_OK && !r->selected && found < json_object_size(obj)) {
        const char *key;
        json_t *v;
        json_object_foreach(obj, key, v)
        {
            size_t j;
            for (j = 0; j < r->cols.n; j++)
                if (strcmp(r->cols.info[j].name, key) == 0)
                    break;
            if (j == r->cols.n) {
                char q[128];
                rc = pm_error_set(err, PM_ERR_FORMAT,
                                  "'%s' line %llu: key %s was not seen in the first rows "
                                  "(select columns to ignore other keys)",
                                  r->name, (unsigned long long)line,
                                  text_value_quote(q, sizeof q, key, strlen(key)));
                break;
            }
        }
    }
    json_decref(obj);
    return rc;
}

int jsonl_reader_next(struct jsonl_reader *r, struct table_batch *batch, size_t max_rows,
                      struct pm_error *err)
{
    int rc = text_columns_start_batch(&r->cols, r->name, batch, r->rows_out, err);
    if (rc)
        return rc;
    while (batch->nrows < max_rows) {
        if (r->rnext < r->rrows) {
            size_t k = r->rnext;
            rc = jsonl_row(r, batch, r->rbytes.data + r->roff[k], r->roff[k + 1] - r->roff[k],
                           r->rlines[k], err);
            if (rc == PM_OK && ++r->rnext == r->rrows) {
                bytebuf_release(&r->rbytes);
                free(r->roff);
                free(r->rlines);
                r->roff = NULL;
                r->rlines = NULL;
                r->rrows = r->rnext = 0;
            }
        } else {
            bool have;
            rc = jsonl_next_line(r, &have, err);
            if (rc)
                return rc;
            if (!have)
                break;
            rc = jsonl_row(r, batch, r->lp, r->ln, r->cur_line, err);
        }
        if (rc)
            return rc;
        batch->nrows++;
        r->rows_out++;
    }
    return PM_OK;
}
