#include "column.h"

#include "pm_error.h"

#include <stdlib.h>
#include <string.h>

const char *column_type_name(enum column_type type)
{
    switch (type) {
    case COLUMN_BOOL: return "bool";
    case COLUMN_INT32: return "int32";
    case COLUMN_INT64: return "int64";
    case COLUMN_FLOAT: return "float";
    case COLUMN_DOUBLE: return "double";
    case COLUMN_STRING: return "string";
    }
    return "unknown";
}

bool column_type_is_numeric(enum column_type type)
{
    return type == COLUMN_INT32 || type == COLUMN_INT64 || type == COLUMN_FLOAT ||
           type == COLUMN_DOUBLE;
}

int column_init(struct column *c, const char *name, enum column_type type)
{
    memset(c, 0, sizeof *c);
    c->type = type;
    c->name = strdup(name ? name : "");
    bytebuf_init(&c->chars, 0);
    return c->name ? PM_OK : PM_ERR_NOMEM;
}

void column_release(struct column *c)
{
    if (!c)
        return;
    free(c->name);
    free(c->valid);
    free(c->ints);
    free(c->reals);
    free(c->offsets);
    bytebuf_release(&c->chars);
    memset(c, 0, sizeof *c);
}

void column_clear(struct column *c)
{
    c->len = 0;
    c->null_count = 0;
    bytebuf_clear(&c->chars);
    if (c->offsets)
        c->offsets[0] = 0;
}

int column_reserve(struct column *c, size_t rows)
{
    if (rows > SIZE_MAX / 16 - c->len)
        return PM_ERR_LIMIT;
    size_t need = c->len + rows;
    if (need <= c->cap && (c->type != COLUMN_STRING || c->offsets))
        return PM_OK;
    size_t cap = c->cap ? c->cap : 1024;
    while (cap < need)
        cap *= 2;
    uint8_t *valid = realloc(c->valid, cap);
    if (!valid)
        return PM_ERR_NOMEM;
    c->valid = valid;
    switch (c->type) {
    case COLUMN_BOOL:
    case COLUMN_INT32:
    case COLUMN_INT64: {
        int64_t *p = realloc(c->ints, cap * sizeof *p);
        if (!p)
            return PM_ERR_NOMEM;
        c->ints = p;
        break;
    }
    case COLUMN_FLOAT:
    case COLUMN_DOUBLE: {
        double *p = realloc(c->reals, cap * sizeof *p);
        if (!p)
            return PM_ERR_NOMEM;
        c->reals = p;
        break;
    }
    case COLUMN_STRING: {
        bool fresh = c->offsets == NULL;
        uint64_t *p = realloc(c->offsets, (cap + 1) * sizeof *p);
        if (!p)
            return PM_ERR_NOMEM;
        c->offsets = p;
        if (fresh)
            c->offsets[0] = 0;
        break;
    }
    }
    c->cap = cap;
    return PM_OK;
}

static int column_grow_one(struct column *c)
{
    return c->len < c->cap && (c->type != COLUMN_STRING || c->offsets) ? PM_OK
                                                                       : column_reserve(c, 1);
}

int column_append_null(struct column *c)
{
    int rc = column_grow_one(c);
    if (rc)
        return rc;
    c->valid[c->len] = 0;
    switch (c->type) {
    case COLUMN_BOOL:
    case COLUMN_INT32:
    case COLUMN_INT64: c->ints[c->len] = 0; break;
    case COLUMN_FLOAT:
    case COLUMN_DOUBLE: c->reals[c->len] = 0.0; break;
    case COLUMN_STRING: c->offsets[c->len + 1] = c->offsets[c->len]; break;
    }
    c->len++;
    c->null_count++;
    return PM_OK;
}

int column_append_int(struct column *c, int64_t v)
{
    if (c->type != COLUMN_BOOL && c->type != COLUMN_INT32 && c->type != COLUMN_INT64)
        return PM_ERR_INTERNAL;
    int rc = column_grow_one(c);
    if (rc)
        return rc;
    c->valid[c->len] = 1;
    c->ints[c->len++] = v;
    return PM_OK;
}

int column_append_real(struct column *c, double v)
{
    if (c->type != COLUMN_FLOAT && c->type != COLUMN_DOUBLE)
        return PM_ERR_INTERNAL;
    int rc = column_grow_one(c);
    if (rc)
        return rc;
    c->valid[c->len] = 1;
    c->reals[c->len++] = v;
    return PM_OK;
}

int column_append_string(struct column *c, const char *s, size_t n)
{
    if (c->type != COLUMN_STRING)
        return PM_ERR_INTERNAL;
    int rc = column_grow_one(c);
    if (rc)
        return rc;
    rc = bytebuf_append(&c->chars, s, n);
    if (rc)
        return rc;
    c->valid[c->len] = 1;
    c->offsets[c->len + 1] = c->chars.len;
    c->len++;
    return PM_OK;
}

int column_append_range(struct column *c, const struct column *src, size_t first, size_t n)
{
    if (c->type != src->type || first > src->len || n > src->len - first)
        return PM_ERR_USAGE;
    int rc = column_reserve(c, n);
    if (rc)
        return rc;
    for (size_t i = first; i < first + n; i++) {
        if (!src->valid[i]) {
            rc = column_append_null(c);
        } else {
            switch (src->type) {
            case COLUMN_BOOL:
            case COLUMN_INT32:
            case COLUMN_INT64: rc = column_append_int(c, src->ints[i]); break;
            case COLUMN_FLOAT:
            case COLUMN_DOUBLE: rc = column_append_real(c, src->reals[i]); break;
            case COLUMN_STRING: {
                size_t len;
                const char *s = column_string(src, i, &len);
                rc = column_append_string(c, s, len);
                break;
            }
            }
        }
        if (rc)
            return rc;
    }
    return PM_OK;
}

int table_batch_append_range(struct table_batch *dst, const struct table_batch *src,
                             size_t first, size_t n)
{
    if (dst->ncols != src->ncols || first > src->nrows || n > src->nrows - first)
        return PM_ERR_USAGE;
    for (size_t j = 0; j < dst->ncols; j++)
        if (dst->cols[j].type != src->cols[j].type)
            return PM_ERR_USAGE;
    for (size_t j = 0; j < dst->ncols; j++) {
        int rc = column_append_range(&dst->cols[j], &src->cols[j], first, n);
        if (rc)
            return rc;
    }
    dst->nrows += n;
    return PM_OK;
}

int table_batch_init(struct table_batch *b, const struct column_info *schema, size_t ncols)
{
    memset(b, 0, sizeof *b);
    b->cols = calloc(ncols ? ncols : 1, sizeof *b->cols);
    if (!b->cols)
        return PM_ERR_NOMEM;
    b->ncols = ncols;
    for (size_t i = 0; i < ncols; i++) {
        if (column_init(&b->cols[i], schema[i].name, schema[i].type)) {
            table_batch_release(b);
            return PM_ERR_NOMEM;
        }
    }
    return PM_OK;
}

void table_batch_release(struct table_batch *b)
{
    if (!b)
        return;
    for (size_t i = 0; i < b->ncols; i++)
        column_release(&b->cols[i]);
    free(b->cols);
    memset(b, 0, sizeof *b);
}

void table_batch_clear(struct table_batch *b)
{
    for (size_t i = 0; i < b->ncols; i++)
        column_clear(&b->cols[i]);
    b->nrows = 0;
}

int table_batch_find(const struct table_batch *b, const char *name)
{
    for (size_t i = 0; i < b->ncols; i++)
        if (strcmp(b->cols[i].name, name) == 0)
            return (int)i;
    return -1;
}
