/**
 * stat_map — a small ordered map from names to non-negative numbers, for the counters in
 * stats files and dataset.json ("success": 9321, "timeout": 12, "download": 3.5 s).
 *
 * Names keep the order in which they were first added (so files written from the same
 * counts are identical). Lookups are linear: meant for tens of names, not thousands.
 * An `integral` map holds counts and is written as JSON integers (exact up to 2^53);
 * otherwise values are written as JSON reals. Caller-owned; not thread-safe.
 */
#ifndef PM_STAT_MAP_H
#define PM_STAT_MAP_H

#include "pm_error.h"

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

struct stat_map {
    size_t n, cap;
    char **names;
    double *values;
    bool integral;
};

/** Initialise an empty map of counts (integral) or of real values. */
void stat_map_init(struct stat_map *m, bool integral);

/** Free the names and values; the map is empty afterwards. Accepts NULL. */
void stat_map_release(struct stat_map *m);

/** Add `delta` to `name` (created at 0). Returns PM_OK, PM_ERR_NOMEM or PM_ERR_USAGE
 * (empty name). */
int stat_map_add(struct stat_map *m, const char *name, double delta);

/** Value of `name`, 0 if absent. */
double stat_map_get(const struct stat_map *m, const char *name);

/** Sum of all values. */
double stat_map_total(const struct stat_map *m);

/** Add every entry of `src` into `dst`. */
int stat_map_merge(struct stat_map *dst, const struct stat_map *src);

/** A new JSON object of the map's entries (NULL when out of memory). */
json_t *stat_map_to_json(const struct stat_map *m);

/**
 * Add the entries of JSON object `obj` (values: non-negative numbers, integers for an
 * integral map) to m. `what` names the object in messages. Returns PM_OK, PM_ERR_FORMAT
 * or PM_ERR_NOMEM.
 */
int stat_map_add_json(struct stat_map *m, const json_t *obj, const char *what,
                      struct pm_error *err);

#endif
