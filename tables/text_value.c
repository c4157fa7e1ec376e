#define _GNU_SOURCE /* strtod_l, newlocale */
#include "text_value.h"

#include <errno.h>
#include <locale.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static locale_t c_locale;
static pthread_once_t c_locale_once = PTHREAD_ONCE_INIT;

static void c_locale_create(void)
{
    c_locale = newlocale(LC_ALL_MASK, "C", (locale_t)0);
}

bool text_value_parse_int(const char *s, size_t n, int64_t *out)
{
    size_t i = 0;
    bool neg = false;
    if (n > 0 && (s[0] == '-' || s[0] == '+')) {
        neg = s[0] == '-';
        i = 1;
    }
    if (i == n)
        return false;
    uint64_t v = 0;
    const uint64_t lim = neg ? (uint64_t)INT64_MAX + 1 : (uint64_t)INT64_MAX;
    for (; i < n; i++) {
        unsigned d = (unsigned char)s[i] - '0';
        if (d > 9)
            return false;
        if (v > (lim - d) / 10)
            return false; // overflow: not an int64 (may still be a double)
        v = v * 10 + d;
    }
    *out = neg ? (int64_t)(0 - v) : (int64_t)v;
    return true;
}

bool text_value_parse_double(const char *s, size_t n, double *out)
{
    if (n == 0 || n > 4096)
        return false;
    // Cheap syntax gate: only characters strtod could use; no hex, no white space.
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= '0' && c <= '9') || c == '.' || c == '-' || c == '+' || c == 'e' || c == 'E' ||
              c == 'i' || c == 'I' || c == 'n' || c == 'N' || c == 'f' || c == 'F' || c == 't' ||
              c == 'T' || c == 'y' || c == 'Y' || c == 'a' || c == 'A'))
            return false;
    }
    char stackbuf[128];
    char *tmp = n < sizeof stackbuf ? stackbuf : malloc(n + 1);
    if (!tmp)
        return false;
    memcpy(tmp, s, n);
    tmp[n] = '\0';
    pthread_once(&c_locale_once, c_locale_create);
    char *end;
    double v = c_locale ? strtod_l(tmp, &end, c_locale) : strtod(tmp, &end);
    bool ok = end == tmp + n;
    if (tmp != stackbuf)
        free(tmp);
    if (ok)
        *out = v;
    return ok;
}

bool text_value_parse_bool(const char *s, size_t n, bool *out)
{
    if ((n == 4 && (!memcmp(s, "true", 4) || !memcmp(s, "True", 4) || !memcmp(s, "TRUE", 4)))) {
        *out = true;
        return true;
    }
    if ((n == 5 && (!memcmp(s, "false", 5) || !memcmp(s, "False", 5) || !memcmp(s, "FALSE", 5)))) {
        *out = false;
        return true;
    }
    return false;
}

void text_infer_add_text(struct text_infer *t, const char *s, size_t n)
{
    if (t->strings)
        return;
    int64_t i;
    double d;
    bool b;
    if (text_value_parse_int(s, n, &i))
        t->ints = true;
    else if (text_value_parse_double(s, n, &d))
        t->reals = true;
    else if (text_value_parse_bool(s, n, &b))
        t->bools = true;
    else
        t->strings = true;
}

enum column_type text_infer_type(const struct text_infer *t)
{
    if (t->strings)
        return COLUMN_STRING;
    if (t->bools)
        return t->ints || t->reals ? COLUMN_STRING : COLUMN_BOOL;
    if (t->reals)
        return COLUMN_DOUBLE;
    if (t->ints)
        return COLUMN_INT64;
    return COLUMN_STRING;
}

int text_value_append(struct column *c, const char *s, size_t n)
{
    if (n == 0)
        return column_append_null(c);
    switch (c->type) {
    case COLUMN_STRING:
        return column_append_string(c, s, n);
    case COLUMN_INT64: {
        int64_t v;
        return text_value_parse_int(s, n, &v) ? column_append_int(c, v) : PM_ERR_FORMAT;
    }
    case COLUMN_DOUBLE: {
        double v;
        return text_value_parse_double(s, n, &v) ? column_append_real(c, v) : PM_ERR_FORMAT;
    }
    case COLUMN_BOOL: {
        bool v;
        return text_value_parse_bool(s, n, &v) ? column_append_int(c, v) : PM_ERR_FORMAT;
    }
    default:
        return PM_ERR_INTERNAL;
    }
}

char *text_value_quote(char *out, size_t cap, const char *s, size_t n)
{
    size_t o = 0;
    if (cap < 8) {
        if (cap)
            out[0] = '\0';
        return out;
    }
    out[o++] = '"';
    size_t i;
    for (i = 0; i < n && i < 60 && o + 6 < cap; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"' || c == '\\') {
            out[o++] = '\\';
            out[o++] = (char)c;
        } else if (c < 0x20 || c == 0x7f) {
            o += (size_t)snprintf(out + o, cap - o, "\\x%02x", c);
        } else {
            out[o++] = (char)c;
        }
    }
    out[o++] = '"';
    if (i < n && o + 4 < cap) {
        memcpy(out + o, "...", 3);
        o += 3;
    }
    out[o] = '\0';
    return out;
}

int text_select_columns(const char *file, char *const *names, size_t nnames,
                        const char *const *want, size_t nwant, size_t *idx, size_t *nsel,
                        struct pm_error *err)
{
    if (!want) {
        for (size_t i = 0; i < nnames; i++)
            idx[i] = i;
        *nsel = nnames;
        return PM_OK;
    }
    for (size_t w = 0; w < nwant; w++) {
        size_t i;
        for (i = 0; i < nnames; i++)
            if (want[w] && strcmp(names[i], want[w]) == 0)
                break;
        if (i == nnames) {
            char list[600];
            size_t o = 0;
            list[0] = '\0';
            for (size_t k = 0; k < nnames && o + 4 < sizeof list; k++) {
                int m = snprintf(list + o, sizeof list - o, "%s'%s'", k ? ", " : "", names[k]);
                if (m < 0)
                    break;
                o += (size_t)m;
            }
            if (o >= sizeof list)
                memcpy(list + sizeof list - 4, "...", 4);
            return pm_error_set(err, PM_ERR_NOT_FOUND, "'%s': no column named '%s' (available: %s)",
                                file, want[w] ? want[w] : "(null)", list);
        }
        idx[w] = i;
    }
    *nsel = nwant;
    return PM_OK;
}

int text_columns_select(struct text_columns *tc, const char *file, char *const *names,
                        size_t nnames, const struct table_reader_options *opt, struct pm_error *err)
{
    memset(tc, 0, sizeof *tc);
    const char *const *want = opt ? opt->columns : NULL;
    size_t nwant = want ? opt->ncolumns : 0;
    size_t nidx = nwant > nnames ? nwant : nnames;
    tc->sel = calloc(nidx ? nidx : 1, sizeof *tc->sel);
    if (!tc->sel)
        return pm_error_set(err, PM_ERR_NOMEM, "'%s': out of memory", file);
    size_t nsel;
    int rc = text_select_columns(file, names, nnames, want, nwant, tc->sel, &nsel, err);
    if (rc)
        return rc;
    tc->info = calloc(nsel ? nsel : 1, sizeof *tc->info);
    if (!tc->info)
        return pm_error_set(err, PM_ERR_NOMEM, "'%s': out of memory", file);
    tc->n = nsel;
    for (size_t j = 0; j < nsel; j++) {
        tc->info[j].name = strdup(names[tc->sel[j]]);
        tc->info[j].type = COLUMN_STRING;
        tc->info[j].nullable = true;
        if (!tc->info[j].name)
            return pm_error_set(err, PM_ERR_NOMEM, "'%s': out of memory", file);
    }
    return PM_OK;
}

void text_columns_release(struct text_columns *tc)
{
    if (!tc)
        return;
    if (tc->info)
        for (size_t j = 0; j < tc->n; j++)
            free(tc->info[j].name);
    free(tc->info);
    free(tc->sel);
    memset(tc, 0, sizeof *tc);
}

const struct column_info *text_columns_get(const struct text_columns *tc, size_t i)
{
    return i < tc->n ? &tc->info[i] : NULL;
}

int text_columns_start_batch(const struct text_columns *tc, const char *file,
                             struct table_batch *batch, uint64_t first_row, struct pm_error *err)
{
    table_batch_clear(batch);
    batch->first_row = first_row;
    if (batch->ncols != tc->n)
        return pm_error_set(err, PM_ERR_USAGE, "'%s': batch has %zu columns, reader %zu", file,
                            batch->ncols, tc->n);
    return PM_OK;
}

int text_value_append_error(const char *file, uint64_t line, const char *column,
                            enum column_type type, int rc, const char *s, size_t n,
                            struct pm_error *err)
{
    if (rc == PM_ERR_FORMAT) {
        char q[128];
        return pm_error_set(err, PM_ERR_FORMAT,
                            "'%s' line %llu column '%s': value %s does not fit the "
                            "type %s inferred from the first rows",
                            file, (unsigned long long)line, column,
                            text_value_quote(q, sizeof q, s, n), column_type_name(type));
    }
    return pm_error_set(err, rc, "'%s' line %llu: cannot store a value: %s", file,
                        (unsigned long long)line, pm_strerror(rc));
}
