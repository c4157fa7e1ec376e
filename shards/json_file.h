/**
 * json_file — read and write the small JSON files of a dataset (jansson).
 *
 * Writing is atomic (atomic_file): readers see the old file or the whole new one, never
 * a partial one. Output is indented by 2, keys in insertion order, ending in a newline,
 * so the same document always gives the same bytes. Reading is bounded by a size limit
 * and rejects duplicate keys. Thread-safe (no shared state).
 */
#ifndef PM_JSON_FILE_H
#define PM_JSON_FILE_H

#include "pm_error.h"

#include <jansson.h>

struct store;
#include <stddef.h>

/** Write `doc` to `path` atomically. Returns PM_OK, PM_ERR_NOMEM or PM_ERR_IO. */
int json_file_write(const char *path, const json_t *doc, struct pm_error *err);

/**
 * Read the JSON document at `path` (at most `max_bytes` bytes). On success *out is a new
 * reference (json_decref it). Returns PM_OK, PM_ERR_NOT_FOUND (no such file), PM_ERR_IO,
 * PM_ERR_LIMIT (too large) or PM_ERR_FORMAT (not JSON; message has line and column).
 */
int json_file_read(const char *path, size_t max_bytes, json_t **out, struct pm_error *err);

/** Serialise `doc` as json_file_write does into a new string ending in '\n' (free it);
 * NULL when out of memory. */
char *json_file_dumps(const json_t *doc);

/** json_file_write to object `name` of a store (store.h; atomic on both backends). */
int json_file_write_store(struct store *s, const char *name, const json_t *doc,
                          struct pm_error *err);

/** json_file_read from object `name` of a store; errors as json_file_read, naming the
 * object by its full location. */
int json_file_read_store(struct store *s, const char *name, size_t max_bytes, json_t **out,
                         struct pm_error *err);

#endif
