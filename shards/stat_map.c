#include "stat_map.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

void stat_map_init(struct stat_map *m, bool integral)
{
    memset(m, 0, sizeof *m);
    m->integral = integral;
}

void stat_map_release(struct stat_map *m)
{
    if (!m)
        return;
    for (size_t i = 0; i < m->n; i++)
        free(m->names[i]);
    free(m->names);
    free(m->values);
    bool integral = m->integral;
    stat_map_init(m, integral);
}

static long find(const struct stat_map *m, const char *name)
{
    for (size_t i = 0; i < m->n; i++)
        if (strcmp(m->names[i], name) == 0)
            return (long)i;
    return -1;
}

int stat_map_add(struct stat_map *m, const char *name, double delta)
{
    if (!name || !name[0])
        return PM_ERR_USAGE;
    long i = find(m, name);
    if (i >= 0) {
        m->values[i] += delta;
        return PM_OK;
    }
    if (m->n == m->cap) {
        size_t cap = m->cap ? m->cap * 2 : 8;
        char **names = realloc(m->names, cap * sizeof *names);
        if (!names)
            return PM_ERR_NOMEM;
        m->names = names;
        double *values = realloc(m->values, cap * sizeof *values);
        if (!values)
            return PM_ERR_NOMEM;
        m->values = values;
        m->cap = cap;
    }
    char *copy = strdup(name);
    if (!copy)
        return PM_ERR_NOMEM;
    m->names[m->n] = copy;
    m->values[m->n] = delta;
    m->n++;
    return PM_OK;
}

double stat_map_get(const struct stat_map *m, const char *name)
{
    long i = find(m, name);
    return i >= 0 ? m->values[i] : 0.0;
}

double stat_map_total(const struct stat_map *m)
{
    double t = 0;
    for (size_t i = 0; i < m->n; i++)
        t += m->values[i];
    return t;
}

int stat_map_merge(struct stat_map *dst, const struct stat_map *src)
{
    for (size_t i = 0; i < src->n; i++) {
        int rc = stat_map_add(dst, src->names[i], src->values[i]);
        if (rc != PM_OK)
            return rc;
    }
    return PM_OK;
}

json_t *stat_map_to_json(const struct stat_map *m)
{
    json_t *o = json_object();
    if (!o)
        return NULL;
    for (size_t i = 0; i < m->n; i++) {
        json_t *v =
            m->integral ? json_integer((json_int_t)llround(m->values[i])) : json_real(m->values[i]);
        if (json_object_set_new(o, m->names[i], v) != 0) {
            json_decref(o);
            return NULL;
        }
    }
    return o;
}

int stat_map_add_json(struct stat_map *m, const json_t *obj, const char *what, struct pm_error *err)
{
    if (!json_is_object(obj))
        return pm_error_set(err, PM_ERR_FORMAT, "%s is not a JSON object", what);
    const char *k;
    json_t *v;
    json_object_foreach((json_t *)obj, k, v)
    {
        double d;
        if (json_is_integer(v))
            d = (double)json_integer_value(v);
        else if (json_is_real(v) && !m->integral)
            d = json_real_value(v);
        else
            return pm_error_set(err, PM_ERR_FORMAT, "%s.%s is not a%s number", what, k,
                                m->integral ? "n integer" : "");
        if (!(d >= 0) || !isfinite(d))
            return pm_error_set(err, PM_ERR_FORMAT, "%s.%s is negative", what, k);
        int rc = stat_map_add(m, k, d);
        if (rc == PM_ERR_USAGE)
            return pm_error_set(err, PM_ERR_FORMAT, "%s has an empty name", what);
        if (rc != PM_OK)
            return pm_error_set(err, rc, "out of memory reading %s", what);
    }
    return PM_OK;
}
