#include "metrics.h"

#include "bytebuf.h"
#include "pm_array.h"

#include <errno.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static bool same(const char *a, const char *b)
{
    return (a == NULL && b == NULL) || (a && b && strcmp(a, b) == 0);
}

static void sample_release(struct metric_sample *s)
{
    free(s->name);
    free(s->help);
    free(s->label_name);
    free(s->label_value);
}

void metrics_release(struct metrics *m)
{
    if (!m)
        return;
    for (size_t i = 0; i < m->n; i++)
        sample_release(&m->samples[i]);
    free(m->samples);
    m->samples = NULL;
    m->n = m->cap = 0;
}

static char *dup_or_null(const char *s, bool *oom)
{
    if (!s)
        return NULL;
    char *d = strdup(s);
    if (!d)
        *oom = true;
    return d;
}

int metrics_set(struct metrics *m, const char *name, const char *help, enum metric_kind kind,
                const char *label_name, const char *label_value, double value)
{
    for (size_t i = 0; i < m->n; i++) {
        struct metric_sample *s = &m->samples[i];
        if (!strcmp(s->name, name) && same(s->label_name, label_name) &&
            same(s->label_value, label_value)) {
            s->value = value;
            return PM_OK;
        }
    }
    if (pm_array_reserve_one(&m->samples, &m->cap, m->n, sizeof *m->samples, 16))
        return PM_ERR_NOMEM;
    bool oom = false;
    struct metric_sample s = {dup_or_null(name, &oom),       dup_or_null(help, &oom),        kind,
                              dup_or_null(label_name, &oom), dup_or_null(label_value, &oom), value};
    if (oom) {
        sample_release(&s);
        return PM_ERR_NOMEM;
    }
    m->samples[m->n++] = s;
    return PM_OK;
}

// Label values escape backslash, double quote and newline (text format 0.0.4).
static void append_label_value(struct bytebuf *b, const char *v)
{
    for (; *v; v++) {
        if (*v == '\\')
            bytebuf_append_str(b, "\\\\");
        else if (*v == '"')
            bytebuf_append_str(b, "\\\"");
        else if (*v == '\n')
            bytebuf_append_str(b, "\\n");
        else
            bytebuf_append(b, v, 1);
    }
}

static void append_value(struct bytebuf *b, double v)
{
    if (isnan(v))
        bytebuf_append_str(b, "NaN");
    else if (isinf(v))
        bytebuf_append_str(b, v > 0 ? "+Inf" : "-Inf");
    else
        bytebuf_printf(b, "%.17g", v);
}

char *metrics_render(const struct metrics *m)
{
    struct bytebuf b;
    bytebuf_init(&b, 0);
    bytebuf_reserve(&b, 256);
    for (size_t i = 0; i < m->n; i++) {
        const struct metric_sample *s = &m->samples[i];
        bool first = true;
        for (size_t j = 0; j < i; j++)
            if (!strcmp(m->samples[j].name, s->name))
                first = false;
        if (!first)
            continue; // printed with the first sample of its name
        bytebuf_printf(&b, "# HELP %s %s\n# TYPE %s %s\n", s->name, s->help ? s->help : "", s->name,
                       s->kind == METRIC_COUNTER ? "counter" : "gauge");
        for (size_t j = i; j < m->n; j++) {
            const struct metric_sample *t = &m->samples[j];
            if (strcmp(t->name, s->name))
                continue;
            bytebuf_append_str(&b, t->name);
            if (t->label_name) {
                bytebuf_printf(&b, "{%s=\"", t->label_name);
                append_label_value(&b, t->label_value ? t->label_value : "");
                bytebuf_append_str(&b, "\"}");
            }
            bytebuf_append_str(&b, " ");
            append_value(&b, t->value);
            bytebuf_append_str(&b, "\n");
        }
    }
    return b.data;
}

int metrics_write_file(const struct metrics *m, const char *path, struct pm_error *err)
{
    char *text = metrics_render(m);
    if (!text)
        return pm_error_set(err, PM_ERR_NOMEM, "out of memory rendering metrics");
    char tmp[4096];
    if ((size_t)snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid()) >= sizeof tmp) {
        free(text);
        return pm_error_set(err, PM_ERR_USAGE, "metrics path too long: '%s'", path);
    }
    FILE *f = fopen(tmp, "w");
    if (!f) {
        int e = errno;
        free(text);
        return pm_error_set(err, PM_ERR_IO, "cannot write metrics file '%s': %s", tmp, strerror(e));
    }
    size_t len = strlen(text);
    bool ok = fwrite(text, 1, len, f) == len;
    ok &= fclose(f) == 0;
    free(text);
    if (!ok || rename(tmp, path) != 0) {
        int e = errno;
        unlink(tmp);
        return pm_error_set(err, PM_ERR_IO, "cannot write metrics file '%s': %s", path,
                            strerror(e));
    }
    return PM_OK;
}
