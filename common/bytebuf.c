#include "bytebuf.h"

#include "pm_error.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void bytebuf_init(struct bytebuf *b, size_t limit)
{
    b->data = NULL;
    b->len = 0;
    b->cap = 0;
    b->limit = limit;
}

void bytebuf_release(struct bytebuf *b)
{
    if (!b)
        return;
    free(b->data);
    b->data = NULL;
    b->len = 0;
    b->cap = 0;
}

int bytebuf_reserve(struct bytebuf *b, size_t extra)
{
    if (extra > SIZE_MAX / 2 - b->len)
        return PM_ERR_LIMIT;
    size_t need = b->len + extra;
    if (b->limit && need > b->limit)
        return PM_ERR_LIMIT;
    if (need + 1 <= b->cap)
        return PM_OK;
    size_t cap = b->cap ? b->cap : 64;
    while (cap < need + 1)
        cap *= 2;
    char *p = realloc(b->data, cap);
    if (!p)
        return PM_ERR_NOMEM;
    b->data = p;
    b->cap = cap;
    b->data[b->len] = '\0';
    return PM_OK;
}

int bytebuf_append(struct bytebuf *b, const void *p, size_t n)
{
    int rc = bytebuf_reserve(b, n);
    if (rc)
        return rc;
    if (n)
        memcpy(b->data + b->len, p, n);
    b->len += n;
    b->data[b->len] = '\0';
    return PM_OK;
}

int bytebuf_append_str(struct bytebuf *b, const char *s)
{
    return bytebuf_append(b, s, strlen(s));
}

int bytebuf_printf(struct bytebuf *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0)
        return PM_ERR_INTERNAL;
    int rc = bytebuf_reserve(b, (size_t)n);
    if (rc)
        return rc;
    va_start(ap, fmt);
    vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
    return PM_OK;
}

void bytebuf_clear(struct bytebuf *b)
{
    b->len = 0;
    if (b->data)
        b->data[0] = '\0';
}
